"""The model family registry (desktop/families): each family declared once and consistently, its facts tied to the
library pipeline class that declares them, and the lookups every surface uses (ids, model folders, peer names)."""
import json

import pytest

from desktop.families import (DEFAULT_FAMILY, FAMILIES, Family, FamilyRefusal, check, family_for_model_name,
                              family_of_model, family_of_record, family_of_result, get_family)
from desktop.families.validation import validate
from desktop.settings import GenerationSettings


def test_every_family_declares_every_fact():
    assert validate() == []
    assert list(FAMILIES) == ["trellis", "trellis2"] and DEFAULT_FAMILY is FAMILIES["trellis"]
    assert all(isinstance(f, Family) and str(f) == name for name, f in FAMILIES.items())


def test_validate_finds_a_broken_declaration():
    import dataclasses

    broken = dataclasses.replace(FAMILIES["trellis2"], ignores={"no_such_setting": "x"}, vram_floors={"512": 6.0},
                                 peer_names=("Trellis-Image-Large",))
    problems = " | ".join(validate({**FAMILIES, "trellis2": broken}))
    assert "ignores only settings of the table" in problems and "a VRAM floor per pipeline type" in problems
    assert "lower-case peer names" in problems


def test_the_library_pipeline_classes_declare_what_the_families_say():
    from trellis.pipelines import Trellis2ImageTo3DPipeline, TrellisImageTo3DPipeline
    from trellis.pipelines.trellis2_cascade import PIPELINE_TYPES

    classes = {"trellis": TrellisImageTo3DPipeline, "trellis2": Trellis2ImageTo3DPipeline}
    for name, family in FAMILIES.items():
        cls = classes[name]
        assert family.pipeline_class == cls.__name__
        assert family.pipeline_types == cls.PIPELINE_TYPES
        assert dict(family.vram_floors) == cls.VRAM_FLOORS
        assert family.progress_stages == cls.PROGRESS_STAGES
    assert FAMILIES["trellis2"].pipeline_types == tuple(PIPELINE_TYPES)


def test_the_settings_table_and_options_agree_with_the_families():
    from desktop.families.trellis2_availability import TRELLIS2_REPO

    from desktop.options import DEFAULT_MODEL
    from desktop.settings import SETTINGS

    assert DEFAULT_FAMILY.repos[0] == DEFAULT_MODEL and FAMILIES["trellis2"].repos[0] == TRELLIS2_REPO
    assert SETTINGS["pipeline_type"].choices == FAMILIES["trellis2"].pipeline_types
    assert SETTINGS["pipeline_type"].default == FAMILIES["trellis2"].default_pipeline_type
    assert {f.texture_size for f in FAMILIES.values()} == {SETTINGS["texture_size"].default}


def test_ids_peer_names_and_records():
    with pytest.raises(ValueError, match=r"model_family must be trellis \(TRELLIS v1\) or trellis2 \(TRELLIS.2\)"):
        get_family("trellis3")
    with pytest.raises(ValueError):
        get_family(None)
    assert get_family("trellis2") is FAMILIES["trellis2"] and get_family(FAMILIES["trellis"]) is DEFAULT_FAMILY
    for name in ("trellis2-4b", "TRELLIS.2-4B", "microsoft/TRELLIS.2-4B", " trellis2 "):
        assert family_for_model_name(name) is FAMILIES["trellis2"], name
    for name in ("trellis-image-large", "microsoft/trellis-image-large", "trellis"):
        assert family_for_model_name(name) is DEFAULT_FAMILY, name
    assert family_for_model_name("gpt-4o") is None and family_for_model_name(3) is None
    assert family_of_record({"family": "trellis2"}) is FAMILIES["trellis2"]
    assert family_of_record({}) is DEFAULT_FAMILY and family_of_record("junk") is DEFAULT_FAMILY
    assert family_of_result({"ovoxel": 1}) is FAMILIES["trellis2"]
    assert family_of_result({"gaussian": 1, "mesh": 2}) is DEFAULT_FAMILY and family_of_result({}) is DEFAULT_FAMILY


def test_a_model_folder_or_repo_names_its_family(tiny_pipeline_dir, tiny_trellis2_dir, tmp_path):
    assert family_of_model(tiny_pipeline_dir) is DEFAULT_FAMILY
    assert family_of_model(tiny_trellis2_dir) is FAMILIES["trellis2"]
    assert family_of_model("microsoft/TRELLIS.2-4B") is FAMILIES["trellis2"]
    assert family_of_model("microsoft/TRELLIS-image-large") is DEFAULT_FAMILY
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "pipeline.json").write_text("[" * 100_000)           # unreadable: v1's loader says what is wrong
    assert family_of_model(broken) is DEFAULT_FAMILY
    (broken / "pipeline.json").write_text(json.dumps({"name": "Trellis2ImageTo3DPipeline"}))
    assert family_of_model(broken) is FAMILIES["trellis2"]


def test_the_one_rule_warns_for_an_unused_setting_and_refuses_what_cannot_be_made():
    v1, v2 = FAMILIES["trellis"], FAMILIES["trellis2"]
    mine = GenerationSettings.from_preset("balanced", pipeline_type="512")
    used, warnings = check(v1, mine)
    assert used is mine and warnings == ["pipeline_type 512 is not used by TRELLIS v1: TRELLIS v1 has one path "
                                         "(pipeline types are TRELLIS.2's); the job ran without it."]
    assert check(v1, GenerationSettings.from_preset("fast")) == (GenerationSettings.from_preset("fast"), [])
    assert check(v2, mine) == (mine, [])
    _, warnings = check(v2, GenerationSettings.from_preset("balanced", bake_views=80), images=1)
    assert len(warnings) == 1 and warnings[0].startswith("bake_views 80 is not used by TRELLIS.2")
    with pytest.raises(FamilyRefusal, match="takes one image \\(2 given\\)"):
        check(v2, mine, images=2)
    assert check(v1, mine, images=4)[0] is mine
    assert v2.uses("pipeline_type") and not v1.uses("pipeline_type") and v1.uses("bake_views")
    assert v2.why_not("ss_cfg") and v2.why_not("seed") == ""
    assert v2.vram_floor("1536_cascade") == 8.0 and v2.vram_floor() == 6.0 and v1.vram_floor() is None


def test_the_settings_table_and_its_page_say_which_families_use_each_setting():
    from desktop.settings import SETTINGS
    from desktop.settings_docs import DOC_PATH

    assert SETTINGS["pipeline_type"].families == ("trellis2",) and SETTINGS["bake_views"].families == ("trellis",)
    assert SETTINGS["seed"].families == ("trellis", "trellis2")
    for family in FAMILIES.values():
        assert {row.name for row in SETTINGS.values() if family.name not in row.families} == set(family.ignores)
    rows = {line.split(" | ")[0].strip("| `"): line for line in DOC_PATH.read_text(encoding="utf-8").splitlines()
            if line.startswith("| `")}
    assert " | TRELLIS.2 | " in rows["pipeline_type"] and " | TRELLIS v1 | " in rows["ss_cfg"]
    assert " | all | " in rows["seed"]
    text = DOC_PATH.read_text(encoding="utf-8")
    assert all(why in text for family in FAMILIES.values() for why in family.ignores.values())


def test_a_declaration_cannot_be_changed_in_place():
    import dataclasses

    family = FAMILIES["trellis2"]
    with pytest.raises(TypeError):
        family.vram_floors["512"] = 1.0
    with pytest.raises(TypeError):
        family.ignores["seed"] = "no"
    with pytest.raises(dataclasses.FrozenInstanceError):
        family.words = "TRELLIS 2"
    assert family.vram_floor("512") == 6.0 and family.uses("seed")
