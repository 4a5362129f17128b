"""Generate on a page whose message stream closes late (tests/helpers/late_stream_close.py): the order a loaded
machine can give. Gradio's client then sends the job's request while it still counts the closing stream as open and
opens no new one; the page must still get the job's answer (its error, its progress, its result) and be idle again,
never stay "Generating…" with the status box unchanged."""
import pytest

from tests.helpers.gradio_app import EXAMPLES, FINISHED, Page
from tests.helpers.late_stream_close import SCRIPT as LATE_CLOSE

ANSWER_S = 30          # far below the wait of a page stuck for good, far above a loaded machine's round trips


def idle(ui):
    ui.page.wait_for_function("() => { const g = document.querySelector('#td-generate');"
                              " return g && !g.disabled && g.innerText.trim() === 'Generate'; }",
                              timeout=ANSWER_S * 1000)


@pytest.mark.slow
def test_generate_is_answered_when_the_stream_closes_late(browser, server):
    import os

    ui = Page(browser, server, init_script=LATE_CLOSE)
    try:
        ui.tiny()
        ui.formats({"ply"})
        ui.page.evaluate("() => { window.__tdLateClose = 1500; }")
        # Nothing to generate from: the form's error, and the page idle again.
        ui.generate()
        state, text = ui.wait_status(("error",), timeout=ANSWER_S)
        assert "image" in text.lower(), text
        idle(ui)
        assert ui.page.evaluate("() => window.__tdStreamCloses") > 0           # the late closes did happen
        # Then an image (its upload check is answered on a stream that closes in time: this test is about Generate):
        # the job is queued, runs and finishes, and the page is idle again.
        ui.page.evaluate("() => { window.__tdLateClose = 0; }")
        ui.page.wait_for_function("() => window.__tdHeldCloses === 0", timeout=ANSWER_S * 1000)
        ui.upload(os.path.join(EXAMPLES, "chair.png"))
        ui.wait_status(("ready",), timeout=ANSWER_S)
        ui.page.evaluate("() => { window.__tdLateClose = 1500; }")
        ui.generate()
        state, text = ui.wait_status(FINISHED)
        assert state == "done", text
        idle(ui)
    finally:
        ui.close()
