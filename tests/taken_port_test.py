"""A taken port fails sparse-server at once (issue 31): its ports are
checked before the model repository loads, so a port another process holds
(a plain socket, or another sparse-server) ends it in under two seconds,
exit code 1, with one line on stderr naming the address, the port, its flag
and "address already in use" (no gRPC log). Two flags on one port are
refused the same way. With the port free again, the same command serves.

Usage: taken_port_test.py <source dir> <build dir>
"""
import os
import socket
import subprocess
import sys
import tempfile
import time

source, build = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(source, "tests", "testing"))
from harness import check, finish, stop, train_small_dsm  # noqa: E402

SERVER = os.path.join(build, "server", "sparse-server")


def held_port():
    """A listening socket on a free loopback port, and the port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s, s.getsockname()[1]


def run_server(repo, *flags):
    """(exit code, seconds, stderr lines) of sparse-server run to its end."""
    start = time.monotonic()
    server = subprocess.Popen([SERVER, "--model_repository=" + repo, "--address=127.0.0.1"] + list(flags),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = server.communicate(timeout=10)
    except subprocess.TimeoutExpired:  # it serves: the port was shared, not refused
        server.kill()
        _, err = server.communicate()
        err += "[still serving after 10 s: killed]"
    return server.returncode, time.monotonic() - start, err.splitlines()


def expect_one_line(label, result, line):
    code, seconds, lines = result
    check(code == 1, "%s: exit code %s, expected 1" % (label, code))
    check(seconds < 2.0, "%s: took %.2f s, expected under 2 s" % (label, seconds))
    check(lines == [line], "%s: stderr %r, expected the one line %r" % (label, lines, line))


with tempfile.TemporaryDirectory() as tmp:
    repo = os.path.join(tmp, "repo")
    train_small_dsm(build, repo, "m")

    holder, port = held_port()
    with holder:
        expect_one_line("--port taken", run_server(repo, "--port=%d" % port),
                        "sparse-server: error: cannot listen on 127.0.0.1:%d (--port): address already in use" % port)
        expect_one_line("--http_port taken", run_server(repo, "--port=0", "--http_port=%d" % port),
                        "sparse-server: error: cannot listen on 127.0.0.1:%d (--http_port): address already in use"
                        % port)
        expect_one_line("--metrics_port taken", run_server(repo, "--port=0", "--metrics_port=%d" % port),
                        "sparse-server: error: cannot listen on 127.0.0.1:%d (--metrics_port): address already in "
                        "use" % port)
        expect_one_line("--health_port taken", run_server(repo, "--port=0", "--health_port=%d" % port),
                        "sparse-server: error: cannot listen on 127.0.0.1:%d (--health_port): address already in "
                        "use" % port)

    # The port free again: the same command serves on it.
    server = subprocess.Popen([SERVER, "--model_repository=" + repo, "--address=127.0.0.1", "--port=%d" % port],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        printed = server.stdout.readline().strip()
        check(printed == str(port), "with the port free the server serves on it: printed %r" % printed)
        # A second sparse-server on the first one's port is refused, not
        # sharing it (gRPC's SO_REUSEPORT is off).
        expect_one_line("--port held by another sparse-server", run_server(repo, "--port=%d" % port),
                        "sparse-server: error: cannot listen on 127.0.0.1:%d (--port): address already in use" % port)
    finally:
        code, log = stop(server)
    check(code == 0, "the first server stopped cleanly (exit %s): %s" % (code, log))

    probe, free = held_port()
    probe.close()  # a port that was free a moment ago
    expect_one_line("two flags on one port", run_server(repo, "--port=%d" % free, "--http_port=%d" % free),
                    "sparse-server: error: --port and --http_port both ask for port %d: give each its own port"
                    % free)

finish()
