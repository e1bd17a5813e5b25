#!/usr/bin/env python3
"""Median-of-rotations table from results/raw.tsv (+ per-run and load tables)."""
import csv, statistics, sys

raw = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
rot = list(csv.DictReader(open(sys.argv[2]), delimiter="\t"))
libs = ["civetweb", "beast", "evhttp", "beast_default"]
MAIN = {"civetweb", "beast", "evhttp"}
bodies = ["small", "bin4k"]
label = {"small": "(a) JSON 307 B", "bin4k": "(b) binary 4096 B"}
med = lambda rows, k: statistics.median(float(x[k]) for x in rows)

print("### Median of %d rotations\n" % len(rot))
print("| library | body | req/s | req/s min–max | p50 latency (µs) | p99 latency (µs) | server CPU µs/req "
      "| server CPU min–max | wrk CPU µs/req | non-2xx (sum) | socket errors (sum) | runs |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
rng = lambda rows, k, f: f"{min(float(x[k]) for x in rows):{f}}–{max(float(x[k]) for x in rows):{f}}"
best = {}
for body in bodies:
    for lib in libs:
        rows = [x for x in raw if x["lib"] == lib and x["body"] == body]
        if not rows:
            continue
        non2 = sum(int(x["err_status"]) for x in rows)
        sock = sum(int(x[k]) for x in rows for k in ("err_connect", "err_read", "err_write", "err_timeout"))
        rps, cpu = med(rows, "req_s"), med(rows, "server_cpu_us_per_req")
        if lib in MAIN:
            best.setdefault(body, []).append((lib, rps, cpu))
        print(f"| {lib} | {label[body]} | {rps:.0f} | {rng(rows,'req_s','.0f')} | {med(rows,'p50_us'):.0f} "
              f"| {med(rows,'p99_us'):.0f} | {cpu:.2f} | {rng(rows,'server_cpu_us_per_req','.1f')} "
              f"| {med(rows,'wrk_cpu_us_per_req'):.2f} | {non2} | {sock} | {len(rows)} |")
print("\n(beast_default = beast_server with Beast's default flat_buffer, no 16 KiB reserve;"
      " not counted in the lines below)\n")
for body, v in best.items():
    hi = max(v, key=lambda t: t[1]); lo = min(v, key=lambda t: t[2])
    print(f"- {label[body]}: highest req/s = **{hi[0]}** ({hi[1]:.0f}); "
          f"lowest server CPU/req = **{lo[0]}** ({lo[2]:.2f} µs)")
noisy = [x for x in raw if float(x["other_cpu_pct"]) > 20]
print(f"\nRuns where other processes used > 20 % of one core during the 10 s window: {len(noisy)} of {len(raw)}"
      + ("" if not noisy else " (" + ", ".join(f"r{x['rotation']} {x['lib']} {x['body']} {x['other_cpu_pct']}%" for x in noisy) + ")"))
print("\n### Load before each rotation\n")
print("| rotation | start (UTC) | load1 at start | loadavg 1/5/15 | waited (s) | 3 s idle-sample CPU busy (% of 1 core) | order |")
print("|---:|---|---:|---|---:|---:|---|")
for x in rot:
    print(f"| {x['rotation']} | {x['start_utc']} | {x['load1_at_start']} | {x['loadavg']} | {x['waited_s']} "
          f"| {x['idle_sample_busy_pct']} | {x['order']} |")
print("\n### Every run\n")
cols = ["rotation", "lib", "body", "threads", "requests", "req_s", "p50_us", "p99_us",
        "server_cpu_us_per_req", "wrk_cpu_us_per_req", "other_cpu_pct", "err_status",
        "err_connect", "err_read", "err_write", "err_timeout", "server_alive"]
print("| " + " | ".join(cols) + " |")
print("|" + "---|" * len(cols))
for x in raw:
    print("| " + " | ".join(x[c] for c in cols) + " |")
