"""Writing model versions sparse-server loads (docs/checkpoint-format.md).

    from sparse_serve import export
    export.export_dsm(model, "models/my_dsm", dense=twin)        # a DSM module
    export.export_lsh_table("models/my_lsh", projection, offset, tables)

Each call writes one version directory the way sparse-train does: the tensor
files and then the manifest (sizes and SHA-256 sums, of the files and of
each tensor, so that a shard can check the parts it reads) into a hidden temporary
directory beside the target, each file fsynced, then one rename into place,
so a server polling the repository never sees half a version. It returns the
version's path. A model the format cannot represent, or a model directory
named like a dense twin ("m.dense"), is refused with a ValueError that says
what is wrong, and nothing is written.
"""
import hashlib
import json
import os
import socket

import numpy as np

FORMAT_VERSION = "1"          # of the tensor files' __metadata__
MANIFEST_FORMAT_VERSION = 2   # manifest.json with per-tensor sums
_DTYPES = {np.dtype("<f4"): "F32", np.dtype("<u8"): "U64", np.dtype("<i8"): "I64", np.dtype("i1"): "I8"}
PRECISIONS = ("FP32", "BF16", "INT8")


def safetensors(metadata, tensors):
    """The bytes of a safetensors file: `metadata` (str -> str) and
    `tensors`, (name, NumPy array) pairs in file order, each float32, uint64,
    int64 or int8, or (name, uint16 array, "BF16") triples of bfloat16 bits.
    For writers of other model shapes with write_version."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, a, *dtype in tensors:
        a = np.ascontiguousarray(a)
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtype[0] if dtype else _DTYPES[a.dtype.newbyteorder("<")],
                        "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)  # the data starts 8-aligned
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


def _f32(name, value, shape=None):
    a = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value, dtype=np.float32)
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ValueError("%s has shape %s, expected %s" % (name, tuple(a.shape), tuple(shape)))
    if not np.all(np.isfinite(a)):
        raise ValueError("%s holds NaN or infinite values; the server refuses such weights" % name)
    return a


# ---- Reduced precision, as the server computes it (docs/configuration.md) ----

def _bf16_bits(a):
    """float32 -> bfloat16 bits, rounding to nearest even (the server's rule)."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def _bf16(a):
    """The float32 values of `a` rounded to bfloat16."""
    return (_bf16_bits(a).astype(np.uint32) << 16).view(np.float32)


def _quantize_rows(a):
    """int8 q and one float32 scale per row: scale = max|row| / 127,
    q = round(row / scale) to nearest even, as the server quantizes."""
    a = np.asarray(a, np.float32)
    top = np.abs(a).max(axis=1) if a.size else np.zeros(a.shape[0], np.float32)
    inverse = np.where(top > 0, np.float32(127) / np.where(top > 0, top, 1), 0).astype(np.float32)
    q = np.clip(np.rint(a * inverse[:, None]), -127, 127).astype(np.int8)
    return q, (top / np.float32(127)).astype(np.float32)


def _stored(w, precision):
    """What a weight matrix (out, in) reads back as after being stored at `precision`."""
    if precision == "BF16":
        return _bf16(w)
    if precision == "INT8":
        q, scale = _quantize_rows(w)
        return (q * scale[:, None]).astype(np.float32)
    return w


def _matrix(name, w, precision):
    """The tensors that store weight matrix `w` (out, in) at `precision`."""
    if precision == "BF16":
        return [(name, _bf16_bits(w), "BF16")]
    if precision == "INT8":
        q, scale = _quantize_rows(w)
        return [(name, q), (name + ".scale", scale)]
    return [(name, w)]


def _runs_reduced(k, n, precision):
    """Whether the server runs a K x N matrix at `precision`: oneDNN's blocked
    layout (on AVX-512: N in blocks of 64, K of 32 for BF16 and 64 for INT8,
    plus 12 bytes per output for INT8) may pad it by at most 25%; otherwise
    it stays FP32 (matmul_kernel.h)."""
    if precision == "FP32":
        return False
    pad = lambda v, b: -(-v // b) * b
    if precision == "BF16":
        return pad(n, 64) * pad(k, 32) * 4 <= 5 * n * k
    return (pad(n, 64) * pad(k, 64) + 12 * pad(n, 64)) * 4 <= 5 * n * k


def _product(x, w, precision):
    """x (rows, K) times w (N, K) transposed, as the server computes it at
    `precision`: inputs rounded to bfloat16, or quantized per row to int8
    with integer sums, when the matrix runs reduced."""
    if not _runs_reduced(w.shape[1], w.shape[0], precision):
        return (x.astype(np.float64) @ w.T.astype(np.float64)).astype(np.float32)
    if precision == "BF16":
        return (_bf16(x).astype(np.float64) @ w.T.astype(np.float64)).astype(np.float32)
    qx, sx = _quantize_rows(x)
    qw, sw = _quantize_rows(w)
    acc = qx.astype(np.int64) @ qw.T.astype(np.int64)
    return (acc * (sx[:, None].astype(np.float64) * sw[None, :])).astype(np.float32)


def served_predict(module, x, precision="FP32", stored="FP32", dense=False):
    """The outputs sparse-server answers for rows x of `module` (a DSM, or a
    dense twin with dense=True) exported with precision=`stored` and served
    at config.pbtxt's `precision`. Routes are computed in float32, as the
    server's routers are."""
    import torch
    x = np.asarray(x, np.float32)
    bw, bb = _linear("bottom", module.bottom)
    tw, tb = _linear("top", module.top)
    bw, tw = _stored(bw, stored), _stored(tw, stored)
    relu = _activation_name(module) == "relu"
    act = (lambda h: np.maximum(h, 0)) if relu else (lambda h: h)
    if dense:
        return _product(act(_product(x, bw, precision) + bb), tw, precision) + tb
    rows, t = x.shape[0], bw.shape[0]
    y = np.tile(tb, (rows, 1)).astype(np.float32)
    if module.router_kind == "topk":
        z = _product(x, bw, precision) + bb
        keep = module.mask(torch.from_numpy(x), torch.from_numpy(z)).numpy()
        h = (act(z) * keep).astype(np.float32)
        return y + _product(h, tw, "FP32")
    with torch.no_grad():
        experts = module.expert_ids(torch.from_numpy(x)).numpy()
    blocks, k = int(module.blocks), int(module.active_units)
    for l in range(blocks):
        for e in np.unique(experts[:, l]):
            r = np.nonzero(experts[:, l] == e)[0]
            units = slice(l * (t // blocks) + e * k, l * (t // blocks) + (e + 1) * k)
            h = act(_product(x[r], bw[units], precision) + bb[units])
            y[r] += _product(h, tw[:, units], precision)
    return y


def _test_info(prefix, predict, test):
    """info entries: the test MSE of predict(precision) at each precision."""
    x, target = (np.asarray(a, np.float32) for a in test)
    target = target.reshape(x.shape[0], -1)
    out = {}
    for p in PRECISIONS:
        mse = float(np.mean((predict(p).astype(np.float64) - target) ** 2))
        out[prefix + "test_mse" + ("" if p == "FP32" else "_" + p.lower())] = "%.9g" % mse
    return out


def _parts(metadata, name, shape):
    """(axis, parts) a tensor is cut into for its sums, as the server's
    writer cuts it (docs/checkpoint-format.md, "manifest.json"): per expert
    for a routed DSM's bottom.weight(.scale), bottom.bias and top.weight
    (axis 1), per table for an LSH model's hash.projection, hash.offset and
    alpha; whole otherwise."""
    def number(key):
        try:
            return max(int(metadata.get(key, "0")), 0)
        except ValueError:
            return 0
    axis, parts = 0, 1
    if metadata.get("kind") == "dsm" and metadata.get("router") != "topk":
        if name in ("bottom.weight", "bottom.weight.scale", "bottom.bias"):
            parts = number("blocks") * number("experts")
        elif name == "top.weight":
            axis, parts = 1, number("blocks") * number("experts")
    elif metadata.get("kind") == "lsh_table" and name in ("hash.projection", "hash.offset", "alpha"):
        parts = number("tables")
    if parts < 1 or axis >= len(shape) or shape[axis] < parts or shape[axis] % parts:
        return 0, 1
    return axis, parts


def manifest_entry(data):
    """The format_version 2 manifest entry of one tensor file's bytes: its
    size and SHA-256, its header's, and each tensor's sums by part."""
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_len])
    metadata = header.get("__metadata__", {})
    start = 8 + header_len
    tensors = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        shape = t["shape"]
        axis, parts = _parts(metadata, name, shape)
        begin, end = t["data_offsets"]
        raw = np.frombuffer(data, dtype=np.uint8, count=end - begin, offset=start + begin)
        outer = int(np.prod(shape[:axis], dtype=np.int64)) if axis else 1
        raw = raw.reshape(outer, parts, -1) if shape and raw.size else raw.reshape(1, parts, -1)
        sums = [hashlib.sha256(np.ascontiguousarray(raw[:, p, :]).tobytes()).hexdigest() for p in range(parts)]
        tensors[name] = {"sha256": sums, "axis": axis} if parts > 1 else {"sha256": sums}
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "header_bytes": start, "header_sha256": hashlib.sha256(data[:start]).hexdigest(),
            "tensors": tensors}


DENSE_SUFFIX = ".dense"  # "m.dense" is model m's dense twin over REST and OIP


def check_model_dir(model_dir):
    """Refuses (ValueError) a model directory whose name, the model's name,
    ends in ".dense": over REST and OIP, "m.dense" names the dense twin of
    model "m", so such a model could not be reached under its own name."""
    name = os.path.basename(os.path.normpath(str(model_dir)))
    if name.endswith(DENSE_SUFFIX):
        raise ValueError("model name %r ends in %r, which names the dense twin of model %r over REST and "
                         "OIP; choose a name without that suffix" % (name, DENSE_SUFFIX, name[:-len(DENSE_SUFFIX)]))


def _next_version(model_dir):
    versions = [int(n) for n in os.listdir(model_dir) if n.isdigit()] if os.path.isdir(model_dir) else []
    return max(versions, default=0) + 1


def write_version(model_dir, model_file, dense_file=None, version=None):
    """Publishes serialized model.safetensors (and dense.safetensors) bytes
    as a new version of the model in `model_dir`. version: None for one more
    than the newest present. Returns the version directory."""
    check_model_dir(model_dir)
    os.makedirs(model_dir, exist_ok=True)
    version = _next_version(model_dir) if version is None else int(version)
    if version < 1:
        raise ValueError("version must be >= 1, got %d" % version)
    final = os.path.join(model_dir, str(version))
    if os.path.lexists(final):
        raise FileExistsError("version %d already exists in %s" % (version, model_dir))
    files = {"model.safetensors": model_file}
    if dense_file is not None:
        files["dense.safetensors"] = dense_file
    # Named as sparse-train names its own, so that a later sparse-train on
    # this host removes it if this process dies mid-publish.
    tmp = os.path.join(model_dir, ".tmp-%d-%s-%d-0" % (version, socket.gethostname(), os.getpid()))
    os.mkdir(tmp)
    try:
        manifest = {"format_version": MANIFEST_FORMAT_VERSION, "files": {}}
        for name, data in sorted(files.items()):
            _write_synced(os.path.join(tmp, name), data)
            manifest["files"][name] = manifest_entry(data)
        _write_synced(os.path.join(tmp, "manifest.json"), json.dumps(manifest, indent=2).encode())
        _sync_dir(tmp)
        if os.path.lexists(final):
            raise FileExistsError("version %d already exists in %s" % (version, model_dir))
        os.rename(tmp, final)
        _sync_dir(model_dir)
    except BaseException:
        for name in os.listdir(tmp) if os.path.isdir(tmp) else []:
            os.unlink(os.path.join(tmp, name))
        if os.path.isdir(tmp):
            os.rmdir(tmp)
        raise
    return final


def _write_synced(path, data):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _linear(name, layer):
    """(weight (out, in), bias (out,)) of an nn.Linear; a missing bias is zeros."""
    if not hasattr(layer, "weight") or getattr(layer.weight, "dim", lambda: 0)() != 2:
        raise ValueError("%s must be an nn.Linear (a 2-D weight), got %s" % (name, type(layer).__name__))
    w = _f32(name + ".weight", layer.weight)
    b = np.zeros(w.shape[0], np.float32) if layer.bias is None else _f32(name + ".bias", layer.bias, (w.shape[0],))
    return w, b


def _activation_name(module):
    name = getattr(module, "activation_name", None)
    if name is None:
        act = type(getattr(module, "activation", None)).__name__
        name = {"ReLU": "relu", "Identity": "identity"}.get(act)
    if name not in ("relu", "identity"):
        raise ValueError("the activation must be ReLU or Identity (relu/identity), got %r" % (name,))
    return name


def _dense_file(dense, d, o, info, precision="FP32"):
    bw, bb = _linear("dense.bottom", dense.bottom)
    tw, tb = _linear("dense.top", dense.top)
    t = bw.shape[0]
    if bw.shape[1] != d or tw.shape != (o, t):
        raise ValueError("the dense twin maps %d -> %d through %d units (top %s), but the model maps %d -> %d"
                         % (bw.shape[1], tw.shape[0], t, tw.shape, d, o))
    metadata = {"format_version": FORMAT_VERSION, "kind": "dense", "input_dim": str(d), "output_dim": str(o),
                "width": str(t), "activation": _activation_name(dense)}
    metadata.update(info)
    return safetensors(metadata, _matrix("bottom.weight", bw, precision) + [("bottom.bias", bb)] +
                       _matrix("top.weight", tw, precision) + [("top.bias", tb)])


def _info(info):
    return {"info." + str(k): str(v) for k, v in (info or {}).items()}


def export_dsm(module, model_dir, version=None, dense=None, info=None, precision="FP32", test=None):
    """Writes a DSM module (sparse_serve.nn.DSM, or any module with the same
    attributes: bottom and top nn.Linear, activation, router_kind, experts,
    active_units, blocks, and router (lsh: nn.Linear of blocks * log2(E)
    hyperplanes) or centroids (kmeans: blocks * E rows)) as a new version.
    dense: its dense twin (bottom and top nn.Linear, activation), or None to
    let the server run the DSM unmasked as a cost-only baseline. info: a
    dict of facts kept with the version. precision: how the weight matrices
    are stored, "FP32", "BF16" (half the bytes) or "INT8" (a quarter, with a
    scale per output channel); the server's own precision is config.pbtxt's.
    test: (x, y) arrays to record the test MSE, as sparse-train does, served
    at FP32 (info test_mse, the float32 weights) and at BF16 and INT8
    (test_mse_bf16, test_mse_int8, from the stored weights), and the dense
    twin's (dense_test_mse...)."""
    check_model_dir(model_dir)
    if precision not in PRECISIONS:
        raise ValueError("precision must be FP32, BF16 or INT8, got %r" % (precision,))
    router = getattr(module, "router_kind", None)
    if router not in ("lsh", "kmeans", "topk"):
        raise ValueError("router_kind must be lsh, kmeans or topk, got %r (the hash router is sparse-train's)"
                         % (router,))
    bw, bb = _linear("bottom", module.bottom)
    tw, tb = _linear("top", module.top)
    t, d = bw.shape
    o = tw.shape[0]
    if tw.shape[1] != t:
        raise ValueError("top takes %d units but bottom makes %d" % (tw.shape[1], t))
    blocks, k = int(module.blocks), int(module.active_units)
    experts = int(module.experts) if router != "topk" else 0
    if blocks < 1 or t % blocks:
        raise ValueError("the width %d is not divisible into %d blocks" % (t, blocks))
    if router != "topk" and experts * k != t // blocks:
        raise ValueError("%d experts x %d active units != %d units per block" % (experts, k, t // blocks))
    if router == "topk" and not 0 < k <= t // blocks:
        raise ValueError("topk keeps %d of %d units per block" % (k, t // blocks))
    metadata = {"format_version": FORMAT_VERSION, "kind": "dsm", "input_dim": str(d), "output_dim": str(o),
                "width": str(t), "activation": _activation_name(module), "router": router,
                "blocks": str(blocks), "experts": str(experts), "active_units": str(k)}
    facts = dict(info or {})
    if test is not None:
        x = test[0]
        facts.update(_test_info("", lambda p: served_predict(module, x, p, precision if p != "FP32" else "FP32"), test))
        if dense is not None:
            facts.update(_test_info("dense_", lambda p: served_predict(
                dense, x, p, precision if p != "FP32" else "FP32", dense=True), test))
    facts["weight_dtype"] = precision
    metadata.update(_info(facts))
    tensors = (_matrix("bottom.weight", bw, precision) + [("bottom.bias", bb)] +
               _matrix("top.weight", tw, precision) + [("top.bias", tb)])
    if router == "lsh":
        if experts < 2 or experts & (experts - 1):
            raise ValueError("the lsh router needs a power-of-two number of experts >= 2, got %d" % experts)
        r = experts.bit_length() - 1
        rw, rb = _linear("router", module.router)
        if rw.shape != (blocks * r, d):
            raise ValueError("router has shape %s, expected (%d, %d): log2(%d) hyperplanes per block"
                             % (rw.shape, blocks * r, d, experts))
        tensors += [("router.weight", rw), ("router.bias", rb)]
    elif router == "kmeans":
        tensors.append(("router.weight", _f32("centroids", module.centroids, (blocks * experts, d))))
    dense_file = _dense_file(dense, d, o, _info(facts), precision) if dense is not None else None
    return write_version(model_dir, safetensors(metadata, tensors), dense_file, version)


def export_lsh_table(model_dir, projection, offset, tables, degree=0, family="hyperplane", bucket_width=1.0,
                     alpha=None, version=None, info=None):
    """Writes an LSH table model from its arrays as a new version (or a
    sparse_serve.nn.LshTable: export_lsh_table(dir, **m.arrays()) works too).

    projection: (s * m, d), row i * m + j is hash j of table i; offset:
    (s * m,); tables: s triples (keys, values, fallback): keys distinct
    non-negative integers (sorted here, with their values), values (n, o)
    for degree 0 or (n, o, d + 1) for degree 1, fallback (o,) or
    (o, d + 1); alpha: (s,) table weights, default 1/s. family: hyperplane
    or euclidean (with bucket_width w > 0)."""
    check_model_dir(model_dir)
    projection = _f32("projection", projection)
    if projection.ndim != 2:
        raise ValueError("projection must be 2-D (tables * hashes, d), got shape %s" % (projection.shape,))
    s = len(tables)
    if s < 1 or projection.shape[0] % s:
        raise ValueError("projection has %d rows: not hashes x %d tables" % (projection.shape[0], s))
    m, d = projection.shape[0] // s, projection.shape[1]
    if family not in ("hyperplane", "euclidean"):
        raise ValueError("family must be hyperplane or euclidean, got %r" % (family,))
    if family == "hyperplane" and m > 64:
        raise ValueError("a hyperplane key holds at most 64 hash bits, got %d per table" % m)
    if degree not in (0, 1):
        raise ValueError("degree must be 0 (constant buckets) or 1 (affine), got %r" % (degree,))
    if not (np.isfinite(bucket_width) and bucket_width > 0):
        raise ValueError("bucket_width must be a finite number > 0, got %r" % (bucket_width,))
    offset = _f32("offset", offset, (s * m,))
    alpha = np.full(s, 1.0 / s, np.float32) if alpha is None else _f32("alpha", alpha, (s,))
    first_values = _f32("table 0 values", tables[0][1])
    o = first_values.shape[1] if first_values.ndim >= 2 else None
    fallback0 = _f32("table 0 fallback", tables[0][2])
    o = fallback0.shape[0] if fallback0.ndim >= 1 else o
    value_shape = (o,) if degree == 0 else (o, d + 1)
    metadata = {"format_version": FORMAT_VERSION, "kind": "lsh_table", "input_dim": str(d), "output_dim": str(o),
                "tables": str(s), "hashes": str(m), "degree": str(degree), "family": family,
                "bucket_width": repr(float(np.float32(bucket_width)))}
    metadata.update(_info(info))
    tensors = [("hash.projection", projection), ("hash.offset", offset), ("alpha", alpha)]
    for i, (keys, values, fallback) in enumerate(tables):
        keys = np.asarray(keys.cpu().numpy() if hasattr(keys, "cpu") else keys)
        if keys.ndim != 1 or (keys.size and (not np.issubdtype(keys.dtype, np.integer) or keys.min() < 0)):
            raise ValueError("table %d keys must be a 1-D array of non-negative integers" % i)
        keys = keys.astype(np.uint64)
        values = _f32("table %d values" % i, values, (len(keys),) + value_shape)
        order = np.argsort(keys, kind="stable")
        keys, values = keys[order], values[order]
        if keys.size > 1 and np.any(keys[1:] == keys[:-1]):
            raise ValueError("table %d has the key %d twice" % (i, int(keys[1:][keys[1:] == keys[:-1]][0])))
        tensors += [("table.%d.keys" % i, keys), ("table.%d.values" % i, values),
                    ("table.%d.fallback" % i, _f32("table %d fallback" % i, fallback, value_shape))]
    return write_version(model_dir, safetensors(metadata, tensors), None, version)
