// Validates Gateway API objects (JSON array on stdin) against the schemas that
// @kubernetes-models/gateway-api generates from the Gateway API's Go types: types,
// enums, patterns, required fields and limits. Those schemas do not reject unknown
// fields; tests/deploy checks the field names it relies on itself. Prints one line per
// invalid object and exits 1, or exits 0. Used by tests/deploy (Python).
import { readFileSync } from "node:fs";
import * as v1 from "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1";

const docs = JSON.parse(readFileSync(0, "utf8"));
let bad = 0;
for (const doc of docs) {
  const [group, version] = doc.apiVersion.split("/");
  const Model = group === "gateway.networking.k8s.io" && version === "v1" ? v1[doc.kind] : undefined;
  const name = `${doc.kind} ${doc.metadata?.name}`;
  if (!Model) { console.log(`${name}: no schema for ${doc.apiVersion}`); bad++; continue; }
  try {
    new Model(doc).validate();
  } catch (e) {
    console.log(`${name}: ${e.message}`);
    bad++;
  }
}
process.exit(bad ? 1 : 0);
