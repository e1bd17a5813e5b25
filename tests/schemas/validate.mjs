// Validates Kubernetes objects of the CRDs sparse-serve's manifests use
// against those CRDs' published schemas, as @kubernetes-models compiles
// them (vendored under node_modules/, see README.md): KEDA's ScaledObject
// and the Prometheus Operator's PrometheusRule. Usage: node validate.mjs
// <file.json>, where the file holds a JSON array of objects; prints one
// line per object, "ok <kind> <name>" or "invalid <kind> <name>: <errors>",
// and exits 1 if any is invalid.
import fs from "fs";
import {ScaledObject} from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import {PrometheusRule} from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const kinds = {"keda.sh/v1alpha1 ScaledObject": ScaledObject,
               "monitoring.coreos.com/v1 PrometheusRule": PrometheusRule};
let bad = 0;
for (const o of JSON.parse(fs.readFileSync(process.argv[2], "utf8"))) {
  const name = `${o.kind} ${(o.metadata || {}).name}`;
  const Model = kinds[`${o.apiVersion} ${o.kind}`];
  if (!Model) { console.log(`invalid ${name}: no schema for ${o.apiVersion} ${o.kind}`); bad++; continue; }
  try {
    new Model(o).validate();
    console.log(`ok ${name}`);
  } catch (e) {
    console.log(`invalid ${name}: ${e.message}`);
    bad++;
  }
}
process.exit(bad ? 1 : 0);
