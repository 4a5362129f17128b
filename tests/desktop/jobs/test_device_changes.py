"""Values changed for the device are never silent (desktop.settings: for_device, device_change_warning).

The rule: on a CPU, only the values that come from the preset are lowered (CPU_VALUES); a value the user set
is kept, even one equal to the preset's. "Set by the user": a CLI flag (--texture-size, --set), a field of a
REST or Gradio API request, a page control moved off the preset's value. Every value lowered for a file the
job writes is named in one job warning (API `warnings`, the CLI's warning line, the page's status,
timings.json): setting, from -> to, and why.
"""
import base64
import json
import os

import httpx
import pytest

from desktop import cli
from desktop.settings import (CPU_VALUES, GenerationSettings, device_change_warning, device_changes,
                              field_names)
from tests.helpers.cli import desktop, job_folders
from tests.helpers.images import rgba_blob
from tests.helpers.rest import TIMEOUT, wait_job
from tests.helpers.servers import LiveServer

# The GLB at a 1024² texture (the balanced preset's value, given explicitly) from 4 views; bake_resolution is
# left to the preset, so the CPU lowers it.
EXPLICIT_1024 = dict(ss_steps=2, slat_steps=2, fill_holes=False, texture_size=1024, bake_views=4, formats=["glb"])


# ------------------------------------------------------------------------------------------ the rule

def test_values_set_by_the_user_are_kept_and_preset_values_lowered_on_a_cpu():
    chosen = GenerationSettings.from_preset("balanced", texture_size=1024, video_frames=None)
    assert chosen.explicit == {"texture_size"} and chosen == GenerationSettings()      # not part of equality
    used = chosen.for_device("cpu")
    assert used.texture_size == 1024                                   # equal to the preset's, but chosen
    assert (used.bake_views, used.bake_resolution, used.video_frames) == (24, 512, 60)
    assert device_changes(chosen, used) == {k: (getattr(chosen, k), v) for k, v in CPU_VALUES.items()
                                            if k != "texture_size"}
    assert GenerationSettings().for_device("cpu").texture_size == 512  # the preset's value: lowered
    assert chosen.for_device("cuda:0") is chosen and chosen.for_device("mps") is chosen

    # replace() marks its changes; the seed drawn and the device's own changes keep the marks.
    again = GenerationSettings().replace(bake_views=50)
    assert again.explicit == {"bake_views"} and again.with_seed().for_device("cpu").bake_views == 50
    assert again.with_seed().for_device("cpu").explicit == {"bake_views"}

    # "custom" settings: a value some preset gives is lowered unless the user set it.
    custom = GenerationSettings(preset="custom", bake_views=50, ss_steps=3)
    assert custom.for_device("cpu").bake_views == 24
    kept = GenerationSettings(preset="custom", bake_views=50, explicit={"bake_views"})
    assert kept.for_device("cpu").bake_views == 50

    # Never in JSON, and not a setting any surface accepts.
    assert "explicit" not in chosen.to_dict() and "explicit" not in field_names()
    assert GenerationSettings.from_json(chosen.to_json()).explicit == frozenset()
    with pytest.raises(ValueError, match="explicit"):
        GenerationSettings.from_dict({**chosen.to_dict(), "explicit": ["texture_size"]})
    with pytest.raises(ValueError, match="nonsense"):
        GenerationSettings(explicit={"nonsense"})


def test_the_warning_names_each_lowered_setting_from_to_and_why():
    s = GenerationSettings(formats=("glb", "mp4"))
    text = device_change_warning(s, s.for_device("cpu"))
    for name, cpu in CPU_VALUES.items():
        assert f"{name} {getattr(s, name)} -> {cpu} (" in text, name
    assert "sized for a GPU" in text and "A value you set yourself is kept." in text
    # Only what shapes a file the job writes: a PLY needs none of them, an MP4 the preview's.
    ply = GenerationSettings(formats=("ply",))
    assert device_changes(ply, ply.for_device("cpu")) and device_change_warning(ply, ply.for_device("cpu")) is None
    mp4 = GenerationSettings(formats=("mp4",))
    text = device_change_warning(mp4, mp4.for_device("cpu"))
    assert "video_frames 120 -> 60" in text and "video_resolution 512 -> 384" in text and "texture_size" not in text
    assert device_change_warning(s, s.for_device("cuda")) is None


def test_each_surface_marks_what_the_user_set(tmp_path):
    from desktop.api.common import ServerDefaults, build_settings
    from desktop.ui import preset_values, settings_from_values

    parse = cli.build_parser().parse_args
    s = cli.settings_from_args(parse(["a.png", "-o", "o", "--texture-size", "1024", "--set", "video_frames=120"]))
    assert s.explicit == {"texture_size", "video_frames"}
    record = tmp_path / "settings.json"
    record.write_text(json.dumps({"settings": GenerationSettings().to_dict()}))
    assert cli.settings_from_args(parse(["a.png", "-o", "o", "--settings", str(record)])).explicit == frozenset()

    # REST / Gradio API: the request's fields (None = not sent).
    api = build_settings({"texture_size": 1024, "bake_views": None}, ServerDefaults())
    assert "texture_size" in api.explicit and "bake_views" not in api.explicit

    # The page: every control is sent; those moved off the selected preset's value count as set.
    page = {**preset_values("high", GenerationSettings()), "bake_views": 50, "seed": 1, "randomize_seed": False,
            "formats": ["glb"], "preprocess": True, "multi_image_mode": "stochastic"}
    ui = settings_from_values(page, "high", GenerationSettings())
    assert ui.explicit == {"bake_views"}
    used = ui.for_device("cpu")
    assert used.bake_views == 50 and used.texture_size == 512 and used.bake_resolution == 512


def test_the_page_status_lists_each_warning():
    from desktop.jobs.job import Job, JobState
    from desktop.ui.batch_view import status_html

    job = Job(id="j", inputs=["a.png"], settings=GenerationSettings(),
              warnings=["Changed for the CPU: texture_size 1024 -> 512 (<why>)", "The texture bake saw only 0.0%"])
    job.state = JobState.DONE
    box = status_html([("a.png", job)], runner=None)
    assert 'data-state="done"' in box and box.count("<li>Warning: ") == 2
    assert "Texture size (pixels): 512 instead of 1024 (&lt;why&gt;)" in box     # the page's label, escaped


# ------------------------------------------------------------------------------------------ end to end (CPU)

@pytest.mark.slow
def test_cli_keeps_an_explicit_texture_size_and_prints_the_change(tiny_pipeline_dir, tmp_path):
    out = tmp_path / "out"
    proc = desktop("generate", rgba_blob(tmp_path / "a.png"), "-o", out, "--model", tiny_pipeline_dir,
                   "--device", "cpu", "--steps", "2", "--texture-size", "1024", "--set", "bake_views=4",
                   "--set", "fill_holes=false", "--formats", "glb", "--quiet", timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    change = [x for x in lines if "warning: Changed for the CPU" in x]
    assert len(change) == 1 and "bake_resolution 1024 -> 512 (" in change[0] and "texture_size" not in change[0]
    (folder,) = job_folders(out)
    record = json.load(open(os.path.join(folder, "settings.json")))
    assert record["settings"]["texture_size"] == 1024 and "texture_size" not in record["changed_for_device"]
    assert record["changed_for_device"]["bake_resolution"] == [1024, 512]
    assert _glb_texture_size(os.path.join(folder, "model.glb")) == (1024, 1024)
    timings = json.load(open(os.path.join(folder, "timings.json")))
    printed = change[0].split("warning: ", 1)[1]
    assert [w for w in timings["warnings"] if w.startswith("Changed for the CPU")] == [printed]


@pytest.mark.slow
def test_cli_says_what_the_cpu_lowers_before_its_jobs_run(tiny_pipeline_dir, tmp_path):
    # Texture, bake views and frames given; bake and preview resolutions left to the preset, which the CPU lowers.
    out = tmp_path / "out"
    proc = desktop("generate", rgba_blob(tmp_path / "a.png"), rgba_blob(tmp_path / "b.png"), "-o", out,
                   "--model", tiny_pipeline_dir, "--device", "cpu", "--steps", "2", "--texture-size", "64",
                   "--set", "bake_views=4", "--set", "video_frames=8", "--set", "fill_holes=false",
                   "--formats", "glb,mp4", timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    notes = [x for x in lines if x.startswith("note: ")]
    assert len(notes) == 1 and lines[0] == notes[0], lines                # once, before any job's line
    note = notes[0]
    assert note.startswith("note: Changed for the CPU, where the preset's values (sized for a GPU) would take minutes: ")
    assert "bake_resolution 1024 -> 512 (each bake render takes seconds at the larger size)" in note
    assert "video_resolution 512 -> 384 (render time grows with the pixels)" in note
    assert note.endswith("A value you set yourself is kept.")
    for kept in ("texture_size", "bake_views", "video_frames"):             # set on the command line
        assert kept not in note
    # What the note announced is what each job ran with, and what each job's own warning says again.
    for folder in job_folders(out):
        record = json.load(open(os.path.join(folder, "settings.json")))
        assert record["changed_for_device"] == {"bake_resolution": [1024, 512], "video_resolution": [512, 384]}
        assert record["settings"]["texture_size"] == 64 and record["settings"]["video_frames"] == 8
    assert sum(x.endswith("warning: " + note[len("note: "):]) for x in lines) == 2


@pytest.mark.slow
def test_cli_prints_no_note_when_the_cpu_lowers_nothing_it_writes(tiny_pipeline_dir, tmp_path):
    # Only a PLY: the CPU's lower texture and preview values shape no file of this job, so nothing to announce.
    proc = desktop("generate", rgba_blob(tmp_path / "a.png"), "-o", tmp_path / "out", "--model", tiny_pipeline_dir,
                   "--device", "cpu", "--steps", "2", "--formats", "ply", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not any(x.startswith("note: ") or "Changed for the CPU" in x for x in proc.stderr.splitlines()), proc.stderr


def _glb_texture_size(path) -> tuple:
    import trimesh

    return trimesh.load(path, force="mesh").visual.material.baseColorTexture.size


@pytest.fixture(scope="module")
def client(tiny_pipeline_dir, tmp_path_factory):
    from desktop.api import create_app
    from desktop.jobs import JobRunner

    runner = JobRunner(tiny_pipeline_dir, tmp_path_factory.mktemp("device_api_out"), device="cpu")
    server = LiveServer(create_app(runner))
    try:
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
            yield c
    finally:
        server.close()
        runner.shutdown(cancel=True, wait=True, timeout=30)


def test_the_rest_job_lists_the_device_changes_in_its_warnings(client, tmp_path):
    with open(rgba_blob(tmp_path / "a.png"), "rb") as f:
        image = base64.b64encode(f.read()).decode()
    r = client.post("/v1/jobs", json={"images": [image], "seed": 1, **EXPLICIT_1024})
    assert r.status_code == 202, r.text
    info = wait_job(client, r.json()["id"], timeout=300)
    assert info["state"] == "done", info["error"]
    assert info["settings"]["texture_size"] == 1024 and info["settings"]["bake_resolution"] == 512
    change = [w for w in info["warnings"] if w.startswith("Changed for the CPU")]
    assert len(change) == 1 and "bake_resolution 1024 -> 512 (" in change[0] and "texture_size" not in change[0]
    timings = client.get(f"/v1/jobs/{info['id']}/files/timings.json").json()
    assert timings["warnings"] == info["warnings"]
    # each stage names the attention kernels it ran and why (the auto rule here; health says who chose)
    ran = {s["stage"]: s["attention"] for s in timings["pipeline"]["stages"] if s.get("attention")}
    assert {"sparse_structure", "slat"} <= set(ran), timings["pipeline"]["stages"]
    assert all(k["why"] == "auto" and k["calls"] > 0 for kernels in ran.values() for k in kernels.values()), ran
    health = client.get("/v1/health").json()["attention"]
    assert health["dense"] == {"backend": "auto", "set_by": "default"} and "cuDNN" in health["rule"], health
