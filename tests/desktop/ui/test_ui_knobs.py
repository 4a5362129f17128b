"""The settings in the user's words and what the Text / New look tabs say before Generate, in process (no browser):
a help line per control and useful slider ranges from the rows, the preset's Custom state, sliders that widen for a
typed value, the CPU's changes said before Generate, the prompt's token count with the text model's own tokenizer
(offline, tiny text pipeline) or an estimate, the text sizes' downloads and default, the dropped model's triangles."""
import os
import re

import pytest

from desktop.settings import SETTINGS, GenerationSettings, check_rows, slider
from desktop.settings_table import ROWS, Setting, Ui
from desktop.ui.expectations import PROMPT_TOKENS, MeshPreview, PromptTokens, text_size_control
from desktop.ui.knobs import KNOBS, device_note, preset_of, widened
from desktop.ui.values import preset_values


def test_every_control_has_a_help_line_and_sliders_a_useful_range():
    assert [r.name for r in ROWS if r.ui and not r.ui.info] == []
    assert slider("ss_steps")[:2] == slider("slat_steps")[:2] == (4, 50)
    assert slider("ss_cfg")[:2] == slider("slat_cfg")[:2] == (0.0, 15.0)
    assert slider("video_frames")[:2] == (24, 240) and slider("bake_views")[:2] == (8, 200)
    # The whole range stays what the settings accept (CLI, REST, settings.json).
    assert (SETTINGS["ss_steps"].lo, SETTINGS["ss_steps"].hi, SETTINGS["ss_cfg"].hi) == (1, 500, 100.0)
    # The simplify slider can show its own default.
    lo, hi, step = slider("simplify")
    assert round((SETTINGS["simplify"].default - lo) / step, 6).is_integer()
    # No jargon left in the choices a newcomer reads.
    labels = {v: t for t, v in SETTINGS["formats"].ui.labels}
    assert labels["ply"] == "Gaussian splats (PLY)"
    assert "least squares" not in str(SETTINGS["bake_mode"].ui)


def test_the_table_refuses_a_ui_range_that_does_not_fit():
    row = Setting("x", "int", 10, "h", lo=1, hi=100, step=1, presets={"high": 40}, ui=Ui("output", "X", ui_range=(5, 30)))
    with pytest.raises(ValueError, match="holding its default, preset and CPU values"):
        check_rows([*ROWS, row])
    row = Setting("x", "int", 10, "h", lo=1, hi=100, step=1, ui=Ui("output", "X", ui_range=(0, 30)))
    with pytest.raises(ValueError, match="inside its range"):
        check_rows([*ROWS, row])


def page(preset="balanced", **changes):
    d = GenerationSettings()
    values = {n: preset_values(preset, d).get(n, getattr(d, n)) for n in KNOBS}
    values["formats"] = list(values["formats"])
    return {**values, **changes}


def test_custom_preset_and_sliders_that_widen():
    d = GenerationSettings()
    assert preset_of(page(), "balanced", d) == "balanced"
    assert preset_of(page(ss_steps=12.0), "balanced", d) == "balanced"           # a slider's float
    assert preset_of(page(ss_steps=30), "balanced", d) == "custom"
    assert preset_of(page("fast"), "fast", d) == "fast"
    assert preset_of(page(seed=5, randomize_seed=False), "balanced", d) == "balanced"   # not a preset knob
    assert preset_of(page(), "custom", d) == "custom"
    # (the range only: a value sent back could undo one typed meanwhile)
    assert widened("ss_steps", 200) == {"minimum": 4, "maximum": 200}
    assert widened("ss_steps", 2.0) == {"minimum": 2, "maximum": 50}
    assert widened("ss_steps", 20) is None and widened("ss_steps", 900) is None and widened("ss_steps", "") is None


def test_the_cpu_changes_are_said_before_generate():
    d = GenerationSettings()
    note = device_note(page(), "balanced", d, "cpu")
    assert 'data-changes="5"' in note, note
    assert "Texture size (pixels): <b>512</b> instead of 1024 (each doubling" in note
    assert "Preview frames: <b>60</b> instead of 120" in note
    # A value moved by the user is kept; a PLY alone needs none of them; a GPU lowers nothing.
    mine = device_note(page(texture_size=2048), "custom", d, "cpu")
    assert 'data-changes="4"' in mine and "Texture size" not in mine
    assert device_note(page(formats=["ply"]), "balanced", d, "cpu") == ""
    assert device_note(page(), "balanced", d, "cuda:0") == ""
    assert device_note(page(ss_steps=""), "balanced", d, "cpu") == ""            # a half-typed number


def test_token_count_with_the_text_models_tokenizer(tiny_text_models_dir):
    tokens = PromptTokens(os.path.join(tiny_text_models_dir, "TRELLIS-text-tiny"))
    n, exact, read = tokens.count("a red wooden chair")
    assert exact and 0 < n <= 8 and read is None
    assert tokens.tokenizer().encode("a red wooden chair").ids == tokens.tokenizer().encode("a red wooden chair").ids
    long = " ".join(["a tall red wooden chair with a carved back"] * 12)
    n, exact, read = tokens.count(long)
    assert exact and n > PROMPT_TOKENS and long.startswith(read) and len(read) < len(long)
    # what is read ends with the 75th token (a word cut inside may tokenize one more on its own)
    assert PROMPT_TOKENS <= len(tokens.tokenizer().encode(read).ids) - 2 <= PROMPT_TOKENS + 1
    line = tokens.html(long)
    assert 'data-state="over"' in line and "stops reading after" in line
    assert 'data-state="ok"' in tokens.html("a chair") and "about" not in tokens.html("a chair")
    # a cut inside a word ("stud|s") names that word whole after the words read whole, not its first letters
    prompt = next(p for p in ("word " * k + "a red chair with brass studs " * 20 for k in range(40))
                  if p.strip()[len(tokens.count(p)[2])].isalnum())
    said = re.search(r"after “…(.*)” and part of “(\w+)”\.", tokens.html(prompt))
    assert said and said[2] in prompt.split() and f"{said[1]} {said[2]}" in prompt, tokens.html(prompt)


def test_token_estimate_without_a_text_model(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("TRELLIS_MODEL_DIR", raising=False)
    tokens = PromptTokens(None)
    n, exact, _ = tokens.count("a red, wooden chair 42")
    assert (n, exact) == (7, False)
    assert "about 7 / 75 tokens" in tokens.html("a red, wooden chair 42")
    assert ">0 / 75 tokens</div>" in tokens.html("  ")                # nothing typed: no estimate to own up to


def test_text_sizes_show_their_download_and_default_to_base(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(tmp_path / "models"))
    control = text_size_control(None)
    assert control["value"] == "base"
    assert control["choices"][0] == ("base: 0.7 GB download", "base") and "CLIP, 1.7 GB" in control["info"]
    (tmp_path / "models" / "TRELLIS-text-large").mkdir(parents=True)
    (tmp_path / "models" / "TRELLIS-text-large" / "pipeline.json").write_text("{}")
    control = text_size_control(None)
    assert control["value"] == "large" and ("large (installed)", "large") in control["choices"]
    given = text_size_control(str(tmp_path / "my-text-model"))
    assert given["interactive"] is False and "my-text-model" in given["info"]


def test_a_dropped_model_is_previewed_with_its_triangles(tmp_path):
    import trimesh

    preview = MeshPreview()
    try:
        stl = tmp_path / "rod.stl"
        trimesh.creation.cylinder(radius=0.02, height=1.0, sections=8).export(stl)       # 32 triangles
        view, stats = preview.show(str(stl))
        assert view["visible"] and view["value"].endswith(".glb") and os.path.isfile(view["value"])
        assert trimesh.load(view["value"], force="mesh").faces.shape[0] == 32
        assert 'data-triangles="32"' in stats["value"] and "32 triangles" in stats["value"]
        glb = tmp_path / "rod.glb"
        trimesh.creation.box().export(glb)
        view, stats = preview.show({"path": str(glb), "orig_name": "box.glb"})
        assert view["value"] == str(glb) and "box.glb: <b>12 triangles</b>" in stats["value"]
        bad = tmp_path / "photo.glb"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
        view, stats = preview.show(str(bad))
        assert view["visible"] is False and stats["visible"] is False
        assert preview.show(None)[0]["visible"] is False
    finally:
        preview.close()
