"""The export's sub-stages reach the page and the CLI in the user's words, never as internal names."""
import re
from types import SimpleNamespace

from desktop.jobs.job import STAGE_LABELS, SUBSTAGE_LABELS, Progress
from desktop.ui.status import job_line


def test_every_export_substage_has_words():
    from trellis.export import schedule
    from trellis.export.pbr import export as pbr_export
    # The stage names the exports report, as their modules document them (``progress(stage, done, total)``).
    names = set()
    for module in (schedule, pbr_export):
        names |= set(re.findall(r'"([a-z_]+)"', module.__doc__.split("progress(stage, done, total)")[1]))
    assert {"uv_unwrap", "observe", "inpaint", "normal_map", "assemble", "cluster", "attributes"} <= names
    assert names <= set(SUBSTAGE_LABELS), sorted(names - set(SUBSTAGE_LABELS))
    assert not [w for w in SUBSTAGE_LABELS.values() if "_" in w]


def test_the_status_line_shows_the_words():
    progress = Progress("bake", 1, 4, 0.5, 3.0, 2.0, "uv_unwrap")
    assert (progress.label, progress.detail) == (STAGE_LABELS["bake"], "unfolding the surface")
    assert Progress("bake", 1, 4, message="something new").detail == "something new"
    job = SimpleNamespace(state="running", progress=progress, inputs=[], warnings=[], error=None, settings=None,
                          used_settings=None, kind="generate")
    state, text = job_line(job, runner=None)
    assert "unfolding the surface" in text and "uv_unwrap" not in text, text


def test_a_job_the_app_stopped_says_so():
    job = SimpleNamespace(state="cancelled", progress=Progress("slat", 3, 12), inputs=[], warnings=[], files={},
                          error="interrupted: the app stopped while this job ran", error_kind="interrupted")
    assert job_line(job, runner=None) == ("cancelled", "Stopped with the app")
    job.error, job.error_kind = "cancelled", "cancelled"
    assert job_line(job, runner=None) == ("cancelled", "Cancelled")
