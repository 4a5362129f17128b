# SPDX-License-Identifier: GPL-3.0-or-later
"""What the user sees: the add-on's preferences (server URL and token: kept with Blender's preferences, not in
.blend files), the scene's job settings, and the sidebar panel View3D > Sidebar > Trellis."""
import textwrap

import bpy

from . import client
from .operators import State


def preset_items(self, context):
    return State.preset_items                 # a module-level list: Blender keeps no copy of dynamic items


def family_items(self, context):
    return State.family_items


def type_items(self, context):
    return State.type_items


class TrellisPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    server_url: bpy.props.StringProperty(
        name="Server URL", default=client.DEFAULT_URL,
        description="Trellis Desktop's REST API server (started with: python -m desktop api)")
    token: bpy.props.StringProperty(
        name="Token", subtype="PASSWORD", default="",
        description="the server's token, when it was started with --token (sent as Authorization: Bearer)")

    def draw(self, context):
        self.layout.prop(self, "server_url")
        self.layout.prop(self, "token")


class TrellisSettings(bpy.types.PropertyGroup):
    image_path: bpy.props.StringProperty(
        name="Image", subtype="FILE_PATH", default="",
        description="a photo or picture of one object (PNG with transparency, JPEG, WebP, ...)")
    prompt: bpy.props.StringProperty(
        name="Prompt", default="", description="describe the object or the new look, e.g. 'a red wooden chair'")
    preset: bpy.props.EnumProperty(
        name="Preset", items=preset_items,
        description="the server's presets (Fetch Presets reads them); the fields below override them")
    model_family: bpy.props.EnumProperty(
        name="Model", description="the model family a new model from an image is made with (Fetch Presets reads "
        "the server's); the server runs its own and the others installed there, and says how to install one that "
        "is not", items=family_items)
    pipeline_type: bpy.props.EnumProperty(
        name="Pipeline", description="the grid of a model family with pipeline types: finer is sharper, slower and "
        "needs more GPU memory", items=type_items)
    target_faces: bpy.props.IntProperty(
        name="Target Faces", default=0, min=0, max=2_000_000,
        description="faces of the new model, triangles or quads as Topology says (0: as the preset makes it; at "
        "least 100)")
    topology: bpy.props.EnumProperty(
        name="Topology", default="TRIANGLES",
        description="the faces of a new model (a texture job keeps the object's own)",
        items=[("TRIANGLES", "Triangles", "the generated triangle mesh, as a GLB", 0),
               ("QUADS", "Quads", "a quad remesh for rigging, sculpting and editing, with its texture baked again; "
                "it comes as an OBJ, whose faces stay quads", 1)])
    texture_size: bpy.props.IntProperty(
        name="Texture Size", default=0, min=0, max=8192, step=64,
        description="side of the texture in pixels (0: the preset's; 64 to 8192)")
    extra_fields: bpy.props.StringProperty(
        name="More Settings", default="",
        description="any other setting of POST /v1/jobs as NAME=VALUE pairs, e.g. 'seed=42 ss_steps=20'")


def wrapped(layout, text: str, width: int, icon: str = "NONE") -> None:
    for i, line in enumerate(textwrap.wrap(text, max(20, width)) or [""]):
        layout.label(text=line, icon=icon if i == 0 else "NONE")


class VIEW3D_PT_trellis(bpy.types.Panel):
    bl_label = "Trellis Desktop"
    bl_idname = "VIEW3D_PT_trellis"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Trellis"

    def draw(self, context):
        layout, settings = self.layout, context.scene.trellis
        prefs = context.preferences.addons[__package__].preferences
        chars = int(context.region.width / (7 * context.preferences.system.ui_scale)) if context.region else 40

        box = layout.box()
        box.prop(prefs, "server_url", text="Server")
        box.prop(prefs, "token")

        col = layout.column(align=True)
        row = col.row(align=True)
        row.prop(settings, "preset")
        row.operator("trellis.refresh_presets", text="", icon="FILE_REFRESH")
        col.prop(settings, "model_family")
        row = col.row()
        # a family with one path takes no pipeline type
        row.enabled = bool(client.pipeline_types(settings.model_family, State.families))
        row.prop(settings, "pipeline_type")
        col.prop(settings, "target_faces")
        col.row().prop(settings, "topology", expand=True)
        col.prop(settings, "texture_size")
        col.prop(settings, "extra_fields", text="More")

        busy = State.run is not None
        box = layout.box()
        box.label(text="New model at the 3D cursor", icon="OUTLINER_OB_MESH")
        box.prop(settings, "image_path", text="")
        row = box.row()
        row.enabled = not busy
        row.operator("trellis.generate", text="Generate from Image", icon="IMAGE_DATA").source = "IMAGE"
        box.prop(settings, "prompt", text="")
        row = box.row()
        row.enabled = not busy
        row.operator("trellis.generate", text="Generate from Prompt", icon="FONT_DATA").source = "PROMPT"

        box = layout.box()
        box.label(text="Texture the selected mesh", icon="TEXTURE")
        row = box.row(align=True)
        row.enabled = not busy
        row.operator("trellis.texture_selected", text="From Prompt").source = "PROMPT"
        row.operator("trellis.texture_selected", text="From Image").source = "IMAGE"
        box.label(text="The mesh stays; modifiers are not applied")

        if busy:
            snap = State.run.task.snapshot()
            box = layout.box()
            wrapped(box, f"{snap['label']}: {snap['message']}", chars, "TIME")
            box.label(text=f"{int(round(100 * snap['fraction']))} % done")
            box.operator("trellis.cancel", icon="CANCEL")
        elif State.last[1]:
            icon = {"ERROR": "ERROR", "WARNING": "INFO"}.get(State.last[0], "CHECKMARK")
            wrapped(layout.box(), State.last[1], chars, icon)


CLASSES = (TrellisPreferences, TrellisSettings, VIEW3D_PT_trellis)
