"""`python -m desktop batch` on the tiny random-weight pipeline (CPU): input lists, a worker process killed
mid-item (every item still lands exactly once), resume, failures. The Ray mode: tests/desktop/batch/test_batch_ray.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from desktop.batch import items as batch_items
from desktop.batch import manifest as mf
from tests.helpers.batch_runs import SMALL, KillOneWorker, check_every_item_once, events, make_eight_images
from tests.helpers.images import rgba_blob
from tests.helpers.repo import ROOT_DIR as ROOT


@pytest.fixture(scope="module")
def eight_images(tmp_path_factory):
    return make_eight_images(tmp_path_factory)


def batch(*args, timeout=240):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "desktop", "batch", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ------------------------------------------------------------------------------------------ inputs

def test_inputs_folder_glob_csv_jsonl(tmp_path):
    for n in ("b.png", "a.jpg", "a.png", "notes.txt"):
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    got = batch_items.read_items(str(tmp_path))
    assert [(i.name, os.path.basename(i.source)) for i in got] == [("a", "a.jpg"), ("a-2", "a.png"), ("b", "b.png")]
    assert [i.name for i in batch_items.read_items(str(tmp_path / "*.png"))] == ["a", "b"]

    (tmp_path / "list.csv").write_text("image,seed,texture_size,name\nb.png,7,512,\na.png,,,first\n")
    got = batch_items.read_items(str(tmp_path / "list.csv"))
    assert [(i.name, i.kind, i.changes) for i in got] == [("b", "image", {"seed": 7, "texture_size": 512}),
                                                         ("first", "image", {})]
    assert got[0].source == str(tmp_path / "b.png")                  # relative to the list
    from desktop.settings import GenerationSettings
    s = got[0].settings(GenerationSettings.from_preset("fast"))
    assert (s.seed, s.randomize_seed, s.texture_size, s.preset) == (7, False, 512, "fast")

    # No header: an image file name is an image, anything else a prompt.
    (tmp_path / "plain.csv").write_text("a.png\nA red wooden chair\nmissing.webp\n")
    got = batch_items.read_items(str(tmp_path / "plain.csv"))
    assert [(i.name, i.kind) for i in got] == [("a", "image"), ("a-red-wooden-chair", "prompt"), ("missing", "image")]

    (tmp_path / "list.jsonl").write_text('{"prompt": "a small blue vase", "preset": "high", "seed": "3"}\n'
                                         '"b.png"\n\n{"image": "a.png", "ss_steps": 0}\n{"prompt": "  "}\n')
    got = batch_items.read_items(str(tmp_path / "list.jsonl"))
    assert [(i.name, i.kind, i.problem) for i in got[:2]] == [("a-small-blue-vase", "prompt", None), ("b", "image", None)]
    assert got[0].settings(GenerationSettings()).preset == "high" and got[0].changes["seed"] == 3
    assert got[2].problem.startswith("bad item: ss_steps") and got[3].problem.startswith("bad item: no image")

    for bad, says in [("image,colour\na.png,red\n", "unknown column"), ("", "no items")]:
        (tmp_path / "bad.csv").write_text(bad)
        with pytest.raises(batch_items.BatchInputError, match=says):
            batch_items.read_items(str(tmp_path / "bad.csv"))
    with pytest.raises(batch_items.BatchInputError, match="matches no file"):
        batch_items.read_items(str(tmp_path / "*.gif"))


# ------------------------------------------------------------------------------------------ local workers

@pytest.mark.slow
def test_local_workers_one_killed_mid_item_every_item_once_then_rerun_skips(tiny_pipeline_dir, eight_images,
                                                                             tmp_path):
    out = tmp_path / "out"
    names = [f"object_{i}" for i in range(8)]
    proc = batch(eight_images, "-o", out, "--model", tiny_pipeline_dir, "--device", "cpu", "--workers", "2", *SMALL)
    killer = KillOneWorker(out, spare={proc.pid})
    try:
        _, err = proc.communicate(timeout=240)
    finally:
        killer.stop.set()
        proc.kill()
    assert killer.killed, err
    assert proc.returncode == 0, err
    assert "died (signal 9)" in err and "8 item(s) made" in err
    check_every_item_once(out, names, eight_images)
    retried = events(out, "retry")
    assert killer.killed[1] in [e["item"] for e in retried]
    assert {e["kind"] for e in retried} == {"worker_died"}
    assert not (out / mf.WORK_DIR).exists()                         # no half-made folder left
    summary = json.loads((out / mf.SUMMARY).read_text())
    assert (summary["done"], summary["failed"]) == (8, 0) and 1 <= summary["lost_with_worker"] <= 2
    assert err.count("died (signal 9)") == 1

    # Rerun: everything is skipped, nothing is touched, no worker is started.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.parent != out}
    proc = batch(eight_images, "-o", out, "--model", tiny_pipeline_dir, "--device", "cpu", *SMALL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "8 of 8 item(s) already done: skipped" in err and "sample s" not in err
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.parent != out}
    check_every_item_once(out, names, eight_images)


@pytest.mark.slow
def test_failures_are_reported_not_retried_when_final_and_made_again_by_a_rerun(tiny_pipeline_dir, eight_images,
                                                                                 tmp_path):
    out = tmp_path / "out"
    images = tmp_path / "images"
    images.mkdir()
    (images / "object_0.png").write_bytes((eight_images / "object_0.png").read_bytes())
    (images / "broken.png").write_text("not an image")
    listing = tmp_path / "list.csv"
    listing.write_text(f"image,ss_steps\n{images}/object_0.png,\n{images}/broken.png,\n{images}/object_0.png,0\n")
    proc = batch(listing, "-o", out, "--model", tiny_pipeline_dir, "--device", "cpu", "--seed", "5", *SMALL)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 1, err
    assert "broken: FAILED: bad input" in err and "object_0-2: FAILED: bad item: ss_steps" in err
    failed = {e["item"]: e for e in events(out, "failed")}
    assert set(failed) == {"broken", "object_0-2"}
    assert failed["broken"]["attempts"] == 1 and failed["broken"]["kind"] == "input"     # no retry: same input
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["object_0"]
    assert json.loads((out / "object_0" / "settings.json").read_text())["seed"] == 5

    # What a rerun would do: the failed item is made again, the finished one skipped, the bad row fails again.
    from desktop.batch.driver import plan
    from desktop.settings import GenerationSettings
    log = mf.Manifest(out)
    tasks, skipped, bad = plan(batch_items.read_items(str(listing)), GenerationSettings.from_preset("fast"), out,
                               log, print)
    assert ([t["name"] for t in tasks], skipped, [b[0] for b in bad]) == (["broken"], ["object_0"], ["object_0-2"])

    # --max-failures: no new item is handed out once that many failed (bad inputs fail before a model loads).
    for name in ("bad_1", "bad_2", "bad_3"):
        (images / f"{name}.png").write_text("not an image")
    listing.write_text(f"{images}/bad_1.png\n{images}/bad_2.png\n{images}/bad_3.png\n{images}/object_0.png\n")
    proc = batch(listing, "-o", tmp_path / "out2", "--model", tiny_pipeline_dir, "--device", "cpu",
                 "--max-failures", "2", *SMALL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "stopped: " in err and "(--max-failures 2)" in err
    summary = json.loads((tmp_path / "out2" / mf.SUMMARY).read_text())
    # The worker holds two items at a time: the third bad one may have been handed out before the second failed.
    assert summary["done"] == 0 and summary["failed"] >= 2 and summary["not_run"] >= 1
    assert not (tmp_path / "out2" / "object_0").exists()


def test_usage_errors_need_no_model(tmp_path):
    proc = batch(tmp_path / "nothing-here", "-o", tmp_path / "out")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "no such folder or file" in err
    (tmp_path / "a.png").write_bytes(b"x")
    proc = batch(tmp_path, "-o", tmp_path / "out", "--retries", "-1")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--retries" in err


# ------------------------------------------------------------------------------------------ Ray, the extra

def test_ray_is_an_optional_extra_the_installer_adds_with_with_ray(tmp_path):
    from installer import install as inst
    from installer import licences
    from installer.layout import Layout
    from installer.options import parse

    assert parse(["--with-ray"]).with_ray and parse(["--with-ray"]).launcher_args() == ["--with-ray"]
    app = tmp_path / "app"
    app.mkdir()
    for name in ("requirements_1.txt", "requirements_2.txt", "requirements_test.txt", "requirements_ray.txt"):
        (app / name).write_bytes((Path(ROOT) / name).read_bytes())
    layout = Layout.of(app)
    state = {"schema": 1, "app_key": layout.app_key(), "test_key": None, "torch": "2.13.0+cpu", "cuda_tag": "cpu"}
    layout.venv_python().parent.mkdir(parents=True)
    layout.venv_python().symlink_to(sys.executable)
    layout.state_file.write_text(json.dumps(state))
    assert inst.install_reason(layout, parse([])) is None
    assert inst.install_reason(layout, parse(["--with-ray"])) == \
        "Ray (requirements_ray.txt, --with-ray) is not installed yet"
    layout.state_file.write_text(json.dumps({**state, "ray_key": inst.ray_key(layout)}))
    assert inst.install_reason(layout, parse(["--with-ray"])) is None
    # The same pin for the tests as for users; the app never imports ray (only `batch --ray` does).
    pins = {line.strip() for name in ("requirements_ray.txt", "requirements_test.txt")
            for line in (Path(ROOT) / name).read_text().splitlines() if line.startswith("ray==")}
    assert len(pins) == 1
    bad = [str(p.relative_to(ROOT)) for p in Path(ROOT, "desktop").rglob("*.py")
           if "import ray" in p.read_text() and p.name != "ray_pool.py"]
    assert not bad, bad
    pytest.importorskip("ray")
    report = licences.check_requirements(str(Path(ROOT) / "requirements_ray.txt"))
    assert report.missing == [] and report.rejected == [], report.summary()


# ------------------------------------------------------------------------------------------ one worker

@pytest.mark.slow
def test_a_worker_makes_prompt_items_lands_each_once_and_can_return_files(tiny_pipeline_dir, eight_images,
                                                                           tmp_path_factory, tmp_path):
    """ItemWorker directly: a prompt item through the tiny text pipeline; the same item again (a retry of a
    worker presumed dead) finds it landed and does nothing; a worker without the shared folder returns the
    files (the image as bytes, as Ray sends it) and leaves OUT alone; two copies racing: one lands."""
    from desktop.batch.worker import ItemWorker
    from desktop.settings import GenerationSettings
    from trellis.tools import tiny_pipeline
    from trellis.tools.tiny_text_pipeline import TEXT_DIR

    models = tmp_path_factory.mktemp("text_models")
    assert tiny_pipeline.main(["--text", str(models)]) == 0
    settings = GenerationSettings.from_preset("fast", seed=1, ss_steps=2, slat_steps=2, texture_size=64,
                                              formats=("ply",)).to_dict()
    out = tmp_path / "out"
    out.mkdir()
    worker = ItemWorker("cpu")
    prompt = {"id": "chair", "name": "chair", "kind": "prompt", "source": "a red wooden chair", "settings": settings,
              "key": mf.source_key("prompt", "a red wooden chair"), "model": tiny_pipeline_dir,
              "text_model": str(models / TEXT_DIR), "out": str(out)}
    answer = worker.process(prompt)
    assert answer["state"] == "done" and not answer["duplicate"], answer
    record = json.loads((out / "chair" / "settings.json").read_text())
    assert (record["kind"], record["prompt"], record["model"]) == ("text", "a red wooden chair", str(models / TEXT_DIR))
    assert mf.folder_problem(out / "chair", prompt["key"]) is None
    before = {p.name: p.stat().st_mtime_ns for p in (out / "chair").iterdir()}

    again = worker.process(prompt)
    assert again["state"] == "done" and again["duplicate"] and "sample" not in again["seconds"], again
    assert {p.name: p.stat().st_mtime_ns for p in (out / "chair").iterdir()} == before
    assert not (out / mf.WORK_DIR).exists() or not any((out / mf.WORK_DIR).iterdir())

    image = eight_images / "object_1.png"
    task = {**prompt, "id": "object_1", "name": "object_1", "kind": "image", "source": str(image),
            "key": mf.source_key("image", str(image)), "return_files": True}
    answer = worker.process(task, image.read_bytes())
    assert answer["state"] == "done", answer
    assert {"input.png", "preprocessed.png", "settings.json", "model.ply", "timings.json", "result.npz"} == \
        set(answer["files"])
    assert {p.name for p in out.iterdir()} - {mf.WORK_DIR} == {"chair"}               # nothing written in OUT
    assert mf.commit(mf.write_files(out, "object_1", answer["files"]), out / "object_1")
    assert mf.folder_problem(out / "object_1", task["key"]) is None
    assert json.loads((out / "object_1" / "settings.json").read_text())["inputs"] == [str(image)]

    # Two attempts racing to land the same item: the first rename wins, the second copy is thrown away.
    first, second = (mf.write_files(out, "object_2", {"settings.json": text}) for text in (b"{1}", b"{2}"))
    assert mf.commit(first, out / "object_2") and not mf.commit(second, out / "object_2")
    assert (out / "object_2" / "settings.json").read_bytes() == b"{1}" and not second.exists()


@pytest.mark.slow
def test_a_batch_item_keeps_the_values_set_and_reports_what_the_cpu_lowered(tiny_pipeline_dir, eight_images,
                                                                           tmp_path):
    """plan() carries which values the user set beside the settings; on a CPU the worker keeps those (an explicit
    1024² texture) and lowers only the preset's (the bake renders), with the job's warning in its answer, which
    the driver prints."""
    from desktop.batch.driver import plan
    from desktop.batch.worker import ItemWorker
    from desktop.settings import GenerationSettings

    out = tmp_path / "out"
    out.mkdir()
    listing = tmp_path / "list.csv"
    listing.write_text(f"image\n{eight_images / 'object_3.png'}\n")
    base = GenerationSettings.from_preset("balanced", seed=3, ss_steps=2, slat_steps=2, texture_size=1024,
                                          bake_views=4, fill_holes=False, formats=("glb",))
    (task,), _, _ = plan(batch_items.read_items(str(listing)), base, out, mf.Manifest(out), print)
    assert "texture_size" in task["explicit"] and "bake_resolution" not in task["explicit"]
    answer = ItemWorker("cpu").process({**task, "model": tiny_pipeline_dir, "out": str(out)})
    assert answer["state"] == "done", answer.get("error")
    (change,) = [w for w in answer["warnings"] if w.startswith("Changed for the CPU")]
    assert "bake_resolution 1024 -> 512" in change and "texture_size" not in change
    record = json.loads((out / task["name"] / "settings.json").read_text())
    assert record["settings"]["texture_size"] == 1024 and "texture_size" not in record["changed_for_device"]
    assert record["changed_for_device"]["bake_resolution"] == [1024, 512]


def test_a_batch_item_and_an_app_job_of_one_image_make_the_same_files(tiny_pipeline_dir, eight_images, tmp_path):
    """A batch item is the app's job (desktop/jobs: its steps, context and settings.json): with the same image,
    settings and seed, a batch item and a runner's job write the same GLB, PLY, preprocessed image and decoded result,
    and the same settings record, the item's own entries (which item, where its image came from) beside it."""
    import numpy as np

    from desktop.batch.worker import ItemWorker
    from desktop.jobs import JobRunner
    from desktop.settings import GenerationSettings

    image = eight_images / "object_4.png"
    settings = GenerationSettings.from_preset("fast", seed=7, randomize_seed=False, ss_steps=2, slat_steps=2,
                                              formats=("glb", "ply"), texture_size=64, bake_views=4,
                                              bake_resolution=64, fill_holes=False)
    out = tmp_path / "out"
    out.mkdir()
    task = {"id": "object_4", "name": "object_4", "kind": "image", "source": str(image), "settings": settings.to_dict(),
            "explicit": sorted(settings.explicit), "key": mf.source_key("image", str(image)),
            "model": tiny_pipeline_dir, "out": str(out), "seed_was_random": True}
    answer = ItemWorker("cpu").process(task)
    assert answer["state"] == "done", answer
    assert set(answer["seconds"]) == {"sample", "waited", "export"}
    with JobRunner(tiny_pipeline_dir, tmp_path / "app", device="cpu") as runner:
        job = runner.submit([str(image)], settings)
        assert job.wait(120) and job.state == "done", job.error
    item = out / "object_4"
    for kind in ("glb", "ply", "preprocessed"):
        assert (item / Path(job.files[kind]).name).read_bytes() == open(job.files[kind], "rb").read(), kind
    with np.load(item / "result.npz") as a, np.load(job.files["result"]) as b:
        assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
    made, ran = (json.loads(p.read_text()) for p in (item / "settings.json", Path(job.files["settings"])))
    assert made.pop(mf.ITEM_KEY) == {"name": "object_4", "key": task["key"], "kind": "image"}
    assert made.pop("seed_was_random") is True and ran.pop("seed_was_random") is False
    for record in (made, ran):
        del record["job_id"], record["created"]
        record.pop("started", None)                  # when each began (the batch item may not say)
    assert made == ran and made["inputs"] == [str(image)] and made["seed"] == 7
    timings = json.loads((item / "timings.json").read_text())
    assert timings["memory_policy"] == job.timings["memory_policy"]
    assert [s["stage"] for s in timings["pipeline"]["stages"]] == \
        [s["stage"] for s in job.timings["pipeline"]["stages"]]


def test_a_trellis2_item_is_checked_as_the_runner_checks_its_job(tmp_path):
    """A TRELLIS.2 model folder (its pipeline.json names the family): an item is the runner's job of it, checked as
    the runner checks it (``desktop.families.check``): TRELLIS.2 makes every format, so the default files, PLY and
    preview video included, stay as asked, with no warning."""
    from desktop.batch.worker import item_job
    from desktop.families import FAMILIES, check
    from desktop.settings import GenerationSettings

    model = tmp_path / "trellis2"
    model.mkdir()
    (model / "pipeline.json").write_text(json.dumps({"name": "Trellis2ImageTo3DPipeline"}))
    out = tmp_path / "out"
    out.mkdir()
    image = rgba_blob(tmp_path / "a.png")
    task = {"name": "a", "kind": "image", "source": image, "key": "k", "model": str(model), "out": str(out),
            "settings": GenerationSettings(formats=("glb", "ply", "mp4")).to_dict()}
    job = item_job(task)
    assert job.settings.formats == ("glb", "ply", "mp4") and not job.warnings
    job = item_job({**task, "settings": GenerationSettings().to_dict()})
    adapted, _ = check(FAMILIES["trellis2"], GenerationSettings())
    assert job.settings.formats == adapted.formats == GenerationSettings().formats and not job.warnings


def test_a_trellis2_item_whose_preset_budget_was_raised_records_what_was_asked(tmp_path):
    """The runner's job keeps the settings asked for where the family's rule changed them (Job.asked_settings:
    settings.json's changed_for_family, read back by "Use these settings" and a rerun); a batch item is the same job,
    so a Low VRAM item on TRELLIS.2 records the preset's budget beside the floor it ran with, as the runner's does."""
    from desktop.batch.worker import item_job
    from desktop.jobs.queued import settings_record
    from desktop.settings import GenerationSettings

    model = tmp_path / "trellis2"
    model.mkdir()
    (model / "pipeline.json").write_text(json.dumps({"name": "Trellis2ImageTo3DPipeline"}))
    image = rgba_blob(tmp_path / "a.png")
    asked = GenerationSettings.from_preset("low-vram", seed=3)
    job = item_job({"name": "a", "kind": "image", "source": image, "key": "k", "model": str(model),
                    "out": str(tmp_path / "out"), "settings": asked.to_dict()})
    assert job.asked_settings == asked and job.settings.vram_budget > asked.vram_budget
    changed = {"vram_budget": [asked.vram_budget, job.settings.vram_budget]}
    assert settings_record(job, str(model))["changed_for_family"] == changed
    assert len(job.warnings) == 1 and "sized for TRELLIS v1" in job.warnings[0]
