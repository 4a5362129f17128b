"""The page's Model choice (desktop/ui/family_view.py) without a browser, on real runners of the tiny pipelines (no
job runs): a TRELLIS.2 installed in the models folder can be picked beside the TRELLIS v1 the app runs (its first job
loads it); an app on TRELLIS.2 greys what TRELLIS.2 does not use, each with its reason, and keeps every format (PLY and
MP4 said for TRELLIS.2); there TRELLIS v1 can be picked where it is installed, else the choice is greyed with how to
get it, and so is a new look from a photo; gradio_client's /generate asking a v1 app without TRELLIS.2 for it is told
how to install it. (In the browser: test_ui_newcomer.py where TRELLIS.2 is
absent, test_ui_trellis2.py on TRELLIS.2.)"""
import os
import shutil

import pytest

from desktop.jobs import JobRunner
from desktop.families import get_family
from desktop.ui.family_view import LOOK_LABEL, NOT_FOR_ALL, FamilyChoice, refuse_other_family


@pytest.fixture
def runner_on(tmp_path):
    made = []

    def make(model):
        made.append(JobRunner(model, tmp_path / f"out{len(made)}", device="cpu"))
        return made[-1]
    yield make
    for r in made:
        r.shutdown(cancel=True, wait=True, timeout=30)


def test_an_installed_trellis2_can_be_picked_on_a_v1_app(tiny_pipeline_dir, tiny_trellis2_dir,
                                                                          runner_on, tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    try:
        os.symlink(tiny_trellis2_dir, models / "TRELLIS.2-4B", target_is_directory=True)
    except OSError:                                  # no symlinks here: a copy (a few MB)
        shutil.copytree(tiny_trellis2_dir, models / "TRELLIS.2-4B")
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(models))
    runner = runner_on(tiny_pipeline_dir)
    choice = FamilyChoice(runner)
    assert choice.running == "trellis" and choice.open
    assert choice.families == ["trellis", "trellis2"] and choice.look_label() == LOOK_LABEL
    assert [name for _, name in choice.look_choices()] == ["trellis", "trellis2"] and choice.look_default() == "trellis"
    info = choice.info()
    # the folder by its name: the machine's full path is the log's
    assert "TRELLIS.2-4B in your models folder" in info and str(models) not in info, info
    assert "pick it" in info and "--model" not in info, info
    assert "loads it in place of the loaded model" in info, info
    refuse_other_family(runner, "trellis")                             # the family it runs: no problem
    refuse_other_family(runner, "trellis2")                            # installed: its job switches the model
    # TRELLIS v1 chosen: its knobs open, the pipeline type greyed (v1 has one path), every format offered.
    controls = choice.overrides()
    assert not controls["pipeline_type"]["interactive"] and "TRELLIS.2" not in controls["formats"]["info"]


def test_an_app_on_trellis2_greys_what_it_does_not_use(tiny_trellis2_dir, tiny_pipeline_dir, runner_on, tmp_path,
                                                      monkeypatch):
    monkeypatch.delenv("TRELLIS_DESKTOP_MODEL", raising=False)
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(tmp_path / "models"))            # no TRELLIS v1 installed
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    runner = runner_on(tiny_trellis2_dir)
    choice = FamilyChoice(runner)
    assert choice.running == "trellis2" and not choice.open and choice.look_label() == LOOK_LABEL
    # a look from a photo is TRELLIS.2's PBR materials here (the New look tab's Model choice)
    assert choice.look_choices() == [("TRELLIS.2: PBR materials", "trellis2")] and choice.look_default() == "trellis2"
    assert "PBR" in choice.info() and "TRELLIS v1 is not installed here" in choice.info()
    controls = choice.overrides()
    trellis2 = get_family("trellis2")
    for name in NOT_FOR_ALL:
        assert controls[name]["interactive"] is False and trellis2.why_not(name) in controls[name]["info"], name
    assert controls["pipeline_type"]["interactive"] is True
    # every format stays offered as the app's defaults tick them, its help saying what PLY and MP4 are here
    assert "value" not in controls["formats"] and "vertex colours" in controls["formats"]["info"]
    # its PLY's tick box says what that file is here: a mesh, not Gaussian splats
    assert ("PLY (mesh with vertex colours)", "ply") in controls["formats"]["choices"]
    assert ("Gaussian splats (PLY)", "ply") in FamilyChoice.control_update("formats", "trellis")["choices"]
    assert "video_frames" not in NOT_FOR_ALL and "video_resolution" not in NOT_FOR_ALL
    with pytest.raises(ValueError, match="This server runs TRELLIS.2 .*--model microsoft/TRELLIS-image-large"):
        refuse_other_family(runner, "trellis")
    # Picking TRELLIS v1 on the page opens them again, with their own help.
    back = FamilyChoice.control_update("bake_views", "trellis")
    assert back["interactive"] is True and "TRELLIS.2" not in back["info"]
    # With TRELLIS v1 installed (the launcher's $TRELLIS_DESKTOP_MODEL) it can be picked, and a look from a photo.
    monkeypatch.setenv("TRELLIS_DESKTOP_MODEL", tiny_pipeline_dir)
    choice = FamilyChoice(runner)
    assert choice.open and choice.look_label() == LOOK_LABEL and "TRELLIS v1 is installed too" in choice.info()
    refuse_other_family(runner, "trellis")


def test_gradio_clients_trellis2_on_a_v1_app_without_it_says_how_to_install_it(tiny_pipeline_dir, runner_on,
                                                                               tmp_path, monkeypatch):
    from desktop.ui import TrellisApp
    from desktop.ui.lazy import gr, load_gradio

    load_gradio()
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(tmp_path / "models"))            # nothing installed there
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    app = TrellisApp(runner_on(tiny_pipeline_dir))
    try:
        assert not app.family.open and "--trellis2" in app.family.info()
        # what installing it costs and what it needs, before the user starts a 16 GB download
        assert "downloads about 16 GB" in app.family.info() and "NVIDIA GPU" in app.family.info(), app.family.info()
        assert "6-8 GB on the slower low-VRAM path" in app.family.info() and "hour or more" in app.family.info()
        with pytest.raises(gr.Error) as refused:                  # /generate's settings, as gradio_client sends them
            app.api_settings({"model_family": "trellis2", "pipeline_type": "512"})
        text = str(refused.value)
        assert "This server runs TRELLIS v1" in text and "TRELLIS.2 is not available" in text, text
        assert "huggingface.co/facebook/dinov3" in text and "--trellis2" in text, text
        assert app.api_settings({"model_family": "trellis", "pipeline_type": "512"}).pipeline_type == "512"
    finally:
        app.close()


def test_the_cpu_note_names_only_what_the_chosen_model_uses():
    """On a CPU the note above Generate lists what it lowers: with TRELLIS.2 chosen, not the bake's views and render
    size, which TRELLIS.2 does not use (its job's own warning leaves them out too)."""
    from desktop.settings import DEFAULT_PRESET, GenerationSettings
    from desktop.ui.knobs import KNOBS, device_note
    from desktop.ui.values import preset_values

    defaults = GenerationSettings()
    start = preset_values(DEFAULT_PRESET, defaults)
    values = {n: start.get(n, getattr(defaults, n)) for n in KNOBS}
    v1, t2 = (device_note(values, DEFAULT_PRESET, defaults, "cpu", family) for family in ("trellis", "trellis2"))
    assert "Bake views" in v1 and "Bake render size" in v1
    assert "Bake views" not in t2 and "Bake render size" not in t2 and "Texture size" in t2, t2
