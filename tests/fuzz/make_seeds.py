"""Writes the fuzz targets' seed corpora (tests/fuzz/corpus/, checked in).

Checkpoint seeds are real versions trained by sparse-train (small shapes, so
each file stays under the fuzzers' 64 KiB input limit): an LSH table, DSMs
with each router kind, with and without a dense twin, packed as
checkpoint_fuzz reads them. Request seeds are valid and invalid
PredictRequest and ModelInferRequest messages for request_fuzz's models.
Config seeds cover each config.pbtxt field. HTTP seeds are what one REST
client sends on one connection (http_fuzz). Weight cache seeds are valid
cache files of small DSMs at each precision, written by LoadCheckpoint in
the C++ helper weight_cache_seeds, built with the fuzzers in the ASan build
(weight_cache_fuzz).

Usage: /usr/bin/python3 tests/fuzz/make_seeds.py <build dir> [<ASan build dir, default build-asan>]
"""
import gzip
import hashlib
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile

source = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
build = sys.argv[1]
asan_build = sys.argv[2] if len(sys.argv) > 2 else os.path.join(source, "build-asan")
corpus = os.path.join(source, "tests", "fuzz", "corpus")
sys.path.insert(0, os.path.join(source, "tests", "testing"))
from harness import python_stubs  # noqa: E402

SEP = b"\n--8<--\n"


def write(target, name, data):
    os.makedirs(os.path.join(corpus, target), exist_ok=True)
    path = os.path.join(corpus, target, name)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


with tempfile.TemporaryDirectory() as tmp:
    # Checkpoints.
    train = os.path.join(build, "trainer", "sparse-train")
    common = ["--quiet", "--train_rows=512", "--test_rows=64", "--d=4", "--repository=" + tmp]
    runs = {
        "lsh": ["--model=lsh_table", "--tables=2", "--hashes=4"],
        "dsm_lsh": ["--router=lsh", "--experts=4", "--active_units=4", "--dense_width=16"],
        "dsm_hash": ["--router=hash", "--experts=4", "--active_units=4", "--dense_width=0"],
        "dsm_kmeans": ["--router=kmeans", "--experts=4", "--active_units=4", "--dense_width=16"],
        "dsm_topk": ["--router=topk", "--active_units=4", "--dense_width=16"],
    }
    for name, flags in runs.items():
        done = subprocess.run([train] + common + flags + ["--model_name=" + name], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit("sparse-train %s failed: %s" % (name, done.stderr))
        version = os.path.join(tmp, name, "1")
        files = {f: open(os.path.join(version, f), "rb").read() for f in os.listdir(version)}
        model, dense = files["model.safetensors"], files.get("dense.safetensors")
        parts = [model] + ([dense] if dense is not None else [])
        # Mode 0: checkpoint_fuzz writes a correct manifest itself.
        size = write("checkpoint_fuzz", name, b"\x00" + SEP.join(parts))
        # Mode 1: the manifest as written by sparse-train.
        write("checkpoint_fuzz", name + "_manifest", b"\x01" + SEP.join(
            [model, dense if dense is not None else b"", files["manifest.json"]]))
        if size > 65536:
            sys.exit("seed %s is %d bytes, over the fuzzers' 64 KiB" % (name, size))

    # config.pbtxt.
    configs = {
        "empty": b"",
        "latest": b"version_policy { latest { num_versions: 2 } }\n",
        "all": b"version_policy { all {} }\n",
        "specific": b"version_policy { specific { versions: [1, 3] } }\n",
        "batching": b"dynamic_batching { max_batch_rows: 32 max_queue_delay_us: 5000 max_queue_size: 64 paths: DENSE_ONLY }\n",
        "both": b"version_policy { latest { num_versions: 1 } }\ndynamic_batching { max_batch_rows: 8 }\n",
        "bad": b"version_policy { latest { num_versions: 0 } }\n",
        "limits": (b"instance_count: 1\nlimits { max_in_flight: 64 over_limit: DELAY max_delay_us: 20000 "
                   b"worker_weight: 3 }\n"),
        # Triton's schema (as Seldon Core 2 writes it): accepted, and refused fields.
        "triton": (b'name: "mymodel"\nmax_batch_size: 64\n'
                   b'input [ { name: "input" data_type: TYPE_FP32 dims: [ 96 ] } ]\n'
                   b'output [ { name: "output" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
                   b'dynamic_batching { preferred_batch_size: [ 32 ] max_queue_delay_microseconds: 200 '
                   b'priority_levels: 2 default_priority_level: 1 }\n'
                   b'instance_group [ { count: 1 kind: KIND_CPU } ]\n'
                   b'version_policy: { latest: { num_versions: 1 } }\n'
                   b'parameters { key: "precision" value { string_value: "INT8" } }\n'
                   b'parameters { key: "paths" value { string_value: "DENSE_ONLY" } }\n'
                   b'parameters { key: "max_in_flight" value { string_value: "16" } }\n'
                   b'parameters { key: "over_limit" value { string_value: "DELAY" } }\n'
                   b'parameters { key: "max_delay_us" value { string_value: "5000" } }\n'
                   b'parameters { key: "worker_weight" value { string_value: "2" } }\n'),
        "triton_refused": (b'name: "m"\nmax_batch_size: 8\n'
                           b'instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0 ] } ]\n'
                           b'sequence_batching { max_sequence_idle_microseconds: 5 }\n'
                           b'model_warmup [ { name: "w" batch_size: 1 } ]\n'),
    }
    for name, text in configs.items():
        write("model_config_fuzz", name, text)

    # Requests for request_fuzz's models: lsh (d=4, o=2) and dsm (d=4, o=1).
    python_stubs(source, os.path.join(tmp, "stubs"), "sparse/v1/inference.proto",
                 "inference/grpc_service.proto", "sparse/v1/shard.proto")
    from sparse.v1 import inference_pb2 as pb
    from inference import grpc_service_pb2 as oip
    x = [0.25, -0.5, 0.75, 0.1]
    requests = {
        "lsh_one": (0, pb.PredictRequest(model="lsh", rows=1, inputs=x, return_route=True)),
        "dsm_two": (0, pb.PredictRequest(model="dsm", rows=2, inputs=x + x, return_route=True)),
        "dsm_dense": (2, pb.PredictRequest(model="dsm", rows=1, inputs=x)),
        "wrong_width": (0, pb.PredictRequest(model="dsm", rows=1, inputs=x[:3])),
        "version": (0, pb.PredictRequest(model="lsh", version=1, rows=1, inputs=x)),
    }
    for name, (mode, message) in requests.items():
        write("request_fuzz", name, bytes([mode]) + message.SerializeToString())

    def infer(model, rows, raw=False, shape=None):
        r = oip.ModelInferRequest(model_name=model, id="seed")
        t = r.inputs.add(name="input", datatype="FP32", shape=shape or [rows, 4])
        values = x * rows
        if raw:
            r.raw_input_contents.append(struct.pack("<%df" % len(values), *values))
        else:
            t.contents.fp32_contents.extend(values)
        return r
    oips = {
        "oip_lsh": infer("lsh", 1),
        "oip_dsm_raw": infer("dsm", 2, raw=True),
        "oip_dense": infer("dsm.dense", 1),
        "oip_one_dim": infer("lsh", 1, shape=[4]),
    }
    for name, message in oips.items():
        write("request_fuzz", name, b"\x01" + message.SerializeToString())

    # request_fuzz's batched mode (first byte with bit 2 set): several
    # requests, each with its own first byte, queued together so they run as
    # dynamic batches; good ones beside a NaN, an overflow and a bad shape.
    big = [3e38, 3e38, -3e38, 3e38]
    batches = {
        "batch_good": [(0, pb.PredictRequest(model="dsm", rows=1, inputs=x)),
                       (0, pb.PredictRequest(model="dsm", rows=2, inputs=x + x)),
                       (2, pb.PredictRequest(model="dsm", rows=1, inputs=x)),
                       (1, infer("dsm", 1))],
        "batch_mixed": [(0, pb.PredictRequest(model="dsm", rows=2, inputs=x + x)),
                        (0, pb.PredictRequest(model="dsm", rows=2, inputs=x + big)),
                        (0, pb.PredictRequest(model="dsm", rows=1, inputs=[float("nan")] + x[1:])),
                        (0, pb.PredictRequest(model="dsm", rows=1, inputs=x[:3])),
                        (0, pb.PredictRequest(model="dsm", rows=1, inputs=x))],
        "batch_lsh": [(0, pb.PredictRequest(model="lsh", rows=1, inputs=x, return_route=True)),
                      (0, pb.PredictRequest(model="lsh", rows=1, inputs=big)),
                      (2, pb.PredictRequest(model="lsh", rows=3, inputs=x * 3)),
                      (2, pb.PredictRequest(model="lsh", rows=1, inputs=big))],
    }
    for name, parts in batches.items():
        write("request_fuzz", name,
              b"\x04" + SEP.join(bytes([mode]) + m.SerializeToString() for mode, m in parts))

    # shard_request_fuzz: a front's calls to shard 0 of 2 of the same models
    # (first byte odd: aimed at this shard's version; even: as sent).
    from sparse.v1 import shard_pb2 as shard
    partials = {
        "dsm_owned": (1, shard.PartialRequest(model="dsm", rows=1, inputs=x, experts_per_row=1,
                                              expert_ids=[0])),
        "dsm_elsewhere": (1, shard.PartialRequest(model="dsm", rows=2, inputs=x + x,
                                                  experts_per_row=1, expert_ids=[0, 3])),
        "lsh_keys": (1, shard.PartialRequest(model="lsh", rows=1, inputs=x, keys_per_row=1,
                                             bucket_keys=[5])),
        "keepalive": (1, shard.PartialRequest(model="dsm")),
        "wrong_shard": (0, shard.PartialRequest(model="dsm", version=1, shard_index=1,
                                                shard_count=2, rows=1, inputs=x,
                                                experts_per_row=1, expert_ids=[0])),
        "no_route": (1, shard.PartialRequest(model="dsm", rows=1, inputs=x)),
        # The front's 128-row chunks of its batch (PartialRequest.chunk_rows).
        "dsm_chunks": (1, shard.PartialRequest(model="dsm", rows=2, inputs=x + x, experts_per_row=1,
                                               expert_ids=[0, 1], chunk_rows=[1, 1])),
        "dsm_chunks_short": (1, shard.PartialRequest(model="dsm", rows=2, inputs=x + x, experts_per_row=1,
                                                     expert_ids=[0, 1], chunk_rows=[1])),
    }
    for name, (mode, message) in partials.items():
        write("shard_request_fuzz", name, bytes([mode]) + message.SerializeToString())

# http_fuzz: what one client sends on one REST connection, for its models
# (dsm and lsh, d = 4).
J = b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'


def post(path, body, extra=b""):
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(body)).encode() +
            b"\r\n" + extra + b"\r\n" + body)


BIN_JSON = (b'{"inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","parameters":{"binary_data_size":32}}],'
            b'"outputs":[{"name":"output","parameters":{"binary_data":true}}]}')
http_seeds = {
    "get_ready": b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n",
    "get_metadata_pipelined": b"".join(
        b"GET " + p + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        for p in (b"/v2", b"/v2/models/dsm", b"/v2/models/lsh/versions/1/config", b"/v2/models/stats")),
    "head_then_get": (b"HEAD /v2 HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /v2/models/dsm/ready HTTP/1.1\r\nHost: x\r\n\r\n"),
    "infer_json_dsm": post(b"/v2/models/dsm/infer", J),
    "infer_json_lsh_dense": post(b"/v2/models/lsh.dense/infer", J),
    "infer_binary": post(b"/v2/models/dsm/infer", BIN_JSON + struct.pack("<8f", *range(8)),
                         b"Inference-Header-Content-Length: " + str(len(BIN_JSON)).encode() + b"\r\n"),
    "infer_params": post(b"/v2/models/dsm/infer",
                         b'{"id":"a","parameters":{"sequence_id":0,"priority":1,"binary_data_output":false},'
                         b'"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[[1,2,3,4]]}],'
                         b'"outputs":[{"name":"output","parameters":{"classification":0}}]}'),
    "chunked_ext_trailer": (b"POST /v2/models/dsm/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
                            b"%x;a=b\r\n" % len(J) + J + b"\r\n0;last\r\nX-Trailer: v\r\n\r\n"),
    "expect_continue": post(b"/v2/models/lsh/infer", J, b"Expect: 100-continue\r\n"),
    "index_load": post(b"/v2/repository/index", b'{"ready":true}') +
                  post(b"/v2/repository/models/dsm/load", b'{"parameters":{"a":1}}'),
    "bad_utf8_path": b"GET /v2/models/%FF/ready HTTP/1.1\r\nHost: x\r\n\r\n",
    "http10_close": b"GET /v2/health/live HTTP/1.0\r\n\r\n",
    "absolute_form": b"GET http://h:1/v2/models/dsm HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
}
for name, data in http_seeds.items():
    write("http_fuzz", name, data)

import numpy  # noqa: E402  (Debian's python3-numpy)

# dataset_fuzz: sparse-train's data files. First byte even: a CSV (bits 1-2
# outputs - 1, bits 3-4 the separator: sniffed, ',', ';', tab); low bits
# 01: two .npy files, 11: IDX images and labels (bits 2-5 the classes, 0 =
# from the labels); the first file's length in the next two bytes.


def npy(array):
    buffer = io.BytesIO()
    numpy.save(buffer, array)
    return buffer.getvalue()


def npy_pair(x, y):
    a, b = npy(x), npy(y)
    return bytes([1]) + struct.pack("<H", len(a)) + a + b


def idx(dims, data):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", v) for v in dims) + bytes(data)


def idx_pair(mode, images, labels):
    return bytes([mode]) + struct.pack("<H", len(images)) + images + labels


dataset_seeds = {
    "idx_raw": idx_pair(3, idx([2, 2, 3], range(0, 240, 20)), idx([2], [2, 0])),
    "idx_gzip_ten_classes": idx_pair(3 | 10 << 2, gzip.compress(idx([1, 28, 28], [128] * 784), mtime=0),
                                     gzip.compress(idx([1], [9]), mtime=0)),
    "idx_swapped": idx_pair(3, idx([2], [1, 0]), idx([2, 1, 1], [0, 255])),
    "csv_header_comment": b"\x00# made by hand\nx0,x1,y\n0.5,1,2\n-1,2.5e-1,3\n",
    "csv_semicolon_two_outputs": b"\x02a;b;c;d\n1;2;3;4\n5;6;7;8\n",
    "csv_tab_given": b"\x18x\ty\n1\t2\n",
    "csv_decimal_commas": b"\x00a;b\n1,5;2\n",
    "csv_short_row": b"\x08a,b,y\n1,2,3\n4,5\n",
    "npy_float32": npy_pair(numpy.arange(6, dtype=numpy.float32).reshape(3, 2),
                            numpy.arange(3, dtype=numpy.float32)),
    "npy_float64_2d_targets": npy_pair(numpy.ones((2, 3)), numpy.zeros((2, 2))),
}
for name, data in dataset_seeds.items():
    write("dataset_fuzz", name, data)

# weight_cache_fuzz: the cache files LoadCheckpoint writes, as is and split
# into data, index and sums (tests/fuzz/weight_cache_seeds.cc).
seeds = os.path.join(asan_build, "tests", "fuzz", "weight_cache_seeds")
shutil.rmtree(os.path.join(corpus, "weight_cache_fuzz"), ignore_errors=True)
done = subprocess.run([seeds, os.path.join(corpus, "weight_cache_fuzz")], capture_output=True, text=True)
if done.returncode != 0:
    sys.exit("%s failed (cmake --build %s --target weight_cache_seeds): %s" % (seeds, asan_build, done.stderr))

for target in sorted(os.listdir(corpus)):
    files = os.listdir(os.path.join(corpus, target))
    print("%s: %d seeds" % (target, len(files)))
