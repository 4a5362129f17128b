# SPDX-License-Identifier: GPL-3.0-or-later
"""Trellis Desktop for Blender: a sidebar panel (View3D > Sidebar > Trellis) that sends an image, a prompt or the
selected mesh to Trellis Desktop's REST API and brings the textured result into the scene.

One folder for both kinds of install: Blender 4.2+ reads blender_manifest.toml (an extension), Blender 3.x reads
the bl_info dict below (a legacy add-on; it reads from the first line starting with that name to the next blank
line, so keep the dict free of blank lines). bpy is imported by register() only, so client.py and meshmatch.py
import in any Python.
"""

bl_info = {
    "name": "Trellis Desktop",
    "author": "Trellis Desktop authors",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "View3D > Sidebar > Trellis",
    "description": "Image or prompt to a textured 3-D model, and new textures for a selected mesh, through "
                   "Trellis Desktop's REST API",
    "category": "3D View",
}


def register():
    import bpy

    from . import operators, panel

    for cls in (*operators.CLASSES, *panel.CLASSES):
        bpy.utils.register_class(cls)
    bpy.types.Scene.trellis = bpy.props.PointerProperty(type=panel.TrellisSettings)


def unregister():
    import bpy

    from . import operators, panel

    operators.unregister_timer()
    del bpy.types.Scene.trellis
    for cls in reversed((*operators.CLASSES, *panel.CLASSES)):
        bpy.utils.unregister_class(cls)
