"""What a job's settings mean for the family that runs it, without running a job (desktop/families check, the rule
JobRunner.submit applies): a TRELLIS v1 job warns of an ignored TRELLIS.2 pipeline type only where it differs from
what its preset sets; a TRELLIS.2 job's VRAM budget from a preset is raised to its pipeline type's floor, and one the
user set below it is kept with a warning, as the runner queues it (its settings are what the worker holds the job
to)."""
import dataclasses

import pytest

from desktop.families import FAMILIES, check
from desktop.jobs import JobRunner
from desktop.settings import PRESETS, GenerationSettings
from desktop.settings_table import PIPELINE_TYPES
from tests.helpers.images import rgba_blob

TRELLIS2_VRAM_FLOORS = FAMILIES["trellis2"].vram_floors


def v1_warnings(settings: GenerationSettings) -> list:
    return check(FAMILIES["trellis"], settings)[1]


def check_trellis2_settings(settings: GenerationSettings, images: int = 1) -> tuple:
    used, warnings = check(FAMILIES["trellis2"], settings, images)
    assert len(warnings) <= 1, warnings
    return used, (warnings[0] if warnings else None)


def test_a_v1_job_warns_of_a_pipeline_type_only_where_its_preset_does_not_set_it():
    for preset in PRESETS:                                  # fast and high set 512 and 1536_cascade: no warning
        assert v1_warnings(GenerationSettings.from_preset(preset)) == [], preset
    # "custom": the default, or a preset's value the user did not set (the page moved off fast by another control)
    assert v1_warnings(GenerationSettings(preset="custom")) == []
    assert v1_warnings(GenerationSettings(preset="custom", pipeline_type="512", explicit={"ss_steps"})) == []
    for settings in (GenerationSettings.from_preset("fast", pipeline_type="1536_cascade"),
                     GenerationSettings.from_preset("balanced", pipeline_type="512"),
                     GenerationSettings(preset="custom", pipeline_type="512", explicit={"pipeline_type"}),
                     GenerationSettings(preset="custom", pipeline_type="1024")):
        (text,) = v1_warnings(settings)
        assert text.startswith(f"pipeline_type {settings.pipeline_type} is not used by TRELLIS v1: "), text


def test_a_trellis2_job_on_the_low_vram_preset_gets_its_pipeline_types_floor():
    assert set(TRELLIS2_VRAM_FLOORS) == set(PIPELINE_TYPES)
    assert TRELLIS2_VRAM_FLOORS["1024_cascade"] == 6.0 and TRELLIS2_VRAM_FLOORS["1536_cascade"] == 8.0
    for kind in PIPELINE_TYPES:
        floor = TRELLIS2_VRAM_FLOORS[kind]
        low = dataclasses.replace(GenerationSettings.from_preset("low-vram"), pipeline_type=kind)   # budget unset
        used, warning = check_trellis2_settings(low)
        assert used.vram_budget == floor and used.precision == "fp16" and used.offload == "model", kind
        assert f"vram_budget 2.5 -> {floor:g} GiB" in warning and "low-vram preset" in warning, warning
    # "custom" settings whose budget is still a preset's (a page that moved another control): raised the same way
    custom = GenerationSettings(preset="custom", vram_budget=2.5, formats=("glb",))
    assert check_trellis2_settings(custom)[0].vram_budget == 6.0
    # A budget the user set stays, below the floor with a warning; at or above it, and none, say nothing.
    mine = GenerationSettings.from_preset("low-vram", vram_budget=2.5)
    used, warning = check_trellis2_settings(mine)
    assert used.vram_budget == 2.5 and "will likely run out of GPU memory" in warning, warning
    mine = GenerationSettings.from_preset("high", vram_budget=7.0)            # 1536_cascade: 8 GiB
    used, warning = check_trellis2_settings(mine)
    assert used.vram_budget == 7.0 and "8 GiB" in warning and "or pick pipeline type 1024_cascade" in warning, warning
    for settings in (GenerationSettings.from_preset("balanced"), GenerationSettings.from_preset("high", vram_budget=8)):
        assert check_trellis2_settings(settings) == (settings, None)
    with pytest.raises(ValueError, match="takes one image"):
        check_trellis2_settings(GenerationSettings.from_preset("low-vram"), images=2)


def test_the_runner_queues_a_low_vram_trellis2_job_with_the_floor_and_says_so(tiny_trellis2_dir, tmp_path):
    runner = JobRunner(tiny_trellis2_dir, tmp_path / "out", device="cpu")
    try:
        job = runner.submit(rgba_blob(tmp_path / "in.png"), GenerationSettings.from_preset("low-vram"))
        # the budget the worker holds the job to (budget.job_memory reads job.settings), and the job's warning
        assert job.settings.vram_budget == 6.0 and job.family == "trellis2"
        assert any("vram_budget 2.5 -> 6 GiB" in w for w in job.warnings), job.warnings
    finally:
        runner.shutdown(cancel=True, wait=True, timeout=60)
