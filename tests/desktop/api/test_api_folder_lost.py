"""A job whose folder is taken away while it runs: a real `python -m desktop api` subprocess on the tiny pipeline
(CPU), a real job, its folder removed (as a user or a sync client does) or made unwritable while it samples. The job
ends as `disk` with a message naming its folder and what to do, never as an unexpected error naming a hidden partial
file; the server goes on: a new job, or the same one run again once its folder may be written."""
import contextlib
import os
import shutil
import subprocess

import pytest

from tests.helpers.api_process import ApiProcess
from tests.helpers.images import rgba_blob

pytestmark = [pytest.mark.skipif(os.name != "posix", reason="locks a folder the POSIX way"), pytest.mark.slow]

# Long enough that the folder is taken while the job samples, before it writes its files.
SLOW = dict(seed=3, ss_steps=25, slat_steps=25, texture_size=64, bake_views=4, bake_resolution=64,
            formats=["glb", "ply"])
FAST = dict(seed=1, ss_steps=2, slat_steps=2, texture_size=64, bake_views=4, bake_resolution=64, formats=["glb"])


@contextlib.contextmanager
def unwritable(folder):
    """`folder` made unwritable for this process until the block ends: chmod for a user, the immutable flag for
    root (whom chmod does not stop); skips the test where neither holds."""
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        try:
            yield
        finally:
            os.chmod(folder, 0o755)
        return
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("root, and this file system has no immutable flag: no way to make a folder unwritable")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def job_folder(out, job_id):
    return next(p for p in out.iterdir() if p.name.endswith(job_id[:8]))


@pytest.mark.parametrize("how", ["removed", "unwritable"])
def test_a_job_whose_folder_is_taken_away_fails_as_disk_naming_its_folder(tiny_pipeline_dir, tmp_path, how):
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    image = open(rgba_blob(tmp_path / "blob.png"), "rb").read()
    api = ApiProcess(tiny_pipeline_dir, out, tmp)
    try:
        job_id = api.submit(image, **SLOW)
        api.wait_stage(job_id, ("sparse_structure", "slat"))
        folder = job_folder(out, job_id)
        if how == "removed":
            shutil.rmtree(folder)
            info = api.wait_done(job_id)
        else:
            with unwritable(folder):
                info = api.wait_done(job_id)
        assert info["state"] == "failed" and info["error_kind"] == "disk", info
        assert folder.name in info["error"], info["error"]
        assert "partial" not in info["error"] and "unexpected" not in info["error"], info["error"]
        if how == "removed":              # its inputs went with the folder: a new job, not a rerun
            assert "removed" in info["error"] and "submit the job again" in info["error"], info["error"]
            assert api.wait_done(api.submit(image, **FAST))["state"] == "done"
        else:                             # its folder kept its inputs: the job runs again, once it may write
            assert "Let this user write there" in info["error"] and "run the job again" in info["error"]
            assert not any(n.startswith(".") for n in os.listdir(folder))     # no partial file left behind
            rerun = api.client.post(f"/v1/jobs/{job_id}/rerun")
            assert rerun.status_code == 202 and api.wait_done(rerun.json()["id"])["state"] == "done", rerun.text
    finally:
        code, err = api.stop()
    assert code == 0 and "Traceback" not in err, err
