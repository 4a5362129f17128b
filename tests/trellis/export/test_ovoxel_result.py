"""A TRELLIS.2 result.npz: the O-Voxel back bit for bit in its compact layout (quads and split bits, integer
steps for a light O-Voxel, exact floats otherwise), files of the first layout still read, the same GLB from the kept
result as from the O-Voxel, and every damaged file refused with what is wrong."""
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.ovoxels import voxel_sphere
from trellis.export import save_result
from trellis.export.ovoxel_codec import ATTR_STEPS, VERTEX_STEPS, byte_planes, same_bits
from trellis.export.ovoxel_result import (
    OVOXEL_RESULT_FORMAT,
    OVOXEL_RESULT_FORMAT_1,
    DamagedResultError,
    check_ovoxel_result,
    is_ovoxel_result,
    light_ovoxel,
    load_ovoxel_result,
    save_ovoxel_result,
)
from trellis.export.pbr import ovoxel_to_glb
from trellis.representations.gaussian import Gaussian
from trellis.representations.ovoxel import MeshWithVoxel


def ovoxel(n: int = 40, res: int = 64, seed: int = 0) -> MeshWithVoxel:
    g = torch.Generator().manual_seed(seed)
    coords = torch.randint(0, res, (n, 3), generator=g, dtype=torch.int32)
    vertices = (coords.float() + torch.rand(n, 3, generator=g)) / res - 0.5
    faces = torch.randint(0, n, (n // 2, 3), generator=g)
    return MeshWithVoxel(vertices, faces, coords, res, torch.rand(n, 6, generator=g))


def rewrite(src, dst, **members):
    """A copy of the result `src` with some members' arrays replaced (None: left out)."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        for name in z.namelist():
            key = name[:-4]
            if key not in members:
                out.writestr(name, z.read(name))
            elif members[key] is not None:
                with out.open(name, "w") as fh:
                    np.lib.format.write_array(fh, np.ascontiguousarray(members[key]))
    return dst


def members(path) -> dict:
    with zipfile.ZipFile(path) as z:
        return {i.filename: i.compress_type for i in z.infolist()}


def test_half_precision_attributes_are_kept_in_half_and_floats_are_stored(tmp_path):
    mesh = ovoxel(n=400)
    mesh.attrs = mesh.attrs.half().float()              # what a half-precision decoder gives: exact in float16
    path = save_ovoxel_result(tmp_path / "result.npz", mesh)
    head = check_ovoxel_result(path)[0]
    assert head["attrs"] == {"codec": "float", "dtype": "float16"}
    kinds = members(path)
    assert kinds["attr_values.npy"] == zipfile.ZIP_STORED
    assert kinds["coords.npy"] == kinds["face_rows.npy"] == kinds["vertex_codes.npy"] == zipfile.ZIP_DEFLATED
    back = load_ovoxel_result(path)
    for name in ("vertices", "faces", "coords", "attrs"):
        assert torch.equal(getattr(back, name), getattr(mesh, name)), name
    assert back.attrs.dtype == torch.float32 and back.coords.dtype == torch.int32
    mesh.attrs = mesh.attrs.bfloat16()                  # a bf16 decoder's (numpy has no bfloat16): float16 where exact
    assert check_ovoxel_result(save_ovoxel_result(tmp_path / "c.npz", mesh))[0]["attrs"]["dtype"] == "float16"
    assert torch.equal(load_ovoxel_result(tmp_path / "c.npz").attrs, mesh.attrs.float())
    mesh.attrs = mesh.attrs.float()
    mesh.attrs[0, 0] = 0.1                              # not exact in float16: kept in float32
    assert check_ovoxel_result(save_ovoxel_result(tmp_path / "b.npz", mesh))[0]["attrs"]["dtype"] == "float32"


def header(path=None, **changes) -> np.ndarray:
    """The header of the result at `path` (else the first layout's of a 64^3 grid) with `changes` (None: removed)."""
    record = check_ovoxel_result(path)[0] if path else {
        "format": OVOXEL_RESULT_FORMAT_1, "res": 64,
        "layout": {"base_color": [0, 3], "metallic": [3, 4], "roughness": [4, 5], "alpha": [5, 6]}}
    record = {k: v for k, v in {**record, **changes}.items() if v is not None}
    return np.frombuffer(json.dumps(record).encode(), dtype=np.uint8)


def test_the_ovoxel_comes_back_exactly(tmp_path):
    mesh = ovoxel()
    path = save_ovoxel_result(tmp_path / "result.npz", mesh, {"pipeline_type": "512"})
    assert is_ovoxel_result(path)
    back = load_ovoxel_result(path)
    for name in ("vertices", "faces", "coords", "attrs"):
        assert torch.equal(getattr(back, name), getattr(mesh, name)), name
    assert back.res == mesh.res and back.layout == mesh.layout
    assert check_ovoxel_result(path)[0]["pipeline_type"] == "512"


def test_a_v1_result_or_another_file_is_not_taken_for_one(tmp_path):
    v1 = tmp_path / "v1.npz"
    fields = {"xyz": torch.rand(4, 3), "features_dc": torch.rand(4, 1, 3), "scaling": torch.rand(4, 3),
              "rotation": torch.rand(4, 4), "opacity": torch.rand(4, 1)}
    save_result(v1, Gaussian.from_raw_fields(dict(aabb=[-0.5, -0.5, -0.5, 1, 1, 1]), fields), None)
    assert not is_ovoxel_result(v1) and not is_ovoxel_result(tmp_path) and not is_ovoxel_result(tmp_path / "no")
    with pytest.raises(DamagedResultError, match="members are not a result's"):
        load_ovoxel_result(v1)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe")
        assert not is_ovoxel_result(tmp_path / "pipe")


FIXTURE = Path(__file__).parents[2] / "data" / "ovoxel_result_v1.npz"     # written by the first layout's saver


def test_a_result_of_the_first_layout_still_loads_exactly(tmp_path):
    with np.load(FIXTURE) as z:
        stored = {name: z[name] for name in ("coords", "attrs", "vertices", "faces")}
        head = json.loads(z["header"].tobytes())
    assert head["format"] == OVOXEL_RESULT_FORMAT_1 and is_ovoxel_result(FIXTURE)
    back = load_ovoxel_result(FIXTURE)
    for name, a in stored.items():
        assert np.array_equal(getattr(back, name).numpy(), a), name
    assert back.res == head["res"] == 24 and check_ovoxel_result(FIXTURE)[0]["pipeline_type"] == "512"
    again = load_ovoxel_result(save_ovoxel_result(tmp_path / "again.npz", back))       # kept in today's layout
    for name in ("vertices", "faces", "coords", "attrs"):
        assert same_bits(getattr(again, name), getattr(back, name)), name


@pytest.mark.parametrize("members, words", [
    ({"header": header(res=0)}, "grid resolution"),
    ({"header": header(format="trellis-result-1")}, "not a kept TRELLIS.2 result"),
    ({"header": header(layout={"base_color": [0, 3]})}, "attribute layout"),
    ({"coords": np.full((40, 3), 64, np.int32)}, "outside the 64"),
    ({"faces": np.full((20, 3), 40, np.int32)}, "faces point past"),
    ({"attrs": np.full((40, 6), np.nan, np.float32)}, "NaN"),
    ({"attrs": np.zeros((39, 6), np.float32)}, "39 rows for 40 voxels"),
    ({"attrs": np.zeros((40, 5), np.float32)}, "shape"),
    ({"vertices": None}, "vertices.npy missing"),
])
def test_a_damaged_result_of_the_first_layout_is_refused_with_what_is_wrong(tmp_path, members, words):
    good = rewrite(FIXTURE, tmp_path / "good.npz", coords=ovoxel().coords.numpy(), attrs=ovoxel().attrs.numpy(),
                   vertices=ovoxel().vertices.numpy(), faces=ovoxel().faces.numpy(), header=header())
    load_ovoxel_result(good)
    bad = rewrite(good, tmp_path / "bad.npz", **members)
    with pytest.raises(DamagedResultError, match=words):
        load_ovoxel_result(bad)


def bits_equal(a: MeshWithVoxel, b: MeshWithVoxel) -> None:
    assert a.res == b.res and a.layout == b.layout
    for name in ("vertices", "faces", "coords", "attrs"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert same_bits(x, y) if x.dtype == torch.float32 else torch.equal(x, y), name


def test_a_dual_grid_mesh_keeps_its_quads_and_any_other_mesh_its_triangles(tmp_path):
    sphere = voxel_sphere(32)
    path = save_ovoxel_result(tmp_path / "sphere.npz", sphere)
    head = check_ovoxel_result(path)[0]
    assert head["format"] == OVOXEL_RESULT_FORMAT and head["voxels"] == sphere.coords.shape[0]
    assert head["faces"]["codec"] == "quads" and 2 * head["faces"]["count"] == sphere.faces.shape[0]
    bits_equal(load_ovoxel_result(path), sphere)
    swapped = voxel_sphere(16)                          # pairs of triangles that are not a quad's: kept as triangles
    swapped.faces = swapped.faces[:, [1, 2, 0]]
    path = save_ovoxel_result(tmp_path / "swapped.npz", swapped)
    assert check_ovoxel_result(path)[0]["faces"]["codec"] == "triangles"
    bits_equal(load_ovoxel_result(path), swapped)
    other = ovoxel()                                    # random faces: no quads
    path = save_ovoxel_result(tmp_path / "other.npz", other)
    assert check_ovoxel_result(path)[0]["faces"] == {"codec": "triangles", "count": 20, "dtype": "int16"}
    bits_equal(load_ovoxel_result(path), other)


def test_any_float_comes_back_bit_for_bit(tmp_path):
    mesh = voxel_sphere(16)
    v, a = mesh.vertices.clone(), mesh.attrs.clone()
    v[0] = torch.tensor([-0.0, 0.0, 1e-38])             # signed zero, a subnormal's neighbour, beyond the voxel
    v[1] = torch.tensor([3.0e5, -2.5e5, float(torch.finfo(torch.float32).tiny)])
    a[0, :3] = torch.tensor([-0.0, 1e-30, -7.5])
    mesh = MeshWithVoxel(v, mesh.faces, mesh.coords, mesh.res, a)
    path = save_ovoxel_result(tmp_path / "odd.npz", mesh)
    head = check_ovoxel_result(path)[0]
    assert head["vertices"]["codec"] == "delta" and head["attrs"] == {"codec": "float", "dtype": "float32"}
    bits_equal(load_ovoxel_result(path), mesh)


def test_a_light_ovoxel_is_kept_in_small_integers_and_comes_back_exactly(tmp_path):
    sphere = voxel_sphere(48)
    light = light_ovoxel(sphere)
    assert torch.equal(light.faces, sphere.faces) and torch.equal(light.coords, sphere.coords)
    moved = ((light.vertices - sphere.vertices).abs().max() * sphere.res).item()
    assert 0 < moved <= 0.5 / VERTEX_STEPS + 1e-5      # half a step of the voxel, and float32's rounding
    assert 0 < (light.attrs - sphere.attrs).abs().max().item() <= 0.5 / ATTR_STEPS
    exact = save_ovoxel_result(tmp_path / "exact.npz", sphere)
    path = save_ovoxel_result(tmp_path / "light.npz", light)
    head = check_ovoxel_result(path)[0]
    assert head["vertices"] == {"codec": "dual", "steps": VERTEX_STEPS, "dtype": "int16"}
    assert head["attrs"] == {"codec": "codes", "steps": ATTR_STEPS, "dtype": "int16"}
    bits_equal(load_ovoxel_result(path), light)
    assert os.path.getsize(path) * 3 < os.path.getsize(exact)
    bits_equal(light_ovoxel(light), light)              # rounding twice changes nothing


def test_the_glb_of_a_kept_result_is_the_glb_of_the_ovoxel_itself(tmp_path):
    for name, mesh in (("exact", voxel_sphere(40)), ("light", light_ovoxel(voxel_sphere(40)))):
        back = load_ovoxel_result(save_ovoxel_result(tmp_path / f"{name}.npz", mesh))
        glbs = [ovoxel_to_glb(m, tmp_path / f"{name}{i}.glb", target_faces=2000, texture_size=64) and
                (tmp_path / f"{name}{i}.glb").read_bytes() for i, m in enumerate((mesh, back))]
        assert glbs[0] == glbs[1], name


def quads_past_the_vertices(path, head, m):
    """Quads whose last one starts past the vertices (the other members as saved)."""
    rows = np.zeros((head["faces"]["count"], 4), np.int32)
    rows[-1, 0] = m
    return {"face_rows": byte_planes(rows), "header": header(path, faces={**head["faces"], "dtype": "int32"})}


@pytest.mark.parametrize("change, words", [
    (lambda p, h, m: {"header": header(p, voxels=m + 1)}, "header counts"),
    (lambda p, h, m: {"header": header(p, faces={"codec": "edges", "count": 1, "dtype": "int16"})},
     "faces' encoding"),
    (lambda p, h, m: {"header": header(p, vertices={"codec": "dual", "steps": 0, "dtype": "int16"})},
     "vertices' encoding"),
    (lambda p, h, m: {"header": header(p, attrs={"codec": "float", "dtype": "float64"})}, "attrs' encoding"),
    (lambda p, h, m: {"header": header(p, voxels=None)}, "voxel count"),
    (lambda p, h, m: {"header": header(p, format=OVOXEL_RESULT_FORMAT_1)}, "not a kept TRELLIS.2 result of this"),
    (lambda p, h, m: {"vertex_codes": byte_planes(np.zeros((m - 1, 3), np.int32))}, "do not match its header"),
    (lambda p, h, m: {"splits": np.zeros(1, np.uint8)}, "do not match its header"),
    (lambda p, h, m: {"attr_values": np.full(m * 6, np.nan, np.float32),
                      "header": header(p, attrs={"codec": "float", "dtype": "float32"})}, "NaN"),
    (lambda p, h, m: {"coords": np.full((m, 3), 16, np.uint16)}, "outside the 16"),
    (quads_past_the_vertices, "faces point past"),
    (lambda p, h, m: {"splits": None}, "splits.npy missing"),
    (lambda p, h, m: {"attr_values": np.zeros(m * 6, np.float16)}, "do not match its header"),
])
def test_a_damaged_result_is_refused_with_what_is_wrong(tmp_path, change, words):
    mesh = voxel_sphere(16)
    good = save_ovoxel_result(tmp_path / "good.npz", mesh)
    load_ovoxel_result(good)
    bad = rewrite(good, tmp_path / "bad.npz", **change(good, check_ovoxel_result(good)[0], mesh.coords.shape[0]))
    with pytest.raises(DamagedResultError, match=words):
        load_ovoxel_result(bad)


def test_the_file_is_its_members_as_zipfile_writes_them(tmp_path):
    for name, mesh in (("exact", voxel_sphere(24)), ("light", light_ovoxel(voxel_sphere(24))), ("triangles", ovoxel())):
        path = Path(save_ovoxel_result(tmp_path / f"{name}.npz", mesh, {"pipeline_type": "512"}))
        with zipfile.ZipFile(path) as z, np.load(path) as npz:
            kinds = [(i.filename, i.compress_type) for i in z.infolist()]
            arrays = {member: npz[member[:-4]] for member, _ in kinds}
        assert [m for m, _ in kinds] == ["header.npy", "coords.npy", "face_rows.npy", "splits.npy", "vertex_codes.npy",
                                         "attr_values.npy"]
        with zipfile.ZipFile(tmp_path / "ref.npz", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            for member, kind in kinds:
                if kind == zipfile.ZIP_STORED:
                    member = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
                    member.compress_type = zipfile.ZIP_STORED
                with z.open(member, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, arrays[getattr(member, "filename", member)])
        assert (tmp_path / "ref.npz").read_bytes() == path.read_bytes(), name


def flip(path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x5A
    path.write_bytes(bytes(data))


def test_a_truncated_or_rotted_result_is_refused(tmp_path):
    good = Path(save_ovoxel_result(tmp_path / "good.npz", voxel_sphere(16)))
    with zipfile.ZipFile(good) as z:
        infos = {i.filename: i for i in z.infolist()}
    assert infos["attr_values.npy"].compress_type == zipfile.ZIP_STORED
    for member in ("attr_values.npy", "vertex_codes.npy"):             # stored (only its CRC tells), deflated
        zi = infos[member]
        bad = tmp_path / f"rot-{member}.npz"
        bad.write_bytes(good.read_bytes())
        flip(bad, zi.header_offset + 30 + len(member) + 20 + zi.compress_size - 3)
        with pytest.raises(DamagedResultError, match="not a readable zip"):
            load_ovoxel_result(bad)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])
    with pytest.raises(DamagedResultError, match="not a readable zip"):
        load_ovoxel_result(cut)
