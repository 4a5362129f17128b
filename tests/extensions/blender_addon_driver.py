"""Run inside Blender (``blender -b --factory-startup --python-exit-code 1 --python blender_addon_driver.py --
CONFIG.json``) by tests/extensions/test_blender_addon.py: install the add-on from its zip the way a user does
(Preferences > Add-ons > Install, then enable), use it against the live API server of the test, and write what
happened to the JSON file the config names.

What it drives: the add-on's operators (bpy.ops.trellis.*), called as the panel's buttons call them; the HTTP runs in
the add-on's background threads. Blender runs no timers in background mode, so the add-on's own timer callback
(operators.tick) is called here in a loop, with the pauses it asks for: that is the only stand-in. Each scenario's
failure is written as its traceback, so the test shows every failing part."""
import glob
import json
import os
import sys
import time
import traceback

import bpy

CONFIG = json.load(open(sys.argv[sys.argv.index("--") + 1], encoding="utf-8"))
PKG = "trellis_desktop_blender"
found = {}


def scenario(fn):
    try:
        found[fn.__name__] = fn()
    except Exception:
        found[fn.__name__] = {"error": traceback.format_exc()}
    return fn


def addon():
    return sys.modules[PKG]


def ops():
    return sys.modules[PKG + ".operators"]


def prefs():
    return bpy.context.preferences.addons[PKG].preferences


def follow(timeout=300):
    """The timer's callback, called as Blender's timer loop would: every snapshot seen, then the outcome."""
    seen, deadline = [], time.monotonic() + timeout
    while True:
        run = ops().State.run
        if run is not None:
            seen.append(run.task.snapshot())
        wait = ops().tick()
        if wait is None:
            break
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(wait)
    return {"seen": [{k: s[k] for k in ("state", "fraction", "message", "job_id")} for s in seen],
            "last": list(ops().State.last),
            "job": {k: v for k, v in ops().State.last_job.items() if k != "result_path"}}


def material_report(obj):
    out = []
    for slot in obj.material_slots:
        mat = slot.material
        images = [n.image for n in mat.node_tree.nodes if n.type == "TEX_IMAGE" and n.image] if mat and mat.use_nodes \
            else []
        out.append({"material": mat.name if mat else None, "images": [list(i.size) for i in images],
                    "packed": [i.packed_file is not None for i in images],
                    "uv_nodes": [n.uv_map for n in mat.node_tree.nodes if n.type == "UVMAP"] if images else []})
    return out


def use_fast(**more):
    """The test's small, fast job settings: the texture size through the panel's field, the rest through More."""
    settings = bpy.context.scene.trellis
    fast = {k: v for k, v in CONFIG["fast"].items() if k != "texture_size"}
    settings.extra_fields = " ".join(f"{k}={v}" for k, v in {**fast, **more}.items())
    settings.texture_size = 64
    return settings


@scenario
def install():
    bpy.ops.preferences.addon_install(filepath=CONFIG["zip"], overwrite=True)
    bpy.ops.preferences.addon_enable(module=PKG)
    return {"enabled": PKG in bpy.context.preferences.addons, "version": list(addon().bl_info["version"]),
            "panel": hasattr(bpy.types, "VIEW3D_PT_trellis"), "default_url": prefs().server_url,
            "operators": sorted(name for name in ("generate", "texture_selected", "cancel", "refresh_presets")
                                if hasattr(bpy.ops.trellis, name)),
            "installed_at": os.path.dirname(addon().__file__)}


@scenario
def presets():
    prefs().server_url = CONFIG["url"]
    bpy.ops.trellis.refresh_presets()
    last = ops().run_until_done(60)
    return {"items": [i[0] for i in ops().State.preset_items], "last": list(last)}


@scenario
def generate_image():
    settings = use_fast()
    settings.preset = "fast"
    settings.target_faces = 500
    settings.image_path = CONFIG["image"]
    bpy.context.scene.cursor.location = (1.0, 2.0, 3.0)
    before = set(bpy.data.objects)
    assert bpy.ops.trellis.generate(source="IMAGE") == {"FINISHED"}
    out = follow()
    new = [o for o in bpy.data.objects if o not in before]
    out["new"] = [{"name": o.name, "type": o.type, "location": list(o.matrix_world.translation),
                   "faces": len(o.data.polygons) if o.type == "MESH" else 0,
                   "materials": material_report(o) if o.type == "MESH" else []} for o in new]
    settings.target_faces = 0
    return out


@scenario
def generate_prompt():
    settings = use_fast()
    settings.prompt = "a small red chair"
    bpy.context.scene.cursor.location = (-2.0, 0.0, 0.0)
    before = set(bpy.data.objects)
    assert bpy.ops.trellis.generate(source="PROMPT") == {"FINISHED"}
    out = follow()
    new = [o for o in bpy.data.objects if o not in before]
    out["new"] = [{"name": o.name, "type": o.type, "materials": material_report(o) if o.type == "MESH" else []}
                  for o in new]
    return out


def quad_job(location, **more):
    """The panel's Topology "Quads": what the job was sent, and the faces of the object it adds."""
    settings = use_fast(**more)
    settings.topology, settings.target_faces = "QUADS", 300
    settings.image_path = CONFIG["image"]
    bpy.context.scene.cursor.location = location
    fields = ops().job_fields(settings, ops().client.topology_fields(settings.topology))
    before = set(bpy.data.objects)
    assert bpy.ops.trellis.generate(source="IMAGE") == {"FINISHED"}
    out = follow()
    new = [o for o in bpy.data.objects if o not in before]
    out["new"] = [{"name": o.name, "type": o.type, "location": list(o.matrix_world.translation),
                   "faces": len(o.data.polygons) if o.type == "MESH" else 0,
                   "quads": sum(len(p.vertices) == 4 for p in o.data.polygons) if o.type == "MESH" else 0,
                   "uv_layers": [u.name for u in o.data.uv_layers] if o.type == "MESH" else [],
                   "materials": material_report(o) if o.type == "MESH" else []} for o in new]
    out["fields"] = fields
    settings.topology, settings.target_faces = "TRIANGLES", 0
    return out


@scenario
def generate_quads():
    return quad_job((0.0, 6.0, 0.0))


@scenario
def generate_quads_geometry():
    return quad_job((0.0, 9.0, 0.0), geometry_only="true")


def texture_cube(keep_uvs: bool, source: str, location, **more):
    use_fast(**more)
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=location, rotation=(0.3, 0.0, 0.5))
    cube = bpy.context.active_object
    cube.scale = (1.5, 1.0, 0.8)
    if not keep_uvs:
        while cube.data.uv_layers:
            cube.data.uv_layers.remove(cube.data.uv_layers[0])
    mesh = cube.data
    before = {"verts": [list(v.co) for v in mesh.vertices], "polys": [list(p.vertices) for p in mesh.polygons],
              "uv_layers": [u.name for u in mesh.uv_layers], "objects": len(bpy.data.objects),
              "materials": len(bpy.data.materials), "images": len(bpy.data.images),
              "uvs": [list(d.uv) for d in mesh.uv_layers[0].data] if mesh.uv_layers else []}
    assert bpy.ops.trellis.texture_selected(source=source) == {"FINISHED"}
    out = follow()
    out["before"] = before
    out["after"] = {"verts": [list(v.co) for v in mesh.vertices], "polys": [list(p.vertices) for p in mesh.polygons],
                    "uv_layers": [u.name for u in mesh.uv_layers], "objects": len(bpy.data.objects),
                    "materials_in_file": len(bpy.data.materials), "images": len(bpy.data.images),
                    "active_uv": mesh.uv_layers.active.name if mesh.uv_layers.active else None,
                    "uvs": {u.name: [list(d.uv) for d in u.data] for u in mesh.uv_layers},
                    "materials": material_report(cube), "same_mesh": cube.data == mesh}
    return out


@scenario
def texture_kept_without_uvs():
    bpy.context.scene.trellis.image_path = CONFIG["image"]
    return texture_cube(False, "IMAGE", (5.0, 0.0, 0.0))


@scenario
def texture_kept_with_uvs():
    bpy.context.scene.trellis.prompt = "made of gold"
    return texture_cube(True, "PROMPT", (8.0, 0.0, 0.0))


@scenario
def texture_remade_without_uvs():
    return texture_cube(False, "PROMPT", (11.0, 0.0, 0.0), keep_mesh="false")


@scenario
def texture_remade_with_uvs():
    return texture_cube(True, "IMAGE", (14.0, 0.0, 0.0), keep_mesh="false")


@scenario
def texture_deleted_object():
    use_fast()
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(17.0, 0.0, 0.0))
    cube = bpy.context.active_object
    objects, materials = len(bpy.data.objects), len(bpy.data.materials)
    assert bpy.ops.trellis.texture_selected(source="PROMPT") == {"FINISHED"}
    bpy.data.objects.remove(cube)
    out = follow()
    out["objects"] = [objects - 1, len(bpy.data.objects)]
    out["materials"] = [materials, len(bpy.data.materials)]
    return out


@scenario
def cancel():
    use_fast(ss_steps=500, slat_steps=500)
    bpy.context.scene.trellis.image_path = CONFIG["image"]
    assert bpy.ops.trellis.generate(source="IMAGE") == {"FINISHED"}
    deadline = time.monotonic() + 60
    while ops().State.run.task.snapshot()["job_id"] is None:
        assert time.monotonic() < deadline
        ops().tick()
        time.sleep(0.05)
    job_id = ops().State.run.task.snapshot()["job_id"]
    assert bpy.ops.trellis.cancel() == {"FINISHED"}
    out = follow()
    out["job_id"] = job_id
    return out


@scenario
def invalid_settings():
    settings = use_fast()
    settings.texture_size = 50                  # the API's lowest is 64: a 422 with the API's reason
    assert bpy.ops.trellis.generate(source="IMAGE") == {"FINISHED"}
    out = follow()
    settings.extra_fields = "seed"              # not NAME=VALUE: refused before any request
    try:
        answer = sorted(bpy.ops.trellis.generate(source="IMAGE"))
    except RuntimeError as err:                 # background mode: an operator's error report is raised
        answer = str(err)
    out["bad_fields"] = answer, list(ops().State.last)
    return out


@scenario
def server_down():
    prefs().server_url = CONFIG["closed_url"]
    use_fast()
    assert bpy.ops.trellis.generate(source="IMAGE") == {"FINISHED"}
    out = follow(60)
    bpy.ops.trellis.refresh_presets()
    out["presets_last"] = list(ops().run_until_done(60))
    return out


@scenario
def token():
    prefs().server_url = CONFIG["token_url"]
    out = {}
    for name, value in (("none", ""), ("wrong", "not-the-token"), ("right", CONFIG["token"])):
        prefs().token = value
        bpy.ops.trellis.refresh_presets()
        out[name] = list(ops().run_until_done(60))
    prefs().token, prefs().server_url = "", CONFIG["url"]
    return out


@scenario
def model_choice():
    """The panel's Model and Pipeline reach the server: TRELLIS.2 asked of this TRELLIS v1 server is refused."""
    settings = use_fast()
    settings.image_path = CONFIG["image"]
    settings.model_family, settings.pipeline_type = "TRELLIS2", "512"
    fields = ops().job_fields(settings)
    assert bpy.ops.trellis.generate(source="IMAGE") == {"FINISHED"}
    out = follow(60)
    out["fields"] = fields
    settings.model_family, settings.pipeline_type = "SERVER", "SERVER"
    return out


def upstream_image(socket):
    """The image texture node feeding `socket` (through any nodes between), or None."""
    for link in socket.links:
        node = link.from_node
        if node.type == "TEX_IMAGE" and node.image is not None:
            return node
        found = next((upstream_image(s) for s in node.inputs if s.is_linked), None)
        if found is not None:
            return found
    return None


@scenario
def pbr_import():
    """A TRELLIS.2 GLB brought in as the add-on brings a result in (scene_io.import_result, place_result): what feeds
    each input of its Principled BSDF."""
    scene_io = sys.modules[PKG + ".scene_io"]
    objects = scene_io.import_result(CONFIG["pbr_glb"])
    meshes = scene_io.place_result(objects, (0.0, -6.0, 0.0), "Trellis trellis2")
    out = {"meshes": []}
    for obj in meshes:
        mat = obj.material_slots[0].material
        bsdf = next(n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
        inputs = {}
        for name in ("Base Color", "Metallic", "Roughness", "Normal"):
            node = upstream_image(bsdf.inputs[name])
            inputs[name] = None if node is None else {"image": node.image.name,
                                                      "colorspace": node.image.colorspace_settings.name}
        out["meshes"].append({"name": obj.name, "bsdf": inputs, "blend": mat.blend_method,
                              "packed": [i.packed_file is not None for i in scene_io.texture_images(mat)]})
    return out


@scenario
def temp_files():
    return {"left": sorted(glob.glob(os.path.join(CONFIG["tmpdir"], "trellis_blender_*")))}


@scenario
def render():
    if not CONFIG.get("render"):
        return {"skipped": True}
    obj = next(o for o in bpy.data.objects if o.name.startswith("Trellis"))
    for o in bpy.data.objects:
        o.hide_render = o is not obj and o.type == "MESH"
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples, scene.cycles.use_denoising = "CPU", 16, False
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 480, 360, 100
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    centre = obj.matrix_world.translation
    camera.location = (centre[0] + 2.0, centre[1] - 2.0, centre[2] + 1.5)
    camera.rotation_euler = (camera.location - centre).to_track_quat("Z", "Y").to_euler()
    light = bpy.data.objects.new("Light", bpy.data.lights.new("Light", "SUN"))
    scene.collection.objects.link(light)
    light.rotation_euler = (0.6, 0.2, 0.8)
    scene.render.filepath = CONFIG["render"]
    bpy.ops.render.render(write_still=True)
    return {"path": CONFIG["render"], "written": os.path.isfile(CONFIG["render"])}


@scenario
def disable():
    bpy.ops.preferences.addon_disable(module=PKG)
    return {"panel": hasattr(bpy.types, "VIEW3D_PT_trellis"), "operator": hasattr(bpy.types, "TRELLIS_OT_generate"),
            "scene_settings": hasattr(bpy.types.Scene, "trellis"), "timer": bpy.app.timers.is_registered(ops().tick)}


with open(CONFIG["out"], "w", encoding="utf-8") as f:
    json.dump(found, f, indent=1)
print("DRIVER DONE")
