"""The result's download row: a choice (radio buttons) of the files the job wrote (GLB, Draco-compressed or not,
its levels of detail, OBJ, USDZ, STL, 3MF, PLY, the preview), each with its size, and one button that downloads the
chosen one under its download name (names.py). The choice's values are those download copies; the button follows it.
"""
from pathlib import Path

from ..families import family_of_record
from .lazy import gr
from .names import DOWNLOAD_KINDS

# The kinds offered, in the choice's order (the first one present is chosen), and their words.
WORDS = {"glb": "GLB", "glb_lod1": "GLB, level of detail 1", "glb_lod2": "GLB, level of detail 2",
         "glb_lod3": "GLB, level of detail 3", "obj": "OBJ + material + texture (zip)", "usdz": "USDZ (Apple AR)",
         "stl": "STL (3D print)", "3mf": "3MF (3D print)", "ply": "PLY (Gaussian splats)", "mp4": "MP4 preview"}
# The kinds whose words are the job's family's (a TRELLIS.2 PLY is its mesh, not Gaussians: Family.file_word).
FAMILY_WORDED = ("ply",)
# The button's word for each kind.
SHORT = {"glb": "GLB", "obj": "OBJ (zip)", "usdz": "USDZ", "stl": "STL", "3mf": "3MF", "ply": "PLY",
         "mp4": "MP4", **{f"glb_lod{level}": f"GLB LOD {level}" for level in range(1, 4)}}
# How a download copy's name ends, per kind (the longest endings first: "_lod1.glb" before ".glb").
ENDINGS = sorted({**DOWNLOAD_KINDS, "obj": "_obj.zip"}.items(), key=lambda item: -len(item[1]))
EMPTY_LABEL = "Download"
CHOICE_LABEL = "File to download"


def size_text(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{max(1, round(n / 1e3))} kB"


def download_choices(folder, named: dict) -> list:
    """[(words and size, path of its download copy)] of the job folder's files (`named`: names.downloads' copies of
    them), in WORDS' order; export.json adds whether the GLB is Draco-compressed and each level of detail's
    triangles."""
    report = folder.export_report() or {}
    lods = {f"glb_lod{i}": lod for i, lod in enumerate(report.get("lods") or [], start=1) if isinstance(lod, dict)}
    family = family_of_record(folder.settings_record() or {})
    own = {kind: family.file_word(kind) for kind in FAMILY_WORDED if family.file_word(kind)}
    out = []
    for kind, words in {**WORDS, **own}.items():
        path = named.get(kind)
        if path is None:
            continue
        bits = [words + (", Draco-compressed" if kind == "glb" and report.get("draco") else "")]
        if isinstance(lods.get(kind, {}).get("triangles"), int):
            bits.append(f"{lods[kind]['triangles']:,} triangles")
        try:
            bits.append(size_text(Path(path).stat().st_size))
        except OSError:
            continue
        out.append((" · ".join(bits), str(path)))
    return out


def kind_of(path) -> str | None:
    """The kind of a download copy, from how its name ends."""
    name = Path(str(path)).name
    return next((kind for kind, ending in ENDINGS if name.endswith(ending)), None)


def button_update(path):
    """The download button for the chosen file (`path`; None: nothing to download)."""
    if not path:
        return gr.update(value=None, interactive=False, label=EMPTY_LABEL)
    return gr.update(value=str(path), interactive=True, label=f"Download {SHORT.get(kind_of(path), 'file')}")


def row_updates(choices: list) -> tuple:
    """(the choice, the button) showing `choices` (download_choices), the first one chosen."""
    if not choices:
        return gr.update(choices=[], value=None, interactive=False, label=CHOICE_LABEL), button_update(None)
    return (gr.update(choices=choices, value=choices[0][1], interactive=True, label=CHOICE_LABEL),
            button_update(choices[0][1]))


def no_downloads() -> tuple:
    return row_updates([])


def wire_download_row(choice, button) -> None:
    """Picking a file in the choice points the button at it."""
    choice.input(button_update, choice, button, api_visibility="private", show_progress="hidden",
                 concurrency_limit=None)
