"""The surface voxeliser (trellis/representations/voxels.py) on real trimesh meshes and files, and hostile
models: surfaces that would take minutes to voxelise, cancel during it, FIFOs named by a model."""
import json
import os
import threading
import time
import tracemalloc

import numpy as np
import pytest
import trimesh

from trellis.core.callbacks import Cancelled
from trellis.representations import voxels as vx
from trellis.representations.voxels import (
    MeshInputError,
    normalize_vertices,
    voxelize,
    voxelize_surface,
)

from tests.helpers.blocking import without_hanging
from tests.helpers.meshes import nested_cubes, nested_cubes_stl


def analytic_sphere_shell(res=64):
    """Voxels that the sphere of the normalised icosphere (radius 0.5 - 1e-6) passes through: the box's
    nearest point is inside the sphere and its farthest point outside."""
    r = (0.5 - 1e-6) * res
    g = np.stack(np.meshgrid(*[np.arange(res)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(np.float64)
    lo, hi = g - res / 2, g + 1 - res / 2
    near = np.sqrt((np.clip(0, lo, hi) ** 2).sum(1))
    far = np.sqrt((np.maximum(np.abs(lo), np.abs(hi)) ** 2).sum(1))
    return {tuple(v) for v in g[(near <= r) & (far >= r)].astype(int)}


def test_sphere_is_a_shell_of_the_expected_voxels():
    coords = voxelize(trimesh.creation.icosphere(subdivisions=4)).numpy()
    assert coords.dtype == np.int32 and coords.shape[1] == 3
    assert len(np.unique(coords, axis=0)) == len(coords)
    got = {tuple(v) for v in coords}
    expected = analytic_sphere_shell()
    # The inscribed polyhedron sags below the sphere by < 0.02 voxel between vertices: the sets agree
    # but for a handful of voxels the true sphere only grazes.
    assert len(got ^ expected) <= 0.01 * len(expected), (len(got), len(expected))
    assert (32, 32, 32) not in got and (31, 31, 31) not in got          # a shell, not a solid


def test_cube_touches_exactly_the_outer_layer():
    coords = voxelize(trimesh.creation.box(extents=(2.0, 2.0, 2.0))).numpy()
    assert len(coords) == 64 ** 3 - 62 ** 3
    assert coords.min() == 0 and coords.max() == 63


def test_normalisation_centres_the_box_and_scales_the_largest_side():
    v = np.array([[10.0, 0, 0], [14, 1, 0], [10, 2, 0.5]])
    n = normalize_vertices(v)
    np.testing.assert_allclose(n.max(0) + n.min(0), 0, atol=1e-12)
    assert np.isclose(np.ptp(n, axis=0).max(), 1 - 2e-6)
    assert n.min() >= -0.5 + 1e-6 and n.max() <= 0.5 - 1e-6


def test_random_triangles_against_a_brute_force_scan():
    """Each triangle (small, large, thin, axis-aligned, on voxel boundaries) against every voxel of a
    16^3 grid; and, independently, points sampled on the triangle fall in its voxels, which all lie
    within a voxel's half diagonal of the triangle."""
    rng = np.random.default_rng(0)
    res = 16
    grid = np.stack(np.meshgrid(*[np.arange(res)] * 3, indexing="ij"), -1).reshape(-1, 3)
    tris = [rng.uniform(-0.5, 0.5, (3, 3)) for _ in range(6)]
    tris += [rng.uniform(-0.05, 0.05, (3, 3)) + 0.2, np.array([[-0.5, -0.5, 0.0], [0.49, -0.5, 0.0], [-0.5, 0.49, 0.0]]),
             np.array([[-0.25, -0.25, -0.25], [0.25, 0.25, 0.25], [0.25, 0.2500001, 0.25]])]
    for tri in tris:
        tri = np.clip(tri, -0.5 + 1e-6, 0.5 - 1e-6)
        got = {tuple(v) for v in voxelize_surface(tri, np.array([[0, 1, 2]]), res)}
        t = (tri + 0.5) * res
        brute = vx.triangle_box_overlap(np.repeat(t[None], len(grid), 0), grid + 0.5)
        assert got == {tuple(v) for v in grid[brute]}
        a, b = rng.random((2, 4000))
        flip = a + b > 1
        a[flip], b[flip] = 1 - a[flip], 1 - b[flip]
        pts = t[0] + a[:, None] * (t[1] - t[0]) + b[:, None] * (t[2] - t[0])
        assert {tuple(v) for v in np.floor(pts).astype(int).clip(0, res - 1)} <= got
        centres = np.array(sorted(got)) + 0.5
        dist = trimesh.triangles.closest_point(np.repeat(t[None], len(centres), 0), centres) - centres
        assert (np.linalg.norm(dist, axis=1) <= np.sqrt(3) / 2 + 1e-9).all()


@pytest.mark.parametrize("suffix", ["glb", "obj", "ply", "stl"])
def test_mesh_files_voxelise_like_the_mesh(tmp_path, suffix):
    """A file's coordinates are taken as written; glTF and OBJ as y up (see test_retexture_orientation)."""
    mesh = trimesh.creation.capsule(height=1.0, radius=0.4, count=[12, 12])
    path = tmp_path / f"shape.{suffix}"
    mesh.export(path)
    up = "y" if suffix in ("glb", "obj") else "z"
    assert np.array_equal(voxelize(str(path)).numpy(), voxelize(mesh, up=up).numpy())
    assert np.array_equal(voxelize(str(path), up="z").numpy(), voxelize(mesh).numpy())


def test_scene_with_several_meshes_is_placed_by_its_transforms():
    scene = trimesh.Scene()
    scene.add_geometry(trimesh.creation.box(), transform=trimesh.transformations.translation_matrix([-2, 0, 0]))
    scene.add_geometry(trimesh.creation.box(), transform=trimesh.transformations.translation_matrix([2, 0, 0]))
    coords = voxelize(scene).numpy()
    assert coords[:, 0].min() == 0 and coords[:, 0].max() == 63
    assert not ((coords[:, 0] > 14) & (coords[:, 0] < 49)).any()     # the gap between the two boxes


def test_bad_inputs_get_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(MeshInputError, match="empty"):
        voxelize(trimesh.Trimesh(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), int)))
    with pytest.raises(MeshInputError, match="not a triangle mesh"):
        voxelize(trimesh.PointCloud(np.random.default_rng(0).random((50, 3))))
    with pytest.raises(MeshInputError, match="triangles"):
        vx.check_mesh(np.random.default_rng(0).random((4, 3)), np.array([[0, 1, 2, 3]]))
    with pytest.raises(MeshInputError, match="no size"):
        voxelize(trimesh.Trimesh(vertices=np.ones((3, 3)), faces=[[0, 1, 2]], process=False))
    with pytest.raises(MeshInputError, match="NaN"):
        vx.check_mesh(np.array([[0, 0, 0], [1, 0, 0], [0, np.nan, 0]]), np.array([[0, 1, 2]]))
    monkeypatch.setattr(vx, "MAX_FACES", 100)
    with pytest.raises(MeshInputError, match="more than the 100 accepted: simplify"):
        voxelize(trimesh.creation.icosphere(subdivisions=2))
    monkeypatch.undo()
    jpeg = tmp_path / "photo.glb"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200))
    with pytest.raises(MeshInputError, match="cannot be read as a 3-D model"):
        voxelize(str(jpeg))
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(MeshInputError, match="not a 3-D model file"):
        voxelize(str(tmp_path / "photo.jpg"))
    with pytest.raises(MeshInputError, match="no such file"):
        voxelize(str(tmp_path / "missing.obj"))


def test_non_manifold_meshes_voxelise_unless_refused():
    """Three triangles on one edge: fine for a surface voxelisation (most downloaded assets are not
    watertight); refused with the reason when the caller requires a manifold."""
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], float)
    mesh = trimesh.Trimesh(vertices=v, faces=[[0, 1, 2], [0, 1, 3], [0, 1, 4]], process=False)
    assert len(voxelize(mesh)) > 0
    with pytest.raises(MeshInputError, match="not manifold: 1 edges"):
        voxelize(mesh, require_manifold=True)
    assert len(voxelize(trimesh.creation.box(), require_manifold=True)) > 0


# ------------------------------------------------------------------------------------------ hostile models

def slivers(n: int, seed: int = 1) -> tuple:
    """(vertices, faces) of n long thin triangles across the cube: many candidate voxels, few of them touched
    and none shared, the slowest kind of work per test."""
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(-0.5, 0.5, (2, n, 3))
    a[:, 0], b[:, 0] = -0.5, 0.5
    tris = np.stack([a, b, b + rng.normal(0, 0.003, (n, 3))], 1)
    return vx.normalize_vertices(tris.reshape(-1, 3)), np.arange(3 * n).reshape(-1, 3)


def test_nested_shells_are_refused_at_once_with_what_to_do(tmp_path):
    path = tmp_path / "nested.stl"
    path.write_bytes(nested_cubes_stl(2000))
    assert path.stat().st_size == 1_200_084
    t = time.perf_counter()
    with pytest.raises(MeshInputError, match=r"too large to voxelise: at 64\^3 they need about \d+ million .*"
                                             r"remove the inner parts, or remesh"):
        voxelize(str(path))
    assert time.perf_counter() - t < 3.0
    v, f = nested_cubes(2000)
    assert vx.voxel_work(v, f) > 20 * vx.MAX_WORK          # far above, not a borderline case
    with pytest.raises(MeshInputError, match="too large to voxelise"):
        vx.check_mesh(v, f)                                # the check the app runs before loading the model
    vx.check_mesh(v, f, resolution=None)
    with pytest.raises(MeshInputError, match="at 16\\^3"):
        voxelize(trimesh.Trimesh(v, f, process=False), resolution=16)


def test_work_estimate_bounds_the_tests_made(monkeypatch):
    """voxel_work is what MAX_WORK limits: never below the candidate voxels the voxeliser tests, and not
    far above."""
    tested = []
    mark = vx._mark_pieces

    def counting(grid, pieces, resolution, cancel):
        lo, hi = pieces.min(axis=1), pieces.max(axis=1)
        first = np.clip(np.floor(lo) - (lo == np.floor(lo)), 0, resolution - 1)
        tested.append(int(np.prod(np.clip(np.floor(hi), 0, resolution - 1) - first + 1, axis=1).sum()))
        return mark(grid, pieces, resolution, cancel)
    monkeypatch.setattr(vx, "_mark_pieces", counting)
    sphere = trimesh.creation.icosphere(3)
    for v, f in (slivers(40), nested_cubes(3), (sphere.vertices, sphere.faces)):
        v = normalize_vertices(v)
        tested.clear()
        voxelize_surface(v, f)
        assert sum(tested) <= vx.voxel_work(v, f) <= 3 * sum(tested), (sum(tested), vx.voxel_work(v, f))


def test_the_worst_accepted_surface_is_quick_in_bounded_memory():
    v, f = slivers(1240)
    work = vx.voxel_work(v, f)
    assert 0.9 * vx.MAX_WORK < work <= vx.MAX_WORK
    tracemalloc.start()
    t = time.perf_counter()
    coords = voxelize_surface(v, f)
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(coords) > 50_000
    assert seconds < 15, seconds
    assert peak < 200 * 2 ** 20, peak / 2 ** 20     # chunks of bounded size, whatever the mesh
    # The same triangles, tested one by one against the reference test, give the same voxels.
    some = slice(0, 3)
    got = {tuple(c) for c in voxelize_surface(v, f[some])}
    grid = np.stack(np.meshgrid(*[np.arange(64)] * 3, indexing="ij"), -1).reshape(-1, 3)
    want = set()
    for tri in (v[f[some]] + 0.5) * 64:
        want |= {tuple(c) for c in grid[vx.triangle_box_overlap(np.repeat(tri[None], len(grid), 0), grid + 0.5)]}
    assert got == want


def test_cancel_lands_within_a_second_during_voxelisation():
    v, f = nested_cubes(2000)
    v = normalize_vertices(v)
    stop = threading.Event()
    outcome = {}

    def run():
        try:
            voxelize_surface(v, f, cancel=stop.is_set, max_work=10 ** 12)     # no limit: it would run long
            outcome["result"] = "finished"
        except Cancelled as err:
            outcome["result"] = err
        outcome["at"] = time.perf_counter()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    time.sleep(0.5)
    asked = time.perf_counter()
    stop.set()
    worker.join(10)
    assert isinstance(outcome.get("result"), Cancelled), outcome
    assert outcome["at"] - asked < 2.0, outcome["at"] - asked
    calls = []
    with pytest.raises(Cancelled):
        voxelize(trimesh.Trimesh(*nested_cubes(20), process=False), cancel=lambda: calls.append(1) or len(calls) > 3)
    assert len(calls) == 4                         # checked between chunks, not only before and after


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_files_a_model_names_are_opened_only_when_regular(tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    box = trimesh.creation.box()
    for line in (f"mtllib {fifo}", "mtllib fifo"):             # absolute, and beside the model
        path = tmp_path / "model.obj"
        path.write_text(line + "\n" + box.export(file_type="obj"))
        coords = without_hanging(lambda path=path: voxelize(str(path)), fifo)
        assert not isinstance(coords, Exception), coords
        assert np.array_equal(coords.numpy(), voxelize(box).numpy())
    # A glTF's buffer that is a FIFO: refused, with the reason, at once.
    files = box.export(file_type="gltf")
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    assert np.array_equal(voxelize(str(tmp_path / "model.gltf"), up="z").numpy(), voxelize(box).numpy())
    doc = json.loads(files["model.gltf"])
    doc["buffers"][0]["uri"] = "fifo"
    (tmp_path / "piped.gltf").write_text(json.dumps(doc))
    err = without_hanging(lambda: voxelize(str(tmp_path / "piped.gltf")), fifo)
    assert isinstance(err, MeshInputError) and "piped.gltf names another file that cannot be used: fifo is not a " \
        "regular file" in str(err), err
    # The model itself a FIFO (or a folder): refused, never opened for reading.
    os.mkfifo(tmp_path / "pipe.stl")
    err = without_hanging(lambda: voxelize(str(tmp_path / "pipe.stl")), str(tmp_path / "pipe.stl"))
    assert isinstance(err, MeshInputError) and "not a regular file" in str(err), err
    (tmp_path / "folder.glb").mkdir()
    with pytest.raises(MeshInputError, match="not a regular file"):
        voxelize(str(tmp_path / "folder.glb"))
