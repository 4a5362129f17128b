"""The app served from the test's own process (desktop.ui.server.launch, as gradio_main.py serves it) over an outputs
folder, and finished jobs written into that folder as the job runner lays them out (no model run), for browser tests
of what the page shows of a past job."""
import contextlib
import json
import shutil
from pathlib import Path

from desktop.settings import GenerationSettings
from tests.helpers.gradio_app import EXAMPLES
from tests.helpers.servers import free_port


@contextlib.contextmanager
def app_in_process(model_dir, outputs):
    """The page's URL until the block ends: the app on `model_dir` over `outputs`, served on a free local port."""
    from desktop.jobs import JobRunner
    from desktop.ui import TrellisApp
    from desktop.ui.server import launch

    runner = JobRunner(model_dir, outputs, device="cpu")
    app = TrellisApp(runner)
    demo = app.build()
    try:
        yield launch(demo, runner, "127.0.0.1", free_port())
    finally:
        runner.shutdown(cancel=True, wait=True, timeout=60)
        demo.close()
        app.close()


def finished_job(outputs, name: str, glb: bytes, report: dict | None = None, **settings) -> Path:
    """A done job folder `name` (a job folder's name: YYYYMMDD-HHMMSS-<8 hex>) in `outputs` with `glb` as its
    model.glb, the example sphere.png as its input, `settings` over the defaults and `report` as its export.json."""
    folder = Path(outputs) / name
    folder.mkdir()
    (folder / "model.glb").write_bytes(glb)
    shutil.copyfile(Path(EXAMPLES) / "sphere.png", folder / "input.png")
    record = {"job_id": name[-8:], "seed": 7, "inputs": ["/x/sphere.png"],
              "settings": {**GenerationSettings().to_dict(), **settings}}
    (folder / "settings.json").write_text(json.dumps(record))
    if report is not None:
        (folder / "export.json").write_text(json.dumps(report))
    (folder / "timings.json").write_text(json.dumps({"total": 1.0}))
    return folder
