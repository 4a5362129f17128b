"""The pipeline type's line of the page (desktop/ui/pipeline_costs.py): a type this machine ran shows its last job's
own time and peak memory; the others show the figures measured on the benchmark GPU, named as such, with the peak
that the app's own memory choice gives on this GPU's size; a CPU is told plainly that TRELLIS.2 is very slow there."""
from desktop.jobs.job import Job
from desktop.settings import GenerationSettings
from desktop.ui.pipeline_costs import CPU_WORDS, MEASURED, MEASURED_ON, costs_text, last_jobs, measured_words

GiB = 2 ** 30


def finished(kind: str, total: float, when: float, stages=("condition", "shape_slat", "tex_slat", "decode_shape"),
             peak_gib=None) -> Job:
    """A done job as the runner lists one from an earlier run (its timings.json read back; no family named)."""
    job = Job(id=f"{kind}-{when}", inputs=[], settings=GenerationSettings(pipeline_type=kind), state="done",
              finished=when)
    job.timings = {"total": total + 40.0, "ready": 40.0, "pipeline": {"seconds": total / 2, "stages": [{"stage": s, "seconds": 0.1}
                                                                                for s in stages]},
                   "memory": {"vram_budget_gib": 6.0 if peak_gib else None,
                              "peak_reserved_bytes": peak_gib * GiB if peak_gib else None}}
    return job


def test_a_type_run_here_shows_its_last_job_and_the_others_the_measured_figures():
    v1 = finished("1024_cascade", 99.0, 5.0, stages=("sparse_structure", "slat", "decode"))   # TRELLIS v1's
    jobs = [finished("512", 30.0, 1.0), finished("512", 14.0, 2.0, peak_gib=3.25), v1,
            Job(id="queued", inputs=[], settings=GenerationSettings(pipeline_type="1536_cascade"))]
    assert set(last_jobs(jobs)) == {"512"}
    text = costs_text(jobs, "cpu", resident_budget_gib=24.0)
    lines = dict(line[2:].split(": ", 1) for line in text.splitlines() if line.startswith("- "))
    # each type in the words of the pipeline type's choice beside it
    assert list(lines) == ["512 (fastest)", "1024 (one pass)", "1024 cascade (default)", "1536 cascade (finest, slowest)"]
    assert lines["512 (fastest)"] == ("14 s the whole job (7 s sampling), peak 3.2 GiB (budget 6 GiB): your last job "
                                      "of this type")
    assert lines["1024 (one pass)"] == "not measured yet"
    assert f"about {MEASURED['1536_cascade'].chain_s:g} s sampling on {MEASURED_ON}" in lines[
        "1536 cascade (finest, slowest)"]
    # a type measured here says its own time: no estimate of "an hour or more" above it
    assert "99 s" not in text and CPU_WORDS not in text and "the CPU" in text.splitlines()[0]
    assert CPU_WORDS in costs_text([v1], "cpu", resident_budget_gib=24.0)


def test_the_measured_peak_is_the_one_the_apps_memory_choice_gives_on_this_gpu():
    figures = MEASURED["1024_cascade"]
    big = measured_words("1024_cascade", ("H100", 79.6), 24.0)
    assert f"peak about {figures.resident_gib:g} GiB (every network resident)" in big
    small = measured_words("1024_cascade", ("RTX 4070", 12.0), 24.0)
    assert f"peak about {figures.offloaded_gib:g} GiB" in small and "slower" in small
    tiny = measured_words("1024_cascade", ("GT 1030", 2.0), 24.0)
    assert f"needs about {figures.offloaded_gib:g} GiB" in tiny and "this GPU's 2 GiB" in tiny
