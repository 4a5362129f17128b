"""A batch worker's items side by side on a GPU (desktop/jobs/overlap.py: the sampling on a CUDA stream of its own,
the files on the default stream) make what the same items make one at a time: no item reads a half-made result or
memory the other item's sampling took back. The tiny random-weight pipeline; two workers of one process, each
loading it."""
import json
import queue
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from desktop.batch import manifest as mf
from desktop.batch.worker import ItemWorker
from desktop.settings import GenerationSettings
from tests.helpers.images import rgba_blob

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

COLOURS = [(200, 80, 40), (30, 90, 220), (20, 160, 60), (220, 200, 30), (120, 40, 160)]


def tasks(images, out, model):
    settings = GenerationSettings.from_preset("fast", seed=5, randomize_seed=False, ss_steps=3, slat_steps=3,
                                              formats=("glb", "ply"), texture_size=128, bake_views=8,
                                              bake_resolution=128)
    return [{"id": p.stem, "name": p.stem, "kind": "image", "source": str(p), "settings": settings.to_dict(),
             "explicit": sorted(settings.explicit), "key": mf.source_key("image", str(p)), "model": model,
             "out": str(out)} for p in images]


def make(worker, todo, threads):
    """The tasks made by `threads` threads of `worker` (2: the overlap), their answers."""
    waiting, answers = queue.Queue(), []
    for task in todo:
        waiting.put(task)

    def serve():
        while True:
            try:
                task = waiting.get_nowait()
            except queue.Empty:
                return
            answers.append(worker.process(task))
    running = [threading.Thread(target=serve) for _ in range(threads)]
    for t in running:
        t.start()
    for t in running:
        t.join(600)
    return answers


def test_items_side_by_side_make_what_they_make_one_at_a_time(tiny_pipeline_dir, tmp_path):
    images = [Path(rgba_blob(tmp_path / f"item_{i}.png", color=c)) for i, c in enumerate(COLOURS)]
    made = {}
    for name, threads in (("overlap", 2), ("serial", 1)):
        out = tmp_path / name
        out.mkdir()
        answers = make(ItemWorker("cuda:0"), tasks(images, out, tiny_pipeline_dir), threads)
        assert [a["state"] for a in answers] == ["done"] * len(images), answers
        made[name] = out
    timings = [json.loads((made["overlap"] / p.stem / "timings.json").read_text()) for p in images]
    assert all("pipeline" in t and "files_wall" in t["export"] for t in timings)
    for p in images:
        with np.load(made["overlap"] / p.stem / "result.npz") as a, \
                np.load(made["serial"] / p.stem / "result.npz") as b:
            assert sorted(a.files) == sorted(b.files)
            for k in a.files:
                assert a[k].shape == b[k].shape, (p.stem, k)
                assert np.allclose(a[k], b[k], atol=1e-3, rtol=1e-3), (p.stem, k)
        assert (made["overlap"] / p.stem / "model.glb").stat().st_size > 1000
        head = [(made[n] / p.stem / "model.ply").read_bytes()[:400] for n in made]
        assert head[0] == head[1]                 # the same header: as many Gaussians
