"""Runs the commands the README and docs/ show, and checks that what they
print is what the docs say they print (issue 31: sample outputs drifted
from the commands').

What is run: every fenced block marked ```console in README.md and
docs/*.md. In such a block a line starting with "$ " is a command (a line
ending in "\\" continues it, and a here-document runs to its end marker);
the lines after it, up to the next command, are what it prints on stdout,
or else on stderr, or else on both (stdout first): progress lines on
stderr need not be shown. A doc's blocks run in order in one bash session of their
own, so a `cd`, an `export` or a server started with `&` carries on to the
doc's later blocks; background jobs are killed when the doc ends. The
session starts in an empty directory that is also $HOME, with `build`
linking to the build under test and PATH holding $HOME/.local/bin, then
Debian's /usr/bin (so `python3` is Debian's, with its numpy and grpcio).
The README's quickstart installs the project there itself; for the other
docs the test installs it first (cmake --install build --prefix ~/.local,
with PYTHONPATH set to its Python package).

How output is compared, line by line, trailing spaces and blank lines at
the end ignored:
  - a line `...` matches any number of lines (a long output cut short),
    and `...` within a line any text (a commit hash, a path);
  - after `<!-- docs-test: numbers vary -->` above a block, each number
    matches any number and runs of spaces match any run (columns realign):
    the words around the numbers must still match;
  - a command that shows no output may print anything.
Each command must exit 0, unless it ends with a comment `# exit N`.

A block with `<!-- docs-test: in the checkout -->` above it runs in the
source tree (as `make demo` is typed there), with BUILD_DIR set to the
build under test.

A line starting with `$ ` anywhere else (an indented block, another kind
of fence) fails the test: commands are shown in console blocks only.

What is not run: a block with `<!-- docs-test: not run: <reason> -->`
above it (long benchmarks, podman, Kubernetes, git clone). The test lists
them with their reasons, so the exemptions stay visible.

Usage: docs_commands_test.py <source dir> <build dir> [doc.md ...]
"""
import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

source, build = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
sys.path.insert(0, os.path.join(source, "tests", "testing"))
from harness import check, finish  # noqa: E402

COMMAND_SECONDS = 600
NUMBER = re.compile(r" *[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
MARK = re.compile(r"<!-- docs-test: (numbers vary|in the checkout|not run: [^>]*?) -->")


class Command:
    def __init__(self, doc, line, text, expected, marks):
        self.doc, self.line, self.text, self.expected = doc, line, text, expected
        self.numbers_vary = "numbers vary" in marks
        if "in the checkout" in marks:
            self.text = "(cd %s && export BUILD_DIR=%s\n%s\n)" % (source, build, text)
        m = re.search(r"#\s*exit (\d+)\s*$", text.splitlines()[0])
        self.exit_code = int(m.group(1)) if m else 0


def parse(doc):
    """The commands of `doc`'s console blocks, and its exempt blocks as
    (line, reason)."""
    with open(doc) as f:
        lines = f.read().split("\n")
    commands, exempt, marks, i = [], [], [], 0
    while i < len(lines):
        mark = MARK.search(lines[i])
        if mark:
            marks.append(mark.group(1))
        if lines[i].strip() != "```console":
            if lines[i].strip() and not mark:
                marks = []
            # A command shown any other way (an indented block, another
            # fence) would escape the test: every `$ ` line is in a console
            # block, run or marked not run.
            check(not re.match(r"^(    |\t)\s*\$ |^\$ ", lines[i]),
                  "%s:%d: a command outside a ```console block: %r" % (os.path.relpath(doc, source), i + 1,
                                                                         lines[i].strip()))
            i += 1
            continue
        start = i + 1
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        reasons = [m for m in marks if m.startswith("not run")]
        if reasons:
            exempt.append((start, reasons[0][len("not run: "):]))
        else:
            commands += block_commands(doc, lines, start, end, marks)
        marks, i = [], end + 1
    return commands, exempt


def block_commands(doc, lines, start, end, marks):
    commands, i = [], start
    while i < end:
        if not lines[i].startswith("$ "):
            check(False, "%s:%d: a console block line outside any command: %r" % (doc, i + 1, lines[i]))
            i += 1
            continue
        first, text = i, [lines[i][2:]]
        heredoc = re.search(r"<<-?\s*'?\"?(\w+)'?\"?", lines[i])
        while text[-1].endswith("\\") and i + 1 < end:
            i += 1
            text.append(lines[i])
        if heredoc:
            while i + 1 < end and lines[i].strip() != heredoc.group(1):
                i += 1
                text.append(lines[i])
        i += 1
        expected = []
        while i < end and not lines[i].startswith("$ "):
            expected.append(lines[i].rstrip())
            i += 1
        while expected and not expected[-1]:
            expected.pop()
        commands.append(Command(doc, first + 1, "\n".join(text), expected, marks))
    return commands


def normal(line, numbers_vary):
    line = line.rstrip()
    if not numbers_vary:
        return line
    # Table columns realign when a number's width changes.
    return re.sub(r"\s+", " ", NUMBER.sub(" <n>", line)).strip()


def pattern(line, numbers_vary):
    """A documented line as a regex: `...` inside a line matches any text."""
    return re.compile(".*".join(re.escape(part) for part in normal(line, numbers_vary).split("...")) + r"\Z")


def matches(expected, actual, numbers_vary):
    """Whether the printed lines match the documented ones (`...` alone on
    a line = any lines)."""
    want = [None if e.strip() == "..." else pattern(e, numbers_vary) for e in expected]
    got = [normal(a, numbers_vary) for a in actual]
    # reach[j]: the first i lines of want can match the first j of got.
    reach = [True] + [False] * len(got)
    for w in want:
        nxt = [False] * (len(got) + 1)
        for j in range(len(got) + 1):
            if w is None:
                nxt[j] = reach[j] or (j > 0 and nxt[j - 1])
            elif j > 0 and reach[j - 1] and w.match(got[j - 1]):
                nxt[j] = True
        reach = nxt
    return reach[len(got)]


class Session:
    """One bash for one doc; commands run one at a time, output captured
    to a file per command."""

    def __init__(self, home):
        self.home = home
        env = {"HOME": home, "PATH": "%s/.local/bin:/usr/bin:/bin" % home, "LANG": "C.UTF-8",
               "TERM": "dumb", "SPARSE_DOCS_TEST": "1"}
        self.bash = subprocess.Popen(["bash", "--norc", "--noprofile"], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=home,
                                     env=env, text=True, start_new_session=True)

    def run(self, text, timeout):
        """(exit code or None on timeout, stdout lines, stderr lines)."""
        out, err = os.path.join(self.home, ".docs-test-out"), os.path.join(self.home, ".docs-test-err")
        done = out + ".rc"
        for p in (out, err, done):
            if os.path.exists(p):
                os.remove(p)
        # A group, so a here-document, a `cd` and an `export` work as
        # typed; a server started with & outlives its command.
        self.bash.stdin.write("{\n%s\n} >%s 2>%s </dev/null; echo $? >%s.part && mv %s.part %s\n"
                              % (text, out, err, done, done, done))
        self.bash.stdin.flush()
        deadline = time.time() + timeout
        while not os.path.exists(done):
            if time.time() > deadline or self.bash.poll() is not None:
                return None, self.read(out), self.read(err)
            time.sleep(0.05)
        with open(done) as f:
            return int(f.read().strip() or -1), self.read(out), self.read(err)

    @staticmethod
    def read(path):
        if not os.path.exists(path):
            return []
        with open(path, errors="replace") as f:
            lines = f.read().split("\n")
        while lines and not lines[-1].strip():
            lines.pop()
        return lines

    def close(self):
        try:
            os.killpg(self.bash.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.bash.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.bash.pid, signal.SIGKILL)


def run_doc(doc):
    commands, exempt = parse(doc)
    name = os.path.relpath(doc, source)
    for line, reason in exempt:
        print("not run: %s:%d (%s)" % (name, line, reason))
    if not commands:
        return
    with tempfile.TemporaryDirectory(prefix="docs-test-") as home:
        os.symlink(build, os.path.join(home, "build"))
        session = Session(home)
        if name != "README.md":
            code, out, err = session.run("cmake --install build --prefix ~/.local >/dev/null && "
                                         "export PYTHONPATH=~/.local/lib/python3/dist-packages", 120)
            check(code == 0, "%s: installing into ~/.local failed: %s" % (name, "\n".join(err[-10:])))
        try:
            for c in commands:
                began = time.time()
                code, out, err = session.run(c.text, COMMAND_SECONDS)
                output = out + err
                where = "%s:%d `%s`" % (name, c.line, c.text.splitlines()[0])
                print("%6.1fs %s" % (time.time() - began, where))
                if code is None:
                    check(False, "%s did not finish in %d s; it printed:\n%s" %
                          (where, COMMAND_SECONDS, "\n".join(output[-30:])))
                    break
                check(code == c.exit_code, "%s exited %d, expected %d; it printed:\n%s" %
                      (where, code, c.exit_code, "\n".join(output[-30:])))
                if c.expected:
                    check(any(matches(c.expected, o, c.numbers_vary) for o in (out, err, output)),
                          "%s printed other than the doc shows%s.\n--- the doc:\n%s\n--- printed:\n%s" %
                          (where, " (numbers may vary)" if c.numbers_vary else "",
                           "\n".join(c.expected), "\n".join(output)))
        finally:
            session.close()


if os.environ.get("SPARSE_SANITIZE"):
    print("skipped under a sanitizer: the docs' commands are checked on the plain build")
    sys.exit(0)
docs = sys.argv[3:] or [os.path.join(source, "README.md")] + sorted(
    glob.glob(os.path.join(source, "docs", "*.md")))
for d in docs:
    run_doc(os.path.abspath(d))
finish()
