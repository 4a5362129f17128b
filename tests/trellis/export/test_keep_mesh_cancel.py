"""Cancel lands within 2 s at every stage of a keep-mesh new look of a 1.3 M-triangle model on the CPU
(trellis/export/keep_mesh.py): the bake's cancel checks are never further apart than that, measured per stage on a
real large mesh, and a cancel asked in each stage ends the bake in that time. The passes over the model's faces
(its checks, the UV check's texel counts, the normals, the chart layout, the rasteriser's set-up of every view) ask
between passes or chunks of faces.

The gaps are measured in the bake thread's own CPU seconds, torch on one thread: what a gap costs on an idle core,
whatever else the machine runs meanwhile (the suite's other workers); the cancels asked mid-stage are wall-clock."""
import os
import sys
import time

import numpy as np
import pytest
import torch
import trimesh

from tests.helpers.splats import make_gaussian
from trellis.core.callbacks import Cancelled
from trellis.export.keep_mesh import bake_onto_mesh, uv_usable

pytestmark = pytest.mark.slow
LANDS_WITHIN_S = 2.0


@pytest.fixture(scope="module")
def big():
    """A 1,310,720-triangle sphere (no UVs: the bake makes a new atlas) and opaque Gaussians on its surface."""
    sphere = trimesh.creation.icosphere(8)
    rng = np.random.default_rng(0)
    points = rng.normal(size=(20_000, 3))
    points = 0.5 * points / np.linalg.norm(points, axis=1, keepdims=True)    # the voxeliser's frame: radius 0.5
    colors = 0.5 + 0.5 * points / 0.5
    gaussian = make_gaussian(points, np.full((len(points), 3), 0.02), np.tile([1.0, 0, 0, 0], (len(points), 1)),
                             np.full(len(points), 0.95), colors)
    return np.asarray(sphere.vertices, np.float32) * 3.0, np.asarray(sphere.faces, np.int64), gaussian


class Polls:
    """A cancel callback that records when it is asked, in which stage (the last progress report), and raises
    Cancelled's answer (True) once `stop_in` has been reported."""

    def __init__(self, stop_in=None, clock=time.perf_counter):
        self.stage, self.stop_in, self.asked_at, self.clock = "start", stop_in, None, clock
        self.times = [(clock(), "start", "start")]

    def progress(self, stage, done, total):
        self.stage = stage
        if stage == self.stop_in and self.asked_at is None:
            self.asked_at = time.perf_counter()

    def __call__(self):
        caller = sys._getframe(2)             # the function that asked (past callbacks.check)
        self.times.append((self.clock(), self.stage,
                           f"{os.path.basename(caller.f_code.co_filename)}:{caller.f_lineno}"))
        return self.asked_at is not None

    def longest_gaps(self) -> dict:
        """{stage: the longest time between two checks that ended in it}."""
        gaps: dict = {}
        for (t0, *_), (t1, stage, *_) in zip(self.times, self.times[1:]):
            gaps[stage] = max(gaps.get(stage, 0.0), t1 - t0)
        return gaps

    def where(self, longer_than: float) -> list:
        """The checks (place -> place) further apart than `longer_than` seconds, for the failure's message."""
        return [(round(b[0] - a[0], 2), a[-1], b[-1]) for a, b in zip(self.times, self.times[1:])
                if b[0] - a[0] > longer_than]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_stage_checks_cancel_often_on_a_large_mesh(big, one_thread):
    vertices, faces, gaussian = big
    polls = Polls(clock=time.thread_time)
    out = bake_onto_mesh(gaussian, vertices, faces, None, texture_size=256, cancel=polls, progress=polls.progress)
    polls.times.append((polls.clock(), "end", "end"))
    assert out.info["uv"].startswith("new atlas") and len(out.faces) == len(faces)
    gaps = polls.longest_gaps()
    assert {"uv_unwrap", "bake", "inpaint"} <= set(gaps), gaps
    slow = {stage: round(gap, 2) for stage, gap in gaps.items() if gap > LANDS_WITHIN_S}
    assert not slow, f"cancel checks further apart than {LANDS_WITHIN_S} s: {slow} ({polls.where(LANDS_WITHIN_S)})"


@pytest.mark.parametrize("stage", ["uv_unwrap", "bake"])
def test_a_cancel_in_a_stage_lands_within_two_seconds(big, stage):
    vertices, faces, gaussian = big
    polls = Polls(stop_in=stage)
    with pytest.raises(Cancelled):
        bake_onto_mesh(gaussian, vertices, faces, None, texture_size=256, cancel=polls, progress=polls.progress)
    assert polls.asked_at is not None
    assert time.perf_counter() - polls.asked_at < LANDS_WITHIN_S


def test_the_uv_check_of_a_large_mesh_asks_between_chunks(big, one_thread):
    vertices, faces, _ = big
    # One UV triangle per face, each in its own cell of a grid: a layout uv_usable accepts, over 1.3 M faces.
    n = len(faces)
    side = int(np.ceil(np.sqrt(n)))
    cell = np.stack([np.arange(n) % side, np.arange(n) // side], 1) / side
    corners = np.array([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9]]) / side
    uvs = (cell[:, None, :] + corners[None]).reshape(-1, 2)
    split_vertices = vertices[faces].reshape(-1, 3)
    split_faces = np.arange(3 * n, dtype=np.int64).reshape(-1, 3)
    polls = Polls(clock=time.thread_time)
    ok, reason, _ = uv_usable(split_vertices, split_faces, uvs, cancel=polls)
    assert ok, reason
    polls.times.append((polls.clock(), "end", "end"))
    assert len(polls.times) > 6                                   # between passes and chunks, not once
    assert max(polls.longest_gaps().values()) < LANDS_WITHIN_S, polls.where(LANDS_WITHIN_S)
    with pytest.raises(Cancelled):
        uv_usable(split_vertices, split_faces, uvs, cancel=lambda: True)


def test_the_reports_shape_facts_of_a_large_mesh_ask_between_passes(big, one_thread):
    # export.json's print facts (watertight, volume, bodies, base) come after the files: a cancel then lands too
    from trellis.export.report import print_shape_facts

    vertices, faces, _ = big
    polls = Polls(clock=time.thread_time)
    facts = print_shape_facts(vertices, faces, cancel=polls)
    polls.times.append((polls.clock(), "end", "end"))
    assert facts["watertight"] and facts["shells"] == 1
    assert len(polls.times) >= 6 and max(polls.longest_gaps().values()) < LANDS_WITHIN_S, polls.where(LANDS_WITHIN_S)
    with pytest.raises(Cancelled):
        print_shape_facts(vertices, faces, cancel=lambda: True)
