"""The lit PBR view (trellis/renderers/pbr_view.py, shaded by pbr_shading.py): physical properties of its images,
not snapshots: a polished red metal shows a red highlight brighter than a rough grey dielectric's, reflects the
environment in its own colour where no light hits it, a normal map changes the shading, the sRGB curves are the
standard's, and bad input is refused."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trellis.renderers.cameras import orbit_cameras
from trellis.renderers.pbr_shading import LIGHTS, linear_to_srgb, srgb_to_linear
from trellis.renderers.pbr_view import pbr_surface, render_pbr

RES = 48
EXT, INTR = orbit_cameras([0.0], [0.0], 2.0, 40.0)       # the camera on +y, looking at the origin
TOWARDS_CAMERA = torch.tensor([0.0, 1.0, 0.0])
RED, GREY = (230, 20, 20), (128, 128, 128)


def quad(normal, size=0.8):
    """A square of side `size` through the origin facing `normal`: (vertices, faces, uvs, normals, tangents)."""
    n = F.normalize(torch.as_tensor(normal, dtype=torch.float32), dim=0)
    t = F.normalize(torch.linalg.cross(torch.tensor([0.0, 0.0, 1.0]), n), dim=0)
    b = torch.linalg.cross(n, t)
    h = size / 2
    vertices = torch.stack([-h * t - h * b, h * t - h * b, h * t + h * b, -h * t + h * b])
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    tangents = torch.cat([t.expand(4, 3), torch.ones(4, 1)], 1)
    return vertices, faces, uvs, n.expand(4, 3), tangents


def flat(rgb, size=4):
    return np.broadcast_to(np.array(rgb, np.uint8), (size, size, len(rgb))).copy()


def material(rgb, metallic, roughness):
    """(base colour, glTF metallic-roughness map: G roughness, B metallic) uint8 textures of one value each."""
    return flat(rgb), flat((0, round(roughness * 255), round(metallic * 255)))


def view(geometry, base, metal_rough, **kw):
    """The view's colour [3,H,W] and the mean of its centre's 16 x 16 pixels [3]."""
    image = render_pbr(pbr_surface(*geometry[:4], base, metal_rough, **kw), EXT[0], INTR[0], RES)["color"]
    c = RES // 2
    return image, image[:, c - 8:c + 8, c - 8:c + 8].mean((1, 2))


def test_a_polished_red_metal_has_a_red_highlight_brighter_than_a_rough_grey_dielectric():
    key = F.normalize(torch.tensor(LIGHTS[0][0]), dim=0)
    mirror = quad(F.normalize(key + TOWARDS_CAMERA, dim=0))   # reflects the key light into the camera
    metal, metal_centre = view(mirror, *material(RED, 1.0, 0.25))
    grey, grey_centre = view(mirror, *material(GREY, 0.0, 1.0))
    assert metal_centre[0] > 0.9 and metal_centre[0] > 1.6 * metal_centre[1:].max()      # a red highlight
    assert metal.amax() > grey.amax() + 0.2 and metal_centre.sum() > grey_centre.sum()
    assert grey_centre.max() - grey_centre.min() < 0.05                                   # a grey stays grey


def test_a_metal_away_from_the_lights_mirrors_the_environment_in_its_colour_instead_of_going_black():
    _, centre = view(quad((0.0, 1.0, 0.3)), *material(RED, 1.0, 0.1))
    assert centre[0] > 0.4 and centre[0] > 3 * centre[1:].max()


def test_the_normal_map_changes_the_shading_and_a_flat_one_does_not():
    geometry = quad((0.0, 1.0, 0.0))
    base, mr = material(GREY, 0.0, 0.6)
    plain, _ = view(geometry, base, mr)
    level, _ = view(geometry, base, mr, normal_map=flat((128, 128, 255)), tangents=geometry[4])
    tilted, _ = view(geometry, base, mr, normal_map=flat((220, 128, 200)), tangents=geometry[4])
    assert (level - plain).abs().max() < 0.02
    assert (tilted - plain).abs().max() > 0.05


def test_the_surface_covers_its_pixels_over_the_background_colour():
    out = render_pbr(pbr_surface(*quad((0.0, 1.0, 0.0))[:4], *material(GREY, 0.0, 1.0)), EXT[0], INTR[0], RES,
                     ssaa=2, bg_color=(1.0, 1.0, 1.0))
    assert out["color"].shape == (3, RES, RES) and out["mask"].shape == (1, RES, RES)
    assert out["mask"][0, RES // 2, RES // 2] == 1 and out["mask"][0, 0, 0] == 0
    assert torch.allclose(out["color"][:, 0, 0], torch.ones(3))


def test_srgb_curves_are_the_standards_and_invert_each_other():
    x = torch.linspace(0, 1, 101)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-5)
    assert abs(float(srgb_to_linear(torch.tensor(0.5))) - 0.21404) < 1e-4
    assert float(srgb_to_linear(torch.tensor(0.04))) == pytest.approx(0.04 / 12.92)


def test_bad_input_is_refused_with_what_is_wrong():
    geometry = quad((0.0, 1.0, 0.0))
    base, mr = material(GREY, 0.0, 1.0)
    with pytest.raises(ValueError, match="tangents"):
        pbr_surface(*geometry[:4], base, mr, normal_map=flat((128, 128, 255)))
    with pytest.raises(ValueError, match="alpha_mode"):
        pbr_surface(*geometry[:4], base, mr, alpha_mode="GLASS")
    with pytest.raises(ValueError, match="needs the alpha"):
        pbr_surface(*geometry[:4], base, mr, alpha_mode="BLEND")
    with pytest.raises(ValueError, match="UVs"):
        pbr_surface(geometry[0], geometry[1], geometry[2][:3], geometry[3], base, mr)
