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
    """Generates Python stubs for `protos` (paths under proto/) and what they
    import into `directory` with grpc_tools, from the protos as shipped
    (never a checked-in copy), and makes them importable."""
    os.makedirs(directory, exist_ok=True)
    sys.path.insert(0, os.path.join(source, "client", "python"))
    from generate_stubs import protos_to_generate
    root = os.path.join(source, "proto")
    done = run([sys.executable, "-m", "grpc_tools.protoc", "-I", root,
                "--python_out=" + directory, "--grpc_python_out=" + directory]
               + [os.path.join(root, p) for p in protos_to_generate(root, protos)])
    if done.returncode != 0:
        sys.exit("grpc_tools.protoc failed: " + done.stderr)
    sys.path.insert(0, directory)


def train_small_dsm(build, repo, name):
    """sparse-train's default DSM (d=8, with its dense twin) on few rows,
    published as version 1 of `name` in `repo`: a second or so."""
    done = run([os.path.join(build, "trainer", "sparse-train"), "--quiet", "--train_rows=4096",
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


def start_server(build, repo, *flags, stderr=None):
    """Starts sparse-server on `repo` on loopback with a free port (and any
    other --flags), waits until its port is open, and returns the process
    and the ports it printed (main first, then --health_port and
    --metrics_port when asked for)."""
    import grpc
    server = subprocess.Popen([os.path.join(build, "server", "sparse-server"), "--model_repository=" + repo,
                               "--address=127.0.0.1", "--port=0"] + list(flags),
                              stdout=subprocess.PIPE, stderr=stderr, text=True)
    wanted = 1 + sum(1 for f in flags if f.startswith(("--health_port", "--metrics_port")))
    ports = []
    for _ in range(wanted):
        line = server.stdout.readline()
        if not line:
            server.wait(timeout=30)
            sys.exit("sparse-server exited %s before printing its ports" % server.returncode)
        ports.append(int(line))
    grpc.channel_ready_future(grpc.insecure_channel("127.0.0.1:%d" % ports[0])).result(timeout=30)
    return server, ports


def memory_kib(pid):
    """Resident memory of `pid`: total, anonymous (heap: packed weights,
    buffers) and file-backed (code and libraries), in KiB."""
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0])
    return fields


def link_version(source_dir, model_dir, version):
    """Publishes `source_dir`'s files as `version`: hard links in a hidden
    directory, renamed into place."""
    tmp = os.path.join(model_dir, ".tmp-%d" % version)
    os.makedirs(tmp)
    for name in os.listdir(source_dir):
        os.link(os.path.join(source_dir, name), os.path.join(tmp, name))
    os.rename(tmp, os.path.join(model_dir, str(version)))


def republishing_repo(build, tmp, version_dir=None):
    """A repository under `tmp` whose model "m" holds one version, 1: hard
    links of `version_dir`'s files, or of a small DSM trained here when it
    is None. Returns (repository, model directory, the version directory
    to publish again with link_version)."""
    repo = os.path.join(tmp, "repo")
    model_dir = os.path.join(repo, "m")
    os.makedirs(model_dir)
    if version_dir is None:
        train_small_dsm(build, os.path.join(tmp, "trained"), "m")
        version_dir = os.path.join(tmp, "trained", "m", "1")
    link_version(version_dir, model_dir, 1)
    return repo, model_dir, version_dir
