"""A PBR material (TRELLIS.2's export, trellis/export/pbr/) and its normal map reach the OBJ and the USDZ
(trellis/export/formats/material_maps.py), checked by their real readers: usd-core opens the USDZ and finds
UsdPreviewSurface's metallic, roughness, normal and opacity connected to texture readers whose images are in the
package and hold the baked maps; Blender imports the OBJ with its Principled BSDF's Metallic, Roughness, Normal and
Alpha fed by the map files. A material without alpha or normal map names neither; TRELLIS v1's colour-only files
name none of them."""
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.ovoxels import voxel_sphere
from tests.helpers.usd import usd_problems
from tests.helpers.blender import inspected
from trellis.export.formats import write
from trellis.export.pbr import bake_ovoxel
from trellis.export.pbr.textured import pbr_textured_mesh

SURFACE = "/Model/Materials/Baked/Surface"


@pytest.fixture(scope="module")
def pbr_mesh():
    """The voxel sphere's PBR bake: metallic on one half, roughness rising with y, a see-through cap (MASK), a
    normal map."""
    textured = bake_ovoxel(voxel_sphere(), target_faces=2000, texture_size=128)
    assert textured.pbr.alpha_mode == "MASK" and textured.normal_texture is not None
    return textured


def without(textured, alpha: bool = True, normal: bool = True):
    """``textured`` with its alpha mode OPAQUE (``alpha`` False) and without its normal map (``normal`` False)."""
    pbr = textured.pbr if alpha else textured.pbr._replace(alpha_mode="OPAQUE", alpha_cutoff=None)
    return pbr_textured_mesh(textured.vertices, textured.faces, textured.uvs, textured.texture,
                             dict(textured.info), textured.normal_texture if normal else None, pbr, textured.split)


def surface_sources(path) -> tuple:
    """({input: (shader, output, its file inside the package or None, shader inputs)}, other inputs' values) of
    the USDZ's preview surface, read by usd-core."""
    from pxr import Usd, UsdShade
    stage = Usd.Stage.Open(str(path))
    surface = UsdShade.Shader(stage.GetPrimAtPath(SURFACE))
    assert surface.GetIdAttr().Get() == "UsdPreviewSurface"
    wired, values = {}, {}
    for put in surface.GetInputs():
        sources = put.GetConnectedSources()[0]
        if not sources:
            values[put.GetBaseName()] = put.Get()
            continue
        (source,) = sources
        shader = UsdShade.Shader(source.source.GetPrim())
        file = shader.GetInput("file")
        inputs = {i.GetBaseName(): i.Get() for i in shader.GetInputs() if i.GetBaseName() != "st"}
        wired[put.GetBaseName()] = (shader.GetIdAttr().Get(), source.sourceName,
                                    None if file is None else file.Get().path, inputs)
        assert shader.GetInput("st").GetConnectedSources()[0][0].source.GetPath().name == "StReader"
    return wired, values


def package_image(path, name) -> np.ndarray:
    with zipfile.ZipFile(path) as package:
        assert name in package.namelist(), package.namelist()
        return np.asarray(Image.open(BytesIO(package.read(name))))


def test_the_usdz_wires_metallic_roughness_normal_and_opacity_to_its_maps(pbr_mesh, tmp_path):
    from pxr import Usd, UsdGeom
    path = write(pbr_mesh, tmp_path / "m.usdz")
    wired, values = surface_sources(path)
    assert set(wired) == {"diffuseColor", "metallic", "roughness", "normal", "opacity"}
    assert all(kind == "UsdUVTexture" for kind, *_ in wired.values())
    assert wired["metallic"][1:3] == ("b", wired["roughness"][2]) and wired["roughness"][1] == "g"
    assert wired["metallic"][3]["sourceColorSpace"] == "raw"
    assert wired["diffuseColor"][1:3] == ("rgb", wired["opacity"][2]) and wired["opacity"][1] == "a"
    assert wired["normal"][1] == "rgb" and wired["normal"][3]["sourceColorSpace"] == "raw"
    assert tuple(wired["normal"][3]["scale"]) == (2, 2, 2, 1) and tuple(wired["normal"][3]["bias"]) == (-1, -1, -1, 0)
    assert values == {"opacityThreshold": pytest.approx(0.5)}             # MASK: the cut-off; no constant left
    # the files the readers name are in the package and hold the baked maps
    base = package_image(path, wired["diffuseColor"][2])
    np.testing.assert_array_equal(base[..., :3], pbr_mesh.texture)
    np.testing.assert_array_equal(base[..., 3], pbr_mesh.pbr.alpha)
    np.testing.assert_array_equal(package_image(path, wired["metallic"][2]), pbr_mesh.pbr.metallic_roughness)
    np.testing.assert_array_equal(package_image(path, wired["normal"][2]), pbr_mesh.normal_texture)
    stage = Usd.Stage.Open(str(path))
    assert UsdGeom.Mesh(stage.GetPrimAtPath("/Model/Mesh")).GetDoubleSidedAttr().Get() is True
    assert [p for p in usd_problems(stage) if p[0] == "Error"] == []


def test_an_opaque_usdz_without_normal_map_names_neither_and_a_jpeg_keeps_the_alpha_in_png(pbr_mesh, tmp_path):
    wired, values = surface_sources(write(without(pbr_mesh, alpha=False, normal=False), tmp_path / "o.usdz"))
    assert set(wired) == {"diffuseColor", "metallic", "roughness"} and values == {}
    wired, _ = surface_sources(write(pbr_mesh, tmp_path / "j.usdz", texture_format="jpeg"))
    assert wired["diffuseColor"][2].endswith(".png") and wired["metallic"][2].endswith(".jpg")
    assert package_image(tmp_path / "j.usdz", wired["diffuseColor"][2]).shape[2] == 4


def mtl_maps(obj_path) -> dict:
    """{keyword: file} of the MTL the OBJ names."""
    folder = Path(obj_path).parent
    lib = next(line.split()[1] for line in Path(obj_path).read_text().splitlines() if line.startswith("mtllib"))
    return {parts[0]: parts[-1] for parts in (line.split() for line in (folder / lib).read_text().splitlines())
            if len(parts) >= 2 and (parts[0].startswith("map_") or parts[0] == "norm")}


def test_the_obj_material_carries_the_pbr_extension_maps(pbr_mesh, tmp_path):
    path = write(pbr_mesh, tmp_path / "m.obj")
    maps = mtl_maps(path)
    assert maps == {"map_Kd": "m.png", "map_Pr": "m_roughness.png", "map_Pm": "m_metallic.png",
                    "norm": "m_normal.png", "map_Bump": "m_normal.png", "map_d": "m_alpha.png"}
    read = {key: np.asarray(Image.open(tmp_path / name)) for key, name in maps.items()}
    np.testing.assert_array_equal(read["map_Kd"], pbr_mesh.texture)
    np.testing.assert_array_equal(read["map_Pr"], pbr_mesh.pbr.metallic_roughness[..., 1])
    np.testing.assert_array_equal(read["map_Pm"], pbr_mesh.pbr.metallic_roughness[..., 2])
    np.testing.assert_array_equal(read["norm"], pbr_mesh.normal_texture)
    np.testing.assert_array_equal(read["map_d"], np.dstack([pbr_mesh.pbr.alpha] * 2))     # grey and alpha
    bare = write(without(pbr_mesh, alpha=False, normal=False), tmp_path / "o.obj")
    assert set(mtl_maps(bare)) == {"map_Kd", "map_Pr", "map_Pm"}
    assert {p.name for p in tmp_path.iterdir() if p.stem.startswith("o")} == {
        "o.obj", "o.mtl", "o.png", "o_roughness.png", "o_metallic.png"}


def test_v1_colour_only_files_name_no_other_map(tmp_path):
    import torch

    from tests.helpers.asset import make_gaussians, make_mesh
    from trellis.export import bake_textured_mesh
    torch.manual_seed(0)
    v, f = make_mesh(1)
    v1 = bake_textured_mesh(make_gaussians(v, f, n=500), (v, f), simplify=0.0, fill_holes=False, texture_size=16,
                            verbose=False, nviews=2, render_resolution=32, device="cpu", uv_method="geometric")
    assert mtl_maps(write(v1, tmp_path / "v.obj")) == {"map_Kd": "v.png"}
    wired, values = surface_sources(write(v1, tmp_path / "v.usdz"))
    assert set(wired) == {"diffuseColor"} and values == {"metallic": 0.0, "roughness": 1.0}


def test_blender_imports_the_obj_with_its_pbr_maps_wired(pbr_mesh, tmp_path):
    seen = inspected(write(pbr_mesh, tmp_path / "m.obj"))
    assert seen["meshes"][0]["faces"] == len(pbr_mesh.faces) and seen["meshes"][0]["uv_maps"]
    inputs = seen["materials"][0]["inputs"]
    assert {name: (src["file"], src["output"]) for name, src in inputs.items()} == {
        "Base Color": ("m.png", "Color"), "Metallic": ("m_metallic.png", "Color"),
        "Roughness": ("m_roughness.png", "Color"), "Alpha": ("m_alpha.png", "Alpha"),
        "Normal": ("m_normal.png", "Color")}
    assert inputs["Normal"]["through"] == ["NORMAL_MAP.Normal"]
    assert seen["materials"][0]["normal_map"]["space"] == "TANGENT"

