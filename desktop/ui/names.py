"""Download names: what the browser saves is named after the job's input and seed (`chair_s219342469.glb`,
`chair_s219342469.ply`, `chair_s219342469_obj.zip`, `chair_s219342469.mp4`), so that two results never collide
in a Downloads folder. The job folder keeps its own names (model.glb, ...): the CLI, the REST API, batch resume and
"Export again" read them; only the copy handed to the browser is renamed."""
import os
import re
import shutil
import zipfile
from pathlib import Path

# Kinds whose file the page offers for download by itself, and the extension the download gets.
DOWNLOAD_KINDS = {"glb": ".glb", "ply": ".ply", "mp4": ".mp4", "stl": ".stl", "3mf": ".3mf", "usdz": ".usdz",
                  **{f"glb_lod{level}": f"_lod{level}.glb" for level in range(1, 4)}}
STEM_CHARS = 40          # a name stays readable in a file dialog


def slug(text: str) -> str:
    """A file-name-safe version of `text`: letters, digits, '-' and '_' (other runs become one '-')."""
    text = re.sub(r"[^\w-]+", "-", str(text), flags=re.ASCII).strip("-_")
    return re.sub(r"-{2,}", "-", text)[:STEM_CHARS].strip("-_")


def given_name(x) -> str | None:
    """The file name the user gave an input of a settings record (a path, or an upload held in memory:
    "<chair.png: 12 bytes>"); None when it has none."""
    if not isinstance(x, str) or not x:
        return None
    held = re.fullmatch(r"<(.+): \d+ bytes>", x)
    if x.startswith("<") and not held:
        return None
    return Path(held.group(1) if held else x.replace("\\", "/")).name or None


def input_stem(record: dict) -> str:
    """The job's input in a word or few: the image's file name without extension, the prompt's first words, or
    the 3-D model's name; "model" when nothing names it (a pasted image)."""
    prompt = record.get("prompt")
    if isinstance(prompt, str) and prompt.strip() and record.get("kind") == "text":
        return slug(" ".join(prompt.split()[:6]).lower()) or "model"
    names = [Path(n).stem for n in map(given_name, [record.get("mesh"), *(record.get("inputs") or [])]) if n]
    stem = slug(names[0]) if names else ""
    # The copies a job folder keeps are "input.png", "input_mesh.glb": no name of the user's.
    stem = stem if stem and stem not in ("input", "input_mesh") else "model"
    if record.get("kind") != "variant":
        return stem
    # A new look is named after the look too (its prompt, else its photo): the same model in two looks, or an
    # app-made "model.glb" given a look, differ.
    photo = next(iter(record.get("inputs") or []), None)
    look = prompt if isinstance(prompt, str) and prompt.strip() else Path(given_name(photo) or "").stem
    look = "" if look in ("input", "input_mesh") else look
    named = [] if stem == "model" else [stem]
    for word in str(look).lower().split():             # whole words, as many as fit
        if len("-".join([*named, word])) > STEM_CHARS:
            break
        named.append(word)
    return slug("-".join(named)) or slug(str(look).lower()) or stem


def input_copies(images: list, given: list, dest: Path) -> list:
    """The job folder's copies of its inputs (input.png, input_2.png, input_mesh.glb) under the names they were
    given (`given`: the settings record's entries of them, in order: `chair.png`), in `dest`, so that a job made from
    them again is named as the first one was; a copy whose name is not known, or taken by another, stays as it is."""
    names = [given_name(x) for x in given or []]
    out, used = [], set()
    for i, image in enumerate(images):
        image = Path(image)
        name = names[i] if i < len(names) else None
        stem = slug(Path(name).stem) if name else ""
        if not stem or stem in ("input", "input_mesh") or stem in used:
            out.append(str(image))
            continue
        used.add(stem)
        out.append(str(named_copy(image, Path(dest) / f"{stem}{image.suffix}")))
    return out


def download_stem(record: dict) -> str:
    """`chair_s219342469`: the input and the seed used (the seed left out when the record has none); an export's
    adds its destination, or "export" (`chair_s219342469_print`), so that its files do not take its source's names."""
    seed = record.get("seed")
    stem = input_stem(record) + (f"_s{seed}" if isinstance(seed, int) and not isinstance(seed, bool) else "")
    if record.get("kind") != "export":
        return stem
    settings = record.get("settings") if isinstance(record.get("settings"), dict) else {}
    where = settings.get("destination")
    return f"{stem}_{slug(where) if isinstance(where, str) and where != 'none' and slug(where) else 'export'}"


def _fresh(dest: Path, src: Path) -> bool:
    try:
        return dest.stat().st_size == src.stat().st_size and dest.stat().st_mtime >= src.stat().st_mtime
    except OSError:
        return False


def named_copy(src: Path, dest: Path) -> Path:
    """`src` under the name `dest`: a hard link where the disk allows it (no copy of a large GLB), else a copy."""
    if _fresh(dest, src):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:                     # another disk, or a file system without hard links
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    return dest


def obj_zip(parts: list, dest: Path, inside: str) -> Path:
    """The OBJ, its material and texture zipped into a folder `inside` (unzipping two never mixes their
    model.mtl); the .obj's references to model.mtl and model.png stay valid."""
    if dest.exists() and all(dest.stat().st_mtime >= p.stat().st_mtime for p in parts):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for p in parts:
            z.write(p, f"{inside}/{p.name}")
    os.replace(tmp, dest)
    return dest


def downloads(folder, root: Path) -> dict:
    """{kind: path} of the job folder's results under their download names, in `root`/<folder name>/ (kinds of
    DOWNLOAD_KINDS, plus "obj" for the zipped OBJ)."""
    stem = download_stem(folder.settings_record() or {})
    where = Path(root) / folder.name
    out = {}
    for kind, ext in DOWNLOAD_KINDS.items():
        src = folder.existing(kind)
        if src is not None:
            out[kind] = named_copy(src, where / f"{stem}{ext}")
    parts = folder.obj_parts()
    if parts:
        out["obj"] = obj_zip(parts, where / f"{stem}_obj.zip", stem)
    return out
