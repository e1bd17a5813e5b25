"""The rooms of DESIGN.md §2 hold: includes point down only, and no circle.

Each folder ("room") may include only the rooms listed for it below; only
the frontends, the sharded front and the client see gRPC. In particular:
no frontend (server/grpc, server/http, server/oip, server/metrics) includes
client/ or model_store/: frontends read models through the core's read API
(server/core/model_reads.h); the gRPC and HTTP rooms do not include each
other. Only the wiring (server/server.{h,cc}, server/main.cc) sees every
room. Test files (*_test.cc) may also include tests/testing/, model_store/
(to write checkpoints), client/ and the wiring.

Reads every #include of the C++ files under those folders; fails listing
each include that breaks a rule, with its file and line. Then checks that
the room graph has no circle and that the README's drawing of it
("<!-- rooms -->" block) is the graph the includes give.

Usage:
  layering_test.py <source dir> [<build dir>]   check (ctest `layering`)
  layering_test.py <source dir> --graph          print the room graph
  layering_test.py <source dir> --self-test      plant bad includes in a copy
                                                 and check each is caught
"""
import os
import re
import shutil
import sys
import tempfile

# Room -> the rooms (and generated headers) its files may include. A room is
# a folder; a file belongs to the longest room its path starts with.
GENERATED_NATIVE = "sparse/v1/"
ROOMS = {
    "common": ["common/"],
    "engine": ["engine/", "common/"],
    # config.pbtxt's two schemas: today's and Triton's (model_source.cc reads
    # both; docs/configuration.md, "Triton's schema (Seldon Core 2)").
    "model_store": ["model_store/", "engine/", "common/", "sparse/v1/model_config.pb.h",
                    "inference/model_config.pb.h"],
    "trainer": ["trainer/", "model_store/", "engine/", "common/"],
    "server/core": ["server/core/", "model_store/", "engine/", "common/",
                    "sparse/v1/model_config.pb.h"],
    "client": ["client/", "common/", GENERATED_NATIVE, "inference/", "grpc/health/"],
    "sharding": ["sharding/", "client/", "model_store/", "engine/", "common/", GENERATED_NATIVE],
    "server/oip": ["server/oip/", "server/core/", "engine/", "common/", "inference/"],
    "server/http": ["server/http/", "server/oip/", "server/core/", "engine/", "common/",
                    "inference/"],
    "server/grpc": ["server/grpc/", "server/oip/", "server/core/", "engine/", "common/",
                    GENERATED_NATIVE, "inference/", "grpc/health/"],
    "server/metrics": ["server/metrics/", "server/http/http_handler.h", "server/core/",
                       "engine/", "common/"],
}
# The wiring: builds every room's objects and connects them.
WIRING = ("server/server.h", "server/server.cc", "server/main.cc")
# Rooms whose files may include a gRPC header (a generated *.grpc.pb.h too).
SEE_GRPC = ("client", "sharding", "server/grpc")
# First path components of the project's own headers, hand-written or generated.
PROJECT = ("common/", "engine/", "model_store/", "trainer/", "server/", "client/", "sharding/",
           "bench/", "tests/", "sparse/", "inference/", "grpc/health/")
GRPC = re.compile(r"^(grpc/|grpcpp/|grpc\+\+/)|\.grpc\.pb\.h$")
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]')
# Where the README draws the graph.
README_BLOCK = re.compile(r"<!-- rooms -->\n```\n(.*?)```\n<!-- /rooms -->", re.S)


def room_of(path):
    """The room a project path (a file or an included header) belongs to."""
    for room in sorted(ROOMS, key=len, reverse=True):
        if path.startswith(room + "/"):
            return room
    return None


def source_files(source):
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("build", ".")))
        for name in sorted(names):
            if name.endswith((".h", ".cc")):
                yield os.path.relpath(os.path.join(root, name), source)


def includes(source, path):
    with open(os.path.join(source, path), encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            m = INCLUDE.match(line)
            if m:
                yield number, m.group(1)


def check(source):
    """(files read, problems, room graph {room: {rooms it includes}})."""
    problems = []
    graph = {room: set() for room in ROOMS}
    files = 0
    for path in source_files(source):
        room = room_of(path)
        if room is None or path in WIRING:
            continue
        files += 1
        allowed = list(ROOMS[room])
        if path.endswith("_test.cc"):
            # Tests write checkpoints, call servers and start whole ones.
            allowed += ["tests/testing/", "model_store/", "client/"] + list(WIRING)
        for number, header in includes(source, path):
            if GRPC.search(header) and room not in SEE_GRPC:
                problems.append("%s:%d includes %s: only %s see gRPC"
                                % (path, number, header, ", ".join(SEE_GRPC)))
            elif header.startswith(PROJECT) and not header.startswith(tuple(allowed)):
                problems.append("%s:%d includes %s: %s/ may include only %s"
                                % (path, number, header, room, ", ".join(allowed)))
            target = room_of(header)
            if target is not None and target != room and not path.endswith("_test.cc"):
                graph[room].add(target)
    return files, problems, graph


def circles(graph):
    """Every room that lies on a circle of includes, as 'a -> b -> a'."""
    found = []
    state = {}

    def visit(room, stack):
        state[room] = "open"
        for nxt in sorted(graph[room]):
            if state.get(nxt) == "open":
                found.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[room] = "done"

    for room in sorted(graph):
        if room not in state:
            visit(room, [room])
    return found


def floors(graph):
    """Each room's floor: 1 + the highest floor it includes (common is 1)."""
    memo = {}

    def floor(room):
        if room not in memo:
            memo[room] = 1 + max((floor(r) for r in graph[room]), default=0)
        return memo[room]

    return {room: floor(room) for room in graph}


def drawing(graph):
    """The room graph as text, top floor first: 'room  -> rooms it includes'."""
    level = floors(graph)
    lines = ["wiring (server/server.cc, main.cc)  -> every room below"]
    for room in sorted(graph, key=lambda r: (-level[r], r)):
        targets = sorted(graph[room], key=lambda r: (-level[r], r))
        lines.append("%-15s -> %s" % (room + "/", ", ".join(t + "/" for t in targets) or "-"))
    return "\n".join(lines) + "\n"


def run_check(source):
    files, problems, graph = check(source)
    if files < 50:
        print("read only %d files under %s: is it the source directory?" % (files, source))
        return 1
    for p in problems:
        print(p)
    for c in circles(graph):
        problems.append(c)
        print("circle of includes: %s" % c)
    readme = os.path.join(source, "README.md")
    if os.path.exists(readme):
        with open(readme, encoding="utf-8") as f:
            m = README_BLOCK.search(f.read())
        if m is None:
            problems.append("README")
            print("README.md has no <!-- rooms --> block drawing the room graph")
        elif m.group(1) != drawing(graph):
            problems.append("README")
            print("README.md's room graph is not what the includes give; it should read:\n"
                  + drawing(graph) + "(print it with: tests/layering_test.py . --graph)")
    if problems:
        print("%d problem(s) with the rooms of DESIGN.md §2" % len(problems))
        return 1
    print("%d files in %d rooms: includes point down only, no circle, the README's graph "
          "matches" % (files, len(graph)))
    return 0


# A planted include and the rule that must catch it.
PLANTS = [
    ("server/grpc/sparse_inference_service.cc", '#include "client/client.h"'),
    ("server/grpc/shard_service.cc", '#include "model_store/model_repository.h"'),
    ("server/http/rest_frontend.cc", '#include "model_store/checkpoint.h"'),
    ("server/oip/oip_protocol.cc", '#include "model_store/model_state.h"'),
    ("server/metrics/metrics.cc", '#include "model_store/model_repository.h"'),
    ("server/http/rest_frontend.cc", '#include "server/grpc/grpc_status.h"'),
    ("server/grpc/oip_grpc_service.cc", '#include "server/http/http_handler.h"'),
    ("server/core/inference_core.cc", '#include "server/oip/oip_protocol.h"'),
    ("model_store/checkpoint.cc", '#include "grpcpp/grpcpp.h"'),
    ("engine/model.cc", '#include "model_store/checkpoint.h"'),
]


def self_test(source):
    """Each planted include makes the check fail; the tree as it is passes."""
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "src")
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build*", ".git"))
        if run_check(copy) != 0:
            print("self-test: the unplanted tree fails")
            return 1
        for path, line in PLANTS:
            target = os.path.join(copy, path)
            with open(target, encoding="utf-8") as f:
                original = f.read()
            with open(target, "w", encoding="utf-8") as f:
                f.write(line + "\n" + original)
            caught = check(copy)[1]
            with open(target, "w", encoding="utf-8") as f:
                f.write(original)
            if not any(p.startswith(path + ":1 ") for p in caught):
                print("self-test: %s in %s was not caught" % (line, path))
                failures += 1
    print("self-test: %d of %d planted includes caught" % (len(PLANTS) - failures, len(PLANTS)))
    return 1 if failures else 0


def main():
    source = sys.argv[1] if len(sys.argv) > 1 else "."
    if "--graph" in sys.argv:
        print(drawing(check(source)[2]), end="")
        return 0
    if "--self-test" in sys.argv:
        return self_test(source)
    return run_check(source)


if __name__ == "__main__":
    sys.exit(main())
