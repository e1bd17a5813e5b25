"""The setuptools hook of pip install ./client/python (pyproject.toml holds
the metadata): build_py generates the gRPC stubs from the repository's
proto/ (../../proto; pip 23 builds in the source tree, so it is there) into
the built sparse_serve/_generated, with generate_stubs.py, as CMake's
build_package.py does for build/python.

setuptools' build/ and sparse_serve.egg-info/ go to a temporary directory
removed when the build ends, not into the source tree: nothing is left
there, no stale module of an earlier build is packaged, and two builds at
once do not share one."""
import atexit
import os
import shutil
import sys
import tempfile

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel
from setuptools.errors import SetupError

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # setuptools.build_meta runs this file without its folder on the path
sys.dont_write_bytecode = True  # no __pycache__/ in the source tree
from generate_stubs import StubError, generate  # noqa: E402


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        try:
            generate(os.path.join(HERE, "..", "..", "proto"), os.path.join(self.build_lib, "sparse_serve"))
        except StubError as e:
            raise SetupError("sparse-serve: %s" % e) from None


class NoEditable(editable_wheel):
    """pip install -e would map sparse_serve to the source tree, where the
    stubs are not (and setuptools 66 ignores a failing custom build_py there):
    refused, rather than an install whose import fails."""

    def run(self):
        raise SetupError("sparse-serve: an editable install (pip install -e) is not supported: the gRPC stubs are "
                         "generated into the built package only; install without -e, or use "
                         "PYTHONPATH=build/python (docs/python.md)")


def project_version():
    """The one version of the project: the repository's VERSION file."""
    path = os.path.normpath(os.path.join(HERE, "..", "..", "VERSION"))
    if not os.path.isfile(path):
        raise SetupError("sparse-serve: the package's version is the repository's VERSION file: looked for %s "
                         "and did not find it (client/python is built inside a sparse-serve checkout, whose "
                         "VERSION is ../../VERSION from it)" % path)
    with open(path) as f:
        return f.read().strip()


work = tempfile.mkdtemp(prefix="sparse-serve-build-")
atexit.register(shutil.rmtree, work, ignore_errors=True)
setup(version=project_version(), cmdclass={"build_py": BuildWithStubs, "editable_wheel": NoEditable},
      options={"build": {"build_base": os.path.join(work, "build")}, "egg_info": {"egg_base": work}})
