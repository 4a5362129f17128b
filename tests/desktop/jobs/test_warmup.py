"""The background warm-up (desktop/jobs/runner.py: JobRunner.start_warmup): the model loads when the app starts,
a job submitted meanwhile waits for that load (never a second one), cancel stops it, and the servers start it
unless told not to. Real tiny pipeline on the CPU, real jobs, a real `python -m desktop api` process."""
import base64
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

from desktop.jobs import JobRunner
from desktop.settings import GenerationSettings
from tests.helpers.images import rgba_blob

from tests.helpers.repo import ROOT
FAST = dict(seed=1, ss_steps=2, slat_steps=2, texture_size=64, bake_views=4, bake_resolution=64, fill_holes=False,
            formats=["glb"])


class GatedLoader:
    """The runner's own loader (the tiny pipeline from disk), held at its start until the test opens the gate,
    so that a job can be submitted while the warm-up is loading."""

    def __init__(self, model):
        self.model, self.calls = model, 0
        self.entered, self.gate = threading.Event(), threading.Event()

    def __call__(self, device):
        from trellis.pipelines import TrellisImageTo3DPipeline

        self.calls += 1
        self.entered.set()
        assert self.gate.wait(60)
        return TrellisImageTo3DPipeline.from_pretrained(self.model).to(device)


def job_through_a_held_load(model, tmp_path, image, loader, then_join: str, while_held=None):
    """The warm-up started with `loader` holding the load, `while_held()` (if given) called then, a job submitted, the
    load let go; the job must end done. Then the threads named `then_join` are waited for."""
    with JobRunner(model, tmp_path / "out", device="cpu", pipeline_factory=loader) as runner:
        runner.start_warmup(forward=True)
        assert loader.entered.wait(60)
        if while_held is not None:
            while_held()
        job = runner.submit(image, GenerationSettings(**FAST))
        loader.gate.set()
        assert job.wait(120) and job.state == "done", job.error
        for thread in [t for t in threading.enumerate() if t.name == then_join]:
            thread.join(120)


def wait_until(cond, timeout=120):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline
        time.sleep(0.02)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return rgba_blob(tmp_path_factory.mktemp("img") / "blob.png")


def test_a_job_submitted_during_the_warm_up_waits_for_its_load(tiny_pipeline_dir, tmp_path, image):
    loader = GatedLoader(tiny_pipeline_dir)
    with JobRunner(tiny_pipeline_dir, tmp_path / "out", device="cpu", pipeline_factory=loader) as runner:
        runner.start_warmup(forward=True)
        assert loader.entered.wait(60)
        job = runner.submit(image, GenerationSettings(**FAST))
        time.sleep(0.2)
        assert job.state == "queued" and runner.warming_up and not runner.model_loaded
        loader.gate.set()
        assert job.wait(120), job.progress
        assert job.state == "done", job.error
        worker = runner._workers[0]
        assert loader.calls == 1                                    # loaded once, by the warm-up
        assert "load_model" not in job.timings                      # the job found it loaded
        assert set(worker.warmup_timings) == {"load_model"}         # the tiny run gave way to the job
        assert os.path.getsize(job.files["glb"]) > 0 and not runner.warming_up


def test_the_export_warms_up_beside_a_waiting_job(tiny_pipeline_dir, tmp_path, image, monkeypatch):
    from desktop.jobs import warmup

    called = []

    def recorded(device, stop):                   # the real warm-up, its calls noted
        called.append(device)
        return real(device, stop)
    real = warmup.warm_export
    monkeypatch.setattr(warmup, "warm_export", recorded)
    job_through_a_held_load(tiny_pipeline_dir, tmp_path, image, GatedLoader(tiny_pipeline_dir),
                            then_join="trellis-export-warm")           # the job waits as the load ends
    assert called == ["cpu"]


def test_the_libraries_warm_up_beside_the_load(tiny_pipeline_dir, tmp_path, image, monkeypatch):
    from trellis.pipelines import first_use

    during_load = []

    def recorded(device, dtype, cancel=None):      # the real one, noted with whether the load was still held
        during_load.append(not loader.gate.is_set())
        return real(device, dtype, cancel=cancel)
    real = first_use.warm_libraries
    monkeypatch.setattr(first_use, "warm_libraries", recorded)
    loader = GatedLoader(tiny_pipeline_dir)
    job_through_a_held_load(tiny_pipeline_dir, tmp_path, image, loader, then_join="trellis-first-use",
                            while_held=lambda: wait_until(lambda: during_load))
    assert during_load == [True]                                   # it ran while the load was held, not after


def test_libraries_that_cannot_be_warmed_leave_it_to_the_first_job(capfd):
    from desktop.jobs import warmup

    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    assert warmup.warm_libraries_beside("cuda:7", "auto", lambda: False) is None
    assert "warning: could not start warming the libraries on cuda:7" in capfd.readouterr().err


def test_the_warm_run_then_a_job(tiny_pipeline_dir, tmp_path, image):
    loader = GatedLoader(tiny_pipeline_dir)
    loader.gate.set()
    with JobRunner(tiny_pipeline_dir, tmp_path / "out", device="cpu", pipeline_factory=loader) as runner:
        runner.start_warmup(forward=True)            # on the CPU only when asked for (the servers: GPU only)
        wait_until(lambda: not runner.warming_up)
        assert set(runner._workers[0].warmup_timings) == {"load_model", "warm_run"} and runner.model_loaded
        assert list((tmp_path / "out").glob("*/model.glb")) == []   # the warm-up writes nothing
        job = runner.submit(image, GenerationSettings(**FAST))
        assert job.wait(120) and job.state == "done", job.error
        assert loader.calls == 1 and "load_model" not in job.timings


def test_cancel_and_shutdown_stop_the_warm_up(tiny_pipeline_dir, tmp_path, image):
    loader = GatedLoader(tiny_pipeline_dir)
    with JobRunner(tiny_pipeline_dir, tmp_path / "out", device="cpu", pipeline_factory=loader) as runner:
        runner.start_warmup(forward=True)
        assert loader.entered.wait(60)
        runner.cancel_warmup()                       # while loading: the load ends, the tiny run is skipped
        loader.gate.set()
        wait_until(lambda: not runner.warming_up)
        assert set(runner._workers[0].warmup_timings) == {"load_model"}
    # Shut down before the worker got to it: nothing is loaded.
    loader = GatedLoader(tiny_pipeline_dir)
    loader.gate.set()
    runner = JobRunner(tiny_pipeline_dir, tmp_path / "out2", device="cpu", pipeline_factory=loader)
    runner.shutdown()
    runner.start_warmup()
    assert loader.calls == 0 and runner.stopped and not runner.warming_up


def test_a_failed_warm_up_leaves_the_error_to_the_first_job(tmp_path, image, capfd):
    missing = tmp_path / "no-model"
    with JobRunner(str(missing), tmp_path / "out", device="cpu") as runner:
        runner.start_warmup()
        wait_until(lambda: not runner.warming_up)
        assert "background warm-up on cpu stopped while loading the model" in capfd.readouterr().err
        job = runner.submit(image, GenerationSettings(**FAST))
        assert job.wait(60) and job.state == "failed" and job.error_kind == "model", job.error


def test_the_option_and_its_environment_variable(monkeypatch):
    from desktop.api import build_parser

    monkeypatch.delenv("TRELLIS_DESKTOP_WARMUP", raising=False)
    assert build_parser().parse_args([]).warmup is True
    assert build_parser().parse_args(["--no-warmup"]).warmup is False
    monkeypatch.setenv("TRELLIS_DESKTOP_WARMUP", "0")
    assert build_parser().parse_args([]).warmup is False


@pytest.mark.slow
def test_the_api_server_loads_the_model_at_start(tiny_pipeline_dir, tmp_path, image):
    """`python -m desktop api`: a job posted as soon as the server answers finds the model loaded by the warm-up
    (or waits for it) and never loads it itself."""
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    for name in ("TRELLIS_DESKTOP_API_TOKEN", "TRELLIS_DESKTOP_WARMUP"):
        env.pop(name, None)
    proc = subprocess.Popen([sys.executable, "-m", "desktop", "api", "--model", tiny_pipeline_dir, "--port", str(port),
                             "--outputs", str(tmp_path / "out"), "--device", "cpu"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                if httpx.get(url + "/ping", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.time() < deadline, "the server did not start"
            time.sleep(0.05)
        blob = base64.b64encode(Path(image).read_bytes()).decode()
        r = httpx.post(url + "/v1/jobs", json={"images": [blob], **FAST}, timeout=60)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        deadline = time.time() + 120
        while (info := httpx.get(f"{url}/v1/jobs/{job_id}", timeout=60).json())["state"] not in ("done", "failed"):
            assert time.time() < deadline, info
            time.sleep(0.05)
        assert info["state"] == "done", info
        timings = json.loads((Path(info["out_dir"]) / "timings.json").read_text())
        assert "load_model" not in timings and (Path(info["out_dir"]) / "model.glb").stat().st_size > 0
        assert httpx.get(url + "/v1/health", timeout=60).json()["model_loaded"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert err.count("model loaded in") == 1 and "(background warm-up)" in err, err
    assert "kernels warmed" not in err            # no tiny run on the CPU by default


def test_with_compiled_blocks_the_warm_run_reaches_both_cfg_batch_sizes(tiny_pipeline_dir):
    """With --compile the warm run must compile the flows for the CFG pair (batch 2, inside the guidance interval)
    and for the single pass (batch 1, after it): its steps reach both on the pipelines' own time grid."""
    from desktop.jobs.runner import warm_steps
    from trellis.pipelines import TrellisImageTo3DPipeline
    from trellis.pipelines.samplers.flow_euler import time_grid

    p = TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir)
    assert warm_steps(p) == 1
    p.set_memory_policy(compile=True)
    steps = warm_steps(p)
    for params in (p.sparse_structure_sampler_params, p.slat_sampler_params):
        lo, hi = params["cfg_interval"]
        ts = time_grid(steps, params["rescale_t"])[:steps]          # the t each step's forward sees
        inside = [lo <= t <= hi for t in ts]
        assert any(inside) and not all(inside), (params, ts)


def test_the_export_warms_up_without_the_model_and_stops_when_told(monkeypatch, capfd):
    from desktop.jobs.warmup import warm_export
    from trellis.export import schedule

    made = []
    real = schedule.to_glb

    def counted(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]
    monkeypatch.setattr(schedule, "to_glb", counted)
    warm_export("cpu", lambda: False)
    assert len(made) == 1 and len(made[0].faces) > 0 and made[0].visual.material is not None
    made.clear()
    warm_export("cpu", lambda: True)                    # a job or a stop came first: nothing made, nothing said
    assert made == []
    assert "warning" not in capfd.readouterr().err


def test_the_structure_graphs_wait_for_their_networks_and_the_policy(tiny_pipeline_dir):
    """GraphsBesideLoad (the captures themselves: tests/gpu/test_structure_graphs_gpu.py): ``make`` waits for the
    conditioner and the structure flow as the library's load hands them over, gives up when the load ends without
    them, and makes nothing where the job's policy keeps no graphs (a CPU's)."""
    from desktop.jobs.warmup import GraphsBesideLoad
    from trellis.pipelines import TrellisImageTo3DPipeline

    graphs = GraphsBesideLoad("auto", "auto")
    said = []
    waiting = threading.Thread(target=lambda: said.append(graphs.make("cpu", lambda: False)))
    waiting.start()
    time.sleep(0.1)
    assert waiting.is_alive()                      # nothing loaded yet
    graphs.load_ended()
    waiting.join(5)
    assert said == ["graphs: not made (the load ended first)"] and graphs.made is None

    graphs = GraphsBesideLoad("auto", "auto")
    TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir, device="cpu", on_model=graphs.on_model)
    assert graphs.ready.is_set()
    assert graphs.make("cpu", lambda: False) == "graphs: not kept with this policy" and graphs.made is None
    thread = graphs.start("cpu", lambda: False)                # the thread the warm-up starts: logs, never fails
    thread.join(5)
    assert not thread.is_alive() and graphs.made is None


def test_the_conditioners_shape_for_the_graphs(tiny_pipeline_dir):
    """The condition the graphs are made for has the shape the conditioner gives a job (tokens, channels)."""
    from trellis.pipelines import TrellisImageTo3DPipeline
    from trellis.pipelines.structure_graphs import condition_shape

    pipe = TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir)
    cond = pipe.get_cond(torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(0)))["cond"]
    assert tuple(cond.shape[1:]) == condition_shape(pipe.image_cond_model)


def test_the_occupancy_decoders_first_call_beside_the_load_changes_nothing(tiny_pipeline_dir):
    """``structure_graphs.warm_decoder`` (run by GraphsBesideLoad after the captures) calls the decoder on a zero latent
    in the pipeline's dtype: the decoder's answer to a real latent is the same before and after."""
    from trellis.pipelines import TrellisImageTo3DPipeline
    from trellis.pipelines.structure_graphs import warm_decoder

    pipe = TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir)
    decoder, flow = pipe.models["sparse_structure_decoder"], pipe.models["sparse_structure_flow_model"]
    z = torch.randn(1, flow.in_channels, *(flow.resolution,) * 3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = decoder(z)
        warm_decoder(decoder, flow.in_channels, flow.resolution, torch.float32)
        assert torch.equal(decoder(z), before)
