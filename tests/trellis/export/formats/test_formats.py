"""Every export format (trellis/export/formats/) written from a real baked TexturedMesh and read back by a real
reader: GLB by trimesh and the Khronos glTF validator, OBJ/STL/3MF by trimesh, USDZ by usd-core and its
validators (UsdValidation: the checks of ``usdchecker``, which replaced the Python ComplianceChecker). Every file
is placed 1.8 m tall on its base unless a test says otherwise, so the size, the base and the axis are checked on
every reader's bounding box."""
import io
import os
import zipfile

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from tests.helpers.asset import make_gaussians, make_mesh
from tests.helpers.gltf import glb_json, validate_gltf
from tests.helpers.usd import usd_problems
from trellis.export import bake_textured_mesh
from trellis.export.assemble import with_normals
from trellis.export.formats import FORMATS, format_of, write
from trellis.export.formats.gltf import welded

HEIGHT = 1.8
PLACED = dict(height=HEIGHT, pivot="bottom")


@pytest.fixture(scope="module")
def textured():
    """A bumpy sphere baked from Gaussians (320 faces, UV seams, a 64² texture): closed, so watertight once welded."""
    torch.manual_seed(0)
    v, f = make_mesh(2)
    return bake_textured_mesh(make_gaussians(v, f, n=3000), (v, f), simplify=0.0, fill_holes=False,
                              texture_size=64, verbose=False, nviews=4, render_resolution=64, device="cpu",
                              uv_method="geometric")


def check_standing(bounds, up: str, size: float = HEIGHT, atol: float = 1e-5):
    """A bounding box ([2, 3]) ``size`` tall along ``up``, base at 0, centred on the two other axes."""
    low, high = np.asarray(bounds, dtype=np.float64)
    axis = "xyz".index(up)
    others = [i for i in range(3) if i != axis]
    assert low[axis] == 0.0, low
    np.testing.assert_allclose(high[axis], size, rtol=1e-6)
    np.testing.assert_allclose((low + high)[others] / 2, 0, atol=atol * size)    # a wrong axis has low < 0 here


def test_formats_are_chosen_by_suffix_or_name(textured, tmp_path):
    assert format_of("a/b.GLB") == "glb" and format_of("x.usdz") == "usdz" and format_of("x.bin", "STL") == "stl"
    for bad in ("model.fbx", "model"):
        with pytest.raises(ValueError, match="unknown export format"):
            write(textured, tmp_path / bad)
    assert set(FORMATS) == {"glb", "obj", "stl", "3mf", "usdz"}


@pytest.mark.parametrize("name, options", [("obj", dict(texture_format="webp")), ("usdz", dict(texture_format="webp")),
                                           ("glb", dict(texture_format="tiff")), ("stl", dict(units="cm")),
                                           ("3mf", dict(up="x")), ("glb", dict(pivot="top")),
                                           ("stl", dict(height=-1.0))])
def test_bad_options_are_refused_before_anything_is_written(textured, tmp_path, name, options):
    path = tmp_path / f"model.{name}"
    with pytest.raises(ValueError):
        write(textured, path, **options)
    assert not path.exists()


def test_default_glb_and_obj_are_the_files_of_save_glb_and_save_obj(textured, tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    assert write(textured, tmp_path / "a" / "m.glb") == str(tmp_path / "a" / "m.glb")
    textured.save_glb(tmp_path / "b" / "m.glb")
    write(textured, tmp_path / "a" / "m.obj")
    textured.save_obj(tmp_path / "b" / "m.obj")
    for name in ("m.glb", "m.obj", "m.mtl", "m.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


# ----------------------------------------------------------------------------------------------------- GLB

IMAGE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def glb_image_bytes(path, info: dict) -> bytes:
    """The bytes of the GLB's one image, from its binary chunk (which follows the JSON chunk)."""
    data = open(path, "rb").read()
    json_length = int.from_bytes(data[12:16], "little")
    binary = data[20 + json_length + 8:]
    view = info["bufferViews"][info["images"][0]["bufferView"]]
    start = view.get("byteOffset", 0)
    return binary[start:start + view["byteLength"]]


@pytest.mark.parametrize("texture_format", ["png", "jpeg", "webp"])
def test_glb_texture_formats_pass_the_khronos_validator(textured, tmp_path, texture_format):
    path = write(textured, tmp_path / "m.glb", texture_format=texture_format, up="z", units="mm", **PLACED)
    report = validate_gltf(path)
    issues = report["issues"]
    print(f"\nglTF validator {report.get('validatorVersion')}, {texture_format}: {issues['numErrors']} errors, "
          f"{issues['numWarnings']} warnings, {issues['numInfos']} infos, {issues['numHints']} hints")
    assert issues["numErrors"] == 0, [m for m in issues["messages"] if m["severity"] == 0]
    assert issues["numWarnings"] == 0, [m for m in issues["messages"] if m["severity"] == 1]

    info = glb_json(path)
    (image,) = info["images"]
    assert image["mimeType"] == f"image/{texture_format}"
    if texture_format == "webp":                 # the extension is required: no PNG fallback is written
        assert info["extensionsRequired"] == ["EXT_texture_webp"]
        assert info["textures"] == [{"extensions": {"EXT_texture_webp": {"source": 0}}}]
    else:
        assert "extensionsRequired" not in info
    pbr = info["materials"][0]["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0 and pbr["roughnessFactor"] == 1

    loaded = trimesh.load(path, force="mesh")
    assert len(loaded.faces) == len(textured.faces)
    check_standing(loaded.bounds, "y")               # GLB is y up in metres whatever up/units say
    img = Image.open(io.BytesIO(glb_image_bytes(path, info)))
    assert img.format == IMAGE_FORMATS[texture_format]            # the bytes are what the mimeType says
    error = np.abs(np.asarray(img.convert("RGB"), dtype=np.float64) - textured.texture).mean()
    assert error == 0 if texture_format == "png" else error < 6, error      # lossy, but the same picture


def test_geometry_only_glb_has_no_texture_and_a_plain_material(textured, tmp_path):
    path = write(textured, tmp_path / "m.glb", geometry_only=True, **PLACED)
    issues = validate_gltf(path)["issues"]
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]
    info = glb_json(path)
    assert "images" not in info and "textures" not in info
    (primitive,) = info["meshes"][0]["primitives"]
    assert set(primitive["attributes"]) == {"POSITION", "NORMAL"}
    (material,) = info["materials"]
    assert material["pbrMetallicRoughness"]["metallicFactor"] == 0    # not glTF's default, fully metallic
    loaded = trimesh.load(path, force="mesh", process=False)
    assert len(loaded.faces) == len(textured.faces)
    check_standing(loaded.bounds, "y")
    # seams welded: no two vertices at one position unless a crease split them (then with other normals)
    assert len(loaded.vertices) < len(textured.vertices)


# ----------------------------------------------------------------------------------------------------- OBJ

def test_obj_turns_to_the_up_it_is_given(textured, tmp_path):
    for up in ("y", "z"):
        path = write(textured, tmp_path / f"m_{up}.obj", up=up, **PLACED)
        loaded = trimesh.load(path, force="mesh", process=False)
        assert len(loaded.faces) == len(textured.faces)
        assert loaded.visual.uv is not None
        check_standing(loaded.bounds, up, atol=1e-5)
    mm = trimesh.load(write(textured, tmp_path / "mm.obj", units="mm", **PLACED), force="mesh")
    check_standing(mm.bounds, "y", size=HEIGHT * 1000)


def test_obj_jpeg_texture_and_geometry_only(textured, tmp_path):
    path = write(textured, tmp_path / "t.obj", texture_format="jpeg", **PLACED)
    assert "map_Kd t.jpg" in (tmp_path / "t.mtl").read_text()
    assert Image.open(tmp_path / "t.jpg").format == "JPEG"
    assert trimesh.load(path, force="mesh").visual.material.image.size == (64, 64)

    path = write(textured, tmp_path / "g.obj", geometry_only=True, up="z", **PLACED)
    text = (tmp_path / "g.obj").read_text()
    assert "mtllib" not in text and "\nvt " not in text and "\nvn " in text
    assert sorted(p.name for p in tmp_path.iterdir() if p.stem == "g") == ["g.obj"]
    loaded = trimesh.load(path, force="mesh")
    loaded.merge_vertices(merge_norm=True)        # crease copies of a point differ only in their normals
    assert len(loaded.faces) == len(textured.faces) and loaded.is_watertight
    check_standing(loaded.bounds, "z")


# ----------------------------------------------------------------------------------------------- STL, 3MF

def test_the_welded_input_is_watertight(textured):
    assert trimesh.Trimesh(*welded(textured.vertices, textured.faces), process=False).is_watertight


@pytest.mark.parametrize("up", ["z", "y"])
def test_stl_is_binary_watertight_and_in_millimetres(textured, tmp_path, up):
    path = textured.save(tmp_path / "m.stl", units="mm", up=None if up == "z" else up, **PLACED)
    data = open(path, "rb").read()
    assert len(data) == 84 + 50 * len(textured.faces)             # binary STL: header, count, 50 bytes a face
    loaded = trimesh.load(path)
    assert len(loaded.faces) == len(textured.faces) and loaded.is_watertight
    check_standing(loaded.bounds, up, size=HEIGHT * 1000)


@pytest.mark.parametrize("units, unit, size", [("mm", "millimeter", HEIGHT * 1000), ("m", "meter", HEIGHT)])
def test_3mf_names_its_unit_and_is_watertight(textured, tmp_path, units, unit, size):
    path = write(textured, tmp_path / "m.3mf", units=units, **PLACED)
    with zipfile.ZipFile(path) as package:
        assert package.testzip() is None
        assert {"[Content_Types].xml", "_rels/.rels", "3D/3dmodel.model"} <= set(package.namelist())
        model = package.read("3D/3dmodel.model")
    from lxml import etree
    root = etree.fromstring(model)
    assert root.get("unit") == unit
    welded_count = len(welded(textured.vertices, textured.faces)[0])
    assert len(list(root.iter("{*}vertex"))) == welded_count        # one vertex per point: seams closed
    scene = trimesh.load(path)
    assert scene.metadata["units"] == unit
    loaded = scene.to_geometry()
    assert len(loaded.faces) == len(textured.faces) and loaded.is_watertight
    check_standing(loaded.bounds, "z", size=size)
    turned = trimesh.load(write(textured, tmp_path / "y.3mf", up="y", units=units, **PLACED))
    check_standing(turned.bounds, "y", size=size)


# ---------------------------------------------------------------------------------------------------- USDZ

def test_the_usd_validators_do_find_problems(textured, tmp_path):
    from pxr import Usd
    found = " ".join(message for _, message in usd_problems(Usd.Stage.CreateInMemory()))
    assert "upAxis" in found and "metersPerUnit" in found and "defaultPrim" in found
    # our package's files re-zipped without the usdz alignment: the package validators see it
    good = write(textured, tmp_path / "good.usdz")
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tmp_path / "bad.usdz", "w", zipfile.ZIP_STORED) as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
    found = " ".join(message for _, message in usd_problems(Usd.Stage.Open(str(tmp_path / "bad.usdz"))))
    assert "ByteMisalignment" in found


def open_usdz(path):
    from pxr import Usd, UsdGeom
    stage = Usd.Stage.Open(str(path))
    assert stage is not None
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.y and UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    assert stage.GetDefaultPrim().GetPath() == "/Model"
    problems = usd_problems(stage)
    print(f"\nUSD validators on {path.name}: {problems or 'no findings'}")
    assert problems == []
    return stage, UsdGeom.Mesh(stage.GetPrimAtPath("/Model/Mesh"))


@pytest.mark.parametrize("texture_format", ["png", "jpeg"])
def test_usdz_opens_in_usd_core_with_its_texture_bound(textured, tmp_path, texture_format):
    from pxr import UsdGeom, UsdShade
    path = write(textured, tmp_path / "m.usdz", texture_format=texture_format, up="z", units="mm", **PLACED)
    stage, mesh = open_usdz(tmp_path / "m.usdz")
    points = np.asarray(mesh.GetPointsAttr().Get())
    counts = np.asarray(mesh.GetFaceVertexCountsAttr().Get())
    expected_points = len(with_normals(textured.vertices, textured.faces, textured.uvs, 60.0)[0])
    assert len(points) == expected_points and len(counts) == len(textured.faces) and (counts == 3).all()
    assert mesh.GetSubdivisionSchemeAttr().Get() == "none"
    check_standing(np.stack([points.min(0), points.max(0)]), "y")       # y up, metres, whatever up/units say
    np.testing.assert_allclose(np.asarray(mesh.GetExtentAttr().Get()), [points.min(0), points.max(0)])
    assert mesh.GetNormalsInterpolation() == "vertex" and len(mesh.GetNormalsAttr().Get()) == len(points)
    st = UsdGeom.PrimvarsAPI(mesh).GetPrimvar("st")
    assert st.GetInterpolation() == "vertex" and len(st.Get()) == len(points)

    material = UsdShade.MaterialBindingAPI(mesh.GetPrim()).ComputeBoundMaterial()[0]
    assert material.GetPath() == "/Model/Materials/Baked"
    surface = material.ComputeSurfaceSource()[0]
    assert surface.GetIdAttr().Get() == "UsdPreviewSurface"
    assert surface.GetInput("metallic").Get() == 0 and surface.GetInput("roughness").Get() == 1
    texture = surface.GetInput("diffuseColor").GetConnectedSources()[0][0].source
    texture = UsdShade.Shader(texture.GetPrim())
    assert texture.GetIdAttr().Get() == "UsdUVTexture"
    assert texture.GetInput("sourceColorSpace").Get() == "sRGB"
    inner = texture.GetInput("file").Get().resolvedPath          # inside the package: m.usdz[...]
    assert inner.startswith(str(path)) and inner.endswith((".png]" if texture_format == "png" else ".jpg]"))
    with zipfile.ZipFile(path) as package:
        names = package.namelist()
        assert names[0] == "model.usdc"                               # the root layer comes first
        (image_name,) = [n for n in names if not n.endswith(".usdc")]
        image = Image.open(io.BytesIO(package.read(image_name)))
    assert image.format == {"png": "PNG", "jpeg": "JPEG"}[texture_format]
    error = np.abs(np.asarray(image.convert("RGB"), dtype=np.float64) - textured.texture).mean()
    assert error == 0 if texture_format == "png" else error < 6


def test_geometry_only_usdz_has_a_plain_material(textured, tmp_path):
    from pxr import UsdGeom, UsdShade
    # written under a temporary name (as the app's atomic writes do), then renamed: the root layer keeps its own name
    write(textured, tmp_path / ".g.partial-1a2b3c4d.usdz", geometry_only=True, texture_format="webp", **PLACED)
    os.rename(tmp_path / ".g.partial-1a2b3c4d.usdz", tmp_path / "g.usdz")
    stage, mesh = open_usdz(tmp_path / "g.usdz")
    assert not UsdGeom.PrimvarsAPI(mesh).HasPrimvar("st")
    assert len(mesh.GetFaceVertexCountsAttr().Get()) == len(textured.faces)
    surface = UsdShade.MaterialBindingAPI(mesh.GetPrim()).ComputeBoundMaterial()[0].ComputeSurfaceSource()[0]
    assert not surface.GetInput("diffuseColor").HasConnectedSource()
    with zipfile.ZipFile(tmp_path / "g.usdz") as package:
        assert package.namelist() == ["model.usdc"]
