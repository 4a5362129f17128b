"""The export's texture stage: observations of the Gaussians (``observations``), baked into the UV texture by the
"fast" least-squares solve (``least_squares``) or the reference's "opt" optimisation (``optimise``), through
``bake_texture`` (``texture``); texels never observed filled (``inpaint``); a bake that observed almost nothing
done again (``coverage``); renders of the textured result for comparisons (``preview``)."""
from .coverage import MIN_OBSERVED_SHARE, observed_share, rebake_if_unobserved
from .inpaint import inpaint_texture
from .least_squares import TextureAccumulator
from .observations import observation_cameras, render_observations, sharpening_scale
from .preview import render_textured, render_textured_mesh, textured_mesh_tensors
from .texture import bake_texture
from .views import MeshViews, sample_texture

__all__ = ["observation_cameras", "render_observations", "sharpening_scale", "TextureAccumulator", "bake_texture",
           "inpaint_texture", "MIN_OBSERVED_SHARE", "observed_share", "rebake_if_unobserved", "render_textured",
           "render_textured_mesh", "textured_mesh_tensors", "sample_texture", "MeshViews"]
