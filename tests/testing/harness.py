"""What the Python end-to-end tests share: collecting failed checks,
running a binary, and stopping a server the way an operator would."""
import os
import signal
import subprocess
import sys

failures = []


def check(ok, what):
    """Records a failed check (the test goes on, and fails at finish())."""
    if not ok:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def python_stubs(source, directory, *protos):
    """Generates Python stubs for `protos` (paths under proto/) into
    `directory` with grpc_tools, from the protos as shipped (never a
    checked-in copy), and makes them importable."""
    os.makedirs(directory, exist_ok=True)
    done = run([sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.join(source, "proto"),
                "--python_out=" + directory, "--grpc_python_out=" + directory]
               + [os.path.join(source, "proto", p) for p in protos])
    if done.returncode != 0:
        sys.exit("grpc_tools.protoc failed: " + done.stderr)
    sys.path.insert(0, directory)


def train_small_dsm(build, repo, name):
    """sparse-train's default DSM (d=8, with its dense twin) on few rows,
    published as version 1 of `name` in `repo`: a second or so."""
    done = run([os.path.join(build, "model_store", "sparse-train"), "--quiet", "--train_rows=4096",
                "--test_rows=512", "--repository=" + repo, "--model_name=" + name])
    if done.returncode != 0:
        sys.exit("sparse-train failed: " + done.stdout + done.stderr)


def stop(server, timeout=15):
    """SIGTERM, then the exit code (None if it had to be killed after
    `timeout` seconds) and what the server wrote to stderr (if piped)."""
    server.send_signal(signal.SIGTERM)
    try:
        code = server.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.kill()
        code = None
    return code, server.stderr.read() if server.stderr is not None else ""


def finish():
    if failures:
        sys.exit("%d check(s) failed" % len(failures))
    print("ok")
