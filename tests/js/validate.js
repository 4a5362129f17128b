// Validate one .glb/.gltf with the Khronos glTF validator; print its JSON report on stdout.
// Usage: node tests/js/validate.js FILE   (after `npm ci --prefix tests/js`)
"use strict";
const fs = require("fs");
const path = require("path");
const validator = require("gltf-validator");

const file = process.argv[2];
const bytes = new Uint8Array(fs.readFileSync(file));
const readExternal = (uri) =>
  fs.promises.readFile(path.resolve(path.dirname(file), decodeURIComponent(uri))).then((b) => new Uint8Array(b));

validator
  .validateBytes(bytes, { uri: path.basename(file), externalResourceFunction: readExternal, maxIssues: 100 })
  .then((report) => process.stdout.write(JSON.stringify(report)))
  .catch((err) => {
    console.error(String(err));
    process.exit(2);
  });
