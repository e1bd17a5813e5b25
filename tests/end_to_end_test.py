#!/usr/bin/python3
"""End to end, across processes and languages: sparse-train publishes the
demo's two models (with fewer training rows), sparse-server serves them,
and both a Python client generated from proto/ as shipped (Debian's grpcio
and grpc-tools) and sparse-cli call Predict and PredictDense.

    end_to_end_test.py SOURCE_DIR BUILD_DIR
"""
import csv as csvlib
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from xml.etree import ElementTree

source, build = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(source, "tests", "testing"))
from harness import check, finish, python_stubs, run, stop  # noqa: E402
TRAIN = os.path.join(build, "trainer", "sparse-train")
SERVER = os.path.join(build, "server", "sparse-server")
CLI = os.path.join(build, "client", "sparse-cli")


def f32(values):
    """Round to float32: the JSON printer and the Python stubs show the same
    float32 values with different numbers of digits."""
    return [struct.unpack("<f", struct.pack("<f", v))[0] for v in values]


with tempfile.TemporaryDirectory() as tmp:
    repo = os.path.join(tmp, "repo")
    # The demo's models (deploy/demo.sh), trained on fewer rows to stay quick.
    for args in (["--model=lsh_table", "--tables=8", "--hashes=11", "--model_name=poly_lsh"],
                 ["--dataset=manifold", "--d=512", "--manifold_dim=8", "--router=lsh", "--experts=64",
                  "--active_units=64", "--dense_width=4096", "--model_name=poly_dsm"]):
        done = run([TRAIN, "--quiet", "--train_rows=8192", "--test_rows=1024",
                    "--repository=" + repo] + args)
        if done.returncode != 0:
            sys.exit("sparse-train failed: " + done.stdout + done.stderr)

    python_stubs(source, os.path.join(tmp, "stubs"), "sparse/v1/inference.proto")
    import grpc
    from sparse.v1 import inference_pb2, inference_pb2_grpc

    server = subprocess.Popen([SERVER, "--model_repository=" + repo, "--address=127.0.0.1", "--port=0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        target = "127.0.0.1:%d" % port
        channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = inference_pb2_grpc.SparseInferenceStub(channel)

        models = {m.name: m for m in stub.ListModels(inference_pb2.ListModelsRequest()).models}
        check(sorted(models) == ["poly_dsm", "poly_lsh"], "ListModels lists both models: %s" % sorted(models))

        for name, d in (("poly_lsh", 8), ("poly_dsm", 512)):
            version = models[name].versions[-1]
            check(version.input_dim == d, "%s input_dim %d" % (name, version.input_dim))
            rows = 3
            x = [((i * 37) % 101) / 50.0 - 1.0 for i in range(rows * d)]
            request = inference_pb2.PredictRequest(model=name, rows=rows, inputs=x, return_route=True)
            sparse = stub.Predict(request, timeout=10)
            dense = stub.PredictDense(request, timeout=10)
            for label, r, per_row in (("Predict", sparse, version.flops_per_row),
                                      ("PredictDense", dense, version.dense_flops_per_row)):
                check(len(r.outputs) == rows * r.output_dim and all(math.isfinite(v) for v in r.outputs),
                      "%s %s returns rows x o finite outputs" % (name, label))
                check(r.cost.flops == rows * per_row,
                      "%s %s cost.flops %d == rows x flops_per_row %d" % (name, label, r.cost.flops, rows * per_row))
                check(r.cost.compute_ns > 0 and r.cost.total_ns >= r.cost.compute_ns,
                      "%s %s reports compute and total time" % (name, label))
                # Cost field 11: the major page faults the compute took (0
                # while the weights are in memory, never negative).
                check(inference_pb2.Cost.DESCRIPTOR.fields_by_name["major_faults"].number == 11 and
                      r.cost.major_faults >= 0,
                      "%s %s reports cost.major_faults: %d" % (name, label, r.cost.major_faults))
            check(sparse.cost.dense_flops == dense.cost.flops, "%s dense_flops matches PredictDense" % name)
            # Bytes: FP32 by default; one row reads what GetModel says a row reads.
            check(version.precision == "FP32" and version.resident_bytes > 0,
                  "%s GetModel: precision %s, resident %d bytes" % (name, version.precision, version.resident_bytes))
            one = inference_pb2.PredictRequest(model=name, rows=1, inputs=x[:d])
            for label, call, per_row in (("Predict", stub.Predict, version.weight_bytes_per_row),
                                         ("PredictDense", stub.PredictDense, version.dense_weight_bytes_per_row)):
                got = call(one, timeout=10).cost.weight_bytes
                check(got == per_row > 0, "%s %s one row reads weight_bytes_per_row: %d vs %d" % (name, label, got, per_row))
            # The same rows through the C++ client give the same outputs.
            cli = run([CLI, "--target=" + target, "predict", "--model=" + name, "--both", "--json",
                       "--inputs=" + ";".join(",".join(repr(v) for v in x[r * d:(r + 1) * d]) for r in range(rows))])
            check(cli.returncode == 0, "sparse-cli predict --both: " + cli.stderr)
            if cli.returncode == 0:
                both = json.loads(cli.stdout)
                check(f32(both["sparse"]["outputs"]) == f32(sparse.outputs), "%s: Python and C++ clients agree (sparse)" % name)
                check(f32(both["dense"]["outputs"]) == f32(dense.outputs), "%s: Python and C++ clients agree (dense)" % name)
            if name == "poly_dsm":
                ratio = dense.cost.flops / sparse.cost.flops
                check(ratio >= 30, "demo DSM: PredictDense does >= 30x the FLOPs of Predict (got %.1fx)" % ratio)
                check(len(sparse.route.expert_ids) == rows, "route has one expert per row")

        # Errors reach Python as gRPC codes with messages.
        try:
            stub.Predict(inference_pb2.PredictRequest(model="poly_dsm", rows=1, inputs=[0.0] * 7), timeout=10)
            check(False, "wrong width must fail")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.INVALID_ARGUMENT and "expected rows x d = 1 x 512" in e.details(),
                  "wrong width -> INVALID_ARGUMENT with expected size: %s %s" % (e.code(), e.details()))
        try:
            stub.Predict(inference_pb2.PredictRequest(model="nope", rows=1, inputs=[0.0]), timeout=10)
            check(False, "unknown model must fail")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.NOT_FOUND, "unknown model -> NOT_FOUND")

        # sparse-cli's other commands.
        models_out = run([CLI, "--target=" + target, "models"])
        check(models_out.returncode == 0 and "poly_dsm" in models_out.stdout and "poly_lsh" in models_out.stdout,
              "sparse-cli models lists both: " + models_out.stdout + models_out.stderr)
        check("mapped" not in models_out.stdout, "no mapped line for weights copied in: " + models_out.stdout)
        health = run([CLI, "--target=" + target, "health"])
        check(health.returncode == 0 and "SERVING" in health.stdout, "sparse-cli health: " + health.stdout)
        missing = run([CLI, "--target=" + target, "health", "--model=nope"])
        check(missing.returncode == 1 and "NOT_FOUND" in missing.stderr, "health of unknown model fails: " + missing.stderr)
        csv = run([CLI, "--target=" + target, "predict", "--model=poly_lsh", "--csv=-"],
                  input="x1,x2,x3,x4,x5,x6,x7,x8\n" + ",".join(["0.5"] * 8) + "\n")
        check(csv.returncode == 0 and "FLOPs" in csv.stdout, "predict from CSV on stdin: " + csv.stdout + csv.stderr)
        bad = run([CLI, "--target=" + target, "predict", "--model=poly_lsh", "--inputs=1,2,3"])
        check(bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "expected" in bad.stderr,
              "bad width via sparse-cli: " + bad.stderr)
        # sparse-cli bench: a two-level sweep over both endpoints, written as
        # JSON, CSV and an SVG plot.
        csv_path, svg_path = os.path.join(tmp, "bench.csv"), os.path.join(tmp, "bench.svg")
        bench = run([CLI, "--target=" + target, "bench", "--model=poly_dsm", "--concurrency=1,4",
                     "--warmup_seconds=0.1", "--window_seconds=0.2", "--stable_windows=2",
                     "--max_windows=3", "--json", "--quiet", "--csv=" + csv_path, "--plot=" + svg_path])
        check(bench.returncode == 0, "sparse-cli bench: " + bench.stderr)
        if bench.returncode == 0:
            results = json.loads(bench.stdout)["results"]
            check([(r["path"], r["concurrency"]) for r in results] ==
                  [("sparse", 1), ("dense", 1), ("sparse", 4), ("dense", 4)],
                  "bench alternates paths at each level: %s" % [(r["path"], r.get("concurrency")) for r in results])
            for r in results:
                check(r["requests"] > 0 and r["errors"] == 0 and r["throughput_rps"] > 0 and
                      r["p50_us"] <= r["p99_us"] <= r["p999_us"] and
                      r["server_cpu_us_per_request"] > 0 and r["client_cpu_us_per_request"] > 0,
                      "bench figures are consistent: %s" % r)
            sparse = [r for r in results if r["path"] == "sparse"][0]
            dense = [r for r in results if r["path"] == "dense"][0]
            check(sparse["flops_per_request"] == 71808 and dense["flops_per_request"] == 4202496,
                  "bench reports the engine's FLOPs: %d %d" % (sparse["flops_per_request"], dense["flops_per_request"]))
            check(all(r.get("major_faults_per_request", -1) >= 0 for r in results),
                  "bench reports major faults per request: %s" % [r.get("major_faults_per_request") for r in results])
            rows = list(csvlib.DictReader(open(csv_path)))
            check(len(rows) == 4 and rows[0]["path"] == "sparse" and float(rows[0]["throughput_rps"]) > 0,
                  "bench --csv: %s" % rows[:1])
            check(all(float(r.get("major_faults_per_request") or -1) >= 0 for r in rows),
                  "bench --csv has major_faults_per_request: %s" % rows[:1])
            svg = ElementTree.parse(svg_path).getroot()
            lines = svg.findall("{http://www.w3.org/2000/svg}polyline")
            check(len(lines) == 4 and all(len(l.get("points").split()) == 2 for l in lines),
                  "bench --plot: 4 series (p50/p99 of sparse and dense) of 2 points each")
        # The table: faults/req next to FLOPs/req and bytes/req.
        table = run([CLI, "--target=" + target, "bench", "--model=poly_lsh", "--concurrency=1",
                     "--warmup_seconds=0", "--window_seconds=0.2", "--stable_windows=1",
                     "--max_windows=1", "--quiet"])
        header = [l.split() for l in table.stdout.splitlines() if "FLOPs/req" in l]
        check(table.returncode == 0 and len(header) == 1 and
              header[0][header[0].index("FLOPs/req"):header[0].index("FLOPs/req") + 3] ==
              ["FLOPs/req", "bytes/req", "faults/req"],
              "bench table has faults/req after FLOPs/req and bytes/req: " + table.stdout + table.stderr)
        unwritable = run([CLI, "--target=" + target, "bench", "--model=poly_dsm",
                          "--plot=" + os.path.join(tmp, "no", "such", "dir.svg")])
        check(unwritable.returncode == 2 and "cannot write" in unwritable.stderr,
              "bench refuses an unwritable --plot before measuring: " + unwritable.stderr)
        remote = run([CLI, "--target=10.1.2.3:8500", "bench", "--model=poly_dsm"])
        check(remote.returncode == 2 and "--allow_remote" in remote.stderr,
              "bench refuses a remote target unless --allow_remote: " + remote.stderr)
        open_loop = run([CLI, "--target=" + target, "bench", "--model=poly_lsh", "--mode=open",
                         "--rate=200", "--arrival=poisson", "--paths=sparse", "--warmup_seconds=0",
                         "--window_seconds=0.3", "--stable_windows=2", "--max_windows=2", "--json", "--quiet"])
        check(open_loop.returncode == 0 and json.loads(open_loop.stdout)["results"][0]["rate_rps"] == 200,
              "bench open loop: " + open_loop.stdout + open_loop.stderr)
        down = run([CLI, "--target=127.0.0.1:1", "--timeout_ms=2000", "models"])
        check(down.returncode == 1 and "UNAVAILABLE" in down.stderr, "unreachable server: " + down.stderr)
    finally:
        code, log = stop(server)
    check(code == 0 and "stopped" in log, "SIGTERM stops the server cleanly (exit %s): %s" % (code, log))

    # The same repository served from weight cache files (--weight_cache_dir):
    # GetModel says what is mapped, from which file, how it is verified and
    # how much of it is in memory (per expert of the routed DSM), and
    # sparse-cli models shows it under the version's row.
    cache = os.path.join(tmp, "cache")
    server = subprocess.Popen([SERVER, "--model_repository=" + repo, "--address=127.0.0.1", "--port=0",
                               "--weight_cache_dir=" + cache], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        target = "127.0.0.1:%d" % int(server.stdout.readline())
        stub = inference_pb2_grpc.SparseInferenceStub(grpc.insecure_channel(target))
        fields = inference_pb2.VersionStatus.DESCRIPTOR.fields_by_name
        check([fields[n].number for n in ("mapped_bytes", "mapped_resident_bytes", "weight_cache_file",
                                          "weight_verify", "experts", "expert_bytes", "expert_resident_bytes")]
              == list(range(20, 27)), "VersionStatus's mapping fields are 20 to 26")
        dsm = stub.GetModel(inference_pb2.GetModelRequest(model="poly_dsm"), timeout=10).versions[-1]
        check(dsm.mapped_bytes > 0 and 0 < dsm.mapped_resident_bytes <= dsm.mapped_bytes,
              "poly_dsm mapped: %d bytes, %d in memory" % (dsm.mapped_bytes, dsm.mapped_resident_bytes))
        check(dsm.weight_cache_file.startswith("poly_dsm/") and not dsm.weight_cache_file.startswith(cache) and
              os.path.isfile(os.path.join(cache, dsm.weight_cache_file)) and
              dsm.weight_verify == "load", "poly_dsm's file %r, verify %r" % (dsm.weight_cache_file, dsm.weight_verify))
        check(dsm.experts == 64 and len(dsm.expert_resident_bytes) == 64 and dsm.expert_bytes > 0 and
              all(0 <= b <= dsm.expert_bytes for b in dsm.expert_resident_bytes),
              "poly_dsm: residency of its 64 expert slices of %d bytes: %s" % (dsm.expert_bytes,
                                                                              list(dsm.expert_resident_bytes)[:8]))
        lsh = stub.GetModel(inference_pb2.GetModelRequest(model="poly_lsh"), timeout=10).versions[-1]
        check(lsh.mapped_bytes > 0 and lsh.weight_cache_file.startswith("poly_lsh/") and
              os.path.isfile(os.path.join(cache, lsh.weight_cache_file)) and not lsh.expert_resident_bytes,
              "poly_lsh's bucket tables are mapped, with no experts to list: mapped %d, file %r, experts %s" %
              (lsh.mapped_bytes, lsh.weight_cache_file, list(lsh.expert_resident_bytes)[:4]))
        models_out = run([CLI, "--target=" + target, "models"])
        lines_out = models_out.stdout.splitlines()
        # Each mapped version's line follows its row: poly_dsm's names its
        # expert slices, poly_lsh's (bucket tables) has none to name.
        mapped_after = {lines_out[i - 1].split()[0]: lines_out[i] for i in range(1, len(lines_out))
                        if " mapped, " in lines_out[i] and lines_out[i - 1].split()}
        percent = round(100 * dsm.mapped_resident_bytes / dsm.mapped_bytes)
        dsm_line, lsh_line = mapped_after.get("poly_dsm", ""), mapped_after.get("poly_lsh", "")
        check(models_out.returncode == 0 and sorted(mapped_after) == ["poly_dsm", "poly_lsh"] and
              "% in memory" in dsm_line and "expert slices wholly in memory" in dsm_line and
              "weight_verify=load" in dsm_line and "% in memory" in lsh_line and "expert" not in lsh_line,
              "sparse-cli models shows a mapping line under poly_dsm and poly_lsh: " +
              models_out.stdout + models_out.stderr)
        check(abs(int(dsm_line.split("% in memory")[0].split()[-1]) - percent) <= 1 if dsm_line else False,
              "sparse-cli's percentage agrees with GetModel's %d%%: %s" % (percent, dsm_line))
    finally:
        code, log = stop(server)
    check(code == 0, "the server on weight cache files stops cleanly (exit %s): %s" % (code, log))

    # Triton's schema (as Seldon Core 2 writes config.pbtxt) and KServe's
    # layout (/mnt/models holding one version, named by --model_name): the
    # same version of poly_lsh answers exactly as it does from a plain
    # repository without a config.pbtxt.
    lsh_dir = os.path.join(repo, "poly_lsh")
    lsh_version = max(int(v) for v in os.listdir(lsh_dir) if v.isdigit())
    lsh_files = os.path.join(lsh_dir, str(lsh_version))
    triton_repo = os.path.join(tmp, "triton_repo")
    for name in ("plain", "mymodel", "gpu"):
        shutil.copytree(lsh_files, os.path.join(triton_repo, name, "1"))
    # The dims are the model's own, as ListModels said above.
    lsh_status = models["poly_lsh"].versions[-1]
    example = ('name: "mymodel"\nmax_batch_size: 64\n'
               'input [ { name: "input" data_type: TYPE_FP32 dims: [ %d ] } ]\n'
               'output [ { name: "output" data_type: TYPE_FP32 dims: [ %d ] } ]\n'
               'dynamic_batching { max_queue_delay_microseconds: 200 }\n'
               'instance_group [ { count: 1 kind: KIND_CPU } ]\n'
               'version_policy: { latest: { num_versions: 1 } }\n')
    with open(os.path.join(triton_repo, "mymodel", "config.pbtxt"), "w") as f:
        f.write(example % (lsh_status.input_dim, lsh_status.output_dim))
    with open(os.path.join(triton_repo, "gpu", "config.pbtxt"), "w") as f:
        f.write('name: "gpu"\ninstance_group [ { count: 1 kind: KIND_GPU } ]\n')
    kserve = os.path.join(tmp, "mnt_models")
    shutil.copytree(lsh_files, kserve)  # one version's files, directly
    answers = {}
    for label, flags in (("triton", ["--model_repository=" + triton_repo]),
                         ("kserve", ["--model_repository=" + kserve, "--model_name=m"])):
        server = subprocess.Popen([SERVER, "--address=127.0.0.1", "--port=0"] + flags,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            stub = inference_pb2_grpc.SparseInferenceStub(
                grpc.insecure_channel("127.0.0.1:%d" % int(server.stdout.readline())))
            d = lsh_status.input_dim
            x = [((i * 37) % 101) / 50.0 - 1.0 for i in range(3 * d)]
            names = ("plain", "mymodel") if label == "triton" else ("m",)
            for name in names:
                status = stub.GetModel(inference_pb2.GetModelRequest(model=name), timeout=10)
                check(status.config_error == "" and [v.version for v in status.versions] == [1],
                      "%s: %s serves version 1 with no config error: %r" % (label, name, status.config_error))
                request = inference_pb2.PredictRequest(model=name, rows=3, inputs=x)
                answers[name] = (list(stub.Predict(request, timeout=10).outputs),
                                 list(stub.PredictDense(request, timeout=10).outputs))
            if label == "triton":
                gpu = stub.GetModel(inference_pb2.GetModelRequest(model="gpu"), timeout=10)
                check("instance_group.kind must be KIND_CPU" in gpu.config_error and "KIND_GPU" in gpu.config_error,
                      "KIND_GPU is refused by name: %r" % gpu.config_error)
        finally:
            code, log = stop(server)
        check(code == 0, "the %s server stops cleanly (exit %s): %s" % (label, code, log))
        if label == "triton":
            check("instance_group.kind must be KIND_CPU" in log, "the refusal is logged: " + log)
    check(answers.get("mymodel") == answers.get("plain") and answers.get("m") == answers.get("plain") and
          answers.get("plain") is not None,
          "Triton's schema and KServe's layout serve the same answers as the plain repository")

finish()
