"""`python -m desktop ui` (or `python gradio_main.py`): the browser app.

A Gradio Blocks page on top of the JobRunner: one image, several views of one object, or a batch of
files in; a live progress line (stage, step i/n, ETA) while the job runs; the preview video, an
interactive 3D view of the GLB and each file the job wrote to download when it is done; the history of the outputs
folder. Every job gets its own folder there (see desktop/jobs/folder.py), so nothing is lost when the page
is closed. Nothing is fetched from the internet by the page itself (Gradio serves its own assets;
analytics are off); the model is downloaded by the runner only when it is not on disk yet.

gradio_client scripts it through three named endpoints (/generate, /status, /cancel; the page's own
handlers are private). Ctrl-C, SIGTERM and SIGHUP stop it cleanly (desktop/stopping.py, shared with the
REST API server): the running job ends interrupted, then the app exits 0.

Gradio is imported only once the options are parsed, so `--help` and a usage error are instant.

The package, imported one way: lazy (gradio on first use) <- values (settings <-> the page's knobs, the
images of a click) <- status (what the page shows about jobs) <- family_view (the Model choice: TRELLIS v1 or
TRELLIS.2) <- history, download_row, export_panel, endpoints (gradio_client) <- app (TrellisApp: the page and its
handlers) <- server (options and main). The names below stay
importable as `desktop.ui.X`.
"""
from .app import CSS, EXAMPLES_DIR, ROOT, TrellisApp  # noqa: F401
from .lazy import gr, load_gradio  # noqa: F401
from .server import build_parser, main, model_problem  # noqa: F401
from .batch_view import status_html  # noqa: F401
from .status import POLL_S, device_line, friendly_error, idle_html, job_line, message_html  # noqa: F401
from .values import (FORMAT_CHOICES, LABELS, OTHER_KNOBS, PRESET_CHOICES, PRESET_KNOBS, collect_work,  # noqa: F401
                     preset_values, settings_from_values)
