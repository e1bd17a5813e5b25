"""Prometheus metrics, scraped by a real Prometheus server (Debian's
prometheus package).

A small DSM with its dense twin is served with --metrics_port, its weights
mapped from a weight cache file (--weight_cache_dir); the test
sends a known number of requests (sparse, dense, and bad ones for an
unknown model and of the wrong width), reads /metrics itself, then starts
Prometheus scraping the endpoint every second and queries the request
counter through Prometheus's HTTP API until it returns the numbers sent.
The memory gauges: resident (process memory), mapped, mapped and in memory
(mincore), and per expert slice its size and how much of it is in memory.

Usage: metrics_test.py <source dir> <build dir>
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

source, build = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(source, "tests", "testing"))
from harness import check, finish, python_stubs, stop, train_small_dsm  # noqa: E402

SERVER = os.path.join(build, "server", "sparse-server")
SPARSE, DENSE = 37, 5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


with tempfile.TemporaryDirectory() as tmp:
    repo = os.path.join(tmp, "repo")
    train_small_dsm(build, repo, "m")
    python_stubs(source, os.path.join(tmp, "stubs"), "sparse/v1/inference.proto")
    import grpc
    from sparse.v1 import inference_pb2 as pb, inference_pb2_grpc as pb_grpc

    server = subprocess.Popen([SERVER, "--model_repository=" + repo, "--address=127.0.0.1", "--port=0",
                               "--metrics_port=0", "--weight_cache_dir=" + os.path.join(tmp, "cache")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    prometheus = None
    try:
        port, metrics_port = int(server.stdout.readline()), int(server.stdout.readline())
        channel = grpc.insecure_channel("127.0.0.1:%d" % port)
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = pb_grpc.SparseInferenceStub(channel)
        x = [0.1 * j for j in range(8)]
        sparse_faults = 0
        for _ in range(SPARSE):
            sparse_faults += stub.Predict(pb.PredictRequest(model="m", rows=1, inputs=x), timeout=10).cost.major_faults
        for _ in range(DENSE):
            stub.PredictDense(pb.PredictRequest(model="m", rows=1, inputs=x), timeout=10)
        for request in (pb.PredictRequest(model="nope", rows=1, inputs=x),
                        pb.PredictRequest(model="m", rows=1, inputs=x[:3])):
            try:
                stub.Predict(request, timeout=10)
            except grpc.RpcError:
                pass

        text = get("http://127.0.0.1:%d/metrics" % metrics_port)
        lines = text.splitlines()

        def value(prefix):
            hits = [float(l.rsplit(" ", 1)[1]) for l in lines if l.startswith(prefix)]
            return hits[0] if len(hits) == 1 else None

        check(value('sparse_requests_total{code="OK",model="m",path="sparse"}') == SPARSE,
              "sparse OK count on /metrics")
        check(value('sparse_requests_total{code="OK",model="m",path="dense"}') == DENSE,
              "dense OK count on /metrics")
        check(value('sparse_requests_total{code="NOT_FOUND",model="",path="sparse"}') == 1,
              "an unknown model is counted under model=\"\", not its name")
        check(value('sparse_requests_total{code="INVALID_ARGUMENT",model="m",path="sparse"}') == 1,
              "a bad request is counted with its code")
        check("nope" not in text, "a client-chosen model name never becomes a label")
        check(value('sparse_loaded_versions{model="m"}') == 1, "loaded versions gauge")
        check(value('sparse_request_seconds_count{model="m",path="sparse",stage="total"}') == SPARSE,
              "latency histogram counts every successful sparse request")
        # Routing, read from the model at the scrape: every sparse row went
        # to one expert per block (the small DSM has one block); warm-up
        # rows are not counted, dense rows are never routed.
        expert_rows = [float(l.rsplit(" ", 1)[1]) for l in lines
                       if l.startswith("sparse_expert_rows_total{") and 'model="m"' in l]
        check(len(expert_rows) > 1 and sum(expert_rows) == SPARSE,
              "rows per expert add up to the sparse rows sent: %s" % sum(expert_rows))
        imbalance = value('sparse_expert_load_imbalance{model="m",version="1"}')
        check(imbalance is not None and imbalance >= 1, "expert load imbalance gauge: %s" % imbalance)
        flops = value('sparse_flops_total{model="m",path="sparse"}')
        check(flops is not None and flops > 0 and flops % SPARSE == 0, "FLOPs counter: %s" % flops)
        faults = value('sparse_major_faults_total{model="m",path="sparse"}')
        check(faults == sparse_faults,
              "major faults counter: %s, the responses' Cost.major_faults add to %d" % (faults, sparse_faults))
        check(value('sparse_major_faults_total{model="m",path="dense"}') is not None,
              "major faults counter of the dense path")

        # Memory: the version's weights are mapped from its weight cache
        # file; the gauges say how much, and how much of it is in memory.
        labels = '{model="m",precision="FP32",version="1"}'
        mapped = value("sparse_model_mapped_bytes" + labels)
        in_memory = value("sparse_model_mapped_resident_bytes" + labels)
        resident = value("sparse_model_resident_bytes" + labels)
        check(mapped is not None and mapped > 0, "mapped bytes gauge: %s" % mapped)
        check(in_memory is not None and 0 < in_memory <= (mapped or 0),
              "mapped resident bytes gauge: %s of %s" % (in_memory, mapped))
        check(resident is not None and resident > 0, "resident bytes gauge: %s" % resident)
        help_line = [l for l in lines if l.startswith("# HELP sparse_model_resident_bytes ")]
        check(len(help_line) == 1 and "process memory" in help_line[0] and "excluded" in help_line[0],
              "sparse_model_resident_bytes's help says process memory, mapped weights excluded: %s" % help_line)
        check("# TYPE sparse_model_mapped_resident_bytes gauge" in lines and
              "# TYPE sparse_expert_resident_bytes gauge" in lines, "the memory gauges are gauges")
        expert_bytes = value('sparse_expert_bytes{model="m",version="1"}')
        expert_in = [float(l.rsplit(" ", 1)[1]) for l in lines
                     if l.startswith("sparse_expert_resident_bytes{") and 'model="m"' in l]
        check(expert_bytes is not None and expert_bytes > 0, "expert slice bytes gauge: %s" % expert_bytes)
        check(len(expert_in) == len(expert_rows) and
              all(0 <= b <= (expert_bytes or 0) for b in expert_in) and sum(expert_in) <= (in_memory or 0),
              "one resident gauge per expert, each within its slice: %d gauges, %d experts, sum %s" %
              (len(expert_in), len(expert_rows), sum(expert_in)))
        check(any('block="0",expert="0",model="m",version="1"' in l for l in lines
                  if l.startswith("sparse_expert_resident_bytes{")),
              "per-expert residency labelled model, version, block, expert")

        # Load signals for autoscalers and alerts: every serving path has its
        # in-flight, queued and capacity series (all answered now: 0 waiting).
        for path in ("sparse", "dense"):
            labels = '{model="m",path="%s",version="1"}' % path
            check(value("sparse_requests_in_flight" + labels) == 0 and value("sparse_requests_queued" + labels) == 0,
                  "in-flight and queued gauges of the %s path, 0 when idle" % path)
            check((value("sparse_queue_capacity" + labels) or 0) > 0, "queue capacity of the %s path" % path)
        check((value("sparse_workers ") or 0) >= 1 and value("sparse_workers_busy ") is not None and
              value("sparse_worker_queue_tasks ") == 0 and (value("sparse_worker_queue_capacity ") or 0) > 0,
              "worker pool gauges: %s" % [l for l in lines if l.startswith("sparse_worker")])
        check(value('sparse_failed_versions{model="m"}') == 0, "failed versions gauge")
        for name in ("sparse_requests_in_flight", "sparse_requests_queued", "sparse_queue_capacity", "sparse_workers",
                     "sparse_workers_busy", "sparse_failed_versions"):
            check("# TYPE %s gauge" % name in lines, "%s is a gauge with help text" % name)

        # A real Prometheus scrapes it; its query must see the same numbers.
        prom_port = free_port()
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sparse\n"
                    "    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % metrics_port)
        prometheus = subprocess.Popen(
            ["prometheus", "--config.file=" + config, "--storage.tsdb.path=" + os.path.join(tmp, "tsdb"),
             "--web.listen-address=127.0.0.1:%d" % prom_port],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        query = urllib.parse.quote('sum by (path) (sparse_requests_total{model="m",code="OK"})')
        got = {}
        deadline = time.time() + 60
        while time.time() < deadline and got != {"sparse": SPARSE, "dense": DENSE}:
            time.sleep(1)
            try:
                answer = json.loads(get("http://127.0.0.1:%d/api/v1/query?query=%s" % (prom_port, query)))
                got = {r["metric"]["path"]: int(float(r["value"][1])) for r in answer["data"]["result"]}
            except OSError:
                pass  # Prometheus still starting
        check(got == {"sparse": SPARSE, "dense": DENSE},
              "Prometheus's query returns the requests sent: %s" % got)
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=30)
        code, log = stop(server)
    check(code == 0, "server stopped cleanly (exit %s): %s" % (code, log))

finish()
