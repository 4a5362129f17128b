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
