"""Hostile clients on every port of sparse-server, as an attacker would send
them, one input at a time, while good traffic (REST JSON and binary infer on
keep-alive connections, native gRPC) flows in the background.

On each HTTP port (KServe REST and Prometheus metrics): paths whose percent
decoding is not UTF-8 (400 with a UTF-8 JSON error), HEAD and a GET
pipelined after it, malformed header fields, Host rules, message framing
(Transfer-Encoding / Content-Length), the header budget
(--http_header_bytes: request line + fields + chunk extensions + trailers),
1 GiB of chunk extension or of trailers streamed at the server (cut off
early, RSS flat), garbage bytes (TLS, HTTP/2, random), a client trickling
its header (--http_header_seconds), an idle keep-alive connection
(--http_idle_seconds), a body that stops (--http_body_seconds), and
GET /metrics latency with 100 idle connections open. The OIP parameters
that docs/api.md refuses, over REST and OIP gRPC. The gRPC and health
ports get the raw HTTP/1.1 and garbage inputs too. Then a server with
--http_max_connections=20 (503 + close beyond it, served again after) and
one under RLIMIT_NOFILE=128 (out of descriptors: no busy loop, served again
after). After every input the server is alive and answers a REST infer and
a gRPC Predict; at the end the good traffic has no failure. A table of
inputs and outcomes per port and class is printed (docs/reliability.md).

Usage: http_hostile_test.py <source dir> <build dir>
"""
import collections
import http.client
import json
import os
import random
import re
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

source, build = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(source, "tests", "testing"))
from harness import check, finish, memory_kib, python_stubs, run, stop, train_small_dsm  # noqa: E402

SERVER = os.path.join(build, "server", "sparse-server")
HEADER_SECONDS, IDLE_SECONDS, BODY_SECONDS = 2, 3, 4
SLACK = 2.0  # seconds a timeout may fire late on this busy 2-core machine
HEADER_BYTES = 16384  # --http_header_bytes' default
GIB, MIB = 1 << 30, 1 << 20
FLOOD_CAP_SECONDS = 15  # a flood the server never cuts stops here (and fails)
# What a flood may add to the server's RSS: 16 MiB (the bound); under
# a sanitizer, whose shadow memory and quarantine are most of what RSS would
# show, only that it stays bounded.
MAX_FLOOD_GROWTH_MIB = 256 if os.environ.get("SPARSE_SANITIZE") else 16
ROW = [0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8]
INFER_JSON = json.dumps({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32",
                                     "data": ROW}]}).encode()
_BIN_HEADER = json.dumps({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32",
                                      "parameters": {"binary_data_size": 32}}],
                          "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()
INFER_BINARY = _BIN_HEADER + struct.pack("<8f", *ROW)

HELP = run([SERVER, "--help"])
HELP_TEXT = HELP.stdout + HELP.stderr
missing_flags = []


def flag(name, value):
    """--name=value, or None (and a failed check) when this sparse-server
    does not have the flag: the test then runs without it."""
    if re.search(r"--%s\b" % re.escape(name), HELP_TEXT):
        return "--%s=%s" % (name, value)
    if name not in missing_flags:
        missing_flags.append(name)
        check(False, "sparse-server has no --%s (the checks that need it run without it)" % name)
    return None


# ---------------------------------------------------------------- raw HTTP

class ProtocolError(Exception):
    pass


Response = collections.namedtuple("Response", "status fields body")
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class Conn:
    """A raw TCP connection and a strict HTTP/1.1 response reader."""

    def __init__(self, port, timeout=5):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf, self.eof, self.reset = b"", False, False

    def send(self, data):
        """None, or the error sendall raised (the server closed on us)."""
        try:
            self.sock.sendall(data)
            return None
        except OSError as e:
            return e

    def _recv(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError()
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            raise TimeoutError()
        except (ConnectionResetError, BrokenPipeError):
            self.reset, data = True, b""
        if not data:
            self.eof = True
        self.buf += data
        return data

    def _line(self, deadline):
        while b"\r\n" not in self.buf:
            if self.eof:
                raise ProtocolError("closed inside a chunked body")
            self._recv(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n, deadline):
        while len(self.buf) < n:
            if self.eof:
                raise ProtocolError("closed inside a body: %d of %d bytes" % (len(self.buf), n))
            self._recv(deadline)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self, timeout=5, head=False):
        """The next response; None when the connection closed before its first
        byte. Raises TimeoutError, ProtocolError. `head`: the answer to a
        HEAD, which has no body whatever its Content-Length says."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if self.eof:
                if self.buf:
                    raise ProtocolError("closed inside a response header: %r" % self.buf[:120])
                return None
            if len(self.buf) > 1 << 16:
                raise ProtocolError("a response header over 64 KiB")
            self._recv(deadline)
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw.split(b"\r\n")
        m = re.fullmatch(rb"HTTP/1\.[01] ([1-5]\d\d) [\t\x20-\x7e\x80-\xff]*", lines[0])
        if not m:
            raise ProtocolError("not a status line: %r" % lines[0][:120])
        status = int(m.group(1))
        fields = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not TOKEN.fullmatch(name):
                raise ProtocolError("a malformed response header field: %r" % line[:120])
            fields.setdefault(name.decode().lower(), value.strip().decode("latin-1"))
        if status < 200:  # 100 Continue: the real answer follows
            return self.response(max(0.1, deadline - time.monotonic()), head)
        body = b""
        if head or status in (204, 304):
            pass
        elif "chunked" in fields.get("transfer-encoding", "").lower():
            while True:
                size = int(self._line(deadline).split(b";")[0], 16)
                if size == 0:
                    while self._line(deadline):
                        pass
                    break
                body += self._take(size, deadline)
                if self._take(2, deadline) != b"\r\n":
                    raise ProtocolError("a chunk not followed by CRLF")
        elif "content-length" in fields:
            body = self._take(int(fields["content-length"]), deadline)
        else:
            while not self.eof:
                self._recv(deadline)
            body, self.buf = self.buf, b""
        return Response(status, fields, body)

    def closes(self, timeout=2.0):
        """How the connection goes on: 'close' (EOF or reset within
        `timeout`), 'data' (more bytes came) or 'open'."""
        if self.buf:
            return "data"
        if self.eof:
            return "close"
        try:
            data = self._recv(time.monotonic() + timeout)
        except TimeoutError:
            return "open"
        return "data" if data else "close"

    def close(self):
        self.sock.close()


Outcome = collections.namedtuple("Outcome", "response end seconds error raw", defaults=(b"",))


def exchange(port, data, timeout=5.0, close_wait=2.0):
    """Sends `data` on a new connection and reads one answer. `end` is
    'close' (connection closed after the answer, or instead of one),
    'open' (kept open after an answer), 'hang' (nothing within `timeout`),
    'data' (bytes after the answer) or 'protocol' (a malformed answer)."""
    start = time.monotonic()
    try:
        c = Conn(port)
    except OSError as e:
        return Outcome(None, "refused", 0.0, str(e))
    try:
        c.send(data)
        try:
            r = c.response(timeout)
        except TimeoutError:
            return Outcome(None, "hang", time.monotonic() - start, None)
        except (ProtocolError, ValueError) as e:
            return Outcome(None, "protocol" + ("+close" if c.eof else ""), time.monotonic() - start, str(e),
                           c.buf[:64])
        seconds = time.monotonic() - start
        if r is None:
            return Outcome(None, "close", seconds, None)
        return Outcome(r, c.closes(close_wait), seconds, None)
    finally:
        c.close()


def describe(o):
    if o.response is None:
        return {"close": "closed, no answer", "hang": "no answer in %.0f s" % o.seconds,
                "refused": "connect failed"}.get(o.end, "%s: %s" % (o.end, o.error))
    return "%d + %s" % (o.response.status, {"close": "close", "open": "kept open", "data": "extra bytes"}[o.end])


def describe_http2(o):
    """What a gRPC port did with HTTP/1.1 or garbage bytes."""
    if o.end.startswith("protocol"):
        what = "HTTP/2 SETTINGS" if o.raw[3:4] == b"\x04" else "%d bytes" % len(o.raw)
        return what + (", then close" if o.end.endswith("+close") else ", kept open")
    if o.end == "hang":
        return "held open %.0f s (no bytes)" % o.seconds
    return describe(o)


def request(method, target, fields=b"", body=b"", version=b"HTTP/1.1", host=True, length=True):
    head = method + b" " + target + b" " + version + b"\r\n"
    if host:
        head += b"Host: 127.0.0.1\r\n"
    if body and length:
        head += b"Content-Length: %d\r\n" % len(body)
    return head + fields + b"\r\n" + body


def is_utf8(data):
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def json_error(body):
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value.get("error") if isinstance(value, dict) and isinstance(value.get("error"), str) else None


# ---------------------------------------------------------------- servers

with tempfile.TemporaryDirectory() as tmp:
    repo = os.path.join(tmp, "repo")
    train_small_dsm(build, repo, "m")
    python_stubs(source, os.path.join(tmp, "stubs"), "inference/grpc_service.proto", "sparse/v1/inference.proto")
    import grpc
    from inference import grpc_service_pb2 as oip, grpc_service_pb2_grpc as oip_grpc
    from sparse.v1 import inference_pb2 as native, inference_pb2_grpc as native_grpc

    class Server:
        """sparse-server on loopback, its ports by name (grpc, health,
        metrics, rest), restarted (and the death recorded) if it dies."""

        def __init__(self, label, flags, nofile=None):
            self.label, self.flags, self.nofile, self.generation = label, [f for f in flags if f], nofile, 0
            self.lock = threading.Lock()
            self.start()

        def start(self):
            self.generation += 1
            self.log = os.path.join(tmp, "%s-%d.log" % (self.label, self.generation))
            limit = self.nofile

            def preexec():
                if limit:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            with open(self.log, "w") as log:
                self.proc = subprocess.Popen([SERVER, "--model_repository=" + repo, "--address=127.0.0.1",
                                              "--port=0"] + self.flags, stdout=subprocess.PIPE, stderr=log,
                                             text=True, preexec_fn=preexec)
            names = ["grpc"] + [n for f, n in (("--health_port=", "health"), ("--metrics_port=", "metrics"),
                                                ("--http_port=", "rest")) if any(x.startswith(f) for x in self.flags)]
            ports = {}
            for name in names:
                line = self.proc.stdout.readline()
                if not line:
                    self.proc.wait(timeout=30)
                    sys.exit("%s exited %s before printing its ports: %s" % (self.label, self.proc.returncode,
                                                                              self.log_tail()))
                ports[name] = int(line)
            self.ports = ports
            self.channel = grpc.insecure_channel("127.0.0.1:%d" % ports["grpc"])
            grpc.channel_ready_future(self.channel).result(timeout=30)
            self.native = native_grpc.SparseInferenceStub(self.channel)
            self.oip = oip_grpc.GRPCInferenceServiceStub(self.channel)

        def log_tail(self):
            with open(self.log, errors="replace") as f:
                return f.read()[-1500:]

        def alive(self):
            return self.proc.poll() is None

        def restart_if_dead(self, after):
            with self.lock:
                if self.alive():
                    return False
                check(False, "%s died (exit %s) after %s: %s" % (self.label, self.proc.returncode, after,
                                                                 self.log_tail()))
                self.start()
                return True

        def stop(self):
            code, _ = stop(self.proc)
            return code

    def grpc_health(port, timeout=5):
        """grpc.health.v1.Health/Check of the server as a whole: SERVING?"""
        channel = grpc.insecure_channel("127.0.0.1:%d" % port)
        try:
            call = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)
            return call(b"", timeout=timeout) == b"\x08\x01"  # status: SERVING
        except grpc.RpcError:
            return False
        finally:
            channel.close()

    def rest_infer(port, timeout=10):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            c.request("POST", "/v2/models/m/infer", INFER_JSON, {"Content-Type": "application/json"})
            r = c.getresponse()
            body = r.read()
            return r.status == 200 and json_error(body) is None and b'"outputs"' in body
        except (OSError, http.client.HTTPException):
            return False
        finally:
            c.close()

    def grpc_predict(server):
        try:
            return len(server.native.Predict(native.PredictRequest(model="m", rows=1, inputs=ROW),
                                             timeout=10).outputs) == 1
        except grpc.RpcError:
            return False

    def metrics_get(port, timeout=5):
        """(status, seconds) of GET /metrics on a new connection."""
        start = time.monotonic()
        o = exchange(port, request(b"GET", b"/metrics"), timeout=timeout, close_wait=0)
        return (o.response.status if o.response else None), time.monotonic() - start, o

    # ------------------------------------------------------------ bookkeeping

    records = []  # (port, class, label, outcome, ok)

    def record(server, port_name, klass, label, outcome, ok, detail="", answers=True):
        """Records one hostile input; then the server must be alive and answer
        a REST infer and a gRPC Predict (and GET /metrics, health Check);
        with `answers` False (a limit is held on purpose), alive only."""
        check(ok, "%s %s port, %s: %s -> %s %s" % (server.label, port_name, klass, label, outcome, detail))
        alive_ok = not server.restart_if_dead("%s: %s" % (klass, label))
        if alive_ok and answers:
            problems = []
            if "rest" in server.ports and not rest_infer(server.ports["rest"]):
                problems.append("REST infer")
            if not grpc_predict(server):
                problems.append("gRPC Predict")
            if "metrics" in server.ports and metrics_get(server.ports["metrics"])[0] != 200:
                problems.append("GET /metrics")
            if "health" in server.ports and not grpc_health(server.ports["health"]):
                problems.append("health Check")
            alive_ok = not problems
            check(alive_ok, "%s after %s (%s port): %s failed" % (server.label, label, port_name, ", ".join(problems)))
        records.append((port_name, klass, label, outcome, ok and alive_ok))

    # ------------------------------------------------------------ good traffic

    class GoodTraffic:
        """REST JSON infer and REST binary infer on keep-alive connections
        (http.client), and native gRPC Predict, each in a closed loop with a
        short pause, counting answers and failures."""

        def __init__(self, server):
            self.server, self.stopping = server, threading.Event()
            self.ok = collections.Counter()
            self.failed = collections.Counter()
            self.errors = []
            self.threads = [threading.Thread(target=self.rest, args=(name, body, headers), daemon=True)
                            for name, body, headers in (
                                ("REST JSON", INFER_JSON, {"Content-Type": "application/json"}),
                                ("REST binary", INFER_BINARY, {"Content-Type": "application/octet-stream",
                                                               "Inference-Header-Content-Length":
                                                                   str(len(_BIN_HEADER))}))]
            self.threads.append(threading.Thread(target=self.grpc, daemon=True))
            for t in self.threads:
                t.start()

        def fail(self, name, what):
            self.failed[name] += 1
            if len(self.errors) < 10:
                self.errors.append("%s: %s" % (name, what))

        def rest(self, name, body, headers):
            conn, port = None, None
            while not self.stopping.is_set():
                try:
                    if conn is None or port != self.server.ports["rest"]:
                        port = self.server.ports["rest"]
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    conn.request("POST", "/v2/models/m/infer", body, headers)
                    r = conn.getresponse()
                    data = r.read()
                    if r.status == 200 and (b'"outputs"' in data):
                        self.ok[name] += 1
                    else:
                        self.fail(name, "%d %r" % (r.status, data[:200]))
                except (OSError, http.client.HTTPException) as e:
                    self.fail(name, repr(e))
                    if conn is not None:
                        conn.close()
                    conn = None
                    time.sleep(0.2)
                time.sleep(0.01)
            if conn is not None:
                conn.close()

        def grpc(self):
            while not self.stopping.is_set():
                try:
                    got = self.server.native.Predict(native.PredictRequest(model="m", rows=1, inputs=ROW),
                                                     timeout=30)
                    if len(got.outputs) == 1:
                        self.ok["gRPC"] += 1
                    else:
                        self.fail("gRPC", str(got))
                except grpc.RpcError as e:
                    self.fail("gRPC", "%s %s" % (e.code(), e.details()))
                    time.sleep(0.2)
                time.sleep(0.01)

        def finish(self):
            self.stopping.set()
            for t in self.threads:
                t.join(timeout=60)

    # ------------------------------------------------------------ the inputs

    def expect(o, codes, close=True, or_close=False, max_seconds=None):
        """An answer with a status in `codes` (then the connection closed, if
        `close`), or, with `or_close`, a close with no answer; within
        `max_seconds` when given."""
        if max_seconds is not None and o.seconds > max_seconds:
            return False
        if o.response is None:
            return or_close and o.end == "close"
        return o.response.status in codes and (not close or o.end == "close")

    def utf8_paths(server, port_name):
        port = server.ports[port_name]
        klass = "invalid UTF-8 in the path"
        if port_name == "rest":
            cases = [(b"GET", t) for t in (
                b"/v2/models/%FF", b"/v2/models/%C3", b"/v2/models/\xff\xfe", b"/v2/models/%FF/ready",
                b"/v2/models/%FF/versions/1/ready", b"/v2/models/%FF/stats", b"/v2/models/%FF/config",
                b"/v2/models/m/versions/%FF", b"/v2/models/m/versions/%FF/ready", b"/v2/models/%ED%A0%80",
                b"/v2/models/%C0%AF", b"/v2/%FF", b"/v2/health/%FF")] + [(b"POST", t) for t in (
                    b"/v2/models/%FF/infer", b"/v2/models/%C3/infer", b"/v2/models/\xff\xfe/infer",
                    b"/v2/models/m/versions/%FF/infer", b"/v2/models/%FF/versions/1/infer",
                    b"/v2/repository/models/%FF/load")]
            for method, target in cases:
                o = exchange(port, request(method, target, body=INFER_JSON if method == b"POST" else b""))
                r = o.response
                ok = (r is not None and r.status == 400 and is_utf8(r.body) and json_error(r.body) is not None
                      and r.fields.get("content-type", "").startswith("application/json"))
                record(server, port_name, klass, "%s %r" % (method.decode(), target), describe(o), ok,
                       r.body[:160] if r else o.error or "")
            # A valid UTF-8 name that is not a model: 404, its JSON UTF-8.
            o = exchange(port, request(b"GET", b"/v2/models/%E2%82%AC"))
            r = o.response
            record(server, port_name, klass, "GET /v2/models/%E2%82%AC (valid UTF-8, no such model)",
                   describe(o), r is not None and r.status == 404 and json_error(r.body) is not None,
                   r.body[:160] if r else "")
        else:
            for method, target in ((b"GET", b"/metrics%FF"), (b"GET", b"/%FF"), (b"GET", b"/\xff\xfe"),
                                   (b"GET", b"/metrics/%C3"), (b"GET", b"/v2/models/%FF"),
                                   (b"POST", b"/metrics%FF")):
                o = exchange(port, request(method, target, body=b"x" if method == b"POST" else b""))
                r = o.response
                ok = r is not None and r.status in (400, 404) and is_utf8(r.body)
                record(server, port_name, klass, "%s %r" % (method.decode(), target), describe(o), ok,
                       r.body[:160] if r else o.error or "")

    def head_requests(server, port_name):
        port = server.ports[port_name]
        klass = "HEAD, and a GET pipelined after it"
        paths = [b"/v2/health/ready", b"/v2"] if port_name == "rest" else [b"/metrics"]
        for path in paths:
            get = exchange(port, request(b"GET", path), close_wait=0).response
            c = Conn(port)
            try:
                c.send(request(b"HEAD", path))
                try:
                    r = c.response(5, head=True)
                    after = c.closes(0.5)
                except (TimeoutError, ProtocolError, ValueError) as e:
                    r, after = None, repr(e)
            finally:
                c.close()
            length = r.fields.get("content-length") if r else None
            ok = (r is not None and r.status == 200 and length is not None and after in ("open", "close") and
                  (get is None or length == str(len(get.body))))
            record(server, port_name, klass, "HEAD %s" % path.decode(),
                   "%s, Content-Length %s, then %s" % (r.status if r else "no answer", length, after), ok,
                   "(GET's body: %d bytes)" % len(get.body) if get else "")
        pipelined = [(b"/v2", b"/v2"), (b"/v2/health/ready", b"/v2/models/m")] if port_name == "rest" else [
            (b"/metrics", b"/metrics")]
        for head_path, get_path in pipelined:
            c = Conn(port)
            try:
                c.send(request(b"HEAD", head_path) + request(b"GET", get_path))
                try:
                    first = c.response(5, head=True)
                    second = c.response(5)
                    what = "%s, %s" % (first.status if first else "closed", second.status if second else "closed")
                except (TimeoutError, ProtocolError, ValueError) as e:
                    first, second, what = None, None, "unparsable: %s" % e
            finally:
                c.close()
            want = b'"name":"sparse-serve"' if get_path == b"/v2" else (
                b'"name":"m"' if get_path == b"/v2/models/m" else b"# TYPE")
            ok = (first is not None and first.status == 200 and second is not None and second.status == 200 and
                  want in second.body)
            record(server, port_name, klass, "HEAD %s + GET %s in one write" % (head_path.decode(), get_path.decode()),
                   what, ok, second.body[:120] if second else "")

    def malformed(server, port_name):
        port = server.ports[port_name]
        get_path = b"/v2/health/live" if port_name == "rest" else b"/metrics"
        post_path = b"/v2/models/m/infer" if port_name == "rest" else b"/metrics"
        klass = "malformed header fields"
        for label, data, codes in (
                ("a field without a colon", request(b"GET", get_path, b"bad header no colon\r\n"), (400,)),
                ("a space before the colon", request(b"GET", get_path, b"X-Bad : y\r\n"), (400,)),
                ("a field name with '('", request(b"GET", get_path, b"X(y): z\r\n"), (400,)),
                ("a NUL in a field value", request(b"GET", get_path, b"X-Nul: a\x00b\r\n"), (400,)),
                ("an unknown HTTP version 9.9", request(b"GET", get_path, version=b"HTTP/9.9"), (400, 505))):
            o = exchange(port, data)
            record(server, port_name, klass, label, describe(o), expect(o, codes))
        # RFC 9112: a folded line is refused (400, then close) or unfolded.
        o = exchange(port, request(b"GET", get_path, b"X-Fold: a\r\n b\r\n"))
        ok = expect(o, (400,)) or expect(o, (200,), close=False)
        record(server, port_name, klass, "a line folded (obs-fold)", describe(o), ok)

        klass = "Host header"
        for label, data, codes, close in (
                ("HTTP/1.1 without Host", request(b"GET", get_path, host=False), (400,), True),
                ("two Host fields", request(b"GET", get_path, b"Host: other\r\n"), (400,), True),
                ("HTTP/1.0 without Host", request(b"GET", get_path, version=b"HTTP/1.0", host=False), (200,), False)):
            o = exchange(port, data)
            record(server, port_name, klass, label, describe(o), expect(o, codes, close=close))

        klass = "message framing"
        body = INFER_JSON if port_name == "rest" else b"{}"
        chunked_body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        for label, data, codes in (
                ("Transfer-Encoding: gzip, chunked",
                 request(b"POST", post_path, b"Transfer-Encoding: gzip, chunked\r\n", chunked_body, length=False),
                 (501,)),
                ("Transfer-Encoding: chunked with Content-Length",
                 request(b"POST", post_path, b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n" %
                         len(chunked_body), chunked_body, length=False), (400,)),
                ("Transfer-Encoding: chunked, gzip (chunked not last)",
                 request(b"POST", post_path, b"Transfer-Encoding: chunked, gzip\r\n", chunked_body, length=False),
                 (400, 501)),
                ("two different Content-Length",
                 request(b"POST", post_path, b"Content-Length: %d\r\nContent-Length: 3\r\n" % len(body), body,
                         length=False), (400,)),
                ("Content-Length: abc", request(b"POST", post_path, b"Content-Length: abc\r\n", body, length=False),
                 (400,)),
                ("Content-Length: -1", request(b"POST", post_path, b"Content-Length: -1\r\n", body, length=False),
                 (400,)),
                ("a chunk size that is not hex",
                 request(b"POST", post_path, b"Transfer-Encoding: chunked\r\n", b"zz\r\nab\r\n0\r\n\r\n",
                         length=False), (400,)),
                ("a chunk size of 2^80",
                 request(b"POST", post_path, b"Transfer-Encoding: chunked\r\n", b"ffffffffffffffffffff\r\nab\r\n",
                         length=False), (400, 413))):
            o = exchange(port, data)
            record(server, port_name, klass, label, describe(o), expect(o, codes))

        klass = "header budget (--http_header_bytes)"
        under = b"".join(b"X-H%03d: %s\r\n" % (i, b"a" * 40) for i in range(200))  # ~10 KiB
        over = b"".join(b"X-H%03d: %s\r\n" % (i, b"a" * 40) for i in range(400))  # ~20 KiB
        for label, data, codes, close in (
                ("200 fields, ~10 KiB (under the budget)", request(b"GET", get_path, under), (200,), False),
                ("400 fields, ~20 KiB", request(b"GET", get_path, over), (431,), True),
                ("one 20 KiB field line", request(b"GET", get_path, b"X-Long: " + b"a" * 20000 + b"\r\n"), (431,),
                 True),
                ("a 20 KiB request target", request(b"GET", get_path + b"?" + b"a" * 20000), (431, 414), True)):
            o = exchange(port, data)
            record(server, port_name, klass, label, describe(o), expect(o, codes, close=close))

        klass = "garbage bytes"
        rng = random.Random(7)
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\x00" * 474
        for label, data in (
                ("a TLS ClientHello", hello),
                ("4 KiB of random bytes", rng.randbytes(4096)),
                ("2 KiB of random bytes, then CRLF CRLF", rng.randbytes(2048) + b"\r\n\r\n"),
                ("1 KiB of NUL", b"\x00" * 1024),
                ("the HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"),
                ("10,000 empty lines (20 KB)", b"\r\n" * 10000),
                ("a method with a NUL", b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n")):
            o = exchange(port, data, timeout=HEADER_SECONDS + SLACK + 2)
            ok = expect(o, (400, 408, 431, 505), or_close=True, max_seconds=HEADER_SECONDS + SLACK)
            record(server, port_name, klass, label, "%s after %.1f s" % (describe(o), o.seconds), ok)

    def rss_mib(pid):
        try:
            return memory_kib(pid)["VmRSS"] / 1024.0
        except (OSError, KeyError):
            return 0.0

    def flood(server, port_name, label, prefix, piece, klass="1 GiB chunk extension / trailers"):
        """Streams `prefix` then `piece` until 1 GiB, an error, or
        FLOOD_CAP_SECONDS; the server must cut it off within 64 MiB and its
        RSS grow under 16 MiB."""
        port, pid = server.ports[port_name], server.proc.pid
        before = rss_mib(pid)
        peak = [before]
        done = threading.Event()

        def sample():
            while not done.wait(0.05):
                peak[0] = max(peak[0], rss_mib(pid))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        sent, how, start = 0, None, time.monotonic()
        c = Conn(port)
        c.sock.settimeout(5)
        try:
            c.sock.sendall(prefix)
            while sent < GIB:
                if time.monotonic() - start > FLOOD_CAP_SECONDS:
                    how = "still reading after %d s" % FLOOD_CAP_SECONDS
                    break
                view = memoryview(piece)
                while view:
                    n = c.sock.send(view)
                    sent += n
                    view = view[n:]
            else:
                how = "took all 1 GiB"
        except socket.timeout:
            how = "stalled: stopped reading, connection left open"
        except OSError as e:
            how = "cut off (%s)" % (e.strerror or type(e).__name__)
        answer = None
        if how.startswith("cut off"):
            try:
                r = c.response(1)
                answer = r.status if r else None
            except (TimeoutError, ProtocolError, ValueError, OSError):
                pass
        c.close()
        time.sleep(0.3)
        done.set()
        sampler.join()
        peak[0] = max(peak[0], rss_mib(pid))
        growth = peak[0] - before
        ok = (how.startswith("cut off") and sent <= 64 * MIB and growth < MAX_FLOOD_GROWTH_MIB and
              answer in (None, 431, 400))
        record(server, port_name, klass, label, "%s at %.1f MiB sent%s, RSS +%.1f MiB" % (
            how, sent / MIB, ", answer %s" % answer if answer else "", growth), ok)

    def floods(server, port_name):
        path = b"/v2/models/m/infer" if port_name == "rest" else b"/metrics"
        chunked = request(b"POST", path, b"Transfer-Encoding: chunked\r\n", length=False)
        flood(server, port_name, "1 GiB of one chunk's extension", chunked + b"1;", b"a" * MIB)
        line = b"X-T: " + b"a" * 1017 + b"\r\n"  # 1 KiB per trailer field
        flood(server, port_name, "1 GiB of trailer fields", chunked + b"1\r\n{\r\n0\r\n", line * 1024)

    def small_extensions(server, port_name):
        port = server.ports[port_name]
        klass = "1 GiB chunk extension / trailers"
        path = b"/v2/models/m/infer" if port_name == "rest" else b"/metrics"
        body = INFER_JSON if port_name == "rest" else b"{}"
        # Under the budget: the body in 1-byte chunks, each ";e=0123456789".
        pieces = [body[i:i + 1] for i in range(len(body))]
        ok_body = b"".join(b"1;e=0123456789\r\n%s\r\n" % p for p in pieces) + b"0\r\n\r\n"
        o = exchange(port, request(b"POST", path, b"Transfer-Encoding: chunked\r\n", ok_body, length=False))
        want = (200,) if port_name == "rest" else (200, 404, 405)
        record(server, port_name, klass, "%d chunks with a 13-byte extension each (%.1f KiB)" % (
            len(pieces), len(pieces) * 13 / 1024.0), describe(o), expect(o, want, close=False))
        many = b"1;e=0123456789\r\na\r\n" * 2000 + b"0\r\n\r\n"  # 26 KiB of extensions
        o = exchange(port, request(b"POST", path, b"Transfer-Encoding: chunked\r\n", many, length=False))
        record(server, port_name, klass, "2,000 chunks with a 13-byte extension each (25 KiB)", describe(o),
               expect(o, (431,)))
        trailers = b"1\r\na\r\n0\r\n" + b"".join(b"X-T%03d: %s\r\n" % (i, b"a" * 40) for i in range(400)) + b"\r\n"
        o = exchange(port, request(b"POST", path, b"Transfer-Encoding: chunked\r\n", trailers, length=False))
        record(server, port_name, klass, "400 trailer fields (20 KiB)", describe(o), expect(o, (431,)))

    def timeouts(server, port_name):
        port = server.ports[port_name]
        get_path = b"/v2/health/live" if port_name == "rest" else b"/metrics"
        post_path = b"/v2/models/m/infer" if port_name == "rest" else b"/metrics"
        # A header trickled a byte a second.
        klass = "slow header (--http_header_seconds=%d)" % HEADER_SECONDS
        data = request(b"GET", get_path, b"X-Slow: " + b"a" * 60 + b"\r\n")
        c = Conn(port)
        stopping = threading.Event()

        def trickle():
            for i in range(len(data)):
                if stopping.is_set() or c.send(data[i:i + 1]) is not None:
                    return
                stopping.wait(1.0)
        sender = threading.Thread(target=trickle, daemon=True)
        start = time.monotonic()
        sender.start()
        try:
            r = c.response(HEADER_SECONDS + SLACK + 2)
            end = "close" if r is None else "%d" % r.status
        except TimeoutError:
            end = "hang"
        except (ProtocolError, ValueError) as e:
            end = "protocol: %s" % e
        seconds = time.monotonic() - start
        stopping.set()
        c.close()
        sender.join()
        ok = end in ("close", "408") and HEADER_SECONDS - 0.5 <= seconds <= HEADER_SECONDS + SLACK
        record(server, port_name, klass, "a header sent 1 byte/s", "%s after %.1f s" % (end, seconds), ok)

        # An idle keep-alive connection: closed without a word.
        klass = "idle keep-alive (--http_idle_seconds=%d)" % IDLE_SECONDS
        c = Conn(port)
        try:
            c.send(request(b"GET", get_path))
            first = c.response(5)
            start = time.monotonic()
            end = c.closes(IDLE_SECONDS + SLACK + 2)
            seconds = time.monotonic() - start
        except (TimeoutError, ProtocolError, ValueError) as e:
            first, end, seconds = None, repr(e), 0
        finally:
            c.close()
        ok = (first is not None and first.status == 200 and end == "close" and
              IDLE_SECONDS - 0.5 <= seconds <= IDLE_SECONDS + SLACK)
        record(server, port_name, klass, "one GET, then nothing", "%s after %.1f s" % (
            {"close": "closed silently", "data": "bytes sent", "open": "still open"}.get(end, end), seconds), ok)
        # A new connection that never sends a byte (reported, not required).
        c = Conn(port)
        start = time.monotonic()
        end = c.closes(max(IDLE_SECONDS, HEADER_SECONDS) + SLACK + 2)
        seconds = time.monotonic() - start
        c.close()
        record(server, port_name, klass, "(info) connected, nothing sent", "%s after %.1f s" % (
            {"close": "closed", "data": "bytes sent", "open": "still open"}[end], seconds), True)

        # A body that stops coming.
        klass = "stalled body (--http_body_seconds=%d)" % BODY_SECONDS
        o = exchange(port, request(b"POST", post_path, b"Content-Length: 100\r\n", b"{\"inputs\": [", length=False),
                     timeout=BODY_SECONDS + SLACK + 2)
        if port_name == "rest":
            ok = expect(o, (408,), or_close=True, max_seconds=BODY_SECONDS + SLACK)
        else:  # the metrics port may answer at once without reading the body
            ok = o.end == "close" and o.seconds <= BODY_SECONDS + SLACK
        record(server, port_name, klass, "Content-Length 100, 12 bytes sent", "%s after %.1f s" % (
            describe(o), o.seconds), ok)

    def idle_connections(server, port_name):
        port = server.ports[port_name]
        klass = "idle connections, then a request"
        for count in (2, 100):
            held = []
            try:
                for _ in range(count):
                    held.append(Conn(port))
                time.sleep(0.2)
                if port_name in ("rest", "metrics"):
                    path = b"/metrics" if port_name == "metrics" else b"/v2/health/ready"
                    start = time.monotonic()
                    o = exchange(port, request(b"GET", path), timeout=5, close_wait=0)
                    seconds = time.monotonic() - start
                    status = o.response.status if o.response else describe(o)
                    ok = status == 200 and seconds < 1.0
                    what = "GET %s" % path.decode()
                else:
                    start = time.monotonic()
                    status = "SERVING" if grpc_health(port) else "not SERVING"
                    seconds = time.monotonic() - start
                    ok = status == "SERVING" and seconds < 1.0
                    what = "health Check"
                print("%s port, %d idle connections: %s -> %s in %.3f s" % (port_name, count, what, status, seconds))
            finally:
                for c in held:
                    c.close()
            record(server, port_name, klass, "%d idle connections, %s" % (count, what),
                   "%s in %.3f s" % (status, seconds), ok)

    def parameters(server):
        klass = "OIP parameters docs/api.md refuses"

        def rest_body(params=None, output_params=None):
            body = {"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": ROW}]}
            if params is not None:
                body["parameters"] = params
            if output_params is not None:
                body["outputs"] = [{"name": "output", "parameters": output_params}]
            return json.dumps(body).encode()

        refused = [("sequence_id 5", {"sequence_id": 5}, None), ("sequence_id 1.5", {"sequence_id": 1.5}, None),
                   ("sequence_id -3", {"sequence_id": -3}, None),
                   ("sequence_id \"abc\"", {"sequence_id": "abc"}, None),
                   ("sequence_start true", {"sequence_start": True}, None),
                   ("sequence_end true", {"sequence_end": True}, None),
                   ("classification 3", None, {"classification": 3}),
                   ("classification 1.5", None, {"classification": 1.5}),
                   ("classification \"2\"", None, {"classification": "2"})]
        accepted = [("sequence_id 0", {"sequence_id": 0}, None), ("sequence_id false", {"sequence_id": False}, None),
                    ("sequence_start false", {"sequence_start": False}, None),
                    ("sequence_end false", {"sequence_end": False}, None),
                    ("classification 0", None, {"classification": 0})]
        for cases, want in ((refused, 400), (accepted, 200)):
            for label, params, output_params in cases:
                o = exchange(server.ports["rest"], request(b"POST", b"/v2/models/m/infer",
                                                           body=rest_body(params, output_params)), close_wait=0)
                r = o.response
                ok = r is not None and r.status == want and (want == 200 or json_error(r.body) is not None)
                record(server, "rest", klass, label, describe(o).replace(" + kept open", ""), ok,
                       r.body[:200] if r else "")

        def infer(params=(), output_params=()):
            req = oip.ModelInferRequest(model_name="m", inputs=[oip.ModelInferRequest.InferInputTensor(
                name="input", datatype="FP32", shape=[1, 8], contents=oip.InferTensorContents(fp32_contents=ROW))])
            for key, kind, value in params:
                setattr(req.parameters[key], kind, value)
            if output_params:
                out = req.outputs.add(name="output")
                for key, kind, value in output_params:
                    setattr(out.parameters[key], kind, value)
            try:
                server.oip.ModelInfer(req, timeout=10)
                return grpc.StatusCode.OK, ""
            except grpc.RpcError as e:
                return e.code(), e.details()

        refused = [("sequence_id uint64 5", [("sequence_id", "uint64_param", 5)], ()),
                   ("sequence_id double 1.5", [("sequence_id", "double_param", 1.5)], ()),
                   ("sequence_id int64 5", [("sequence_id", "int64_param", 5)], ()),
                   ("sequence_id string \"abc\"", [("sequence_id", "string_param", "abc")], ()),
                   ("sequence_start bool true", [("sequence_start", "bool_param", True)], ()),
                   ("sequence_end bool true", [("sequence_end", "bool_param", True)], ()),
                   ("classification int64 3", (), [("classification", "int64_param", 3)]),
                   ("classification uint64 3", (), [("classification", "uint64_param", 3)]),
                   ("classification double 1.5", (), [("classification", "double_param", 1.5)])]
        accepted = [("sequence_id int64 0", [("sequence_id", "int64_param", 0)], ()),
                    ("sequence_id uint64 0", [("sequence_id", "uint64_param", 0)], ()),
                    ("sequence_id bool false", [("sequence_id", "bool_param", False)], ()),
                    ("sequence_start bool false", [("sequence_start", "bool_param", False)], ())]
        for cases, want in ((refused, grpc.StatusCode.INVALID_ARGUMENT), (accepted, grpc.StatusCode.OK)):
            for label, params, output_params in cases:
                code, details = infer(params, output_params)
                record(server, "grpc", klass, label, code.name, code == want, details)

    def grpc_port_inputs(server, port_name):
        """HTTP/1.1 requests, malformed ones and garbage at a gRPC port: any
        answer or close will do, as long as the server goes on serving."""
        port = server.ports[port_name]
        rng = random.Random(11)
        for klass, cases in (
                ("HTTP/1.1 requests", [
                    ("GET /v2/health/live", request(b"GET", b"/v2/health/live")),
                    ("HEAD /v2", request(b"HEAD", b"/v2")),
                    ("a field without a colon", request(b"GET", b"/", b"bad header no colon\r\n")),
                    ("a 20 KiB field line", request(b"GET", b"/", b"X-Long: " + b"a" * 20000 + b"\r\n")),
                    ("Transfer-Encoding: gzip, chunked", request(b"POST", b"/", b"Transfer-Encoding: gzip, chunked\r\n",
                                                                 b"0\r\n\r\n", length=False)),
                    ("GET %FF", request(b"GET", b"/v2/models/%FF\xff"))]),
                ("garbage bytes", [
                    ("a TLS ClientHello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32))),
                    ("4 KiB of random bytes", rng.randbytes(4096)),
                    ("the HTTP/2 preface, then random frames",
                     b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + rng.randbytes(2048)),
                    ("1 KiB of NUL", b"\x00" * 1024)])):
            for label, data in cases:
                o = exchange(port, data, timeout=2, close_wait=1)
                record(server, port_name, klass, label, describe_http2(o), True)
        prefix = request(b"POST", b"/", b"Transfer-Encoding: chunked\r\n", length=False) + b"1;"
        flood(server, port_name, "1 GiB of one chunk's extension", prefix, b"a" * MIB, klass="1 GiB flood")
        idle_connections(server, port_name)

    def connection_limit(server, port_name, limit):
        port = server.ports[port_name]
        klass = "connections beyond --http_max_connections=%d" % limit
        path = b"/metrics" if port_name == "metrics" else b"/v2/health/live"
        held, answered = [], 0
        try:
            for _ in range(limit):
                c = Conn(port)
                held.append(c)
                c.send(request(b"GET", path))
                try:
                    r = c.response(3)
                except (TimeoutError, ProtocolError, ValueError):
                    r = None
                if r is None or r.status != 200:
                    break
                answered += 1
            check(answered == limit, "%s port: only %d of the first %d connections were answered" % (
                port_name, answered, limit))
            for n in (1, 2):
                o = exchange(port, request(b"GET", path), timeout=3)
                r = o.response
                ok = (r is None and o.end == "close") or (
                    r is not None and r.status == 503 and "close" in r.fields.get("connection", "").lower() and
                    o.end == "close")
                record(server, port_name, klass, "connection %d past the limit" % n, describe(o), ok, answers=False)
        finally:
            for c in held:
                c.close()
        start, status = time.monotonic(), None
        while time.monotonic() - start < 5:
            o = exchange(port, request(b"GET", path), timeout=1, close_wait=0)
            status = o.response.status if o.response else None
            if status == 200:
                break
            time.sleep(0.1)
        record(server, port_name, klass, "a new connection once they closed",
               "%s after %.1f s" % (status or describe(o), time.monotonic() - start), status == 200)

    def cpu_seconds(pid):
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def out_of_descriptors(server, nofile):
        port = server.ports["rest"]
        klass = "out of file descriptors (RLIMIT_NOFILE=%d)" % nofile
        held, served, full = [], 0, False
        try:
            for _ in range(4 * nofile):
                try:
                    c = Conn(port, timeout=2)
                except OSError:
                    full = True
                    break
                held.append(c)
                c.send(request(b"GET", b"/v2/health/live"))
                try:
                    r = c.response(1.0)
                except (TimeoutError, ProtocolError, ValueError):
                    r = None
                if r is None or r.status != 200:
                    full = True
                    break
                served += 1
            for _ in range(20):  # more waiting in the backlog
                try:
                    held.append(Conn(port, timeout=2))
                    held[-1].send(request(b"GET", b"/v2/health/live"))
                except OSError:
                    break
            time.sleep(0.5)
            before, start = cpu_seconds(server.proc.pid), time.monotonic()
            time.sleep(3)
            share = (cpu_seconds(server.proc.pid) - before) / (time.monotonic() - start)
            print("out of descriptors: served %d connections, then %d more wait; server CPU %.1f %% of a core" % (
                served, len(held) - served, 100 * share))
            check(full, "the server never ran out of descriptors with %d connections" % len(held))
            record(server, "rest", klass, "%d connections held, %d more waiting" % (served, len(held) - served),
                   "server CPU %.1f %% of a core over 3 s" % (100 * share), full and share < 0.05, answers=False)
        finally:
            for c in held:
                c.close()
        start, status = time.monotonic(), None
        while time.monotonic() - start < 5:
            o = exchange(port, request(b"GET", b"/v2/health/live"), timeout=1, close_wait=0)
            status = o.response.status if o.response else None
            if status == 200:
                break
            time.sleep(0.2)
        record(server, "rest", klass, "a new connection once they closed",
               "%s after %.1f s" % (status or describe(o), time.monotonic() - start), status == 200)

    # ------------------------------------------------------------ the run

    began = time.monotonic()
    main = Server("server", ["--health_port=0", "--metrics_port=0", "--http_port=0",
                             flag("http_header_seconds", HEADER_SECONDS), flag("http_idle_seconds", IDLE_SECONDS),
                             flag("http_body_seconds", BODY_SECONDS), flag("http_header_bytes", HEADER_BYTES),
                             flag("http_max_connections", 1024)])
    good = GoodTraffic(main)
    try:
        for port_name in ("rest", "metrics"):
            utf8_paths(main, port_name)
            head_requests(main, port_name)
            malformed(main, port_name)
            small_extensions(main, port_name)
            floods(main, port_name)
            timeouts(main, port_name)
            idle_connections(main, port_name)
        parameters(main)
        for port_name in ("health", "grpc"):
            grpc_port_inputs(main, port_name)
    finally:
        good.finish()
    total = sum(good.ok.values())
    print("good traffic on %s: %s answered, %s failed%s" % (
        main.label, dict(good.ok), dict(good.failed), (": " + "; ".join(good.errors)) if good.errors else ""))
    check(not good.failed and all(good.ok[k] > 0 for k in ("REST JSON", "REST binary", "gRPC")),
          "good traffic: %d answered, failures %s: %s" % (total, dict(good.failed), good.errors))
    code = main.stop()
    check(code == 0, "server stopped cleanly (exit %s): %s" % (code, main.log_tail()))

    limited = Server("server --http_max_connections=20", [
        "--metrics_port=0", "--http_port=0", flag("http_max_connections", 20)])
    try:
        for port_name in ("rest", "metrics"):
            connection_limit(limited, port_name, 20)
    finally:
        code = limited.stop()
    check(code == 0, "%s stopped cleanly (exit %s)" % (limited.label, code))

    if os.environ.get("SPARSE_SANITIZE"):
        # UndefinedBehaviorSanitizer checks a pointer's memory through a pipe
        # (IsAccessibleMemoryRange): with no descriptor left that fails, and it
        # reports every virtual call as "invalid vptr". The phase runs in the
        # plain build only.
        print("out of descriptors: skipped under %s (its checks need descriptors)" %
              os.environ["SPARSE_SANITIZE"])
    else:
        starved = Server("server under RLIMIT_NOFILE=128", ["--http_port=0"], nofile=128)
        try:
            out_of_descriptors(starved, 128)
        finally:
            code = starved.stop()
        check(code == 0, "%s stopped cleanly (exit %s)" % (starved.label, code))

    # Every input, then the table for docs/reliability.md.
    names = {"rest": "REST", "metrics": "metrics", "health": "health (gRPC)", "grpc": "gRPC"}
    rows = collections.OrderedDict()
    print()
    for port_name, klass, label, outcome, ok in records:
        rows.setdefault((names[port_name], klass), []).append((label, outcome, ok))
        print("%-4s %-13s %-44s %-62s -> %s" % ("ok" if ok else "FAIL", names[port_name], klass[:44], label[:62],
                                                 outcome))
    print()
    print("| port | inputs | sent | outcome | failed |")
    print("|---|---|---|---|---|")
    for (port_name, klass), items in rows.items():
        shapes = collections.Counter(o for _, o, _ in items)
        outcomes = "; ".join("%s ×%d" % (o, n) if n > 1 else o for o, n in shapes.items())
        print("| %s | %s | %d | %s | %d |" % (port_name, klass, len(items), outcomes,
                                              sum(1 for _, _, ok in items if not ok)))
    print()
    print("good traffic during the run: %s answered, %d failed; %.0f s in all" % (
        dict(good.ok), sum(good.failed.values()), time.monotonic() - began))
    if missing_flags:
        print("flags this sparse-server lacks: " + ", ".join("--" + f for f in missing_flags))

finish()
