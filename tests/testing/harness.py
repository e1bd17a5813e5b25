"""What the Python end-to-end tests share: collecting failed checks,
running a binary, and stopping a server the way an operator would."""
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


def stop(server):
    """SIGTERM, then the exit code (None if it had to be killed after 15 s)
    and everything the server wrote to stderr."""
    server.send_signal(signal.SIGTERM)
    try:
        code = server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        code = None
    return code, server.stderr.read()


def finish():
    if failures:
        sys.exit("%d check(s) failed" % len(failures))
    print("ok")
