"""Structure rules, checked on the source so that they stay true:

* a source file of ``trellis/``, ``desktop/``, ``installer/`` or ``extensions/`` over ``SIZE_LIMIT`` lines is listed
  in ``SIZE_EXCEPTIONS`` with its reason (growth is a decision), and a listed file that shrank below
  ``SIZE_FLOOR`` or is gone leaves the list;
* no module imports another module's private name (``from x import _name``, ``from . import _x``): a helper that
  other modules use is public where it is defined;
* every row of ``trellis.fastpaths.KERNELS`` has its GPU equality case (``tests/gpu/test_kernel_table_gpu.py``,
  which runs every row x backend against its twin on CUDA).
"""
import ast
import importlib
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


# ------------------------------------------------------------------------------------------ the tests' tree

def test_test_module_names_are_unique_across_the_tree():
    """Test modules import each other's helpers by module name (tests/conftest.py puts every folder of the tree on
    the path), so two with one name would shadow each other."""
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
