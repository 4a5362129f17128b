"""The History tab: past jobs as thumbnails at its top (history_list.py), newest first, a click shows one in the
result column; the search box under them (the `history` dropdown, which also names the picked job for Use these
settings and Export again) finds any job by name."""
from .history_list import MEMORY_KEY, entries
from .lazy import gr
from .status import hide_paths, job_line, message_html

EMPTY = "No jobs yet: what you generate is listed here, newest first, with its preset, seed and state."


class HistoryTab:
    """TrellisApp's History tab (a mixin: uses self.runner, self._tmp, self.show_history, self._empty_results and,
    when present, self.remember_result)."""

    def history_items(self) -> tuple:
        """(gallery value, keys in the gallery's order, the note shown when the list is empty)."""
        found = entries(self.runner.outputs_dir, list(self.runner.list()), self._tmp / "thumbs", self._ended_why)
        gallery = [(e.thumb, e.caption) for e in found]
        return gallery, [e.key for e in found], gr.update(visible=not found)

    def _ended_why(self, job) -> str:
        return hide_paths(job_line(job, self.runner, warnings=False)[1], job.inputs)

    def pick_history(self, keys, evt, session=None) -> tuple:
        """(the search box's value, status, info, video, model, file choice, download button, files, the Model
        choice) for the picked thumbnail."""
        index = getattr(evt, "index", None)
        if isinstance(index, (list, tuple)):
            index = index[0]
        key = keys[index] if isinstance(index, int) and 0 <= index < len(keys or []) else None
        if key is None:
            return (gr.skip(), message_html("error", "That job is no longer listed; open the History tab again."),
                    "", *self._empty_results(), gr.skip())
        if key.startswith(MEMORY_KEY):
            job = self.runner.get(key[len(MEMORY_KEY):])
            if job is None:
                return (None, message_html("error", "That job is gone (the app was restarted)."), "",
                        *self._empty_results(), gr.skip())
            state, text = job_line(job, self.runner, warnings=False)
            what = "This job ended before it wrote anything"
            return (None, message_html(state, f"{what}: {hide_paths(text, job.inputs)}"), "", *self._empty_results(),
                    gr.skip())
        shown = self.show_picked(key)
        remember = getattr(self, "remember_result", None)
        folder = self._job_folder(key)
        if remember is not None and folder is not None:          # the result column then follows the tab
            remember(session, "history", folder.path)
        return (key, *shown)


def wire_history_tab(app, demo, tab, gallery, keys, empty_note, history, refresh, shown, ends, family) -> None:
    """Fills the thumbnails on page load, when the tab is opened, on Refresh and after each job (`ends`: the events
    of Generate and Export again); a click shows that job in `shown` (status, info, video, model, buttons, files)
    and sets the Model choice (`family`) to the family that made it."""
    quick = dict(api_visibility="private", show_progress="hidden", concurrency_limit=None)

    def fill():
        gallery_value, key_list, note = app.history_items()
        return gallery_value, key_list, note, gr.update(choices=app._history_choices())
    targets = [gallery, keys, empty_note, history]
    for event in (demo.load, tab.select, refresh.click, *[e.then for e in ends]):
        event(fill, None, targets, **quick)

    def on_search(name, request: gr.Request):
        folder = app._job_folder(name)
        remember = getattr(app, "remember_result", None)
        if folder is not None and remember is not None:       # the result column then follows the tab
            remember(getattr(request, "session_hash", None), "history", folder.path)
    history.input(on_search, history, None, **quick)

    def on_pick(key_list, evt: gr.SelectData, request: gr.Request):
        return app.pick_history(key_list, evt, getattr(request, "session_hash", None))
    gallery.select(on_pick, keys, [history, *shown, family], api_visibility="private", show_progress="minimal",
                   concurrency_limit=4)
