"""docs/SETTINGS.md, the table of every generation setting, written from the settings' rows
(desktop/settings_table.py): `python -m desktop.settings_docs` rewrites it; a test keeps it equal to the rows.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .families import FAMILIES
from .settings import PRESETS, ROWS

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "SETTINGS.md"


def accepts(row) -> str:
    """What a setting takes, in words."""
    if row.kind in ("int", "float"):
        text = f"{row.lo}..{row.hi} (whole)" if row.kind == "int" else f"{row.lo:g}..{row.hi:g}"
        return text + (", or none" if row.optional else "")
    if row.kind == "bool":
        return "true / false"
    if row.kind == "choice":
        return " | ".join(row.choices)
    if row.kind == "choices":
        return "one or more of " + ", ".join(row.choices)
    return f"{', '.join(PRESETS)} or custom"


def shown(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def flag_text(row) -> str:
    if row.kind == "preset":
        return "`--preset`"
    if row.cli is None:
        return f"`--set {row.name}=…`"
    if row.kind == "bool" and not row.cli.flag.startswith("--no-"):
        return f"`{row.cli.flag}` / `--no-{row.cli.flag[2:]}`"
    return f"`{row.cli.flag}`"


def families_text(row) -> str:
    """Which image model families use a setting: "all", or those that do (each other family's reason in a note)."""
    if len(row.families) == len(FAMILIES):
        return "all"
    return ", ".join(FAMILIES[name].words for name in row.families) or "none"


def markdown() -> str:
    """The whole of docs/SETTINGS.md."""
    lines = ["# Generation settings",
             "",
             "Every setting of a job, as `settings.json`, the REST API (`POST /v1/jobs`), the CLI (`generate`, "
             "`retexture`, `batch`; any setting also as `--set NAME=VALUE`) and the page name it. Written from "
             "`desktop/settings_table.py` by `python -m desktop.settings_docs`: edit the rows there, not this file. "
             "**Export**: an export of a kept result may change it without sampling again. **CPU**: the value a "
             "CPU job uses instead of a preset's (a value you set yourself is kept). **Models**: the image model "
             "families whose jobs use it (declared by each family in `desktop/families/`); a setting a job's family "
             "does not use, given a value other than its preset's, is ignored with a warning on every surface.",
             "",
             "| setting | accepts | default | presets | CPU | CLI | page | export | models | what it does |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in ROWS:
        presets = ", ".join(f"{name}: {shown(value)}" for name, value in row.presets.items())
        page = f"{row.ui.label} ({row.ui.place}" + (f"; slider {row.ui.ui_range[0]:g}..{row.ui.ui_range[1]:g}, typing "
                                                     f"beyond widens it" if row.ui and row.ui.ui_range else "") + ")" \
            if row.ui else ""
        cells = [f"`{row.name}`", accepts(row), f"`{shown(row.default)}`", presets,
                 shown(row.cpu.value) if row.cpu else "", flag_text(row), page, "yes" if row.export else "",
                 families_text(row), row.help]
        # A "|" inside a cell would end it.
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    ignored = [(family, name, why) for family in FAMILIES.values() for name, why in family.ignores.items()]
    lines += ["", "What each model family does not use, and why:", ""]
    lines += [f"- {family.words}: `{name}`: {why}" for family, name, why in ignored]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    DOC_PATH.write_text(markdown(), encoding="utf-8")
    print(f"wrote {DOC_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
