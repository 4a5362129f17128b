"""Checks of the browser app's page at several widths: axe-core's serious and critical findings and its heading
order (tests/js), and screenshots in the light and the dark theme."""
import os
import time

import pytest

from tests.helpers.gradio_app import Page
from tests.helpers.repo import ROOT_DIR as ROOT

AXE = os.path.join(ROOT, "tests", "js", "node_modules", "axe-core", "axe.min.js")
WIDTHS = (800, 1024, 1400)
# axe-core's findings (contrast, names, roles) follow the page's elements and theme, not the window's width, whose
# layouts the screenshots at every width and the page-reads test's boxes check: one audit per theme, at this width.
AUDIT_WIDTH = 1024
# axe-core's rules failed whatever impact it gives them: heading-order is "moderate", yet a skipped level breaks the
# outline a screen reader's user moves through.
ALSO_FAILED = ("heading-order",)
# Two frames drawn: the resize's layout and what its resize observers changed in it.
SETTLED = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"


def audit(ui) -> list:
    """axe-core's serious and critical violations of the page as it is now, and those of ALSO_FAILED's rules:
    [(rule, [element, ...])]."""
    if not os.path.isfile(AXE):
        pytest.fail("axe-core is not installed: run `npm ci --prefix tests/js` (./run.sh test does this when npm is "
                    "on PATH)")
    if not ui.page.evaluate("() => typeof window.axe !== 'undefined'"):
        ui.page.add_script_tag(path=AXE)
    found = ui.page.evaluate("""async (also) => {
        const result = await axe.run(document, {resultTypes: ['violations']});
        return result.violations.filter(v => ['serious', 'critical'].includes(v.impact) || also.includes(v.id))
                     .map(v => [v.id, v.nodes.map(n => n.target.join(' ') + ': ' + n.failureSummary)]);
    }""", list(ALSO_FAILED))
    return found


def settled_audit(ui, seconds=8.0) -> list:
    """audit() once the page has settled: Generate fades back from its busy look for a moment after a click."""
    deadline = time.time() + seconds
    while True:
        found = audit(ui)
        if not found or time.time() > deadline:
            return found
        time.sleep(0.5)


def shots_in_both_themes(browser, url, name, prepare):
    """`prepare(ui)` on a fresh page, then a full-page screenshot at each of WIDTHS in the light and the dark theme
    (the system colour scheme, which Gradio follows live): test-artifacts/ui/<name>-<theme>-<width>.png."""
    ui = Page(browser, url)
    try:
        prepare(ui)
        for theme in ("light", "dark"):
            ui.page.emulate_media(color_scheme=theme)
            ui.page.wait_for_function("(dark) => document.body.classList.contains('dark') === dark",
                                      arg=theme == "dark")
            for width in WIDTHS:
                ui.page.set_viewport_size({"width": width, "height": 1000})
                ui.page.evaluate(SETTLED)                # the layout settles after a resize
                ui.shot(f"{name}-{theme}-{width}.png")
        ui.check_clean()
    finally:
        ui.close()
