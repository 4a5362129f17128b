"""The page's Model choice (desktop/ui/family_view.py) without a browser, on real runners of the tiny pipelines (no
job runs): a TRELLIS.2 installed in the models folder is offered beside the TRELLIS v1 the app runs, with the command
that starts the app with it, which Generate says when it is picked; an app on TRELLIS.2 greys what TRELLIS.2 does not
use, each with its reason, and drops PLY and MP4 from the formats it starts with; gradio_client's /generate asking a
v1 app without TRELLIS.2 for it is told how to install it. (In the browser: test_ui_newcomer.py where TRELLIS.2 is
absent, test_ui_trellis2.py on TRELLIS.2.)"""
import os
import shutil

import pytest

from desktop.jobs import JobRunner
from desktop.settings import GenerationSettings
from desktop.ui.family_view import NOT_FOR_TRELLIS2, FamilyChoice, refuse_other_family


@pytest.fixture
def runner_on(tmp_path):
    made = []

    def make(model):
        made.append(JobRunner(model, tmp_path / f"out{len(made)}", device="cpu"))
        return made[-1]
    yield make
    for r in made:
        r.shutdown(cancel=True, wait=True, timeout=30)


def test_an_installed_trellis2_is_offered_with_the_command_that_starts_it(tiny_pipeline_dir, tiny_trellis2_dir,
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
    assert f"--model {models / 'TRELLIS.2-4B'}" in choice.info()
    refuse_other_family(runner, "trellis")                             # the family it runs: no problem
    with pytest.raises(ValueError, match="TRELLIS.2 is installed in .*start the server with --model"):
        refuse_other_family(runner, "trellis2")
    # TRELLIS v1 chosen: its knobs open, the pipeline type greyed (v1 has one path), every format offered.
    assert not choice.overrides(GenerationSettings().formats)["pipeline_type"]["interactive"]
    assert choice.start_formats(("glb", "ply", "mp4")) == ["glb", "ply", "mp4"]


def test_an_app_on_trellis2_greys_what_it_does_not_use(tiny_trellis2_dir, runner_on):
    runner = runner_on(tiny_trellis2_dir)
    choice = FamilyChoice(runner)
    assert choice.running == "trellis2" and choice.open and "PBR" in choice.info()
    controls = choice.overrides(GenerationSettings().formats)
    for name in NOT_FOR_TRELLIS2:
        assert controls[name]["interactive"] is False and NOT_FOR_TRELLIS2[name] in controls[name]["info"], name
    assert controls["pipeline_type"]["interactive"] is True
    assert controls["formats"]["value"] == ["glb"] and "not Gaussian splats" in controls["formats"]["info"]
    with pytest.raises(ValueError, match="This server runs TRELLIS.2 .*--model microsoft/TRELLIS-image-large"):
        refuse_other_family(runner, "trellis")
    # Picking TRELLIS v1 on the page opens them again, with their own help.
    back = FamilyChoice.control_update("bake_views", "trellis")
    assert back["interactive"] is True and "TRELLIS.2" not in back["info"]


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
        with pytest.raises(gr.Error) as refused:                  # /generate's settings, as gradio_client sends them
            app.api_settings({"model_family": "trellis2", "pipeline_type": "512"})
        text = str(refused.value)
        assert "This server runs TRELLIS v1" in text and "TRELLIS.2 is not available" in text, text
        assert "huggingface.co/facebook/dinov3" in text and "--trellis2" in text, text
        assert app.api_settings({"model_family": "trellis", "pipeline_type": "512"}).pipeline_type == "512"
    finally:
        app.close()
