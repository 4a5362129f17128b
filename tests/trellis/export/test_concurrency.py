"""The export's concurrency has one home (``trellis.export.concurrency``, used by the scheduler ``job.ExportJob`` and
the stages): no other module of ``trellis/export/`` or of the app's job steps (``desktop/jobs/``) starts a thread, a
child process or a CUDA stream; the few app modules that start threads of their own, for work that is not the export,
are listed with their reason. The check reads the source (calls, not strings: a child's code text may name
``threading.Thread``) and is shown to catch a planted thread. And the primitives' contract: ``run_together`` waits
for every call before it raises the first error in order."""
import ast
import threading
import time
from pathlib import Path

import pytest

from trellis.export.concurrency import Background, on_own_stream, run_together

ROOT = Path(__file__).resolve().parents[3]
SCANNED = ("trellis/export", "desktop/jobs")
# The one module that starts them.
HOME = "trellis/export/concurrency.py"
# App modules that start threads for work other than the export, and why.
APP_THREADS = {
    "desktop/jobs/worker.py": "each device's worker loop",
    "desktop/jobs/late.py": "a server's runner made while its port already answers",
    "desktop/jobs/warmup.py": "the warm-up beside the model load, before any job",
}
# Calls that start a thread, a child process or a CUDA stream (the callee's dotted name, or its last part).
STARTERS = {"threading.Thread", "Thread", "ThreadPoolExecutor", "ProcessPoolExecutor", "multiprocessing.Process",
            "Process", "get_context", "multiprocessing.Pool", "Pool", "subprocess.Popen", "Popen", "subprocess.run",
            "subprocess.call", "subprocess.check_call", "subprocess.check_output", "os.fork", "os.posix_spawn",
            "torch.cuda.Stream", "cuda.Stream", "Stream"}


def dotted(node) -> str:
    """``a.b.c`` of a call's callee (a Name or an Attribute chain); "" for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.insert(0, node.id)
        return ".".join(parts)
    return ""


def starts(path: Path) -> list:
    """(line, callee) of every call in ``path`` that starts a thread, a child process or a CUDA stream."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Call):
            name = dotted(node.func)
            if name in STARTERS or name.rsplit(".", 1)[-1] in {"Thread", "ThreadPoolExecutor", "Popen"} \
                    or name.endswith("cuda.Stream"):
                found.append((node.lineno, name))
    return sorted(found)


def violations(root: Path = ROOT, allowed=(HOME, *APP_THREADS)) -> list:
    bad = []
    for top in SCANNED:
        for p in sorted((root / top).rglob("*.py")):
            rel = p.relative_to(root).as_posix()
            if rel not in allowed:
                bad += [f"{rel}:{line} {name}(" for line, name in starts(p)]
    return bad


def test_only_the_scheduler_starts_threads_children_or_streams():
    bad = violations()
    assert not bad, ("ask trellis.export.concurrency (through job.ExportJob's side work, or a primitive of its own) "
                     "instead:\n" + "\n".join(bad))
    assert starts(ROOT / HOME), "the check sees the home's own starts"
    for path, why in APP_THREADS.items():
        assert starts(ROOT / path) and why, f"{path} starts nothing now: remove it from APP_THREADS"


def test_the_check_catches_a_planted_thread(tmp_path):
    for top in SCANNED:
        (tmp_path / top).mkdir(parents=True)
    (tmp_path / "trellis/export/stage.py").write_text(
        "import threading\nfrom concurrent.futures import ThreadPoolExecutor\nimport subprocess, torch\n"
        "CHILD = 'threading.Thread(target=f).start()'\n"
        "def f():\n    threading.Thread(target=f).start()\n    ThreadPoolExecutor(2)\n"
        "    subprocess.Popen(['x'])\n    torch.cuda.Stream('cuda')\n")
    (tmp_path / "desktop/jobs/steps.py").write_text("from threading import Thread\nThread(target=print)\n")
    (tmp_path / "trellis/export/concurrency.py").write_text("import threading\nthreading.Thread(target=print)\n")
    assert violations(tmp_path) == ["trellis/export/stage.py:6 threading.Thread(",
                                    "trellis/export/stage.py:7 ThreadPoolExecutor(",
                                    "trellis/export/stage.py:8 subprocess.Popen(",
                                    "trellis/export/stage.py:9 torch.cuda.Stream(", "desktop/jobs/steps.py:2 Thread("]


def test_run_together_waits_for_every_call_before_it_raises_the_first_error():
    ended = []

    def slow():
        time.sleep(0.2)
        ended.append("slow")
        return "done"

    def fails(what):
        def run():
            raise ValueError(what)
        return run
    with pytest.raises(ValueError, match="first"):
        run_together({"a": fails("first"), "b": slow, "c": fails("second")}, "test-together")
    assert ended == ["slow"]
    got = run_together({"x": lambda: 1, "y": lambda: 2}, "test-together")
    assert [(k, v) for k, v, _ in got] == [("x", 1), ("y", 2)] and all(s >= 0 for _, _, s in got)


def test_background_gives_its_value_or_raises_its_error_in_the_caller():
    ok = Background("test-background", lambda: threading.current_thread().name)
    assert ok.result() == "test-background" and ok.seconds >= 0 and not ok.running()
    bad = Background("test-background", lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        bad.result()
    assert bad.value_if_any() is None
    assert on_own_stream("cpu", lambda: 7) == 7            # no stream off a GPU: the call itself
