// Validates KEDA objects against KEDA's published CRD schema, as compiled by
// @kubernetes-models/keda 2.0.0 (vendored under node_modules/, see
// README.md). Usage: node validate.mjs <file.json>, where the file holds a
// JSON array of objects; prints one line per object, "ok <kind> <name>" or
// "invalid <kind> <name>: <errors>", and exits 1 if any is invalid.
import fs from "fs";
import {ScaledObject} from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";

const kinds = {ScaledObject};
let bad = 0;
for (const o of JSON.parse(fs.readFileSync(process.argv[2], "utf8"))) {
  const name = `${o.kind} ${(o.metadata || {}).name}`;
  const Model = kinds[o.kind];
  if (!Model) { console.log(`invalid ${name}: no schema for kind ${o.kind}`); bad++; continue; }
  try {
    new Model(o).validate();
    console.log(`ok ${name}`);
  } catch (e) {
    console.log(`invalid ${name}: ${e.message}`);
    bad++;
  }
}
process.exit(bad ? 1 : 0);
