"""Generate pressed at once after a tab switch runs the tab the page shows. A real app on the tiny text and image
pipelines in headless Chromium; the tab switch's requests to the server are held back until Generate has been
pressed, so a mode that only the server's answer to the tab switch would set is certain to be the previous tab's."""
import json

import pytest

from tests.helpers.gradio_app import FINISHED, Page, job_dirs

pytestmark = pytest.mark.filterwarnings("ignore::trellis.pipelines.trellis_text_to_3d.PromptTruncatedWarning")


@pytest.mark.slow
def test_generate_right_after_a_tab_switch_runs_that_tab(browser, text_server, outputs):
    ui = Page(browser, text_server)
    try:
        ui.tiny()
        ui.formats({"glb"})
        ui.page.get_by_role("tab", name="Text").click()
        ui.page.locator("#td-prompt textarea").fill("a red wooden chair")
        ui.page.get_by_role("tab", name="History").click()
        ui.page.locator("#td-history input").wait_for()
        ui.page.wait_for_timeout(500)            # History's own answer arrives: the server now holds "history"

        held, holding = [], [True]
        ui.page.route("**/queue/join*", lambda route: held.append(route) if holding[0] else route.continue_())
        ui.page.get_by_role("tab", name="Text").click()
        ui.page.locator("#td-prompt textarea").wait_for(state="visible")
        ui.page.wait_for_function("() => true")   # the tab's events have been sent (and are held)
        assert held, "the tab switch sent nothing to the server: the test holds nothing back"
        holding[0] = False
        ui.generate()
        ui.page.wait_for_timeout(300)             # Generate's request leaves before the tab's answers
        for route in held:
            route.continue_()

        state, text = ui.wait_status(FINISHED)
        assert state == "done", text
        (job,) = job_dirs(outputs)
        assert json.loads((job / "settings.json").read_text())["kind"] == "text"
        ui.check_clean()
    finally:
        ui.close()
