"""A finished job's destination limits for every surface (desktop/jobs/limits.py): read from its real export.json
(written by the library's ``describe_export`` from real files), said by the page's status box as a coloured badge
with the numbers (desktop/ui/status.py) and by the CLI a line per limit missed (desktop/cli.py); an export.json of
an older version (reasons only) still read; none without a destination."""
import json
import os

import numpy as np
import trimesh

from desktop.cli import limits_verdict
from desktop.jobs import Job, JobState
from desktop.jobs.limits import job_limits, missed_limits
from desktop.settings import GenerationSettings
from desktop.ui.status import job_status_html
from trellis.export.formats import write
from trellis.export.report import describe_export
from trellis.export.textured import TexturedMesh


def done_job(report_path) -> Job:
    job = Job(id="j" * 32, inputs=[], settings=GenerationSettings(), state=JobState.DONE)
    job.files["report"] = str(report_path)
    return job


def test_a_print_export_that_misses_a_limit_says_each_one_with_its_numbers(tmp_path):
    sphere = trimesh.creation.icosphere(subdivisions=2)
    crumb = trimesh.creation.icosphere(subdivisions=1, radius=0.4).apply_translation((3.0, 0.0, 0.0))
    both = trimesh.util.concatenate([sphere, crumb])
    mesh = TexturedMesh(both.vertices.astype(np.float32), both.faces.astype(np.int64),
                        np.zeros((len(both.vertices), 2), np.float32), np.zeros((4, 4, 3), np.uint8), {})
    files = {"stl": write(mesh, tmp_path / "model.stl", print_ready=True)}
    path = tmp_path / "export.json"
    path.write_text(json.dumps(describe_export(mesh, files, print_ready=True, destination="print")))
    job = done_job(path)
    limits = job_limits(job)
    assert limits["destination"] == "print" and limits["met"] is False and len(limits["checks"]) == 6
    (missed,) = missed_limits(limits)
    assert missed.startswith("the print repair removed ") and missed.endswith("(1 part dropped), more than 5%")
    assert limits_verdict(job) == (False, ["print limits NOT met: 1 of 6 missed", f"limit missed: {missed}"])
    box = job_status_html(job, runner=None)
    assert '<div class="td-limits td-limits-missed" data-limits="missed">' in box
    assert "✖ print: 1 of 6 limits missed" in box and f"<li>{missed}</li>" in box
    # an export.json rewritten in place is read again (the reader keeps one per path and modification)
    report = json.loads(path.read_text())
    report["limits"] = {"met": True, "reasons": [], "checks": [c | {"met": True} for c in report["limits"]["checks"]]}
    path.write_text(json.dumps(report))
    os.utime(path, ns=(1, 2))
    assert job_limits(job)["met"] and limits_verdict(job) == (True, ["print limits met"])
    assert 'data-limits="met">✔ print: all 6 limits met</p>' in job_status_html(job, runner=None)


def test_an_older_report_and_one_without_a_destination(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"destination": "web", "limits": {"met": False, "reasons": ["120000 triangles, over "
                                                                                         "the limit of 100000"]}}))
    limits = job_limits(done_job(old))
    assert limits["checks"] == [] and missed_limits(limits) == ["120000 triangles, over the limit of 100000"]
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"destination": None, "triangles": 10}))
    assert job_limits(done_job(plain)) is None and limits_verdict(done_job(plain)) is None
    assert job_limits(done_job(tmp_path / "missing.json")) is None
    assert "td-limits" not in job_status_html(done_job(plain), runner=None)
