"""The `attention` setting (desktop/settings_table.py) on the tiny pipelines (CPU): real jobs of TRELLIS v1 and
TRELLIS.2 asked for "8bit" run every attention call of their sampling on the 8-bit maths (on a CPU its PyTorch twin,
"8bit_twin") and their timings.json says so; the default runs none of it; the CLI flag and the REST field take it and
refuse a bad value as every choice is refused; a sampling waits while another run holds the other arithmetic, and a
cancel ends the wait; the background warm-up's run keeps to exact attention."""
import contextlib
import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from starlette.testclient import TestClient

from desktop import cli
from desktop.api import create_app
from desktop.jobs import JobRunner, JobState
from desktop.jobs.job import Job
from desktop.jobs.sampling import TWIN_8BIT_WARNING, enter_attention, sampling_block
from desktop.jobs.warmup import warm_run
from desktop.settings import GenerationSettings
from desktop.settings_table import ATTENTIONS
from trellis.core.callbacks import Cancelled
from trellis.modules.attention import attention_mode, attention_precision
from trellis.pipelines import TrellisImageTo3DPipeline
from trellis.pipelines.memory import MemoryPolicy
from tests.helpers.images import rgba_blob
from tests.helpers.recorder import Recorder
from tests.helpers.threads import one_thread  # noqa: F401 (autouse: one torch thread for the tiny flows)

TIMEOUT = 300
# One step a stage, the files that cost least (v1: its Gaussians; TRELLIS.2: an STL of the smallest grid's bake).
V1 = dict(seed=1, randomize_seed=False, ss_steps=1, slat_steps=1, formats=("ply",))
TRELLIS2 = dict(seed=1, randomize_seed=False, ss_steps=1, slat_steps=1, pipeline_type="512", formats=("stl",),
                texture_size=64)


def ran(job) -> tuple:
    """(the arithmetic the job's timings.json records, {kernel: calls} over its sampling's stages)."""
    timings = json.loads((Path(job.out_dir) / "timings.json").read_text())
    kernels: dict = {}
    for stage in timings["pipeline"]["stages"]:
        for kernel, entry in (stage.get("attention") or {}).items():
            kernels[kernel] = kernels.get(kernel, 0) + entry["calls"]
    return timings["pipeline"]["attention"], kernels


def run_jobs(runner, image, settings: dict) -> list:
    jobs = [runner.submit(image, GenerationSettings(**settings, attention=mode)) for mode in ("8bit", "exact")]
    for job in jobs:
        assert job.wait(TIMEOUT) and job.state == JobState.DONE, job.error
    return jobs


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir)


def test_v1_jobs_run_the_attention_they_ask_for(pipe, tmp_path):
    with JobRunner("unused-model", tmp_path / "out", device="cpu", pipeline_factory=lambda d: pipe.to(d),
                   recover=False) as runner:
        eight, exact = run_jobs(runner, rgba_blob(tmp_path / "a.png"), V1)
    mode, kernels = ran(eight)
    assert mode == "8bit" and set(kernels) == {"8bit_twin"} and kernels["8bit_twin"] > 0, kernels
    mode, kernels = ran(exact)
    assert mode == "exact" and kernels and not any(k.startswith("8bit") for k in kernels), kernels
    # the twin ran where the user asked for speed: said in the job's warnings (the exact job says nothing of it)
    assert TWIN_8BIT_WARNING in eight.warnings and TWIN_8BIT_WARNING not in exact.warnings
    # as many calls either way: the same sampling, each call on the other arithmetic
    assert sum(kernels.values()) == ran(eight)[1]["8bit_twin"]
    record = json.loads((Path(eight.out_dir) / "settings.json").read_text())
    assert record["settings"]["attention"] == "8bit" and eight.used_settings.attention == "8bit"   # kept on a CPU
    assert attention_mode() == "exact"                    # released with the job


def test_a_trellis2_job_runs_8bit_attention_when_asked(tiny_trellis2_dir, tmp_path):
    with JobRunner(tiny_trellis2_dir, tmp_path / "out", device="cpu", recover=False) as runner:
        eight, exact = run_jobs(runner, rgba_blob(tmp_path / "a.png"), TRELLIS2)
    mode, kernels = ran(eight)
    assert mode == "8bit" and set(kernels) == {"8bit_twin"} and kernels["8bit_twin"] > 0, kernels
    mode, kernels = ran(exact)
    assert mode == "exact" and kernels and not any(k.startswith("8bit") for k in kernels), kernels
    # the twin ran where the user asked for speed: said in the job's warnings (the exact job says nothing of it)
    assert TWIN_8BIT_WARNING in eight.warnings and TWIN_8BIT_WARNING not in exact.warnings


def test_the_setting_has_the_librarys_modes_and_is_never_on_by_default():
    from desktop.settings import PRESETS

    for mode in ATTENTIONS:
        with attention_precision(mode):
            assert attention_mode() == mode
    assert GenerationSettings().attention == "exact"
    assert all(GenerationSettings.from_preset(p).attention == "exact" for p in PRESETS)
    assert GenerationSettings(attention="8bit").for_device("cpu").attention == "8bit"
    with pytest.raises(ValueError, match="attention: 'int8' is not one of exact, 8bit"):
        GenerationSettings(attention="int8")


def test_the_cli_flag_takes_8bit_and_refuses_a_bad_value(tmp_path, capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["x.png", "-o", str(tmp_path), "--attention", "8bit"])
    assert cli.settings_from_args(args).attention == "8bit"
    assert cli.settings_from_args(parser.parse_args(["x.png", "-o", str(tmp_path)])).attention == "exact"
    for bad, words in ((["--attention", "fast"], "invalid choice: 'fast'"),
                       (["--set", "attention=fp8"], "attention: 'fp8' is not one of exact, 8bit")):
        with pytest.raises(SystemExit) as stop:                  # the usage error: exit 2, one line
            cli.main(["x.png", "-o", str(tmp_path), *bad])
        assert stop.value.code == 2 and words in capsys.readouterr().err, bad


def test_the_rest_field_takes_8bit_and_refuses_a_bad_value(tmp_path):
    runner = Recorder(tmp_path)
    client = TestClient(create_app(runner, allowed_hosts=["testserver"]))
    assert "attention" in client.get("/openapi.json").json()["components"]["schemas"]["JobRequest"]["properties"]
    client.post("/v1/jobs", json={"prompt": "a chair", "attention": "8bit"})
    (sent,) = runner.submitted
    assert sent.attention == "8bit" and "attention" in sent.explicit
    answer = client.post("/v1/jobs", json={"prompt": "a chair", "attention": "int8"})
    assert answer.status_code == 422 and "attention" in answer.text, answer.text
    assert len(runner.submitted) == 1


def test_a_sampling_waits_while_another_holds_the_other_arithmetic():
    job = Job(id="x" * 32, inputs=[], settings=GenerationSettings(attention="exact"))
    pipeline = SimpleNamespace(memory_policy=MemoryPolicy(), last_stats=[])    # what record_run reads of one
    released, seen, errors = threading.Event(), [], []

    def sample():
        try:
            with sampling_block(job, pipeline, job.settings):
                seen.append((released.is_set(), attention_mode()))
        except BaseException as err:                     # noqa: BLE001 (reported below)
            errors.append(err)

    with attention_precision("8bit"):
        with contextlib.ExitStack() as held:             # the other arithmetic without waiting: nothing held
            assert enter_attention(held, "exact", wait=False) is None
        with pytest.raises(Cancelled), contextlib.ExitStack() as held:
            enter_attention(held, "exact", cancel=lambda: True)
        waiter = threading.Thread(target=sample)
        waiter.start()
        with contextlib.ExitStack() as held:             # the same arithmetic is shared at once
            assert enter_attention(held, "8bit") == 0.0
        released.set()
    waiter.join(30)
    assert not waiter.is_alive() and not errors, errors
    assert seen == [(True, "exact")]                     # it ran only once the 8-bit run had ended
    assert job.timings["pipeline"]["attention"] == "exact"
    assert any(w.startswith("Waited") and "8-bit attention" in w for w in job.warnings), job.warnings


def test_the_warm_run_waits_for_exact_attention(pipe):
    asked, before = [], pipe.last_stats

    def cancel():                                        # a job arrives while the warm run waits
        asked.append(attention_mode())
        return len(asked) >= 3
    with attention_precision("8bit"):
        with pytest.raises(Cancelled):
            warm_run(pipe, cancel)
    # it waited, and its pipeline run never started under 8-bit attention (a run, even cancelled, sets last_stats)
    assert asked == ["8bit"] * 3 and pipe.last_stats is before
