"""The settings flags of every command that makes jobs (generate, retexture, batch; the export command takes some of
them): --preset, --settings FILE, one flag per setting whose row names one (settings_table.Cli) and --set KEY=VALUE
for the others; and the job settings they give (settings_from_args).
"""
from __future__ import annotations

import argparse
import functools

from .settings import DEFAULT_PRESET, PRESETS, ROWS, GenerationSettings, field_names, parse_value, with_given

# A settings file is a few hundred bytes; anything this large is not one.
SETTINGS_MAX_BYTES = 1 << 20


def add_settings_options(p: argparse.ArgumentParser) -> None:
    """The settings flags of every command that makes jobs (generate, retexture, batch): --preset, --settings,
    one flag per setting whose row names one (settings_table.Cli), and --set KEY=VALUE for the others."""
    group = p.add_argument_group("settings")
    group.add_argument("--preset", choices=list(PRESETS), default=None,
                       help=f"quality preset (default {DEFAULT_PRESET})")
    group.add_argument("--settings", metavar="FILE", help="start from a settings file (e.g. a job's settings.json, "
                                                          "to reproduce it); other options override it")
    for flag, rows in setting_flags().items():
        add_setting_flag(group, flag, rows)
    group.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help=f"any other setting, repeatable: {', '.join(field_names())}")


def add_setting_flag(group, flag: str, rows: list) -> None:
    """One setting's flag, as its rows say (also the export command's)."""
    row = rows[0]
    # Not given: no attribute at all, so that an optional setting's "none" differs from a flag left out.
    kw = dict(dest=flag_dest(flag), default=argparse.SUPPRESS, help=flag_help(flag, rows))
    if row.kind == "bool" and flag.startswith("--no-"):
        kw.update(action="store_const", const=False)
    elif row.kind == "bool":
        kw.update(action=argparse.BooleanOptionalAction)
    elif row.kind == "choice":
        kw.update(choices=row.choices)
    elif row.kind == "choices":
        kw.update(metavar="LIST")
    elif row.optional:
        kw.update(type=functools.partial(flag_value, row.name), metavar="N|none")
    else:
        kw.update(type=int if row.kind == "int" else float, metavar="N" if row.kind == "int" else "F")
    group.add_argument(flag, **kw)


def setting_flags() -> dict:
    """{flag: [rows it sets]} in the settings table's order (--steps sets both stages' steps)."""
    flags = {}
    for row in ROWS:
        if row.cli is not None:
            flags.setdefault(row.cli.flag, []).append(row)
    return flags


def flag_changes(args, allowed) -> dict:
    """{setting: value} of the settings flags given and of --set KEY=VALUE (KEY one of `allowed`); ValueError
    names a bad --set."""
    changes = {}
    given = vars(args)
    for flag, rows in setting_flags().items():
        if flag_dest(flag) in given:
            changes.update(dict.fromkeys((row.name for row in rows), given[flag_dest(flag)]))
    for item in args.set:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in allowed:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(allowed)}")
        try:
            changes[key] = parse_value(key, value)
        except ValueError as err:
            raise ValueError(f"--set {item!r}: {err}") from None
    return changes


def flag_dest(flag: str) -> str:
    return "setting_" + flag.removeprefix("--").replace("-", "_")


def flag_help(flag: str, rows: list) -> str:
    """The first row's CLI help (else its help line), with the range of a number and the default of a list."""
    row = rows[0]
    text = next((r.cli.help for r in rows if r.cli.help), None) or row.help
    if row.kind in ("int", "float"):
        pattern = "%d..%d" if row.kind == "int" else "%g..%g"
        text += f" ({pattern % (row.lo, row.hi)}{' or none' if row.optional else ''})"
    elif row.kind == "choices" and not row.cli.help:
        text = f"comma-separated, from {','.join(row.choices)} (default {','.join(row.default)})"
    return text.replace("%", "%%")


def flag_value(name: str, text: str):
    """argparse type of an optional number's flag: the number, or None for "none"."""
    try:
        return parse_value(name, text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def settings_from_args(args) -> GenerationSettings:
    """The job settings from the parsed options. Raises ValueError with a readable message."""
    if args.settings and args.preset:
        raise ValueError("use either --settings or --preset, not both")
    if args.settings:
        try:
            with open(args.settings, "rb") as f:
                data = f.read(SETTINGS_MAX_BYTES + 1)
        except OSError as err:
            raise ValueError(f"--settings: cannot read {args.settings}: {err.strerror or err}") from None
        what = "a settings file (e.g. a job's settings.json)"
        if len(data) > SETTINGS_MAX_BYTES:
            raise ValueError(f"--settings: {args.settings} is too large to be {what}")
        try:
            base = GenerationSettings.from_json(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"--settings: {args.settings} is not {what}: it is not UTF-8 text") from None
        except RecursionError:
            raise ValueError(f"--settings: {args.settings} is not {what}: its JSON is nested too deeply") from None
        except ValueError as err:
            raise ValueError(f"--settings {args.settings}: {err}") from None
    else:
        base = GenerationSettings.from_preset(args.preset or DEFAULT_PRESET)
    return with_given(base, flag_changes(args, field_names()))
