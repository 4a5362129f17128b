"""The layer order, checked on the source: the library never imports the app, the installer or an app
framework; its packages import only downward (core <- modules <- models <- pipelines, core <-
representations <- renderers <- export <- utils); the optional kernel packages depend only on the library, torch
and their compiler; the library reaches them only through trellis.fastpaths (by module name, at run time)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP_LAYERS = {"desktop", "installer", "extensions", "gradio", "fastapi", "uvicorn", "gradio_main"}
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
    files = sorted(p for p in (ROOT / "extensions").rglob("*.py") if p.relative_to(ROOT / "extensions").parts[0]
                   != "blender")        # the Blender add-on: its own rule below
    assert {p.parent.name for p in files} >= KERNEL_PACKAGES
    bad = [f"{p.relative_to(ROOT)}:{line} imports {top}"
           for p in files for top, line in imported_tops(p) if top not in allowed]
    assert not bad, bad


def test_the_blender_add_on_needs_only_blender_and_the_standard_library():
    """extensions/blender/ runs in Blender's own Python: bpy, mathutils and numpy (which Blender ships) and the
    standard library; its client and mesh matching not even bpy (they are tested outside Blender)."""
    import sys
    files = sorted((ROOT / "extensions" / "blender").rglob("*.py"))
    plain = {"client.py", "meshmatch.py", "build.py"}
    assert plain <= {p.name for p in files}
    bad = [f"{p.relative_to(ROOT)}:{line} imports {top}" for p in files for top, line in imported_tops(p)
           if top not in set(sys.stdlib_module_names) | ({"__future__"} if p.name in plain
                                                          else {"__future__", "bpy", "mathutils", "numpy"})]
    assert not bad, bad


def test_every_kernel_package_is_registered_with_the_dispatcher():
    from trellis import fastpaths
    registered = {k.module.split(".")[0] for kernels in fastpaths.KERNELS.values() for k in kernels}
    assert registered == KERNEL_PACKAGES


# ------------------------------------------------------------------------------------ the library's layers

# Each package of trellis/ and the packages it may import (itself included). Two chains on one bottom:
# core <- modules <- models <- pipelines and core <- representations <- renderers <- export <- utils, with
# models -> representations (the decoders build them); utils holds the reference's facades (render_utils,
# postprocessing_utils over the export). tools (the tiny test pipelines) may use any.
LAYERS = {
    "core": {"core"},
    "modules": {"core", "modules"},
    "representations": {"core", "representations"},
    "models": {"core", "modules", "representations", "models"},
    "pipelines": {"core", "modules", "representations", "models", "pipelines"},
    "renderers": {"core", "representations", "renderers"},
    "export": {"core", "representations", "renderers", "export"},
    "utils": {"core", "representations", "renderers", "export", "utils"},
}
# Modules that belong to the bottom layer but live elsewhere: trellis.fastpaths (the kernel dispatcher: torch
# and trellis.core only; it keeps its documented path, which extensions/, the app and the benchmarks name) and
# trellis.tuning (the per-machine choices every layer reads: the standard library only).
CORE_ELSEWHERE = {"trellis.fastpaths", "trellis.tuning"}
# Back edges left in files this change could not edit (the GLB export was being split at the same time):
# (importing layer, imported module) -> what removes it.
KNOWN_BACK_EDGES: dict = {}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def trellis_imports(path: Path):
    """(imported trellis module, line) for every import in `path`, at any depth (lazy imports count)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "trellis":
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if module.split(".")[0] != "trellis":
                continue
            for alias in node.names:            # `from . import x` imports the module x
                sub = f"{module}.{alias.name}"
                target = ROOT / Path(*sub.split("."))
                yield (sub if target.with_suffix(".py").exists() or target.is_dir() else module), node.lineno


def layer_of(module: str):
    """The layer of a trellis module, or None for trellis itself and tools (above every layer)."""
    if module in CORE_ELSEWHERE or any(module.startswith(m + ".") for m in CORE_ELSEWHERE):
        return "core"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def layer_violations(files) -> list:
    bad = []
    for p in files:
        layer = layer_of(module_name(p))
        if layer is None:
            continue
        for target, line in trellis_imports(p):
            to = layer_of(target)
            if to is not None and to not in LAYERS[layer] and (layer, target) not in KNOWN_BACK_EDGES:
                bad.append(f"{p.relative_to(ROOT)}:{line} ({layer}) imports {target} ({to})")
    return bad


def test_the_library_imports_only_downward():
    bad = layer_violations(sorted((ROOT / "trellis").rglob("*.py")))
    assert not bad, "\n".join(bad)


def test_the_bottom_layer_imports_nothing_above_it():
    files = sorted((ROOT / "trellis" / "core").rglob("*.py"))
    assert {p.stem for p in files} >= {"__init__", "callbacks", "device", "backends", "lowdiscrepancy"}
    bad = [f"{p.relative_to(ROOT)}:{line} imports {t}" for p in files for t, line in trellis_imports(p)
           if not t.startswith("trellis.core")]
    assert not bad, bad


def test_the_layer_check_catches_a_back_edge(tmp_path, monkeypatch):
    """A model importing the render utilities (models -> utils) is reported."""
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    fake = tmp_path / "trellis" / "models" / "fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ..utils import render_utils\n")
    (tmp_path / "trellis" / "utils").mkdir()
    (tmp_path / "trellis" / "utils" / "render_utils.py").write_text("")
    assert layer_violations([fake]) == ["trellis/models/fake.py:1 (models) imports trellis.utils.render_utils (utils)"]


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
    """desktop/api: common <- families <- v1_schemas <- v1, spz_params, spz_trellis2 <- spz, security <- docs <- server
    (never back; v1 and spz know only common, the model families, v1's schemas and StableProjectorz's names),
    openai_errors <- generations (the OpenAI-style endpoint: common, v1, docs, generation_answer); idempotency
    (common only; v1 and generations use it); connections (the HTTP protocol's limits, also the UI's) knows none."""
    graph = desktop_graph()
    api = {m for m in graph if m.startswith("desktop.api.")}
    assert api == {f"desktop.api.{m}" for m in ("common", "families", "v1_schemas", "v1", "spz_params", "spz_trellis2",
                                                "spz", "security", "docs", "server", "connections", "openai_errors",
                                                "generations", "generation_answer", "idempotency")}
    assert not [d for d in graph["desktop.api.connections"] if d.startswith("desktop")]
    inside = {m: graph[m] & (api | {"desktop.api"}) for m in api}
    assert "desktop.api.spz" in inside["desktop.api.server"] and "desktop.api.v1" in inside["desktop.api.server"]
    assert inside["desktop.api.common"] == set()
    assert inside["desktop.api.families"] <= {"desktop.api.common"}
    assert inside["desktop.api.spz_params"] == {"desktop.api.common"}
    assert inside["desktop.api.v1_schemas"] == {"desktop.api.common", "desktop.api.families"}
    assert inside["desktop.api.v1"] == {"desktop.api.common", "desktop.api.families", "desktop.api.v1_schemas",
                                        "desktop.api.idempotency"}
    assert inside["desktop.api.idempotency"] == {"desktop.api.common"}
    assert inside["desktop.api.generation_answer"] <= {"desktop.api.common", "desktop.api.v1"}
    assert inside["desktop.api.spz_trellis2"] == {"desktop.api.common", "desktop.api.families"}
    assert inside["desktop.api.spz"] == {"desktop.api.common", "desktop.api.spz_params", "desktop.api.spz_trellis2"}
    assert inside["desktop.api.security"] <= {"desktop.api.common"}
    assert inside["desktop.api.docs"] <= {"desktop.api.common", "desktop.api.security"}
    assert inside["desktop.api.openai_errors"] == set()
    assert inside["desktop.api.generations"] <= {"desktop.api.common", "desktop.api.v1", "desktop.api.docs",
                                                 "desktop.api.openai_errors", "desktop.api.generation_answer",
                                                 "desktop.api.idempotency"}
    assert not [m for m in api if "desktop.api.server" in graph[m]]       # only the package re-exports it


def test_the_ui_modules_import_in_their_stated_order():
    """desktop/ui: the building blocks (lazy, values, errors, names, download_row, history_list, warning_words) <-
    status <- what each pipeline type costs (pipeline_costs) <- the model choice (family_view) <- the page's parts
    (knobs, expectations, look, pagestate, places, history, history_tab, batch_view, endpoints, export_panel,
    output_layout) <- the page's layout and its wiring (page_layout, page_events) <- app <- server (never back)."""
    order = ["lazy", "values", "errors", "names", "download_row", "history_list", "warning_words", "status",
             "pipeline_costs", "family_view", "knobs",
             "expectations",
             "look", "pagestate", "places", "history", "history_tab", "batch_view", "endpoints", "export_panel",
             "output_layout", "page_layout", "page_events", "app",
             "server"]
    graph = desktop_graph()
    assert {m for m in graph if m.startswith("desktop.ui.")} == {f"desktop.ui.{m}" for m in order}
    bad = [f"{m} imports {d}" for i, m in enumerate(order) for d in graph[f"desktop.ui.{m}"]
           if d == "desktop.ui" or d.startswith("desktop.ui.") and order.index(d.rsplit(".", 1)[1]) >= i]
    assert not bad, bad


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
    """desktop/jobs: jsonio, limits, verdicts, job, request <- folder, stage_times, stage_times_file, first_estimate, progress, failures, inputs, meshes, kept_sampling <- queued <- recovery, rerun <-
    context, sampling, models <- steps <- trellis2_steps <- warmup, overlap <- jobqueue <- worker <- runner (never back): the steps
    get a context and never reach the worker or the runner."""
    order = ["jsonio", "limits", "verdicts", "job", "request", "folder", "stage_times", "stage_times_file", "first_estimate", "progress", "failures", "budget", "inputs",
             "meshes", "kept_sampling", "queued", "recovery", "rerun", "context", "sampling", "models", "export_reuse", "mesh_files",
             "steps", "trellis2_steps", "trellis2_looks", "warmup", "overlap",
             "jobqueue", "worker", "runner", "late"]
    graph = desktop_graph()
    assert {m for m in graph if m.startswith("desktop.jobs.")} == {f"desktop.jobs.{m}" for m in order}
    bad = [f"{m} imports {d}" for i, m in enumerate(order) for d in graph[f"desktop.jobs.{m}"]
           if d.startswith("desktop.jobs.") and order.index(d.rsplit(".", 1)[1]) >= i]
    assert not bad, bad
    # The parts the UI reads at start-up (folder history) import no torch: `--help` stays instant.
    light = {"desktop.jobs.jsonio", "desktop.jobs.limits", "desktop.jobs.job", "desktop.jobs.folder", "desktop.jobs.queued", "desktop.jobs.inputs", "desktop.jobs.meshes", "desktop.jobs.verdicts",
             "desktop.options",
             "desktop.settings"}
    heavy = [f"{m} imports torch" for m in light for top, _ in imported_tops(ROOT / Path(*m.split("."))
                                                                          .with_suffix(".py")) if top == "torch"]
    assert not heavy, heavy


def test_the_batch_modules_import_in_their_stated_order_and_the_app_never_imports_them_or_ray():
    """desktop/batch: files <- items, manifest, display <- worker (with desktop.jobs.overlap) <- local, ray_pool <- driver <- command (never
    back).
    Ray is optional: only batch/ray_pool imports it (and only with --ray); no other part of the app imports
    the batch package; the modules the command reads before its options are checked import no torch."""
    order = ["files", "items", "manifest", "display", "worker", "local", "ray_pool", "driver", "command"]
    graph = desktop_graph()
    assert {m for m in graph if m.startswith("desktop.batch.")} == {f"desktop.batch.{m}" for m in order}
    bad = [f"{m} imports {d}" for i, m in enumerate(order) for d in graph[f"desktop.batch.{m}"]
           if d == "desktop.batch" or d.startswith("desktop.batch.") and order.index(d.rsplit(".", 1)[1]) >= i]
    assert not bad, bad
    outside = [f"{m} imports {d}" for m, deps in graph.items() if not m.startswith("desktop.batch")
               for d in deps if d.startswith("desktop.batch")]
    assert not outside, outside
    app = [p for d in ("desktop", "trellis", "installer", "extensions") for p in sorted((ROOT / d).rglob("*.py"))]
    ray = [f"{p.relative_to(ROOT)}:{line}" for p in app + [ROOT / "gradio_main.py"]
           if p != ROOT / "desktop" / "batch" / "ray_pool.py" for top, line in imported_tops(p) if top == "ray"]
    assert not ray, ray
    light = ["files", "items", "manifest", "display", "driver", "command"]
    heavy = [f"desktop.batch.{m} imports torch" for m in light
             for top, _ in imported_tops(ROOT / "desktop" / "batch" / f"{m}.py") if top == "torch"]
    assert not heavy, heavy


def imported_modules(path: Path):
    """(absolute module name, line) of every absolute import in ``path``."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, node.lineno


def installer_imports(path: Path):
    """(imported installer module, line) for every import of the installer in `path`, at any depth
    (`from installer import weights` imports installer.weights)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "installer":
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "installer":
            for alias in node.names:
                yield (f"installer.{alias.name}" if node.module == "installer" else node.module), node.lineno


def test_one_app_module_fetches_models():
    """The app reaches the installer in one place: desktop/jobs/models.py, the only module of desktop/ that imports
    the installer, and only installer.weights (the published text repos, the verified model download). The UI, the
    API, the CLI, the runner and the batch fetch models through it."""
    allowed = ROOT / "desktop" / "jobs" / "models.py"
    found = [(p, module, line) for p in sorted((ROOT / "desktop").rglob("*.py")) for module, line in installer_imports(p)]
    bad = [f"{p.relative_to(ROOT)}:{line} imports {module}" for p, module, line in found
           if p != allowed or module != "installer.weights"]
    assert not bad, bad
    assert {m for p, m, _ in found if p == allowed} == {"installer.weights"}      # the check sees its imports


def test_the_app_uses_the_export_through_its_package_only():
    """The library owns the export's schedule (ExportJob starts the early decimation; TexturedMesh writes the
    files): the app imports ``trellis.export``, its ``temp_dirs`` (the folder ownership read at start) and its
    ``formats`` (the table of file formats), never the stages inside it."""
    allowed = {"trellis.export", "trellis.export.temp_dirs", "trellis.export.formats"}
    bad = [f"{p.relative_to(ROOT)}:{line} imports {module}"
           for p in sorted((ROOT / "desktop").rglob("*.py"))
           for module, line in imported_modules(p)
           if module.startswith("trellis.export") and module not in allowed]
    assert not bad, bad
