"""`python -m desktop batch --model-family` (desktop/batch/command.py): the whole batch's family, chosen as generate
chooses it (cli.choose_family); given with a --model of the other family, one line and exit 2 before anything
starts (no outputs folder)."""
import json

import pytest
from tests.helpers.images import rgba_blob

from desktop.batch import command


def test_batch_refuses_a_model_family_against_its_model(tmp_path, capsys):
    images, v1 = tmp_path / "images", tmp_path / "v1"
    images.mkdir()
    v1.mkdir()
    rgba_blob(images / "a.png")
    (v1 / "pipeline.json").write_text(json.dumps({"name": "TrellisImageTo3DPipeline", "args": {}}))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        command.main([str(images), "-o", str(out), "--model", str(v1), "--model-family", "trellis2",
                      "--device", "cpu"])
    assert exited.value.code == command.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a TRELLIS v1 model but --model-family is trellis2" in err
    assert not out.exists()
