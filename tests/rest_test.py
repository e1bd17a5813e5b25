"""The KServe v2 HTTP/REST port (--http_port), driven with curl as a user
would: health, server and model metadata, infer with JSON and with Triton's
binary tensor data on a DSM and its `.dense` twin (outputs and FLOPs equal
the native gRPC API's; the cost in `parameters`), config, statistics, the
repository index, and bad requests (a 4xx with a JSON error). Then the
drain: SIGTERM lets an infer in flight finish and the server exits 0.

Usage: rest_test.py <source dir> <build dir>
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

source, build = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(source, "tests", "testing"))
from harness import check, finish, python_stubs, stop, train_small_dsm  # noqa: E402

SERVER = os.path.join(build, "server", "sparse-server")


def curl(port, method, path, data=None, headers=(), scheme="http", extra=()):
    """(status, headers dict with lower-case names, body bytes) of one curl call."""
    with tempfile.TemporaryDirectory() as t:
        head, body = os.path.join(t, "head"), os.path.join(t, "body")
        args = ["curl", "-s", "-X", method, "-D", head, "-o", body, "-w", "%{http_code}",
                "%s://127.0.0.1:%d%s" % (scheme, port, path)] + list(extra)
        for h in headers:
            args += ["-H", h]
        if data is not None:
            payload = os.path.join(t, "payload")
            with open(payload, "wb") as f:
                f.write(data if isinstance(data, bytes) else data.encode())
            args += ["--data-binary", "@" + payload]
        done = subprocess.run(args, capture_output=True, text=True)
        status = int(done.stdout or 0)
        fields = {}
        if os.path.exists(head):
            for line in open(head, encoding="latin-1").read().splitlines()[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    fields[k.strip().lower()] = v.strip()
        content = open(body, "rb").read() if os.path.exists(body) else b""
        return status, fields, content


def f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


def as_json(body):
    try:
        return json.loads(body)
    except ValueError:
        return None


with tempfile.TemporaryDirectory() as tmp:
    repo = os.path.join(tmp, "repo")
    train_small_dsm(build, repo, "m")
    python_stubs(source, os.path.join(tmp, "stubs"), "sparse/v1/inference.proto")
    import grpc
    from sparse.v1 import inference_pb2 as native, inference_pb2_grpc as native_grpc

    server = subprocess.Popen([SERVER, "--model_repository=" + repo, "--address=127.0.0.1", "--port=0",
                               "--http_port=0", "--max_message_bytes=1048576"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        grpc_port, http = int(server.stdout.readline()), int(server.stdout.readline())
        channel = grpc.insecure_channel("127.0.0.1:%d" % grpc_port)
        ref = native_grpc.SparseInferenceStub(channel)

        for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/m/ready", "/v2/models/m.dense/ready",
                     "/v2/models/m/versions/1/ready"):
            status, _, _ = curl(http, "GET", path)
            check(status == 200, "GET %s -> %d" % (path, status))
        status, _, body = curl(http, "GET", "/v2/models/nope/ready")
        check(status >= 400 and "error" in (as_json(body) or {}), "an unknown model is not ready: %d" % status)
        status, _, body = curl(http, "GET", "/v2")
        meta = as_json(body) or {}
        check(status == 200 and meta.get("name") == "sparse-serve" and "binary_tensor_data" in meta.get(
            "extensions", []), "GET /v2: %s" % body)
        status, _, body = curl(http, "GET", "/v2/models/m")
        meta = as_json(body) or {}
        check(status == 200 and meta.get("inputs") == [{"name": "input", "datatype": "FP32", "shape": [-1, 8]}]
              and meta.get("versions") == ["1"], "GET /v2/models/m: %s" % body)

        rows = [[(i * 8 + j) / 40.0 - 0.8 for j in range(8)] for i in range(3)]
        flat = [v for row in rows for v in row]
        for name in ("m", "m.dense"):
            want = (ref.PredictDense if name.endswith(".dense") else ref.Predict)(
                native.PredictRequest(model="m", rows=3, inputs=flat), timeout=30)
            want_out = [f32(v) for v in want.outputs]
            # JSON, with the data nested as the shape.
            request = {"id": "q1", "inputs": [{"name": "input", "shape": [3, 8], "datatype": "FP32",
                                               "data": rows}]}
            status, fields, body = curl(http, "POST", "/v2/models/%s/infer" % name, json.dumps(request),
                                        ["Content-Type: application/json"])
            got = as_json(body) or {}
            out = (got.get("outputs") or [{}])[0]
            check(status == 200 and got.get("model_name") == name and got.get("model_version") == "1" and
                  got.get("id") == "q1" and out.get("shape") == [3, 1] and out.get("datatype") == "FP32",
                  "JSON infer %s: %d %s" % (name, status, body))
            # FP32 values are printed as the shortest text that reads back as
            # the same float32.
            data = [f32(v) for v in out.get("data", [])]
            check(data == want_out, "JSON infer %s equals the native API: %s vs %s" % (name, data, want_out))
            params = got.get("parameters", {})
            check(params.get("flops") == want.cost.flops and params.get("dense_flops") == want.cost.dense_flops
                  and params.get("weight_bytes") == want.cost.weight_bytes > 0
                  and "compute_ns" in params and "queue_ns" in params,
                  "JSON infer %s: the cost in parameters: %s" % (name, params))
            check(isinstance(params.get("major_faults"), int) and params["major_faults"] >= 0,
                  "JSON infer %s: major_faults in parameters: %s" % (name, params))

            # Binary in and out: Triton's binary tensor data extension.
            header = json.dumps({"inputs": [{"name": "input", "shape": [3, 8], "datatype": "FP32",
                                             "parameters": {"binary_data_size": 4 * len(flat)}}],
                                 "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()
            status, fields, body = curl(http, "POST", "/v2/models/%s/versions/1/infer" % name,
                                        header + struct.pack("<%df" % len(flat), *flat),
                                        ["Content-Type: application/octet-stream",
                                         "Inference-Header-Content-Length: %d" % len(header)])
            length = int(fields.get("inference-header-content-length", "-1"))
            head = as_json(body[:length]) if length >= 0 else None
            values = list(struct.unpack("<%df" % ((len(body) - length) // 4), body[length:])) if head else []
            check(status == 200 and head is not None and
                  head["outputs"][0]["parameters"]["binary_data_size"] == 12,
                  "binary infer %s: %d %s" % (name, status, fields))
            check(values == want_out, "binary infer %s equals the native API: %s vs %s" % (name, values, want_out))
            check(head is not None and head["parameters"]["flops"] == want.cost.flops,
                  "binary infer %s: the cost in parameters" % name)

        # sparse-cli bench over every protocol in one run: no errors, and each
        # protocol reports the same FLOPs per request.
        bench = subprocess.run(
            [os.path.join(build, "client", "sparse-cli"), "--target=127.0.0.1:%d" % grpc_port, "bench",
             "--model=m", "--paths=sparse,dense", "--protocols=native,oip,rest,rest_binary",
             "--http_target=127.0.0.1:%d" % http, "--concurrency=4", "--warmup_seconds=0.1",
             "--window_seconds=0.2", "--stable_windows=1", "--max_windows=1", "--json", "--quiet"],
            capture_output=True, text=True)
        results = json.loads(bench.stdout)["results"] if bench.returncode == 0 else []
        check(sorted(r["path"] for r in results) == sorted(
            p + s for p in ("sparse", "dense") for s in ("", "@oip", "@rest", "@rest_binary")),
            "bench --protocols runs every path: %s %s" % (bench.stdout[:300], bench.stderr[-500:]))
        check(all(r["errors"] == 0 and r["requests"] > 0 for r in results), "bench: no errors: %s" % [
            (r["path"], r["errors"], r.get("first_error")) for r in results])
        check(all(isinstance(r.get("major_faults_per_request"), (int, float)) and
                  r["major_faults_per_request"] >= 0 for r in results),
              "bench reports major faults per request on every protocol: %s" % [
                  (r["path"], r.get("major_faults_per_request")) for r in results])
        for p in ("sparse", "dense"):
            flops = {r["flops_per_request"] for r in results if r["path"].split("@")[0] == p}
            check(len(flops) == 1 and flops != {0}, "bench: %s costs the same FLOPs on every protocol: %s" % (
                p, flops))

        status, _, body = curl(http, "GET", "/v2/models/m/config")
        config = as_json(body) or {}
        check(status == 200 and config.get("max_batch_size", 0) > 0 and
              config.get("input", [{}])[0].get("dims") == [8], "GET config: %s" % body)
        status, _, body = curl(http, "GET", "/v2/models/m/stats")
        stats = (as_json(body) or {}).get("model_stats", [{}])
        check(status == 200 and stats[0].get("inference_stats", {}).get("success", {}).get("count", 0) >= 3,
              "GET stats counts the requests: %s" % body)
        status, _, body = curl(http, "POST", "/v2/repository/index", "{}")
        check(status == 200 and as_json(body) == [{"name": "m", "version": "1", "state": "READY", "reason": ""}],
              "POST /v2/repository/index: %s" % body)
        status, _, body = curl(http, "POST", "/v2/repository/models/m/unload")
        check(status == 400 and "--model_control" in (as_json(body) or {}).get("error", ""),
              "unload without --model_control: %d %s" % (status, body))

        bad = [
            ("wrong shape", "/v2/models/m/infer",
             '{"inputs":[{"name":"input","shape":[1,7],"datatype":"FP32","data":[1,2,3,4,5,6,7]}]}', 400,
             "expected shape [rows, 8]"),
            ("unknown model", "/v2/models/nope/infer",
             '{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}', 404, "nope"),
            ("not JSON", "/v2/models/m/infer", '{"inputs": [', 400, "not valid JSON"),
            ("a string as data", "/v2/models/m/infer",
             '{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":["a"]}]}', 400, "numbers"),
            ("unknown output", "/v2/models/m/infer",
             '{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}],'
             '"outputs":[{"name":"probabilities"}]}', 400, "unknown output"),
            ("too many values", "/v2/models/m/infer", '{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32",'
             '"data":[' + ",".join(["0"] * 20000) + ']}]}', 400, "more than"),
            ("a body over --max_message_bytes", "/v2/models/m/infer", "x" * (1 << 21), 413, "the most this server takes"),
            ("an unknown path", "/v3/models", "", 404, "no endpoint"),
        ]
        for label, path, data, code, text in bad:
            status, fields, body = curl(http, "POST", path, data)
            error = (as_json(body) or {}).get("error", "")
            check(status == code and text in error and fields.get("content-type") == "application/json",
                  "%s -> %d %s, expected %d with '%s'" % (label, status, body[:200], code, text))

        # Errors in REST's terms (issue 31): JSON field names, never the
        # protobuf ones gRPC's messages have; the header binary tensors need;
        # the input's name; the row limit and its flag.
        def tensor_json(shape, **fields):
            return dict({"name": "input", "shape": shape, "datatype": "FP32"}, **fields)

        def rest_error(data, headers=(), path="/v2/models/m/infer"):
            status, _, body = curl(http, "POST", path, data, headers)
            return status, (as_json(body) or {}).get("error", body[:300].decode("latin-1"))

        row = [0.25] * 8
        floats = struct.pack("<8f", *row)
        one_binary = json.dumps({"inputs": [tensor_json([1, 8], parameters={"binary_data_size": 32})]})
        terms = [
            ("too few values in data", json.dumps({"inputs": [tensor_json([2, 8], data=row)]}), (),
             ["shape [2, 8] needs 16 values in inputs[0].data, got 8"]),
            ("binary data of the wrong size",
             json.dumps({"inputs": [tensor_json([2, 8], parameters={"binary_data_size": 32})]}).encode() + floats,
             ["Inference-Header-Content-Length: %d" % len(one_binary)],
             ["inputs[0].parameters.binary_data_size: expected 64 bytes (2 x 8 FP32), got 32"]),
            # 0.1 is cd cc cc 3d: not JSON after the JSON.
            ("binary data without Inference-Header-Content-Length", one_binary.encode() + struct.pack("<8f", *[0.1] * 8),
             (), ["goes on after its JSON", "needs the header Inference-Header-Content-Length"]),
            # 0.25 is 00 00 80 3e: the JSON parser stops at a zero byte.
            ("binary data from a zero byte on without Inference-Header-Content-Length", one_binary.encode() + floats,
             (), ["binary_data_size says 32 bytes", "no Inference-Header-Content-Length header"]),
            ("binary_data_size without Inference-Header-Content-Length", one_binary, (),
             ["binary_data_size says 32 bytes", "no Inference-Header-Content-Length header"]),
            ("a wrong input name", json.dumps({"inputs": [dict(tensor_json([1, 8], data=row), name="x")]}), (),
             ["unknown input 'x'", "model 'm' has one input, 'input'"]),
            ("no input name", json.dumps({"inputs": [{"shape": [1, 8], "datatype": "FP32", "data": row}]}), (),
             ["unknown input ''", "one input, 'input'"]),
            ("1,025 rows", json.dumps({"inputs": [tensor_json([1025, 8], data=[row] * 1025)]}), (),
             ["batch of 1025 rows exceeds the limit of 1024 rows", "--max_batch_rows"]),
            # Admission parameters (issue 33): whole numbers, named when wrong.
            ("a priority that is not a number",
             json.dumps({"parameters": {"priority": "high"}, "inputs": [tensor_json([1, 8], data=row)]}), (),
             ["parameter 'priority' must be a whole number >= 0"]),
            ("a negative timeout",
             json.dumps({"parameters": {"timeout": -5}, "inputs": [tensor_json([1, 8], data=row)]}), (),
             ["parameter 'timeout' must be a whole number >= 0, got -5"]),
            ("5,000 rows", json.dumps({"inputs": [tensor_json([5000, 8], data=[row] * 5000)]}), (),
             ["more than 1024 rows of 8 inputs", "the limit is 1024 rows per request",
              "--max_batch_rows"]),
        ]
        # A priority the model has no levels for is ignored (Triton's rule),
        # and a generous timeout changes nothing.
        status, _, body = curl(http, "POST", "/v2/models/m/infer",
                               json.dumps({"parameters": {"priority": 2, "timeout": 10000000},
                                           "inputs": [tensor_json([1, 8], data=row)]}))
        check(status == 200, "REST priority 2 and timeout 10 s on a model without levels -> %d %s" % (status, body[:200]))
        for label, data, headers, says in terms:
            status, error = rest_error(data, headers)
            check(status == 400 and all(s in error for s in says),
                  "REST %s -> %d '%s', expected 400 saying %s" % (label, status, error, says))
            protobuf_names = [n for n in ("fp32_contents", "raw_input_contents", "contents.") if n in error]
            check(not protobuf_names, "REST %s: the error names gRPC's fields %s: %s" % (
                label, protobuf_names, error))
        status, _, _ = curl(http, "GET", "/v2/health/live")
        check(status == 200, "the server still serves after the bad requests")
    finally:
        code, log = stop(server)
    check(code == 0, "server stopped cleanly (exit %s): %s" % (code, log))

finish()
