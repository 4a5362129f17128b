"""The browser tests' shared fixtures: headless Chromium, and the app on the tiny pipeline (CPU) with pages on it.
A module on the text pipeline asks for `text_server`; one that needs another app of its own (offline, with a stand-in
file manager) defines its own `outputs` and `server`, and `app` then opens pages on that one."""
import pytest

from tests.helpers.gradio_app import Page, headless_chromium, running_app, running_text_app


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


@pytest.fixture(scope="module")
def text_server(tiny_text_models_dir, outputs, tmp_path_factory):
    """The app on the tiny text pipeline (`--text-model`) beside the tiny image pipeline; yields its URL."""
    with running_text_app(tiny_text_models_dir, outputs, tmp_path_factory) as url:
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
