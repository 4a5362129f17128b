"""Export again from the page, without a browser (desktop/ui/export_panel.py, history_list.py, download_row.py): a
real runner on the tiny pipeline (CPU) and the page's own handlers. The page's untouched quality knobs are not the
user's choice: the export keeps the job's CPU-lowered values, and the line beside the button says what it will use;
the export's History card and result line name its destination and its source, and claim no sampling; the download
row offers the files it wrote."""
from pathlib import Path

import pytest
import trimesh

from desktop.jobs import JobRunner, JobState
from desktop.jobs.folder import JobFolder
from desktop.settings import CPU_VALUES, GenerationSettings
from tests.helpers.images import rgba_blob

TIMEOUT = 300


@pytest.fixture(scope="module")
def page(tiny_pipeline_dir, tmp_path_factory):
    """(the app on a real runner, the finished source job, the page's values as loaded: the balanced preset)."""
    from desktop import ui
    from desktop.ui.values import OTHER_KNOBS

    tmp = tmp_path_factory.mktemp("export_panel")
    runner = JobRunner(tiny_pipeline_dir, tmp / "out", device="cpu")
    app = ui.TrellisApp(runner)
    try:
        source = runner.submit([rgba_blob(tmp / "chair.png")], GenerationSettings.from_preset(
            "balanced", seed=3, ss_steps=2, slat_steps=2, fill_holes=False, formats=("ply",)))
        assert source.wait(TIMEOUT) and source.state == JobState.DONE, source.error
        d = app.defaults
        values = {**ui.preset_values("balanced", d), **{k: getattr(d, k) for k in OTHER_KNOBS}}
        yield app, source, values
    finally:
        runner.shutdown(cancel=True, wait=True, timeout=30)
        app.close()


def test_an_export_from_the_page_keeps_the_cpu_lowered_values_and_says_what_it_uses(page):
    from desktop.ui import settings_from_values

    app, source, values = page
    picked = Path(source.out_dir).name
    assert app.export_note(None, "balanced", values).startswith("Pick a finished job above")
    values = {**values, "formats": ["stl", "glb"], "target_faces": 2000}
    page_settings = settings_from_values(values, "balanced", app.defaults)
    assert page_settings.texture_size == 1024                        # what the page shows, the GPU preset's

    note = app.export_note(picked, "balanced", values)
    assert note.startswith("**Export again** writes GLB, STL: 2,000 triangles · ") and "pivot" not in note, note
    assert "512² PNG texture baked from 24 views of 512 px" in note, note          # the job's CPU values
    # run without the GLB (no bake to wait for): the settings it runs with are still the job's lowered ones
    values["formats"] = ["stl"]
    page_settings = settings_from_values(values, "balanced", app.defaults)
    assert app.export_note(picked, "balanced", values).endswith("triangles · no texture to bake.")
    name, submit = app._export_work(picked, page_settings)
    job = submit()
    assert name == f"export of {picked}" and job.wait(TIMEOUT) and job.state == JobState.DONE, job.error
    used = job.used_settings
    assert {k: getattr(used, k) for k in CPU_VALUES} == CPU_VALUES, used       # lowered as Generate lowers them
    assert used.formats == ("stl",) and used.target_faces == 2000
    _, planned, preview = app.export_plan(picked, page_settings)
    assert planned == used and preview is None                        # the line said what ran

    # Its History card: tagged, and named after its source; its result line claims no sampling.
    from desktop.ui.history_list import folder_entry

    entry = folder_entry(Path(job.out_dir), set(), Path(source.out_dir).parent.parent / "thumbs")
    assert entry.caption.startswith("chair.png · done · TRELLIS v1 · export · exported from chair.png of "), entry.caption
    assert Path(entry.thumb).is_file()
    info, _, viewed, choice, button, _ = app._results(JobFolder(job.out_dir))
    assert "**Export**, exported from chair\\.png of " in info and "Steps" not in info and "Export time" in info
    # no GLB: the 3D view shows the print's STL, a real mesh trimesh reads
    assert viewed["value"].endswith("_export.stl") and len(trimesh.load(viewed["value"]).faces) > 0
    assert [label.split(" · ")[0] for label, _ in choice["choices"]] == ["STL (3D print)"]
    assert choice["value"] == choice["choices"][0][1] == button["value"] and button["label"] == "Download STL"
    assert Path(button["value"]).name.endswith("_export.stl")
