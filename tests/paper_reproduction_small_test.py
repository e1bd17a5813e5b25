#!/usr/bin/python3
"""Runs bench/paper_reproduction.py --small and checks the report it writes:
every section is there, every table has its rows, and each comparison with
the paper ends in a verdict. Usage: paper_reproduction_small_test.py SCRIPT SPARSE_TRAIN"""
import os
import subprocess
import sys
import tempfile

script, binary = sys.argv[1], sys.argv[2]
with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "report.md")
    done = subprocess.run(["/usr/bin/python3", script, "--small", "--sparse_train", binary,
                           "--output", out], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit("paper_reproduction.py failed:\n" + done.stdout + done.stderr)
    report = open(out).read()

failures = []
for heading in ["## Summary", "## Table 1", "## Figure 2(a)", "## Figure 3(a)", "## Figure 7", "## Figure 2(b)",
                "## Figure 4", "## Serving precision", "## How this differs from the paper"]:
    if heading not in report:
        failures.append("missing section " + heading)
rows = [line for line in report.splitlines() if line.startswith("| ") and "e-0" in line]
if len(rows) < 2 + 3 * 2 + 3 + 2:  # Table 1, three unit sweeps, buckets, Figure 4
    failures.append("expected at least 13 table rows with measured MSEs, got %d" % len(rows))
verdicts = report.count("**agrees**") + report.count("**does not agree**")
if verdicts != 2 * (2 + 3 * 2 + 3 + 2 + 2):  # each in its section and in the summary (+ BF16, INT8)
    failures.append("expected 30 verdicts, got %d" % verdicts)
if report.count("| BF16 |") < 2 or report.count("| INT8 |") < 2:
    failures.append("the precision section lacks its BF16 and INT8 rows")
if " nan" in report.lower() or "| nan" in report.lower():
    failures.append("report contains NaN")
if failures:
    sys.exit("\n".join(failures) + "\n\n" + report)
print("ok: %d table rows, %d verdicts" % (len(rows), verdicts))
