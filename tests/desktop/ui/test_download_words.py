"""The result's download row names each file as its job made it (desktop/ui/download_row.py): a TRELLIS.2 job's PLY
is its mesh with vertex colours, a TRELLIS v1 job's PLY its Gaussian splats (real job folders on disk)."""
import json

from desktop.jobs.folder import JobFolder
from desktop.families import get_family
from desktop.ui.download_row import WORDS, download_choices


def folder_of(tmp_path, name, record):
    path = tmp_path / name
    path.mkdir()
    (path / "settings.json").write_text(json.dumps(record))
    (path / "model.ply").write_bytes(b"ply\n" + b"x" * 2000)
    return JobFolder(path), {"ply": str(path / "model.ply")}


def test_a_trellis2_ply_is_offered_as_a_coloured_mesh_and_a_v1_ply_as_splats(tmp_path):
    (words, path), = download_choices(*folder_of(tmp_path, "t2", {"family": "trellis2", "settings": {}}))
    assert words.startswith(get_family("trellis2").file_word("ply") + " · ") and path.endswith("model.ply")
    (words, _), = download_choices(*folder_of(tmp_path, "v1", {"settings": {}}))
    assert words.startswith(WORDS["ply"] + " · ") and "Gaussian" in words
