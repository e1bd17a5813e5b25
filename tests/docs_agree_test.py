"""Limits the docs state agree with the code that enforces them (issue 31:
docs/configuration.md once said a manifest is read up to 64 KiB, where the
loader allows 16 MiB). Each limit is read from its source constant and
every sentence of docs/ and the README that states it is checked.

Usage: docs_agree_test.py <source dir> <build dir>
"""
import glob
import os
import re
import sys

source = sys.argv[1]
sys.path.insert(0, os.path.join(source, "tests", "testing"))
from harness import check, finish  # noqa: E402

UNITS = {"bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def constant(path, name):
    """The value of `constexpr ... name = <int> [<< <int>];` in a source file."""
    with open(os.path.join(source, path)) as f:
        m = re.search(r"\b%s\s*=\s*(\d+)\s*(?:<<\s*(\d+))?;" % name, f.read())
    if m is None:
        sys.exit("%s not found in %s" % (name, path))
    return int(m.group(1)) << int(m.group(2) or 0)


# limit name -> (its value in the code, patterns of the docs' sentences
# stating it; group 1 the number, group 2 the unit; whitespace may wrap).
LIMITS = {
    "manifest size": (constant("model_store/checkpoint.cc", "kMaxManifestBytes"),
                      [r"(\d+) (KiB|MiB|GiB|bytes) for\s+a manifest", r"manifest (\d+) (KiB|MiB|GiB)\b",
                       r"manifest is at most (\d+) (KiB|MiB|GiB)"]),
    "config.pbtxt size": (constant("model_store/model_source.cc", "kMaxConfigBytes"),
                          [r"(\d+) (KiB|MiB|GiB|bytes) for\s+`config\.pbtxt`", r"config (\d+) (KiB|MiB|GiB)\b"]),
}

docs = sorted(glob.glob(os.path.join(source, "docs", "*.md"))) + [os.path.join(source, "README.md")]
for name, (value, patterns) in LIMITS.items():
    stated = 0
    for path in docs:
        with open(path) as f:
            text = f.read()
        for pattern in patterns:
            for m in re.finditer(pattern, text):
                stated += 1
                said = int(m.group(1)) * UNITS[m.group(2)]
                check(said == value, "%s: %r states the %s as %d bytes; the code allows %d" %
                      (os.path.relpath(path, source), m.group(0), name, said, value))
    check(stated > 0, "no doc states the %s: the patterns went stale" % name)
finish()
