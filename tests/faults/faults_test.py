"""Faults against a running sparse-server (issue 8, docs/reliability.md).

Each scenario is bounded in time and stays on loopback:
  overflow     one worker kept busy, a burst of requests: exactly
               burst - max_queue are refused UNAVAILABLE, the rest answer
  streams      the same with --max_concurrent_streams=2: nothing refused,
               the calls wait in the client for a stream
  deadlines    requests with 1 ms (and 200 ms) deadlines queued behind a
               busy worker: DEADLINE_EXCEEDED, dropped before any compute
  cancel       queued requests cancelled by the client, and a client process
               SIGKILLed with requests queued: dropped as CANCELLED; a request
               cancelled while it computes frees the worker for the next
  bad_input    every kind of bad request gets its documented code, with no
               path in the message, and the next good request is answered
  kill         sparse-server SIGKILLed under load restarts on the same
               repository and port and answers the same; a trainer killed
               while it publishes never leaves a half version that loads,
               and the next one removes what the dead ones left
  disk_full    sparse-train publishing onto a full file system fails with a
               clear error, leaves nothing behind, and the served version
               keeps serving (in a private mount namespace with a small tmpfs)

Usage: faults_test.py <source dir> <build dir> [scenario ...]
"""
import hashlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

source, build = sys.argv[1], sys.argv[2]
chosen = sys.argv[3:]
sys.path.insert(0, os.path.join(source, "tests", "testing"))
sys.path.insert(0, os.path.join(build, "python"))
from harness import check, finish, python_stubs, run, start_server, stop, train_small_dsm  # noqa: E402
import numpy as np  # noqa: E402
from sparse_serve import export  # noqa: E402

TRAIN = os.path.join(build, "trainer", "sparse-train")
MAX_QUEUE = 4


def write_wide_dsm(model_dir, version, d=128, experts=128, k=512):
    """A DSM without a dense twin whose dense path (the DSM's own weights,
    unmasked: 2*T*d FLOPs a row, T = experts*k = 65536) is slow enough that
    a few thousand rows keep a worker busy for seconds: a request small
    enough (~2 MB) to arrive at once even on a loaded machine."""
    t, r = experts * k, experts.bit_length() - 1

    def values(n, scale, salt):
        return (scale * (((np.arange(n, dtype=np.uint64) * 2654435761 + salt) % 1000) / 1000.0 - 0.5)).astype(
            np.float32)
    tensors = [("bottom.weight", values(t * d, 0.2, 1).reshape(t, d)), ("bottom.bias", values(t, 0.1, 2)),
               ("top.weight", values(t, 0.01, 3).reshape(1, t)), ("top.bias", np.array([0.5], np.float32)),
               ("router.weight", values(r * d, 1.0, 4).reshape(r, d)), ("router.bias", values(r, 0.1, 5))]
    metadata = {"format_version": "1", "kind": "dsm", "input_dim": str(d), "output_dim": "1", "width": str(t),
                "activation": "relu", "router": "lsh", "blocks": "1", "experts": str(experts),
                "active_units": str(k)}
    export.write_version(model_dir, export.safetensors(metadata, tensors), version=version)


def metric(port, name, **labels):
    """The value of one Prometheus series (0 if absent)."""
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read().decode()
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name):line.index("}") + 1]))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def code_of(future):
    try:
        future.result()
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


class BusyServer:
    """sparse-server with one worker and a queue of MAX_QUEUE, serving the
    wide DSM `w`, and a way to keep its worker busy for ~2 s."""

    def __init__(self, repo, *flags):
        self.server, ports = start_server(build, repo, "--workers=1", "--max_queue=%d" % MAX_QUEUE,
                                          "--inline_max_flops=0", "--max_batch_rows=65536", "--metrics_port=0",
                                          *flags)
        self.port, self.metrics_port = ports
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.port,
                                             options=[("grpc.max_send_message_length", -1)])
        self.stub = pb_grpc.SparseInferenceStub(self.channel)
        self.d = self.stub.GetModel(pb.GetModelRequest(model="w"), timeout=10).versions[0].input_dim
        self.one = pb.PredictRequest(model="w", rows=1, inputs=[0.25] * self.d)
        # Rows that keep the worker on the dense path for about 2 s here,
        # measured at (nearly) the size used: a small batch's time per row
        # overstates a large one's several times over on some CPUs.
        rows, seconds = 256, 0.0
        while True:
            calibration = pb.PredictRequest(model="w", rows=rows, inputs=[0.1] * (rows * self.d))
            seconds = self.stub.PredictDense(calibration, timeout=60).cost.compute_ns * 1e-9
            if seconds >= 1.0 or rows >= 65536:
                break
            rows = int(min(65536, rows * min(16.0, max(2.0, 2.0 / max(seconds, 1e-3)))))
        self.slow_rows = int(min(65536, max(256, rows * 2.0 / seconds)))
        self.slow = pb.PredictRequest(model="w", rows=self.slow_rows, inputs=[0.1] * (self.slow_rows * self.d))

    def busy(self):
        """Starts the slow request and returns once the worker has it."""
        future = self.stub.PredictDense.future(self.slow, timeout=120)
        time.sleep(0.3)
        check(not future.done(), "the slow request (%d rows) still computes after 0.3 s" % self.slow_rows)
        return future

    def sparse_flops(self):
        return metric(self.metrics_port, "sparse_flops_total", model="w", path="sparse")

    def requests(self, code):
        return metric(self.metrics_port, "sparse_requests_total", model="w", path="sparse", code=code)


def scenario_overflow(busy):
    burst = 3 * MAX_QUEUE
    slow = busy.busy()
    answered_at = {}
    slow.add_done_callback(lambda f: answered_at.setdefault("slow", time.time()))
    futures = [busy.stub.Predict.future(busy.one, timeout=60) for _ in range(burst)]
    for i, f in enumerate(futures):
        f.add_done_callback(lambda f, i=i: answered_at.setdefault(i, time.time()))
    codes = [code_of(f) for f in futures]
    check(code_of(slow)[0] == grpc.StatusCode.OK, "the slow request answered")
    time.sleep(0.1)  # callbacks
    refused_while_busy = all(answered_at[i] < answered_at["slow"] for i, (c, _) in enumerate(codes)
                             if c == grpc.StatusCode.UNAVAILABLE)
    refused = [d for c, d in codes if c == grpc.StatusCode.UNAVAILABLE]
    ok = sum(1 for c, _ in codes if c == grpc.StatusCode.OK)
    print("  overflow: burst of %d behind a busy worker, queue %d: %d UNAVAILABLE, %d OK"
          % (burst, MAX_QUEUE, len(refused), ok))
    check(refused_while_busy, "the refusals came while the worker was still busy (else the count means nothing)")
    check(len(refused) == burst - MAX_QUEUE and ok == MAX_QUEUE,
          "exactly %d refused and %d answered: %s" % (burst - MAX_QUEUE, MAX_QUEUE, codes))
    check(all("queue is full" in d for d in refused), "refusals say the queue is full: %s" % refused[:1])


def scenario_streams(repo):
    """--max_concurrent_streams=2: the same burst as `overflow` cannot fill
    the queue, because one connection has only two calls open at a time;
    the rest wait in the client and every request is answered."""
    capped = BusyServer(repo, "--max_concurrent_streams=2")
    try:
        slow = capped.busy()
        futures = [capped.stub.Predict.future(capped.one, timeout=60) for _ in range(3 * MAX_QUEUE)]
        codes = [code_of(f)[0] for f in futures]
        check(code_of(slow)[0] == grpc.StatusCode.OK, "the slow request answered")
        print("  streams: burst of %d behind a busy worker, 2 streams per connection: %s"
              % (len(codes), {c.name: codes.count(c) for c in set(codes)}))
        check(all(c == grpc.StatusCode.OK for c in codes), "every request waited for a stream and was answered")
    finally:
        stop(capped.server)


def scenario_deadlines(busy):
    """1 ms deadlines: the client gives up, and whatever reached the server
    is dropped before compute (a 1 ms call may also expire before its
    handler runs; gRPC drops those). Then deadlines of 200 ms, which reach
    the server for sure: exactly that many dropped as DEADLINE_EXCEEDED."""
    flops_before = busy.sparse_flops()
    counts = {}
    for deadline in (0.001, 0.2):
        expired_before = busy.requests("DEADLINE_EXCEEDED")
        slow = busy.busy()
        futures = [busy.stub.Predict.future(busy.one, timeout=deadline) for _ in range(MAX_QUEUE)]
        codes = [code_of(f)[0] for f in futures]
        check(code_of(slow)[0] == grpc.StatusCode.OK, "the slow request answered")
        time.sleep(0.5)
        counts[deadline] = busy.requests("DEADLINE_EXCEEDED") - expired_before
        print("  deadlines: %d requests with %g ms deadlines behind the busy worker: client saw %s; server dropped "
              "%d as DEADLINE_EXCEEDED" % (len(futures), deadline * 1000, sorted(set(c.name for c in codes)),
                                           counts[deadline]))
        check(all(c == grpc.StatusCode.DEADLINE_EXCEEDED for c in codes),
              "every %g ms request is DEADLINE_EXCEEDED" % (deadline * 1000))
    check(counts[0.001] <= MAX_QUEUE, "at most the 1 ms requests were counted (%d)" % counts[0.001])
    check(counts[0.2] == MAX_QUEUE, "the server dropped every 200 ms request (%d of %d)" % (counts[0.2], MAX_QUEUE))
    check(busy.sparse_flops() == flops_before, "no FLOPs were spent on expired requests")
    check(busy.stub.Predict(busy.one, timeout=10).outputs, "a request after them is answered")


def scenario_cancel(busy):
    flops_before, cancelled_before = busy.sparse_flops(), busy.requests("CANCELLED")
    slow = busy.busy()
    futures = [busy.stub.Predict.future(busy.one, timeout=60) for _ in range(MAX_QUEUE)]
    time.sleep(0.1)
    for f in futures:
        f.cancel()
    check(all(f.cancelled() for f in futures), "the client cancelled its requests")
    check(code_of(slow)[0] == grpc.StatusCode.OK, "the slow request answered")
    time.sleep(0.5)
    cancelled = busy.requests("CANCELLED") - cancelled_before
    # A client process that disappears (SIGKILL) with requests queued.
    slow = busy.busy()
    child = subprocess.Popen([sys.executable, "-c", CHILD_CLIENT, stubs_dir, str(busy.port), str(busy.d),
                              str(MAX_QUEUE)], stdout=subprocess.PIPE, text=True)
    check(child.stdout.readline().strip() == "sent", "the child client sent its requests")
    time.sleep(0.1)
    child.kill()
    child.wait()
    check(code_of(slow)[0] == grpc.StatusCode.OK, "the slow request answered")
    time.sleep(0.5)
    vanished = busy.requests("CANCELLED") - cancelled_before - cancelled
    print("  cancel: %d cancelled by the client, %d from a SIGKILLed client: dropped as CANCELLED %d and %d"
          % (MAX_QUEUE, MAX_QUEUE, cancelled, vanished))
    check(cancelled == MAX_QUEUE, "the server dropped every cancelled request (%d)" % cancelled)
    check(vanished == MAX_QUEUE, "the server dropped every request of the killed client (%d)" % vanished)
    check(busy.sparse_flops() == flops_before, "no FLOPs were spent on them")
    check(busy.stub.Predict(busy.one, timeout=10).outputs, "a request after them is answered")
    # The computing request itself cancelled: its compute runs to the end
    # (a oneDNN call cannot be interrupted), the answer goes nowhere, and
    # the worker takes the next request.
    slow = busy.busy()
    slow.cancel()
    started = time.time()
    check(busy.stub.Predict(busy.one, timeout=30).outputs, "a request after a cancelled computing one is answered")
    print("  cancel: a request cancelled while it computed; the next one answered %.2f s later" % (time.time() - started))


CHILD_CLIENT = """
import sys, time
sys.path.insert(0, sys.argv[1])
import grpc
from sparse.v1 import inference_pb2 as pb, inference_pb2_grpc as pb_grpc
stub = pb_grpc.SparseInferenceStub(grpc.insecure_channel("127.0.0.1:" + sys.argv[2]))
d, n = int(sys.argv[3]), int(sys.argv[4])
futures = [stub.Predict.future(pb.PredictRequest(model="w", rows=1, inputs=[0.25] * d), timeout=60) for _ in range(n)]
print("sent", flush=True)
time.sleep(60)
"""


def scenario_bad_input(busy, repo):
    d = busy.d
    nan = float("nan")
    cases = [
        ("too few inputs", pb.PredictRequest(model="w", rows=2, inputs=[0.0] * (2 * d - 1)), "INVALID_ARGUMENT"),
        ("a NaN input", pb.PredictRequest(model="w", rows=1, inputs=[nan] + [0.0] * (d - 1)), "INVALID_ARGUMENT"),
        ("an Inf input", pb.PredictRequest(model="w", rows=1, inputs=[float("inf")] * d), "INVALID_ARGUMENT"),
        ("an empty batch", pb.PredictRequest(model="w", rows=0), "INVALID_ARGUMENT"),
        ("negative rows", pb.PredictRequest(model="w", rows=-1, inputs=[0.0] * d), "INVALID_ARGUMENT"),
        ("rows = 2^62 with one row of inputs", pb.PredictRequest(model="w", rows=1 << 62, inputs=[0.0] * d),
         "INVALID_ARGUMENT"),
        ("rows over --max_batch_rows", pb.PredictRequest(model="w", rows=65537, inputs=[0.0] * (65537 * d)),
         "INVALID_ARGUMENT"),
        ("an unknown model", pb.PredictRequest(model="nope", rows=1, inputs=[0.0] * d), "NOT_FOUND"),
        ("an unknown version", pb.PredictRequest(model="w", version=9, rows=1, inputs=[0.0] * d), "NOT_FOUND"),
        ("a model name with ..", pb.PredictRequest(model="../w", rows=1, inputs=[0.0] * d), "NOT_FOUND"),
        ("an absolute path as model", pb.PredictRequest(model="/etc/passwd", rows=1, inputs=[0.0] * d),
         "NOT_FOUND"),
        ("a NUL byte in the model", pb.PredictRequest(model="w\0", rows=1, inputs=[0.0] * d), "NOT_FOUND"),
        ("a 64 KiB model name", pb.PredictRequest(model="m" * 65536, rows=1, inputs=[0.0] * d), "NOT_FOUND"),
        ("a 72 MiB message", pb.PredictRequest(model="w", rows=1, inputs=[0.0] * (18 << 20)), "RESOURCE_EXHAUSTED"),
    ]
    for what, request, expected in cases:
        for method in (busy.stub.Predict, busy.stub.PredictDense):
            try:
                method(request, timeout=30)
                code, details = grpc.StatusCode.OK, ""
            except grpc.RpcError as e:
                code, details = e.code(), e.details() or ""
            check(code.name == expected, "%s: %s, expected %s (%s)" % (what, code.name, expected, details))
            check(repo not in details, "%s: the message names no path: %s" % (what, details))
            check(len(busy.stub.Predict(busy.one, timeout=10).outputs) == 1, "answered after %s" % what)
        print("  bad input: %-36s -> %s" % (what, expected))
    # The Open Inference Protocol endpoint: a shape claiming 2^40 rows.
    python_stubs(source, stubs_dir, "inference/grpc_service.proto")
    from inference import grpc_service_pb2 as oip, grpc_service_pb2_grpc as oip_grpc
    stub = oip_grpc.GRPCInferenceServiceStub(busy.channel)
    request = oip.ModelInferRequest(model_name="w")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1 << 40, d])
    tensor.contents.fp32_contents.extend([0.0] * d)
    try:
        stub.ModelInfer(request, timeout=30)
        code = grpc.StatusCode.OK
    except grpc.RpcError as e:
        code = e.code()
    check(code == grpc.StatusCode.INVALID_ARGUMENT, "OIP shape [2^40, d]: %s, expected INVALID_ARGUMENT" % code)
    print("  bad input: %-36s -> %s" % ("OIP shape [2^40, d]", code.name))
    check(len(busy.stub.Predict(busy.one, timeout=10).outputs) == 1, "answered after the OIP request")
    # Bodies that are not the method's message (truncated, garbage): gRPC's
    # callback API alone would answer UNIMPLEMENTED with no message.
    for method in ("/sparse.v1.SparseInference/Predict", "/sparse.v1.SparseInference/GetModel",
                   "/inference.GRPCInferenceService/ModelInfer"):
        call = busy.channel.unary_unary(method)  # bytes in, bytes out
        for body in (b"\x0a\x64abc", b"\xff" * 6, pb.PredictRequest(model="w", rows=1).SerializeToString()[:-1]):
            try:
                call(body, timeout=10)
                code, details = grpc.StatusCode.OK, ""
            except grpc.RpcError as e:
                code, details = e.code(), e.details() or ""
            check(code == grpc.StatusCode.INVALID_ARGUMENT and "did not parse" in details,
                  "%s with an undecodable body: %s %r" % (method, code.name, details))
        print("  bad input: %-36s -> %s" % ("undecodable body to " + method.split("/")[-1], "INVALID_ARGUMENT"))
    check(len(busy.stub.Predict(busy.one, timeout=10).outputs) == 1, "answered after undecodable bodies")


def scenario_kill(tmp):
    repo = os.path.join(tmp, "kill-repo")
    train_small_dsm(build, repo, "m")
    server, ports = start_server(build, repo, "--poll_seconds=0.5")
    port = ports[0]
    stub = pb_grpc.SparseInferenceStub(grpc.insecure_channel("127.0.0.1:%d" % port))
    d = stub.GetModel(pb.GetModelRequest(model="m"), timeout=10).versions[0].input_dim
    x = pb.PredictRequest(model="m", rows=3, inputs=[((7 * j) % 13) / 13.0 - 0.5 for j in range(3 * d)])
    before = list(stub.Predict(x, timeout=10).outputs)
    stop_load = threading.Event()
    answered = [0]

    def load():
        while not stop_load.is_set():
            try:
                stub.Predict(x, timeout=5)
                answered[0] += 1
            except grpc.RpcError:
                pass
    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1)
    server.kill()
    server.wait()
    stop_load.set()
    for t in threads:
        t.join()
    # Trainers killed at times spread over their run, so some die while
    # they publish: each leaves a complete version or at most its hidden
    # temp directory. (Same flags and seed, so every complete version
    # predicts what version 1 does.)
    kills = []
    trainer_args = [TRAIN, "--quiet", "--train_rows=4096", "--test_rows=512", "--repository=" + repo,
                    "--model_name=m"]
    started = time.time()
    run(trainer_args)
    whole = time.time() - started  # publishing is its last few milliseconds
    for i in range(8):
        trainer = subprocess.Popen(trainer_args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(whole * (0.7 + 0.05 * i))
        trainer.kill()
        kills.append(trainer.wait())
    # Half-written temp directories as a kill leaves them: one of a writer
    # on this host that is gone, one of a writer on another host sharing
    # the repository (which must be left alone).
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead_here = ".tmp-9-%s-%d-0" % (socket.gethostname(), gone.pid)
    other_host = ".tmp-9-some-other-host-1-0"
    for name in (dead_here, other_host):
        os.makedirs(os.path.join(repo, "m", name))
        with open(os.path.join(repo, "m", name, "model.safetensors"), "wb") as f:
            f.write(b"\0" * 100)
    with open(os.path.join(repo, "m", "config.pbtxt"), "w") as f:
        f.write("version_policy { all {} }\n")
    entries = sorted(os.listdir(os.path.join(repo, "m")))
    started = time.time()
    server, ports = start_server(build, repo, "--port=%d" % port)
    restart = time.time() - started
    check(ports[0] == port, "restarted on the same port %d" % port)
    status = stub.GetModel(pb.GetModelRequest(model="m"), timeout=10)
    after = list(stub.Predict(x, timeout=10).outputs)
    print("  kill: server SIGKILLed after %d answers under load; 8 trainers killed at 70-105 %% of a %.2f s run "
          "(%d finished first); restart "
          "on port %d took %.2f s; entries %s; serving %s"
          % (answered[0], whole, kills.count(0), port, restart, entries, [v.version for v in status.versions]))
    check(answered[0] > 0, "requests were answered before the kill")
    check(after == before, "the restarted server answers the same: %s vs %s" % (after, before))
    check(len(status.versions) == len([e for e in entries if e.isdigit()]), "every version directory serves")
    check(not status.failed_versions, "no version failed to load: %s" % [(f.version, f.error) for f in status.failed_versions])
    check(all(e.startswith(".") or e.isdigit() or e == "config.pbtxt" for e in entries), "only versions and hidden temp dirs: %s" % entries)
    done = run([TRAIN, "--quiet", "--train_rows=4096", "--test_rows=512", "--repository=" + repo, "--model_name=m"])
    check(done.returncode == 0, "the next sparse-train publishes: %s" % done.stderr[-500:])
    left = sorted(e for e in os.listdir(os.path.join(repo, "m")) if e.startswith("."))
    print("  kill: after the next publish, hidden entries left: %s" % left)
    check(left == [other_host], "the next sparse-train removed the dead writers' temp dirs on this host, "
          "and only those: %s" % left)
    code, _ = stop(server)
    check(code == 0, "the restarted server stops cleanly")


def scenario_disk_full(tmp):
    """Runs disk_full_inner in a private mount namespace (a user namespace
    too, so it needs no root), where a 6 MiB tmpfs is the repository."""
    done = run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, os.path.abspath(__file__),
                source, build, "disk_full_inner", tmp], timeout=300)
    sys.stdout.write(done.stdout)
    check(done.returncode == 0, "disk full: %s" % (done.stderr[-3000:]))


def disk_full_inner(tmp):
    mnt = os.path.join(tmp, "small-disk")
    os.makedirs(mnt)
    mounted = run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", mnt])
    if mounted.returncode != 0:
        sys.exit("cannot mount a tmpfs in a private namespace: " + mounted.stderr)
    repo = os.path.join(mnt, "repo")
    train_small_dsm(build, repo, "m")
    version_dir = os.path.join(repo, "m", "1")
    sums = {n: hashlib.sha256(open(os.path.join(version_dir, n), "rb").read()).hexdigest()
            for n in os.listdir(version_dir)}
    server, ports = start_server(build, repo, "--poll_seconds=0.2")
    stub = pb_grpc.SparseInferenceStub(grpc.insecure_channel("127.0.0.1:%d" % ports[0]))
    d = stub.GetModel(pb.GetModelRequest(model="m"), timeout=10).versions[0].input_dim
    x = pb.PredictRequest(model="m", rows=1, inputs=[0.1] * d)
    before = list(stub.Predict(x, timeout=10).outputs)
    # Fill the disk but for 16 KiB: less than one version needs.
    with open(os.path.join(mnt, "filler"), "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    os.truncate(os.path.join(mnt, "filler"), max(0, os.path.getsize(os.path.join(mnt, "filler")) - 16384))
    done = run([TRAIN, "--quiet", "--train_rows=4096", "--test_rows=512", "--repository=" + repo, "--model_name=m"])
    time.sleep(1)
    entries = sorted(os.listdir(os.path.join(repo, "m")))
    after = list(stub.Predict(x, timeout=10).outputs)
    status = stub.GetModel(pb.GetModelRequest(model="m"), timeout=10)
    print("  disk full: sparse-train exit %d: %s; model directory now %s; serving %s"
          % (done.returncode, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "", entries,
             [v.version for v in status.versions]))
    check(done.returncode != 0, "sparse-train fails on a full disk")
    check("No space left" in done.stderr, "its error says the disk is full: %s" % done.stderr[-500:])
    check(entries == ["1"], "nothing is left behind: %s" % entries)
    check(all(hashlib.sha256(open(os.path.join(version_dir, n), "rb").read()).hexdigest() == s
              for n, s in sums.items()), "version 1's files are unchanged")
    check(after == before and [v.version for v in status.versions] == [1], "version 1 keeps serving")
    code, _ = stop(server)
    check(code == 0, "the server stops cleanly")


if chosen[:1] == ["disk_full_inner"]:
    stubs_dir = os.path.join(chosen[1], "stubs")
    python_stubs(source, stubs_dir, "sparse/v1/inference.proto")
    import grpc
    from sparse.v1 import inference_pb2 as pb, inference_pb2_grpc as pb_grpc
    disk_full_inner(chosen[1])
    finish()
    sys.exit(0)

with tempfile.TemporaryDirectory() as tmp:
    stubs_dir = os.path.join(tmp, "stubs")
    python_stubs(source, stubs_dir, "sparse/v1/inference.proto")
    import grpc
    from sparse.v1 import inference_pb2 as pb, inference_pb2_grpc as pb_grpc
    scenarios = chosen or ["overflow", "streams", "deadlines", "cancel", "bad_input", "kill", "disk_full"]
    busy = None
    if set(scenarios) & {"overflow", "streams", "deadlines", "cancel", "bad_input"}:
        repo = os.path.join(tmp, "repo")
        write_wide_dsm(os.path.join(repo, "w"), 1)
        busy = BusyServer(repo)
        print("  busy worker: %d rows on the dense path" % busy.slow_rows)
    try:
        for name in scenarios:
            started = time.time()
            if name == "bad_input":
                scenario_bad_input(busy, repo)
            elif name == "streams":
                scenario_streams(repo)
            elif name in ("kill", "disk_full"):
                globals()["scenario_" + name](tmp)
            else:
                globals()["scenario_" + name](busy)
            print("%s: %.1f s" % (name, time.time() - started))
    finally:
        if busy is not None:
            code, _ = stop(busy.server)
            check(code == 0, "the busy server stops cleanly (exit %s)" % code)
finish()
