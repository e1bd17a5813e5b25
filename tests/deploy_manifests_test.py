"""The deployment files stay valid and agree with each other (issue 7).

Parses every manifest in deploy/kubernetes/, deploy/compose.yaml and
deploy/Dockerfile, and checks the fields a deployment relies on: the image,
the ports (gRPC 8500, metrics 8502) and that probes, Services and compose
use them; native gRPC probes; the model repository mounted read-only from a
ReadOnlyMany claim; the non-root user the image runs as; the termination
grace period covering the preStop pause and --drain_seconds; resources;
that the Services, HPA and PDB select the Deployment's pods. Then kubectl
(Debian's kubernetes-client, or any kubectl on PATH) runs
`kubectl apply --dry-run=client` on each file and on the kustomization.
The sharded overlay (deploy/kubernetes-sharded/: the base's Deployment as
fronts, two StatefulSets of shard servers, one headless Service per shard
index) is rendered with `kubectl kustomize` and checked the same way: pod
names as shard indexes, the fronts' targets naming the per-index Services
in order, the Services selecting fronts or shards as they should. The same
topology as plain Pods for podman kube play (deploy/podman-sharded/) is
checked for its names, targets, read-only repository and a front published
on loopback alone, and dry-run too.
The autoscaling components (deploy/autoscaling/hpa and keda) are rendered
on the unsharded Deployment and on the sharded fronts: the HPA's Pods
metrics are the prometheus-adapter rules' (no CPU), the KEDA overlay drops
the base HPA and its ScaledObject scales the same Deployment. The
ScaledObjects and deploy/prometheus/prometheus-rule.yaml (alerts.yaml's
groups, unchanged) validate against KEDA's and the Prometheus Operator's
published CRD schemas (vendored with their licences in tests/schemas/,
run with node); broken ones are refused. The KServe
runtime serves format sparse-serve over v2 REST and gRPC from /mnt/models
with --model_name={{.Name}} and Prometheus annotations on its metrics
port, and the InferenceServices use it. The LeaderWorkerSet overlay
(deploy/kubernetes-lws/): the leader's targets name its group's workers
1..N in order, a worker is shard LWS_WORKER_INDEX - 1 of N
(--shard_index_env, --shard_index_offset=-1), the Services and PDB select
leaders, the HPA scales the LeaderWorkerSet.
kubectl needs an API server for discovery even in a client dry run; with
no cluster here, a stub on loopback answers discovery for the kinds used
(keda.sh, monitoring.coreos.com, serving.kserve.io and
leaderworkerset.x-k8s.io too) and "not
found" for every object (so kubectl plans a create), and
--validate=false skips the OpenAPI download the stub cannot offer: kubectl
still decodes each object and maps its kind. The field checks above are
what stands in for schema validation.

Usage: deploy_manifests_test.py <source dir> <build dir>
"""
import glob
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading

import yaml

source = sys.argv[1]
sys.path.insert(0, os.path.join(source, "tests", "testing"))
from harness import check, finish  # noqa: E402

K8S = os.path.join(source, "deploy", "kubernetes")
GRPC_PORT, METRICS_PORT = 8500, 8502

docs = {}
for path in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            check(isinstance(doc, dict) and "kind" in doc, "%s holds a Kubernetes object" % path)
            docs.setdefault(doc["kind"], []).append((os.path.basename(path), doc))


def one(kind):
    found = docs.get(kind, [])
    check(len(found) >= 1, "a %s manifest" % kind)
    return found[0][1] if found else {}


# The Dockerfile: user, ports, entrypoint, health check.
dockerfile = open(os.path.join(source, "deploy", "Dockerfile")).read()
user = re.search(r"^USER (\d+)", dockerfile, re.M)
check(user is not None and int(user.group(1)) != 0, "the image runs as a numeric non-root USER")
uid = int(user.group(1)) if user else None
check(re.search(r"^EXPOSE %d %d$" % (GRPC_PORT, METRICS_PORT), dockerfile, re.M) is not None,
      "the image exposes %d and %d" % (GRPC_PORT, METRICS_PORT))
entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M)
entry = json.loads(entrypoint.group(1)) if entrypoint else []
check("--port=%d" % GRPC_PORT in entry and "--metrics_port=%d" % METRICS_PORT in entry
      and "--model_repository=/models" in entry, "the entrypoint serves /models on the exposed ports: %s" % entry)
check(re.search(r'HEALTHCHECK .*\n?.*"sparse-cli", "--target=127.0.0.1:%d".*"health"' % GRPC_PORT, dockerfile)
      is not None, "the HEALTHCHECK runs sparse-cli health on the gRPC port")

# The Deployment.
deployment = one("Deployment")
pod = deployment.get("spec", {}).get("template", {})
labels = pod.get("metadata", {}).get("labels", {})
spec = pod.get("spec", {})
check(deployment.get("spec", {}).get("selector", {}).get("matchLabels") == labels,
      "the Deployment selects its own pods")
containers = spec.get("containers", [])
check(len(containers) == 1, "one container")
c = containers[0] if containers else {}
check(c.get("image", "").split("/")[-1].split(":")[0] == "sparse-serve", "image sparse-serve: %s" % c.get("image"))
ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
check(ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT}, "container ports: %s" % ports)
for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
    grpc_probe = c.get(probe, {}).get("grpc", {})
    check(grpc_probe.get("port") == GRPC_PORT, "%s is a native gRPC probe on %d: %s" % (probe, GRPC_PORT, c.get(probe)))
security = spec.get("securityContext", {})
check(security.get("runAsNonRoot") is True and security.get("runAsUser") == uid,
      "the pod runs as the image's user %s: %s" % (uid, security))
check(c.get("securityContext", {}).get("readOnlyRootFilesystem") is True, "read-only root file system")
mounts = {m.get("name"): m for m in c.get("volumeMounts", [])}
volumes = {v.get("name"): v for v in spec.get("volumes", [])}
models = mounts.get("models", {})
check(models.get("mountPath") == "/models" and models.get("readOnly") is True, "/models mounted read-only")
claim = volumes.get("models", {}).get("persistentVolumeClaim", {})
pvc = one("PersistentVolumeClaim")
check(claim.get("claimName") == pvc.get("metadata", {}).get("name") and claim.get("readOnly") is True,
      "the models volume is the claim, read-only")
check("ReadOnlyMany" in pvc.get("spec", {}).get("accessModes", []), "the claim is ReadOnlyMany")
args = c.get("args", [])
drain = [float(a.split("=", 1)[1]) for a in args if a.startswith("--drain_seconds=")]
check(len(drain) == 1, "--drain_seconds is set: %s" % args)
pause = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
pause_s = float(pause[1]) if len(pause) == 2 and pause[0] == "sleep" else 0
grace = spec.get("terminationGracePeriodSeconds", 30)
check(drain and grace >= pause_s + drain[0], "grace %ss covers preStop %ss + drain %ss" % (grace, pause_s, drain))
resources = c.get("resources", {})
check(resources.get("requests", {}).get("memory") and resources.get("limits", {}).get("memory"),
      "memory request and limit are set: %s" % resources)


def mebibytes(quantity):
    units = {"Ki": 1 / 1024.0, "Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if str(quantity).endswith(suffix):
            return float(str(quantity)[:-2]) * factor
    return float(quantity) / (1 << 20)


if resources.get("requests", {}).get("memory") and resources.get("limits", {}).get("memory"):
    check(mebibytes(resources["limits"]["memory"]) >= mebibytes(resources["requests"]["memory"]) >= 256,
          "memory limit >= request >= 256 Mi (the d=1024 DSM serves in ~245 MiB)")

# Services, HPA, PDB select the pods and use the ports.
services = {d["metadata"]["name"]: d for _, d in docs.get("Service", [])}
check(len(services) == 2, "two Services: %s" % sorted(services))
headless = [s for s in services.values() if s["spec"].get("clusterIP") == "None"]
check(len(headless) == 1, "one of them headless (client-side balancing)")
for name, s in services.items():
    check(s["spec"].get("selector") == labels, "Service %s selects the pods" % name)
    for p in s["spec"].get("ports", []):
        check(p.get("targetPort") in ports, "Service %s targets a container port: %s" % (name, p))
    check(any(p.get("port") == GRPC_PORT for p in s["spec"].get("ports", [])), "Service %s serves gRPC" % name)
hpa = one("HorizontalPodAutoscaler")
target = hpa.get("spec", {}).get("scaleTargetRef", {})
check(target.get("kind") == "Deployment" and target.get("name") == deployment["metadata"]["name"],
      "the HPA scales the Deployment")
check(1 <= hpa["spec"].get("minReplicas", 1) <= hpa["spec"].get("maxReplicas", 0), "HPA min <= max")
check(any(m.get("resource", {}).get("name") == "cpu" for m in hpa["spec"].get("metrics", [])), "HPA on CPU")
pdb = one("PodDisruptionBudget")
check(pdb.get("spec", {}).get("selector", {}).get("matchLabels") == labels, "the PDB selects the pods")
check(pdb["spec"].get("minAvailable", 0) < hpa["spec"].get("minReplicas", 1),
      "the PDB leaves room to evict a pod at the minimum replica count")
with open(os.path.join(K8S, "kustomization.yaml")) as f:
    kustomization = yaml.safe_load(f)
listed = set(kustomization.get("resources", []))
on_disk = {os.path.basename(p) for p in glob.glob(os.path.join(K8S, "*.yaml"))} - {"kustomization.yaml"}
check(listed == on_disk, "kustomization lists every manifest: %s vs %s" % (sorted(listed), sorted(on_disk)))

# The sharded overlay (deploy/kubernetes-sharded/), as kubectl renders it.
SHARDED = os.path.abspath(os.path.join(source, "deploy", "kubernetes-sharded"))
kubectl = shutil.which("kubectl")
check(kubectl is not None, "kubectl is installed (deploy/install-deps.sh installs kubernetes-client)")
if kubectl:
    rendered = subprocess.run([kubectl, "kustomize", SHARDED], capture_output=True, text=True, timeout=60)
    check(rendered.returncode == 0, "kubectl kustomize %s: %s" % (SHARDED, rendered.stderr[-500:]))
    sharded = {}
    for doc in yaml.safe_load_all(rendered.stdout or ""):
        if doc:
            sharded.setdefault(doc["kind"], []).append(doc)
    sets = sharded.get("StatefulSet", [])
    check(len(sets) == 2, "two StatefulSets of shards (replicas a and b): %d" % len(sets))
    counts = {s["spec"].get("replicas") for s in sets}
    check(len(counts) == 1, "both StatefulSets have one pod per shard index: %s" % counts)
    n = counts.pop() if len(counts) == 1 else 0
    svc_by_name = {d["metadata"]["name"]: d for d in sharded.get("Service", [])}
    for st in sets:
        name = st["metadata"]["name"]
        pod = st["spec"]["template"]
        pod_labels = pod["metadata"].get("labels", {})
        check(st["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(),
              "StatefulSet %s selects its own pods" % name)
        governing = svc_by_name.get(st["spec"].get("serviceName"), {})
        check(governing.get("spec", {}).get("clusterIP") == "None" and
              governing["spec"].get("selector", {}).items() <= pod_labels.items(),
              "StatefulSet %s is governed by a headless Service selecting its pods" % name)
        sc = pod["spec"]["containers"][0]
        check(sc.get("image") == c.get("image"), "%s runs the fronts' image" % name)
        shard_args = sc.get("args", [])
        check("--shard=$(POD_NAME)/%d" % n in shard_args,
              "%s passes its pod name as the shard index of %d: %s" % (name, n, shard_args))
        env = {e["name"]: e for e in sc.get("env", [])}
        check(env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
              "%s gets POD_NAME from metadata.name" % name)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            check(sc.get(probe, {}).get("grpc", {}).get("port") == GRPC_PORT,
                  "%s %s is a native gRPC probe" % (name, probe))
        shard_mounts = {m["name"]: m for m in sc.get("volumeMounts", [])}
        shard_volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        check(shard_mounts.get("models", {}).get("readOnly") is True and
              shard_volumes.get("models", {}).get("persistentVolumeClaim", {}).get("claimName") ==
              pvc.get("metadata", {}).get("name"),
              "%s mounts the same repository read-only" % name)
        shard_drain = [float(a.split("=", 1)[1]) for a in shard_args if a.startswith("--drain_seconds=")]
        shard_pause = sc.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        check(shard_drain and pod["spec"].get("terminationGracePeriodSeconds", 30) >=
              float(shard_pause[1]) + shard_drain[0], "%s's grace period covers its drain" % name)
        check(pod["spec"].get("securityContext", {}).get("runAsUser") == uid, "%s runs as the image's user" % name)
    # One headless Service per index, selecting that index's pods of both sets.
    front_pods = deployment.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
    shard_pods = sets[0]["spec"]["template"]["metadata"]["labels"] if sets else {}
    for i in range(n):
        s = svc_by_name.get("sparse-shard-%d" % i, {})
        selector = s.get("spec", {}).get("selector", {})
        check(s.get("spec", {}).get("clusterIP") == "None" and
              selector.get("apps.kubernetes.io/pod-index") == str(i) and
              all(shard_pods.get(k) == v for k, v in selector.items() if k != "apps.kubernetes.io/pod-index") and
              "sparse-serve/replica" not in selector,
              "Service sparse-shard-%d selects index %d of both StatefulSets: %s" % (i, i, selector))
    for name in ("sparse-serve", "sparse-serve-pods"):
        selector = svc_by_name.get(name, {}).get("spec", {}).get("selector", {})
        check(selector and selector.items() <= front_pods.items() and not selector.items() <= shard_pods.items(),
              "Service %s selects the fronts, not the shards" % name)
    fronts = sharded.get("Deployment", [])
    front_args = fronts[0]["spec"]["template"]["spec"]["containers"][0].get("args", []) if fronts else []
    targets = [a.split("=", 1)[1] for a in front_args if a.startswith("--shard_targets=")]
    check(len(targets) == 1 and targets[0].split(";") ==
          ["dns:///sparse-shard-%d:%d" % (i, GRPC_PORT) for i in range(n)],
          "the fronts name the %d per-index Services in order: %s" % (n, targets))
    check("--drain_seconds=25" in front_args, "the fronts keep the base's drain: %s" % front_args)
    sharded_hpa = sharded.get("HorizontalPodAutoscaler", [{}])[0]
    check(sharded_hpa.get("spec", {}).get("scaleTargetRef", {}).get("name") == deployment["metadata"]["name"],
          "the HPA scales the fronts")
    budgets = [d for d in sharded.get("PodDisruptionBudget", []) if d["metadata"]["name"].startswith("sparse-shard")]
    check(len(budgets) == 2 and all(b["spec"].get("maxUnavailable") == 1 for b in budgets),
          "each StatefulSet has a budget of one pod down: %s" % [b["metadata"]["name"] for b in budgets])

# The sharded topology as plain Pods for podman kube play
# (deploy/podman-sharded/pods.yaml; make test-container plays it).
PODS = os.path.abspath(os.path.join(source, "deploy", "podman-sharded", "pods.yaml"))
with open(PODS) as f:
    pods = {d["metadata"]["name"]: d for d in yaml.safe_load_all(f)}
check(all(d["kind"] == "Pod" for d in pods.values()), "pods.yaml holds Pods alone (podman 4.3 plays them)")
check(sorted(pods) == ["sparse-front"] + ["sparse-shard-%d" % i for i in range(4)],
      "pods.yaml: a front and shards 0..3: %s" % sorted(pods))
for name, pod in pods.items():
    spec = pod["spec"]
    container = spec["containers"][0]
    check(container["image"] == "localhost/sparse-serve:latest", "%s runs the image" % name)
    check(spec["securityContext"].get("runAsUser") == 10001, "%s runs as the image's user" % name)
    check(container["volumeMounts"][0]["mountPath"] == "/models" and container["volumeMounts"][0]["readOnly"],
          "%s mounts the repository read-only at /models" % name)
    published = [p for p in container.get("ports", []) if "hostPort" in p]
    if name.startswith("sparse-shard-"):
        check(container["args"][0] == "--shard=%s/4" % name, "%s passes its own name as the index" % name)
        check(not published, "%s publishes no port" % name)
    else:
        targets = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--shard_targets=")]
        check(targets == [";".join("dns:///sparse-shard-%d:%d" % (i, GRPC_PORT) for i in range(4))],
              "the front's targets name the shard pods in order: %s" % targets)
        check(len(published) == 1 and published[0].get("hostIP") == "127.0.0.1"
              and published[0]["containerPort"] == GRPC_PORT,
              "the front publishes gRPC on loopback alone: %s" % published)

# compose.yaml.
with open(os.path.join(source, "deploy", "compose.yaml")) as f:
    compose = yaml.safe_load(f)
svc = compose.get("services", {})
check(set(svc) == {"train", "server", "bench"}, "compose has train, server and bench: %s" % sorted(svc))
server = svc.get("server", {})
check("models:/models:ro" in server.get("volumes", []), "the server mounts the models volume read-only")
check("models:/models" in svc.get("train", {}).get("volumes", []), "train writes the models volume")
check(server.get("depends_on", {}).get("train", {}).get("condition") == "service_completed_successfully",
      "the server waits for train")
check(svc.get("bench", {}).get("depends_on", {}).get("server", {}).get("condition") == "service_healthy",
      "bench waits for a healthy server (the image's HEALTHCHECK)")
check(any(str(p).endswith(":%d" % GRPC_PORT) for p in server.get("ports", [])), "compose publishes gRPC")
compose_drain = [float(a.split("=", 1)[1]) for a in server.get("command", []) if a.startswith("--drain_seconds=")]
stop = float(str(server.get("stop_grace_period", "10s")).rstrip("s"))
check(compose_drain and stop >= compose_drain[0], "stop_grace_period %ss covers the drain %s" % (stop, compose_drain))


def render(kustomization_dir):
    done = subprocess.run([kubectl, "kustomize", kustomization_dir], capture_output=True, text=True, timeout=60)
    check(done.returncode == 0, "kubectl kustomize %s: %s" % (kustomization_dir, done.stderr[-500:]))
    objects = {}
    for doc in yaml.safe_load_all(done.stdout or ""):
        if doc:
            objects.setdefault(doc["kind"], []).append(doc)
    return objects


# Autoscaling (deploy/autoscaling/): the components on the unsharded
# Deployment and on the sharded fronts, rendered from kustomizations
# written under the build directory (kustomize takes relative paths only).
AUTOSCALING = os.path.join(source, "deploy", "autoscaling")
with open(os.path.join(AUTOSCALING, "prometheus-adapter-config.yaml")) as f:
    adapter_map = yaml.safe_load(f)
adapter_rules = yaml.safe_load(adapter_map["data"]["config.yaml"])["rules"]
adapter_metrics = {r["name"]["as"] for r in adapter_rules}
check(all(r["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
          for r in adapter_rules), "the adapter's rules map the namespace and pod labels to their resources")
rendered_autoscaling = {}
scaled_objects = []
if kubectl:
    LWS_DIR = os.path.abspath(os.path.join(source, "deploy", "kubernetes-lws"))
    for base_name, base_dir, components in (("unsharded", K8S, ("hpa", "keda")), ("sharded", SHARDED, ("hpa", "keda")),
                                            ("lws", LWS_DIR, ("hpa",))):
        for component in components:
            where = os.path.join(sys.argv[2], "deploy-manifests", "%s-%s" % (base_name, component))
            os.makedirs(where, exist_ok=True)
            with open(os.path.join(where, "kustomization.yaml"), "w") as f:
                yaml.safe_dump({"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                                "resources": [os.path.relpath(base_dir, where)],
                                "components": [os.path.relpath(os.path.join(AUTOSCALING, component), where)]}, f)
            objects = render(where)
            rendered_autoscaling[(base_name, component)] = where
            front = (objects.get("Deployment") or objects.get("LeaderWorkerSet") or [{}])[0]
            front_name = front.get("metadata", {}).get("name")
            if component == "hpa":
                hpas = objects.get("HorizontalPodAutoscaler", [])
                check(len(hpas) == 1 and not objects.get("ScaledObject"), "%s + hpa: one HPA" % base_name)
                h = hpas[0]["spec"] if hpas else {}
                names = {m.get("pods", {}).get("metric", {}).get("name") for m in h.get("metrics", [])}
                check(all(m["type"] == "Pods" for m in h.get("metrics", [])) and names == adapter_metrics,
                      "%s + hpa: Pods metrics %s are the adapter's %s, no CPU" % (base_name, names, adapter_metrics))
                check(h.get("scaleTargetRef", {}).get("name") == front_name, "%s + hpa scales %s" % (base_name, front_name))
            else:
                check(not objects.get("HorizontalPodAutoscaler"), "%s + keda: the base HPA is gone (KEDA makes its own)"
                      % base_name)
                so = objects.get("ScaledObject", [{}])[0]
                scaled_objects.append(so)
                check(so.get("spec", {}).get("scaleTargetRef", {}).get("name") == front_name,
                      "%s + keda: the ScaledObject scales %s" % (base_name, front_name))
                triggers = so.get("spec", {}).get("triggers", [])
                check(triggers and all(t["type"] == "prometheus" and "sparse_requests" in t["metadata"]["query"]
                                       and "cpu" not in t["metadata"]["query"] for t in triggers),
                      "%s + keda: prometheus triggers on the load gauges" % base_name)
            if base_name == "sharded":
                check(len(objects.get("StatefulSet", [])) == 2, "sharded + %s keeps the shards" % component)

# The Prometheus Operator's form of the alerts: the same groups as
# deploy/prometheus/alerts.yaml (which promtool tests).
PROMETHEUS_DIR = os.path.join(source, "deploy", "prometheus")
with open(os.path.join(PROMETHEUS_DIR, "alerts.yaml")) as f:
    alert_groups = yaml.safe_load(f)
with open(os.path.join(PROMETHEUS_DIR, "prometheus-rule.yaml")) as f:
    prometheus_rule = yaml.safe_load(f)
check(prometheus_rule.get("kind") == "PrometheusRule" and prometheus_rule.get("spec") == alert_groups,
      "prometheus-rule.yaml holds alerts.yaml's groups unchanged")

# The published CRD schemas (tests/schemas/, vendored with their
# licences): every ScaledObject as rendered and the PrometheusRule
# validate, and broken ones do not (the validator is live).
node = shutil.which("node")
check(node is not None, "node is installed (deploy/install-deps.sh installs nodejs)")
if node and scaled_objects:
    broken_so = json.loads(json.dumps(scaled_objects[0]))
    broken_so["spec"]["triggers"][0]["metadata"]["threshold"] = 1
    broken_rule = json.loads(json.dumps(prometheus_rule))
    broken_rule["spec"]["groups"][0]["rules"][0]["for"] = 60
    for objects, want in ((scaled_objects + [prometheus_rule], 0), ([broken_so], 1), ([broken_rule], 1)):
        path = os.path.join(sys.argv[2], "deploy-manifests", "crd-objects.json")
        with open(path, "w") as f:
            json.dump(objects, f)
        done = subprocess.run([node, os.path.join(source, "tests", "schemas", "validate.mjs"), path],
                              capture_output=True, text=True, timeout=60)
        names = ", ".join("%s %s" % (o["kind"], o["metadata"]["name"]) for o in objects)
        check(done.returncode == want and ("must be string" in done.stdout) == (want == 1) and
              done.stdout.count("ok " if want == 0 else "invalid ") == len(objects),
              "the published schemas %s %s: %s%s" % ("accept" if want == 0 else "refuse the broken", names,
                                                     done.stdout, done.stderr[-500:]))

# KServe (deploy/kserve/): the runtime and the InferenceServices on it.
KSERVE = os.path.join(source, "deploy", "kserve")
kserve = {}
for path in sorted(glob.glob(os.path.join(KSERVE, "*.yaml"))):
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            kserve.setdefault(doc["kind"], []).append(doc)
runtime = kserve.get("ClusterServingRuntime", [{}])[0]
rspec = runtime.get("spec", {})
check(runtime.get("apiVersion") == "serving.kserve.io/v1alpha1", "a ClusterServingRuntime")
check([f.get("name") for f in rspec.get("supportedModelFormats", [])] == ["sparse-serve"],
      "the runtime supports model format sparse-serve: %s" % rspec.get("supportedModelFormats"))
check(set(rspec.get("protocolVersions", [])) == {"v2", "grpc-v2"}, "protocol v2 over REST and gRPC")
rc = rspec.get("containers", [{}])[0]
rargs = rc.get("args", [])
check(rc.get("name") == "kserve-container" and rc.get("image") == c.get("image"),
      "the runtime's kserve-container runs the image: %s" % rc.get("image"))
check("--model_repository=/mnt/models" in rargs and "--model_name={{.Name}}" in rargs,
      "the runtime serves /mnt/models under the InferenceService's name: %s" % rargs)
check("--http_port=8080" in rargs, "REST on KServe's port 8080: %s" % rargs)
metrics_flag = [a.split("=", 1)[1] for a in rargs if a.startswith("--metrics_port=")]
annotations = rspec.get("annotations", {})
check(metrics_flag and annotations.get("prometheus.kserve.io/port") == metrics_flag[0] ==
      annotations.get("prometheus.io/port") and annotations.get("prometheus.io/scrape") == "true",
      "Prometheus scrape annotations name the metrics port: %s %s" % (annotations, metrics_flag))
grpc_port = [a.split("=", 1)[1] for a in rargs if a.startswith("--port=")]
for isvc in kserve.get("InferenceService", []):
    model = isvc["spec"]["predictor"]["model"]
    name = isvc["metadata"]["name"]
    check(model.get("modelFormat", {}).get("name") == "sparse-serve" and
          model.get("runtime") == runtime.get("metadata", {}).get("name") and
          model.get("protocolVersion") in rspec.get("protocolVersions", []),
          "InferenceService %s runs on the runtime: %s" % (name, model))
    if model.get("protocolVersion") == "grpc-v2":
        check([str(p.get("containerPort")) for p in model.get("ports", [])] == grpc_port and
              model["ports"][0].get("name") == "h2c", "InferenceService %s routes h2c to --port %s" % (name, grpc_port))
check(len(kserve.get("InferenceService", [])) >= 1, "an InferenceService example")

# LeaderWorkerSet (deploy/kubernetes-lws/): leader = front, workers = shards.
LWS = os.path.abspath(os.path.join(source, "deploy", "kubernetes-lws"))
if kubectl:
    lws_objects = render(LWS)
    check(not lws_objects.get("Deployment") and not lws_objects.get("StatefulSet"),
          "the LWS overlay has no Deployment or StatefulSet")
    lws = lws_objects.get("LeaderWorkerSet", [{}])[0]
    lws_name = lws.get("metadata", {}).get("name")
    template = lws.get("spec", {}).get("leaderWorkerTemplate", {})
    size = template.get("size", 0)
    shards = size - 1
    leader = template.get("leaderTemplate", {})
    worker = template.get("workerTemplate", {})
    lc = leader.get("spec", {}).get("containers", [{}])[0]
    wc = worker.get("spec", {}).get("containers", [{}])[0]
    lws_targets = [a.split("=", 1)[1] for a in lc.get("args", []) if a.startswith("--shard_targets=")]
    check(shards >= 1 and len(lws_targets) == 1 and lws_targets[0].split(";") ==
          ["dns:///$(POD_NAME)-%d.%s:%d" % (i, lws_name, GRPC_PORT) for i in range(1, size)],
          "the leader's targets are its group's workers 1..%d in order: %s" % (shards, lws_targets))
    lenv = {e["name"]: e for e in lc.get("env", [])}
    check(lenv.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
          "the leader gets POD_NAME from metadata.name")
    wargs = wc.get("args", [])
    check("--shard=/%d" % shards in wargs and "--shard_index_env=LWS_WORKER_INDEX" in wargs and
          "--shard_index_offset=-1" in wargs,
          "a worker is shard LWS_WORKER_INDEX - 1 of %d: %s" % (shards, wargs))
    check(lws_name != "sparse-serve" and lws_name not in {s["metadata"]["name"] for s in lws_objects.get("Service", [])},
          "the LWS's name (%s) is free for the headless Service LWS makes" % lws_name)
    leader_labels = leader.get("metadata", {}).get("labels", {})
    worker_labels = worker.get("metadata", {}).get("labels", {})
    for svc in lws_objects.get("Service", []):
        selector = svc["spec"].get("selector", {})
        check(selector.items() <= leader_labels.items() and not selector.items() <= worker_labels.items(),
              "Service %s selects the leaders (fronts), not the workers" % svc["metadata"]["name"])
    for role, container, labels in (("leader", lc, leader_labels), ("worker", wc, worker_labels)):
        check(container.get("image") == c.get("image"), "the %s runs the image" % role)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            check(container.get(probe, {}).get("grpc", {}).get("port") == GRPC_PORT,
                  "the %s's %s is a native gRPC probe" % (role, probe))
        pod_spec = (leader if role == "leader" else worker).get("spec", {})
        check(pod_spec.get("securityContext", {}).get("runAsUser") == uid, "the %s runs as the image's user" % role)
    lws_hpa = lws_objects.get("HorizontalPodAutoscaler", [{}])[0].get("spec", {}).get("scaleTargetRef", {})
    check(lws_hpa.get("kind") == "LeaderWorkerSet" and lws_hpa.get("name") == lws_name and
          lws_hpa.get("apiVersion") == lws.get("apiVersion"), "the HPA scales the LeaderWorkerSet's groups: %s" % lws_hpa)
    pdb_selector = lws_objects.get("PodDisruptionBudget", [{}])[0].get("spec", {}).get("selector", {})
    check(pdb_selector.get("matchLabels", {}).items() <= leader_labels.items(), "the PDB keeps a leader")


# kubectl against a discovery stub.
class Discovery(http.server.BaseHTTPRequestHandler):
    GROUPS = {"apps/v1": [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True)],
              "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
              "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
              "keda.sh/v1alpha1": [("scaledobjects", "ScaledObject", True)],
              "monitoring.coreos.com/v1": [("prometheusrules", "PrometheusRule", True)],
              "serving.kserve.io/v1alpha1": [("clusterservingruntimes", "ClusterServingRuntime", False)],
              "serving.kserve.io/v1beta1": [("inferenceservices", "InferenceService", True)],
              "leaderworkerset.x-k8s.io/v1": [("leaderworkersets", "LeaderWorkerSet", True)]}
    CORE = [("services", "Service", True), ("persistentvolumeclaims", "PersistentVolumeClaim", True),
            ("pods", "Pod", True), ("configmaps", "ConfigMap", True),
            ("namespaces", "Namespace", False)]

    @staticmethod
    def resources(group_version, entries):
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                "resources": [{"name": n, "singularName": "", "namespaced": ns, "kind": k,
                               "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                              for n, k, ns in entries]}

    def do_GET(self):
        path = self.path.split("?")[0]
        body, code = None, 200
        if path == "/api":
            body = {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        elif path == "/apis":
            groups = {}
            for gv in self.GROUPS:  # one entry per group, every version of it
                groups.setdefault(gv.split("/")[0], []).append({"groupVersion": gv, "version": gv.split("/")[1]})
            body = {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": name, "versions": versions, "preferredVersion": versions[-1]}
                for name, versions in groups.items()]}
        elif path == "/api/v1":
            body = self.resources("v1", self.CORE)
        elif path.startswith("/apis/") and path[len("/apis/"):] in self.GROUPS:
            gv = path[len("/apis/"):]
            body = self.resources(gv, self.GROUPS[gv])
        else:
            code = 404
            body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                    "code": 404, "message": "not found"}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if kubectl:
    stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Discovery)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    server_url = "http://127.0.0.1:%d" % stub.server_address[1]
    env = dict(os.environ, KUBECONFIG=os.devnull, HOME=os.environ.get("HOME", "/tmp"))
    targets = ([["-f", p] for p in sorted(on_disk)] + [["-k", "."], ["-k", SHARDED], ["-f", PODS], ["-k", LWS],
               ["-f", os.path.join(AUTOSCALING, "prometheus-adapter-config.yaml")],
               ["-f", os.path.join(PROMETHEUS_DIR, "prometheus-rule.yaml")]] +
               [["-f", p] for p in sorted(glob.glob(os.path.join(KSERVE, "*.yaml")))] +
               [["-k", where] for where in rendered_autoscaling.values()])
    for target in targets:
        done = subprocess.run([kubectl, "apply", "--dry-run=client", "--validate=false", "--server=" + server_url,
                               "--namespace=default", "--cache-dir=" + os.path.join(sys.argv[2], "kubectl-cache")]
                              + target, cwd=K8S, capture_output=True, text=True, env=env, timeout=60)
        check(done.returncode == 0 and "(dry run)" in done.stdout,
              "kubectl apply --dry-run=client %s: %s%s" % (" ".join(target), done.stdout, done.stderr[-500:]))
        print(done.stdout.strip())
    stub.shutdown()

finish()
