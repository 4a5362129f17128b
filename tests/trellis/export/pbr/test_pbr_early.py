"""The O-Voxel's mesh prepared while its texture samples (``pipeline.run(on_shape=...)`` +
``trellis.export.pbr.early.EarlyPrepare``) gives the serial order's files bit for bit, on the tiny TRELLIS.2
pipeline; the preparation is the one the bake would make (same mesh, same options) or refused, and a stop ends it."""
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.ovoxel_blobs import random_blob
from trellis import pipelines
from trellis.core.callbacks import Cancelled
from trellis.export import ExportJob, PbrOptions
from trellis.export.pbr import EarlyPrepare, bake_ovoxel

ONE = {"steps": 1}
OPTIONS = PbrOptions(target_faces=1500, texture_size=32, normal_map=False)


@pytest.fixture(scope="module")
def tiny2(tiny_trellis2_dir):
    return pipelines.from_pretrained(tiny_trellis2_dir)


def image():
    arr = np.zeros((96, 80, 4), np.uint8)
    arr[20:80, 15:65] = (200, 120, 40, 255)
    arr[30:50, 25:45] = (40, 160, 220, 255)
    return Image.fromarray(arr)


def run(pipe, on_shape=None):
    return pipe.run(image(), seed=7, pipeline_type="512", sparse_structure_sampler_params=ONE,
                    shape_slat_sampler_params=ONE, tex_slat_sampler_params=ONE, on_shape=on_shape)


def test_the_mesh_prepared_while_the_texture_samples_gives_the_serial_files_bit_for_bit(tiny2, tmp_path):
    serial, = run(tiny2)
    early, seen = {}, {}

    def on_shape(meshes):
        seen["attrs"] = meshes[0].attrs                 # handed over before the texture decoder ran
        early["prep"] = EarlyPrepare(meshes[0], OPTIONS)
    overlapped, = run(tiny2, on_shape)
    assert seen["attrs"] is None and early["prep"].mesh is overlapped           # the same object, attributes added
    stages = [s["stage"] for s in tiny2.last_stats]
    assert stages.index("mesh") < stages.index("tex_slat") < stages.index("decode_texture")
    for name in ("vertices", "faces", "attrs", "coords"):
        a, b = getattr(serial, name), getattr(overlapped, name)
        assert torch.equal(a, b), name                # the same numbers in either order
    assert serial.faces.shape[0] > 100
    one = bake_ovoxel(serial, OPTIONS)
    two = bake_ovoxel(overlapped, OPTIONS, prepared=early["prep"])
    steps = lambda info: {k: v for k, v in info["reduce"].items() if k != "seconds"}     # noqa: E731
    assert "prepare_early" in two.info["seconds"] and steps(two.info) == steps(one.info)
    paths = [one.save(str(tmp_path / "serial.glb")), two.save(str(tmp_path / "early.glb"))]
    assert open(paths[0], "rb").read() == open(paths[1], "rb").read()      # the file, byte for byte


def test_a_preparation_of_another_mesh_or_other_options_is_refused():
    a, b = random_blob(24, latent=32, seed=1), random_blob(24, latent=32, seed=2)
    prep = EarlyPrepare(a, OPTIONS)
    with pytest.raises(ValueError, match="another mesh or with other options"):
        bake_ovoxel(b, OPTIONS, prepared=prep)
    with pytest.raises(ValueError, match="another mesh or with other options"):
        bake_ovoxel(a, PbrOptions(target_faces=900, texture_size=32, normal_map=False), prepared=prep)
    with pytest.raises(ValueError, match="quads"):
        EarlyPrepare(a, PbrOptions(topology="quads"))
    direct = bake_ovoxel(a, OPTIONS)
    used = bake_ovoxel(a, OPTIONS, prepared=prep)
    for name in ("vertices", "faces", "uvs", "texture"):
        assert np.array_equal(np.asarray(getattr(direct, name)), np.asarray(getattr(used, name))), name


def test_a_stop_ends_the_preparation_and_the_job_closes_it():
    blob = random_blob(40, latent=32, seed=3)
    asked = threading.Event()

    def cancel():
        asked.set()
        return True
    prep = EarlyPrepare(blob, OPTIONS, cancel=cancel)
    with pytest.raises(Cancelled):
        prep.result()
    assert asked.is_set() and not prep.running()
    # an export job that fails before its bake closes the preparation it was given (no thread left running)
    prep = EarlyPrepare(blob, OPTIONS)
    with pytest.raises(RuntimeError, match="before the bake"):
        with ExportJob(None, blob, OPTIONS, prepared=prep):
            raise RuntimeError("a failure before the bake")
    assert not prep.running()
