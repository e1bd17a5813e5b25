"""The Open Inference Protocol endpoint, through a client generated from
proto/inference/grpc_service.proto (names and field numbers of the public
specification) with Debian's grpc_tools.

A DSM with its dense twin is trained small; the test runs ServerLive,
ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer on the
model `m` and its twin `m.dense`, with inputs both as typed contents and as
raw_input_contents, and checks every answer against the native API
(sparse.v1) on the same server: the same outputs, bit for bit, and the same
FLOPs. Bad requests get INVALID_ARGUMENT / NOT_FOUND with a message naming
the protobuf fields, the model's input name, or the row limit and its flag.

Usage: oip_test.py <source dir> <build dir>
"""
import os
import struct
import subprocess
import sys
import tempfile

source, build = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(source, "tests", "testing"))
from harness import check, finish, python_stubs, stop, train_small_dsm  # noqa: E402

SERVER = os.path.join(build, "server", "sparse-server")

with tempfile.TemporaryDirectory() as tmp:
    repo = os.path.join(tmp, "repo")
    train_small_dsm(build, repo, "m")
    python_stubs(source, os.path.join(tmp, "stubs"), "inference/grpc_service.proto",
                 "sparse/v1/inference.proto")
    import grpc
    from inference import grpc_service_pb2 as oip, grpc_service_pb2_grpc as oip_grpc
    from sparse.v1 import inference_pb2 as native, inference_pb2_grpc as native_grpc

    server = subprocess.Popen([SERVER, "--model_repository=" + repo, "--address=127.0.0.1", "--port=0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        channel = grpc.insecure_channel("127.0.0.1:%d" % int(server.stdout.readline()))
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        ref = native_grpc.SparseInferenceStub(channel)

        check(stub.ServerLive(oip.ServerLiveRequest()).live, "ServerLive")
        check(stub.ServerReady(oip.ServerReadyRequest()).ready, "ServerReady")
        check(stub.ServerMetadata(oip.ServerMetadataRequest()).name == "sparse-serve", "ServerMetadata")
        for name, ready in (("m", True), ("m.dense", True), ("nope", False), ("nope.dense", False)):
            got = stub.ModelReady(oip.ModelReadyRequest(name=name)).ready
            check(got == ready, "ModelReady(%s) = %s, expected %s" % (name, got, ready))
        check(stub.ModelReady(oip.ModelReadyRequest(name="m", version="1")).ready, "ModelReady(m, 1)")
        check(not stub.ModelReady(oip.ModelReadyRequest(name="m", version="9")).ready, "ModelReady(m, 9)")

        rows = [[(i * 8 + j) / 40.0 - 0.8 for j in range(8)] for i in range(3)]
        flat = [v for row in rows for v in row]
        for name, dense in (("m", False), ("m.dense", True)):
            meta = stub.ModelMetadata(oip.ModelMetadataRequest(name=name))
            check(list(meta.versions) == ["1"] and meta.inputs[0].datatype == "FP32" and
                  list(meta.inputs[0].shape) == [-1, 8] and list(meta.outputs[0].shape) == [-1, 1],
                  "ModelMetadata(%s): %s" % (name, meta))
            want = (ref.PredictDense if dense else ref.Predict)(
                native.PredictRequest(model="m", rows=3, inputs=flat), timeout=10)
            typed = oip.ModelInferRequest(model_name=name, id="r1", inputs=[
                oip.ModelInferRequest.InferInputTensor(
                    name="input", datatype="FP32", shape=[3, 8],
                    contents=oip.InferTensorContents(fp32_contents=flat))])
            raw = oip.ModelInferRequest(model_name=name, model_version="1", inputs=[
                oip.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[3, 8])],
                raw_input_contents=[struct.pack("<%df" % len(flat), *flat)])
            for label, request in (("typed contents", typed), ("raw_input_contents", raw)):
                got = stub.ModelInfer(request, timeout=10)
                out = got.outputs[0]
                check(got.model_name == name and got.model_version == "1" and out.datatype == "FP32" and
                      list(out.shape) == [3, 1], "ModelInfer(%s, %s) header: %s" % (name, label, got))
                # Triton's way: the values in raw_output_contents (little-endian
                # FP32), none in typed contents.
                values = list(struct.unpack("<%df" % (len(got.raw_output_contents[0]) // 4),
                                            got.raw_output_contents[0])) if got.raw_output_contents else []
                check(len(got.raw_output_contents) == 1 and not out.HasField("contents"),
                      "ModelInfer(%s, %s) answers in raw_output_contents only: %s" % (name, label, got))
                check(values == list(want.outputs),
                      "ModelInfer(%s, %s) outputs equal the native API's: %s vs %s" % (
                          name, label, values, list(want.outputs)))
                check(got.parameters["flops"].int64_param == want.cost.flops and
                      got.parameters["dense_flops"].int64_param == want.cost.dense_flops and
                      "compute_ns" in got.parameters and "queue_ns" in got.parameters,
                      "ModelInfer(%s, %s) cost parameters: %s" % (name, label, dict(got.parameters)))
                # Major page faults: reported on every answer (0 while the
                # weights are in memory), as an int64_param.
                check("major_faults" in got.parameters and
                      got.parameters["major_faults"].WhichOneof("parameter_choice") == "int64_param" and
                      got.parameters["major_faults"].int64_param >= 0,
                      "ModelInfer(%s, %s) reports major_faults: %s" % (name, label, dict(got.parameters)))
            check(stub.ModelInfer(typed, timeout=10).id == "r1", "the request id comes back")

        def code_of(request):
            try:
                stub.ModelInfer(request, timeout=10)
                return None, ""
            except grpc.RpcError as e:
                return e.code(), e.details()

        def tensor(shape, values, datatype="FP32"):
            return oip.ModelInferRequest.InferInputTensor(
                name="input", datatype=datatype, shape=shape,
                contents=oip.InferTensorContents(fp32_contents=values))

        bad = [
            ("wrong width", oip.ModelInferRequest(model_name="m", inputs=[tensor([1, 7], [0.0] * 7)]),
             grpc.StatusCode.INVALID_ARGUMENT, "expected shape [rows, 8]"),
            ("too few values", oip.ModelInferRequest(model_name="m", inputs=[tensor([2, 8], [0.0] * 8)]),
             grpc.StatusCode.INVALID_ARGUMENT, "needs 16 values in inputs[0].contents.fp32_contents, got 8"),
            ("a wrong input name", oip.ModelInferRequest(model_name="m", inputs=[
                oip.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 8],
                                                       contents=oip.InferTensorContents(fp32_contents=[0.0] * 8))]),
             grpc.StatusCode.INVALID_ARGUMENT, "unknown input 'x': model 'm' has one input, 'input'"),
            ("1,025 rows", oip.ModelInferRequest(model_name="m", inputs=[tensor([1025, 8], [0.0] * 8200)]),
             grpc.StatusCode.INVALID_ARGUMENT,
             "batch of 1025 rows exceeds the limit of 1024 rows per request (sparse-server --max_batch_rows)"),
            ("FP64", oip.ModelInferRequest(model_name="m", inputs=[tensor([1, 8], [0.0] * 8, "FP64")]),
             grpc.StatusCode.INVALID_ARGUMENT, "FP32"),
            ("raw of the wrong size", oip.ModelInferRequest(model_name="m", inputs=[
                oip.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 8])],
                raw_input_contents=[b"\0" * 12]), grpc.StatusCode.INVALID_ARGUMENT, "expected 32 bytes"),
            ("NaN", oip.ModelInferRequest(model_name="m", inputs=[tensor([1, 8], [float("nan")] * 8)]),
             grpc.StatusCode.INVALID_ARGUMENT, ""),
            ("unknown model", oip.ModelInferRequest(model_name="nope", inputs=[tensor([1, 8], [0.0] * 8)]),
             grpc.StatusCode.NOT_FOUND, "nope"),
            ("bad version", oip.ModelInferRequest(model_name="m", model_version="abc",
                                                  inputs=[tensor([1, 8], [0.0] * 8)]),
             grpc.StatusCode.INVALID_ARGUMENT, "positive integer"),
            ("a shape whose size overflows", oip.ModelInferRequest(
                model_name="m", inputs=[tensor([2 ** 61, 8], [])]),
             grpc.StatusCode.INVALID_ARGUMENT, "rows"),
            ("two inputs", oip.ModelInferRequest(model_name="m", inputs=[tensor([1, 8], [0.0] * 8)] * 2),
             grpc.StatusCode.INVALID_ARGUMENT, "exactly 1 input"),
        ]
        for label, request, code, text in bad:
            got_code, details = code_of(request)
            check(got_code == code and text in details, "%s -> %s (%s), expected %s with '%s'" % (
                label, got_code, details, code, text))
        # The native API words the row limit as OIP does.
        try:
            ref.Predict(native.PredictRequest(model="m", rows=1025, inputs=[0.0] * 8200), timeout=10)
            native_error = (None, "")
        except grpc.RpcError as e:
            native_error = (e.code(), e.details())
        check(native_error[0] == grpc.StatusCode.INVALID_ARGUMENT and
              "exceeds the limit of 1024 rows per request (sparse-server --max_batch_rows)" in native_error[1],
              "native Predict of 1,025 rows -> %s %s" % native_error)
        check(stub.ServerLive(oip.ServerLiveRequest()).live, "the server still serves after bad requests")
    finally:
        code, log = stop(server)
    check(code == 0, "server stopped cleanly (exit %s): %s" % (code, log))

finish()
