"""`python -m desktop generate` whose disk fills while the job's files are written, after its sampling (an ENOSPC
from the PLY's write): its FAILED line says that the sampling finished and names `python -m desktop export FOLDER`,
which then writes the files from the folder's kept result.npz, nothing sampled."""
import errno
import json

from desktop import cli, export_command
from desktop.jobs.folder import JobFolder
from tests.helpers.images import rgba_blob


def test_a_disk_full_while_writing_the_files_is_exported_by_the_command_it_names(tiny_pipeline_dir, tmp_path,
                                                                                  monkeypatch, capsys):
    def disk_full(self, gaussian):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.file("ply")))

    monkeypatch.setattr(JobFolder, "write_ply", disk_full)
    out = tmp_path / "out"
    code = cli.main([rgba_blob(tmp_path / "a.png"), "--model", tiny_pipeline_dir, "-o", str(out), "--device", "cpu",
                     "--steps", "1", "--formats", "ply", "--seed", "8", "-q"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILED and "Traceback" not in err, err
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    assert (folder / "result.npz").is_file() and not (folder / "model.ply").exists()
    assert "FAILED" in err and "Its sampling finished" in err, err
    assert f"`python -m desktop export {folder}` makes its files without sampling again" in err, err

    monkeypatch.undo()                      # the disk has room again
    exported = tmp_path / "exported"
    assert export_command.main([str(folder), "-o", str(exported), "--device", "cpu", "-q"]) == 0
    (made,) = [p for p in exported.iterdir() if p.is_dir()]
    assert (made / "model.ply").is_file()
    record = json.loads((made / "settings.json").read_text())
    assert record["kind"] == "export" and record["settings"]["seed"] == 8
    assert "pipeline" not in json.loads((made / "timings.json").read_text())          # nothing sampled
