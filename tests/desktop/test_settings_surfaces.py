"""One range per setting on every surface: settings written by any surface (CLI, REST API, the UI's page,
StableProjectorz) load back into every other one, the UI's sliders included."""
import re
from types import SimpleNamespace

from desktop import cli
from desktop.api import common as api_common, spz as api_spz
from desktop.jobs.folder import JobFolder
from desktop.ui.history import RELOADED_KNOBS
from desktop.settings import ROWS, RULES, STEPS, GenerationSettings, number_range, slider as slider_range
from desktop.ui.knobs import widened

NUMBERS = [name for name, rule in RULES.items() if rule[0] in ("int", "float") and name != "seed"]


def extreme_settings(end: int) -> GenerationSettings:
    """Every numeric setting at the low (end=0) or high (end=1) end of its range."""
    return GenerationSettings(preset="custom", **{n: number_range(n)[end] for n in NUMBERS})


def test_the_cli_accepts_each_whole_range(tmp_path):
    parser = cli.build_parser()
    args = parser.parse_args(["x.png", "-o", str(tmp_path), "--texture-size", "8192", "--steps", "500"])
    s = cli.settings_from_args(args)
    assert (s.texture_size, s.ss_steps, s.slat_steps) == (number_range("texture_size")[1], 500, 500)
    args = parser.parse_args(["x.png", "-o", str(tmp_path), "--texture-size", str(number_range("texture_size")[1] + 1)])
    try:
        cli.settings_from_args(args)
    except ValueError as err:
        assert "texture_size" in str(err) and "out of range" in str(err)
    else:
        raise AssertionError("a texture size past the range was accepted")


def test_the_rest_schema_and_the_stable_projectorz_panel_use_the_rules():
    fields = api_common.parameter_fields()
    for name in NUMBERS:
        limits = {m.__class__.__name__: m for m in fields[name][1].metadata}
        assert (limits["Ge"].ge, limits["Le"].le) == number_range(name), name
    lines = api_spz.panel_layout(GenerationSettings()).splitlines()
    rows = {p["code_name"]: p for p in (dict(re.findall(r"(\S+?)=\(([^()]*)\)", line)) for line in lines)
            if "code_name" in p}
    for spz, ours in [("ss_strength", "ss_cfg"), ("ss_steps", "ss_steps"), ("slat_strength", "slat_cfg"),
                      ("slat_steps", "slat_steps"), ("texture_size", "texture_size"), ("mesh_simplify", "simplify")]:
        assert (float(rows[spz]["min"]), float(rows[spz]["max"])) == number_range(ours), spz


def test_settings_from_any_surface_load_into_the_page_sliders(tmp_path):
    from desktop import ui

    runner = SimpleNamespace(outputs_dir=tmp_path, list=lambda: [], model_path="m",
                             fast_paths=lambda: {"cpu": "CPU"})
    app = ui.TrellisApp(runner)
    try:
        demo = app.build()
        sliders = {c.elem_id[3:]: c for c in demo.blocks.values()
                   if type(c).__name__ == "Slider" and (c.elem_id or "").startswith("td-")}
        # Every setting with a page control and a step is a slider (video_fps has a step but no control).
        assert set(sliders) == {row.name for row in ROWS if row.ui and row.step is not None} <= set(STEPS)
        for name, slider in sliders.items():
            assert (slider.minimum, slider.maximum) == slider_range(name)[:2], name    # the useful range
            lo, hi = number_range(name)
            assert lo <= slider.minimum <= slider.maximum <= hi, name
        for end in (0, 1):
            # A job folder written by the CLI or the API (settings.json), loaded with "Use these settings".
            folder = JobFolder(tmp_path / f"20260101-10000{end}-aaaaaaa{end}")
            folder.path.mkdir()
            folder.write_settings({"settings": extreme_settings(end).to_dict()})
            values = dict(zip(RELOADED_KNOBS, app.reuse_settings(folder.name)[1:]))
            for name, slider in sliders.items():
                # Inside the useful range, or the slider is widened to hold it (knobs.widened) as the page does.
                wide = widened(name, values[name]) or {"minimum": slider.minimum, "maximum": slider.maximum}
                assert wide["minimum"] <= values[name] <= wide["maximum"], (name, values[name])
            # ... and what the page then sends is valid settings again.
            page = {**{k: values[k] for k in ui.PRESET_KNOBS}, **{n: values[n] for n in sliders}, "seed": 1,
                    "randomize_seed": False,
                    "formats": ["glb"], "preprocess": True, "multi_image_mode": "stochastic"}
            s = ui.settings_from_values(page, "custom", GenerationSettings())
            assert {n: getattr(s, n) for n in sliders} == {n: values[n] for n in sliders}
    finally:
        app.close()


def test_the_cli_and_the_rest_api_give_the_same_settings_for_the_same_values(tmp_path):
    """Both start from a preset and lay the given values on it (settings.with_given): a seed given means that seed,
    and what was given counts as the user's (a CPU keeps it)."""
    from desktop.settings import with_given

    args = cli.build_parser().parse_args(["x.png", "-o", str(tmp_path), "--preset", "fast", "--seed", "7",
                                          "--texture-size", "512", "--formats", "glb,obj"])
    from_cli = cli.settings_from_args(args)
    from_api = api_common.build_settings({"preset": "fast", "seed": 7, "texture_size": 512,
                                          "formats": ["glb", "obj"]}, api_common.ServerDefaults())
    assert from_cli == from_api
    assert from_cli.explicit == from_api.explicit == {"seed", "randomize_seed", "texture_size", "formats"}
    assert (from_cli.seed, from_cli.randomize_seed) == (7, False)
    chosen = with_given(GenerationSettings(), {"seed": 3, "randomize_seed": True})      # stated: kept
    assert (chosen.seed, chosen.randomize_seed, chosen.explicit) == (3, True, {"seed", "randomize_seed"})
    assert with_given(GenerationSettings(), {}) == GenerationSettings()
