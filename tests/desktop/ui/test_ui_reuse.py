"""History's "Use these settings": a past job's settings.json back in every settings control of the page (the
ones a preset sets and the ones it leaves alone), in the order the real page wires the click's outputs, then
Generate with what it loaded sends those settings again.

The second test runs a fresh Python that appends rows to settings_table.ROWS before the app is imported (as
an edit of that file would): a control a preset leaves alone and one it sets are reloaded with no other
change. This module imports nothing of the app at its top: the child process must patch the rows first.
"""
from pathlib import Path

import pytest

from tests.helpers.children import run_child
from tests.helpers.recorder import Recorder


def off_default(row):
    """A valid value of `row` other than its default (a job's settings.json with every control moved)."""
    if row.kind == "bool":
        return not row.default
    if row.kind == "choice":
        return next(c for c in row.choices if c != row.default)
    if row.kind == "choices":
        return [row.choices[-1]] if tuple(row.default) != (row.choices[-1],) else [row.choices[0]]
    if row.default is None:
        return row.lo
    return row.hi if row.default != row.hi else row.lo


def round_trip(out: Path) -> set:
    """Writes a job folder whose settings move every page control, loads it with the real page's "Use these
    settings", checks each control got its value, then Generates; returns the names of the controls checked."""
    from desktop import ui
    from desktop.jobs.folder import JobFolder
    from desktop.settings import ROWS, GenerationSettings

    shown = [row for row in ROWS if row.ui]
    moved = {row.name: off_default(row) for row in shown if row.name != "randomize_seed"}
    saved = GenerationSettings(preset="custom", randomize_seed=True, **moved)
    folder = JobFolder(out / "20260101-100000-aaaaaaaa")
    folder.path.mkdir(parents=True)
    folder.write_settings({"settings": saved.to_dict()})

    runner = Recorder(out)
    app = ui.TrellisApp(runner)
    try:
        demo = app.build()
        controls = {c.elem_id: c for c in demo.blocks.values() if getattr(c, "elem_id", None)}
        by_name = {row.name: controls[row.ui.elem_id or f"td-{row.name}"] for row in shown}
        reuse = next(f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "reuse_settings")
        answer = app.reuse_settings(folder.name)
        assert len(answer) == len(reuse.outputs)
        # A skipped output (gr.skip(): the preset of "custom" settings, an image job's inputs) keeps its value.
        page = {c: getattr(c, "value", None) if isinstance(v, dict) and v.get("__type__") == "update" else v
                for c, v in zip(reuse.outputs, answer)}
        assert set(by_name.values()) <= set(page), "a settings control that the click does not set"
        expected = {**saved.to_dict(), "randomize_seed": False}       # its seed is the one to use again
        for name, control in by_name.items():
            assert page[control] == expected[name], (name, page[control], expected[name])
        generate = next(f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "on_generate")
        data = {c: page.get(c, getattr(c, "value", None)) for c in generate.inputs}
        data[controls["td-single"]] = "x.png"
        steps = list(app.generate(data, None))
        assert "recorded" in str(steps[0][0]), steps
        (sent,) = runner.submitted
        assert {n: sent.to_dict()[n] for n in by_name} == {n: expected[n] for n in by_name}
    finally:
        app.close()
    return set(by_name)


def test_use_these_settings_reloads_every_control_of_the_page(tmp_path):
    from desktop.settings import ROWS
    from desktop.ui.values import OTHER_KNOBS, PRESET_KNOBS

    checked = round_trip(tmp_path)
    assert checked == set(PRESET_KNOBS) | set(OTHER_KNOBS) == {row.name for row in ROWS if row.ui}
    assert {"seed", "formats", "preprocess", "multi_image_mode", "text_model_size"} <= set(OTHER_KNOBS)


def test_a_bad_folder_skips_every_output(tmp_path):
    from desktop import ui

    app = ui.TrellisApp(Recorder(tmp_path))
    try:
        demo = app.build()
        reuse = next(f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "reuse_settings")
        with pytest.warns(UserWarning, match="Pick a past job first"):
            answer = app.reuse_settings("no-such-folder")
        assert len(answer) == len(reuse.outputs)
        assert all(isinstance(v, dict) and v.get("__type__") == "update" for v in answer), answer
    finally:
        app.close()


def child(out: str) -> None:
    """Runs in the fresh process: a kept control and a preset's control appended, then the round trip."""
    import desktop.settings_table as table

    table.ROWS = (*table.ROWS,
                  table.Setting("dummy_kept", "int", None, "a limit presets leave alone (none: no limit)", lo=10,
                                hi=1000, optional=True, ui=table.Ui("output", "Dummy kept", preset=False)),
                  table.Setting("dummy_preset", "choice", "a", "a choice presets set", choices=("a", "b"),
                                presets={"high": "b"}, ui=table.Ui("generation", "Dummy preset")))
    from desktop.ui.values import OTHER_KNOBS, PRESET_KNOBS

    assert "dummy_kept" in OTHER_KNOBS and "dummy_preset" in PRESET_KNOBS
    assert {"dummy_kept", "dummy_preset"} <= round_trip(Path(out))
    print("the new controls were reloaded")


def test_new_rows_are_reloaded_with_no_other_change(tmp_path):
    proc = run_child(__file__, str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the new controls were reloaded" in proc.stdout


@pytest.mark.parametrize("family, device", [("trellis", "cpu"), ("trellis2", "cpu"), ("trellis2", "cuda")])
def test_use_these_settings_of_a_job_the_device_changed_gives_back_what_was_asked(tmp_path, family, device):
    """A Balanced job that a CPU lowered (bake and preview sizes), or a TRELLIS.2 job whose texture is the family's
    own: its settings.json as the job's step writes it, then "Use these settings" shows Balanced and its values,
    which the knobs' check keeps as Balanced, and the seed the job used."""
    import uuid

    from desktop import ui
    from desktop.jobs.folder import JobFolder
    from desktop.jobs.job import Job
    from desktop.jobs.steps import for_device, settings_record
    from desktop.jobs.trellis2_steps import for_trellis2_device, trellis2_record
    from desktop.settings import GenerationSettings
    from desktop.ui.history import RELOADED_KNOBS
    from desktop.ui.knobs import preset_of
    from desktop.ui.values import preset_values, settings_from_values

    defaults = GenerationSettings()
    shown = {**{n: getattr(defaults, n) for n in RELOADED_KNOBS}, **preset_values("balanced", defaults)}
    asked = settings_from_values(shown, "balanced", defaults)            # what the page's Generate sends
    assert asked.preset == "balanced"
    job = Job(id=uuid.uuid4().hex, inputs=["chair.png"], settings=asked, family=family)
    if family == "trellis":
        used = for_device(job, asked.with_seed(), device)
        record = settings_record(job, used, "m", device)
    else:
        used = for_trellis2_device(job, asked.with_seed(), device)
        record = trellis2_record(job, used, "m", device)
    assert used.to_dict() != {**asked.to_dict(), "seed": used.seed, "randomize_seed": False}, "nothing was changed"
    folder = JobFolder(tmp_path / "20260101-100000-aaaaaaaa")
    folder.path.mkdir(parents=True)
    folder.write_settings(record)

    app = ui.TrellisApp(Recorder(tmp_path))
    try:
        answer = app.reuse_settings(folder.name)
    finally:
        app.close()
    preset, values = answer[0], dict(zip(RELOADED_KNOBS, answer[1:1 + len(RELOADED_KNOBS)]))
    assert preset == "balanced", preset
    assert preset_of(values, preset, defaults) == "balanced"
    assert {n: values[n] for n in shown if n != "seed"} == \
        {n: v for n, v in {**asked.to_dict(), "randomize_seed": False}.items() if n in shown and n != "seed"}
    assert values["seed"] == used.seed == record["seed"] and values["randomize_seed"] is False


def test_use_these_settings_puts_back_what_changed_for_device_names(tmp_path):
    """settings.json's changed_for_device ([asked, used] per setting) gives back the values asked for; an entry
    this version does not know is left out, not the whole record."""
    from desktop import ui
    from desktop.jobs.folder import JobFolder
    from desktop.settings import GenerationSettings
    from desktop.ui.history import RELOADED_KNOBS

    used = GenerationSettings(preset="balanced", seed=7, randomize_seed=False, bake_resolution=512,
                              video_resolution=384)
    folder = JobFolder(tmp_path / "20250101-100000-bbbbbbbb")
    folder.path.mkdir(parents=True)
    folder.write_settings({"job_id": "b" * 32, "kind": "image", "seed": 7, "device": "cpu",
                           "settings": used.to_dict(),
                           "changed_for_device": {"bake_resolution": [1024, 512], "video_resolution": [512, 384],
                                                  "a_later_setting": [2, 1]}})
    app = ui.TrellisApp(Recorder(tmp_path))
    try:
        answer = app.reuse_settings(folder.name)
    finally:
        app.close()
    values = dict(zip(RELOADED_KNOBS, answer[1:1 + len(RELOADED_KNOBS)]))
    assert answer[0] == "balanced"
    assert (values["bake_resolution"], values["video_resolution"], values["seed"]) == (1024, 512, 7)


def test_a_trellis2_low_vram_job_reloads_as_low_vram_and_reruns_as_asked(tmp_path, tiny_trellis2_dir):
    """TRELLIS.2 raises the Low VRAM preset's budget to its pipeline type's floor at submit (families.budget_floor):
    the real job's settings.json keeps what was asked (changed_for_family), so "Use these settings" shows Low VRAM
    with its own budget, and a job made again from the folder (recovery: a rerun) is asked the same."""
    from desktop import ui
    from desktop.jobs import JobRunner, JobState
    from desktop.jobs.folder import JobFolder
    from desktop.jobs.recovery import job_from_folder
    from desktop.settings import GenerationSettings, preset_value
    from desktop.ui.history import RELOADED_KNOBS
    from desktop.ui.knobs import preset_of

    asked = GenerationSettings.from_preset("low-vram", formats=["glb"])
    runner = JobRunner(tiny_trellis2_dir, tmp_path / "out", device="cpu")
    try:
        job = runner.submit([str(Path(__file__).parents[3] / "assets" / "examples" / "chair.png")], asked,
                            family="trellis2")
        assert job.settings.vram_budget > asked.vram_budget == preset_value("low-vram", "vram_budget")
        job.wait()
        assert job.state == JobState.DONE, job.error
        folder = JobFolder(Path(job.out_dir))
        record = folder.settings_record()
        assert record["changed_for_family"] == {"vram_budget": [asked.vram_budget, job.settings.vram_budget]}
        app = ui.TrellisApp(runner)
        try:
            answer = app.reuse_settings(folder.name)
        finally:
            app.close()
    finally:
        runner.shutdown(cancel=True, wait=True, timeout=30)
    values = dict(zip(RELOADED_KNOBS, answer[1:1 + len(RELOADED_KNOBS)]))
    assert answer[0] == "low-vram" and values["vram_budget"] == asked.vram_budget, (answer[0], values["vram_budget"])
    assert preset_of(values, "low-vram", GenerationSettings()) == "low-vram"
    assert job_from_folder(folder.path).settings.vram_budget == asked.vram_budget
