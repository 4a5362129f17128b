"""The vram_budget setting (desktop/jobs/budget.py): on every surface, in a job's settings.json and timings.json
(a job on the tiny pipeline on the CPU: no VRAM to hold to it, but recorded), in an export's settings, in the
out-of-memory messages and in the page's device line."""
import json
import os
import time
from types import SimpleNamespace

import pytest
import torch

from desktop import cli, retexture
from desktop.batch import command
from desktop.jobs import JobRunner, JobState
from desktop.jobs.budget import budget_bytes, set_job_policy
from desktop.jobs.failures import classify_failure
from desktop.settings import EXPORT_FIELDS, GenerationSettings
from desktop.ui.status import friendly_error, memory_line
from trellis.pipelines import TrellisImageTo3DPipeline
from tests.helpers.images import rgba_blob

TIMEOUT = 120
GiB = 2 ** 30


def test_the_low_vram_preset_sets_a_budget_and_every_command_takes_one(tmp_path):
    assert GenerationSettings.from_preset("low-vram").vram_budget == 2.5
    assert GenerationSettings().vram_budget is None and GenerationSettings.from_preset("high").vram_budget is None
    assert "vram_budget" in EXPORT_FIELDS                   # an export may change it without sampling again
    assert budget_bytes(GenerationSettings(vram_budget=2.5)) == int(2.5 * GiB)
    for parser, head in [(cli.build_parser(), ["x.png"]), (retexture.build_parser(), ["m.glb", "--prompt", "p"]),
                         (command.build_parser(), ["photos"])]:
        s = cli.settings_from_args(parser.parse_args([*head, "-o", str(tmp_path), "--vram-budget", "3"]))
        assert s.vram_budget == 3.0 and "vram_budget" in s.explicit, parser.prog
        s = cli.settings_from_args(parser.parse_args([*head, "-o", str(tmp_path), "--preset", "low-vram",
                                                      "--vram-budget", "none"]))
        assert s.vram_budget is None, parser.prog
    with pytest.raises(ValueError, match="vram_budget: 0.5 is out of range"):
        GenerationSettings(vram_budget=0.5)


def test_the_rest_api_takes_a_budget(tmp_path):
    from starlette.testclient import TestClient

    from desktop.api import create_app

    submitted = []

    def submit(images, settings, **kw):
        submitted.append(settings)
        raise RuntimeError("recorded")
    runner = SimpleNamespace(outputs_dir=tmp_path, model_path="m", text_model=None, list=lambda: [],
                             fast_paths=lambda: {"cpu": "CPU"}, submit=submit,
                             submit_request=lambda request: submit(list(request.images), request.settings))
    client = TestClient(create_app(runner, allowed_hosts=["testserver"]))
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for model in ("JobRequest", "Settings", "ExportRequest"):
        assert "vram_budget" in schemas[model]["properties"], model
    answer = client.post("/v1/jobs", json={"prompt": "a chair", "vram_budget": 3})
    assert answer.status_code == 503 and submitted[-1].vram_budget == 3.0, answer.text
    client.post("/v1/jobs", json={"prompt": "a chair", "preset": "low-vram"})
    assert submitted[-1].vram_budget == 2.5
    answer = client.post("/v1/jobs", json={"prompt": "a chair", "vram_budget": 0.1})
    assert answer.status_code == 422 and "vram_budget" in answer.text


def test_a_server_wide_budget_fills_in_where_a_job_and_its_preset_set_none():
    from desktop.api import common
    from desktop.api.server import build_parser as api_parser
    from desktop.ui.server import build_parser as ui_parser

    for parser in (api_parser(), ui_parser()):
        assert parser.parse_args(["--vram-budget", "3"]).vram_budget == 3.0
        assert parser.parse_args([]).vram_budget is None
        with pytest.raises(SystemExit):
            parser.parse_args(["--vram-budget", "0.5"])        # below the setting's range: a usage error
    server = common.ServerDefaults(vram_budget=3.0)
    assert common.build_settings({}, server).vram_budget == 3.0
    assert common.build_settings({"vram_budget": 6}, server).vram_budget == 6.0           # the job's own
    assert common.build_settings({"preset": "low-vram"}, server).vram_budget == 2.5       # the preset's
    assert common.build_settings({}, common.ServerDefaults()).vram_budget is None


@pytest.fixture(scope="module")
def shared_pipe(tiny_pipeline_dir):
    return TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir)


def small(**kw):
    return GenerationSettings(**{**dict(seed=1, randomize_seed=False, ss_steps=2, slat_steps=2, formats=("ply",),
                                        fill_holes=False, texture_size=64, bake_views=4, bake_resolution=64), **kw})


def test_a_job_with_a_budget_records_it_and_an_export_may_change_it(shared_pipe, tmp_path):
    image = rgba_blob(tmp_path / "blob.png")
    runner = JobRunner("unused-model", tmp_path / "out", device="cpu", pipeline_factory=lambda d: shared_pipe.to(d))
    try:
        job = runner.submit([image], small(vram_budget=2.5, precision="auto", offload="auto"), keep_result=True)
        assert job.wait(TIMEOUT) and job.state == JobState.DONE, job.error
        record = json.load(open(os.path.join(job.out_dir, "settings.json")))
        assert record["settings"]["vram_budget"] == 2.5
        timings = json.load(open(os.path.join(job.out_dir, "timings.json")))
        # On a CPU nothing is held to it and nothing is measured, but the job says what it was given.
        assert timings["memory"] == {"vram_budget_gib": 2.5, "held_to_bytes": None, "peak_allocated_bytes": None,
                                     "peak_reserved_bytes": None}
        assert timings["memory_policy"]["precision"] == "fp32"      # a CPU's policy, budget or not
        export = runner.submit_export(job.id, vram_budget=4.0, formats=("ply",))
        assert export.wait(TIMEOUT) and export.state == JobState.DONE, export.error
        record = json.load(open(os.path.join(export.out_dir, "settings.json")))
        assert record["settings"]["vram_budget"] == 4.0
        assert json.load(open(os.path.join(export.out_dir, "timings.json")))["memory"]["vram_budget_gib"] == 4.0
        assert memory_line(runner.list()) == "VRAM budget 4 GiB"          # the last job's (the export's)
    finally:
        runner.shutdown(cancel=True, wait=True, timeout=30)


def test_the_pipeline_policy_keeps_the_settings_on_a_cpu(shared_pipe):
    pipe = shared_pipe.to("cpu")
    set_job_policy(pipe, GenerationSettings(vram_budget=2.0))
    assert (pipe.memory_policy.precision, pipe.memory_policy.offload) == ("fp32", "none")
    set_job_policy(pipe, GenerationSettings(vram_budget=2.0, precision="bf16"))
    assert pipe.memory_policy.precision == "bf16"
    set_job_policy(pipe, GenerationSettings())
    assert pipe.memory_policy.precision == "fp32"


def test_an_out_of_memory_error_names_the_budget(tmp_path):
    err = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    kind, text = classify_failure(err, tmp_path, "cuda:0", vram_budget=3.0)
    assert kind == "oom" and "within the VRAM budget of 3 GiB" in text and "raise the budget" in text
    kind, text = classify_failure(err, tmp_path, "cuda:0")
    assert kind == "oom" and "budget" not in text and "low-vram" in text
    kind, text = classify_failure(err, tmp_path, "cpu", vram_budget=3.0)   # host memory: not the budget's
    assert "budget" not in text
    kind, text = classify_failure(err, tmp_path, "cuda:0", vram_budget=8.0, stage="baking (closing holes)")
    assert text.startswith("out of GPU memory while baking (closing holes) within the VRAM budget of 8 GiB")
    job = SimpleNamespace(error_kind="oom", error=text, device="cuda:0", settings=GenerationSettings(vram_budget=2.5))
    assert "VRAM budget of 2.5 GiB" in friendly_error(job)
    job.settings = GenerationSettings()
    assert "budget" not in friendly_error(job)


def test_the_device_line_names_the_last_jobs_budget_and_peak():
    def done(at, memory):
        return SimpleNamespace(finished=at, timings={"memory": memory} if memory else {})
    assert memory_line([]) == "" and memory_line([done(1.0, None)]) == ""
    # a CPU's job without a budget: nothing measured, nothing asked, nothing to say ("no VRAM budget" on a CPU)
    assert memory_line([done(1.0, {"vram_budget_gib": None, "peak_reserved_bytes": None,
                                   "peak_allocated_bytes": None})]) == ""
    jobs = [done(time.time() - 60, {"vram_budget_gib": None, "peak_reserved_bytes": 7 * GiB,
                                    "peak_allocated_bytes": 5 * GiB}),
            done(time.time(), {"vram_budget_gib": 2.5, "peak_reserved_bytes": int(1.88 * GiB),
                               "peak_allocated_bytes": int(1.77 * GiB)}),
            SimpleNamespace(finished=None, timings={})]                       # still running
    assert memory_line(jobs) == "VRAM budget 2.5 GiB · last job's peak 1.88 GiB reserved (1.77 allocated)"
    assert memory_line(jobs[:1]) == "no VRAM budget · last job's peak 7.00 GiB reserved (5.00 allocated)"


def test_a_batch_item_records_its_budget(tiny_pipeline_dir, tmp_path):
    from desktop.batch.worker import ItemWorker

    out = tmp_path / "out"
    out.mkdir()
    image = rgba_blob(tmp_path / "item.png")
    task = {"name": "item", "kind": "image", "source": str(image), "data": None, "key": "k", "model": tiny_pipeline_dir,
            "out": str(out), "settings": small(vram_budget=3.0).to_dict()}
    answer = ItemWorker("cpu").process(task)
    assert answer["state"] == "done", answer.get("error")
    assert json.loads((out / "item" / "settings.json").read_text())["settings"]["vram_budget"] == 3.0
    memory = json.loads((out / "item" / "timings.json").read_text())["memory"]
    assert memory["vram_budget_gib"] == 3.0 and memory["held_to_bytes"] is None          # a CPU holds nothing
