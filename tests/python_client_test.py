"""The Python package end to end (issue 9): PyTorch -> sparse_serve.export
-> sparse-server -> sparse_serve.Client gives PyTorch's outputs.

A small DSM with the lsh router (and its dense twin) is trained in PyTorch,
a kmeans- and a topk-routed DSM and two LSH tables (constant and affine
buckets) are built from arrays; each is exported, served, and predicted
through the native API, the Open Inference Protocol and the async client,
and compared with the PyTorch module's own outputs to 1e-5. The test also
checks routes, FLOPs, model listing, health, the errors the client raises,
what export refuses, and runs docs/examples/python_client.py.

    python_client_test.py SOURCE_DIR BUILD_DIR
"""
import asyncio
import os
import subprocess
import sys
import tempfile

source, build = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(source, "tests", "testing"))
sys.path.insert(0, os.path.join(build, "python"))
from harness import check, finish, start_server, stop  # noqa: E402

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import sparse_serve  # noqa: E402
from sparse_serve import export, nn as ssnn  # noqa: E402

torch.manual_seed(0)
TOLERANCE = 1e-5
D = 8


def target(x):
    """What the DSM learns: a smooth function of 8 inputs in [-1, 1]."""
    return (torch.sin(2 * x[:, :4]).sum(1, keepdim=True) + (x[:, 4:] ** 2).sum(1, keepdim=True)) / 4


def train(model, steps=300):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    x = torch.rand(4096, D) * 2 - 1
    y = target(x)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    return float(loss)


def away_from_boundaries(x, *projections, margin=1e-3):
    """Rows of x whose every hyperplane value (router or hash) is at least
    `margin` from 0: float32 sums in another order must not flip a bit."""
    keep = torch.ones(x.shape[0], dtype=torch.bool)
    for w, b in projections:
        keep &= ((x @ w.T + b).abs() > margin).all(1)
    return x[keep]


def worst(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


with tempfile.TemporaryDirectory() as tmp:
    repo = os.path.join(tmp, "repo")
    # A trained lsh-routed DSM with a trained dense twin.
    dsm = ssnn.DSM(D, 1, experts=8, active_units=16, router="lsh", seed=1)
    twin = ssnn.Dense(D, 128, 1)
    dsm_loss, twin_loss = train(dsm), train(twin)
    print("trained in PyTorch: DSM mse %.2e, dense twin mse %.2e" % (dsm_loss, twin_loss))
    path = export.export_dsm(dsm, os.path.join(repo, "torch_dsm"), dense=twin, info={"trainer": "pytorch"})
    check(path.endswith(os.path.join("torch_dsm", "1")), "the first export is version 1: %s" % path)
    # Routers kmeans (two blocks) and topk, untrained, without dense twins.
    kmeans = ssnn.DSM(D, 2, experts=4, active_units=8, blocks=2, router="kmeans", seed=2)
    export.export_dsm(kmeans, os.path.join(repo, "torch_kmeans"))
    topk = ssnn.DSM(D, 2, experts=0, active_units=6, blocks=2, router="topk", block_units=32)
    export.export_dsm(topk, os.path.join(repo, "torch_topk"))
    # LSH tables from arrays: buckets for the keys sample inputs hit.
    lsh = {}
    for degree in (0, 1):
        s, m, o = 4, 6, 2
        projection = torch.randn(s * m, D)
        offset = -(projection * (torch.rand(s * m, D) * 2 - 1)).sum(1) * 0.5
        probe = ssnn.LshTable(projection, offset, [([], torch.zeros(0, o), torch.zeros(o))] * s)
        hit = probe.bucket_keys(torch.rand(2048, D) * 2 - 1)
        tables = []
        for i in range(s):
            keys = torch.unique(hit[:, i])[::2]  # half of them: misses happen too
            shape = (len(keys), o) if degree == 0 else (len(keys), o, D + 1)
            fallback = torch.randn(o) if degree == 0 else torch.randn(o, D + 1)
            tables.append((keys, torch.randn(*shape), fallback))
        lsh[degree] = ssnn.LshTable(projection, offset, tables, degree=degree, alpha=torch.rand(s))
        export.export_lsh_table(os.path.join(repo, "torch_lsh%d" % degree), **lsh[degree].arrays())

    # Stored at BF16 and INT8 with their test MSE recorded, and served at that
    # precision (config.pbtxt): d = 64 and k = 64 so the slices run reduced.
    wide = ssnn.DSM(64, 1, experts=4, active_units=64, router="lsh", seed=3)
    wide_twin = ssnn.Dense(64, 256, 1)
    x_wide = np.random.default_rng(5).uniform(-1, 1, (256, 64)).astype(np.float32)
    y_wide = np.sin(x_wide.sum(1, keepdims=True)).astype(np.float32)
    for p in ("FP32", "BF16", "INT8"):
        export.export_dsm(wide, os.path.join(repo, "wide_" + p), dense=wide_twin, precision=p,
                          test=(x_wide, y_wide))
        with open(os.path.join(repo, "wide_" + p, "config.pbtxt"), "w") as f:
            f.write("precision: %s\n" % p)

    server, ports = start_server(build, repo, "--poll_seconds=0.5")
    target_address = "127.0.0.1:%d" % ports[0]
    try:
        client = sparse_serve.Client(target_address)
        oip = sparse_serve.Client(target_address, protocol="oip")
        x_all = torch.rand(512, D) * 2 - 1

        def compare(name, module, x, dense_module=None):
            with torch.no_grad():
                expected = module(x).numpy()
                expected_dense = dense_module(x).numpy() if dense_module is not None else None
            p = client.predict(name, x.numpy())
            check(p.outputs.shape == expected.shape, "%s: outputs %s" % (name, p.outputs.shape))
            err = worst(p.outputs, expected)
            check(err <= TOLERANCE, "%s: the server gives PyTorch's outputs (max error %.2e)" % (name, err))
            q = oip.predict(name, x.numpy())
            check(np.array_equal(q.outputs, p.outputs), "%s: OIP gives the native outputs" % name)
            check(q.cost.flops == p.cost.flops, "%s: OIP reports the same FLOPs" % name)
            check(p.cost.major_faults >= 0 and q.cost.major_faults >= 0,
                  "%s: major faults on both protocols (%d, OIP %d)" % (name, p.cost.major_faults,
                                                                      q.cost.major_faults))
            check(q.cost.weight_bytes == p.cost.weight_bytes > 0,
                  "%s: OIP reports the same weight bytes (%d, native %d)" % (name, q.cost.weight_bytes,
                                                                            p.cost.weight_bytes))
            info = client.model(name).versions[0]
            check(p.cost.flops == x.shape[0] * info.flops_per_row and p.cost.flops > 0,
                  "%s: %d FLOPs = rows x %d" % (name, p.cost.flops, info.flops_per_row))
            line = "  %-13s %3d rows: max |server - PyTorch| %.1e" % (name, x.shape[0], err)
            if expected_dense is not None:
                pd = client.predict(name, x.numpy(), dense=True)
                err_dense = worst(pd.outputs, expected_dense)
                check(err_dense <= TOLERANCE, "%s dense: the twin's outputs (max error %.2e)" % (name, err_dense))
                check(not pd.dense_cost_only, "%s dense: a trained twin, not cost-only" % name)
                check(np.array_equal(oip.predict(name, x.numpy(), dense=True).outputs, pd.outputs),
                      "%s dense: OIP (model %s.dense) gives the same" % (name, name))
                line += ", dense twin %.1e" % err_dense
            print(line)
            return p

        x = away_from_boundaries(x_all, (dsm.router.weight.detach(), dsm.router.bias.detach()))
        p = compare("torch_dsm", dsm, x, twin)
        k, r = 16, 3
        check(client.model("torch_dsm").versions[0].flops_per_row == 2 * r * D + 2 * k * D + 2 * k * 1,
              "torch_dsm: FLOPs per row are 2rd + 2kd + 2ko")
        routed = client.predict("torch_dsm", x.numpy(), route=True).route
        check(np.array_equal(routed.expert_ids, dsm.expert_ids(x).numpy()),
              "torch_dsm: the server routes every row to PyTorch's expert")
        compare("torch_kmeans", kmeans, x_all)
        check(client.predict("torch_kmeans", x_all[:1].numpy(), dense=True).dense_cost_only,
              "a DSM exported without a twin gets the cost-only dense baseline")
        compare("torch_topk", topk, x_all)
        for degree, model in lsh.items():
            x = away_from_boundaries(x_all, (model.projection, model.offset))
            compare("torch_lsh%d" % degree, model, x)
            keys = client.predict("torch_lsh%d" % degree, x.numpy(), route=True).route.bucket_keys
            check(np.array_equal(keys.astype(np.int64), model.bucket_keys(x).numpy()),
                  "torch_lsh%d: the server's bucket keys are PyTorch's" % degree)

        # Reduced precision: the server answers as export.served_predict
        # computes, so its test MSE is the one the export recorded; files and
        # resident memory shrink, and one row reads weight_bytes_per_row.
        size = lambda p: os.path.getsize(os.path.join(repo, "wide_" + p, "1", "model.safetensors"))
        wide_info = {p: client.model("wide_" + p).versions[0] for p in ("FP32", "BF16", "INT8")}
        for p in ("BF16", "INT8"):
            info = wide_info[p]
            check(info.precision == p, "wide_%s serves at %s" % (p, info.precision))
            check(size(p) < size("FP32") * (0.55 if p == "BF16" else 0.3),
                  "wide_%s: model.safetensors %d bytes vs %d at FP32" % (p, size(p), size("FP32")))
            check(info.resident_bytes < wide_info["FP32"].resident_bytes * (0.6 if p == "BF16" else 0.35),
                  "wide_%s: resident %d bytes vs %d at FP32" % (p, info.resident_bytes,
                                                               wide_info["FP32"].resident_bytes))
            for dense in (False, True):
                got = client.predict("wide_" + p, x_wide, dense=dense).outputs
                want = export.served_predict(wide_twin if dense else wide, x_wide, p, p, dense=dense)
                err = worst(got, want)
                check(err <= 1e-4, "wide_%s%s: the server computes what served_predict says (max error %.1e)"
                      % (p, " dense" if dense else "", err))
                mse = float(np.mean((got.astype(np.float64) - y_wide) ** 2))
                key = ("dense_" if dense else "") + "test_mse_" + p.lower()
                recorded = float(info.info[key])
                check(abs(mse - recorded) <= 1e-4 * recorded, "wide_%s: served test MSE %.6g, recorded %s %.6g"
                      % (p, mse, key, recorded))
            one = client.predict("wide_" + p, x_wide[0])
            check(one.cost.weight_bytes == info.weight_bytes_per_row > 0,
                  "wide_%s: one row reads %d bytes, GetModel says %d" % (p, one.cost.weight_bytes,
                                                                         info.weight_bytes_per_row))
        print("  reduced precision: test MSE FP32 %s, BF16 %s, INT8 %s (recorded at export)" % tuple(
            wide_info["FP32"].info["test_mse" + ("" if p == "FP32" else "_" + p.lower())]
            for p in ("FP32", "BF16", "INT8")))

        # One row of shape (d,) comes back as (o,).
        one = client.predict("torch_dsm", np.zeros(D, np.float32))
        check(one.outputs.shape == (1,) and one.version == 1, "a (d,) input gives (o,): %s" % (one.outputs.shape,))

        # Listing and health.
        names = sorted(m.name for m in client.models())
        check(names == ["torch_dsm", "torch_kmeans", "torch_lsh0", "torch_lsh1", "torch_topk",
                        "wide_BF16", "wide_FP32", "wide_INT8"],
              "models() lists every export: %s" % names)
        info = client.model("torch_dsm").versions[0]
        check(info.info.get("trainer") == "pytorch" and info.has_dense, "export's info and twin are listed")
        check(client.health() and client.health("torch_dsm"), "health: live, and the model ready")

        # Errors carry the gRPC code and the server's message.
        def error_of(call):
            try:
                call()
            except sparse_serve.SparseServeError as e:
                return e
            return None
        for what, call, code in [
                ("an unknown model", lambda: client.predict("nope", np.zeros((1, D))), grpc.StatusCode.NOT_FOUND),
                ("a wrong width", lambda: client.predict("torch_dsm", np.zeros((2, D + 1))),
                 grpc.StatusCode.INVALID_ARGUMENT),
                ("a NaN", lambda: client.predict("torch_dsm", np.full((1, D), np.nan)),
                 grpc.StatusCode.INVALID_ARGUMENT),
                ("an unknown version", lambda: client.predict("torch_dsm", np.zeros(D), version=7),
                 grpc.StatusCode.NOT_FOUND),
                ("OIP, an unknown model", lambda: oip.predict("nope", np.zeros((1, D))), grpc.StatusCode.NOT_FOUND),
                ("health of an unknown model", lambda: client.health("nope"), grpc.StatusCode.NOT_FOUND)]:
            e = error_of(call)
            check(e is not None and e.code == code and e.details, "%s raises %s: %r" % (what, code.name, e))
            if e is not None:
                print("  %-27s -> SparseServeError(%s, %r)" % (what, e.code.name, e.details[:60]))
        for what, call in [("route over OIP", lambda: oip.predict("torch_dsm", np.zeros(D), route=True)),
                           ("a 3-D input", lambda: client.predict("torch_dsm", np.zeros((1, 1, D))))]:
            try:
                call()
                check(False, "%s raises ValueError" % what)
            except ValueError:
                pass

        # The async client: 16 concurrent predictions, the same outputs.
        async def concurrently():
            async with sparse_serve.AsyncClient(target_address) as a:
                rows = [x_all[i:i + 4].numpy() for i in range(0, 64, 4)]
                got = await asyncio.gather(*(a.predict("torch_topk", r) for r in rows))
                dense = await a.predict("torch_dsm", rows[0], dense=True)
                models = await a.models()
                missing = None
                try:
                    await a.predict("nope", rows[0])
                except sparse_serve.SparseServeError as e:
                    missing = e.code
                return rows, got, dense, models, missing
        rows, got, dense, models, missing = asyncio.run(concurrently())
        check(all(np.array_equal(g.outputs, client.predict("torch_topk", r).outputs) for r, g in zip(rows, got)),
              "AsyncClient gives the blocking client's outputs")
        check(np.array_equal(dense.outputs, client.predict("torch_dsm", rows[0], dense=True).outputs),
              "AsyncClient: the dense path")
        check(len(models) == 8 and missing == grpc.StatusCode.NOT_FOUND, "AsyncClient: models() and errors")

        # The example in docs/python.md runs against this server.
        example = subprocess.run(["/usr/bin/python3", os.path.join(source, "docs", "examples", "python_client.py"),
                                  target_address, os.path.join(repo, "example_dsm")],
                                 capture_output=True, text=True, timeout=120,
                                 env=dict(os.environ, PYTHONPATH=os.path.join(build, "python")))
        check(example.returncode == 0, "docs/examples/python_client.py runs: %s" % example.stderr[-2000:])
        print("  example: " + example.stdout.strip().replace("\n", "\n  example: "))
        client.close()
        oip.close()
    finally:
        code, _ = stop(server)
    check(code == 0, "the server stops cleanly")

    # Served again from weight cache files (--weight_cache_dir): the client
    # exposes the mapping, its file and verification mode, and what is in
    # memory, per expert slice for a routed DSM.
    cache = os.path.join(tmp, "cache")
    server, ports = start_server(build, repo, "--weight_cache_dir=" + cache, "--weight_verify=touch")
    try:
        client = sparse_serve.Client("127.0.0.1:%d" % ports[0])
        v = client.model("torch_dsm").versions[0]
        check(v.mapped_bytes > 0 and 0 < v.mapped_resident_bytes <= v.mapped_bytes and
              0 < v.mapped_resident_fraction <= 1,
              "torch_dsm mapped: %d bytes, %d in memory" % (v.mapped_bytes, v.mapped_resident_bytes))
        check(v.weight_cache_file.startswith("torch_dsm/") and
              os.path.isfile(os.path.join(cache, v.weight_cache_file)) and
              v.weight_verify == "touch", "torch_dsm's weight cache file %r, verify %r" % (v.weight_cache_file,
                                                                                        v.weight_verify))
        check(v.experts == dsm.experts and v.expert_bytes > 0 and
              len(v.expert_resident_bytes) == v.experts * dsm.blocks and
              all(0 <= b <= v.expert_bytes for b in v.expert_resident_bytes) and
              sum(v.expert_resident_bytes) <= v.mapped_resident_bytes,
              "torch_dsm: residency of each expert slice: %d experts of %d bytes, %s" %
              (v.experts, v.expert_bytes, v.expert_resident_bytes))
        topk_v = client.model("torch_topk").versions[0]
        check(topk_v.mapped_bytes > 0 and topk_v.expert_resident_bytes == () and topk_v.experts == 0,
              "torch_topk: mapped, no per-expert slices (%d bytes, %s)" % (topk_v.mapped_bytes,
                                                                           topk_v.expert_resident_bytes))
        table = client.model("torch_lsh%d" % min(lsh)).versions[0]
        check(table.mapped_bytes > 0 and 0 <= table.mapped_resident_fraction <= 1 and
              table.weight_cache_file != "" and table.expert_resident_bytes == () and table.experts == 0,
              "an LSH table's buckets are mapped, no experts listed (%d, %r, %s)" %
              (table.mapped_bytes, table.weight_cache_file, table.expert_resident_bytes))
    finally:
        code, _ = stop(server)
    check(code == 0, "the server on weight cache files stops cleanly")

    # What export refuses: a clear ValueError, and nothing written.
    refusals = [
        ("6 experts with the lsh router", lambda: ssnn.DSM(D, 1, experts=6, active_units=4)),
        ("a twin of another width", lambda: export.export_dsm(dsm, os.path.join(tmp, "bad"), dense=ssnn.Dense(D + 1, 8, 1))),
        ("NaN weights", lambda: export.export_dsm(_nan(), os.path.join(tmp, "bad"))),
        ("a key twice", lambda: export.export_lsh_table(os.path.join(tmp, "bad"), torch.randn(2, D), torch.zeros(2),
                                                         [([1, 1], torch.zeros(2, 1), torch.zeros(1))])),
        ("65 hyperplane bits", lambda: export.export_lsh_table(os.path.join(tmp, "bad"), torch.randn(65, D),
                                                                torch.zeros(65), [([], torch.zeros(0, 1), torch.zeros(1))])),
    ]

    def _nan():
        m = ssnn.DSM(D, 1, experts=2, active_units=2)
        with torch.no_grad():
            m.top.weight[0, 0] = float("nan")
        return m
    for what, call in refusals:
        try:
            call()
            check(False, "export refuses %s" % what)
        except ValueError as e:
            print("  refused %-30s ValueError: %s" % (what + ":", e))
    check(not os.path.exists(os.path.join(tmp, "bad")) or not any(n.isdigit() for n in os.listdir(os.path.join(tmp, "bad"))),
          "a refused export writes no version")
    check(export.export_dsm(dsm, os.path.join(repo, "torch_dsm")).endswith("2"), "the next export is version 2")
finish()
