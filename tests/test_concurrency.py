"""Threads, child processes and CUDA streams have one home in the whole tree (``trellis.core.concurrency``, the
library's bottom layer: the export's scheduler ``ExportJob`` and its stages, the model loader, the sampler and the app
all ask it): no other module of ``trellis/`` or ``desktop/`` starts one. The check reads the source (calls, not
strings: a child's code text may name ``threading.Thread``) and is shown to catch a planted thread, process and
stream. And the primitives' contract: ``run_together`` waits for every call before it raises the first error in
order."""
import ast
import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from trellis.core.concurrency import Background, new_thread, on_own_stream, run_together, start_process

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("trellis", "desktop")
# The one module that starts them.
HOME = "trellis/core/concurrency.py"
# Calls that start a thread, a child process or a CUDA stream (the callee's dotted name, or its last part).
STARTERS = {"subprocess.run", "subprocess.call", "subprocess.check_call", "subprocess.check_output", "os.fork",
            "os.forkpty", "os.posix_spawn", "os.posix_spawnp", "os.spawnl", "os.spawnv", "os.system", "os.popen",
            "_thread.start_new_thread", "asyncio.create_subprocess_exec", "asyncio.create_subprocess_shell",
            "multiprocessing.Pool", "Pool"}
LAST_PARTS = {"Thread", "Timer", "ThreadPool", "ThreadPoolExecutor", "ProcessPoolExecutor", "Process", "Popen", "Stream"}
# Names that end like a starter and start nothing here: Gradio's Timer is a page component that ticks in the browser.
NOT_STARTERS = {"gr.Timer"}


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
            if name not in NOT_STARTERS and (name in STARTERS or name.rsplit(".", 1)[-1] in LAST_PARTS):
                found.append((node.lineno, name))
    return sorted(found)


def violations(root: Path = ROOT, allowed=(HOME,)) -> list:
    bad = []
    for top in SCANNED:
        for p in sorted((root / top).rglob("*.py")):
            rel = p.relative_to(root).as_posix()
            if rel not in allowed:
                bad += [f"{rel}:{line} {name}(" for line, name in starts(p)]
    return bad


def test_only_the_one_home_starts_threads_children_or_streams():
    bad = violations()
    assert not bad, ("ask trellis.core.concurrency (the export through trellis.export.ExportJob's side work, or a "
                     "primitive of its own) instead:\n" + "\n".join(bad))
    assert starts(ROOT / HOME), "the check sees the home's own starts"
    assert not (ROOT / "trellis/export/concurrency.py").exists() and not (ROOT / "desktop/batch/overlap.py").exists()


def test_the_check_catches_a_planted_thread(tmp_path):
    for top in ("trellis/export", "trellis/models", "desktop/jobs", "desktop/batch", "trellis/core"):
        (tmp_path / top).mkdir(parents=True)
    (tmp_path / "trellis/export/stage.py").write_text(
        "import threading\nfrom concurrent.futures import ThreadPoolExecutor\nimport subprocess, torch\n"
        "CHILD = 'threading.Thread(target=f).start()'\n"
        "def f():\n    threading.Thread(target=f).start()\n    ThreadPoolExecutor(2)\n"
        "    subprocess.Popen(['x'])\n    torch.cuda.Stream('cuda')\n")
    (tmp_path / "desktop/jobs/steps.py").write_text("from threading import Thread\nThread(target=print)\n")
    (tmp_path / "desktop/batch/local.py").write_text("import multiprocessing as mp\nctx = mp.get_context('spawn')\n"
                                                     "ctx.Process(target=print).start()\n")
    (tmp_path / "trellis/models/load.py").write_text("import torch\ns = torch.cuda.Stream(0)\n")
    (tmp_path / "trellis/core/concurrency.py").write_text("import threading\nthreading.Thread(target=print)\n")
    assert violations(tmp_path) == ["trellis/export/stage.py:6 threading.Thread(",
                                    "trellis/export/stage.py:7 ThreadPoolExecutor(",
                                    "trellis/export/stage.py:8 subprocess.Popen(",
                                    "trellis/export/stage.py:9 torch.cuda.Stream(",
                                    "trellis/models/load.py:2 torch.cuda.Stream(",
                                    "desktop/batch/local.py:3 ctx.Process(", "desktop/jobs/steps.py:2 Thread("]


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


def test_a_new_thread_waits_for_its_owner_and_a_process_starts_at_once():
    box = []
    thread = new_thread(box.append, "test-new-thread", args=(1,))
    time.sleep(0.05)
    assert box == [] and not thread.is_alive() and thread.daemon
    thread.start()
    thread.join()
    assert box == [1]
    proc = start_process(multiprocessing.get_context("spawn"), time.sleep, (0,), "test-process")
    proc.join(60)
    assert proc.name == "test-process" and proc.daemon and proc.exitcode == 0
