"""The browser tests' shared fixtures: headless Chromium, and the app on the tiny pipeline (CPU) with pages on it.
A test module that needs its own app (offline, on the text pipeline, with a stand-in file manager) defines its own
`outputs` and `server`; `app` then opens pages on that one."""
import pytest

from tests.helpers.gradio_app import Page, headless_chromium, running_app


@pytest.fixture(scope="module")
def browser():
    with headless_chromium() as b:
        yield b


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return tmp_path_factory.mktemp("ui_outputs")


@pytest.fixture(scope="module")
def server(tiny_pipeline_dir, outputs, tmp_path_factory):
    """`python gradio_main.py` on a free port; yields its URL."""
    with running_app(tiny_pipeline_dir, outputs, tmp_path_factory) as url:
        yield url


@pytest.fixture
def app(browser, server):
    """open_page(): a new Page on the module's server, closed after the test."""
    pages = []

    def open_page():
        pages.append(Page(browser, server))
        return pages[-1]
    yield open_page
    for p in pages:
        p.close()
