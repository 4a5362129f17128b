"""trellis.tuning: ``tuned`` sets fields for a block and restores them (also when the block fails), refuses names
that are no field, and every field says why it is a per-machine choice and names the benchmark page and heading that
decided its default (a comment above it, or its metadata); the module needs nothing but the standard library."""
import ast
import dataclasses
import re
import sys
from pathlib import Path

import pytest

from trellis import tuning
from trellis.tuning import TUNING, Tuning, tuned

ROOT = Path(__file__).resolve().parents[2]
SOURCE = Path(tuning.__file__)
ANCHOR = re.compile(r"docs/benchmarks/([\w.-]+\.md)#([\w-]+)")


def slug(heading: str) -> str:
    """A Markdown heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def comments_above(lines: list, lineno: int) -> str:
    """The comment lines right above source line `lineno` (1-based), joined."""
    out, i = [], lineno - 2
    while i >= 0 and lines[i].strip().startswith("#"):
        out.insert(0, lines[i].strip().lstrip("#").strip())
        i -= 1
    return " ".join(out)


def field_notes() -> dict:
    """{field name: its comment and metadata text}."""
    lines = SOURCE.read_text(encoding="utf-8").splitlines()
    cls = next(n for n in ast.parse("\n".join(lines)).body if isinstance(n, ast.ClassDef) and n.name == "Tuning")
    notes = {n.target.id: comments_above(lines, n.lineno) for n in cls.body if isinstance(n, ast.AnnAssign)}
    for f in dataclasses.fields(Tuning):
        notes[f.name] = " ".join([notes.get(f.name, ""), *map(str, f.metadata.values())]).strip()
    return notes


def test_tuned_sets_fields_for_the_block_and_restores_them():
    fields = dataclasses.fields(Tuning)
    assert fields, "Tuning has no field"
    before = dataclasses.asdict(TUNING)
    marks = {f.name: object() for f in fields}
    with tuned(**marks) as t:
        assert t is TUNING and all(getattr(TUNING, k) is v for k, v in marks.items())
    assert dataclasses.asdict(TUNING) == before
    name = fields[0].name
    with pytest.raises(RuntimeError, match="inside"):
        with tuned(**{name: marks[name]}):
            raise RuntimeError("inside")
    assert dataclasses.asdict(TUNING) == before


def test_tuned_refuses_unknown_names_and_changes_nothing():
    before = dataclasses.asdict(TUNING)
    name = dataclasses.fields(Tuning)[0].name
    with pytest.raises(TypeError, match="no_such_choice"):
        with tuned(**{name: object(), "no_such_choice": 1}):
            pass
    assert dataclasses.asdict(TUNING) == before


def test_every_field_names_its_reason_and_the_benchmark_heading_that_decided_it():
    notes = field_notes()
    assert set(notes) == {f.name for f in dataclasses.fields(Tuning)}
    bad = []
    for name, text in notes.items():
        found = ANCHOR.search(text)
        if not found or len(ANCHOR.sub("", text).split()) < 6:
            bad.append(f"{name}: a one-line reason and docs/benchmarks/PAGE.md#heading ({text!r})")
            continue
        page = ROOT / "docs" / "benchmarks" / found.group(1)
        headings = [slug(h) for h in re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.M)] \
            if page.is_file() else []
        if found.group(2) not in headings:
            bad.append(f"{name}: {found.group(0)} names no heading of {page.relative_to(ROOT)}")
    assert not bad, "\n".join(bad)


def test_the_slug_is_githubs():
    assert slug("The app's whole job") == "the-apps-whole-job"
    assert slug("Attention: FlashAttention-2 (varlen) against cuDNN, bf16") == \
        "attention-flashattention-2-varlen-against-cudnn-bf16"


def test_the_module_needs_only_the_standard_library():
    tops = {alias.name.split(".")[0] for node in ast.walk(ast.parse(SOURCE.read_text(encoding="utf-8")))
            if isinstance(node, ast.Import) for alias in node.names}
    tops |= {node.module.split(".")[0] for node in ast.walk(ast.parse(SOURCE.read_text(encoding="utf-8")))
             if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert tops <= set(sys.stdlib_module_names) | {"__future__"}, tops
