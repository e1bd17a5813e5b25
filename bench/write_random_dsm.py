"""Writes a random DSM (FP32, one block, o=1, no dense twin) as version 1 of
a model directory, streaming: one expert at a time, never holding the model
in memory, with the format_version 2 manifest the server's writer makes (the
whole file's SHA-256 and one per expert of each sliced tensor). Used by
bench/sharding_bench.sh (hash router) and bench/memory_bench.sh (lsh
router); the weights are draws of numpy's default_rng(seed), in file order.

  write_random_dsm.py MODEL_DIR --d=1024 --experts=4096 --k=576 --router=lsh --seed=41
"""
import argparse
import hashlib
import json
import os

import numpy as np

p = argparse.ArgumentParser()
p.add_argument("model_dir")
p.add_argument("--d", type=int, required=True)
p.add_argument("--experts", type=int, required=True)
p.add_argument("--k", type=int, required=True, help="units per expert")
p.add_argument("--router", choices=("hash", "lsh"), required=True)
p.add_argument("--seed", type=int, required=True, help="of the weights (and the hash router's hash_seed)")
p.add_argument("--scale", type=float, default=None,
               help="bottom.weight's standard deviation (default 1/sqrt(d))")
p.add_argument("--other_scale", type=float, default=0.03,
               help="bottom.bias', top's and the lsh router's hyperplanes' standard deviation")
p.add_argument("--draw", choices=("float32", "float64"), default="float64",
               help="draw in this type, then store float32 (float32 draws twice as fast)")
a = p.parse_args()
d, experts, k, o = a.d, a.experts, a.k, 1
if a.scale is None:
    a.scale = 1.0 / np.sqrt(d)
t = experts * k
dtype = np.float32 if a.draw == "float32" else np.float64
scale, other = (dtype(a.scale), dtype(a.other_scale)) if a.draw == "float32" else (a.scale, a.other_scale)
meta = {"format_version": "1", "kind": "dsm", "input_dim": str(d), "output_dim": str(o), "width": str(t),
        "activation": "relu", "router": a.router, "blocks": "1", "experts": str(experts),
        "active_units": str(k)}
shapes = [("bottom.weight", [t, d]), ("bottom.bias", [t]), ("top.weight", [o, t]), ("top.bias", [o])]
if a.router == "hash":
    meta["hash_seed"] = str(a.seed)
else:  # log2(E) hyperplanes (zero offsets): an expert is a sign pattern
    r = experts.bit_length() - 1
    if experts != 1 << r:
        raise SystemExit("the lsh router needs a power-of-two number of experts, got %d" % experts)
    shapes += [("router.weight", [r, d]), ("router.bias", [r])]
meta["info.data"] = "random weights (benchmark)"
header, offset = {"__metadata__": meta}, 0
for name, shape in shapes:
    size = 4 * int(np.prod(shape))
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
    offset += size
text = json.dumps(header, separators=(",", ":")).encode()
text += b" " * ((8 - (8 + len(text)) % 8) % 8)
head = len(text).to_bytes(8, "little") + text
tmp = os.path.join(a.model_dir, ".tmp-1")
os.makedirs(tmp, exist_ok=True)
rng = np.random.default_rng(a.seed)
whole = hashlib.sha256(head)
sums = {}
with open(os.path.join(tmp, "model.safetensors"), "wb") as f:
    f.write(head)
    for name, shape in shapes:
        if name == "bottom.weight":  # expert e: rows e*k .. (e+1)*k
            parts = []
            for e in range(experts):
                block = (rng.standard_normal((k, d), dtype=dtype) * scale).astype(np.float32).tobytes()
                f.write(block)
                whole.update(block)
                parts.append(hashlib.sha256(block).hexdigest())
            sums[name] = {"axis": 0, "sha256": parts}
            continue
        if name == "router.bias":
            block = np.zeros(shape, np.float32).tobytes()
        else:
            block = (rng.standard_normal(shape, dtype=dtype) * other).astype(np.float32).tobytes()
        f.write(block)
        whole.update(block)
        if name in ("bottom.bias", "top.weight"):  # expert e's k values are contiguous
            step = len(block) // experts
            sums[name] = {"axis": 0 if name == "bottom.bias" else 1,
                          "sha256": [hashlib.sha256(block[e * step:(e + 1) * step]).hexdigest()
                                     for e in range(experts)]}
        else:
            sums[name] = {"sha256": [hashlib.sha256(block).hexdigest()]}
    f.flush()
    os.fsync(f.fileno())
    size = f.tell()
manifest = {"format_version": 2, "files": {"model.safetensors": {
    "bytes": size, "sha256": whole.hexdigest(), "header_bytes": len(head),
    "header_sha256": hashlib.sha256(head).hexdigest(), "tensors": sums}}}
with open(os.path.join(tmp, "manifest.json"), "w") as f:
    json.dump(manifest, f)
os.rename(tmp, os.path.join(a.model_dir, "1"))
