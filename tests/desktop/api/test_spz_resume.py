"""/resume_from_preview's query: every export setting of the settings table (settings_table.ROWS, export=True)
under our name and StableProjectorz's, each read and checked by the settings' own rules, against the real
FastAPI app (TestClient) over a runner that records what it is asked to export.

The second test runs a fresh Python that appends an optional export row to the table before the app is
imported (as an edit of settings_table.py would): the row alone makes it a parameter, "none" included.
"""
import time
import uuid
from pathlib import Path

from tests.helpers.children import run_child
from tests.helpers.images import rgba_blob


class ExportRecorder:
    """A job runner whose generations finish at once with their result kept, and which records the changes
    of every export it is asked for (the export job is done at once, with the changed settings)."""

    def __init__(self, outputs_dir):
        self.outputs_dir, self.model_path, self.text_model = outputs_dir, "m", None
        self.exports = []
        self.jobs = {}

    def list(self):
        return list(self.jobs.values())

    def fast_paths(self):
        return {"cpu": "CPU"}

    def _done(self, settings, kind="generate", source_id=None, keep=False):
        from desktop.jobs.job import Job, JobState

        job = Job(id=uuid.uuid4().hex, inputs=[], settings=settings, kind=kind, source_id=source_id)
        job.used_settings, job.result_kept, job.state, job.finished = settings, keep, JobState.DONE, time.time()
        job.mark_ended()
        self.jobs[job.id] = job
        return job

    def submit_request(self, request):
        return self._done(request.settings, keep=request.keep_result)

    def submit_export(self, source_id, **changes):
        self.exports.append(changes)
        source = self.jobs[source_id]
        return self._done(source.used_settings.replace(**changes), "export", source_id)

    def release_result(self, job_id):
        self.jobs[job_id].result_kept = False
        return True

    def cancel(self, job_id):
        return False


def preview_client(tmp_path):
    """(TestClient, runner) with a preview made by POST /generate_preview, ready to be resumed."""
    from starlette.testclient import TestClient

    from desktop.api import create_app

    runner = ExportRecorder(tmp_path)
    client = TestClient(create_app(runner, allowed_hosts=["testserver"]))
    blob = Path(rgba_blob(tmp_path / "a.png")).read_bytes()
    answer = client.post("/generate_preview", files={"file": ("a.png", blob, "image/png")}, data={"seed": "1"})
    assert answer.status_code == 200 and answer.json()["status"] == "PREVIEW_READY", answer.text
    return client, runner


def test_resume_takes_every_export_setting_by_our_name_and_stable_projectorz_name(tmp_path):
    from desktop.settings import ROWS

    client, runner = preview_client(tmp_path)
    query = {"bake_mode": "opt", "fill_holes": "false", "bake_views": "8", "preview_frames": "30",
             "mesh_simplify_ratio": "90", "texture_size": "512.0", "formats": "ply", "not_a_setting": "1"}
    answer = client.post("/resume_from_preview", params=query)
    assert answer.status_code == 200 and answer.json()["status"] == "COMPLETE", answer.text
    # A whole float is the integer (its sliders send floats); formats is not a parameter: the answer is a GLB.
    assert runner.exports == [{"formats": ("glb",), "bake_mode": "opt", "fill_holes": False, "bake_views": 8,
                               "video_frames": 30, "simplify": 0.9, "texture_size": 512}]
    export = runner.jobs[answer.json()["job_id"]]
    assert (export.settings.bake_mode, export.settings.fill_holes, export.settings.seed) == ("opt", False, 1)
    answer = client.post("/resume_from_preview", params={"simplify": "0.5", "bake_resolution": "64"})
    assert answer.status_code == 200, answer.text
    assert runner.exports[-1] == {"formats": ("glb",), "simplify": 0.5, "bake_resolution": 64}

    refused = [({"bake_mode": "slow"}, "bake_mode", "'slow' is not one of fast, opt"),
               ({"bake_views": "0"}, "bake_views", "bake_views: 0 is out of range; use 1..1000"),
               ({"bake_views": "2.5"}, "bake_views", "bake_views: expected a whole number, got '2.5'"),
               ({"fill_holes": "maybe"}, "fill_holes", "fill_holes: expected true or false"),
               ({"mesh_simplify_ratio": "inf"}, "mesh_simplify_ratio", "not a number"),
               ({"mesh_simplify_ratio": "150"}, "mesh_simplify_ratio", "simplify: 1.5 is out of range"),
               ({"mesh_simplify_ratio": "90", "simplify": "0.5"}, "simplify", "set the same thing"),
               ([("bake_views", "8"), ("bake_views", "9")], "bake_views", "given more than once")]
    for params, where, words in refused:
        answer = client.post("/resume_from_preview", params=params)
        assert answer.status_code == 422, (params, answer.text)
        (entry,) = answer.json()["detail"]
        assert entry["loc"] == ["query", where] and words in entry["msg"], (params, entry)
    assert len(runner.exports) == 2

    # The schema lists every export row but formats, and StableProjectorz's names with their own ranges.
    operation = client.get("/openapi.json").json()["paths"]["/resume_from_preview"]["post"]
    documented = {p["name"]: p for p in operation["parameters"]}
    assert set(documented) >= {r.name for r in ROWS if r.export} - {"formats"}
    assert "formats" not in documented
    assert {"mesh_simplify_ratio", "mesh_simplify", "preview_frames", "preview_resolution"} <= set(documented)
    assert documented["mesh_simplify_ratio"]["schema"]["maximum"] == 100
    assert documented["bake_mode"]["schema"]["enum"] == ["fast", "opt"]


def child(out: str) -> None:
    """Runs in the fresh process: an optional export row appended to the table, then resumed with it."""
    import desktop.settings_table as table

    table.ROWS = (*table.ROWS, table.Setting(
        "dummy_limit", "int", None, "a dummy limit (none: no limit)", lo=10, hi=1000, optional=True, export=True))
    client, runner = preview_client(Path(out))
    for text, value in [("500", 500), ("none", None)]:
        answer = client.post("/resume_from_preview", params={"dummy_limit": text})
        assert answer.status_code == 200, answer.text
        assert runner.exports[-1] == {"formats": ("glb",), "dummy_limit": value}
        assert runner.jobs[answer.json()["job_id"]].settings.dummy_limit == value
    answer = client.post("/resume_from_preview", params={"dummy_limit": "5"})
    assert answer.status_code == 422 and "dummy_limit: 5 is out of range; use 10..1000" in answer.text
    operation = client.get("/openapi.json").json()["paths"]["/resume_from_preview"]["post"]
    assert "dummy_limit" in {p["name"] for p in operation["parameters"]}
    print("resumed with the new row")


def test_a_new_export_row_is_a_resume_parameter_none_included(tmp_path):
    proc = run_child(__file__, str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resumed with the new row" in proc.stdout
