"""`python -m desktop generate` when its jobs cannot be written down (the outputs folder's disk is full, faked by an
ENOSPC where a job's record writes its settings.json): one line that says so, exit 1, no traceback, nothing left."""
import errno

from desktop import cli
from desktop.jobs.folder import JobFolder
from tests.helpers.images import rgba_blob


def test_a_full_outputs_disk_at_submit_is_one_line_and_exit_1(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    def disk_full(self, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path / "settings.json"))

    monkeypatch.setattr(JobFolder, "write_settings", disk_full)
    out = tmp_path / "out"
    code = cli.main([rgba_blob(tmp_path / "a.png"), "--model", tiny_pipeline_dir, "-o", str(out), "--device", "cpu",
                     "--steps", "1", "-q"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILED and "Traceback" not in err, err
    assert f"error: the job was not queued: the outputs folder is full ({out}): free some disk space there" in err
    assert not out.exists() or list(out.iterdir()) == []
