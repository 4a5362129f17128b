"""A TRELLIS.2 job's first ETA, before this machine has timed any of its stages: planned from the stage times its
family declares (desktop/families/trellis2.py, measured on an H200), which are docs/benchmarks/trellis2.md's figures
(read from the doc here), not from TRELLIS v1's CPU reference (whose bake sub-stages TRELLIS.2 never runs)."""
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desktop.families import FAMILIES
from desktop.families import trellis2 as t2
from desktop.jobs import JobRunner
from desktop.jobs.first_estimate import REFERENCE_PROBE_S, REFERENCE_SECONDS, first_plan
from desktop.settings import GenerationSettings
from tests.helpers.repo import ROOT

DOC = ROOT / "docs" / "benchmarks" / "trellis2.md"
T2_STAGES = [*FAMILIES["trellis2"].progress_stages, "bake", "glb"]


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def test_the_declared_figures_are_the_docs():
    text = doc_text()
    chain = {}
    for kind, seconds in re.findall(r"^\| `(\w+)`[^|]*\| Triton, default \(resident\) \| \*\*([\d.]+) s\*\*", text,
                                    re.M):
        chain[kind] = float(seconds)
    assert chain == t2.CHAIN_S
    heading = text[text.index("## The chain, per pipeline type"):text.index("| pipeline type |")]
    assert "one H200" in heading and "H200" in t2.FIRST_TIMES_DEVICE

    start = text.index("Where `1024_cascade`'s 11.01 s go (Triton, resident):")
    sentence = text[text.index(":", start) + 1:text.index(". ", start)].replace("\n", " ").replace("*", "")
    parts = {name.strip(): float(value) for name, value in
             (re.fullmatch(r"\s*(.+?) ([\d.]+)\s*", part).groups() for part in sentence.split("·"))}
    assert parts == t2.CASCADE_PARTS_S
    assert sum(parts.values()) == pytest.approx(t2.CHAIN_S["1024_cascade"], abs=0.01)

    row = next(line for line in text.splitlines()
               if line.startswith("| Triton | Balanced, **a realistic surface** (`--object bunny`)"))
    whole, sampling, files, bake, mp4, glb = (float(v) for v in re.search(
        r"\| \*\*([\d.]+) s\*\* \| ([\d.]+) s \| \*\*([\d.]+) s\*\* \(([\d.]+) · ([\d.]+) · ([\d.]+)\)", row).groups())
    assert t2.WHOLE_JOB_S == {"whole job": whole, "sampling": sampling, "files": files, "bake": bake, "mp4": mp4,
                              "glb": glb}
    assert "120-frame" in text[text.index("## The app's whole job"):] and t2.PREVIEW_FRAMES == 120


def test_each_pipeline_types_table_adds_up_to_its_measured_chain():
    family = FAMILIES["trellis2"]
    assert set(family.first_times) == set(family.pipeline_types) and "H200" in family.first_times_device
    sampling = ("condition", "sparse_structure", "shape_slat", "tex_slat", "decode")
    for kind, chain in t2.CHAIN_S.items():
        table = family.first_times_of(kind)
        assert sum(table[s][0] * table[s][1] for s in sampling) == pytest.approx(chain)
    cascade, single = family.first_times_of("1024_cascade"), family.first_times_of("1024")
    assert cascade["shape_slat"][1] == 24 and single["shape_slat"][1] == 12      # one step counter over two passes
    assert single["shape_slat"][0] * 12 == pytest.approx(t2.CASCADE_PARTS_S["shape flow 1024"])
    assert cascade["preprocess"][0] == pytest.approx(12.79 - 11.01 - 1.73)
    assert FAMILIES["trellis"].first_times_of() is None                 # v1: the app's CPU reference


def test_a_trellis2_plan_is_its_familys_and_a_v1_plan_is_unchanged():
    settings = GenerationSettings(seed=1, pipeline_type="1536_cascade")
    plan = first_plan(T2_STAGES, settings, probe=REFERENCE_PROBE_S)
    table = FAMILIES["trellis2"].first_times_of("1536_cascade")
    assert all(plan[s] == pytest.approx(table[s]) for s in T2_STAGES)
    assert not any(name.startswith("bake/") for name in plan)           # v1's observe / visibility / reobserve
    twice = first_plan(T2_STAGES, settings, probe=2 * REFERENCE_PROBE_S)
    assert all(twice[s][0] == pytest.approx(2 * plan[s][0]) for s in T2_STAGES)
    small = first_plan(T2_STAGES, settings.replace(pipeline_type="512"), probe=REFERENCE_PROBE_S)
    assert small["shape_slat"][0] * small["shape_slat"][1] < plan["shape_slat"][0] * plan["shape_slat"][1] / 5
    v1 = first_plan(["preprocess", "condition", "sparse_structure", "slat", "decode", "bake", "glb"],
                    GenerationSettings(seed=1), probe=REFERENCE_PROBE_S)
    assert v1["slat"] == REFERENCE_SECONDS["slat"] and "bake/observe" in v1


def test_a_first_trellis2_job_on_the_tiny_pipeline_has_an_eta_that_holds(tiny_trellis2_dir, tmp_path):
    """From its first report on, the job shows an ETA; once its first two stages have finished, elapsed + ETA is
    within 4x of the job's real length (v1's bake sub-stages, the plan before, made it 50x and more)."""
    image = np.zeros((64, 64, 4), np.uint8)
    image[16:48, 16:48] = (200, 80, 40, 255)
    Image.fromarray(image, "RGBA").save(tmp_path / "in.png")
    seen = []

    def note(job, progress):
        seen.append((time.perf_counter(), progress.stage, progress.eta_s))
    settings = GenerationSettings(seed=1022908287, ss_steps=1, slat_steps=1, pipeline_type="512", texture_size=64,
                                  target_faces=100000, formats=("glb",))
    with JobRunner(tiny_trellis2_dir, tmp_path / "out", device="cpu", recover=False, on_progress=note) as runner:
        job = runner.submit([str(tmp_path / "in.png")], settings)
        assert job.wait(300) and job.state == "done", (job.state, job.error)
    assert Path(job.out_dir, "model.glb").is_file()
    stages = [s for _, s, _ in seen if s != "load"]
    assert stages[0] == "preprocess" and all(eta is not None for _, s, eta in seen if s != "load"), seen
    end = seen[-1][0]
    start = next(t for t, s, _ in seen if s == "condition")             # after the model's load
    at, _, eta = next(r for r in seen if r[1] == "shape_slat")
    real, said = end - start, (at - start) + eta
    assert real / 4 < said < real * 4, (said, real, seen)
