# SPDX-License-Identifier: GPL-3.0-or-later
"""The scene side (bpy, main thread only): write the selected mesh as a GLB for the server, bring a result GLB
(or, for quads, an OBJ) in at the 3D cursor, or put a result's look (material, image texture and, where needed,
UVs) on the object that was sent, leaving its mesh as it is."""
import bpy
from mathutils import Vector

from .meshmatch import MeshMismatch, loop_uvs, same_uvs

UV_NAME = "Trellis"
REMADE = "keep_mesh=false in More Settings, or a Trellis Desktop whose API does not keep meshes yet"


class LookRefused(Exception):
    """The result cannot be put on the object: the message says why and what to do."""


def numpy_compat() -> None:
    """Blender 3.x's glTF add-on says numpy.bool, which NumPy 1.24 removed (Linux packages pair them)."""
    import numpy
    if "bool" not in vars(numpy):                # vars(): getattr warns on NumPy 1.24
        numpy.bool = bool


def export_mesh(obj, path: str) -> None:
    """`obj` alone as a GLB: its mesh, normals and UVs, no materials; modifiers are not applied, so the file is
    the mesh data the look is put back on."""
    numpy_compat()
    view_layer = bpy.context.view_layer
    selected = [o for o in view_layer.objects if o.select_get()]
    active = view_layer.objects.active
    for o in selected:
        o.select_set(False)
    obj.select_set(True)
    view_layer.objects.active = obj
    try:
        bpy.ops.export_scene.gltf(filepath=path, export_format="GLB", use_selection=True, export_apply=False,
                                  export_materials="NONE", export_texcoords=True, export_normals=True,
                                  export_animations=False, export_skins=False, export_morph=False)
    finally:
        obj.select_set(False)
        for o in selected:
            o.select_set(True)
        view_layer.objects.active = active


def import_result(path: str) -> list:
    """The objects a GLB or an OBJ (a quad result: its faces stay quads) adds to the scene; images packed into the
    .blend."""
    numpy_compat()
    before = set(bpy.data.objects)
    if path.lower().endswith(".obj"):
        if hasattr(bpy.ops.wm, "obj_import"):
            bpy.ops.wm.obj_import(filepath=path)       # Blender 3.2+: the OBJ's Y up becomes Blender's Z up
        else:
            bpy.ops.import_scene.obj(filepath=path)    # the older Python importer, with the same axes
    else:
        bpy.ops.import_scene.gltf(filepath=path)
    added = [o for o in bpy.data.objects if o not in before]
    for mat in {s.material for o in added for s in o.material_slots if s.material}:
        for image in texture_images(mat):
            if image.packed_file is None:
                image.pack()                         # the downloaded file is deleted next
    return added


def texture_images(mat) -> list:
    if mat is None or not mat.use_nodes:
        return []
    return [n.image for n in mat.node_tree.nodes if n.type == "TEX_IMAGE" and n.image is not None]


def place_result(objects: list, location, name: str) -> list:
    """Move the imported objects' roots to `location` (the 3D cursor) and name the mesh after the job."""
    roots = [o for o in objects if o.parent not in objects]
    for o in roots:
        o.location = Vector(o.location) + Vector(location)
    bpy.context.view_layer.update()                  # matrix_world follows the new locations now, not at redraw
    meshes = [o for o in objects if o.type == "MESH"]
    if len(meshes) == 1:
        meshes[0].name = name
    for o in bpy.context.view_layer.objects:
        o.select_set(o in objects)
    if meshes:
        bpy.context.view_layer.objects.active = meshes[0]
    return meshes


def remove_objects(objects: list) -> None:
    meshes = {o.data for o in objects if o.type == "MESH"}
    for o in objects:
        bpy.data.objects.remove(o, do_unlink=True)
    for m in meshes:
        if m.users == 0:
            bpy.data.meshes.remove(m)


def world_mesh(obj) -> tuple:
    """(world positions, [(vertex indices, loop indices)] per polygon) of a mesh object."""
    mw = obj.matrix_world
    positions = [tuple(mw @ v.co) for v in obj.data.vertices]
    polygons = [(tuple(p.vertices), tuple(p.loop_indices)) for p in obj.data.polygons]
    return positions, polygons


def joined_result(meshes: list) -> tuple:
    """The result's meshes as one: (positions, polygons, per-loop UVs); LookRefused without UVs."""
    positions, polygons, uvs = [], [], []
    for m in meshes:
        layer = m.data.uv_layers.active
        if layer is None:
            raise LookRefused(f"the server's result ({m.name}) has no UV map: nothing to put on the object")
        pos, polys = world_mesh(m)
        v0, l0 = len(positions), len(uvs)
        positions += pos
        polygons += [(tuple(v + v0 for v in vs), tuple(i + l0 for i in ls)) for vs, ls in polys]
        uvs += [tuple(d.uv) for d in layer.data]
    return positions, polygons, uvs


def set_uv_layer(mesh, uvs: list, name: str = UV_NAME):
    layer = mesh.uv_layers.new(name=name)
    if layer is None:
        raise LookRefused(f"{mesh.name} has the most UV maps Blender allows: remove one and try again")
    layer.data.foreach_set("uv", [c for uv in uvs for c in uv])
    return layer


def use_uv_layer(mat, layer_name: str) -> None:
    """Make the material's image textures read `layer_name` (a UV Map node), whatever map is active."""
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    uv_node = nodes.new("ShaderNodeUVMap")
    uv_node.uv_map = layer_name
    for n in [n for n in nodes if n.type == "TEX_IMAGE"]:
        for link in list(n.inputs["Vector"].links):
            links.remove(link)
        links.new(uv_node.outputs["UV"], n.inputs["Vector"])


def apply_look(obj, result: list, material_name: str) -> tuple:
    """Put the result's material on `obj` (every material slot; one slot added when it has none), and the result's
    UVs where the object's own do not carry the texture. Returns (message, warning or ""); LookRefused when the
    look cannot be put on the object. The result's objects are removed either way, with what the object did not
    take of their materials and images."""
    try:
        return put_look(obj, [o for o in result if o.type == "MESH"], material_name)
    finally:
        discard(result)                             # what the object did not take of the result


def discard(objects: list) -> None:
    """Remove imported objects, and their materials and images that nothing else uses."""
    looks = {s.material for o in objects for s in o.material_slots if s.material}
    remove_objects(objects)
    forget(looks)


def put_look(obj, meshes: list, material_name: str) -> tuple:
    mat = next((s.material for o in meshes for s in o.material_slots if texture_images(s.material)), None)
    if mat is None:
        raise LookRefused("the server's result has no material with an image texture")
    bpy.context.view_layer.update()                  # world matrices of transforms set since the last redraw
    positions, polygons = world_mesh(obj)
    r_positions, r_polygons, r_uvs = joined_result(meshes)
    had_uv = len(obj.data.uv_layers) > 0
    warning, added = "", None
    try:
        uvs = loop_uvs(positions, polygons, r_positions, r_polygons, r_uvs)
    except MeshMismatch as err:
        if not had_uv:
            raise LookRefused(f"cannot texture {obj.name}: the server did not keep its mesh ({err}; {REMADE}), "
                              "and the object has no UV map to carry the texture: nothing was changed") from None
        warning = (f"the server did not keep the mesh ({err}; {REMADE}): the texture was baked on a shape made "
                   f"again and may not line up with {obj.name}'s UV map")
    else:
        own = obj.data.uv_layers.active
        if own is None or not same_uvs([tuple(d.uv) for d in own.data], uvs):
            added = set_uv_layer(obj.data, uvs).name
            if had_uv:
                use_uv_layer(mat, added)             # the object's active map stays what it was
    mat.name = material_name
    if obj.material_slots:
        for slot in obj.material_slots:
            slot.material = mat
    else:
        obj.data.materials.append(mat)
    size = texture_images(mat)[0].size
    message = (f"{obj.name}: material {mat.name!r} with a {size[0]}x{size[1]} texture"
               + (f", UV map {added!r} added" if added else ""))
    return message, warning


def forget(materials) -> None:
    """Remove materials (and their images) that nothing uses any more."""
    for mat in materials:
        images = texture_images(mat)
        if mat.users == 0:
            bpy.data.materials.remove(mat)
        for image in images:
            if image.users == 0:
                bpy.data.images.remove(image)
