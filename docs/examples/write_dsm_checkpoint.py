#!/usr/bin/python3
"""Writes a small lsh-routed DSM version in sparse-serve's checkpoint format
(docs/checkpoint-format.md) using only the Python standard library.

    /usr/bin/python3 docs/examples/write_dsm_checkpoint.py <model_dir> <version>

It also evaluates the model in plain Python on a few inputs and stores the
inputs and outputs as info.example_inputs / info.example_outputs, so a test
can check that the engine computes the same thing.
"""
import hashlib
import json
import os
import random
import struct
import sys

D, O, BLOCKS, EXPERTS, K = 4, 2, 2, 4, 3
R = EXPERTS.bit_length() - 1          # router bits per block: log2(E)
T = BLOCKS * EXPERTS * K              # width


def f32(v):
    """Round a Python float to float32, as the file stores it."""
    return struct.unpack("<f", struct.pack("<f", v))[0]


def tensor_bytes(dtype, values):
    code = {"F32": "f", "U64": "Q", "I64": "q"}[dtype]
    return struct.pack("<%d%s" % (len(values), code), *values)


def safetensors(metadata, tensors):
    """tensors: list of (name, dtype, shape, flat values) in data order."""
    header, data, offset = {"__metadata__": metadata}, b"", 0
    for name, dtype, shape, values in tensors:
        raw = tensor_bytes(dtype, values)
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)  # data starts 8-aligned
    return struct.pack("<Q", len(text)) + text + data


def dsm_forward(x, w):
    y = list(w["top.bias"])
    block_units = T // BLOCKS
    for l in range(BLOCKS):
        expert = 0
        for j in range(R):
            row = l * R + j
            z = sum(a * b for a, b in zip(w["router.weight"][row * D:(row + 1) * D], x))
            if z + w["router.bias"][row] >= 0:
                expert |= 1 << j
        first = l * block_units + expert * K
        for u in range(first, first + K):
            h = sum(a * b for a, b in zip(w["bottom.weight"][u * D:(u + 1) * D], x))
            h = max(h + w["bottom.bias"][u], 0.0)  # relu
            for j in range(O):
                y[j] += w["top.weight"][j * T + u] * h
    return y


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model_dir, version = sys.argv[1], int(sys.argv[2])
    rng = random.Random(7)
    gauss = lambda n, s: [f32(rng.gauss(0.0, s)) for _ in range(n)]
    w = {
        "bottom.weight": gauss(T * D, 0.5), "bottom.bias": gauss(T, 0.1),
        "top.weight": gauss(O * T, 0.3), "top.bias": gauss(O, 0.1),
        "router.weight": gauss(BLOCKS * R * D, 1.0), "router.bias": gauss(BLOCKS * R, 0.2),
    }
    shapes = {"bottom.weight": [T, D], "bottom.bias": [T], "top.weight": [O, T],
              "top.bias": [O], "router.weight": [BLOCKS * R, D], "router.bias": [BLOCKS * R]}
    inputs = [[f32(rng.uniform(-1, 1)) for _ in range(D)] for _ in range(16)]
    outputs = [dsm_forward(x, w) for x in inputs]
    metadata = {
        "format_version": "1", "kind": "dsm", "input_dim": str(D), "output_dim": str(O),
        "width": str(T), "activation": "relu", "router": "lsh", "blocks": str(BLOCKS),
        "experts": str(EXPERTS), "active_units": str(K),
        "info.example_inputs": json.dumps(inputs), "info.example_outputs": json.dumps(outputs),
    }
    model = safetensors(metadata, [(n, "F32", shapes[n], w[n]) for n in shapes])

    # Publish atomically: temp dir, files, manifest last, rename.
    os.makedirs(model_dir, exist_ok=True)
    final = os.path.join(model_dir, str(version))
    tmp = os.path.join(model_dir, ".tmp-%d-%d" % (version, os.getpid()))
    os.mkdir(tmp)
    with open(os.path.join(tmp, "model.safetensors"), "wb") as f:
        f.write(model)
        os.fsync(f.fileno())
    manifest = {"format_version": 1, "files": {"model.safetensors": {
        "bytes": len(model), "sha256": hashlib.sha256(model).hexdigest()}}}
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        os.fsync(f.fileno())
    if os.path.exists(final):
        sys.exit("version %d already exists" % version)
    os.rename(tmp, final)
    print("wrote", final)


if __name__ == "__main__":
    main()
