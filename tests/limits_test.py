"""Per-model limits seen from outside (docs/configuration.md "Limits"): a
model with `limits { max_in_flight: 1 }` flooded over REST and OIP gRPC
answers each request either with the right outputs or with 429 /
RESOURCE_EXHAUSTED naming its limit, while another model on the same
server answers every request; the same flood on a model that DELAYs
answers every request; OIP's ModelConfig reports the limits and the
instance count; and a limit in a Triton-schema config.pbtxt (Seldon's
form) is honoured as in today's form.

Usage: limits_test.py <source dir> <build dir>
"""
import http.client
import json
import os
import shutil
import sys
import tempfile
import threading

source, build = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(source, "tests", "testing"))
from harness import check, finish, python_stubs, start_server, stop, train_small_dsm  # noqa: E402

ROWS, D = 512, 8
CONFIGS = {
    "capped": "instance_count: 1\nlimits { max_in_flight: 1 }\n",
    "delayed": "limits { max_in_flight: 1 over_limit: DELAY max_delay_us: 10000000 }\n",
    "seldon": ('name: "seldon"\nmax_batch_size: 1024\n'
               'instance_group [ { count: 1 kind: KIND_CPU } ]\n'
               'parameters { key: "max_in_flight" value { string_value: "1" } }\n'),
}


def body(model_rows):
    return json.dumps({"inputs": [{"name": "input", "shape": [ROWS, D], "datatype": "FP32",
                                   "data": model_rows}]})


def flood(port, model, payload, threads=16, per_thread=60):
    """Every answer of `threads` clients each sending `per_thread` requests
    at once: a list of (status, parsed body)."""
    answers, lock = [], threading.Lock()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for _ in range(per_thread):
            conn.request("POST", "/v2/models/%s/infer" % model, payload,
                         {"Content-Type": "application/json"})
            r = conn.getresponse()
            mine.append((r.status, json.loads(r.read())))
        conn.close()
        with lock:
            answers.extend(mine)

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return answers


with tempfile.TemporaryDirectory() as tmp:
    repo = os.path.join(tmp, "repo")
    train_small_dsm(build, repo, "m")
    for name, config in CONFIGS.items():
        shutil.copytree(os.path.join(repo, "m"), os.path.join(repo, name))
        with open(os.path.join(repo, name, "config.pbtxt"), "w") as f:
            f.write(config)
    python_stubs(source, os.path.join(tmp, "stubs"), "inference/grpc_service.proto")
    import grpc
    from inference import grpc_service_pb2 as oip, grpc_service_pb2_grpc as oip_grpc

    # Every request goes to the two workers (none runs on the HTTP thread),
    # so a request holds its place while others arrive.
    server, (grpc_port,) = start_server(build, repo, "--http_port=0", "--workers=2",
                                        "--inline_max_flops=0")
    try:
        http_port = int(server.stdout.readline())
        stub = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel("127.0.0.1:%d" % grpc_port))
        rows = [((i * 37) % 200 - 100) / 100.0 for i in range(ROWS * D)]
        payload = body(rows)
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
        conn.request("POST", "/v2/models/m/infer", payload, {"Content-Type": "application/json"})
        reference = json.loads(conn.getresponse().read())["outputs"][0]["data"]

        results = {}
        threads = [threading.Thread(target=lambda m=m: results.__setitem__(m, flood(http_port, m, payload)))
                   for m in ("capped", "m")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        capped = results["capped"]
        ok = [b for s, b in capped if s == 200]
        refused = [b for s, b in capped if s == 429]
        check(len(ok) + len(refused) == len(capped),
              "capped: every answer is 200 or 429: %s" % sorted({s for s, _ in capped}))
        print("capped: %d served, %d refused" % (len(ok), len(refused)))
        check(len(refused) > 0, "capped: some of %d requests from 16 clients at once were over the "
              "limit of 1 in flight (got %d 429s)" % (len(capped), len(refused)))
        check(len(ok) > 0, "capped: some requests were served (%d)" % len(ok))
        check(all("model 'capped' has its limit of 1 requests in flight" in b.get("error", "")
                  for b in refused), "capped: a 429 names the model and its limit: %s"
              % (refused[:1],))
        check(all(b["outputs"][0]["data"] == reference for b in ok),
              "capped: every served answer equals the unlimited model's")
        check(all(s == 200 for s, _ in results["m"]),
              "m: the model without limits served every request beside the flood: %s"
              % sorted({s for s, _ in results["m"]}))

        delayed = flood(http_port, "delayed", payload)
        check(all(s == 200 and b["outputs"][0]["data"] == reference for s, b in delayed),
              "delayed: with DELAY every request waited for a place and was served: %s"
              % sorted({s for s, _ in delayed}))

        seldon = flood(http_port, "seldon", payload)
        check({s for s, _ in seldon} <= {200, 429} and any(s == 429 for s, _ in seldon),
              "seldon: a Triton-schema max_in_flight parameter limits as today's form does: %s"
              % sorted({s for s, _ in seldon}))

        # OIP gRPC: RESOURCE_EXHAUSTED, the code Triton clients back off on.
        request = oip.ModelInferRequest(model_name="capped")
        tensor = request.inputs.add(name="input", datatype="FP32", shape=[ROWS, D])
        tensor.contents.fp32_contents.extend(rows)
        futures = [stub.ModelInfer.future(request) for _ in range(200)]
        codes = []
        for f in futures:
            try:
                f.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())
        check(set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
              and grpc.StatusCode.RESOURCE_EXHAUSTED in codes and grpc.StatusCode.OK in codes,
              "OIP gRPC: 200 requests at once -> OK and RESOURCE_EXHAUSTED only: %s" % set(codes))

        config = stub.ModelConfig(oip.ModelConfigRequest(name="capped")).config
        check(config.instance_group[0].count == 1, "ModelConfig: instance_group count is instance_count (1)")
        check(config.parameters["max_in_flight"].string_value == "1"
              and config.parameters["over_limit"].string_value == "REJECT",
              "ModelConfig: the limits are reported as parameters: %s" % dict(
                  (k, v.string_value) for k, v in config.parameters.items()))
        delayed_config = stub.ModelConfig(oip.ModelConfigRequest(name="delayed")).config
        check(delayed_config.parameters["max_delay_us"].string_value == "10000000"
              and delayed_config.instance_group[0].count == 2,
              "ModelConfig: DELAY's bound, and every worker without instance_count")
    finally:
        code, err = stop(server)
    check(code == 0, "the server drains and exits 0 after the floods (exit %s)" % code)
finish()
