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
kubectl needs an API server for discovery even in a client dry run; with
no cluster here, a stub on loopback answers discovery for the kinds used
and "not found" for every object (so kubectl plans a create), and
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


# kubectl against a discovery stub.
class Discovery(http.server.BaseHTTPRequestHandler):
    GROUPS = {"apps/v1": [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True)],
              "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
              "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)]}
    CORE = [("services", "Service", True), ("persistentvolumeclaims", "PersistentVolumeClaim", True),
            ("pods", "Pod", True),
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
            body = {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
                 "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}} for gv in self.GROUPS]}
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
    targets = [["-f", p] for p in sorted(on_disk)] + [["-k", "."], ["-k", SHARDED], ["-f", PODS]]
    for target in targets:
        done = subprocess.run([kubectl, "apply", "--dry-run=client", "--validate=false", "--server=" + server_url,
                               "--namespace=default", "--cache-dir=" + os.path.join(sys.argv[2], "kubectl-cache")]
                              + target, cwd=K8S, capture_output=True, text=True, env=env, timeout=60)
        check(done.returncode == 0 and "(dry run)" in done.stdout,
              "kubectl apply --dry-run=client %s: %s%s" % (" ".join(target), done.stdout, done.stderr[-500:]))
        print(done.stdout.strip())
    stub.shutdown()

finish()
