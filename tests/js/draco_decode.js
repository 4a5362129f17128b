// Decode every KHR_draco_mesh_compression primitive of a .glb with Google's draco3dgltf decoder; print JSON:
// [{mesh, primitive, numPoints, numFaces, faces: [flat], attributes: {NAME: {uniqueId, type, components, values}}}]
// Usage: node tests/js/draco_decode.js FILE.glb   (after `npm ci --prefix tests/js`)
"use strict";
const fs = require("fs");
const draco3dgltf = require("draco3dgltf");

const EXTENSION = "KHR_draco_mesh_compression";

// The JSON document and the BIN chunk of a GLB, read from its chunk headers (glTF 2.0, section "GLB File Format").
function readGlb(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0, true) !== 0x46546c67) throw new Error("not a GLB");
  const jsonLength = view.getUint32(12, true);
  const doc = JSON.parse(new TextDecoder().decode(bytes.subarray(20, 20 + jsonLength)));
  const at = 20 + jsonLength;
  const binLength = at + 8 <= bytes.byteLength ? view.getUint32(at, true) : 0;
  return { doc, bin: bytes.subarray(at + 8, at + 8 + binLength) };
}

function decodePrimitive(M, decoder, bytes, ext) {
  const buffer = new M.DecoderBuffer();
  buffer.Init(new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), bytes.byteLength);
  if (decoder.GetEncodedGeometryType(buffer) !== M.TRIANGULAR_MESH) throw new Error("not a Draco triangle mesh");
  const mesh = new M.Mesh();
  const status = decoder.DecodeBufferToMesh(buffer, mesh);
  M.destroy(buffer);
  if (!status.ok()) throw new Error("Draco decode failed: " + status.error_msg());
  const numPoints = mesh.num_points();
  const numFaces = mesh.num_faces();
  const faces = new Array(3 * numFaces);
  const face = new M.DracoInt32Array();
  for (let i = 0; i < numFaces; ++i) {
    decoder.GetFaceFromMesh(mesh, i, face);
    for (let k = 0; k < 3; ++k) faces[3 * i + k] = face.GetValue(k);
  }
  M.destroy(face);
  const attributes = {};
  for (const [name, uniqueId] of Object.entries(ext.attributes)) {
    const attribute = decoder.GetAttributeByUniqueId(mesh, uniqueId);
    if (!attribute || attribute.ptr === 0) throw new Error(`no attribute with unique id ${uniqueId} (${name})`);
    const components = attribute.num_components();
    const data = new M.DracoFloat32Array();
    if (!decoder.GetAttributeFloatForAllPoints(mesh, attribute, data)) throw new Error(`cannot read ${name}`);
    const values = new Array(data.size());
    for (let i = 0; i < values.length; ++i) values[i] = data.GetValue(i);
    M.destroy(data);
    attributes[name] = { uniqueId: attribute.unique_id(), type: attribute.attribute_type(), components, values };
  }
  M.destroy(mesh);
  return { numPoints, numFaces, faces, attributes };
}

draco3dgltf
  .createDecoderModule({})
  .then((M) => {
    const { doc, bin } = readGlb(new Uint8Array(fs.readFileSync(process.argv[2])));
    const decoder = new M.Decoder();
    const out = [];
    (doc.meshes || []).forEach((mesh, m) =>
      mesh.primitives.forEach((prim, p) => {
        const ext = (prim.extensions || {})[EXTENSION];
        if (!ext) return;
        const bv = doc.bufferViews[ext.bufferView];
        const start = bv.byteOffset || 0;
        const decoded = decodePrimitive(M, decoder, bin.subarray(start, start + bv.byteLength), ext);
        out.push({ mesh: m, primitive: p, ...decoded });
      }),
    );
    M.destroy(decoder);
    process.stdout.write(JSON.stringify(out));
  })
  .catch((err) => {
    console.error(String(err && err.stack ? err.stack : err));
    process.exit(2);
  });
