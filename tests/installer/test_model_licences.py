"""Licence-clean models: nothing in the code or the requirements uses BRIA's RMBG (CC BY-NC, non-commercial: the
background remover TRELLIS.2's reference pipeline.json names, and rembg's default model) or nvdiffrast (NVIDIA's
non-commercial source licence); and the model tables of the README and docs/licences.md name every model the
installer can download.

Mentions that say we avoid them are fine: comments, docstrings, docs. What counts is code: a Python string or
import (docstrings aside), a non-comment line of the other source files, a value in a JSON file of the packages, a
requirement (the part of a requirements line before its comment)."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from installer import weights, weights_trellis2

from tests.helpers.repo import ROOT

FORBIDDEN = re.compile(r"rmbg|briaai|nvdiffrast", re.IGNORECASE)
CODE_DIRS = ("trellis", "desktop", "installer", "extensions", "benchmarks", "tests")
CODE_FILES = ("gradio_main.py", "run.sh", "run.bat", "Containerfile", "compose.yaml")
SUFFIXES = {".py", ".sh", ".ps1", ".bat", ".js", ".mjs", ".cjs", ".html", ".css", ".toml", ".yaml", ".yml", ".json"}
SKIP_DIRS = {"__pycache__", "node_modules", "build", "dist", "data"}     # tests/data: the spec's manifests (data)
COMMENT = re.compile(r"^\s*(#|//|/\*|\*|<!--|::|rem\b|REM\b)")
THIS = Path(__file__).resolve()       # its examples of what the check finds are not uses
# (file, the string) -> why it may stay. Each entry is one exact string in one file.
ALLOWED = {
    ("trellis/tools/tiny_trellis2_pipeline.py", "briaai/RMBG-2.0"):
        "the tiny pipeline writes the published pipeline.json verbatim, its rembg_model entry too, so that the "
        "loader and the installer are tested on what they will meet; neither reads that entry",
    ("tests/installer/test_weights_trellis2.py", "rmbg"): "asserts that the installer never requests it",
    ("tests/installer/test_weights_trellis2.py", "briaai"): "asserts that the installer never requests it",
}


def docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def python_uses(text: str) -> list[str]:
    """The strings and imported names of Python source that match, docstrings and comments aside."""
    tree = ast.parse(text)
    skip = docstrings(tree)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            hits.append(node.value)
        elif isinstance(node, ast.Import):
            hits += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            hits += [node.module or ""] + [alias.name for alias in node.names]
    return [h for h in hits if FORBIDDEN.search(h)]


def json_strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in json_strings(k) + json_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in json_strings(v)]
    return [value] if isinstance(value, str) else []


def uses_in(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    if not FORBIDDEN.search(text):
        return []
    if path.suffix == ".py":
        return python_uses(text)
    if path.suffix == ".json":
        return [s for s in json_strings(json.loads(text)) if FORBIDDEN.search(s)]
    return [line.strip() for line in text.splitlines() if FORBIDDEN.search(line) and not COMMENT.match(line)]


def requirement_uses(path: Path) -> list[str]:
    return [line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines()
            if FORBIDDEN.search(line.split("#")[0])]


def code_files(root: Path):
    for name in CODE_FILES:
        if (root / name).is_file():
            yield root / name
    for top in CODE_DIRS:
        for p in sorted((root / top).rglob("*")) if (root / top).is_dir() else ():
            rel = p.relative_to(root).parts
            if p.is_file() and p.suffix in SUFFIXES and not SKIP_DIRS & set(rel) \
                    and not any(part.endswith(".egg-info") for part in rel):
                yield p


def findings(root: Path, allowed: dict) -> list[str]:
    found = [f"{p.name}: {hit!r}" for p in sorted(root.glob("requirements*.txt")) for hit in requirement_uses(p)]
    for p in code_files(root):
        if p.resolve() == THIS:
            continue
        rel = p.relative_to(root).as_posix()
        found += [f"{rel}: {hit!r}" for hit in uses_in(p) if (rel, hit) not in allowed]
    return found


def test_no_rmbg_or_nvdiffrast_in_the_code_or_the_requirements():
    found = findings(ROOT, ALLOWED)
    assert not found, ("non-commercial models or renderers in use (a use we must allow is listed in ALLOWED with "
                       "its reason):\n" + "\n".join(found))
    for (path, string), why in ALLOWED.items():                # each exception is still needed and explained
        assert string in uses_in(ROOT / path) and why.strip(), (path, string)


def test_the_check_finds_uses_and_lets_mentions_pass(tmp_path):
    (tmp_path / "trellis").mkdir()
    (tmp_path / "trellis" / "a.py").write_text(
        '"""We never use RMBG-2.0 or nvdiffrast."""\n'
        "# not briaai/RMBG-2.0: non-commercial\n"
        "import nvdiffrast.torch as dr\n"
        "from rembg import new_session\n"
        "session = new_session('bria-rmbg')\n"
        "def f():\n    \"\"\"Unlike nvdiffrast.\"\"\"\n    return f'{1}briaai/RMBG-2.0'\n")
    (tmp_path / "trellis" / "b.js").write_text("// never RMBG\nconst m = 'bria-rmbg';\n")
    (tmp_path / "installer").mkdir()
    (tmp_path / "installer" / "m.json").write_text('{"rembg_model": {"model_name": "briaai/RMBG-2.0"}}')
    (tmp_path / "requirements_2.txt").write_text("rembg==2.0.86  # never its bria-rmbg model\n"
                                                 "nvdiffrast @ git+https://github.com/NVlabs/nvdiffrast\n")
    found = findings(tmp_path, {})
    assert sorted(found) == sorted([
        "requirements_2.txt: 'nvdiffrast @ git+https://github.com/NVlabs/nvdiffrast'",
        "installer/m.json: 'briaai/RMBG-2.0'", "trellis/b.js: \"const m = 'bria-rmbg';\"",
        "trellis/a.py: 'nvdiffrast.torch'", "trellis/a.py: 'bria-rmbg'", "trellis/a.py: 'briaai/RMBG-2.0'"])
    assert findings(tmp_path, {("trellis/a.py", "bria-rmbg"): "why"}) == [f for f in found
                                                                         if f != "trellis/a.py: 'bria-rmbg'"]


@pytest.mark.parametrize("page", ["README.md", "docs/licences.md"])
def test_the_docs_name_every_downloadable_model_and_its_licence(page):
    """Every repo or file a manifest of the installer downloads has a row in the model table of the README (the short
    one) and of docs/licences.md (with the full notes)."""
    doc = (ROOT / page).read_text(encoding="utf-8")
    start = doc.index("| model | fetched | licence | what it allows |")
    rows = doc[start:doc.index("\n\n", start)].splitlines()[2:]
    base, text, t2 = weights.load_manifest(), weights.load_text_manifest(), weights_trellis2.load_trellis2_manifest()
    wanted = [base["pipeline"]["repo"], base["extra"]["dinov2"]["file"], base["extra"]["u2net"]["file"],
              text["clip"]["repo"], t2["pipeline"]["repo"], t2["conditioner"]["repo"]]
    wanted += [f"{repo.rsplit('-', 1)[0]}-*" for repo in text["text_repos"].values()]
    for name in wanted:
        row = next((r for r in rows if f"`{name}`" in r), None)
        assert row is not None, f"{page}'s model table has no row for `{name}`"
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 4 and all(cells), row                  # fetched when, licence, what it allows
    assert "DINOv3 License" in next(r for r in rows if t2["conditioner"]["repo"] in r)
    text_row = next(r for r in rows if "TRELLIS-text-*" in r)
    assert all(f"-{size}" in text_row.split("|")[1] for size in text["text_repos"])     # each size named
