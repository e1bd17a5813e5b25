"""Writes the fuzz targets' seed corpora (tests/fuzz/corpus/, checked in).

Checkpoint seeds are real versions trained by sparse-train (small shapes, so
each file stays under the fuzzers' 64 KiB input limit): an LSH table, DSMs
with each router kind, with and without a dense twin, packed as
checkpoint_fuzz reads them. Request seeds are valid and invalid
PredictRequest and ModelInferRequest messages for request_fuzz's models.
Config seeds cover each config.pbtxt field.

Usage: /usr/bin/python3 tests/fuzz/make_seeds.py <build dir>
"""
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile

source = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
build = sys.argv[1]
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
    }
    for name, text in configs.items():
        write("model_config_fuzz", name, text)

    # Requests for request_fuzz's models: lsh (d=4, o=2) and dsm (d=4, o=1).
    python_stubs(source, os.path.join(tmp, "stubs"), "sparse/v1/inference.proto",
                 "inference/grpc_service.proto")
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

for target in sorted(os.listdir(corpus)):
    files = os.listdir(os.path.join(corpus, target))
    print("%s: %d seeds" % (target, len(files)))
