"""The families' declarations checked against each other and the settings table: `validate()` lists what is wrong
(the structure tests assert it is empty), so that a new family missing a fact fails at once, not on some surface."""
from __future__ import annotations

from ..settings_table import FORMATS, ROWS
from . import FAMILIES


def validate(families=None) -> list:
    """What is wrong with the declarations ([] when nothing): every family declares every fact, the settings it
    ignores exist, its pipeline types have floors, ids and peer names are unique."""
    families = FAMILIES if families is None else families
    names = {row.name for row in ROWS}
    sizes = next(row for row in ROWS if row.name == "texture_size")
    problems, peers = [], {}
    for key, f in families.items():
        def need(ok, what, key=key):
            if not ok:
                problems.append(f"{key}: {what}")
        need(key == f.name and f.name.isidentifier() and f.name == f.name.lower(), "a lower-case identifier id")
        need(bool(f.words and f.about and f.pipeline_class and f.repos and f.repo_marker), "its words and sources")
        need(all(p == p.lower() for p in f.peer_names), "lower-case peer names")
        for p in (f.name, *f.peer_names):
            need(peers.setdefault(p, key) == key, f"peer name {p!r} unique")
        need(set(f.ignores) <= names, f"ignores only settings of the table ({sorted(set(f.ignores) - names)})")
        need(all(f.ignores.values()), "a reason for each setting it ignores")
        need((f.default_pipeline_type in f.pipeline_types) == bool(f.pipeline_types), "a default pipeline type")
        need(set(f.vram_floors) in (set(), set(f.pipeline_types)), "a VRAM floor per pipeline type")
        need(f.uses("pipeline_type") == bool(f.pipeline_types), "uses pipeline_type exactly when it has types")
        need(set(f.file_words) <= {*FORMATS, "result"}, "file words for file kinds")
        need(bool(f.progress_stages) and set(f.stage_words) <= {*f.progress_stages, *f.look_stages},
             "stage words of its stages")
        need(not f.new_looks_from_image or bool(f.look_words), "words for what its new look gives")
        need(f.texture_size > 0 and (f.max_images is None or f.max_images >= 1), "a texture size and image count")
        need(set(f.texture_sizes) in (set(), set(f.pipeline_types)) and all(
            sizes.lo <= v <= sizes.hi for v in f.texture_sizes.values()), "a texture size per pipeline type, or none")
        need(set(f.first_times) <= (set(f.pipeline_types) or {""}) and bool(f.first_times_device) == bool(
            f.first_times), "first-job stage times only of its pipeline types, with the device they were measured on")
        need(bool(f.result_key and f.steps_module), "its result key and steps")
        need(callable(f.find_installed) and callable(f.unavailable_text) and callable(f.install_text),
             "how it is found installed and installed")
    makers = [f.name for f in families.values() if f.new_looks_from_image]
    if not makers or makers[0] != next(iter(families)):
        problems.append(f"the first (default) family makes new looks from a photo, not only {makers}")
    prompts = [f.name for f in families.values() if f.new_looks_from_prompt]
    if len(prompts) != 1:
        problems.append(f"one family makes new looks from a prompt, not {prompts}")
    if not any(f.max_images is None for f in families.values()):
        problems.append("one family takes several views of one object")
    return problems
