#!/usr/bin/python3
"""Peers side by side (issue 5, item 3), the PyTorch half.

Evaluates the networks bench/peers/peers_bench evaluated with our engine
(poly_lsh, poly_dsm, bench_dsm; sparse and dense paths) in PyTorch eager, at
batch 1 and 32, on the same input pools, and times them the way peers_bench
does. bench/peers/run.sh runs both halves and prints them side by side.

Before timing anything it checks that PyTorch computes the same function:
its routes (LSH bucket keys, DSM expert ids) must equal the engine's, and its
outputs must match the engine's to 1e-4 (absolute plus relative), in every
form below: at batch 32 on every row of the pool, at batch 1 on its first 64
rows. A mismatch is an error.

Two forms of each network (torch.nn.functional / torch ops, CPU, float32):
  linear  the nn.Linear way: every layer is F.linear on a [rows, d] batch.
          Timed at batch 1 and 32.
  mv      batch 1 only: the row as a 1-D vector and every layer as
          torch.addmv. With Debian's OpenBLAS, F.linear on a [1, d] batch
          goes through sgemm with M = 1, which is 2-5x slower than sgemv on
          large layers, so this is PyTorch's best batch-1 form here.

What each network computes, in both forms:
  dense     linear -> relu_ -> linear, the full-width network.
  LSH table the s*m projections as one product, the sign bits turned into
            table rows by a second product (a block-diagonal matrix of powers
            of two, plus i * 2^m for table i), one gather from direct-mapped
            tables of 2^m rows (stored buckets, alpha-scaled, the fallback
            elsewhere) and a sum over tables: the fastest eager form tried
            (no search; the bits-to-rows product saves two ops over
            compare-multiply-sum-add).
  DSM       the lsh router exactly as engine/dsm_model.cc routes (one
            product, key = sum of [z_j >= 0] << j, three tensor ops), then
            only the chosen expert slice: its k rows of B, relu_, and the top
            bias plus its k columns of A (addmm / addmv). At batch > 1 the
            usual eager MoE dispatch: sort the rows by expert, one pair of
            products per expert present, index_add_ back. Slices are views
            made once at load. (Computing the r key bits in a Python loop over
            z.tolist() would be faster still at batch 1; that is Python, not
            tensor code, and is not what is timed.)

Timing rules (the same as peers_bench's TimeCalls): 1 thread
(torch.set_num_threads(1), OpenBLAS pinned to 1), torch.inference_mode(),
garbage collection off while timing; inputs cycle through the pool; a
warm-up of >= 20 calls and >= 0.2 s, then >= 100 calls and >= --min_time
seconds, each timed on its own; median and nearest-rank p10/p90.

  /usr/bin/python3 bench/peers/torch_peers.py DIR/peers_io.safetensors [--min_time=1] [--json]

Only the Python standard library, numpy and torch (Debian's python3-torch).
"""

import argparse
import ctypes
import gc
import json
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

BATCHES = (1, 32)
CHECK_ROWS_BATCH_1 = 64
WARMUP_CALLS = 20
WARMUP_SECONDS = 0.2
MIN_CALLS = 100
MAX_CALLS = 2_000_000
ATOL = RTOL = 1e-4

_DTYPES = {"F32": "<f4", "U64": "<u8", "I64": "<i8"}


def read_safetensors(path):
    """Returns (metadata, {name: numpy array}) of a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, t in header.items():
        begin, end = t["data_offsets"]
        dtype = np.dtype(_DTYPES[t["dtype"]])
        tensors[name] = np.frombuffer(data, dtype=dtype, count=(end - begin) // dtype.itemsize,
                                      offset=8 + n + begin).reshape(t["shape"])
    return metadata, tensors


def f32(array):
    return torch.from_numpy(np.array(array, dtype=np.float32))


def i64(array):
    return torch.from_numpy(np.array(array, dtype=np.int64))


class Dense:
    """y = A relu(Bx + c) + a0 at full width (docs/checkpoint-format.md)."""

    def __init__(self, meta, t):
        self.bottom_w, self.bottom_b = f32(t["bottom.weight"]), f32(t["bottom.bias"])
        self.top_w, self.top_b = f32(t["top.weight"]), f32(t["top.bias"])
        self.relu = meta["activation"] == "relu"

    def batch(self, x):
        h = F.linear(x, self.bottom_w, self.bottom_b)
        if self.relu:
            h = h.relu_()
        return F.linear(h, self.top_w, self.top_b)

    def vector(self, x):
        h = torch.addmv(self.bottom_b, self.bottom_w, x)
        if self.relu:
            h = h.relu_()
        return torch.addmv(self.top_b, self.top_w, h)


class LshTable:
    """LSH(d, s, m, 0), hyperplane family, with direct-mapped tables."""

    def __init__(self, meta, t):
        if meta["family"] != "hyperplane" or meta["degree"] != "0":
            raise ValueError("torch_peers: only hyperplane LSH tables with degree 0")
        self.s, self.m, self.o = int(meta["tables"]), int(meta["hashes"]), int(meta["output_dim"])
        size = 1 << self.m
        # Table rows are computed in float32: exact below 2^24.
        if self.s * size > 1 << 24:
            raise ValueError("torch_peers: direct-mapped tables need s * 2^m <= 2^24")
        self.projection, self.offset = f32(t["hash.projection"]), f32(t["hash.offset"])
        alpha = f32(t["alpha"])
        table = torch.empty(self.s, size, self.o)
        for i in range(self.s):
            table[i] = f32(t["table.%d.fallback" % i]) * alpha[i]
            keys = i64(t["table.%d.keys" % i])
            table[i, keys] = f32(t["table.%d.values" % i]).view(-1, self.o) * alpha[i]
        self.table = table.view(self.s * size, self.o)
        self.base = torch.arange(self.s) * size
        self.row_weight = torch.zeros(self.s, self.s * self.m)
        for i in range(self.s):
            self.row_weight[i, i * self.m:(i + 1) * self.m] = 2.0 ** torch.arange(self.m)
        self.row_bias = self.base.float()

    def _rows(self, x):
        bits = (F.linear(x, self.projection, self.offset) >= 0).float()
        return F.linear(bits, self.row_weight, self.row_bias).long()

    def route(self, x):
        """Bucket keys [rows, s] of a [rows, d] batch."""
        return self._rows(x) - self.base

    def batch(self, x):
        rows = self._rows(x).view(-1)
        return self.table.index_select(0, rows).view(-1, self.s, self.o).sum(1)

    def vector(self, x):
        bits = (torch.addmv(self.offset, self.projection, x) >= 0).float()
        rows = torch.addmv(self.row_bias, self.row_weight, bits).long()
        return self.table.index_select(0, rows).sum(0)


class LshDsm:
    """DSM(d, t, k) with the lsh router, computing only the routed slices."""

    def __init__(self, meta, t):
        if meta["router"] != "lsh":
            raise ValueError("torch_peers: only DSMs with the lsh router")
        d, o = int(meta["input_dim"]), int(meta["output_dim"])
        self.L, self.E, self.o = int(meta["blocks"]), int(meta["experts"]), o
        k = int(meta["active_units"])
        self.r = self.E.bit_length() - 1
        self.router_w = f32(t["router.weight"]) if self.r else torch.zeros(0, d)
        self.router_b = f32(t["router.bias"]) if self.r else torch.zeros(0)
        slices = self.L * self.E
        bottom_w = f32(t["bottom.weight"]).view(slices, k, d)
        bottom_b = f32(t["bottom.bias"]).view(slices, k)
        top_w = f32(t["top.weight"])
        top_t = top_w.t().contiguous().view(slices, k, o)  # A^T slices, for addmm
        top_rows = [top_w[:, i * k:(i + 1) * k].contiguous() for i in range(slices)]  # for addmv
        self.slices = [(bottom_w[i], bottom_b[i], top_t[i], top_rows[i]) for i in range(slices)]
        self.top_b = f32(t["top.bias"])
        self.top_b_row = self.top_b.view(1, o)
        self.relu = meta["activation"] == "relu"
        self.pow2 = 2 ** torch.arange(self.r)

    def _keys(self, z):
        """Expert ids [rows, L] from router projections z [rows, L * r]."""
        return ((z.view(z.shape[0], self.L, self.r) >= 0) * self.pow2).sum(-1)

    def route(self, x):
        """Expert ids [rows, L] of a [rows, d] batch."""
        if self.r == 0:
            return torch.zeros(x.shape[0], self.L, dtype=torch.long)
        return self._keys(F.linear(x, self.router_w, self.router_b))

    def _hidden(self, x, s):
        w, b, _, _ = self.slices[s]
        h = F.linear(x, w, b)
        return h.relu_() if self.relu else h

    def batch(self, x):
        n = x.shape[0]
        if n == 1:
            y = self.top_b_row
            for l, e in enumerate(self.route(x).tolist()[0]):
                s = l * self.E + e
                y = torch.addmm(y, self._hidden(x, s), self.slices[s][2])
            return y
        experts = self.route(x)
        y = self.top_b.expand(n, self.o).clone()
        out = torch.empty(n, self.o)
        for l in range(self.L):
            ids, order = torch.sort(experts[:, l])
            uniq, counts = torch.unique_consecutive(ids, return_counts=True)
            xs = x.index_select(0, order)
            start = 0
            for e, count in zip(uniq.tolist(), counts.tolist()):
                s = l * self.E + e
                torch.mm(self._hidden(xs[start:start + count], s), self.slices[s][2],
                         out=out[start:start + count])
                start += count
            y.index_add_(0, order, out)
        return y

    def vector(self, x):
        if self.r == 0:
            experts = [0] * self.L
        else:
            z = torch.addmv(self.router_b, self.router_w, x)
            experts = ((z.view(self.L, self.r) >= 0) * self.pow2).sum(-1).tolist()
        y = self.top_b
        for l, e in enumerate(experts):
            w, b, _, top = self.slices[l * self.E + e]
            h = torch.addmv(b, w, x)
            if self.relu:
                h = h.relu_()
            y = torch.addmv(y, top, h)
        return y


def load_network(version_dir):
    """(sparse, dense, dense_cost_only) for a version directory."""
    meta, t = read_safetensors(os.path.join(version_dir, "model.safetensors"))
    sparse = LshTable(meta, t) if meta["kind"] == "lsh_table" else LshDsm(meta, t)
    dense_path = os.path.join(version_dir, "dense.safetensors")
    if os.path.exists(dense_path):
        return sparse, Dense(*read_safetensors(dense_path)), False
    if meta["kind"] != "dsm":
        raise ValueError("torch_peers: %s has no dense twin" % version_dir)
    # As the engine does: the DSM's own weights unmasked, a cost-only baseline.
    return sparse, Dense(meta, t), True


def forms(model):
    """(form, batch, callable on one pool slice, pool slicer) for every timed case."""
    rows = lambda x, batch: [x[i:i + batch] for i in range(0, x.shape[0] - batch + 1, batch)]
    for batch in BATCHES:
        yield "linear", batch, model.batch, lambda x, b=batch: rows(x, b)
    yield "mv", 1, model.vector, lambda x: [x[i] for i in range(x.shape[0])]


def check(name, sparse, dense, io):
    """Holds PyTorch's routes and outputs to the engine's; returns a summary."""
    x = f32(io[name + ".x"])
    expected_route = i64(io[name + (".keys" if isinstance(sparse, LshTable) else ".experts")])
    route = sparse.route(x)
    if not torch.equal(route, expected_route):
        bad = int((route != expected_route).any(1).sum())
        raise SystemExit("torch_peers: %s: %d of %d rows route differently from the engine"
                         % (name, bad, x.shape[0]))
    worst = 0.0
    for path, model in (("sparse", sparse), ("dense", dense)):
        expected = f32(io["%s.%s_y" % (name, path)])
        for form, batch, call, slicer in forms(model):
            # Batch 1 on the first rows keeps the check short for the 64 MiB
            # dense network; batch 32 covers every row.
            n = CHECK_ROWS_BATCH_1 if batch == 1 else x.shape[0]
            y = torch.cat([call(part).view(-1, expected.shape[1]) for part in slicer(x[:n])])
            err = (y - expected[:n]).abs()
            if float((err - (ATOL + RTOL * expected[:n].abs())).max()) > 0:
                raise SystemExit("torch_peers: %s %s (%s form, batch %d) differs from the engine "
                                 "by up to %.3g" % (name, path, form, batch, float(err.max())))
            worst = max(worst, float(err.max()))
    return {"rows": int(x.shape[0]), "routes_equal": True, "max_abs_diff": worst}


def time_calls(call, parts, min_time):
    """peers_bench's TimeCalls: warm-up, then per-call times; quantiles in us."""
    i = 0
    warmup_start = time.perf_counter()
    while i < WARMUP_CALLS or time.perf_counter() - warmup_start < WARMUP_SECONDS:
        call(parts[i % len(parts)])
        i += 1
    ns = []
    clock = time.perf_counter_ns
    start = clock()
    while len(ns) < MIN_CALLS or (clock() - start < min_time * 1e9 and len(ns) < MAX_CALLS):
        x = parts[i % len(parts)]
        t0 = clock()
        call(x)
        ns.append(clock() - t0)
        i += 1
    ns.sort()
    q = lambda p: ns[int(p * (len(ns) - 1) + 0.5)] / 1e3
    return {"median_us": q(0.5), "p10_us": q(0.1), "p90_us": q(0.9), "calls": len(ns)}


def blas_library():
    """The BLAS shared libraries this process mapped (Debian's libblas.so.3 alternative)."""
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "blas" in line.split()[-1]}
    return ", ".join(sorted(os.path.realpath(p) for p in paths)) or "unknown"


def pin_threads():
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    try:  # OpenBLAS keeps its own pool; its environment variable is read only at load.
        ctypes.CDLL("libblas.so.3").openblas_set_num_threads(1)
    except (OSError, AttributeError):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("io", help="peers_io.safetensors written by peers_bench --export_dir")
    parser.add_argument("--min_time", type=float, default=1.0,
                        help="seconds of timed calls per case, after the warm-up")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    pin_threads()

    meta, io = read_safetensors(args.io)
    results = {"torch": torch.__version__, "numpy": np.__version__,
               "threads": torch.get_num_threads(), "min_time_s": args.min_time,
               "models": [], "checks": {}}
    with torch.inference_mode():
        networks = {}
        for name in meta["networks"].split(","):
            print("torch_peers: loading and checking %s" % name, file=sys.stderr)
            sparse, dense, cost_only = load_network(meta[name + ".checkpoint"])
            results["checks"][name] = check(name, sparse, dense, io)
            results["checks"][name]["dense_cost_only"] = cost_only
            networks[name] = (sparse, dense)
        results["blas"] = blas_library()
        for name, (sparse, dense) in networks.items():
            x = f32(io[name + ".x"])
            for path, model in (("sparse", sparse), ("dense", dense)):
                for form, batch, call, slicer in forms(model):
                    print("torch_peers: %s %s batch %d (%s)" % (name, path, batch, form),
                          file=sys.stderr)
                    parts = slicer(x)
                    gc.disable()
                    timing = time_calls(call, parts, args.min_time)
                    gc.enable()
                    timing.update({"network": name, "path": path, "batch": batch, "form": form})
                    results["models"].append(timing)

    if args.json:
        print(json.dumps(results, indent=2))
        return
    print("PyTorch %s eager, 1 thread, BLAS %s: microseconds per call (median [p10, p90])"
          % (results["torch"], results["blas"]))
    print("%-10s %-7s %5s %-7s %10s %10s %10s" % ("network", "path", "batch", "form", "median",
                                                  "p10", "p90"))
    for c in results["models"]:
        print("%-10s %-7s %5d %-7s %10.2f %10.2f %10.2f" % (
            c["network"], c["path"], c["batch"], c["form"], c["median_us"], c["p10_us"],
            c["p90_us"]))
    for name, c in results["checks"].items():
        print("check %s: routes equal on %d rows, outputs within %.1e of the engine's"
              % (name, c["rows"], c["max_abs_diff"]))


if __name__ == "__main__":
    main()
