"""The layers of DESIGN.md §2 hold: no gRPC below the frontends, no include upward.

Libraries depend downward only: frontends (server/) -> the serving core
(server/core/) -> the model store and life cycle (model_store/) -> engine/
-> common/; trainer/ sits on model_store/. Below the frontends no file
includes a gRPC header (a generated *.grpc.pb.h included), so the core and
the life cycle can serve any protocol, in process too. Test files (*_test.cc)
may also include tests/testing/.

Reads every #include of the C++ files under those folders; fails listing
each include that breaks a rule, with its file and line.

Usage: layering_test.py <source dir> [<build dir>]
"""
import os
import re
import sys

# Folder -> the project folders (and generated headers) its files may include.
ALLOWED = {
    "common": ["common/"],
    "engine": ["engine/", "common/"],
    "model_store": ["model_store/", "engine/", "common/", "sparse/v1/model_config.pb.h"],
    "trainer": ["trainer/", "model_store/", "engine/", "common/"],
    "server/core": ["server/core/", "model_store/", "engine/", "common/",
                    "sparse/v1/model_config.pb.h"],
}
# First path components of the project's own headers, hand-written or generated.
PROJECT = ("common/", "engine/", "model_store/", "trainer/", "server/", "client/", "bench/",
           "tests/", "sparse/", "inference/", "grpc/health/")
GRPC = re.compile(r"^(grpc/|grpcpp/|grpc\+\+/)|\.grpc\.pb\.h$")
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]')


def folder_of(path):
    """The layer a file belongs to (server/core before server)."""
    for folder in sorted(ALLOWED, key=len, reverse=True):
        if path.startswith(folder + "/"):
            return folder
    return None


def check(source):
    problems = []
    files = 0
    for root, dirs, names in os.walk(source):
        dirs[:] = [d for d in dirs if not d.startswith(("build", "."))]
        for name in names:
            if not name.endswith((".h", ".cc")):
                continue
            path = os.path.relpath(os.path.join(root, name), source)
            folder = folder_of(path)
            if folder is None:
                continue
            files += 1
            allowed = list(ALLOWED[folder])
            if name.endswith("_test.cc"):
                allowed.append("tests/testing/")
            with open(os.path.join(source, path), encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    m = INCLUDE.match(line)
                    if not m:
                        continue
                    header = m.group(1)
                    if GRPC.search(header):
                        problems.append("%s:%d includes %s: no gRPC below the frontends"
                                        % (path, number, header))
                    elif header.startswith(PROJECT) and not header.startswith(tuple(allowed)):
                        problems.append("%s:%d includes %s: %s/ may include only %s"
                                        % (path, number, header, folder, ", ".join(allowed)))
    return files, problems


def main():
    source = sys.argv[1] if len(sys.argv) > 1 else "."
    files, problems = check(source)
    if files < 50:
        print("read only %d files under %s: is it the source directory?" % (files, source))
        return 1
    for p in problems:
        print(p)
    if problems:
        print("%d include(s) break the layering of DESIGN.md §2" % len(problems))
        return 1
    print("%d files below the frontends: no gRPC, no include upward" % files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
