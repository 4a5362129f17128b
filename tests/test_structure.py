"""Structure rules, checked on the source so that they stay true:

* a source file of ``trellis/``, ``desktop/``, ``installer/`` or ``extensions/`` over ``SIZE_LIMIT`` lines is listed
  in ``SIZE_EXCEPTIONS`` with its reason (growth is a decision), and a listed file that shrank below
  ``SIZE_FLOOR`` or is gone leaves the list;
* no module imports another module's private name (``from x import _name``, ``from . import _x``): a helper that
  other modules use is public where it is defined;
* every row of ``trellis.fastpaths.KERNELS`` has its GPU equality case (``tests/gpu/test_kernel_table_gpu.py``,
  which runs every row x backend against its twin on CUDA);
* no module keeps an A/B switch (a module-level ``UPPER_CASE = True | False | None``): a measurement picks the winner
  and the losing branch goes; a choice that really depends on the machine is a field of ``trellis.tuning.Tuning``;
* no test module imports another test module or changes ``sys.path``: what several test files share lives in
  ``tests/helpers/`` and is imported by its full name.
"""
import ast
import importlib
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trellis", "desktop", "installer", "extensions")
SOURCE_SUFFIXES = {".py", ".sh", ".ps1", ".bat", ".js", ".mjs", ".css", ".html"}
SKIP_DIRS = {"__pycache__", "node_modules", "build", "dist"}
SIZE_LIMIT = 500    # an unlisted file longer than this fails
SIZE_FLOOR = 450    # a listed file shorter than this fails: its entry is stale (remove it)

# path -> why it stays one file (one line). Adding an entry is the decision to let a file grow past SIZE_LIMIT.
SIZE_EXCEPTIONS = {
    "installer/plan.py": "the install plan's rule tables are data (GPU, driver and PyTorch matrices, each with its "
                         "source) next to the one function that applies them",
    "installer/weights.py": "standard library only, run by the launchers before any venv exists: manifest, verified "
                            "cache, resumable download and the messages of each failure share one file on purpose",
    "installer/install.py": "the install transaction (new venv, packages, checks, roll back) is one ordered script "
                            "whose steps share the roll-back state",
    "desktop/jobs/folder.py": "the only module that knows the job folder's layout: it writes and reads every file",
    "extensions/trellis_nvrtc/trellis_nvrtc/block_norm.py": "the CUDA C of two kernels and their launchers, kept "
                                                            "together so the source and its compile-time "
                                                            "specialisations change in step",
    "trellis/representations/mesh/flexicubes.py": "one algorithm: sparse FlexiCubes extraction, the reference "
                                                  "procedure's steps in order",
}


def source_files(root: Path = ROOT):
    for top in PACKAGES:
        for p in sorted((root / top).rglob("*")):
            if p.is_file() and p.suffix in SOURCE_SUFFIXES and not SKIP_DIRS & set(p.relative_to(root).parts) \
                    and not any(part.endswith(".egg-info") for part in p.parts):
                yield p


def line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8", errors="replace").splitlines())


def size_problems(root: Path, exceptions: dict) -> tuple[list, list]:
    """(unlisted files over SIZE_LIMIT, stale entries of ``exceptions``), as messages."""
    sizes = {p.relative_to(root).as_posix(): line_count(p) for p in source_files(root)}
    unlisted = [f"{path}: {n} lines (split it, or list it in SIZE_EXCEPTIONS with its reason)"
                for path, n in sorted(sizes.items()) if n > SIZE_LIMIT and path not in exceptions]
    stale = [f"{path}: " + (f"{sizes[path]} lines, under {SIZE_FLOOR}" if path in sizes else "no such file")
             + " (remove it from SIZE_EXCEPTIONS)"
             for path in sorted(exceptions) if path not in sizes or sizes[path] < SIZE_FLOOR]
    return unlisted, stale


def test_every_long_file_is_listed_with_its_reason():
    unlisted, _ = size_problems(ROOT, SIZE_EXCEPTIONS)
    assert not unlisted, "\n".join(unlisted)


def test_the_size_list_is_current():
    _, stale = size_problems(ROOT, SIZE_EXCEPTIONS)
    assert not stale, "\n".join(stale)
    bad = [p for p, why in SIZE_EXCEPTIONS.items() if not why.strip() or "\n" in why]
    assert not bad, f"one line of reason each: {bad}"


def test_the_size_check_catches_growth_and_stale_entries(tmp_path):
    (tmp_path / "trellis").mkdir()
    (tmp_path / "trellis" / "long.py").write_text("x = 1\n" * (SIZE_LIMIT + 1))
    (tmp_path / "trellis" / "short.py").write_text("x = 1\n" * (SIZE_FLOOR - 1))
    (tmp_path / "trellis" / "data.json").write_text("{}\n" * (SIZE_LIMIT + 1))          # not source
    unlisted, stale = size_problems(tmp_path, {"trellis/short.py": "why", "trellis/gone.py": "why"})
    assert [m.split(":")[0] for m in unlisted] == ["trellis/long.py"]
    assert [m.split(":")[0] for m in stale] == ["trellis/gone.py", "trellis/short.py"]


# ------------------------------------------------------------------------------------------ private names

# The top-level packages of this repository (the kernel packages are imported by these names).
OUR_TOPS = {"trellis", "desktop", "installer", "trellis_triton", "trellis_nvrtc"}


def private_imports(path: Path, root: Path = ROOT):
    """'file:line: from module import _name' for each private name that ``path`` imports from another module of
    this repository (relative imports, or absolute ones of OUR_TOPS). Other projects' private names (PyTorch's
    NVRTC entry points, say) are their business and are not listed."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 0 and (node.module or "").split(".")[0] not in OUR_TOPS:
            continue
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__"):
                yield (f"{path.relative_to(root).as_posix()}:{node.lineno}: "
                       f"from {'.' * node.level}{node.module or ''} import {alias.name}")


def private_import_violations(root: Path = ROOT) -> list:
    return [v for p in source_files(root) if p.suffix == ".py" for v in private_imports(p, root)]


def test_no_module_imports_another_modules_private_name():
    bad = private_import_violations()
    assert not bad, ("make these names public where they are defined (a helper shared across modules is part of "
                     "its module's interface):\n" + "\n".join(bad))


def test_the_private_import_check_catches_them(tmp_path):
    pkg = tmp_path / "desktop" / "ui"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("from .b import _hidden, shown\nfrom . import _c\nfrom torch.cuda._utils import _x\n"
                              "from trellis.core import _y as y\nfrom __future__ import annotations\n")
    assert private_import_violations(tmp_path) == ["desktop/ui/a.py:1: from .b import _hidden",
                                                   "desktop/ui/a.py:2: from . import _c",
                                                   "desktop/ui/a.py:4: from trellis.core import _y"]


# ------------------------------------------------------------------------------------------ fast kernels

def test_every_fast_kernel_row_has_a_gpu_equality_case():
    """tests/gpu/test_kernel_table_gpu.py runs every row x backend of fastpaths.KERNELS against its twin on CUDA;
    here, on any machine, every name of the table must have its case there (and no case outlives its row)."""
    from trellis import fastpaths

    table = importlib.import_module("tests.gpu.test_kernel_table_gpu")
    rows = [(k.name, k.backend) for kernels in fastpaths.KERNELS.values() for k in kernels]
    assert table.ROWS == rows
    assert all(k.name == name for name, kernels in fastpaths.KERNELS.items() for k in kernels)
    missing = sorted(set(fastpaths.KERNELS) - set(table.CASES))
    assert not missing, f"fast kernels without a GPU equality case in tests/gpu/test_kernel_table_gpu.py: {missing}"
    assert sorted(set(table.CASES) - set(fastpaths.KERNELS)) == []
    assert all(callable(case) for case in table.CASES.values())
    for kernel in (k for kernels in fastpaths.KERNELS.values() for k in kernels):
        assert kernel.backend in fastpaths.BACKENDS, kernel
        twin_module, twin_name = kernel.twin.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(twin_module), twin_name)), kernel.twin


# ------------------------------------------------------------------------------------------ A/B switches

# path:NAME -> why it may stay. Empty is the goal.
SWITCH_EXCEPTIONS = {
}
# A line that may be one (only such files are parsed).
SWITCH_LINE = re.compile(r"^_?[A-Z][A-Z0-9_]*\s*(:[^=\n]*)?=\s*(True|False|None)\b", re.M)


def module_switches(path: Path, root: Path = ROOT):
    """'file:NAME' for each module-level ``UPPER_CASE = True | False | None`` (annotated or not) in ``path``."""
    text = path.read_text(encoding="utf-8")
    if not SWITCH_LINE.search(text):
        return
    for node in ast.parse(text, filename=str(path)).body:
        if not isinstance(node, (ast.Assign, ast.AnnAssign)) or not isinstance(node.value, ast.Constant):
            continue
        if node.value.value is not None and not isinstance(node.value.value, bool):
            continue
        for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
            if isinstance(target, ast.Name) and re.fullmatch(r"_?[A-Z][A-Z0-9_]*", target.id):
                yield f"{path.relative_to(root).as_posix()}:{target.id}"


def switch_violations(root: Path = ROOT, exceptions: dict = SWITCH_EXCEPTIONS) -> tuple[list, list]:
    """(switches not in ``exceptions``, entries of ``exceptions`` that name no switch)."""
    found = [s for p in source_files(root) if p.suffix == ".py" for s in module_switches(p, root)]
    return [s for s in found if s not in exceptions], sorted(set(exceptions) - set(found))


def test_no_module_keeps_an_a_b_switch():
    unlisted, stale = switch_violations()
    assert not unlisted, ("keep the measured winner and delete the switch with its losing branch (a choice that "
                          "depends on the machine: a field of trellis.tuning.Tuning):\n" + "\n".join(unlisted))
    assert not stale, f"remove from SWITCH_EXCEPTIONS (no such switch now): {stale}"
    assert all(why.strip() and "\n" not in why for why in SWITCH_EXCEPTIONS.values())


def test_the_switch_check_catches_them(tmp_path):
    pkg = tmp_path / "trellis" / "pipelines"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("ON = True\n_OFF: bool = False\nLATER = None\nLIMIT = 3\nlower = True\n"
                              "def f():\n    INNER = True\n")
    unlisted, stale = switch_violations(tmp_path, {"trellis/pipelines/a.py:LATER": "why", "trellis/gone.py:X": "why"})
    assert unlisted == ["trellis/pipelines/a.py:ON", "trellis/pipelines/a.py:_OFF"]
    assert stale == ["trellis/gone.py:X"]


# ------------------------------------------------------------------------------------------ the tests' tree

def test_test_module_names_are_unique_across_the_tree():
    """pytest imports each test file by its bare module name, its folder put first on the path (the default
    `prepend` import mode), so two with one name would shadow each other."""
    seen = {}
    for p in sorted((ROOT / "tests").rglob("*.py")):
        if "node_modules" in p.parts or p.name in ("__init__.py", "conftest.py") or p.parent.name == "gpu":
            continue
        seen.setdefault(p.stem, []).append(p.relative_to(ROOT).as_posix())
    assert not {k: v for k, v in seen.items() if len(v) > 1}


def test_the_tests_tree_mirrors_the_source():
    """A test folder under tests/trellis/, tests/desktop/ or tests/installer/ names a package of the source."""
    bad = [p.relative_to(ROOT).as_posix() for top in ("trellis", "desktop", "installer")
           for p in sorted((ROOT / "tests" / top).rglob("*")) if p.is_dir() and "__pycache__" not in p.parts
           and not (ROOT / p.relative_to(ROOT / "tests")).is_dir()]
    assert (ROOT / "tests" / "trellis" / "export").is_dir() and not bad, bad



# ------------------------------------------------------------------------------------------ the tests' helpers

# test-tree file -> why it changes the import path itself (one line). Code that several test files use lives in
# tests/helpers/ and is imported by its full name (pytest.ini puts the root on the path).
SYS_PATH_EXCEPTIONS = {
    "tests/desktop/api/test_api_clients.py": "imports the client package it generated into a temporary folder the "
                                             "way that client's users do, and takes the folder off the path after",
    "tests/test_structure.py": "the check's own test writes files that change the path, to see them caught",
}
# A string that would run as code changing the path (a child's `python -c`), as opposed to prose about it.
SYS_PATH_CODE = re.compile(r"sys\.path\s*(\.\s*(insert|append|extend|remove)\b|\[|\+=|=(?!=))")


def tree_py_files(root: Path) -> list:
    """The Python files of the tests' tree, sorted (tests/js/node_modules is not walked)."""
    found = []
    for folder, subfolders, names in os.walk(root / "tests"):
        subfolders[:] = [d for d in subfolders if d not in SKIP_DIRS]
        found += [Path(folder) / n for n in names if n.endswith(".py")]
    return sorted(found)


def tree_module_names(root: Path) -> set:
    """The names the tests' tree would answer a bare import with if its folders were on the path: its modules'
    stems and its packages' folder names (tests/helpers, tests/gpu)."""
    files = tree_py_files(root)
    packages = {p.parent.name for p in files if p.name == "__init__.py"}
    return {p.stem for p in files if p.name != "__init__.py"} | packages


def imported_names(node) -> list:
    """The dotted names an import statement reaches: the module, and for `from X import y` also X.y."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = "." * node.level + (node.module or "")
    return [base] + [base + ("." if node.module else "") + a.name for a in node.names]


def helper_violations(root: Path = ROOT, exceptions: dict = SYS_PATH_EXCEPTIONS) -> list:
    """'file:line: what' for each import of a test module (test_*.py, by any name), each bare-name import of a
    module of the tests' tree, and each change of sys.path (in code, or in a child's code string) by a file of the
    tests' tree that ``exceptions`` does not list."""
    bare = tree_module_names(root)
    found = []
    for path in tree_py_files(root):
        rel = path.relative_to(root).as_posix()
        here = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for name in imported_names(node):
                    parts = name.lstrip(".").split(".")
                    if any(p.startswith("test_") for p in parts):
                        here.append((node.lineno, f"imports the test module {name}"))
                        break
                    if not name.startswith(".") and parts[0] in bare:
                        here.append((node.lineno, f"imports {name} by its bare name (use tests.helpers....)"))
                        break
            elif rel in exceptions:
                continue
            elif isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
                here.append((node.lineno, "uses sys.path"))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SYS_PATH_CODE.search(node.value):
                here.append((node.lineno, "a code string changes sys.path"))
        found += [f"{rel}:{line}: {what}" for line, what in sorted(here)]
    return found


def test_no_test_module_imports_another_or_changes_the_path():
    """A test module imports what it shares with others from tests/helpers/ (``from tests.helpers.servers import
    LiveServer``), never from another test module nor through folders put on the path, so that each test file runs
    alone (``python -m pytest tests/x/test_y.py``) and none breaks when another is moved or split."""
    bad = helper_violations()
    assert not bad, "move what is shared into tests/helpers/ and import it by its full name:\n" + "\n".join(bad)
    stale = [p for p in SYS_PATH_EXCEPTIONS if not (ROOT / p).is_file()]
    assert not stale and all(why.strip() and "\n" not in why for why in SYS_PATH_EXCEPTIONS.values()), stale


def test_the_helper_check_catches_them(tmp_path):
    (tmp_path / "tests" / "helpers").mkdir(parents=True)
    (tmp_path / "tests" / "helpers" / "__init__.py").write_text("")
    (tmp_path / "tests" / "helpers" / "images.py").write_text("")
    (tmp_path / "tests" / "a").mkdir()
    (tmp_path / "tests" / "a" / "test_one.py").write_text(
        "import sys\nimport test_two\nfrom test_two import x\nfrom images import blob\nfrom helpers.images import b\n"
        "from tests.b.test_two import y\nfrom tests.b import test_two\nfrom . import test_two\n"
        "sys.path.insert(0, 'x')\ncode = \"import sys; sys.path[:0] = ['x']\"\n"
        "from tests.helpers.images import blob\nimport tests.helpers.images\n"
        "\"\"\"Prose about sys.path is fine.\"\"\"\n")
    (tmp_path / "tests" / "b").mkdir()
    (tmp_path / "tests" / "b" / "test_two.py").write_text("import sys\nsys.path.append('y')\n")
    one = [f"tests/a/test_one.py:{n}: " for n in range(11)]
    assert helper_violations(tmp_path, {}) == [
        one[2] + "imports the test module test_two", one[3] + "imports the test module test_two",
        one[4] + "imports images by its bare name (use tests.helpers....)",
        one[5] + "imports helpers.images by its bare name (use tests.helpers....)",
        one[6] + "imports the test module tests.b.test_two", one[7] + "imports the test module tests.b.test_two",
        one[8] + "imports the test module .test_two", one[9] + "uses sys.path",
        one[10] + "a code string changes sys.path", "tests/b/test_two.py:2: uses sys.path"]
    assert helper_violations(tmp_path, {"tests/b/test_two.py": "why"})[-1] == one[10] + "a code string changes sys.path"
