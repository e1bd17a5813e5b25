"""Generates sparse_serve's gRPC stubs from proto/ as shipped, with Debian's
python3-grpc-tools (never a checked-in copy). Shared by build_package.py
(CMake's build/python) and setup.py (pip install ./client/python).

The protos keep their own paths (sparse/v1/inference.proto, ...), so they
register in protobuf's descriptor pool exactly as any other stubs of them do
and can be imported side by side; the generated modules' imports of each
other are then qualified with sparse_serve._generated, so nothing shadows a
top-level package (the health stubs would otherwise be a module
`grpc.health.v1`, hiding grpcio).
"""
import os
import re
import shutil
import subprocess
import sys

PROTOS = ["sparse/v1/inference.proto", "inference/grpc_service.proto", "grpc/health/v1/health.proto"]
IMPORT = re.compile(r'^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"\s*;', re.M)


class StubError(Exception):
    """The stubs could not be generated; the message says why."""


def protos_to_generate(proto_dir, roots=PROTOS):
    """`roots` and the files under `proto_dir` they import, transitively (an
    import from elsewhere, google/protobuf/..., comes with protobuf)."""
    found, pending = [], list(roots)
    while pending:
        proto = pending.pop(0)
        path = os.path.join(proto_dir, proto)
        if proto in found:
            continue
        if not os.path.isfile(path):
            if proto in roots:
                raise StubError("the gRPC stubs are generated from the repository's proto/ directory: looked for "
                                "%s and did not find it (client/python is built inside a sparse-serve checkout, "
                                "whose proto/ is ../../proto from it)" % path)
            continue
        found.append(proto)
        with open(path) as f:
            pending += IMPORT.findall(f.read())
    return found


def generate(proto_dir, package_dir):
    """Writes the stubs of PROTOS (paths under `proto_dir`) and of what they
    import into `package_dir`/_generated, replacing what was there, as
    subpackages of sparse_serve._generated. Raises StubError when a proto is
    missing or grpc_tools.protoc fails."""
    proto_dir = os.path.abspath(proto_dir)
    protos = protos_to_generate(proto_dir)
    generated = os.path.join(package_dir, "_generated")
    shutil.rmtree(generated, ignore_errors=True)
    os.makedirs(generated)
    done = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", proto_dir,
                           "--python_out=" + generated, "--grpc_python_out=" + generated]
                          + [os.path.join(proto_dir, p) for p in protos], capture_output=True, text=True)
    if done.returncode != 0:
        raise StubError("grpc_tools.protoc failed (is python3-grpc-tools installed?): " + done.stderr)
    qualify = re.compile(r"^from (%s) import " % "|".join(
        sorted({re.escape(os.path.dirname(p).replace("/", ".")) for p in protos})), re.M)
    for directory, _, files in os.walk(generated):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                with open(path) as f:
                    text = f.read()
                with open(path, "w") as f:
                    f.write(qualify.sub(r"from sparse_serve._generated.\1 import ", text))
    for directory, _, _ in os.walk(generated):
        open(os.path.join(directory, "__init__.py"), "a").close()
