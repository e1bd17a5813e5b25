#!/usr/bin/python3
"""Assembles the importable sparse_serve package in a build directory:

    build_package.py <source dir> <output dir>

copies client/python/sparse_serve/*.py to <output dir>/sparse_serve/ and
generates the gRPC stubs from proto/ as shipped (Debian's python3-grpc-tools)
into <output dir>/sparse_serve/_generated/. The protos are staged under that
package path first, so the generated modules import each other as
sparse_serve._generated.… and never shadow a top-level package (the health
proto would otherwise become a module `grpc.health.v1`, hiding grpcio).
CMake runs this at build time; use the result with PYTHONPATH=<output dir>.
"""
import os
import shutil
import subprocess
import sys
import tempfile

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
    with tempfile.TemporaryDirectory() as stage:
        staged = []
        for proto in PROTOS:
            target = os.path.join(stage, "sparse_serve", "_generated", proto)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(os.path.join(source, "proto", proto), target)
            staged.append(target)
        done = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", stage, "--python_out=" + out,
                               "--grpc_python_out=" + out] + staged, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit("build_package: grpc_tools.protoc failed (is python3-grpc-tools installed?): "
                     + done.stderr)
    for directory, _, _ in os.walk(generated):
        open(os.path.join(directory, "__init__.py"), "a").close()


if __name__ == "__main__":
    main()
