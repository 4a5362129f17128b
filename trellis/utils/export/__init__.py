"""The GLB / OBJ export of a TRELLIS result, one stage per module (``postprocessing_utils.to_glb`` runs
them in this order):

* ``cleanup``: the clean-up chain (``clean_mesh_for_export``) over
  ``simplify`` (quadric decimation, in pieces and child processes), ``visibility`` (which faces the
  orbit views see), ``hidden_faces`` (the min-cut that removes inner shells) and ``holes`` (small
  boundary loops closed);
* ``uv_unwrap``: xatlas bounded in time, our chart layout as fallback;
* ``observations`` (the renders the bake reads: cameras, colour, mask, depth) and ``texture_bake`` (the
  texture solve, inpainting, renders of the textured result; it re-exports the observation names);
* ``assemble``: the textured mesh as GLB (y up, PBR) or OBJ + MTL + PNG, with vertex normals from
  ``normals`` (smooth, split at creases).

Shared helpers: ``graph`` (edges, the dual graph, components), ``child`` (child processes for the
native steps), ``common`` (array conversions). ``from trellis.utils.export import make_glb_mesh,
save_glb, save_obj`` works as before this was a package.
"""
from .assemble import Z_UP_TO_Y_UP, make_glb_mesh, save_glb, save_obj

__all__ = ["Z_UP_TO_Y_UP", "make_glb_mesh", "save_glb", "save_obj"]
