"""sparse-server through a Triton client: the calls the Triton Python client
(tritonclient.grpc.InferenceServerClient) makes, in its order, with stubs
generated from Triton's own file layout (tests/triton/, declared from the
public grpc_service.proto and model_config.proto, apart from the server's
proto/inference/), and the tensors encoded and decoded as that client does:
InferInput.set_data_from_numpy puts the input in raw_input_contents, and
InferResult.as_numpy reads raw_output_contents[i] with the output's
datatype and shape.

  is_server_live, is_server_ready, get_server_metadata (extensions),
  is_model_ready, get_model_metadata, get_model_config,
  get_model_repository_index, infer (sparse and dense twin; outputs equal
  the native API's, bit for bit), get_inference_statistics (counts that
  follow the requests sent), load_model / unload_model (refused without
  --model_control, working with it), and a call the server does not serve
  (UNIMPLEMENTED).

Usage: triton_client_test.py <source dir> <build dir>
"""
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

source, build = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(source, "tests", "testing"))
from harness import check, finish, python_stubs, run, stop, train_small_dsm  # noqa: E402

SERVER = os.path.join(build, "server", "sparse-server")
# tritonclient.utils.triton_to_np_dtype, for the types this test meets.
NP_DTYPE = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64}


def triton_stubs(directory):
    """grpc_tools stubs of tests/triton/*.proto, imported as Triton's are
    (grpc_service_pb2 importing model_config_pb2 from the top level)."""
    os.makedirs(directory, exist_ok=True)
    protos = os.path.join(source, "tests", "triton")
    done = run([sys.executable, "-m", "grpc_tools.protoc", "-I", protos, "--python_out=" + directory,
                "--grpc_python_out=" + directory, os.path.join(protos, "model_config.proto"),
                os.path.join(protos, "grpc_service.proto")])
    if done.returncode != 0:
        sys.exit("grpc_tools.protoc failed: " + done.stderr)
    sys.path.insert(0, directory)


def as_numpy(response, name):
    """tritonclient.grpc.InferResult.as_numpy: the output's raw bytes, as its
    datatype, reshaped to its shape; None when the output is absent."""
    for index, output in enumerate(response.outputs):
        if output.name != name:
            continue
        shape = list(output.shape)
        if index < len(response.raw_output_contents):
            return np.frombuffer(response.raw_output_contents[index],
                                 dtype=NP_DTYPE[output.datatype]).reshape(shape)
        return np.array(output.contents.fp32_contents, dtype=np.float32).reshape(shape)
    return None


def start(repo, *flags):
    server = subprocess.Popen([SERVER, "--model_repository=" + repo, "--address=127.0.0.1", "--port=0"]
                              + list(flags), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    channel = grpc.insecure_channel("127.0.0.1:%d" % int(server.stdout.readline()))
    grpc.channel_ready_future(channel).result(timeout=10)
    return server, channel


def error_of(call, request):
    try:
        call(request, timeout=30)
        return None, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


with tempfile.TemporaryDirectory() as tmp:
    repo = os.path.join(tmp, "repo")
    train_small_dsm(build, repo, "m")
    with open(os.path.join(repo, "m", "config.pbtxt"), "w") as f:
        f.write("dynamic_batching { max_batch_rows: 32 max_queue_delay_us: 500 paths: SPARSE_ONLY }\n")
    # A model whose only version is corrupt: listed UNAVAILABLE with its reason.
    os.makedirs(os.path.join(repo, "broken", "1"))
    with open(os.path.join(repo, "broken", "1", "model.safetensors"), "wb") as f:
        f.write(b"not a checkpoint")

    python_stubs(source, os.path.join(tmp, "native"), "sparse/v1/inference.proto")
    triton_stubs(os.path.join(tmp, "triton"))
    import grpc
    import grpc_service_pb2 as pb
    import grpc_service_pb2_grpc as pb_grpc
    import model_config_pb2 as mc
    from sparse.v1 import inference_pb2 as native, inference_pb2_grpc as native_grpc

    # 1. The server as most users start it: no --model_control.
    server, channel = start(repo)
    try:
        triton = pb_grpc.GRPCInferenceServiceStub(channel)
        ref = native_grpc.SparseInferenceStub(channel)
        check(triton.ServerLive(pb.ServerLiveRequest()).live, "is_server_live")
        check(triton.ServerReady(pb.ServerReadyRequest()).ready, "is_server_ready")
        meta = triton.ServerMetadata(pb.ServerMetadataRequest())
        check(meta.name == "sparse-serve" and sorted(meta.extensions) ==
              ["binary_tensor_data", "model_configuration", "model_repository", "parameters",
               "statistics"],
              "get_server_metadata lists exactly the extensions served: %s" % meta)
        check(triton.ModelReady(pb.ModelReadyRequest(name="m", version="")).ready, "is_model_ready(m)")
        check(not triton.ModelReady(pb.ModelReadyRequest(name="broken")).ready, "is_model_ready(broken)")

        model_meta = triton.ModelMetadata(pb.ModelMetadataRequest(name="m"))
        check([(t.name, t.datatype, list(t.shape)) for t in model_meta.inputs] == [("input", "FP32", [-1, 8])]
              and [(t.name, t.datatype, list(t.shape)) for t in model_meta.outputs] ==
              [("output", "FP32", [-1, 1])], "get_model_metadata(m): %s" % model_meta)

        for name, batching in (("m", True), ("m.dense", False)):
            config = triton.ModelConfig(pb.ModelConfigRequest(name=name)).config
            check(config.name == name and config.backend == "sparse-serve" and config.max_batch_size > 0
                  and [(i.name, i.data_type, list(i.dims)) for i in config.input] ==
                  [("input", mc.TYPE_FP32, [8])]
                  and [(o.name, o.data_type, list(o.dims)) for o in config.output] ==
                  [("output", mc.TYPE_FP32, [1])], "get_model_config(%s) tensors: %s" % (name, config))
            check(config.version_policy.latest.num_versions == 1,
                  "get_model_config(%s): the default policy, latest 1: %s" % (name, config.version_policy))
            check(config.HasField("dynamic_batching") == batching and
                  (not batching or config.dynamic_batching.max_queue_delay_microseconds == 500),
                  "get_model_config(%s): dynamic batching from config.pbtxt: %s" % (name, config))
            check(len(config.instance_group) == 1 and
                  config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU and
                  config.instance_group[0].count >= 1, "get_model_config(%s): CPU instances" % name)
            check(int(config.parameters["flops_per_row"].string_value) > 0,
                  "get_model_config(%s): FLOPs per row: %s" % (name, dict(config.parameters)))

        index = triton.RepositoryIndex(pb.RepositoryIndexRequest()).models
        entries = {(e.name, e.version): (e.state, e.reason) for e in index}
        check(entries.get(("m", "1")) == ("READY", ""), "get_model_repository_index: m 1 READY: %s" % index)
        check(entries.get(("broken", "1"), ("", ""))[0] == "UNAVAILABLE" and entries[("broken", "1")][1],
              "get_model_repository_index: broken 1 UNAVAILABLE with a reason: %s" % index)
        ready = triton.RepositoryIndex(pb.RepositoryIndexRequest(ready=True)).models
        check([(e.name, e.version) for e in ready] == [("m", "1")], "ready index: %s" % ready)

        # infer, as tritonclient builds it: InferInput("input", [3, 8], "FP32")
        # with set_data_from_numpy, InferRequestedOutput("output").
        x = np.linspace(-0.8, 0.8, 24, dtype=np.float32).reshape(3, 8)
        sent = {"m": 0, "m.dense": 0}
        for name in ("m", "m.dense"):
            request = pb.ModelInferRequest(
                model_name=name, model_version="", id="7",
                inputs=[pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[3, 8])],
                outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="output")],
                raw_input_contents=[x.tobytes()])
            for _ in range(4):
                got = triton.ModelInfer(request, timeout=30)
                sent[name] += 1
            y = as_numpy(got, "output")
            want = (ref.PredictDense if name.endswith(".dense") else ref.Predict)(
                native.PredictRequest(model="m", rows=3, inputs=x.ravel().tolist()), timeout=30)
            sent[name] += 1  # the statistics count requests of every protocol
            check(y is not None and y.shape == (3, 1) and y.dtype == np.float32,
                  "as_numpy(%s) is a (3, 1) float32 array: %r" % (name, y))
            check(y is not None and y.ravel().tolist() == list(want.outputs),
                  "infer(%s) equals the native API: %r vs %r" % (name, y, list(want.outputs)))
            check(got.id == "7" and got.parameters["flops"].int64_param == want.cost.flops,
                  "infer(%s): id and FLOPs in parameters: %s" % (name, dict(got.parameters)))
        # Refused by the core's admission, so counted as a failure of m.
        bad = pb.ModelInferRequest(model_name="m", inputs=[
            pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 8])],
            raw_input_contents=[np.full(8, np.nan, np.float32).tobytes()])
        code, _ = error_of(triton.ModelInfer, bad)
        check(code == grpc.StatusCode.INVALID_ARGUMENT, "a NaN is INVALID_ARGUMENT: %s" % code)

        stats = triton.ModelStatistics(pb.ModelStatisticsRequest(name="", version="")).model_stats
        by_name = {(s.name, s.version): s for s in stats}
        check(sorted(by_name) == [("m", "1"), ("m.dense", "1")], "get_inference_statistics(): %s" % stats)
        for name in ("m", "m.dense"):
            s = by_name.get((name, "1"))
            if s is None:
                continue
            i = s.inference_stats
            check(i.success.count == sent[name] and s.inference_count == 3 * sent[name] and
                  s.execution_count >= 1 and s.last_inference > 0,
                  "statistics(%s) count the %d requests: %s" % (name, sent[name], s))
            check(i.fail.count == (1 if name == "m" else 0), "statistics(%s) count the failure: %s" % (name, i))
            check(i.success.ns >= i.queue.ns + i.compute_infer.ns > 0 and
                  i.compute_input.count == i.compute_infer.count == i.compute_output.count == sent[name],
                  "statistics(%s) durations: %s" % (name, i))
            check(sum(b.compute_infer.count for b in s.batch_stats) == s.execution_count and
                  all(b.batch_size >= 3 for b in s.batch_stats),
                  "statistics(%s) batches: %s" % (name, list(s.batch_stats)))
        one = triton.ModelStatistics(pb.ModelStatisticsRequest(name="m.dense", version="1")).model_stats
        check([(s.name, s.version) for s in one] == [("m.dense", "1")], "statistics(m.dense, 1): %s" % one)
        code, _ = error_of(triton.ModelStatistics, pb.ModelStatisticsRequest(name="nope"))
        check(code == grpc.StatusCode.NOT_FOUND, "statistics of an unknown model: %s" % code)

        for call, request in ((triton.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="m")),
                              (triton.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name="m"))):
            code, details = error_of(call, request)
            check(code == grpc.StatusCode.FAILED_PRECONDITION and "--model_control" in details,
                  "load/unload without --model_control is refused, saying why: %s %s" % (code, details))
        code, _ = error_of(triton.SystemSharedMemoryStatus, pb.SystemSharedMemoryStatusRequest())
        check(code == grpc.StatusCode.UNIMPLEMENTED, "shared memory is not served: %s" % code)
        check(triton.ModelReady(pb.ModelReadyRequest(name="m")).ready, "m still serves")
    finally:
        code, log = stop(server)
    check(code == 0, "server stopped cleanly (exit %s): %s" % (code, log))

    # 2. With --model_control: load_model and unload_model, as Triton's
    # explicit mode; a model copied in after the start is listed as unloaded
    # until loaded.
    server, channel = start(repo, "--model_control")
    try:
        triton = pb_grpc.GRPCInferenceServiceStub(channel)
        shutil.copytree(os.path.join(repo, "m"), os.path.join(repo, "m2"))
        entries = {(e.name, e.version): e.state
                   for e in triton.RepositoryIndex(pb.RepositoryIndexRequest()).models}
        check(entries.get(("m2", "")) == "UNAVAILABLE", "a model not loaded yet is listed: %s" % entries)
        triton.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="m2"), timeout=60)
        check(triton.ModelReady(pb.ModelReadyRequest(name="m2")).ready, "load_model(m2) makes it ready")
        request = pb.ModelInferRequest(model_name="m2", inputs=[
            pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 8])],
            raw_input_contents=[np.zeros(8, np.float32).tobytes()])
        check(as_numpy(triton.ModelInfer(request, timeout=30), "output").shape == (1, 1), "infer(m2)")
        code, details = error_of(triton.RepositoryModelLoad, pb.RepositoryModelLoadRequest(
            model_name="m2", parameters={"config": pb.ModelRepositoryParameter(string_param="{}")}))
        check(code == grpc.StatusCode.INVALID_ARGUMENT and "config" in details,
              "a config override at load is refused: %s %s" % (code, details))
        code, _ = error_of(triton.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="absent"))
        check(code == grpc.StatusCode.NOT_FOUND, "load_model of a model with no directory: %s" % code)
        triton.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="m2"), timeout=30)
        check(not triton.ModelReady(pb.ModelReadyRequest(name="m2")).ready, "unload_model(m2)")
        code, _ = error_of(triton.ModelInfer, request)
        check(code == grpc.StatusCode.NOT_FOUND, "infer after unload is NOT_FOUND: %s" % code)
        check(triton.ModelReady(pb.ModelReadyRequest(name="m")).ready, "m still serves")
    finally:
        code, log = stop(server)
    check(code == 0, "server stopped cleanly (exit %s): %s" % (code, log))

finish()
