"""`python -m desktop generate --model-family` (desktop/cli.py): trellis2 picks the TRELLIS.2 the app installed in its
models folder; given with a --model of the other family, one line and exit 2; a family that is not installed, how to
install it and exit 1; neither makes a job folder."""
import json

import pytest
from tests.helpers.images import rgba_blob
from tests.helpers.model_folders import install_trellis2

from desktop import cli

CHEAP = ["--device", "cpu", "--seed", "1022908287", "--steps", "1", "--pipeline-type", "512", "--formats", "stl",
         "--target-faces", "100000", "-q"]


def test_model_family_picks_the_installed_trellis2(tiny_trellis2_dir, tmp_path, monkeypatch):
    models = install_trellis2(tmp_path / "models", tiny_trellis2_dir)
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(models))
    monkeypatch.delenv("TRELLIS_DESKTOP_MODEL", raising=False)
    image = str(rgba_blob(tmp_path / "in.png"))
    assert cli.main([image, "--model-family", "trellis2", "-o", str(tmp_path / "out"), *CHEAP]) == 0
    (folder,) = (tmp_path / "out").iterdir()
    record = json.loads((folder / "settings.json").read_text())
    assert record["family"] == "trellis2" and record["model"] == str(models / "TRELLIS.2-4B")
    assert (folder / "model.stl").is_file()


def test_model_family_against_model_or_not_installed_is_refused(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    image = str(rgba_blob(tmp_path / "in.png"))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        cli.main([image, "--model", tiny_pipeline_dir, "--model-family", "trellis2", "-o", str(out), *CHEAP])
    assert exited.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a TRELLIS v1 model but --model-family is trellis2" in err
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "TRELLIS_DESKTOP_MODEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(tmp_path / "models"))             # nothing installed there
    with pytest.raises(SystemExit) as exited:
        cli.main([image, "--model-family", "trellis2", "-o", str(out), *CHEAP])
    assert exited.value.code == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "TRELLIS.2 is not available" in err and "--trellis2" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())
