"""New looks of a user's 3-D model: which way is up, and models that must not hang or swamp the job.

The rule (trellis/representations/mesh_input.py): GLB / glTF and OBJ are y up and turned into the pipeline's
z up, the exact inverse of this app's own GLB / OBJ export; STL and PLY are z up; a trimesh mesh given directly
is z up. The model is an L-shaped lamp (a wide base at the bottom, a tall post, an arm at the top pointing one
way), so a turn by 90 degrees or a flip shows. All on the tiny random-weight pipelines of
`python -m trellis.tools.tiny_pipeline --text`, on the CPU: the app's job runner end to end, output GLB
included; the random decoder makes fragments, but they lie in the voxels the structure gave it.
"""
import json
import os
import threading
import time

import numpy as np
import pytest
import torch
import trimesh
from scipy import ndimage
from tests.helpers.blocking import without_hanging
from tests.helpers.meshes import nested_cubes, nested_cubes_stl

import trellis.pipelines.base as pipeline_base
from desktop.jobs import JobRequest, JobRunner
from desktop.settings import GenerationSettings
from trellis.core.callbacks import Cancelled
from trellis.pipelines import TrellisTextTo3DPipeline
from trellis.representations import voxels as vx
from trellis.representations.mesh_input import Y_UP_TO_Z_UP, load_mesh
from trellis.export.assemble import Z_UP_TO_Y_UP, make_glb_mesh, save_glb, save_obj

FAST = {"seed": 1, "randomize_seed": False, "ss_steps": 2, "slat_steps": 2, "video_frames": 8, "video_resolution": 64, "fill_holes": False,
        "texture_size": 64, "bake_views": 4, "bake_resolution": 64, "formats": ["glb"]}
TINY_RES = 16              # the tiny pipeline's stage-2 grid
pytestmark = pytest.mark.filterwarnings("ignore::trellis.pipelines.trellis_text_to_3d.PromptTruncatedWarning")


def lamp_y_up() -> trimesh.Trimesh:
    """Standing along +Y (glTF's up), base at y = 0, arm towards +Z; sizes in 1/16 so every format stores them
    exactly. Extents 0.625 x 1 x 0.8125."""
    parts = []
    for extents, centre in (((0.625, 0.125, 0.625), (0, 0.0625, 0)),       # base
                            ((0.125, 1.0, 0.125), (0, 0.5, 0)),            # post
                            ((0.125, 0.125, 0.5), (0, 0.9375, 0.25))):     # arm
        box = trimesh.creation.box(extents=extents)
        box.apply_translation(centre)
        parts.append(box)
    return trimesh.util.concatenate(parts)


def lamp_z_up() -> trimesh.Trimesh:
    """The same lamp in the pipeline's frame: standing along +Z."""
    y = lamp_y_up()
    return trimesh.Trimesh(y.vertices @ Y_UP_TO_Z_UP, y.faces, process=False)


@pytest.fixture(scope="module")
def lamp_files(tmp_path_factory) -> dict:
    """The lamp in every format, each written the way that format is usually up."""
    folder = tmp_path_factory.mktemp("lamps")
    y, z = lamp_y_up(), lamp_z_up()
    files = {"glb": folder / "lamp.glb", "obj": folder / "lamp.obj", "ply": folder / "lamp_z.ply",
             "stl": folder / "lamp_z.stl"}
    y.export(files["glb"])
    y.export(files["obj"])
    z.export(files["ply"])
    z.export(files["stl"])
    for name, data in y.export(file_type="gltf").items():       # the JSON and its .bin buffers beside it
        (folder / name).write_bytes(data)
    files["gltf"] = folder / "model.gltf"
    return files


def occupancy(coords, res: int, grow: int = 0) -> np.ndarray:
    grid = np.zeros((res,) * 3, bool)
    grid[tuple(np.asarray(coords).T)] = True
    return ndimage.binary_dilation(grid, iterations=grow) if grow else grid


def spread(coords: np.ndarray, axis: int, keep) -> float:
    """Extent along `axis` of the voxels kept by the mask."""
    sel = coords[keep]
    return float(np.ptp(sel[:, axis])) if len(sel) else 0.0


# ------------------------------------------------------------------------------------------ the rule

def test_every_format_gives_the_standing_lamp(lamp_files):
    expected = vx.voxelize(lamp_z_up()).numpy()
    for fmt, path in lamp_files.items():
        assert np.array_equal(vx.voxelize(str(path)).numpy(), expected), fmt
    # The GLB and the z-up STL agree voxel for voxel; and the structure stands: tall along z, base at the bottom.
    assert np.array_equal(vx.voxelize(str(lamp_files["glb"])).numpy(), vx.voxelize(str(lamp_files["stl"])).numpy())
    extent = expected.max(0) - expected.min(0)
    assert extent[2] == extent.max() and extent[2] > extent[0] + 16
    z = expected[:, 2]
    assert spread(expected, 0, z < 8) > 3 * spread(expected, 0, z >= 56)
    # The arm: glTF +Z is the pipeline's -Y, so at the top the lamp reaches its lowest y; the base does not.
    low_y = expected[:, 1].min()
    assert expected[z >= 56, 1].min() == low_y and expected[z < 8, 1].min() > low_y + 8
    # Read against the rule, the lamp lies on its back: what the tests above tell apart.
    assert not np.array_equal(vx.voxelize(str(lamp_files["glb"]), up="z").numpy(), expected)


def test_the_apps_own_glb_and_obj_round_trip(tmp_path):
    """The exporter writes z up as y up; reading applies the exact inverse."""
    z = lamp_z_up()
    uv = np.zeros((len(z.vertices), 2))
    texture = np.full((8, 8, 3), 128, np.uint8)
    save_glb(make_glb_mesh(z.vertices, z.faces, uv, texture, crease_angle=None), tmp_path / "model.glb")
    save_obj(z.vertices, z.faces, uv, texture, tmp_path / "model.obj", crease_angle=None)
    for name in ("model.glb", "model.obj"):
        back = load_mesh(str(tmp_path / name))
        np.testing.assert_allclose(back.vertices, z.vertices, atol=1e-6, err_msg=name)
        assert np.array_equal(vx.voxelize(str(tmp_path / name)).numpy(), vx.voxelize(z).numpy()), name
    np.testing.assert_array_equal(Y_UP_TO_Z_UP @ Z_UP_TO_Y_UP, np.eye(3))


def test_meshes_given_directly_are_z_up_and_never_turn_twice(lamp_files):
    loaded = trimesh.load(str(lamp_files["glb"]), force="mesh")          # the caller's own read: y up
    assert np.array_equal(vx.voxelize(loaded, up="y").numpy(), vx.voxelize(str(lamp_files["glb"])).numpy())
    once = load_mesh(str(lamp_files["glb"]))
    twice = load_mesh(once)
    np.testing.assert_array_equal(twice.vertices, once.vertices)
    assert np.array_equal(vx.voxelize(str(lamp_files["stl"]), up="y").numpy(),
                          vx.voxelize(trimesh.load(str(lamp_files["stl"]), force="mesh"), up="y").numpy())
    with open(lamp_files["glb"], "rb") as f:                               # a file object needs its type
        assert np.array_equal(vx.voxelize(load_mesh(f, file_type="glb")).numpy(), vx.voxelize(lamp_z_up()).numpy())
    with pytest.raises(ValueError, match="up must be"):
        load_mesh(once, up="x")


# ------------------------------------------------------------------------------------------ the app

@pytest.fixture(scope="module")
def runner(tiny_text_models_dir, tmp_path_factory):
    r = JobRunner(os.path.join(tiny_text_models_dir, "TRELLIS-image-large"), tmp_path_factory.mktemp("looks"),
                  device="cpu", text_model=os.path.join(tiny_text_models_dir, "TRELLIS-text-tiny"))
    yield r
    r.shutdown(cancel=True, wait=True, timeout=30)


@pytest.fixture
def structures(monkeypatch) -> list:
    """The voxels each new look ran stage 2 on (the pipeline runs as usual)."""
    seen = []
    original = pipeline_base.TrellisPipeline._generate_on_structure

    def recording(self, cond, voxels, *args, **kwargs):
        seen.append(voxels.clone())
        return original(self, cond, voxels, *args, **kwargs)
    monkeypatch.setattr(pipeline_base.TrellisPipeline, "_generate_on_structure", recording)
    return seen


def new_look(runner, mesh, keep_mesh=False):
    """A new look; by default with the shape made again (keep_mesh off), whose orientation these tests check."""
    job = runner.submit_request(JobRequest(mesh=mesh, prompt="a brass lamp",
                                            settings=GenerationSettings(**FAST, keep_mesh=keep_mesh)))
    assert job.wait(300), "the job did not end"
    return job


def stands_as_the_lamp(glb_path) -> None:
    """The output GLB's geometry lies in the standing lamp's voxels, not in those of the lamp on its back or
    upside down; and, in glTF terms, it is tallest along Y and wide at the bottom."""
    v = np.asarray(trimesh.load(glb_path, force="mesh").vertices)
    cell = tuple(np.clip(np.floor((v @ Y_UP_TO_Z_UP + 0.5) * TINY_RES).astype(int), 0, TINY_RES - 1).T)
    flipped = lamp_y_up()
    flipped.vertices[:, 1] *= -1
    grids = {name: occupancy(vx.voxelize(mesh, resolution=TINY_RES, up=up), TINY_RES, grow=1)[cell]
             for name, mesh, up in (("standing", lamp_y_up(), "y"), ("on its back", lamp_y_up(), "z"),
                                    ("upside down", flipped, "y"))}
    # Most vertices lie in the standing lamp's (grown) cells; the share moves with the CPU's float rounding of the
    # random decoder (0.80-0.99 seen), the flipped poses hold 0.1-0.56, so 0.7 still tells them apart.
    assert grids["standing"].mean() > 0.7, grids["standing"].mean()
    # The poses share the post: what decides is where they differ (the base and the arm), so the vertices in
    # the standing lamp's cells that the other pose lacks must outnumber those in the other pose's own cells.
    for other in ("on its back", "upside down"):
        ours = int((grids["standing"] & ~grids[other]).sum())
        theirs = int((grids[other] & ~grids["standing"]).sum())
        assert ours > 3 * theirs, (other, ours, theirs)
    extent = np.ptp(v, axis=0)
    assert extent[1] == extent.max(), extent
    y = v[:, 1]
    low, high = y < y.min() + 0.2 * extent[1], y > y.max() - 0.2 * extent[1]
    assert np.ptp(v[low, 0]) > 1.5 * np.ptp(v[high, 0])


@pytest.mark.slow
def test_new_look_stands_as_the_input_in_every_format_and_twice(runner, lamp_files, structures):
    expected = vx.voxelize(lamp_z_up(), resolution=TINY_RES)
    uploads = [str(p) for p in lamp_files.values()] + [("renamed.obj", lamp_files["glb"].read_bytes())]
    for mesh in uploads:
        job = new_look(runner, mesh)
        name = mesh[0] if isinstance(mesh, tuple) else os.path.basename(mesh)
        assert job.state == "done", (name, job.error)
        assert torch.equal(structures[-1], expected), name
    stands_as_the_lamp(job.files["glb"])
    # Its own result fed back, twice in a row: it still stands.
    first = new_look(runner, str(lamp_files["glb"]))
    stands_as_the_lamp(first.files["glb"])
    second = new_look(runner, first.files["glb"])
    assert second.state == "done", second.error
    assert torch.equal(structures[-1], vx.voxelize(first.files["glb"], resolution=TINY_RES))
    stands_as_the_lamp(second.files["glb"])
    # Keeping the mesh (the default): the file's own points come back (this lamp has no UVs: its new atlas splits
    # vertices at seams), so it stands as it stood, in its own units.
    kept = new_look(runner, str(lamp_files["glb"]), keep_mesh=True)
    assert kept.state == "done", kept.error
    source = trimesh.load(str(lamp_files["glb"]), force="mesh", process=False)
    result = trimesh.load(kept.files["glb"], force="mesh", process=False)
    points = {tuple(p) for p in np.asarray(source.vertices)}
    assert all(tuple(p) in points for p in np.asarray(result.vertices)) and len(result.faces) == len(source.faces)
    assert np.array_equal(result.bounds, source.bounds)


# ------------------------------------------------------------------------------------------ hostile models

def test_nested_shells_fail_the_job_at_once_before_the_model_loads(runner, tmp_path):
    path = tmp_path / "nested.stl"
    path.write_bytes(nested_cubes_stl(2000))
    t = time.perf_counter()
    job = new_look(runner, str(path))
    assert time.perf_counter() - t < 10
    assert job.state == "failed" and job.error_kind == "input", (job.state, job.error)
    assert "too large to voxelise" in job.error
    assert json.load(open(job.files["error"]))["kind"] == "input" and "mesh" in job.files    # kept to run again


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_an_obj_naming_a_fifo_does_not_hang_the_job(runner, tmp_path, lamp_files):
    fifo = tmp_path / "materials.mtl"
    os.mkfifo(fifo)
    path = tmp_path / "lamp.obj"
    path.write_text(f"mtllib {fifo}\n" + lamp_files["obj"].read_text())
    job = without_hanging(lambda: new_look(runner, str(path)), str(fifo), seconds=60)
    assert job.state == "done", job.error


def test_cancel_during_voxelisation_lands_within_a_second(tiny_text_models_dir, monkeypatch):
    """run_variant passes its cancel to the voxeliser. The limit is lifted so that a model the app refuses runs
    long enough to be cancelled midway."""
    pipe = TrellisTextTo3DPipeline.from_pretrained(os.path.join(tiny_text_models_dir, "TRELLIS-text-tiny"))
    monkeypatch.setattr(vx, "MAX_WORK", 10 ** 12)
    shells = trimesh.Trimesh(*nested_cubes(20000), process=False)
    stop, box = threading.Event(), {}

    def run():
        try:
            box["result"] = pipe.run_variant(shells, "a box", cancel=stop.is_set, formats=["gaussian"])
        except Cancelled as err:
            box["result"] = err
        box["at"] = time.perf_counter()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    time.sleep(1.0)
    asked = time.perf_counter()
    stop.set()
    worker.join(30)
    assert isinstance(box.get("result"), Cancelled), box
    assert box["at"] - asked < 2.0, box["at"] - asked
