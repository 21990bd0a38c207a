// Validates every custom resource in rendered manifests (files given as arguments)
// against its operator's schema, as the kubernetes-models packages carry it (generated
// from each project's CRDs, pinned in package.json). Built-in kinds are left to
// kubernetes-validate. Exits non-zero when any object fails or has no schema here.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

// API group → the package that carries its schemas.
const PACKAGES = {
  "cert-manager.io": "@kubernetes-models/cert-manager",
  "postgresql.cnpg.io": "@kubernetes-models/cloudnative-pg",
  "external-secrets.io": "@kubernetes-models/external-secrets",
  "gateway.networking.k8s.io": "@kubernetes-models/gateway-api",
  "keda.sh": "@kubernetes-models/keda",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
};

let valid = 0;
let failed = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    const object = doc.toJS();
    if (!object) continue;
    const [group, version] = object.apiVersion.includes("/") ? object.apiVersion.split("/") : ["", object.apiVersion];
    if (!group.includes(".") || group.endsWith(".k8s.io") && !PACKAGES[group]) continue; // built in
    const name = `${file}: ${object.kind} ${object.metadata?.name}`;
    const pkg = PACKAGES[group];
    if (!pkg) {
      console.log(`FAIL ${name}: no schema for ${object.apiVersion}`);
      failed++;
      continue;
    }
    try {
      const model = await import(`${pkg}/${group}/${version}/${object.kind}`);
      new model[object.kind](object).validate();
      valid++;
    } catch (e) {
      console.log(`FAIL ${name}: ${e.message}`);
      failed++;
    }
  }
}
console.log(`custom resources: ${valid} valid, ${failed} failed`);
process.exit(failed === 0 && valid > 0 ? 0 : 1);
