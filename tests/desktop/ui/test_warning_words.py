"""Each warning once, in the page's words (desktop/ui/warning_words.py, status.py, history.py), without a browser: the
CPU's changes named by the labels the page shows beside each control, a repeated warning said once, and a job's
warnings in its status box or under its result, never both."""
import json

from desktop.jobs.folder import JobFolder
from desktop.jobs.job import Job, JobState
from desktop.settings import CPU_REASONS, GenerationSettings, device_change_warning
from desktop.ui.values import LABELS
from desktop.ui.warning_words import page_warning, page_warnings


def lowered_warning() -> str:
    s = GenerationSettings()
    return device_change_warning(s, s.for_device("cpu"))


def test_a_lowered_setting_is_named_by_its_label_as_the_note_above_generate_says_it():
    from desktop.settings import DEFAULT_PRESET
    from desktop.ui.knobs import KNOBS, device_note
    from desktop.ui.values import preset_values

    text = page_warning(lowered_warning())
    for name in CPU_REASONS:
        assert name not in text, (name, text)                # no settings key left
    assert "Texture size (pixels): 512 instead of 1024 (" in text and " -> " not in text
    s, start = GenerationSettings(), preset_values(DEFAULT_PRESET, GenerationSettings())
    note = device_note({n: start.get(n, getattr(s, n)) for n in KNOBS}, DEFAULT_PRESET, s, "cpu")
    assert note
    for name, label in ((n, LABELS[n]) for n in CPU_REASONS if LABELS[n] in text):
        assert label in note, (label, note)                  # the same words in the note and in the job's warning
    other = "The texture bake saw only 0.0% of the surface"
    assert page_warning(other) == other                      # any other warning as it is


def test_a_job_says_each_warning_once_in_its_status_box():
    from desktop.ui.batch_view import status_html

    warning = lowered_warning()
    job = Job(id="j", inputs=["a.png"], settings=GenerationSettings(),
              warnings=[warning, "The texture bake saw only 0.0%", warning])
    job.state = JobState.DONE
    box = status_html([("a.png", job)], runner=None)
    assert box.count("<li>Warning: ") == 2 and box.count("Changed for the CPU") == 1, box
    assert "texture_size" not in box and "Bake views: 24 instead of 50" in box
    assert page_warnings([warning, 3, None, warning]) == [page_warning(warning)]


def test_the_result_line_carries_the_warnings_only_where_the_status_does_not(tmp_path):
    from desktop.ui.history import result_info

    folder = tmp_path / "out" / "20261127-000000-0000abcd"
    folder.mkdir(parents=True)
    (folder / "timings.json").write_text(json.dumps({"total": 1.5, "warnings": [lowered_warning()] * 2}))
    live = result_info(JobFolder(folder))                        # a job of this page: its status box has them
    assert "Changed for the CPU" not in live and "Folder:" in live
    picked = result_info(JobFolder(folder), warnings=True)       # picked in History: the status box has none
    assert picked.count("Changed for the CPU") == 1 and "Texture size" in picked and "texture_size" not in picked
