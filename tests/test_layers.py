"""The layer order, checked on the source: the library never imports the app, the installer or an app
framework; the optional kernel packages depend only on the library, torch and their compiler; the library
reaches them only through trellis.fastpaths (by module name, at run time)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP_LAYERS = {"desktop", "installer", "gradio", "fastapi", "uvicorn", "gradio_main"}
KERNEL_PACKAGES = {"trellis_triton", "trellis_nvrtc"}


def imported_tops(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno


def test_the_library_imports_no_app_layer_and_no_kernel_package_directly():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {top}"
           for p in sorted((ROOT / "trellis").rglob("*.py"))
           for top, line in imported_tops(p) if top in APP_LAYERS | KERNEL_PACKAGES]
    assert not bad, bad


def test_kernel_packages_depend_only_on_the_library_torch_and_their_compiler():
    import sys
    allowed = {"trellis", "torch", "triton", "__future__"} | KERNEL_PACKAGES | set(sys.stdlib_module_names)
    files = sorted((ROOT / "extensions").rglob("*.py"))
    assert {p.parent.name for p in files} >= KERNEL_PACKAGES
    bad = [f"{p.relative_to(ROOT)}:{line} imports {top}"
           for p in files for top, line in imported_tops(p) if top not in allowed]
    assert not bad, bad


def test_every_kernel_package_is_registered_with_the_dispatcher():
    from trellis import fastpaths
    registered = {k.module.split(".")[0] for kernels in fastpaths.KERNELS.values() for k in kernels}
    assert registered == KERNEL_PACKAGES


# ------------------------------------------------------------------------------------------ the app

def desktop_imports(path: Path):
    """(imported desktop module, line) for every import in `path` (a module of desktop/), at any depth
    (imports inside functions count: a cycle through one is still a cycle)."""
    rel = path.relative_to(ROOT).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "desktop":
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "desktop":
                continue
            for alias in node.names:            # `from . import x` imports the module x
                sub = f"{module}.{alias.name}"
                yield (sub if (ROOT / Path(*sub.split("."))).with_suffix(".py").exists()
                       or (ROOT / Path(*sub.split("."))).is_dir() else module), node.lineno


def desktop_graph() -> dict:
    graph = {}
    for p in sorted((ROOT / "desktop").rglob("*.py")):
        rel = p.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        graph[name] = {m for m, _ in desktop_imports(p) if m != name}
    return graph


def cycles(graph: dict) -> list:
    """Every import cycle, as a list of modules (depth-first search, one report per cycle found)."""
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"
    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_cycle_inside_the_app():
    # A package's __init__ re-exporting its modules is not a cycle (desktop.jobs names its modules lazily).
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in desktop_graph().items()}
    assert cycles(graph) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]     # the check itself


def test_the_stable_projectorz_endpoints_depend_on_the_api_one_way():
    graph = desktop_graph()
    assert "desktop.api_spz" in graph["desktop.api"] and "desktop.api" not in graph["desktop.api_spz"]
    assert graph["desktop.api_common"] & {"desktop.api", "desktop.api_spz"} == set()


def test_only_the_job_folder_module_knows_the_folder_layout():
    from desktop.jobs import folder
    names = set(folder.FILE_KINDS)
    bad = []
    for p in sorted((ROOT / "desktop").rglob("*.py")):
        if p == ROOT / "desktop" / "jobs" / "folder.py":
            continue
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                bad.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not bad, bad


def test_the_job_modules_import_in_their_stated_order():
    """desktop/jobs: job <- folder, progress, failures, inputs <- recovery <- steps <- runner (never back)."""
    order = ["job", "folder", "progress", "failures", "inputs", "recovery", "steps", "runner"]
    graph = desktop_graph()
    bad = [f"{m} imports {d}" for i, m in enumerate(order) for d in graph[f"desktop.jobs.{m}"]
           if d.startswith("desktop.jobs.") and order.index(d.rsplit(".", 1)[1]) >= i]
    assert not bad, bad
    # The parts the UI reads at start-up (folder history) import no torch: `--help` stays instant.
    light = {"desktop.jobs.job", "desktop.jobs.folder", "desktop.jobs.inputs", "desktop.options", "desktop.settings"}
    heavy = [f"{m} imports torch" for m in light for top, _ in imported_tops(ROOT / Path(*m.split("."))
                                                                          .with_suffix(".py")) if top == "torch"]
    assert not heavy, heavy
