"""Run inside Blender (``blender -b --python blender_inspect.py -- FILE.glb``, or ``FILE.obj``): import the file with
Blender's own glTF or OBJ importer and print, as one JSON line, what a technical artist would look at: each
material's base-colour image, whether a Normal Map node feeds the shader's Normal input from an image texture (and in
which colour space), which image (file name) and which of its outputs feeds Base Color, Metallic, Roughness and Alpha
(``inputs``; through any nodes between, such as a Separate Color), the mesh's UV maps and face count."""
import json
import sys

import bpy
import numpy

# Debian's Blender 3.4 glTF importer still says np.bool, which its NumPy (1.24) no longer has.
if not hasattr(numpy, "bool"):
    numpy.bool = bool

path = sys.argv[sys.argv.index("--") + 1]
bpy.ops.wm.read_factory_settings(use_empty=True)
if path.lower().endswith(".obj"):
    bpy.ops.wm.obj_import(filepath=path)
else:
    bpy.ops.import_scene.gltf(filepath=path)


def image_source(socket, through=()):
    """{file, output, through, colorspace} of the image texture feeding ``socket`` (None: none does)."""
    for link in socket.links:
        node = link.from_node
        if node.type == "TEX_IMAGE" and node.image is not None:
            return {"file": bpy.path.basename(node.image.filepath), "output": link.from_socket.name,
                    "through": list(through), "colorspace": node.image.colorspace_settings.name}
        for upstream in node.inputs:
            found = image_source(upstream, (*through, f"{node.type}.{link.from_socket.name}"))
            if found is not None:
                return found
    return None


out = {"materials": [], "meshes": []}
for mat in bpy.data.materials:
    if not mat.use_nodes:
        continue
    nodes = mat.node_tree.nodes
    bsdf = next((n for n in nodes if n.type == "BSDF_PRINCIPLED"), None)
    entry = {"name": mat.name, "base_color_image": None, "normal_map": None, "inputs": {}}
    if bsdf is not None:
        entry["inputs"] = {name: image_source(bsdf.inputs[name]) for name in ("Base Color", "Metallic", "Roughness",
                                                                              "Alpha", "Normal")}
        for link in bsdf.inputs["Base Color"].links:
            if link.from_node.type == "TEX_IMAGE" and link.from_node.image is not None:
                entry["base_color_image"] = list(link.from_node.image.size)
        for link in bsdf.inputs["Normal"].links:
            node = link.from_node
            if node.type == "NORMAL_MAP":
                image = next((lk.from_node for lk in node.inputs["Color"].links if lk.from_node.type == "TEX_IMAGE"),
                             None)
                entry["normal_map"] = {"space": node.space, "uv_map": node.uv_map,
                                       "image": list(image.image.size) if image is not None and image.image else None,
                                       "colorspace": image.image.colorspace_settings.name if image is not None
                                       and image.image else None}
    out["materials"].append(entry)
for obj in bpy.data.objects:
    if obj.type == "MESH":
        out["meshes"].append({"faces": len(obj.data.polygons), "uv_maps": [uv.name for uv in obj.data.uv_layers],
                              "quads": sum(len(p.vertices) == 4 for p in obj.data.polygons)})
print("INSPECT " + json.dumps(out))
