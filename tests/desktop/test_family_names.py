"""Outside the family registry (desktop/families), no code of the app or its extensions compares a model family's
id: each asks the registry (family.uses(...), family.pipeline_types, get_family(...), ...), so that a new family or
a new family-specific fact is one declaration, not a branch on every surface. A planted violation is found."""
import ast
from pathlib import Path

from tests.helpers.repo import ROOT_DIR

from desktop.families import FAMILIES

ROOT = Path(ROOT_DIR)
SCANNED = ("desktop", "extensions")
REGISTRY = ("desktop", "families")


def literals(node):
    """The string constants of a comparison's operand, one level into a tuple, list or set."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        for item in node.elts:
            yield from literals(item)


def comparisons(source: str, name: str = "<source>") -> list:
    """'line: code' of every comparison (==, !=, in, not in, is) of `source` with a family's id as a literal."""
    ids = set(FAMILIES)
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Compare):
            values = set(literals(node.left)) | {v for c in node.comparators for v in literals(c)}
            if values & ids:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def scanned_files():
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel.parts[:2] != REGISTRY:
                yield rel.as_posix(), path


def test_no_family_id_is_compared_outside_the_registry():
    wrong = [f"{rel}:{line}" for rel, path in scanned_files()
             for line in comparisons(path.read_text(encoding="utf-8"), rel)]
    assert not wrong, "ask desktop.families instead of comparing a family's id:\n" + "\n".join(wrong)


def test_a_planted_comparison_is_found():
    planted = ("def f(job, family, other):\n"
               "    if job.family == 'trellis2':\n"
               "        return 1\n"
               "    ok = family in ('trellis', 'x')\n"
               "    also = 'trellis2' != other\n"
               "    fine = family == other and family.uses('bake_views')\n"
               "    return ok, also, fine\n")
    assert [line.split(":")[0] for line in comparisons(planted)] == ["2", "4", "5"]
