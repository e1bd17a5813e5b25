"""pip install ./client/python works offline (issue 17, docs/python.md): in a
fresh venv of Debian's /usr/bin/python3 made with --system-site-packages,
`pip install --no-build-isolation --no-index client/python` builds the
package with Debian's pip, setuptools, wheel and python3-grpc-tools,
generating the gRPC stubs from proto/, installs nothing but sparse-serve
(grpcio, protobuf, numpy and, for the torch extra, torch are Debian's), and
leaves nothing in the source tree. The installed package, run from outside
the repository without PYTHONPATH, is imported from the venv and predicts
what build/python's package predicts on a sparse-server. A copy of
client/python without the repository's proto/ fails, saying where it looked,
and an editable install is refused.

    pip_install_test.py SOURCE_DIR BUILD_DIR
"""
import json
import os
import shutil
import sys
import tempfile

source, build = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(source, "tests", "testing"))
sys.path.insert(0, os.path.join(build, "python"))
from harness import check, finish, run, start_server, stop, train_small_dsm  # noqa: E402

import numpy as np  # noqa: E402

import sparse_serve  # noqa: E402  build/python's: the reference

PACKAGE = os.path.join(source, "client", "python")
# Without PYTHONPATH (nothing from build/python or the source tree) and
# without the caller's PIP_* settings (pip --isolated ignores them too).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("PIP_")}
# Run by the venv's python: predicts, and says where it imported from.
CLIENT = r"""
import json, sys, sysconfig
import numpy as np
import sparse_serve
import sparse_serve.export
import sparse_serve.nn  # Debian's torch
x = np.asarray(json.loads(sys.argv[2]), dtype=np.float32)
with sparse_serve.Client(sys.argv[1]) as client:
    p = client.predict("m", x)
    info = client.model("m").versions[0]
print(json.dumps({"file": sparse_serve.__file__, "purelib": sysconfig.get_paths()["purelib"],
                  "outputs": p.outputs.tolist(), "flops": p.cost.flops, "output_dim": info.output_dim}))
"""


def tree_state():
    """What git sees of client/python, ignored files included (None outside a checkout)."""
    done = run(["git", "--no-optional-locks", "-C", source, "status", "--porcelain", "--untracked-files=all",
                "--ignored", "--", "client/python"])
    return done.stdout if done.returncode == 0 else None


def output(done):
    return done.stdout[-3000:] + done.stderr[-3000:]


def pip_install(python, *args, cwd):
    return run([python, "-m", "pip", "install", "--isolated", "--no-build-isolation", "--no-index"] + list(args),
               cwd=cwd, env=ENV, timeout=120)


check(os.path.dirname(os.path.realpath(sparse_serve.__file__)) ==
      os.path.realpath(os.path.join(build, "python", "sparse_serve")),
      "the reference is build/python's package: %s" % sparse_serve.__file__)

with tempfile.TemporaryDirectory() as tmp:
    venv = os.path.join(tmp, "venv")
    python = os.path.join(venv, "bin", "python")
    done = run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", venv], env=ENV, timeout=120)
    if done.returncode != 0:
        sys.exit("python3 -m venv failed (is python3-venv installed?): " + done.stdout + done.stderr)

    before = tree_state()
    # Refused, before anything is installed: client/python copied out of
    # the repository (no VERSION at ../../VERSION), then with the version
    # but no proto/ at ../../proto, and an editable install.
    alone = os.path.join(tmp, "copy", "python")
    shutil.copytree(PACKAGE, alone)
    failed = pip_install(python, alone, cwd=tmp)
    expected = os.path.join(tmp, "VERSION")
    check(failed.returncode != 0 and "looked for " + expected in failed.stdout + failed.stderr,
          "without VERSION the install fails saying it looked for %s:\n%s" % (expected, output(failed)))
    shutil.copyfile(os.path.join(source, "VERSION"), expected)
    failed = pip_install(python, alone, cwd=tmp)
    expected = os.path.join(tmp, "proto", "sparse", "v1", "inference.proto")
    check(failed.returncode != 0 and "looked for " + expected in failed.stdout + failed.stderr,
          "without proto/ the install fails saying it looked for %s:\n%s" % (expected, output(failed)))
    editable = pip_install(python, "-e", PACKAGE, cwd=tmp)
    check(editable.returncode != 0 and "(pip install -e) is not supported" in editable.stdout + editable.stderr,
          "an editable install is refused, not installed broken:\n%s" % output(editable))

    done = pip_install(python, PACKAGE, cwd=tmp)
    check(done.returncode == 0, "pip install --no-build-isolation --no-index client/python succeeds:\n%s"
          % output(done))
    installed = [line for line in done.stdout.splitlines() if line.startswith("Installing collected packages:")]
    check(installed == ["Installing collected packages: sparse-serve"],
          "pip installs sparse-serve alone, the rest is Debian's: %s" % installed)
    for dependency in ("grpcio", "protobuf", "numpy"):
        check(any(line.startswith("Requirement already satisfied: " + dependency) and "/usr/lib/python3/" in line
                  for line in done.stdout.splitlines()), "%s is Debian's" % dependency)
    print("\n".join("  pip: " + line for line in done.stdout.splitlines()
                    if line.startswith(("Requirement", "Successfully"))))
    extra = pip_install(python, "--dry-run", PACKAGE + "[torch]", cwd=tmp)
    check(extra.returncode == 0 and any(line.startswith("Requirement already satisfied: torch")
                                        for line in extra.stdout.splitlines()),
          "the torch extra is met by Debian's torch:\n%s" % output(extra))
    after = tree_state()
    check(after == before, "the builds leave nothing in client/python:\n%s" % after)

    repo = os.path.join(tmp, "repo")
    train_small_dsm(build, repo, "m")
    server, ports = start_server(build, repo)
    address = "127.0.0.1:%d" % ports[0]
    try:
        with sparse_serve.Client(address) as reference:
            d = reference.model("m").versions[0].input_dim
            x = np.random.default_rng(0).uniform(-1, 1, (16, d)).astype(np.float32)
            want = reference.predict("m", x)
        workdir = os.path.join(tmp, "elsewhere")
        os.makedirs(workdir)
        got = run([python, "-c", CLIENT, address, json.dumps(x.tolist())], cwd=workdir, env=ENV, timeout=120)
        check(got.returncode == 0, "the installed package predicts: %s" % got.stderr[-3000:])
        if got.returncode == 0:
            answer = json.loads(got.stdout)
            site = os.path.realpath(answer["purelib"])
            path = os.path.realpath(answer["file"])
            check(path.startswith(os.path.realpath(venv) + os.sep) and path.startswith(site + os.sep),
                  "sparse_serve is imported from the venv's site-packages (%s): %s" % (site, path))
            outputs = np.asarray(answer["outputs"], dtype=np.float32)
            check(outputs.shape == (16, answer["output_dim"]) and np.all(np.isfinite(outputs)),
                  "outputs of shape (rows, o) = %s, finite" % (outputs.shape,))
            check(np.array_equal(outputs, want.outputs), "the installed package gives build/python's outputs")
            check(answer["flops"] == want.cost.flops > 0, "and the same cost: %d FLOPs" % answer["flops"])
            print("  imported from %s\n  predicted %s outputs, %d FLOPs, equal to build/python's"
                  % (answer["file"], outputs.shape, answer["flops"]))
    finally:
        code, _ = stop(server)
    check(code == 0, "the server stops cleanly")
finish()
