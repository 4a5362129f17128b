"""The Text and New look tabs set expectations before Generate, in the browser (a real `gradio_main.py` on the tiny
text pipeline, as tests/desktop/ui/test_ui_text.py): a live token count under the prompt from the text model's own
tokenizer (offline), the size selector fixed by --text-model and saying so, and the dropped 3D model previewed with
its triangle count. Screenshots at 800 / 1024 / 1400 px in both themes go to test-artifacts/ui/."""
import os

import pytest

from tests.helpers.gradio_app import ROUND_TRIP_MS, Page
from tests.helpers.page_audit import WIDTHS, shots_in_both_themes
from tests.helpers.repo import ROOT_DIR as ROOT


LONG = " ".join(["a tall red wooden chair with a carved back"] * 12)


def tokens(ui, elem_id) -> tuple:
    return ui.page.locator(f"#{elem_id} .td-tokens").evaluate("el => [el.dataset.state, el.dataset.tokens, el.innerText]")


def drop_rod(ui, folder):
    import trimesh

    rod = os.path.join(folder, "rod.glb")
    trimesh.creation.cylinder(radius=0.02, height=1.0, sections=8).export(rod)        # 32 triangles
    ui.page.get_by_role("tab", name="New look").click()
    ui.page.locator("#td-mesh input[type=file]").set_input_files(rod)
    ui.page.wait_for_selector("#td-mesh-stats .td-mesh-stats[data-triangles='32']", timeout=30000)


@pytest.mark.slow
def test_text_and_new_look_say_what_to_expect(browser, text_server, tmp_path):
    ui = Page(browser, text_server)
    try:
        ui.page.get_by_role("tab", name="Text").click()
        box = ui.page.locator("#td-prompt textarea")
        box.wait_for()
        assert tokens(ui, "td-prompt-tokens")[:2] == ["ok", "0"]
        box.fill("a red wooden chair")
        ui.page.wait_for_function("() => document.querySelector('#td-prompt-tokens .td-tokens').dataset.tokens !== '0'")
        state, n, text = tokens(ui, "td-prompt-tokens")
        assert state == "ok" and 0 < int(n) <= 8 and text.startswith(f"{n} / 75 tokens"), text   # exact, not "about"
        box.fill(LONG)
        ui.page.wait_for_selector("#td-prompt-tokens .td-tokens[data-state=over]", timeout=ROUND_TRIP_MS)
        assert "the text model stops reading after" in tokens(ui, "td-prompt-tokens")[2]
        # Started with --text-model: the size choice does nothing, and says so.
        size = ui.page.locator("#td-text_model_size")
        assert "--text-model TRELLIS-text-tiny" in size.inner_text()
        assert ui.page.locator("#td-text_model_size input").first.is_disabled()
        ui.shot("22-text-tokens.png")

        # New look: the dropped model is shown with its triangles before Generate; the look prompt is counted too.
        drop_rod(ui, str(tmp_path))
        ui.page.locator("#td-mesh-preview").wait_for(state="visible")
        assert "rod.glb: 32 triangles" in ui.page.inner_text("#td-mesh-stats")
        ui.page.locator("#td-look-prompt textarea").fill("made of polished gold")
        ui.page.wait_for_function("() => document.querySelector('#td-look-tokens .td-tokens').dataset.tokens !== '0'")
        ui.check_clean()
    finally:
        ui.close()

    def prepare(ui):
        drop_rod(ui, str(tmp_path))
        ui.page.locator("#td-look-prompt textarea").fill(LONG)
        ui.page.wait_for_selector("#td-look-tokens .td-tokens[data-state=over]", timeout=ROUND_TRIP_MS)
    shots_in_both_themes(browser, text_server, "23-new-look-expectations", prepare)
    assert all(os.path.isfile(os.path.join(ROOT, "test-artifacts", "ui",
                                           f"23-new-look-expectations-{t}-{w}.png"))
               for t in ("light", "dark") for w in WIDTHS)
