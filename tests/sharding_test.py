"""Sharded models on one machine (docs/deploy.md, "Sharded models"): four
shard servers (--shard=i/4) and a front (--shard_targets) on loopback
against an unsharded server on the same repository.

- A DSM of 2 blocks x 256 experts (lsh router) with a dense twin, and an
  LSH model of 8 affine tables: 1,000 random rows through the front equal
  the unsharded server's: identical routes (expert ids; bucket keys and
  misses), FLOPs and weight bytes, outputs within 1e-5 relative. The
  front's dense twin (served whole by the front) equals the unsharded one.
  A front whose files differ from the shards' under the same version
  refuses to load it. A row whose output overflows fails with the
  unsharded server's error, its own row named, and only its request.
  The shards run with --weight_cache_dir: each maps its DSM part from a
  file of its own (its LSH part is copied in), and answers as above.
- Killing one shard fails only the requests routed to it, UNAVAILABLE,
  within their deadline; once it is back (same port, the front not
  restarted) every request succeeds again within a few seconds. The
  front's sparse_shard_calls_total counts UNAVAILABLE for that shard alone.
- A new version published under load reaches the shards and the front
  with no failed request, and every answer is one version's whole answer.
- With two replicas of a shard index behind one target, one replica
  draining and exiting under load fails no request: gRPC's health checks
  and round-robin (and a retry of a call it refused) move to the other.
  Nor does one SIGKILLed under load: gRPC retries the calls it held on
  the live replica.
- A front idle for longer than the shards' --shard_retain_seconds, after
  a newer version replaced its own on them, still answers from its version:
  its keep-alive calls (--shard_keepalive_seconds) kept it on the shards,
  on both replicas of a shard index behind one target, while another
  model's keep-alives share that target's round robin.

Usage: sharding_test.py <source dir> <build dir>
"""
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np

source, build = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(source, "tests", "testing"))
from harness import check, finish, python_stubs, start_server, stop  # noqa: E402

spec = importlib.util.spec_from_file_location(
    "export", os.path.join(source, "client", "python", "sparse_serve", "export.py"))
export = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export)

N = 4
D, O, L, E, K = 32, 4, 2, 256, 8
S, M = 8, 6


def write_dsm(model_dir, seed, version):
    """A random lsh-routed DSM (hyperplanes cut through the data's range)
    and a random dense twin, as version `version`."""
    rng = np.random.default_rng(seed)
    t, r = L * E * K, 8  # r = log2(E)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    meta = {"format_version": "1", "kind": "dsm", "input_dim": str(D), "output_dim": str(O),
            "width": str(t), "activation": "relu", "router": "lsh", "blocks": str(L),
            "experts": str(E), "active_units": str(K)}
    model = export.safetensors(meta, [
        ("bottom.weight", f32(t, D) * 0.3), ("bottom.bias", f32(t) * 0.1),
        ("top.weight", f32(O, t) * 0.3), ("top.bias", f32(O)),
        ("router.weight", f32(L * r, D)), ("router.bias", f32(L * r) * 0.2)])
    width = 64
    dense_meta = {"format_version": "1", "kind": "dense", "input_dim": str(D), "output_dim": str(O),
                  "width": str(width), "activation": "relu"}
    dense = export.safetensors(dense_meta, [
        ("bottom.weight", f32(width, D)), ("bottom.bias", f32(width)),
        ("top.weight", f32(O, width)), ("top.bias", f32(O))])
    export.write_version(model_dir, model, dense, version=version)


def write_lsh(model_dir, seed):
    rng = np.random.default_rng(seed)
    projection = rng.standard_normal((S * M, D)).astype(np.float32)
    offset = (rng.standard_normal(S * M) * 0.5).astype(np.float32)
    tables = []
    for _ in range(S):
        keys = np.unique(rng.integers(0, 1 << M, 40))
        tables.append((keys, rng.standard_normal((len(keys), O, D + 1)).astype(np.float32),
                       rng.standard_normal((O, D + 1)).astype(np.float32)))
    export.export_lsh_table(model_dir, projection, offset, tables, degree=1, version=1)


def close(a, b, rel=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), np.abs(b).max())
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= rel * scale))


with tempfile.TemporaryDirectory() as tmp:
    repo = os.path.join(tmp, "repo")
    write_dsm(os.path.join(repo, "dsm"), 1, 1)
    # The front batches requests (the shards never batch calls together):
    # a batch that needs a dead shard fails, and then each request runs alone.
    with open(os.path.join(repo, "dsm", "config.pbtxt"), "w") as f:
        f.write("dynamic_batching { max_batch_rows: 32 max_queue_delay_us: 1000 }\n")
    write_lsh(os.path.join(repo, "lsh"), 2)
    with open(os.path.join(repo, "lsh", "config.pbtxt"), "w") as f:
        f.write("dynamic_batching { max_batch_rows: 32 max_queue_delay_us: 1000 }\n")
    python_stubs(source, os.path.join(tmp, "stubs"), "sparse/v1/inference.proto")
    import grpc
    from sparse.v1 import inference_pb2 as pb, inference_pb2_grpc as pb_grpc

    servers = []
    try:
        whole, whole_ports = start_server(build, repo)
        servers.append(whole)
        shards, shard_ports = [], []
        cache = os.path.join(tmp, "cache")
        for i in range(N):
            shard, ports = start_server(build, repo, "--shard=%d/%d" % (i, N), "--poll_seconds=0.5",
                                        "--shard_retain_seconds=5", "--weight_cache_dir=" + cache)
            servers.append(shard)
            shards.append(shard)
            shard_ports.append(ports[0])
        targets = ";".join("127.0.0.1:%d" % p for p in shard_ports)
        front, front_ports = start_server(build, repo, "--shard_targets=" + targets, "--poll_seconds=0.5",
                                          "--metrics_port=0")
        servers.append(front)
        ref = pb_grpc.SparseInferenceStub(grpc.insecure_channel("127.0.0.1:%d" % whole_ports[0]))
        api = pb_grpc.SparseInferenceStub(grpc.insecure_channel("127.0.0.1:%d" % front_ports[0]))

        # ---- Each shard maps its DSM part from its own file ---------------
        files = []
        for i, port in enumerate(shard_ports):
            stub = pb_grpc.SparseInferenceStub(grpc.insecure_channel("127.0.0.1:%d" % port))
            dsm = stub.GetModel(pb.GetModelRequest(model="dsm"), timeout=10).versions[0]
            lsh = stub.GetModel(pb.GetModelRequest(model="lsh"), timeout=10).versions[0]
            check(dsm.mapped_bytes > 0 and dsm.weight_cache_file.startswith("dsm/1/"),
                  "shard %d: its DSM part is not mapped: %d bytes from %r" %
                  (i, dsm.mapped_bytes, dsm.weight_cache_file))
            check(dsm.resident_bytes < dsm.mapped_bytes // 10,
                  "shard %d: %d resident bytes beside %d mapped" %
                  (i, dsm.resident_bytes, dsm.mapped_bytes))
            check(len(dsm.expert_resident_bytes) == L * E // N,
                  "shard %d: residency of %d expert slices, expected its own %d" %
                  (i, len(dsm.expert_resident_bytes), L * E // N))
            check(lsh.mapped_bytes == 0 and lsh.weight_cache_file == "",
                  "shard %d: its LSH part is mapped (%r); LSH shards are copied in" %
                  (i, lsh.weight_cache_file))
            files.append(dsm.weight_cache_file)
        check(len(set(files)) == N, "the %d shards map %d distinct files: %s" % (N, len(set(files)), files))

        # ---- 1,000 rows: routes, FLOPs, bytes and outputs -----------------
        x = np.random.default_rng(3).uniform(-1, 1, (1000, D)).astype(np.float32)
        for model in ("dsm", "lsh"):
            status = api.GetModel(pb.GetModelRequest(model=model), timeout=10).versions[0]
            check(status.shards == N, "%s: the front's GetModel says %d shards" % (model, status.shards))
            # 100-row requests, then one just over a 128-row chunk and one
            # of 1,000 rows (many chunks; docs/api.md promises the same
            # weight bytes at every size).
            for first, count in [(f, 100) for f in range(0, 1000, 100)] + [(0, 129), (0, 1000)]:
                rows = x[first:first + count]
                request = pb.PredictRequest(model=model, rows=count, inputs=rows.ravel().tolist(),
                                            return_route=True)
                want = ref.Predict(request, timeout=30)
                got = api.Predict(request, timeout=30)
                where = "%s rows %d..%d" % (model, first, first + count - 1)
                check(list(got.route.expert_ids) == list(want.route.expert_ids) and
                      list(got.route.bucket_keys) == list(want.route.bucket_keys) and
                      list(got.route.bucket_missed) == list(want.route.bucket_missed),
                      where + ": the front's routes differ from the unsharded server's")
                check(got.cost.flops == want.cost.flops,
                      "%s: FLOPs %d, unsharded %d" % (where, got.cost.flops, want.cost.flops))
                check(got.cost.weight_bytes == want.cost.weight_bytes,
                      "%s: weight bytes %d, unsharded %d" % (where, got.cost.weight_bytes,
                                                             want.cost.weight_bytes))
                check(close(got.outputs, want.outputs), where + ": outputs differ beyond 1e-5")
                check(got.cost.shards >= 1 and got.cost.fanout_ns > 0,
                      where + ": no shards or fan-out time in the cost: %s" % got.cost)
        # A front whose repository holds other files under the same version
        # never serves them against these shards: its load waits, then fails.
        other = os.path.join(tmp, "other")
        write_dsm(os.path.join(other, "dsm"), 99, 1)
        mismatched = subprocess.run(
            [os.path.join(build, "server", "sparse-server"), "--model_repository=" + other,
             "--address=127.0.0.1", "--port=0", "--shard_targets=" + targets, "--shard_wait_seconds=1"],
            capture_output=True, text=True, timeout=60)
        check(mismatched.returncode != 0 and "holds other files" in mismatched.stderr,
              "a front on other files under the same version: exit %d, %s" %
              (mismatched.returncode, mismatched.stderr[-300:]))
        dense_request = pb.PredictRequest(model="dsm", rows=10, inputs=x[:10].ravel().tolist())
        check(close(api.PredictDense(dense_request, timeout=10).outputs,
                    ref.PredictDense(dense_request, timeout=10).outputs),
              "the front's dense twin differs from the unsharded server's")

        # ---- An output that overflows ----------------------------------------
        # The front, not a shard, judges the sums: the error names the row of
        # the client's request, word for word as the unsharded server's, and
        # the requests batched with it are answered.
        for model in ("dsm", "lsh"):
            refused = None
            for big in (3e38, -3e38):
                rows = np.vstack([x[:2], np.full((1, D), big, np.float32)])
                request = pb.PredictRequest(model=model, rows=3, inputs=rows.ravel().tolist())
                try:
                    ref.Predict(request, timeout=10)
                except grpc.RpcError as e:
                    refused = (request, e.code(), e.details())
                    break
            check(refused is not None, "%s: no row of +-3e38 overflows the unsharded server" % model)
            if refused is None:
                continue
            request, code, details = refused
            good = [pb.PredictRequest(model=model, rows=1, inputs=x[i].tolist()) for i in range(16)]
            expected_good = [ref.Predict(g, timeout=10).outputs for g in good]
            batched = 0
            for attempt in range(5):  # until the front batched the good requests
                futures = [api.Predict.future(r, timeout=10) for r in [request] + good]
                try:
                    futures[0].result()
                    check(False, "%s: the front answered a row whose output overflows" % model)
                except grpc.RpcError as e:
                    check((e.code(), e.details()) == (code, details),
                          "%s: the front said %s %r, the unsharded server %s %r" %
                          (model, e.code(), e.details(), code, details))
                for i, f in enumerate(futures[1:]):
                    got = f.result()
                    check(close(got.outputs, expected_good[i]),
                          "%s: a request sent beside the overflowing one differs" % model)
                    batched += got.cost.batch_size > 1
                if batched:
                    break
            check(batched > 0, "%s: the front never batched the requests sent together" % model)
            print("%s: an overflowing row fails with the unsharded server's error; 16 requests "
                  "sent with it answered (%d of them batched)" % (model, batched))

        # ---- Kill a shard mid-load -------------------------------------------
        # Which shards each row of the DSM needs, from the unsharded routes.
        probe = x[:200]
        want = ref.Predict(pb.PredictRequest(model="dsm", rows=200, inputs=probe.ravel().tolist(),
                                             return_route=True), timeout=30)
        needs = [{(e * N) // E for e in want.route.expert_ids[r * L:(r + 1) * L]} for r in range(200)]
        victim = 2
        # Eight clients send single-row requests while the shard is killed:
        # only rows that need it may fail, each UNAVAILABLE within its deadline.
        killed = threading.Event()
        stop_load = threading.Event()
        wrong, failed_after_kill, ok_after_kill = [], [0], [0]

        def send_rows(offset):
            r = offset
            while not stop_load.is_set():
                r = (r + 7) % 200
                request = pb.PredictRequest(model="dsm", rows=1, inputs=probe[r].tolist())
                after = killed.is_set()
                sent = time.monotonic()
                try:
                    api.Predict(request, timeout=5)
                    ok_after_kill[0] += after
                    if after and victim in needs[r]:
                        wrong.append("row %d needs shard %d but succeeded" % (r, victim))
                except grpc.RpcError as e:
                    took = time.monotonic() - sent
                    failed_after_kill[0] += 1
                    if victim not in needs[r]:
                        wrong.append("row %d does not need shard %d but failed: %s %s" %
                                     (r, victim, e.code(), e.details()))
                    elif e.code() != grpc.StatusCode.UNAVAILABLE:
                        wrong.append("row %d failed %s, not UNAVAILABLE: %s" % (r, e.code(), e.details()))
                    elif took > 5:
                        wrong.append("row %d failed after %.1f s, past its deadline" % (r, took))

        load_threads = [threading.Thread(target=send_rows, args=(i * 25,)) for i in range(8)]
        for t in load_threads:
            t.start()
        time.sleep(0.5)
        shards[victim].send_signal(signal.SIGKILL)
        shards[victim].wait()
        time.sleep(0.05)  # calls in flight at the kill fail with it
        killed.set()
        time.sleep(1.5)
        stop_load.set()
        for t in load_threads:
            t.join()
        check(failed_after_kill[0] > 0 and ok_after_kill[0] > 0,
              "with shard %d down, %d requests failed and %d succeeded" %
              (victim, failed_after_kill[0], ok_after_kill[0]))
        print("under load with shard %d killed: %d failed (all needing it), %d succeeded" %
              (victim, failed_after_kill[0], ok_after_kill[0]))
        started = time.monotonic()
        for r in range(200):
            request = pb.PredictRequest(model="dsm", rows=1, inputs=probe[r].tolist())
            try:
                api.Predict(request, timeout=5)
                if victim in needs[r]:
                    wrong.append("row %d needs shard %d but succeeded" % (r, victim))
            except grpc.RpcError as e:
                if victim not in needs[r]:
                    wrong.append("row %d does not need shard %d but failed: %s" % (r, victim, e.code()))
                elif e.code() != grpc.StatusCode.UNAVAILABLE:
                    wrong.append("row %d failed %s, not UNAVAILABLE: %s" % (r, e.code(), e.details()))
        check(not wrong, "with shard %d down: %s" % (victim, "; ".join(wrong[:5])))
        check(sum(victim in n for n in needs) > 0 and sum(victim not in n for n in needs) > 0,
              "the probe rows exercise both cases")
        # LSH rows need every shard: all fail, fast.
        try:
            api.Predict(pb.PredictRequest(model="lsh", rows=1, inputs=probe[0].tolist()), timeout=5)
            check(False, "an LSH row succeeded with a shard down")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.UNAVAILABLE, "LSH with a shard down: %s" % e.code())
        print("200 single-row requests with shard %d down in %.1f s" % (victim, time.monotonic() - started))
        # The front's per-shard metrics tell which shard failed.
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % front_ports[1], timeout=10) as page:
            metrics = page.read().decode()
        calls = {}
        for m in re.finditer(r'^sparse_shard_calls_total\{(.*)\} (\S+)$', metrics, re.M):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            calls[(labels["shard"], labels["code"])] = float(m.group(2))
        victim_label = "%d/%d" % (victim, N)
        check(all(calls.get(("%d/%d" % (i, N), "OK"), 0) > 0 for i in range(N)),
              "every shard has OK calls in sparse_shard_calls_total: %s" % calls)
        check(calls.get((victim_label, "UNAVAILABLE"), 0) > 0 and
              all(calls.get(("%d/%d" % (i, N), "UNAVAILABLE"), 0) == 0 for i in range(N) if i != victim),
              "sparse_shard_calls_total counts UNAVAILABLE for shard %s alone: %s" % (victim_label, calls))
        check(re.search(r'^sparse_shard_call_seconds_count\{shard="%s",target="127\.0\.0\.1:%d"\} [1-9]'
                        % (re.escape(victim_label), shard_ports[victim]), metrics, re.M) is not None,
              "sparse_shard_call_seconds counts the calls to shard %s" % victim_label)
        in_flight = re.findall(r'^sparse_shard_calls_in_flight\{shard="(\d+/\d+)",target="[^"]*"\} (\S+)$',
                               metrics, re.M)
        check(sorted(shard for shard, _ in in_flight) == ["%d/%d" % (i, N) for i in range(N)] and
              all(float(v) == 0 for _, v in in_flight),
              "sparse_shard_calls_in_flight: one gauge per shard, 0 once every call is answered: %s" % in_flight)

        # Back on the same port: the front reconnects by itself. It maps the
        # file the killed process wrote.
        restarted = subprocess.Popen(
            [os.path.join(build, "server", "sparse-server"), "--model_repository=" + repo,
             "--address=127.0.0.1", "--port=%d" % shard_ports[victim], "--shard=%d/%d" % (victim, N),
             "--poll_seconds=0.5", "--shard_retain_seconds=5", "--weight_cache_dir=" + cache],
            stdout=subprocess.PIPE, text=True)
        servers.append(restarted)
        shards[victim] = restarted
        restarted.stdout.readline()
        back = time.monotonic()
        recovered = None
        while time.monotonic() - back < 15:
            try:
                api.Predict(pb.PredictRequest(model="lsh", rows=1, inputs=probe[0].tolist()), timeout=2)
                recovered = time.monotonic() - back
                break
            except grpc.RpcError:
                time.sleep(0.05)
        check(recovered is not None and recovered < 5,
              "the front served through the restarted shard after %s s" % recovered)
        print("front reconnected to the restarted shard %.2f s after it listened" % (recovered or -1))
        failures = 0
        for r in range(200):
            try:
                api.Predict(pb.PredictRequest(model="dsm", rows=1, inputs=probe[r].tolist()), timeout=5)
            except grpc.RpcError:
                failures += 1
        check(failures == 0, "%d of 200 requests failed after the shard came back" % failures)
        again = pb_grpc.SparseInferenceStub(grpc.insecure_channel("127.0.0.1:%d" % shard_ports[victim]))
        mapped = again.GetModel(pb.GetModelRequest(model="dsm"), timeout=10).versions[0]
        check(mapped.weight_cache_file == files[victim] and mapped.mapped_bytes > 0,
              "the restarted shard maps %r, its first process %r" %
              (mapped.weight_cache_file, files[victim]))

        # ---- Hot reload under load -------------------------------------------
        # The expected answers of versions 1 and 2 come from an unsharded
        # server that keeps both.
        both = os.path.join(tmp, "both")
        shutil.copytree(os.path.join(repo, "dsm", "1"), os.path.join(both, "dsm", "1"))
        write_dsm(os.path.join(both, "dsm"), 11, 2)
        with open(os.path.join(both, "dsm", "config.pbtxt"), "w") as f:
            f.write("version_policy { latest { num_versions: 2 } }\n")
        reference, reference_ports = start_server(build, both)
        servers.append(reference)
        oracle = pb_grpc.SparseInferenceStub(grpc.insecure_channel("127.0.0.1:%d" % reference_ports[0]))
        batch = x[:16]
        expected = {}
        for version in (1, 2):
            expected[version] = oracle.Predict(pb.PredictRequest(
                model="dsm", version=version, rows=16, inputs=batch.ravel().tolist()), timeout=10).outputs
        check(not close(expected[1], expected[2]), "the two versions answer differently")
        seen, errors, mixed = {1: 0, 2: 0}, [], []
        stop_load = threading.Event()

        def load():
            request = pb.PredictRequest(model="dsm", rows=16, inputs=batch.ravel().tolist())
            while not stop_load.is_set():
                try:
                    got = api.Predict(request, timeout=10)
                except grpc.RpcError as e:
                    errors.append("%s: %s" % (e.code(), e.details()))
                    continue
                seen[got.version] = seen.get(got.version, 0) + 1
                if got.version not in expected or not close(got.outputs, expected[got.version]):
                    mixed.append(got.version)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1)
        shutil.copytree(os.path.join(both, "dsm", "2"), os.path.join(repo, "dsm", ".tmp-2"))
        os.rename(os.path.join(repo, "dsm", ".tmp-2"), os.path.join(repo, "dsm", "2"))
        switched = time.monotonic()
        while time.monotonic() - switched < 60:
            status = api.GetModel(pb.GetModelRequest(model="dsm"), timeout=10)
            if status.serving_version == 2 and len(status.versions) == 1:
                break
            time.sleep(0.2)
        time.sleep(1)
        stop_load.set()
        for t in threads:
            t.join()
        print("hot reload under load: %s answers by version, front on version 2 after %.1f s" %
              (seen, time.monotonic() - switched - 1))
        check(not errors, "%d requests failed during the reload: %s" % (len(errors), errors[:3]))
        check(not mixed, "%d answers were not one version's whole answer" % len(mixed))
        check(seen.get(1, 0) > 0 and seen.get(2, 0) > 0, "answers from both versions: %s" % seen)

        # ---- Two replicas of one shard index ---------------------------------
        # A second replica of shard 1 and a front whose target for index 1
        # lists both: one replica drains (SIGTERM) and then dies under load,
        # and the front fails over to the other with no failed request.
        replica, replica_ports = start_server(build, repo, "--shard=1/%d" % N, "--poll_seconds=0.5",
                                              "--drain_seconds=2")
        servers.append(replica)
        both_targets = ["127.0.0.1:%d" % p for p in shard_ports]
        both_targets[1] = "ipv4:127.0.0.1:%d,127.0.0.1:%d" % (shard_ports[1], replica_ports[0])
        front2, front2_ports = start_server(build, repo, "--shard_targets=" + ";".join(both_targets))
        servers.append(front2)
        api2 = pb_grpc.SparseInferenceStub(grpc.insecure_channel("127.0.0.1:%d" % front2_ports[0]))
        failover_errors, answered = [], [0]
        stop_load.clear()

        def load2():
            request = pb.PredictRequest(model="lsh", rows=4, inputs=x[:4].ravel().tolist())
            while not stop_load.is_set():
                try:
                    api2.Predict(request, timeout=10)
                    answered[0] += 1
                except grpc.RpcError as e:
                    failover_errors.append("%s: %s" % (e.code(), e.details()))

        threads = [threading.Thread(target=load2) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1)
        first = shards[1]
        first.send_signal(signal.SIGTERM)  # drains: health NOT_SERVING, then exits
        first.wait(timeout=30)
        time.sleep(1.5)
        stop_load.set()
        for t in threads:
            t.join()
        print("one replica of shard 1 drained and exited under load: %d answered, %d failed" %
              (answered[0], len(failover_errors)))
        check(answered[0] > 0 and not failover_errors,
              "failover to the live replica: %d failed: %s" % (len(failover_errors), failover_errors[:3]))

        # A replica back on the drained one's port, then the other one
        # SIGKILLed under load: calls it held fail with its connection and
        # gRPC retries them on the live replica.
        third, _ = start_server(build, repo, "--port=%d" % shard_ports[1], "--shard=1/%d" % N,
                                "--poll_seconds=0.5", "--shard_retain_seconds=5")
        servers.append(third)
        time.sleep(3)  # the front's health check finds it (reconnect back-off <= 2 s)
        failover_errors.clear()
        answered[0] = 0
        stop_load.clear()
        threads = [threading.Thread(target=load2) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1)
        replica.send_signal(signal.SIGKILL)
        replica.wait()
        time.sleep(1.5)
        stop_load.set()
        for t in threads:
            t.join()
        print("the other replica of shard 1 SIGKILLed under load: %d answered, %d failed %s" %
              (answered[0], len(failover_errors), failover_errors[:3]))
        check(answered[0] > 0 and not failover_errors,
              "failover from a killed replica: %d failed: %s" % (len(failover_errors), failover_errors[:3]))

        # ---- An idle front keeps its version on the shards -----------------
        # A front that loaded version 2 once (no rescans) sits idle while
        # version 3 replaces it on the shards, for longer than their
        # --shard_retain_seconds (5 s): its keep-alive calls kept version 2
        # on every shard, so it still answers, with version 2's outputs.
        # Shard 1 has two replicas behind one target, and the front serves
        # two models whose keep-alives share that target's round robin:
        # both replicas must keep version 2.
        front2.send_signal(signal.SIGKILL)  # it serves version 2 too
        front2.wait()
        spare, spare_ports = start_server(build, repo, "--shard=1/%d" % N, "--poll_seconds=0.5",
                                          "--shard_retain_seconds=5")
        servers.append(spare)
        idle_targets = ["127.0.0.1:%d" % p for p in shard_ports]
        idle_targets[1] = "ipv4:127.0.0.1:%d,127.0.0.1:%d" % (shard_ports[1], spare_ports[0])
        idle, idle_ports = start_server(build, repo, "--shard_targets=" + ";".join(idle_targets),
                                        "--shard_keepalive_seconds=1")
        servers.append(idle)
        idle_api = pb_grpc.SparseInferenceStub(grpc.insecure_channel("127.0.0.1:%d" % idle_ports[0]))
        request = pb.PredictRequest(model="dsm", rows=16, inputs=batch.ravel().tolist())
        check(idle_api.Predict(request, timeout=10).version == 2, "the idle front serves version 2")
        write_dsm(os.path.join(repo, "dsm"), 12, 3)
        shard_apis = [pb_grpc.SparseInferenceStub(grpc.insecure_channel("127.0.0.1:%d" % p))
                      for p in shard_ports + [spare_ports[0]]]
        published = time.monotonic()
        while time.monotonic() - published < 60:
            serving = [a.GetModel(pb.GetModelRequest(model="dsm"), timeout=10).serving_version
                       for a in shard_apis + [api]]
            if serving == [3] * len(serving):
                break
            time.sleep(0.2)
        check(serving == [3] * len(serving), "shards and the polling front serve version 3: %s" % serving)
        time.sleep(5 + 2)  # past the shards' --shard_retain_seconds, the idle front idle
        # Round robin sends these to both replicas of shard 1.
        dropped = []
        for _ in range(8):
            try:
                got = idle_api.Predict(request, timeout=10)
                check(got.version == 2 and close(got.outputs, expected[2]),
                      "the idle front answers version 2's outputs: version %d" % got.version)
            except grpc.RpcError as e:
                dropped.append("%s %s" % (e.code(), e.details()))
        check(not dropped, "the idle front's version was dropped by a shard: %s" % dropped[:2])
        print("a front idle for 7 s after version 3 replaced its version 2 on the shards "
              "(two replicas of shard 1) still answers: 8 requests, %d failed" % len(dropped))
    finally:
        for server in servers:
            if server.poll() is None:
                server.send_signal(signal.SIGKILL)
                server.wait()
finish()
