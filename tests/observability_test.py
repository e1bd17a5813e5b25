"""What the autoscalers, the alerts and the dashboard read, against a real
Prometheus (Debian's prometheus) scraping live servers (issue 33).

- `promtool check rules` and `promtool test rules` on deploy/prometheus/:
  every alert fires on recorded series that should fire it and stays quiet
  on ones that should not.
- Four sparse-servers on loopback, labelled as deploy/prometheus/
  prometheus.yml labels pods (namespace, pod, app): an unsharded server
  (one worker, nothing inline, so requests queue) serving a routed DSM
  with its dense twin and an LSH table; two shard servers started as a
  LeaderWorkerSet starts its workers (LWS_WORKER_INDEX=1 and 2,
  --shard=/2 --shard_index_env=LWS_WORKER_INDEX --shard_index_offset=-1);
  and their front. Prometheus scrapes all four every second.
- The prometheus-adapter rules (deploy/autoscaling/
  prometheus-adapter-config.yaml; their <<.Series>>, <<.LabelMatchers>>
  and <<.GroupBy>> rendered for the unsharded pod, as the adapter renders
  them for an HPA's Pods metric) and the KEDA ScaledObject's queries
  (deploy/autoscaling/keda/), through Prometheus's HTTP API: 0 before
  load, above 0 under `sparse-cli bench`, back to 0 after it.
- Every panel query of the Grafana dashboard (deploy/grafana/
  sparse-serve.json), its variables rendered ($namespace and $model from
  their own label_values queries, all values, as Grafana's "All";
  $__rate_interval as Grafana computes it for a 1 s scrape), under load:
  each returns data, none errs.

Usage: observability_test.py <source dir> <build dir>
"""
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import numpy as np
import yaml

source, build = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(source, "tests", "testing"))
from harness import check, finish, run, start_server, stop  # noqa: E402

CLI = os.path.join(build, "client", "sparse-cli")
PROMETHEUS = os.path.join(source, "deploy", "prometheus")
NAMESPACE = "default"

spec = importlib.util.spec_from_file_location(
    "export", os.path.join(source, "client", "python", "sparse_serve", "export.py"))
export = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export)

# 1. The alerting rules, with promtool.
for args in (["check", "rules", "alerts.yaml"], ["test", "rules", "alerts_test.yaml"]):
    done = run(["promtool"] + args, cwd=PROMETHEUS)
    check(done.returncode == 0 and "SUCCESS" in done.stdout,
          "promtool %s: %s%s" % (" ".join(args), done.stdout[-1500:], done.stderr[-1500:]))
with open(os.path.join(PROMETHEUS, "alerts.yaml")) as f:
    alerts = [r["alert"] for g in yaml.safe_load(f)["groups"] for r in g["rules"] if "alert" in r]
with open(os.path.join(PROMETHEUS, "alerts_test.yaml")) as f:
    tested = {}
    for t in yaml.safe_load(f)["tests"]:
        for a in t.get("alert_rule_test", []):
            tested.setdefault(a["alertname"], set()).add(bool(a.get("exp_alerts")))
check(set(alerts) >= {"SparseVersionFailedToLoad", "SparseQueueNearCapacity", "SparseShardUnreachable",
                      "SparseExpertLoadImbalance"}, "the four alerts issue 33 asks for: %s" % alerts)
check(all(tested.get(a) == {True, False} for a in alerts),
      "every alert is tested firing and not firing: %s" % {a: sorted(tested.get(a, ())) for a in alerts})

# 2. The queries the autoscalers and the dashboard send.
D, O, L, E, K = 16, 2, 2, 16, 8
S, M = 4, 4


def write_dsm(model_dir, seed):
    """A random lsh-routed DSM with a random dense twin (as in sharding_test.py)."""
    rng = np.random.default_rng(seed)
    t, r = L * E * K, 4  # r = log2(E)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    meta = {"format_version": "1", "kind": "dsm", "input_dim": str(D), "output_dim": str(O),
            "width": str(t), "activation": "relu", "router": "lsh", "blocks": str(L),
            "experts": str(E), "active_units": str(K)}
    model = export.safetensors(meta, [
        ("bottom.weight", f32(t, D) * 0.3), ("bottom.bias", f32(t) * 0.1),
        ("top.weight", f32(O, t) * 0.3), ("top.bias", f32(O)),
        ("router.weight", f32(L * r, D)), ("router.bias", f32(L * r) * 0.2)])
    width = 512
    dense_meta = {"format_version": "1", "kind": "dense", "input_dim": str(D), "output_dim": str(O),
                  "width": str(width), "activation": "relu"}
    dense = export.safetensors(dense_meta, [
        ("bottom.weight", f32(width, D)), ("bottom.bias", f32(width)),
        ("top.weight", f32(O, width)), ("top.bias", f32(O))])
    export.write_version(model_dir, model, dense, version=1)


def write_lsh(model_dir, seed):
    rng = np.random.default_rng(seed)
    projection = rng.standard_normal((S * M, D)).astype(np.float32)
    offset = (rng.standard_normal(S * M) * 0.5).astype(np.float32)
    tables = []
    for _ in range(S):
        keys = np.unique(rng.integers(0, 1 << M, 6))  # few buckets: some probes miss
        tables.append((keys, rng.standard_normal((len(keys), O, D + 1)).astype(np.float32),
                       rng.standard_normal((O, D + 1)).astype(np.float32)))
    export.export_lsh_table(model_dir, projection, offset, tables, degree=1, version=1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


def render_adapter(template, series, pod):
    """prometheus-adapter's metricsQuery for a Pods metric of one pod."""
    return (template.replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", 'namespace="%s",pod=~"%s"' % (NAMESPACE, pod))
            .replace("<<.GroupBy>>", "pod"))


with open(os.path.join(source, "deploy", "autoscaling", "prometheus-adapter-config.yaml")) as f:
    adapter = yaml.safe_load(yaml.safe_load(f)["data"]["config.yaml"])["rules"]
with open(os.path.join(source, "deploy", "autoscaling", "keda", "scaledobject.yaml")) as f:
    scaled = yaml.safe_load(f)
with open(os.path.join(source, "deploy", "autoscaling", "hpa", "hpa.yaml")) as f:
    hpa_metrics = {m["pods"]["metric"]["name"] for m in yaml.safe_load(f)["spec"]["metrics"]}
adapter_names = {r["name"]["as"]: r for r in adapter}
check(hpa_metrics <= set(adapter_names),
      "the HPA's Pods metrics %s are the adapter's %s" % (sorted(hpa_metrics), sorted(adapter_names)))
autoscaling = {}
for name, rule in adapter_names.items():
    series = re.match(r"\^?([a-z_]+)\$?", rule["name"]["matches"]).group(1)
    check(rule["seriesQuery"].startswith(series + "{"), "adapter rule %s discovers %s" % (name, series))
    autoscaling["adapter " + name] = render_adapter(rule["metricsQuery"], series, "sparse-serve-whole")
for trigger in scaled["spec"]["triggers"]:
    check(trigger["type"] == "prometheus", "KEDA trigger %s is prometheus" % trigger.get("name"))
    autoscaling["keda " + trigger["name"]] = trigger["metadata"]["query"]
check(len(autoscaling) >= 4, "two adapter rules and two KEDA triggers: %s" % sorted(autoscaling))

with open(os.path.join(source, "deploy", "grafana", "sparse-serve.json")) as f:
    dashboard = json.load(f)
panels = [p for p in dashboard["panels"] if p["type"] != "row"]
variables = {v["name"]: v for v in dashboard["templating"]["list"]}
check({"datasource", "namespace", "model"} <= set(variables), "dashboard variables: %s" % sorted(variables))
used = set()
for p in panels:
    for t in p["targets"]:
        used |= set(re.findall(r"\$\{?(\w+)", t["expr"]))
check(used <= set(variables) | {"__rate_interval"}, "every variable a panel uses is defined: %s" % sorted(used))

with tempfile.TemporaryDirectory() as tmp:
    repo = os.path.join(tmp, "repo")
    write_dsm(os.path.join(repo, "dsm"), 1)
    write_lsh(os.path.join(repo, "lsh"), 2)
    servers, prometheus, benches = [], None, []
    try:
        whole, (whole_port, whole_metrics) = start_server(
            build, repo, "--metrics_port=0", "--workers=1", "--inline_max_flops=0",
            stderr=subprocess.PIPE)
        servers.append(whole)
        shard_ports = []
        for worker in (1, 2):  # LeaderWorkerSet workers 1..2 are shards 0..1
            proc = subprocess.Popen(
                [os.path.join(build, "server", "sparse-server"), "--model_repository=" + repo,
                 "--address=127.0.0.1", "--port=0", "--metrics_port=0", "--shard=/2",
                 "--shard_index_env=LWS_WORKER_INDEX", "--shard_index_offset=-1"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env=dict(os.environ, LWS_WORKER_INDEX=str(worker)))
            servers.append(proc)
            shard_ports.append((int(proc.stdout.readline()), int(proc.stdout.readline())))
        front, (front_port, front_metrics) = start_server(
            build, repo, "--metrics_port=0",
            "--shard_targets=" + ";".join("127.0.0.1:%d" % p for p, _ in shard_ports),
            stderr=subprocess.PIPE)
        servers.append(front)

        targets = [("sparse-serve-whole", "sparse-serve", whole_metrics),
                   ("sparse-group-0", "sparse-serve", front_metrics),
                   ("sparse-group-0-1", "sparse-shard", shard_ports[0][1]),
                   ("sparse-group-0-2", "sparse-shard", shard_ports[1][1])]
        prom_port = free_port()
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": "sparse-serve", "static_configs": [
                      {"targets": ["127.0.0.1:%d" % port],
                       "labels": {"namespace": NAMESPACE, "pod": pod, "app": app}}
                      for pod, app, port in targets]}]}
        with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
            yaml.safe_dump(config, f)
        prometheus = subprocess.Popen(
            ["prometheus", "--config.file=" + os.path.join(tmp, "prometheus.yml"),
             "--storage.tsdb.path=" + os.path.join(tmp, "tsdb"),
             "--web.listen-address=127.0.0.1:%d" % prom_port],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        api = "http://127.0.0.1:%d/api/v1/" % prom_port

        def query(expr):
            """(values of the instant query, error text or None)."""
            try:
                answer = get(api + "query?query=" + urllib.parse.quote(expr))
            except OSError as e:
                return [], str(e)
            if answer.get("status") != "success":
                return [], answer.get("error", "failed")
            return [float(r["value"][1]) for r in answer["data"]["result"]], None

        def scalar(expr):
            values, error = query(expr)
            return sum(v for v in values if v == v) if values else None

        deadline = time.time() + 30
        while time.time() < deadline and scalar('count(up{job="sparse-serve"} == 1)') != len(targets):
            time.sleep(0.5)
        check(scalar('count(up{job="sparse-serve"} == 1)') == len(targets),
              "Prometheus scrapes all %d servers" % len(targets))
        # The front loaded the DSM from its shards (LWS_WORKER_INDEX - 1 each).
        deadline = time.time() + 30
        while time.time() < deadline and scalar('sparse_loaded_versions{pod="sparse-group-0",model="dsm"}') != 1:
            time.sleep(0.5)
        check(scalar('sparse_loaded_versions{pod="sparse-group-0",model="dsm"}') == 1,
              "the front serves dsm from the shards started with --shard_index_env")

        before = {name: scalar(expr) for name, expr in autoscaling.items()}
        check(all(v == 0 for v in before.values()), "autoscaling queries are 0 before load: %s" % before)

        # Load: the unsharded server's dense and sparse paths and the LSH
        # table, and the front; ~8 s each.
        def bench(port, model, paths, concurrency):
            return subprocess.Popen(
                [CLI, "--target=127.0.0.1:%d" % port, "bench", "--model=" + model, "--paths=" + paths,
                 "--concurrency=%d" % concurrency, "--warmup_seconds=0", "--window_seconds=2",
                 "--stable_windows=4", "--max_windows=4", "--json", "--quiet"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        load_start = time.time()
        benches = [bench(whole_port, "dsm", "dense", 16), bench(whole_port, "lsh", "sparse", 4),
                   bench(front_port, "dsm", "sparse", 4)]
        peak = dict.fromkeys(autoscaling, 0.0)
        time.sleep(2)
        # Every panel's queries, under load, variables rendered.
        rate_interval = "4s"  # Grafana: max($__interval + scrape, 4 x scrape) at 1 s scrapes
        values = {}
        for name in ("namespace", "model"):
            label_query = variables[name]["query"]["query"]
            m = re.match(r"label_values\((.*), (\w+)\)$", label_query)
            selector = m.group(1).replace("$namespace", values.get("namespace", ".*"))
            answer = get(api + "series?match[]=" + urllib.parse.quote(selector))
            found = sorted({s[m.group(2)] for s in answer["data"] if m.group(2) in s})
            check(found, "variable $%s's query %s returns values" % (name, label_query))
            values[name] = "(" + "|".join(re.escape(v) for v in found) + ")"
        check(values.get("model") == "(dsm|lsh)", "$model offers both models: %s" % values.get("model"))

        def render(expr):
            for name, value in values.items():
                expr = expr.replace("${%s}" % name, value).replace("$" + name, value)
            return expr.replace("$__rate_interval", rate_interval)

        empty = {}
        for attempt in range(6):
            empty = {}
            for p in panels:
                for t in p["targets"]:
                    expr = render(t["expr"])
                    got, error = query(expr)
                    if error or not any(v == v for v in got):  # NaN alone is no data
                        empty["%s [%s]" % (p["title"], t["refId"])] = error or "no data: " + expr
            if not empty:
                break
            time.sleep(1)
        check(not empty, "every dashboard panel query returns data under load: %s" % json.dumps(empty, indent=1))

        while any(b.poll() is None for b in benches):
            for name, expr in autoscaling.items():
                v = scalar(expr)
                peak[name] = max(peak[name], v or 0)
            time.sleep(0.3)
        load_seconds = time.time() - load_start
        for b in benches:
            out, err = b.communicate()
            check(b.returncode == 0, "sparse-cli bench: %s" % err[-1000:])
        check(all(v > 0 for v in peak.values()), "autoscaling queries rise under load: %s" % peak)

        # After: the gauges drop to 0 at the next scrapes.
        after = {}
        deadline = time.time() + 15
        while time.time() < deadline:
            after = {name: scalar(expr) for name, expr in autoscaling.items()}
            if all(v == 0 for v in after.values()):
                break
            time.sleep(0.5)
        check(all(v == 0 for v in after.values()), "autoscaling queries fall back to 0 after load: %s" % after)
        print("load %.1f s; autoscaling queries before %s, peak %s, after %s; %d dashboard panels answered"
              % (load_seconds, before, peak, after, len(panels)))
    finally:
        for b in benches:
            if b.poll() is None:
                b.kill()
                b.wait()
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=30)
        for s in reversed(servers):
            code, log = stop(s)
            check(code == 0, "server stopped cleanly (exit %s): %s" % (code, log[-1000:]))

finish()
