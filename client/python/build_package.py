#!/usr/bin/python3
"""Assembles the importable sparse_serve package in a build directory:

    build_package.py <source dir> <output dir>

copies client/python/sparse_serve/*.py to <output dir>/sparse_serve/ and
generates the gRPC stubs from proto/ as shipped (Debian's python3-grpc-tools)
into <output dir>/sparse_serve/_generated/. The protos keep their own paths
(sparse/v1/inference.proto, ...), so they register in protobuf's descriptor
pool exactly as any other stubs of them do and can be imported side by side;
the generated modules' imports of each other are then qualified with
sparse_serve._generated, so nothing shadows a top-level package (the health
stubs would otherwise be a module `grpc.health.v1`, hiding grpcio).
CMake runs this at build time; use the result with PYTHONPATH=<output dir>.
"""
import os
import re
import shutil
import subprocess
import sys

PROTOS = ["sparse/v1/inference.proto", "inference/grpc_service.proto", "grpc/health/v1/health.proto"]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    source, out = sys.argv[1], sys.argv[2]
    package = os.path.join(out, "sparse_serve")
    generated = os.path.join(package, "_generated")
    shutil.rmtree(package, ignore_errors=True)
    os.makedirs(package)
    here = os.path.join(source, "client", "python", "sparse_serve")
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            shutil.copyfile(os.path.join(here, name), os.path.join(package, name))
    os.makedirs(generated)
    done = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.join(source, "proto"),
                           "--python_out=" + generated, "--grpc_python_out=" + generated]
                          + [os.path.join(source, "proto", p) for p in PROTOS], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit("build_package: grpc_tools.protoc failed (is python3-grpc-tools installed?): " + done.stderr)
    qualify = re.compile(r"^from (%s) import " % "|".join(
        re.escape(os.path.dirname(p).replace("/", ".")) for p in PROTOS), re.M)
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


if __name__ == "__main__":
    main()
