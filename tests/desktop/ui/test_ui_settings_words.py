"""The settings in the user's words, in the browser (a real `gradio_main.py` on the tiny pipeline, headless Chromium,
as tests/desktop/ui/test_ui.py): a help line under every control, sliders over the useful range that widen for a
typed value, the preset turning Custom, the CPU's changes shown before Generate, a typed seed that unticks
Randomize and is the one used, and "Reuse this seed" by the result. Screenshots at 800 / 1024 / 1400 px in the
light and dark themes go to test-artifacts/ui/."""
import json
import os

import pytest

from desktop.settings_table import ROWS
from desktop.ui.output_layout import OUTPUT_SECTIONS
from tests.helpers.gradio_app import EXAMPLES, FINISHED, SHOTS, Page, job_dirs
from tests.helpers.page_audit import WIDTHS, shots_in_both_themes


def checked(ui, elem_id, value) -> bool:
    return ui.page.locator(f"#{elem_id} input[value='{value}']").is_checked()


def range_of(ui, elem_id) -> tuple:
    r = ui.page.locator(f"#{elem_id} input[type=range]")
    return float(r.get_attribute("min")), float(r.get_attribute("max"))


def type_number(ui, elem_id, value):
    box = ui.page.locator(f"#{elem_id} input[data-testid=number-input]")
    box.fill(str(value))
    box.press("Enter")


@pytest.mark.slow
def test_settings_speak_the_users_words(browser, server, outputs):
    ui = Page(browser, server)
    try:
        ui.open_settings()
        # A help line under every control of the three settings boxes, from its row.
        for row in ROWS:
            if row.ui and row.ui.place in ("generation", "output", "memory"):
                box = ui.page.locator(f"#{row.ui.elem_id or 'td-' + row.name}")
                assert row.ui.info[:40] in " ".join(box.inner_text().split()), row.name
        assert "Gaussian splats (PLY)" in ui.page.inner_text("#td-formats")
        # Output settings under sub-headings, Simplify beside Target triangles; both "0: ..." boxes show that 0.
        shown = ui.page.eval_on_selector_all("#td-out-settings :is(.td-subheading:not(.td-subheading *), [id^=td-])",
                                             "els => els.map(e => e.id.startsWith('td-') ? e.id : e.innerText.trim())")
        assert shown == [item for title, lines in OUTPUT_SECTIONS for item in
                         (title, *(f"td-{name}" for line in lines for name in line))], shown
        assert [ui.page.locator(f"#td-{n} input").input_value() for n in ("target_faces", "height")] == ["0", "0"]
        assert range_of(ui, "td-ss_steps") == (4, 50) and range_of(ui, "td-ss_cfg") == (0, 15)

        # The CPU's changes are on the page before Generate, each with its reason.
        note = ui.page.locator("#td-device-note")
        note.wait_for(state="visible")
        assert "Texture size (pixels): 512 instead of 1024 (each doubling" in note.inner_text()
        assert note.locator("li").count() == 5

        # Typed beyond the useful range: the slider widens; the preset says Custom; the note drops what was set.
        type_number(ui, "td-ss_steps", 120)
        ui.page.wait_for_function("() => document.querySelector('#td-ss_steps input[type=range]').max === '120'")
        assert ui.page.locator("#td-ss_steps input[type=range]").input_value() == "120"
        ui.page.wait_for_function("() => document.querySelector('#td-preset input[value=custom]').checked")
        type_number(ui, "td-texture_size", 2048)
        ui.page.wait_for_function("() => document.querySelectorAll('#td-device-note li').length === 4")
        assert "Texture size" not in note.inner_text()
        # Picking a preset again puts its values back and leaves Custom.
        ui.page.locator("#td-preset label", has_text="Fast").click()
        ui.page.wait_for_function("() => document.querySelector('#td-ss_steps input[type=range]').value === '8'")
        assert checked(ui, "td-preset", "fast") and not checked(ui, "td-preset", "custom")
        ui.page.wait_for_function("() => document.querySelectorAll('#td-device-note li').length === 1")
        assert "Bake views: 24 instead of 50" in note.inner_text()

        # The seed trap: typing a seed unticks Randomize, and the job uses that seed.
        randomize = ui.page.locator("#td-randomize input[type=checkbox]")
        assert randomize.is_checked()
        seed_box = ui.page.locator("#td-seed input")
        seed_box.fill("4242")
        ui.page.wait_for_function("() => !document.querySelector('#td-randomize input').checked")
        ui.tiny()
        ui.formats({"glb"})
        ui.page.wait_for_function("() => !document.querySelector('#td-device-note') || "
                                  "document.querySelector('#td-device-note').offsetParent === null")
        ui.upload(os.path.join(EXAMPLES, "chair.png"))
        ui.wait_status(("ready",), timeout=30)
        before = set(job_dirs(outputs))
        ui.generate()
        state, text = ui.wait_finished_after(ui.status(), outputs=outputs, before=before)
        assert state == "done" and "(seed 4242)" in text, text
        (first,) = set(job_dirs(outputs)) - before
        assert json.loads((first / "settings.json").read_text())["seed"] == 4242

        # Randomize again, Generate: a new seed; "Reuse this seed" keeps it and unticks Randomize.
        randomize.check()
        before = set(job_dirs(outputs))
        previous = ui.status()
        ui.generate()
        state, text = ui.wait_finished_after(previous, outputs=outputs, before=before)
        assert state == "done", text
        (second,) = set(job_dirs(outputs)) - before
        seed = json.loads((second / "settings.json").read_text())["seed"]
        assert f"(seed {seed})" in text
        randomize.check()
        seed_box.fill("7")
        ui.page.click("#td-reuse-seed")
        ui.page.wait_for_function(f"() => document.querySelector('#td-seed input').value === '{seed}'")
        assert not randomize.is_checked()
        ui.shot("20-settings-after-reuse-seed.png")
        ui.check_clean()
    finally:
        ui.close()

    def prepare(ui):
        ui.open_settings()
        type_number(ui, "td-ss_steps", 30)
        ui.page.wait_for_function("() => document.querySelector('#td-preset input[value=custom]').checked")
        ui.page.locator("#td-seed input").fill("42")
        ui.page.wait_for_function("() => !document.querySelector('#td-randomize input').checked")
    shots_in_both_themes(browser, server, "21-settings-words", prepare)
    assert all(os.path.isfile(os.path.join(SHOTS, f"21-settings-words-{t}-{w}.png"))
               for t in ("light", "dark") for w in WIDTHS)
    assert FINISHED
