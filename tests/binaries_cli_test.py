"""What every binary's command line promises a new user (issue 31, trap 7):
`--version` prints the project version from the VERSION file (with the git
commit when built from a checkout) and exits 0; `--help` exits 0, lists the
binary's own flags under a path from the source tree's top and shows no
directory of the machine that built it; `--version=N`, the model-version
spelling of releases before 0.3, is refused with the flag that replaced it;
an unknown flag still fails.

Usage: binaries_cli_test.py <source dir> <build dir>
"""
import os
import re
import socket
import sys
import time

source, build = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(source, "tests", "testing"))
from harness import check, finish, run  # noqa: E402

BINARIES = {
    "sparse-server": ("server/sparse-server", "server/main.cc"),
    "sparse-cli": ("client/sparse-cli", "client/sparse_cli_main.cc"),
    "sparse-train": ("trainer/sparse-train", "trainer/sparse_train_main.cc"),
}

with open(os.path.join(source, "VERSION")) as f:
    version = f.read().strip()
check(re.fullmatch(r"\d+\.\d+\.\d+", version) is not None, "VERSION holds x.y.z, got %r" % version)
# Paths of this machine that a user's --help must not show: the source and
# build trees (as given and resolved).
machine_paths = {os.path.abspath(source), os.path.realpath(source),
                 os.path.abspath(build), os.path.realpath(build)}

for name, (path, main_file) in BINARIES.items():
    binary = os.path.join(build, path)
    done = run([binary, "--version"])
    check(done.returncode == 0, "%s --version exits 0, got %d: %s" % (name, done.returncode, done.stderr))
    check(re.fullmatch(r"sparse-serve %s( \(git [0-9a-f]{12}(-dirty)?\))?\n" % re.escape(version),
                       done.stdout) is not None,
          "%s --version prints 'sparse-serve %s (git ...)', got %r" % (name, version, done.stdout))

    for flag in ("--help", "--helpfull"):
        done = run([binary, flag])
        check(done.returncode == 0, "%s %s exits 0, got %d" % (name, flag, done.returncode))
        check(done.stderr == "", "%s %s writes nothing to stderr, got %r" % (name, flag, done.stderr[:200]))
        for p in machine_paths:
            check(p not in done.stdout, "%s %s shows the build machine's path %s" % (name, flag, p))
    done = run([binary, "--help"])
    check("Flags from %s:" % main_file in done.stdout,
          "%s --help lists the flags of %s, got %r" % (name, main_file, done.stdout[-400:]))
    check(len(re.findall(r"^    --", done.stdout, re.M)) >= 3,
          "%s --help lists its flags with their help" % name)

    done = run([binary, "--version=3"])
    check(done.returncode != 0, "%s --version=3 is refused" % name)
    check("--model_version=3" in done.stderr,
          "%s --version=3 names --model_version=3, got %r" % (name, done.stderr))

    done = run([binary, "--no_such_flag=1"])
    check(done.returncode != 0 and "no_such_flag" in done.stderr,
          "%s refuses an unknown flag by name, got %d %r" % (name, done.returncode, done.stderr))

# health --wait_seconds gives up after that long when nothing answers,
# naming where it looked (the README's quickstart waits for a server this way).
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    free = s.getsockname()[1]
began = time.time()
done = run([os.path.join(build, "client", "sparse-cli"), "--target=127.0.0.1:%d" % free, "health",
            "--wait_seconds=1"])
took = time.time() - began
check(done.returncode != 0 and "UNAVAILABLE" in done.stderr and str(free) in done.stderr,
      "health --wait_seconds=1 with no server fails UNAVAILABLE naming the target, got %d %r" %
      (done.returncode, done.stderr))
check(1 <= took < 10, "health --wait_seconds=1 with no server took %.1f s" % took)
done = run([os.path.join(build, "client", "sparse-cli"), "health", "--wait_seconds=-1"])
check(done.returncode != 0 and "--wait_seconds" in done.stderr,
      "health --wait_seconds=-1 is refused by name, got %r" % done.stderr)

finish()
