#!/usr/bin/python3
"""Assembles the importable sparse_serve package in a build directory:

    build_package.py <source dir> <output dir>

copies client/python/sparse_serve/*.py to <output dir>/sparse_serve/ and
generates the gRPC stubs from proto/ as shipped (Debian's python3-grpc-tools)
into <output dir>/sparse_serve/_generated/ (generate_stubs.py, which
`pip install ./client/python` runs too).
CMake runs this at build time; use the result with PYTHONPATH=<output dir>.
"""
import os
import shutil
import sys

sys.dont_write_bytecode = True  # no __pycache__/ in the source tree
from generate_stubs import StubError, generate  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    source, out = sys.argv[1], sys.argv[2]
    package = os.path.join(out, "sparse_serve")
    shutil.rmtree(package, ignore_errors=True)
    os.makedirs(package)
    here = os.path.join(source, "client", "python", "sparse_serve")
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            shutil.copyfile(os.path.join(here, name), os.path.join(package, name))
    try:
        generate(os.path.join(source, "proto"), package)
    except StubError as e:
        sys.exit("build_package: %s" % e)


if __name__ == "__main__":
    main()
