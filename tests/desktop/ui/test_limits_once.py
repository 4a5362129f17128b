"""A destination's missed limit is said once on the page, with what to do: the status box's red badge lists it and
names the controls that fix it; the job's warning that says the same (levels of detail not made) and the result line
do not repeat it; a History pick shows the same badge. The report is the library's own check (check_limits) written
as export.json and read back as every surface reads it."""
import json
from pathlib import Path

from desktop.jobs.folder import JobFolder
from desktop.jobs.job import Job, JobState
from desktop.settings import GenerationSettings
from desktop.ui.history import result_info
from desktop.ui.status import job_status_html
from trellis.export.report import check_limits

REFUSED = ("LOD1: its target of 124 triangles is below the 484 that keep the silhouette (every piece and every "
           "texture chart's corners); not made")


def game_report() -> dict:
    report = {"destination": "game", "triangles": 500, "watertight": False, "size_m": {"width": 1.0, "depth": 1.0,
              "height": 1.0}, "files": {"glb": {"name": "model.glb", "bytes": 120000}},
              "lods": [{"level": 1, "triangles": None, "target": 124, "refused": REFUSED},
                       {"level": 2, "triangles": 60, "target": 62}]}
    report["limits"] = check_limits(report, {"lods_within": 0.1, "max_triangles": 1000})
    return report


def test_a_missed_lod_target_is_said_once_with_what_to_do(tmp_path):
    folder = tmp_path / "20261128-010101-abcdef12"
    folder.mkdir()
    (folder / "export.json").write_text(json.dumps(game_report()))
    (folder / "settings.json").write_text(json.dumps({"job_id": "abcdef12", "kind": "export", "settings": {}}))
    warning = f"Levels of detail not made: {REFUSED}."
    (folder / "timings.json").write_text(json.dumps({"total": 1.0, "warnings": [warning, "another thing"]}))
    job = Job(id="abcdef12", inputs=[], settings=GenerationSettings(), state=JobState.DONE,
              files={"report": str(folder / "export.json")}, warnings=[warning, "another thing"])
    box = job_status_html(job, runner=None)
    assert box.count("not made") == 1 and "✖ game: 1 of 3 limits missed" in box, box
    assert "What to do: raise <b>Target triangles</b> or ask for fewer <b>Levels of detail</b>" in box, box
    assert "Warning: another thing" in box                       # the other warnings stay
    info = result_info(JobFolder(folder), warnings=True)
    assert "limits" not in info and info.count("not made") == 1 and "LOD1 not made, LOD2 60 triangles" in info, info
    assert "another thing" in info and "Levels of detail not made" not in info


def test_a_history_pick_shows_the_badge(tmp_path, tiny_pipeline_dir):
    from desktop.jobs import JobRunner
    from desktop.ui import TrellisApp

    runner = JobRunner(tiny_pipeline_dir, tmp_path / "out", device="cpu")
    app = TrellisApp(runner)
    try:
        folder = Path(runner.outputs_dir) / "20261128-010101-abcdef12"
        folder.mkdir(parents=True)
        (folder / "export.json").write_text(json.dumps(game_report()))
        (folder / "settings.json").write_text(json.dumps({"job_id": "abcdef12", "kind": "export", "settings": {}}))
        status, info, *_ = app.show_history(folder.name)
        assert 'data-limits="missed"' in status and "What to do" in status and "limits" not in info
    finally:
        runner.shutdown(cancel=True, wait=True, timeout=30)
        app.close()
