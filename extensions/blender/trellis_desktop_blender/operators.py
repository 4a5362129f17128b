# SPDX-License-Identifier: GPL-3.0-or-later
"""The operators (generate, texture the selected mesh, cancel, fetch the presets) and the one job they follow.

The network runs in a background thread (client.Task); tick() runs on Blender's main thread, from a
bpy.app.timers timer, reads the job's state, shows it, and when the job has ended brings its result into the
scene. Blender runs no timers while a script runs in background mode (blender -b --python), so such scripts call
run_until_done(), which calls the same tick() in a loop."""
import contextlib
import os
import shutil
import tempfile
import time
import zlib

import bpy

from . import client, scene_io

POLL_S = 0.25                       # how often the main thread looks at the job (it never waits on the network)


class Run:
    """The job being followed: its Task and what to do with its result (target: the object's pointer and name)."""

    def __init__(self, task, kind: str, target: tuple = None, location=(0.0, 0.0, 0.0)):
        self.task, self.kind, self.target, self.location = task, kind, target, tuple(location)


def model_items(families) -> list:
    """The Model choice's items: the server's own, then each family (Blender enum items, stable numbers)."""
    return [("SERVER", "Server's model", "whatever model the server runs", 0)] + [
        (client.choice_id(f), f.get("words") or f["id"], (f.get("about") or "") + (
            "" if f.get("installed", True) else " (not installed on the server: it says how to install it)"),
         zlib.crc32(client.choice_id(f).encode()) & 0x7FFFFFFF) for f in families]


def pipeline_items(families) -> list:
    """The Pipeline choice's items: the preset's, then every pipeline type a family of the server takes."""
    types = client.pipeline_types("SERVER", families)
    return [("SERVER", "Preset's", "the server preset's pipeline type", 0)] + [
        (t, t.replace("_", " "), client.PIPELINE_WORDS.get(t, ""), zlib.crc32(t.encode()) & 0x7FFFFFFF)
        for t in types]


class State:
    """The add-on's one job, the presets fetch, and the last outcome the panel shows."""
    run = None                      # Run
    presets_call = None             # client.Call of GET /v1/presets and the families of GET /v1/health
    preset_items = [("SERVER", "Server default", "the server's default preset", 0)]
    families = list(client.KNOWN_FAMILIES)      # the server's family_info once fetched
    family_items = model_items(families)        # module-level lists: Blender keeps no copy of dynamic items
    type_items = pipeline_items(families)
    last = ("INFO", "")             # (INFO | WARNING | ERROR, message)
    last_job = {}                   # the last job's final snapshot (state, job_id, message, ...)


def prefs():
    return bpy.context.preferences.addons[__package__].preferences


def make_client() -> client.Client:
    """The server of the add-on's preferences; ApiProblem when it may not be reached."""
    p = prefs()
    c = client.Client(p.server_url, p.token)
    if not client.is_loopback_url(c.url) and not getattr(bpy.app, "online_access", True):
        raise client.ApiProblem(f"{c.url} is on another computer and Blender's online access is off (Preferences "
                                "> System > Network): allow it, or use a server on this computer (127.0.0.1)",
                                "refused")
    return c


def job_fields(settings, more: dict = None) -> dict:
    """The form fields of the panel's settings (left out where the preset's value stands), with `more` (the
    topology's) before the More Settings field, which has the last word."""
    fields = {"formats": "glb", **(more or {})}
    if settings.preset not in ("SERVER", ""):         # "": a saved preset the server has not listed yet
        fields["preset"] = settings.preset
    if settings.target_faces:
        fields["target_faces"] = str(settings.target_faces)
    if settings.texture_size:
        fields["texture_size"] = str(settings.texture_size)
    fields.update(client.model_fields(settings.model_family, settings.pipeline_type, State.families))
    fields.update(client.parse_fields(settings.extra_fields))
    return fields


def look_source(settings, source: str) -> tuple:
    """(fields, files, label) of the image or the prompt of the panel."""
    if source == "PROMPT":
        prompt = settings.prompt.strip()
        if not prompt:
            raise client.ApiProblem("write a prompt first (e.g. 'a red wooden chair')", "invalid")
        return {"prompt": prompt}, [], prompt[:40]
    path = bpy.path.abspath(settings.image_path)
    if not settings.image_path or not os.path.isfile(path):
        raise client.ApiProblem(f"choose an image file first ({path or 'none chosen'} is not a file)", "invalid")
    with open(path, "rb") as f:
        data = f.read()
    name = os.path.basename(path)
    return {}, [("images", name, data, client.image_type(path))], os.path.splitext(name)[0]


def start(task, kind: str, target: tuple = None, location=(0.0, 0.0, 0.0)) -> None:
    State.run = Run(task.start(), kind, target, location)
    State.last = ("INFO", f"job sent to {task.client.url}")
    if not bpy.app.timers.is_registered(tick):         # persistent: the job outlives opening another .blend file
        bpy.app.timers.register(tick, first_interval=POLL_S, persistent=True)


def tick():
    """One look at the job (main thread): seconds until the next look, or None once it has ended."""
    if State.presets_call is not None and State.presets_call.done:
        take_presets(State.presets_call)
    run = State.run
    if run is None:
        return POLL_S if State.presets_call is not None else None
    snap = run.task.snapshot()
    show_status(f"Trellis: {snap['label']}: {snap['message']}")
    if not snap["finished"]:
        return POLL_S
    State.run, State.last_job = None, snap
    try:
        if snap["state"] == "done":
            with main_window():
                State.last = finish(run, snap["result_path"])
                undo_step(f"Trellis: {snap['label']}")
        else:
            State.last = ("WARNING" if snap["state"] == "cancelled" else "ERROR", snap["message"])
    except (scene_io.LookRefused, client.ApiProblem) as err:
        State.last = ("ERROR", str(err))
    except Exception as err:                    # a failure here must still end the job and be shown
        State.last = ("ERROR", f"the result could not be added: {type(err).__name__}: {err}")
    finally:
        run.task.cleanup()
        show_status(None)
    print(f"Trellis Desktop: {State.last[0]}: {State.last[1]}")
    return POLL_S if State.presets_call is not None else None


def main_window():
    """The context of Blender's first window (the view layer and collection the user sees), where there is one."""
    windows = list(getattr(bpy.context.window_manager, "windows", ()))
    if windows and hasattr(bpy.context, "temp_override"):
        return bpy.context.temp_override(window=windows[0])
    return contextlib.nullcontext()


def undo_step(name: str) -> None:
    """Ctrl-Z takes the result out again (a timer's changes get no undo step of their own)."""
    if bpy.context.window_manager.windows:
        try:
            bpy.ops.ed.undo_push(message=name)
        except RuntimeError:
            pass                                # no undo stack in this context: the change stays, as made


def finish(run: Run, path: str) -> tuple:
    """Bring the result into the scene: (level, message)."""
    if bpy.context.mode != "OBJECT":
        try:                                    # an Edit Mode mesh would overwrite the new UVs and slots on leaving
            bpy.ops.object.mode_set(mode="OBJECT")
        except RuntimeError:
            raise scene_io.LookRefused("the result arrived while Blender was not in Object Mode and could not "
                                       "switch to it: nothing was added; run the job again from Object Mode") from None
    objects = scene_io.import_result(path)
    label = run.task.label
    if run.kind == "generate":
        meshes = scene_io.place_result(objects, run.location, f"Trellis {label}")
        faces = [len(p.vertices) for o in meshes for p in o.data.polygons]
        shape = f" ({sum(n == 4 for n in faces)} of {len(faces)} faces quads)" if path.lower().endswith(".obj") else ""
        return "INFO", f"added {', '.join(o.name for o in meshes) or 'nothing'} at the 3D cursor{shape}"
    obj = next((o for o in bpy.data.objects if o.as_pointer() == run.target[0]), None) \
        or bpy.data.objects.get(run.target[1])          # by pointer: a rename while the job ran is fine
    if obj is None or obj.type != "MESH":
        scene_io.discard(objects)
        raise scene_io.LookRefused(f"the object {run.target[1]!r} was deleted while the job ran: nothing was "
                                   "added")
    message, warning = scene_io.apply_look(obj, objects, f"Trellis {label}")
    return ("WARNING", f"{message}; {warning}") if warning else ("INFO", message)


def run_until_done(timeout: float = 600.0) -> tuple:
    """Follow the job to its end in this thread, through the timer's own tick() (for scripts in background mode,
    where timers do not run). Returns the outcome (level, message); TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        wait = tick()
        if wait is None:
            return State.last
        if time.monotonic() > deadline:
            raise TimeoutError(f"the job did not end within {timeout:g} s")
        time.sleep(wait)


def show_status(text) -> None:
    """The status bar's text (None: Blender's own) and a redraw of the sidebar, in every window."""
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", ()):
        try:
            with bpy.context.temp_override(window=window):
                bpy.context.workspace.status_text_set(text)
        except (AttributeError, RuntimeError, TypeError):
            pass                                # no status bar (Blender older than 3.2, or no screen)
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "STATUSBAR"):
                area.tag_redraw()


def take_presets(call) -> None:
    State.presets_call = None
    if call.error is not None:
        State.last = ("ERROR", call.error.message)
        return
    default = call.result.get("default", "")
    State.preset_items = [("SERVER", f"Server default ({default})", "the server's default preset", 0)] + [
        (name, name, f"the server's {name} preset: texture {s.get('texture_size')}, {s.get('ss_steps')} + "
                     f"{s.get('slat_steps')} steps", zlib.crc32(name.encode()) & 0x7FFFFFFF)
        for name, s in call.result.get("presets", {}).items()]
    if call.result.get("family_info"):
        State.families = call.result["family_info"]
        State.family_items, State.type_items = model_items(State.families), pipeline_items(State.families)
    State.last = ("INFO", f"presets of {prefs().server_url}: {', '.join(call.result.get('presets', {}))}")


class Problems:
    """The operators' common error handling: an ApiProblem is reported, remembered for the panel, and cancels."""

    def fail(self, message: str):
        State.last = ("ERROR", message)
        self.report({"ERROR"}, message)
        return {"CANCELLED"}

    def busy(self) -> bool:
        return State.run is not None


class TRELLIS_OT_generate(Problems, bpy.types.Operator):
    """Make a textured 3-D model from the image or the prompt; it is added at the 3D cursor"""
    bl_idname = "trellis.generate"
    bl_label = "Generate"
    source: bpy.props.EnumProperty(items=[("IMAGE", "Image", "from the image file"),
                                          ("PROMPT", "Prompt", "from the prompt")], default="IMAGE")

    def execute(self, context):
        if self.busy():
            return self.fail("a job is already running: wait for it or cancel it")
        settings = context.scene.trellis
        try:
            fields, files, label = look_source(settings, self.source)
            # the topology is the generated mesh's: a texture job keeps the object's own faces
            topology = client.topology_fields(settings.topology)
            task = client.Task(make_client(), {**job_fields(settings, topology), **fields}, files, label)
        except client.ApiProblem as err:
            return self.fail(err.message)
        start(task, "generate", location=context.scene.cursor.location)
        return {"FINISHED"}


class TRELLIS_OT_texture_selected(Problems, bpy.types.Operator):
    """Give the selected mesh a new texture from the image or the prompt: its mesh stays as it is"""
    bl_idname = "trellis.texture_selected"
    bl_label = "Texture Selected"
    source: bpy.props.EnumProperty(items=[("IMAGE", "Image", "the look of the image file"),
                                          ("PROMPT", "Prompt", "the look the prompt describes")], default="PROMPT")

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and obj.type == "MESH" and obj.select_get()

    def execute(self, context):
        if self.busy():
            return self.fail("a job is already running: wait for it or cancel it")
        obj, settings = context.active_object, context.scene.trellis
        if not obj.data.polygons:
            return self.fail(f"{obj.name} has no faces to texture")
        try:
            fields, files, label = look_source(settings, self.source)
            c = make_client()
            folder = tempfile.mkdtemp(prefix="trellis_blender_")
            try:
                path = os.path.join(folder, "mesh.glb")
                scene_io.export_mesh(obj, path)
                with open(path, "rb") as f:
                    mesh = f.read()
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            # keep_mesh=false in More Settings wins: the server then makes the shape again (see apply_look).
            fields = {"keep_mesh": "true", "mesh_name": f"{obj.name}.glb", **job_fields(settings), **fields}
            task = client.Task(c, fields, [("mesh", f"{obj.name}.glb", mesh, "model/gltf-binary"), *files],
                               f"{obj.name} {label}".strip())
        except client.ApiProblem as err:
            return self.fail(err.message)
        start(task, "texture", target=(obj.as_pointer(), obj.name))
        return {"FINISHED"}


class TRELLIS_OT_cancel(Problems, bpy.types.Operator):
    """Cancel the running job (the server stops it at its next step)"""
    bl_idname = "trellis.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return State.run is not None

    def execute(self, context):
        State.run.task.cancel()
        State.last = ("INFO", "cancelling the job")
        return {"FINISHED"}


class TRELLIS_OT_refresh_presets(Problems, bpy.types.Operator):
    """Read the presets and the model families of the server (GET /v1/presets, GET /v1/health)"""
    bl_idname = "trellis.refresh_presets"
    bl_label = "Fetch Presets"

    def execute(self, context):
        try:
            c = make_client()
        except client.ApiProblem as err:
            return self.fail(err.message)
        State.presets_call = client.Call(c.choices)
        if not bpy.app.timers.is_registered(tick):
            bpy.app.timers.register(tick, first_interval=POLL_S, persistent=True)
        return {"FINISHED"}


CLASSES = (TRELLIS_OT_generate, TRELLIS_OT_texture_selected, TRELLIS_OT_cancel, TRELLIS_OT_refresh_presets)


def unregister_timer() -> None:
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    if State.run is not None:
        State.run.task.cancel()
        State.run.task.cleanup()
        State.run = None
