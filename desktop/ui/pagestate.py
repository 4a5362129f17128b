"""Page state that does what it says: the result column follows the tab (each tab of a page shows the last result
made from it, or an empty column; a result that arrives while another tab is open waits for its own tab), and
Generate / Cancel show whether this page has a job running."""
import json
import threading
from pathlib import Path

from ..jobs import folder as job_folder
from .download_row import CHOICE_LABEL
from .lazy import gr


# The result column's labels, and their words while a new job runs and the result shown is the previous job's.
LABELS = {"video": "Preview", "model": "3D model (drag to turn, scroll to zoom)", "choice": CHOICE_LABEL}
PREVIOUS = " (the previous job's: the new job's replaces it)"
PREVIOUS_INFO = "**Shown: the previous job's result**, until the new job's replaces it. "


def marked_previous(info_text) -> tuple:
    """(info, video, 3D model, file choice, download button) saying that the result shown is the previous job's, as
    a new job starts; skips where no result is shown."""
    skip = gr.skip()
    if not info_text or str(info_text).startswith(PREVIOUS_INFO):
        return skip, skip, skip, skip, skip
    return (PREVIOUS_INFO + str(info_text), gr.update(label=LABELS["video"] + PREVIOUS),
            gr.update(label=LABELS["model"] + PREVIOUS), gr.update(label=LABELS["choice"] + PREVIOUS),
            gr.update(label="Download the previous job's file"))


def buttons(running: bool) -> tuple:
    """(Generate, Cancel) while this page's jobs run (Generate says so and takes no second click that would be
    lost; Cancel can be pressed) or not (Cancel has nothing to cancel)."""
    if running:
        return gr.update(value="Generating…", interactive=False), gr.update(value="Cancel", interactive=True)
    return gr.update(value="Generate", interactive=True), gr.update(value="Cancel", interactive=False)


# While the page is busy it asks the server something every NUDGE_S seconds. Gradio's client can lose a job's answer:
# the server ends the page's message stream once none of its events is pending, and when the page's next event (the
# job, sent as the busy update ends) is answered before the page has read that end, the client counts the stream as
# open, opens no new one, and the job's messages wait on the server (tests/desktop/ui/test_ui_busy_stream.py). Each
# nudge is an event of its own: sent while the stream is closed, it opens a new one, which brings them.
NUDGE_S = 2


def wire_busy(generate, cancel, buttons_that_start):
    """Each of `buttons_that_start` makes the page busy when clicked and starts the nudge (a gr.Timer, returned for
    wire_idle). Call it before their jobs' own listeners: Gradio drops an update of a button from a listener
    registered after another of its clicks."""
    nudge = gr.Timer(NUDGE_S, active=False)
    # "multiple": a nudge whose own answer waits does not hold back the next one
    nudge.tick(lambda: None, None, None, api_visibility="private", show_progress="hidden", concurrency_limit=None,
               trigger_mode="multiple")
    for button in buttons_that_start:
        button.click(lambda: (*buttons(True), gr.update(active=True)), None, [generate, cancel, nudge],
                     api_visibility="private", show_progress="hidden", concurrency_limit=None)
    return nudge


def wire_idle(generate, cancel, job_events, nudge) -> None:
    """The page is idle again (and stops its nudge) when each of `job_events` ends."""
    for event in job_events:
        event.then(lambda: (*buttons(False), gr.update(active=False)), None, [generate, cancel, nudge],
                   api_visibility="private", show_progress="hidden", concurrency_limit=None)


def wire_tabs(app, tabs, mode, column) -> None:
    """`tabs`: [(tab, its mode)]: selecting one sets the mode in the page itself (no round trip that a Generate
    pressed at once could overtake) and shows the tab's last result in `column`."""
    def handler(name):
        def on_tab(request: gr.Request):
            return app.select_tab(name, getattr(request, "session_hash", None))
        return on_tab
    for tab, name in tabs:
        tab.select(None, None, mode, js=f"() => {json.dumps(name)}", api_visibility="private", show_progress="hidden")
        tab.select(handler(name), None, column, api_visibility="private", show_progress="hidden",
                   concurrency_limit=None)


class TabResults:
    """TrellisApp's memory of what each tab of each page shows (a mixin: uses self._results, self._empty_results)."""

    def _tab_memory(self) -> tuple:
        # (session -> open tab, (session, tab) -> (job folder, name)), made on first use
        if "_tabs_open" not in self.__dict__:
            self._tabs_open, self._tabs_shown, self._tabs_lock = {}, {}, threading.Lock()
        return self._tabs_open, self._tabs_shown

    def remember_result(self, session, mode: str, out_dir, name=None) -> bool:
        """Keeps `out_dir` as the result of `mode`'s tab of this page; whether that tab is the one open now (an
        export belongs to the tab it was started from)."""
        opened, shown = self._tab_memory()
        with self._tabs_lock:
            tab = opened.get(session, "single") if mode == "export" else mode
            shown[(session, tab)] = (str(out_dir), name)
            return opened.get(session, "single") == tab

    def select_tab(self, mode: str, session) -> tuple:
        """(info, video, model, file choice, download button, files) of the last result of `mode`'s tab, or an
        empty column."""
        opened, shown = self._tab_memory()
        with self._tabs_lock:
            opened[session] = mode
            kept = shown.get((session, mode))
        if kept and Path(kept[0]).is_dir():
            return self._results(job_folder.JobFolder(kept[0]), kept[1])
        return ("", *self._empty_results())
