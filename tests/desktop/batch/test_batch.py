"""`python -m desktop batch` on the tiny random-weight pipeline (CPU): input lists, a worker process killed
mid-item (every item still lands exactly once), resume, failures. The Ray mode: tests/desktop/batch/test_batch_ray.py."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from desktop.batch import items as batch_items
from desktop.batch import manifest as mf
from images import rgba_blob

from repo import ROOT_DIR as ROOT
# Small everything: 2 + 2 steps, a 64² texture baked from 4 views at 64², no hole filling.
SMALL = ["--preset", "fast", "--steps", "2", "--texture-size", "64", "--formats", "glb,ply",
         "--set", "fill_holes=false", "--set", "bake_views=4", "--set", "bake_resolution=64"]
COLOURS = [(200, 80, 40), (30, 90, 220), (20, 160, 60), (220, 200, 30), (120, 40, 160), (240, 240, 240),
           (90, 60, 30), (0, 140, 140)]


def make_eight_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch_images")
    for i, colour in enumerate(COLOURS):
        rgba_blob(folder / f"object_{i}.png", color=colour)
    return folder


@pytest.fixture(scope="module")
def eight_images(tmp_path_factory):
    return make_eight_images(tmp_path_factory)


def batch(*args, timeout=240):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "desktop", "batch", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class KillOneWorker(threading.Thread):
    """Watches OUT/.batch-work for an item being made and SIGKILLs the process making it, once: a real
    signal to the real worker process (a local worker, or a Ray actor)."""

    def __init__(self, out: Path, spare=()):
        super().__init__(daemon=True)
        self.out, self.spare = Path(out), set(spare)
        self.killed = None             # (pid, item name)
        self.stop = threading.Event()
        self.start()

    def run(self):
        work = self.out / mf.WORK_DIR
        while not self.stop.is_set():
            for owner in sorted(work.glob(f"*/{mf.OWNER}")) if work.is_dir() else []:
                try:
                    pid = json.loads(owner.read_text())["pid"]
                except (OSError, ValueError, KeyError):
                    continue
                # Mid-item: its settings are written, so the model is loaded and sampling has begun.
                if pid in self.spare or not (owner.parent / "settings.json").is_file():
                    continue
                os.kill(pid, signal.SIGKILL)
                self.killed = (pid, owner.parent.name.rsplit(".", 1)[0])
                return
            time.sleep(0.05)


def events(out, kind=None, run=None):
    """The manifest's events (of one kind; of the run-th batch run only, counting from 0)."""
    found, runs = [], -1
    for e in map(json.loads, (Path(out) / mf.MANIFEST).read_text().splitlines()):
        runs += e["event"] == "batch"
        if (kind is None or e["event"] == kind) and (run is None or run == runs):
            found.append(e)
    return found


def check_every_item_once(out, names, images, run=0):
    """Each item's folder is there, complete, made from its own image; nothing else and nothing half; the
    run-th batch run made each item once."""
    out = Path(out)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(names)
    for name in names:
        folder = out / name
        assert mf.folder_problem(folder, mf.source_key("image", str(Path(images) / f"{name}.png"))) is None
        assert (folder / "input.png").read_bytes() == (Path(images) / f"{name}.png").read_bytes()
        assert sorted(p.name for p in folder.iterdir()) == ["export.json", "input.png", "model.glb", "model.ply",
                                                            "preprocessed.png", "result.npz", "settings.json",
                                                            "timings.json"]
    done = [e["item"] for e in events(out, "done", run)]
    assert sorted(done) == sorted(names)                  # one "done" per item: none landed twice
    assert not any(e.get("duplicate") for e in events(out, "done"))


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


@pytest.mark.slow
def test_a_batch_item_and_an_app_job_of_one_image_make_the_same_asset(tiny_pipeline_dir, eight_images, tmp_path):
    """One executor: a batch item and an app job with the same image, settings and seed sample alike
    (desktop/jobs/sampling.py) and write the same files (steps.write_outputs)."""
    from desktop.batch.worker import ItemWorker
    from desktop.jobs import JobRunner
    from desktop.settings import GenerationSettings

    image = eight_images / "object_4.png"
    settings = GenerationSettings.from_preset("fast", seed=7, randomize_seed=False, ss_steps=2, slat_steps=2,
                                              formats=("ply",))
    out = tmp_path / "out"
    out.mkdir()
    task = {"id": "object_4", "name": "object_4", "kind": "image", "source": str(image), "settings": settings.to_dict(),
            "explicit": sorted(settings.explicit), "key": mf.source_key("image", str(image)),
            "model": tiny_pipeline_dir, "out": str(out)}
    answer = ItemWorker("cpu").process(task)
    assert answer["state"] == "done", answer
    with JobRunner(tiny_pipeline_dir, tmp_path / "app", device="cpu") as runner:
        job = runner.submit([str(image)], settings)
        assert job.wait(120) and job.state == "done", job.error
    item = out / "object_4"
    assert (item / "model.ply").read_bytes() == open(job.files["ply"], "rb").read()
    assert (item / "preprocessed.png").read_bytes() == open(job.files["preprocessed"], "rb").read()
    records = [json.loads(p.read_text()) for p in (item / "settings.json", Path(job.files["settings"]))]
    assert records[0]["settings"] == records[1]["settings"] and records[0]["seed"] == records[1]["seed"] == 7
    timings = json.loads((item / "timings.json").read_text())
    assert timings["memory_policy"] == job.timings["memory_policy"]
    assert [s["stage"] for s in timings["pipeline"]["stages"]] == [s["stage"] for s in job.timings["pipeline"]["stages"]]
