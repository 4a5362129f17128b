"""The scroll to feedback on a phone-sized window (390 x 844, the columns stacked, the status box below every
setting): after a user's action the page moves the least that brings the status box into view, never past it, and
a History pick brings the box to the window's top with the result (preview, 3D view) under it. A real server over
an outputs folder with one finished job, in Debian's headless Chromium (look.py's script)."""
import numpy as np
import pytest
import trimesh

from tests.helpers.gradio_app import ROUND_TRIP_MS, Page
from tests.helpers.page_jobs import app_in_process, finished_job
from trellis.export.assemble import glb_bytes
from trellis.export.formats.gltf import glb_mesh

PHONE = {"width": 390, "height": 844}
JOB = "20260101-100000-5c0110aa"
SLACK = 2                    # px: a box's edges are fractional, the scroll is whole pixels
BOX = "() => { const b = document.querySelector('#td-status [data-state]').getBoundingClientRect();" \
      " return {top: b.top, bottom: b.bottom, y: window.scrollY}; }"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("feedback_scroll_outputs")
    sphere = trimesh.creation.icosphere(subdivisions=2)
    uv = np.zeros((len(sphere.vertices), 2))
    finished_job(out, JOB, glb_bytes(glb_mesh(sphere.vertices, sphere.faces, uv, np.full((4, 4, 3), 180, np.uint8))))
    return out


@pytest.fixture(scope="module")
def served(tiny_pipeline_dir, outputs):
    with app_in_process(tiny_pipeline_dir, outputs) as url:
        yield url


@pytest.fixture
def phone(browser, served):
    ui = Page(browser, served)
    ui.page.set_viewport_size(PHONE)
    yield ui
    ui.close()


def settled(ui) -> dict:
    """The status box's place once the page stopped moving (two frames alike)."""
    before = None
    for _ in range(50):
        now = ui.page.evaluate(f"() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame("
                               f"() => done(({BOX})()))))")
        if now == before:
            return now
        before = now
    raise AssertionError(f"the page kept moving: {now}")


def test_a_bad_drop_scrolls_the_least_that_shows_the_error(phone, tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_text("this is not an image")
    assert phone.page.evaluate("() => window.scrollY") == 0
    phone.upload(str(fake))
    phone.page.wait_for_function("() => document.querySelector('#td-status [data-state=error] .td-headline')",
                                 timeout=ROUND_TRIP_MS)
    box = settled(phone)
    # moved (the status sits below every setting), the whole box in view at the window's bottom edge: not past it
    assert box["y"] > 0 and 0 <= box["top"] and abs(box["bottom"] - PHONE["height"]) <= SLACK, box
    phone.shot("feedback-scroll-bad-drop-390.png")


def test_a_history_pick_brings_the_status_and_the_result_under_it_into_view(phone):
    phone.page.get_by_role("tab", name="History").click()
    phone.page.locator("#td-history-gallery button.thumbnail-item").first.click()
    phone.page.wait_for_function("() => document.querySelector('#td-status [data-state=history]')",
                                 timeout=ROUND_TRIP_MS)
    box = settled(phone)
    assert abs(box["top"]) <= SLACK, box                 # the box at the window's top, none of it above
    model = phone.page.locator("#td-model3d").bounding_box()
    assert model and box["bottom"] <= model["y"] < PHONE["height"], (box, model)      # the result starts in view
    phone.shot("feedback-scroll-history-pick-390.png")
