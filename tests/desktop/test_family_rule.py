"""The one rule for a setting the chosen model family cannot use (desktop/families check, applied by
JobRunner.submit, which every surface queues through): the same TRELLIS.2-only setting on a TRELLIS v1 model gets the
same answer from the CLI (a real subprocess), REST and the OpenAI-style endpoint (a real server) and a batch item: the
job runs, with the same warning.
What a family cannot make at all is refused alike (runner and REST: a 422 with the same words). The CLI's note on what
a CPU lowers names only what the job's family uses (no "render of the Gaussians" for TRELLIS.2)."""
import base64
from pathlib import Path

import httpx
import pytest
from tests.helpers.cli import SMALL, desktop, job_folders
from tests.helpers.images import rgba_blob
from tests.helpers.rest import FAST, wait_job
from tests.helpers.servers import LiveServer

from desktop import cli
from desktop.api import create_app
from desktop.batch.worker import item_job
from desktop.families import FAMILIES, FamilyRefusal, ignored_warning
from desktop.jobs import JobRunner
from desktop.settings import GenerationSettings

WARNING = ignored_warning(FAMILIES["trellis"], "pipeline_type", "512")


def test_a_trellis2_setting_on_a_v1_model_runs_with_one_warning_on_every_surface(tiny_pipeline_dir, tmp_path):
    image = rgba_blob(tmp_path / "in.png")
    out = tmp_path / "cli"
    done = desktop("generate", image, "--model", tiny_pipeline_dir, "-o", out, "--device", "cpu", "--seed", "1",
                   "--formats", "glb", "--pipeline-type", "512", *SMALL, timeout=600)
    assert done.returncode == cli.EXIT_OK, done.stderr
    assert done.stderr.count(WARNING) == 1 and "Traceback" not in done.stderr, done.stderr
    assert len(job_folders(out)) == 1

    runner = JobRunner(tiny_pipeline_dir, tmp_path / "rest", device="cpu")
    server = LiveServer(create_app(runner))
    body = {"images": [base64.b64encode(Path(image).read_bytes()).decode()], **FAST, "formats": ["glb"],
            "pipeline_type": "512"}
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            answer = c.post("/v1/jobs", json=body)
            assert answer.status_code == 202, answer.text
            info = wait_job(c, answer.json()["id"], timeout=600)
            # the OpenAI-style endpoint, the model by its peer name: its job is queued with the same warning
            peer = c.post("/v1/3d/generations", json={"image": body["images"][0], "model": "trellis-image-large",
                                                      "pipeline_type": "512", "async": True, **FAST})
            assert peer.status_code == 202, peer.text
            queued = runner.get(peer.json()["data"][0]["job_id"])
            assert queued.family == "trellis" and queued.warnings == [WARNING], queued.warnings
            runner.cancel(queued.id)
        assert info["state"] == "done" and info["warnings"].count(WARNING) == 1, info      # the same words
    finally:
        server.close()
        runner.shutdown(cancel=True, wait=True, timeout=60)
    # a batch item of that model: the batch worker's job is checked by the same rule
    settings = GenerationSettings.from_preset("balanced", pipeline_type="512")
    job = item_job({"name": "in", "kind": "image", "source": str(image), "key": "k", "model": tiny_pipeline_dir,
                    "out": str(tmp_path / "batch"), "settings": settings.to_dict(), "explicit": ["pipeline_type"]})
    assert job.warnings == [WARNING]


def test_what_trellis2_cannot_make_is_refused_alike_by_the_runner_and_rest(tiny_trellis2_dir, tmp_path):
    image = rgba_blob(tmp_path / "in.png")
    runner = JobRunner(tiny_trellis2_dir, tmp_path / "out", device="cpu")
    server = LiveServer(create_app(runner))
    try:
        with pytest.raises(FamilyRefusal) as refused:
            runner.submit([image, image], GenerationSettings())
        words = str(refused.value)
        assert words.startswith("a TRELLIS.2 job takes one image (2 given)")
        encoded = base64.b64encode(Path(image).read_bytes()).decode()
        with httpx.Client(base_url=server.url, timeout=60) as c:
            answer = c.post("/v1/jobs", json={"images": [encoded, encoded]})
        assert answer.status_code == 422 and words in answer.text, answer.text
        assert runner.list() == []                                # nothing was queued
    finally:
        server.close()
        runner.shutdown(cancel=True, wait=True, timeout=60)


def test_the_cpu_note_of_a_trellis2_job_names_only_what_trellis2_uses(tiny_trellis2_dir, tmp_path, capsys):
    image = str(rgba_blob(tmp_path / "in.png"))
    code = cli.main([image, "--model", tiny_trellis2_dir, "-o", str(tmp_path / "out"), "--device", "cpu",
                     "--seed", "1", "--steps", "1", "--pipeline-type", "512", "--formats", "glb", "--texture-size",
                     "64", "--target-faces", "100000"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_OK, err
    assert "bake_views" not in err and "Gaussians" not in err, err
