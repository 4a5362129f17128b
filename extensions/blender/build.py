# SPDX-License-Identifier: GPL-3.0-or-later
"""Build the installable zip of the Blender add-on:

    python extensions/blender/build.py [--out dist/trellis_desktop_blender.zip]

The zip holds one folder, trellis_desktop_blender/, with the add-on's modules, its blender_manifest.toml and the
LICENSE notice: Blender 4.2+ installs it as an extension (Get Extensions > Install from Disk), Blender 3.x as a
legacy add-on (Preferences > Add-ons > Install). Standard library only; the bl_info and manifest versions are
checked to agree."""
import argparse
import ast
import sys
import tomllib
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = "trellis_desktop_blender"
DEFAULT_OUT = HERE.parents[1] / "dist" / f"{PACKAGE}.zip"
STAMP = (2020, 1, 1, 0, 0, 0)               # fixed file times: the same sources give the same zip


def bl_info(init: Path) -> dict:
    """The bl_info dict of __init__.py (read without running the module)."""
    return bl_info_of(init.read_text(encoding="utf-8"), init)


def quick_bl_info(init: Path) -> dict:
    """bl_info as Blender 3.x's add-on list reads it: from the first line starting with 'bl_info' to the next
    blank line, parsed alone (a docstring line starting with that word, or a blank line in the dict, breaks it)."""
    lines = init.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("bl_info")), None)
    if start is None:
        raise SystemExit(f"{init}: no line starts with bl_info")
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    try:
        return bl_info_of("\n".join(lines[start:end]), init)
    except (SyntaxError, ValueError):
        raise SystemExit(f"{init}: Blender 3.x cannot read bl_info from lines {start + 1}-{end}") from None


def bl_info_of(text: str, where: Path) -> dict:
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "bl_info" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit(f"{where}: no bl_info")


def check(src: Path) -> None:
    """The two descriptions of the add-on agree, and the manifest keeps Blender's limits."""
    manifest = tomllib.loads((src / "blender_manifest.toml").read_text(encoding="utf-8"))
    info = bl_info(src / "__init__.py")
    version = ".".join(str(n) for n in info["version"])
    problems = [] if quick_bl_info(src / "__init__.py") == info else ["Blender 3.x reads another bl_info"]
    if manifest["version"] != version:
        problems.append(f"manifest version {manifest['version']} != bl_info version {version}")
    if manifest["id"] != PACKAGE:
        problems.append(f"manifest id {manifest['id']} != {PACKAGE}")
    if len(manifest["tagline"]) > 64 or manifest["tagline"][-1] in ".!?,;:":
        problems.append("the manifest's tagline: at most 64 characters, no closing punctuation")
    if any(why.endswith(".") or len(why) > 64 for why in manifest.get("permissions", {}).values()):
        problems.append("the manifest's permission reasons: at most 64 characters, no closing period")
    if problems:
        raise SystemExit("; ".join(problems))


def build(out: Path = DEFAULT_OUT) -> Path:
    src = HERE / PACKAGE
    check(src)
    files = sorted(p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                   and p.suffix not in (".pyc", ".blend1"))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".zip.part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for path in files + [HERE / "LICENSE"]:
            inner = "LICENSE" if path.parent == HERE else path.relative_to(src).as_posix()
            info = zipfile.ZipInfo(f"{PACKAGE}/{inner}", STAMP)
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            z.writestr(info, path.read_bytes())
    tmp.replace(out)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python extensions/blender/build.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the zip to write (default %(default)s)")
    args = p.parse_args(argv)
    print(build(args.out.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
