"""Soak: sparse-server under a fixed request rate for a long run, with a hot
reload every --reload_every seconds (issue 8, docs/reliability.md).

`sparse-cli bench` sends requests open loop at --rate for the whole run on
the sparse and dense paths (alternating windows); every --reload_every
seconds a new version (hard links of one trained version, published by
renaming a hidden directory) replaces the serving one; the server's RSS is
sampled every second. It checks:
  - zero failed requests, on both paths;
  - after the warm-up (the first --warmup_reloads reloads), RSS grows less
    than --max_growth (median of the last reload period vs the first period
    after the warm-up);
  - every published version served, and only the newest one is left.
The memory curve is written as CSV (--csv).

Usage:
  soak_test.py <source dir> <build dir>                a short run, for ctest
  soak_test.py <source dir> <build dir> --version_dir=DIR --seconds=600
      --reload_every=30 --rate=200 --csv=soak.csv     the must-show run
      (make soak, on dsm1024)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

parser = argparse.ArgumentParser()
parser.add_argument("source")
parser.add_argument("build")
parser.add_argument("--version_dir", help="a trained version to republish (default: train a small DSM)")
parser.add_argument("--seconds", type=int, default=48)
parser.add_argument("--reload_every", type=float, default=6)
parser.add_argument("--warmup_reloads", type=int, default=2)
parser.add_argument("--rate", type=float, default=200, help="requests per second on each path")
parser.add_argument("--max_growth", type=float, default=0.05)
parser.add_argument("--csv", help="write the RSS curve here (seconds, version, RSS, anonymous, file-backed KiB)")
args = parser.parse_args()

sys.path.insert(0, os.path.join(args.source, "tests", "testing"))
from harness import (check, finish, link_version, memory_kib, python_stubs, republishing_repo,  # noqa: E402
                     start_server, stop)

CLI = os.path.join(args.build, "client", "sparse-cli")

with tempfile.TemporaryDirectory() as tmp:
    repo, model_dir, base = republishing_repo(args.build, tmp, args.version_dir)
    python_stubs(args.source, os.path.join(tmp, "stubs"), "sparse/v1/inference.proto")
    import grpc
    from sparse.v1 import inference_pb2 as pb, inference_pb2_grpc as pb_grpc

    log = open(os.path.join(tmp, "server.log"), "w")
    server, ports = start_server(args.build, repo, "--poll_seconds=1", stderr=log)
    target = "127.0.0.1:%d" % ports[0]
    stub = pb_grpc.SparseInferenceStub(grpc.insecure_channel(target))
    # One bench window per reload period and path, for the whole run.
    windows = max(1, int(args.seconds / args.reload_every / 2))
    bench = subprocess.Popen(
        [CLI, "--target=" + target, "bench", "--model=m", "--paths=sparse,dense", "--mode=open",
         "--rate=%g" % args.rate, "--warmup_seconds=0", "--window_seconds=%g" % args.reload_every,
         "--stable_windows=%d" % windows, "--max_windows=%d" % windows, "--max_requests=100000000",
         "--json", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = []  # (seconds, version, VmRSS, RssAnon, RssFile)
    version = 1
    started = time.time()
    next_reload = started + args.reload_every
    try:
        while bench.poll() is None:
            now = time.time()
            if now >= next_reload:
                version += 1
                link_version(base, model_dir, version)
                next_reload += args.reload_every
            m = memory_kib(server.pid)
            samples.append((now - started, version, m["VmRSS"], m["RssAnon"], m["RssFile"]))
            time.sleep(1)
        out, err = bench.communicate()
        # The last version may have been published as the bench ended: give
        # the rescan (--poll_seconds) and its load time to serve it.
        deadline = time.time() + 30
        while True:
            status = stub.GetModel(pb.GetModelRequest(model="m"), timeout=10)
            if [v.version for v in status.versions] == [version] or time.time() > deadline:
                break
            time.sleep(0.2)
    finally:
        if bench.poll() is None:
            bench.kill()
        code, _ = stop(server, timeout=30)
        log.close()
    check(code == 0, "server stopped cleanly (exit %s)" % code)
    check(bench.returncode == 0, "sparse-cli bench exited %s: %s" % (bench.returncode, err[-2000:]))
    results = json.loads(out)["results"] if bench.returncode == 0 else []
    sent = sum(r["requests"] for r in results)
    errors = sum(r["errors"] for r in results)
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("seconds,version,rss_kib,anon_kib,file_kib\n")
            for s in samples:
                f.write("%.1f,%d,%d,%d,%d\n" % s)
    # Growth after the warm-up: the first full reload period after it vs
    # the last one.
    warm = args.warmup_reloads * args.reload_every
    after = [s for s in samples if warm <= s[0] < warm + args.reload_every]
    last = [s for s in samples if s[0] >= samples[-1][0] - args.reload_every]
    rss_warm = statistics.median(s[2] for s in after) if after else 0
    rss_end = statistics.median(s[2] for s in last) if last else 0
    growth = (rss_end - rss_warm) / rss_warm if rss_warm else float("inf")
    served = [v.version for v in status.versions]
    print("soak: %d s at %g req/s per path, %d reloads (versions 1..%d): %d requests, %d failed; "
          "RSS %.1f MiB after %d warm-up reloads -> %.1f MiB at the end (%+.2f%%), peak %.1f MiB"
          % (args.seconds, args.rate, version - 1, version, sent, errors, rss_warm / 1024.0,
             args.warmup_reloads, rss_end / 1024.0, 100 * growth, max(s[2] for s in samples) / 1024.0))
    check(sent > 0 and errors == 0, "zero failed requests (%d of %d)" % (errors, sent))
    check(served == [version], "the newest version %d serves alone: %s" % (version, served))
    if os.environ.get("SPARSE_SANITIZE"):
        print("memory bound not checked: built with %s, whose quarantine holds freed memory"
              % os.environ["SPARSE_SANITIZE"])
    else:
        # A small model's process is mostly fixed overhead, where allocator
        # noise alone is a few MiB: the short run also accepts 4 MiB.
        check(growth < args.max_growth or (not args.version_dir and rss_end - rss_warm <= 4096),
              "RSS growth after warm-up %+.2f%% is under %.0f%%" % (100 * growth, 100 * args.max_growth))
finish()
