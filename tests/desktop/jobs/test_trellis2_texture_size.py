"""The texture side a TRELLIS.2 job bakes where the settings do not say: its pipeline type's, as the family declares
it (desktop/families/trellis2.py TEXTURE_SIZES: 1024² at the 512 grid, 2048² at 1024³ and finer), on a GPU; a value
the user or the preset set is kept; a CPU lowers it as it lowers the preset's (to 512², with the same warning). The
settings a job runs with come from ``trellis2_device_settings`` (no GPU needed: the device is a name); the export
panel and the page say the same; one tiny job on the CPU shows the lowering end to end."""
import dataclasses
import io
import json
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from desktop import cli
from desktop.families import FAMILIES
from desktop.settings import job_texture_size
from desktop.families.validation import validate
from desktop.jobs.job import Job
from desktop.jobs.trellis2_steps import for_trellis2_device, trellis2_device_settings
from desktop.settings import PRESETS, SETTINGS, GenerationSettings
from desktop.settings_table import PIPELINE_TYPES
from desktop.ui.export_panel import family_device_settings, plan_text
from desktop.ui.family_view import FamilyChoice

TRELLIS2 = FAMILIES["trellis2"]
GPU_SIDE = {"512": 1024, "1024": 2048, "1024_cascade": 2048, "1536_cascade": 2048}


def balanced(**changes) -> GenerationSettings:
    return GenerationSettings.from_preset("balanced", formats=("glb",), **changes)


def test_the_family_declares_a_texture_side_per_pipeline_type():
    assert dict(TRELLIS2.texture_sizes) == GPU_SIDE and set(GPU_SIDE) == set(PIPELINE_TYPES)
    assert TRELLIS2.texture_for() == TRELLIS2.texture_for(TRELLIS2.default_pipeline_type) == 2048
    assert TRELLIS2.texture_for("no-such-type") == 2048 and FAMILIES["trellis"].texture_for("512") == 1024
    assert validate() == []
    half = dataclasses.replace(TRELLIS2, texture_sizes={"512": 1024})
    assert any("texture size per pipeline type" in p for p in validate({"trellis": FAMILIES["trellis"],
                                                                         "trellis2": half}))


def test_a_gpu_job_left_at_the_default_bakes_its_pipeline_types_side():
    for kind, side in GPU_SIDE.items():
        for device in ("cuda", "cuda:1"):
            assert trellis2_device_settings(balanced(pipeline_type=kind), device).texture_size == side, kind
    assert trellis2_device_settings(balanced(), "cuda").texture_size == 2048                 # 1024_cascade
    low = GenerationSettings.from_preset("low-vram")       # names 1024²: its 6 / 8 GiB runs were measured with it
    assert trellis2_device_settings(low, "cuda").texture_size == 1024
    # "custom" settings (the page moved another control) whose texture is still the default: the same
    custom = GenerationSettings(preset="custom", ss_steps=3, pipeline_type="512", explicit={"ss_steps"})
    assert trellis2_device_settings(custom, "cuda").texture_size == 1024


def test_a_texture_the_user_or_the_preset_set_is_kept():
    for kind in PIPELINE_TYPES:
        mine = balanced(pipeline_type=kind, texture_size=1024)          # the default's value, set on purpose
        assert trellis2_device_settings(mine, "cuda").texture_size == 1024, kind
        assert trellis2_device_settings(balanced(pipeline_type=kind, texture_size=4096), "cuda").texture_size == 4096
    page = GenerationSettings(preset="custom", texture_size=1024, explicit={"texture_size"})
    assert trellis2_device_settings(page, "cuda").texture_size == 1024
    assert trellis2_device_settings(GenerationSettings.from_preset("fast"), "cuda").texture_size == 512
    high = GenerationSettings.from_preset("high")
    assert (high.pipeline_type, trellis2_device_settings(high, "cuda").texture_size) == ("1536_cascade", 2048)
    # TRELLIS v1 declares none: its jobs bake the settings' side at every preset
    for name in PRESETS:
        s = GenerationSettings.from_preset(name)
        assert job_texture_size(FAMILIES["trellis"], s) == s.texture_size


def test_a_cpu_job_lowers_the_texture_as_before_and_says_so_in_the_users_values():
    for kind in PIPELINE_TYPES:
        job = Job(id="j", inputs=[], settings=balanced(pipeline_type=kind))
        used = for_trellis2_device(job, job.settings, "cpu")
        assert used.texture_size == 512, kind
        (text,) = job.warnings
        assert "texture_size 1024 -> 512 (" in text, text
    # a GPU job that bakes its family's 2048² is warned of nothing: nothing was lowered
    job = Job(id="j", inputs=[], settings=balanced())
    assert for_trellis2_device(job, job.settings, "cuda").texture_size == 2048 and job.warnings == []
    # a value the user set is kept on a CPU too, as before
    assert trellis2_device_settings(balanced(texture_size=2048), "cpu").texture_size == 2048


def test_the_export_plan_and_the_page_say_the_side_a_job_bakes():
    s = balanced()
    gpu = family_device_settings(TRELLIS2, s, "cuda")
    text = plan_text(s, gpu, False, pbr=True)
    assert gpu.texture_size == 2048 and "2048² PNG PBR textures" in text and "Lowered" not in text, text
    cpu = family_device_settings(TRELLIS2, s, "cpu")
    text = plan_text(s, cpu, False, pbr=True)
    assert "512² PNG PBR textures" in text and "Texture size (pixels) 512 (not 1024)" in text, text
    assert family_device_settings(TRELLIS2, balanced(pipeline_type="512"), "cuda").texture_size == 1024
    words = TRELLIS2.texture_words()
    assert words == "1024 at 512, 2048 at 1024 / 1024_cascade / 1536_cascade"
    assert words in FamilyChoice.control_update("texture_size", "trellis2")["info"]
    assert words not in FamilyChoice.control_update("texture_size", "trellis")["info"]
    assert words in SETTINGS["texture_size"].help
    assert words in (Path(__file__).resolve().parents[3] / "docs" / "SETTINGS.md").read_text(encoding="utf-8")


def glb_texture_sides(path) -> set:
    """The sides of the images of a GLB (its JSON names their buffer views)."""
    data = Path(path).read_bytes()
    n = struct.unpack("<I", data[12:16])[0]
    gltf, binary = json.loads(data[20:20 + n]), data[28 + n:]
    sides = set()
    for image in gltf["images"]:
        view = gltf["bufferViews"][image["bufferView"]]
        start = view.get("byteOffset", 0)
        sides.add(Image.open(io.BytesIO(binary[start:start + view["byteLength"]])).size)
    return sides


def test_a_tiny_cpu_job_of_a_1024_type_bakes_512_and_records_it(tiny_trellis2_dir, tmp_path):
    a = np.zeros((64, 64, 4), np.uint8)
    a[16:48, 16:48] = (200, 80, 40, 255)
    Image.fromarray(a, "RGBA").save(tmp_path / "in.png")
    code = cli.main([str(tmp_path / "in.png"), "--model", tiny_trellis2_dir, "-o", str(tmp_path / "out"),
                     "--device", "cpu", "--seed", "1022908287", "--steps", "1", "--pipeline-type", "1024",
                     "--target-faces", "100000", "--formats", "glb", "-q"])
    assert code == 0
    (folder,) = (tmp_path / "out").iterdir()
    record = json.loads((folder / "settings.json").read_text())
    assert record["settings"]["pipeline_type"] == "1024" and record["settings"]["texture_size"] == 512
    assert glb_texture_sides(folder / "model.glb") == {(512, 512)}
