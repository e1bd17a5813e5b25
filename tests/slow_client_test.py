"""Slow clients against the HTTP ports, with Debian's slowhttptest
(package slowhttptest): slowloris (a header that never ends), slow body
(R-U-Dead-Yet: a POST body a few bytes at a time) and slow read (a tiny
receive window), each for ~20 s with 300 connections, at the KServe REST
port and at the metrics port of a server with --http_max_connections=512.

Good traffic runs throughout: 2 threads in a closed loop, each a REST JSON
infer after the other on its own keep-alive connection (opened before the
attacks), with 1 ms between requests so that the load generator leaves
this 2-core machine some room. Its rate is measured for 10 s without slow
clients (before and after the attacks) and over 10 s in the middle of each
attack: each attack must leave it >= 80 % of the baseline, and no good
request may fail. A third thread GETs /metrics on a new connection every
0.5 s: during the metrics-port attacks each answers 200 within 1 s. The
measured rates, and the CPU the server and slowhttptest used, are printed.

slowhttptest 1.8.2 busy-polls (a whole core whatever the attack), so it
runs at nice 19: otherwise it would take the good traffic's CPU and the
test would measure the machine, not the server.

Usage: slow_client_test.py <source dir> <build dir>
"""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

source, build = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(source, "tests", "testing"))
from harness import check, finish, run, stop, train_small_dsm  # noqa: E402

SERVER = os.path.join(build, "server", "sparse-server")
SLOWHTTPTEST = shutil.which("slowhttptest")
if SLOWHTTPTEST is None:
    sys.exit("slowhttptest is not installed (Debian package slowhttptest; deploy/install-deps.sh installs it)")
MAX_CONNECTIONS = 512  # --http_max_connections, set explicitly
ATTACK_CONNECTIONS = 300  # per slowhttptest run: under the limit, with room for the good clients
ATTACK_SECONDS = 20
THINK_SECONDS = 0.001  # between one good request's answer and the next request
# Seconds into each attack over which the good rate is measured: from when
# its connections are open (150 a second) for 10 s, or until slowhttptest
# ends early because the server closed them all (slowloris: at
# --http_header_seconds, 10 s by default).
WINDOW = (3.0, 13.0)
BASELINE_SECONDS = 10.0
MIN_SHARE = 0.80
ROW = [0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8]
INFER_JSON = json.dumps({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32",
                                     "data": ROW}]}).encode()

HELP = run([SERVER, "--help"])


def flag(name, value):
    if re.search(r"--%s\b" % re.escape(name), HELP.stdout + HELP.stderr):
        return ["--%s=%s" % (name, value)]
    check(False, "sparse-server has no --%s (the test runs without it)" % name)
    return []


class GoodTraffic:
    """`threads` closed loops of REST JSON infer, each on one keep-alive
    connection opened at once; the time of every answer and every failure."""

    def __init__(self, port, threads=2):
        self.port, self.stopping = port, threading.Event()
        self.done, self.failures = [], []  # monotonic times; (time, what)
        self.lock = threading.Lock()
        self.connections = []
        for _ in range(threads):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.connect()
            self.connections.append(c)
        self.threads = [threading.Thread(target=self.loop, args=(c,), daemon=True) for c in self.connections]
        for t in self.threads:
            t.start()

    def loop(self, conn):
        while not self.stopping.is_set():
            try:
                conn.request("POST", "/v2/models/m/infer", INFER_JSON, {"Content-Type": "application/json"})
                r = conn.getresponse()
                body = r.read()
                now = time.monotonic()
                with self.lock:
                    if r.status == 200 and b'"outputs"' in body:
                        self.done.append(now)
                    else:
                        self.failures.append((now, "%d %r" % (r.status, body[:200])))
            except (OSError, http.client.HTTPException) as e:
                with self.lock:
                    self.failures.append((time.monotonic(), repr(e)))
                conn.close()  # http.client reconnects on the next request
                time.sleep(0.1)
            time.sleep(THINK_SECONDS)

    def rate(self, start, end):
        with self.lock:
            return sum(1 for t in self.done if start <= t < end) / (end - start)

    def failed(self, start, end):
        with self.lock:
            return [what for t, what in self.failures if start <= t < end]

    def finish(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=60)
        for c in self.connections:
            c.close()


class MetricsProbe:
    """GET /metrics on a new connection every 0.5 s: (time, seconds, status)."""

    def __init__(self, port):
        self.port, self.stopping, self.samples = port, threading.Event(), []
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.stopping.wait(0.5):
            start = time.monotonic()
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                c.request("GET", "/metrics")
                r = c.getresponse()
                status = r.status if b"# TYPE" in r.read() else "%d without metrics" % r.status
            except (OSError, http.client.HTTPException) as e:
                status = repr(e)
            finally:
                c.close()
            self.samples.append((start, time.monotonic() - start, status))

    def between(self, start, end):
        return [(s, status) for t, s, status in self.samples if start <= t < end]

    def finish(self):
        self.stopping.set()
        self.thread.join(timeout=30)


def slowhttptest(mode, url, log):
    """Starts slowhttptest: ATTACK_CONNECTIONS connections for ATTACK_SECONDS."""
    common = ["-c", str(ATTACK_CONNECTIONS), "-r", "150", "-l", str(ATTACK_SECONDS), "-p", "3", "-u", url]
    args = {"slowloris": ["-H", "-i", "2", "-x", "24", "-t", "GET"],
            # 4 KiB: under the metrics port's body limit, so that it waits for the body.
            "slow body": ["-B", "-i", "2", "-x", "24", "-s", "4096", "-t", "POST", "-f", "application/json"],
            "slow read": ["-X", "-w", "1", "-y", "32", "-n", "2", "-z", "8", "-k", "4", "-t", "GET"]}[mode]
    return subprocess.Popen(["chrt", "--idle", "0", "nice", "-n", "19", SLOWHTTPTEST] + args + common, stdout=log,
                            stderr=subprocess.STDOUT)


def cpu_seconds(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def attack_summary(path):
    """The last status block slowhttptest printed: connected / closed /
    pending / service available."""
    with open(path, errors="replace") as f:
        text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", f.read())
    found = {}
    for key in ("pending", "connected", "error", "closed", "service available"):
        values = re.findall(r"%s:\s+(\S+)" % key, text)
        if values:
            found[key] = values[-1]
    peak = max((int(v) for v in re.findall(r"connected:\s+(\d+)", text)), default=0)
    return peak, "peak %d connected; at the end %s" % (peak, ", ".join("%s %s" % kv for kv in found.items()))


with tempfile.TemporaryDirectory() as tmp:
    repo = os.path.join(tmp, "repo")
    train_small_dsm(build, repo, "m")
    log_path = os.path.join(tmp, "server.log")
    with open(log_path, "w") as log:
        server = subprocess.Popen([SERVER, "--model_repository=" + repo, "--address=127.0.0.1", "--port=0",
                                   "--metrics_port=0", "--http_port=0"] +
                                  flag("http_max_connections", MAX_CONNECTIONS),
                                  stdout=subprocess.PIPE, stderr=log, text=True)
    good = probe = None
    results = []
    try:
        grpc_port, metrics_port, rest_port = (int(server.stdout.readline()) for _ in range(3))
        good = GoodTraffic(rest_port)
        probe = MetricsProbe(metrics_port)
        time.sleep(2)  # warm-up
        start, cpu = time.monotonic(), cpu_seconds(server.pid)
        time.sleep(BASELINE_SECONDS)
        baseline = good.rate(start, time.monotonic())
        print("baseline: %.0f good requests/s (2 keep-alive REST JSON clients, closed loop), server CPU %.0f %%" % (
            baseline, 100 * (cpu_seconds(server.pid) - cpu) / (time.monotonic() - start)))
        check(baseline > 0, "good traffic answers at all")

        for target, port, paths in (
                ("REST", rest_port, {"slowloris": "/v2/health/ready", "slow body": "/v2/models/m/infer",
                                     "slow read": "/v2/models/m/config"}),
                ("metrics", metrics_port, {"slowloris": "/metrics", "slow body": "/metrics",
                                           "slow read": "/metrics"})):
            for mode in ("slowloris", "slow body", "slow read"):
                attack_log = os.path.join(tmp, "%s-%s.log" % (target, mode.replace(" ", "_")))
                with open(attack_log, "w") as f:
                    began = time.monotonic()
                    attack = slowhttptest(mode, "http://127.0.0.1:%d%s" % (port, paths[mode]), f)
                time.sleep(WINDOW[0])
                t0, cpu, attack_cpu = time.monotonic(), cpu_seconds(server.pid), cpu_seconds(attack.pid)
                attack_cpu_now = attack_cpu
                while time.monotonic() < began + WINDOW[1] and attack.poll() is None:
                    attack_cpu_now = max(attack_cpu_now, cpu_seconds(attack.pid))  # 0 once it has exited
                    time.sleep(0.05)
                t1 = time.monotonic()
                cpu = (cpu_seconds(server.pid) - cpu) / (t1 - t0)
                attack_cpu = (attack_cpu_now - attack_cpu) / (t1 - t0)
                try:
                    attack.wait(timeout=ATTACK_SECONDS + 30)
                except subprocess.TimeoutExpired:
                    attack.kill()
                    attack.wait()
                ended = time.monotonic()
                check(t1 - t0 >= 2, "%s port, %s: slowhttptest ended %.1f s after it began: no window to measure "
                      "in (%s)" % (target, mode, ended - began, attack_summary(attack_log)[1]))
                rate = good.rate(t0, t1)
                failed = good.failed(began, ended)
                metrics = probe.between(began, ended)
                slowest = max((s for s, _ in metrics), default=float("nan"))
                bad_metrics = [(round(s, 2), status) for s, status in metrics if status != 200 or s >= 1.0]
                peak, summary = attack_summary(attack_log)
                print("%-7s %-9s: %6.0f good requests/s over %.1f s (%3.0f %% of baseline), %d failed; /metrics "
                      "slowest %.3f s over %d GETs; CPU: server %.0f %%, slowhttptest %.0f %%; slowhttptest ran "
                      "%.1f s: %s" % (target, mode, rate, t1 - t0, 100 * rate / baseline if baseline else 0,
                                      len(failed), slowest, len(metrics), 100 * cpu, 100 * attack_cpu,
                                      ended - began, summary))
                check(peak >= 0.8 * ATTACK_CONNECTIONS, "%s port, %s: slowhttptest held only %d connections "
                      "(the attack did not happen): %s" % (target, mode, peak, summary))
                results.append((target, mode, rate, len(failed), slowest, len(bad_metrics), ended - began))
                check(rate >= MIN_SHARE * baseline, "%s port, %s: good traffic at %.0f/s, %.0f %% of its baseline "
                      "%.0f/s (want >= %.0f %%)" % (target, mode, rate, 100 * rate / baseline if baseline else 0,
                                                    baseline, 100 * MIN_SHARE))
                check(not failed, "%s port, %s: %d good requests failed: %s" % (target, mode, len(failed),
                                                                                 failed[:5]))
                check(server.poll() is None, "the server died during %s on the %s port" % (mode, target))
                if target == "metrics":
                    check(metrics and not bad_metrics, "%s on the metrics port: GET /metrics not answered 200 "
                          "within 1 s: %s" % (mode, bad_metrics[:10] or "no GET at all"))
                time.sleep(1)
                if server.poll() is not None:
                    break
            if server.poll() is not None:
                break

        start = time.monotonic()
        time.sleep(BASELINE_SECONDS)
        after = good.rate(start, time.monotonic())
        print("after the attacks: %.0f good requests/s (%.0f %% of the baseline)" % (
            after, 100 * after / baseline if baseline else 0))
        check(after >= MIN_SHARE * baseline, "good traffic after the attacks: %.0f/s against %.0f/s before" % (
            after, baseline))
        total_failed = good.failed(0, float("inf"))
        check(not total_failed, "good requests failed: %d: %s" % (len(total_failed), total_failed[:5]))
    finally:
        for part in (good, probe):
            if part is not None:
                part.finish()
        code, _ = stop(server)
    with open(log_path, errors="replace") as f:
        check(code == 0, "server stopped cleanly (exit %s): %s" % (code, f.read()[-1500:]))

    print()
    print("| port | slow client (%d connections) | slowhttptest ran | good req/s | of baseline (%.0f/s) | "
          "good failed | /metrics slowest |" % (ATTACK_CONNECTIONS, baseline))
    print("|---|---|---|---|---|---|---|")
    for target, mode, rate, failed, slowest, bad, lasted in results:
        print("| %s | %s | %.0f s | %.0f | %.0f %% | %d | %.3f s%s |" % (
            target, mode, lasted, rate, 100 * rate / baseline, failed, slowest,
            " (%d late or failed)" % bad if bad else ""))

finish()
