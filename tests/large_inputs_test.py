"""Issue 31 on a running server: large inputs just work, and what did not
load is visible where users look.

A repository holds a DSM (d=4, o=2, written by docs/examples/
write_dsm_checkpoint.py) with a corrupt version 2 beside version 1, and
model folders that serve nothing: one with only v1/ and latest/, an empty
one, and one named like a dense twin (mine.dense). sparse-server runs with
its default row limit (--max_batch_rows=1024). The test checks:

- 5,000 rows in one `sparse-cli predict --csv` (to --output=.csv and .npy)
  and in one Python Client.predict (native and OIP) equal the row-by-row
  predictions in order (to 1e-5: another batch size sums in another order);
  GetModel and OIP ModelConfig report the limit;
  nothing but the answer reaches stderr when it is not a terminal.
- `sparse-cli models` lists the failed version, the config.pbtxt error and
  the folders that serve nothing, each with its reason; `predict
  --model_version=2` says why version 2 failed.
- The OIP repository index gives the folders their reasons ("no version
  directory to serve: ..."), and the server logs each once, not per rescan.

    large_inputs_test.py SOURCE_DIR BUILD_DIR
"""
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time

source, build = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(source, "tests", "testing"))
sys.path.insert(0, os.path.join(build, "python"))
from harness import check, finish, run, start_server, stop  # noqa: E402

import numpy as np  # noqa: E402

import sparse_serve  # noqa: E402
from sparse_serve._generated.inference import grpc_service_pb2 as oip_pb  # noqa: E402
from sparse_serve._generated.inference import grpc_service_pb2_grpc as oip_grpc  # noqa: E402

ROWS, D, O = 5000, 4, 2
CLI = os.path.join(build, "client", "sparse-cli")


def same(got, expected):
    """Row-by-row and batched answers may differ in the last bits (the
    kernels sum in another order for another batch size); rows out of order
    differ by far more (the test checks the rows differ)."""
    return got.shape == expected.shape and np.allclose(got, expected, rtol=1e-5, atol=1e-6)


def write_repository(repo):
    writer = os.path.join(source, "docs", "examples", "write_dsm_checkpoint.py")
    done = run([sys.executable, writer, os.path.join(repo, "m"), "1"])
    if done.returncode != 0:
        sys.exit("write_dsm_checkpoint.py failed: " + done.stderr)
    bad = os.path.join(repo, "m", "2")
    os.makedirs(bad)
    with open(os.path.join(bad, "model.safetensors"), "w") as f:
        f.write("not a checkpoint")
    # A config that does not parse on a model that serves (the defaults stay).
    shutil.copytree(os.path.join(repo, "m", "1"), os.path.join(repo, "configured", "1"))
    with open(os.path.join(repo, "configured", "config.pbtxt"), "w") as f:
        f.write("version_policy { newest {} }\n")
    os.makedirs(os.path.join(repo, "unversioned", "v1"))
    os.makedirs(os.path.join(repo, "unversioned", "latest"))
    os.makedirs(os.path.join(repo, "empty"))
    shutil.copytree(os.path.join(repo, "m", "1"), os.path.join(repo, "mine.dense", "1"))


def cli(port, *args):
    return run([CLI, "--target=127.0.0.1:%d" % port] + list(args))


def check_cli_predict(port, tmp, x, expected):
    rows_csv = os.path.join(tmp, "rows.csv")
    np.savetxt(rows_csv, x, delimiter=",", header=",".join("x%d" % i for i in range(D)), comments="",
               fmt="%.9g")
    out_csv, out_npy = os.path.join(tmp, "preds.csv"), os.path.join(tmp, "preds.npy")
    done = cli(port, "predict", "--model=m", "--csv=" + rows_csv, "--output=" + out_csv)
    check(done.returncode == 0, "sparse-cli predicts 5,000 rows in one command: %s" % done.stderr)
    check(done.stderr == "", "nothing on stderr when it is not a terminal: %r" % done.stderr[:200])
    check("5000 row(s) x 2 output(s)" in done.stdout and "written to " + out_csv in done.stdout,
          "it says how many rows and where they went: %s" % done.stdout[:300])
    if done.returncode == 0:
        got = np.loadtxt(out_csv, delimiter=",", skiprows=1, dtype=np.float32)
        check(open(out_csv).readline().strip() == "output_0,output_1", "the CSV has a header")
        check(got.shape == (ROWS, O) and same(got, expected),
              "sparse-cli's CSV equals the row-by-row predictions (max diff %s)"
              % (np.max(np.abs(got - expected)) if got.shape == expected.shape else got.shape))
    done = cli(port, "predict", "--model=m", "--csv=" + rows_csv, "--output=" + out_npy)
    check(done.returncode == 0, "sparse-cli writes .npy: %s" % done.stderr)
    if done.returncode == 0:
        shutil.copy(out_npy, os.path.join(tmp, "preds_1024.npy"))
        got = np.load(out_npy)
        check(got.dtype == np.float32 and same(got, expected),
              "the .npy numpy loads equals the row-by-row predictions")
        check(np.array_equal(got, np.loadtxt(out_csv, delimiter=",", skiprows=1, dtype=np.float32)),
              "the .npy and the CSV hold the same float32 values")
    done = cli(port, "predict", "--model=m", "--csv=" + rows_csv, "--output=" + os.path.join(tmp, "p.txt"))
    check(done.returncode != 0 and ".csv or .npy" in done.stderr, "another suffix is refused: %s" % done.stderr)
    done = cli(port, "predict", "--model=m", "--csv=" + rows_csv, "--max_rows=-1")
    check(done.returncode == 2 and "--max_rows: expected rows per request >= 1" in done.stderr,
          "a negative --max_rows is refused: %s" % done.stderr)
    # Smaller requests than the limit: the same answer.
    done = cli(port, "predict", "--model=m", "--csv=" + rows_csv, "--max_rows=333", "--output=" + out_npy)
    check(done.returncode == 0 and same(np.load(out_npy), expected),
          "--max_rows=333 gives the same predictions: %s" % done.stderr)


def check_progress_on_a_terminal(port, tmp):
    """A run of over a second shows a progress line when stderr is a terminal.
    40,000 requests take about 3.5 s here (10,000 took 0.84 to 1.0 s, too
    close to the second for the line to be sure to show)."""
    import pty
    import threading
    rows = np.random.default_rng(4).uniform(-1, 1, size=(40000, D)).astype(np.float32)
    path = os.path.join(tmp, "many.csv")
    np.savetxt(path, rows, delimiter=",", fmt="%.6g")
    master, slave = pty.openpty()
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: _read(master), b"")))
    reader.start()
    done = subprocess.run([CLI, "--target=127.0.0.1:%d" % port, "predict", "--model=m", "--csv=" + path,
                           "--max_rows=1", "--output=" + os.path.join(tmp, "many.npy")],
                          stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    shown = b"".join(seen).decode(errors="replace")
    check(done.returncode == 0, "40,000 rows in 40,000 requests: exit %s" % done.returncode)
    check("sparse-cli: sparse [" in shown and "40000/40000 rows" in shown,
          "a terminal sees the progress line: %r" % shown[-300:])


def _read(fd):
    try:
        return os.read(fd, 4096)
    except OSError:  # the terminal closed
        return b""


def check_python_predict(port, tmp, x, expected):
    with sparse_serve.Client("127.0.0.1:%d" % port) as client:
        check(client.model("m").max_batch_rows == 1024, "GetModel reports the server's row limit")
        p = client.predict("m", x)
        check(p.outputs.shape == (ROWS, O) and same(p.outputs, expected),
              "Client.predict of 5,000 rows equals the row-by-row predictions")
        # The same requests as sparse-cli's (1,024 rows each): the same bits.
        check(np.array_equal(p.outputs, np.load(os.path.join(tmp, "preds_1024.npy"))),
              "Client.predict and sparse-cli split alike and answer alike")
        check(p.cost.flops == client.predict("m", x[:1]).cost.flops * ROWS,
              "the joined cost is the requests' summed: %d" % p.cost.flops)
        routed = client.predict("m", x, route=True)
        check(routed.route.expert_ids.shape[0] == ROWS, "the route of every row comes back")

    async def predict_async():
        async with sparse_serve.AsyncClient("127.0.0.1:%d" % port) as client:
            return (await client.predict("m", x)).outputs
    check(np.array_equal(asyncio.run(predict_async()), np.load(os.path.join(tmp, "preds_1024.npy"))),
          "AsyncClient.predict splits the same way")
    with sparse_serve.Client("127.0.0.1:%d" % port, protocol="oip") as client:
        check(client.row_limit("m") == 1024, "OIP ModelConfig's max_batch_size is the limit")
        p = client.predict("m", x)
        check(same(p.outputs, expected), "over OIP too")


def check_not_serving(port, log_path):
    done = cli(port, "models")
    check(done.returncode == 0, "sparse-cli models: %s" % done.stderr)
    out = done.stdout
    check("m version 2: failed to load: " in out, "models lists the failed version and why: %s" % out)
    check("configured: config.pbtxt line 1 column 25: " in out, "models lists the config.pbtxt error: %s" % out)
    check("unversioned: no version directory to serve: latest/, v1/ are not versions" in out,
          "models lists a folder of non-integer versions and why: %s" % out)
    check("empty: no version directory to serve" in out, "models lists an empty folder: %s" % out)
    check("mine.dense: refused: a model name ending in '.dense'" in out, "and the refused name: %s" % out)
    done = cli(port, "predict", "--model=m", "--model_version=2", "--inputs=0,0,0,0")
    check(done.returncode == 1 and "has no version 2: it failed to load: " in done.stderr,
          "predict --model_version=2 says why version 2 failed: %s" % done.stderr)
    import grpc
    with grpc.insecure_channel("127.0.0.1:%d" % port) as channel:
        index = oip_grpc.GRPCInferenceServiceStub(channel).RepositoryIndex(oip_pb.RepositoryIndexRequest())
    reasons = {(e.name, e.version): e.reason for e in index.models}
    check(reasons.get(("unversioned", ""), "").startswith(
        "no version directory to serve: latest/, v1/ are not versions"), "index: %s" % reasons)
    check(reasons.get(("empty", ""), "").startswith("no version directory to serve"), "index: %s" % reasons)
    check("dense twin of model 'mine'" in reasons.get(("mine.dense", ""), ""), "index: %s" % reasons)
    time.sleep(1.5)  # a few rescans (--poll_seconds=0.2)
    with open(log_path) as f:
        log = f.read()
    said = [line for line in log.splitlines()
            if "no version directory to serve" in line or "refused: a model name" in line]
    check(len(said) == 3 and all(line.startswith("sparse-server: skipped ") for line in said),
          "each folder that serves nothing is logged once at the start, not per rescan: %s" % said)


with tempfile.TemporaryDirectory() as tmp:
    repo = os.path.join(tmp, "repo")
    write_repository(repo)
    log_path = os.path.join(tmp, "server.log")
    with open(log_path, "w") as log:
        server, ports = start_server(build, repo, "--poll_seconds=0.2", stderr=log)
    try:
        rng = np.random.default_rng(3)
        x = rng.uniform(-1, 1, size=(ROWS, D)).astype(np.float32)
        with sparse_serve.Client("127.0.0.1:%d" % ports[0]) as client:
            expected = np.stack([client.predict("m", row).outputs for row in x])
        check(expected.shape == (ROWS, O) and len(np.unique(expected[:, 0])) > ROWS // 2,
              "row-by-row predictions differ between rows (so order shows)")
        check_cli_predict(ports[0], tmp, x, expected)
        check_python_predict(ports[0], tmp, x, expected)
        check_progress_on_a_terminal(ports[0], tmp)
        check_not_serving(ports[0], log_path)
    finally:
        code, _ = stop(server)
    check(code == 0, "server stopped cleanly (exit %s)" % code)
finish()
