// Audit one .glb with the Khronos 3D Commerce asset auditor against a profile (default: audit_profile.json,
// the Khronos recommended limits); print {auditor, profile, file, counts, items} as JSON on stdout.
// Usage: node tests/js/audit.js FILE.glb [PROFILE.json]   (after `npm ci --prefix tests/js`)
"use strict";
const path = require("path");

async function main() {
  const file = path.resolve(process.argv[2]);
  const profile = path.resolve(process.argv[3] || path.join(__dirname, "audit_profile.json"));
  // the auditor is an ES module only: imported, not required
  const { Auditor } = await import("@khronosgroup/gltf-asset-auditor");
  console.log = console.error;            // anything its loaders log goes to stderr: stdout is the JSON alone
  const auditor = new Auditor();
  // the profile first: it decides whether the model's UV triangles are indexed for the overlap test
  await auditor.schema.loadFromFileSystem(profile);
  await auditor.model.loadFromFileSystem([file]);
  auditor.generateReport();
  const model = auditor.model;
  const counts = {
    triangles: model.triangleCount.value,
    invertedUvTriangles: model.invertedTriangleCount.value,
    overlappingUvs: model.overlappingUvCount.value,
  };
  const items = auditor.report.getItems().map((i) => ({ name: i.name, tested: i.tested, pass: i.pass, message: i.message }));
  process.stdout.write(JSON.stringify({ auditor: auditor.version, profile, file, counts, items }));
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(2);
});
