"""The status line of a running job in users' words: a family's own stages ("shape_slat", "tex_slat") in the words
its registry entry declares, one step counter over a cascade's passes (the tracker's, desktop.jobs.progress), and a
stage whose words end in brackets not followed by a second pair; a job's dict (REST, the CLI) says the same words."""
import threading

from desktop.families import FAMILIES
from desktop.jobs.job import Job, JobState, Progress
from desktop.jobs.progress import ProgressTracker
from desktop.settings import GenerationSettings
from desktop.ui.status import job_line


def running(progress) -> Job:
    return Job(id="j", inputs=[], settings=GenerationSettings(), state=JobState.RUNNING, progress=progress)


def test_a_cascade_reads_in_users_words_with_one_counter():
    settings = GenerationSettings(seed=1, pipeline_type="1024_cascade")
    job = Job(id="j", inputs=[], settings=settings, used_settings=settings, state=JobState.RUNNING)
    tracker = ProgressTracker(job, ["sparse_structure", "shape_slat", "tex_slat", "decode"], threading.Lock())
    tracker("sparse_structure", 12, 12)
    lines = []
    for _ in range(2):
        for i in range(12):
            tracker("shape_slat", i + 1, 12)
            lines.append(job_line(job, runner=None)[1])
    words = {f.stage_word("shape_slat") for f in FAMILIES.values()} - {None}
    assert words and all(line.startswith(tuple(words)) for line in lines), lines
    assert "step 13/24" in lines[12] and "step 24/24" in lines[-1] and "shape_slat" not in " ".join(lines)
    assert job.to_dict()["progress"]["label"] in words                # REST and the CLI read the same words
    tracker("tex_slat", 1, 12)
    assert "_" not in job_line(job, runner=None)[1].split(" · ")[0]


def test_a_detail_after_words_in_brackets_gets_no_second_pair():
    state, text = job_line(running(Progress("load", 0, 1, 0.1, None, 1.0, "loading TRELLIS.2 …")), runner=None)
    assert state == "running" and ") (" not in text and "loading TRELLIS.2" in text, text
    _, text = job_line(running(Progress("bake", 1, 4, 0.5, 10.0, 1.0, "uv_unwrap")), runner=None)
    assert text.startswith("Baking texture (unfolding the surface)"), text
