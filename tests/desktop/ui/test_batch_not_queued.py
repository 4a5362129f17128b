"""A Batch whose later items cannot be queued (the outputs folder's disk fills up after the first is written down):
the page keeps tracking the job it did queue (progress, its result, Cancel) and says which items were not queued and
why. The generate handler itself over a real JobRunner on the tiny pipeline; the full disk is an ENOSPC where a job's
queue record writes its settings.json, as tests/desktop/api/test_api_disk_full.py fakes it, for records only (the
queued job's own folder is still written)."""
import errno
import re
from types import SimpleNamespace

import pytest

from desktop import ui
from desktop.jobs import JobRunner
from desktop.jobs.folder import JobFolder
from desktop.jobs.queued import QUEUE_PREFIX
from desktop.settings import GenerationSettings
from desktop.ui.batch_view import JOB_ROW
from tests.helpers.images import rgba_blob


@pytest.fixture(scope="module")
def page(tiny_pipeline_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("not_queued_out")
    runner = JobRunner(tiny_pipeline_dir, out, device="cpu")
    app = ui.TrellisApp(runner)
    app.build()
    yield app, out
    runner.shutdown(cancel=True, wait=True, timeout=30)
    app.close()


@pytest.fixture
def disk_fills(monkeypatch):
    """The disk is full for every queue record after `room` more of them were written."""
    real = JobFolder.write_settings

    def fill(room: int):
        written = []

        def write_settings(self, record):
            if self.path.parent.name.startswith(QUEUE_PREFIX):     # a queue record, not a running job's own folder
                if len(written) >= room:
                    raise OSError(errno.ENOSPC, "No space left on device", str(self.path / "settings.json"))
                written.append(self.path)
            return real(self, record)
        monkeypatch.setattr(JobFolder, "write_settings", write_settings)
    return fill


def click(app, tmp_path, mode: str, names: str, session):
    """The generate handler of a Generate click on `mode`'s tab with images named after the letters of `names`."""
    d = GenerationSettings()
    uploads = [{"path": rgba_blob(tmp_path / f"{n}.png"), "orig_name": f"{n}.png"} for n in names]
    values = {"mode": mode, "single": uploads[0] if mode == "single" else None, "multi": None, "preset": "fast",
              "batch": uploads if mode == "batch" else None,
              **{k: getattr(d, k) for k in [*ui.PRESET_KNOBS, *ui.OTHER_KNOBS]}, "formats": ["ply"]}
    app.select_tab(mode, session.session_hash)              # the tab the click came from is the open one
    return app.generate({comp: values.get(name) for name, comp in app._named.items()}, session)


def rows(status: str) -> list:
    return re.findall(r'<tr data-state="([\w-]+)"[^>]*><td>(?:<button[^>]*>)?(\w)\.png', status)


@pytest.fixture
def cut_short(page, disk_fills, tmp_path, request):
    """A Batch of a, b and c whose queue records fill the disk after a's: (app, outputs folder, session, the
    handler's updates still to come, its first status box, the queued job's id)."""
    app, out = page
    disk_fills(1)
    session = SimpleNamespace(session_hash=request.node.name)
    updates = click(app, tmp_path, "batch", "abc", session)
    status = next(updates)[0]
    [job_id] = JOB_ROW.findall(status)
    return app, out, session, updates, status, job_id


def test_the_queued_job_is_followed_to_its_result_and_the_rest_say_the_disk_is_full(cut_short):
    app, out, session, updates, status, job_id = cut_short
    assert app.cancel_settled(session, wait_s=0)["interactive"]          # the page is busy with it: Cancel covers it
    assert rows(status) == [(rows(status)[0][0], "a"), ("not-queued", "b"), ("not-queued", "c")], status
    assert 'data-not-queued="2"' in status and "Not queued: b.png, c.png" in status
    # b was refused, in the page's words of a full disk and the refusal's own (the outputs folder named); c not tried
    assert "Not queued: the disk of the outputs folder is full. Free some disk space there" in status, status
    assert f"the outputs folder is full ({out})" in status
    assert "Not queued (not tried after b.png): the disk of the outputs folder is full." in status

    rest = list(updates)
    final = rest[-1][0]
    assert rows(final) == [("done", "a"), ("not-queued", "b"), ("not-queued", "c")], final
    assert 'data-state="partial"' in final and "1 of 1 finished: 1 done" in final
    folder = app.runner.get(job_id).out_dir
    shown = [u for u in rest if isinstance(u[7], list) and u[7]]                  # the result column's files
    assert shown and any(str(f).endswith(".ply") for f in shown[-1][7]), shown
    assert any(isinstance(u[8], dict) and u[8].get("value") == JobFolder(folder).name for u in rest)
    assert not app.cancel_settled(session, wait_s=0)["interactive"]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []      # no record of b or c left behind
    assert [p for p in out.iterdir() if p.is_dir()] == [JobFolder(folder).path]


def test_cancel_stops_the_queued_job_of_a_batch_cut_short(cut_short):
    app, _, session, updates, status, job_id = cut_short
    assert rows(status)[1] == ("not-queued", "b")
    job = app.runner.get(job_id)
    assert app.cancel(session)["value"] == "Cancelling…"
    final = list(updates)[-1][0]
    assert job.state == "cancelled" and rows(final)[0] == ("cancelled", "a"), final
    assert not app.cancel_settled(session, wait_s=0)["interactive"]


def test_nothing_queued_is_one_disk_full_box(page, disk_fills, tmp_path):
    app, out = page
    disk_fills(0)
    for mode, names in (("single", "a"), ("batch", "ab")):
        updates = list(click(app, tmp_path, mode, names, SimpleNamespace(session_hash="refused")))
        box = updates[-1][0]
        assert len(updates) == 1 and 'data-error="disk_full"' in box, box
        assert "The disk of the outputs folder is full." in box and f"the outputs folder is full ({out})" in box
        assert not app.cancel_settled(SimpleNamespace(session_hash="refused"), wait_s=0)["interactive"]
