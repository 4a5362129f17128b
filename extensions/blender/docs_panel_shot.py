"""The picture of the sidebar panel in the add-on's docs (docs/blender_panel.png), taken in Blender's own window.

    python extensions/blender/build.py
    BLENDER_USER_CONFIG=/tmp/bcfg BLENDER_USER_SCRIPTS=/tmp/bscripts xvfb-run -a -s "-screen 0 1280x800x24" \\
        blender --factory-startup --enable-event-simulate --python extensions/blender/docs_panel_shot.py \\
        -- dist/trellis_desktop_blender.zip docs/blender_panel.png [model.glb]

Installs and enables the zip, opens the 3D view's sidebar on the Trellis tab, optionally imports a GLB beside the
cube (e.g. a result of the add-on's test) and shows the viewport in material preview, saves a screenshot of the
window and quits. Needs a display (a virtual one is enough); `blender -b` has no window to take.
"""
import os
import sys

import bpy

PKG = "trellis_desktop_blender"
args = sys.argv[sys.argv.index("--") + 1:]
ZIP, OUT = args[0], os.path.abspath(args[1])
MODEL = args[2] if len(args) > 2 else None
TRELLIS_TAB_BELOW_TOP = 158      # pixels: the fourth tab (after Item, Tool, View) of a factory Blender 3.x at scale 1


def view3d():
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                return window, area
    raise RuntimeError("no 3D view in the window")


def stage():
    try:
        arrange()
    except Exception:
        import traceback

        traceback.print_exc()
        bpy.ops.wm.quit_blender()
        return None
    bpy.app.timers.register(shoot, first_interval=2.0)
    return None


def arrange():
    bpy.ops.preferences.addon_install(filepath=ZIP, overwrite=True)
    bpy.ops.preferences.addon_enable(module=PKG)
    if MODEL:
        bpy.ops.import_scene.gltf(filepath=MODEL)
        for obj in bpy.context.selected_objects:
            obj.location.x += 2.5
    window, area = view3d()
    space = area.spaces.active
    space.show_region_ui = True
    space.shading.type = "MATERIAL" if MODEL else "SOLID"
    main = next(r for r in area.regions if r.type == "WINDOW")
    with bpy.context.temp_override(window=window, area=area, region=main):
        bpy.ops.view3d.view_all(center=False)
    sidebar = next(r for r in area.regions if r.type == "UI")
    x, y = sidebar.x + sidebar.width - 10, sidebar.y + sidebar.height - TRELLIS_TAB_BELOW_TOP
    window.event_simulate(type="ESC", value="PRESS", x=x, y=y)              # the splash screen
    window.event_simulate(type="ESC", value="RELEASE", x=x, y=y)
    if hasattr(sidebar, "active_panel_category"):          # Blender 4.x names the tab
        sidebar.active_panel_category = "Trellis"
    else:                                                  # 3.x: a click on the tab, where a factory Blender has it
        window.event_simulate(type="MOUSEMOVE", value="NOTHING", x=x, y=y)
        window.event_simulate(type="LEFTMOUSE", value="PRESS", x=x, y=y)
        window.event_simulate(type="LEFTMOUSE", value="RELEASE", x=x, y=y)


def shoot():
    window, area = view3d()
    with bpy.context.temp_override(window=window, area=area):
        bpy.ops.screen.screenshot(filepath=OUT)
    print(f"wrote {OUT}" if os.path.isfile(OUT) else f"no screenshot at {OUT}", flush=True)
    bpy.ops.wm.quit_blender()


bpy.app.timers.register(stage, first_interval=1.0)
