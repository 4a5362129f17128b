"""The export's scheduler (``trellis.export.job.ExportJob``) and the caller's side work: it runs beside the export in a
thread of its own, at once or when the bake starts; its value, or its error, reaches the caller; a close (the job
failed, was cancelled or ended) stops it and waits for it; side work on the GPU waits at the gate while the export
reports a stage of the job's critical GPU path. Without a mesh, so cheap: the export run by the scheduler is
tested in test_export (the same bake as ``bake_textured_mesh``), its cancel in test_export_cancel and the app's
whole schedule in tests/desktop/jobs/test_overlapped_files.py."""
import threading
import time

import pytest

from trellis.export import ExportJob, SideWork


def test_side_work_runs_beside_and_its_value_or_error_reaches_the_caller():
    order = []

    def now(stopped):
        order.append("now")
        return threading.current_thread().name

    def later(stopped):
        order.append("later")
        return "made"

    def fails(stopped):
        raise OSError("disk full")
    with ExportJob(None, None, beside=[SideWork("now", now), SideWork("later", later, with_bake=True),
                                       SideWork("fails", fails)]) as export:
        assert export.side_result("now") == "trellis-now"
        time.sleep(0.05)
        assert order == ["now"]                  # the bake has not started: its side work waits for it
        assert export.bake() is None             # no mesh: nothing exported, the side work started
        assert export.side_result("later") == "made" and export.side_seconds("later") >= 0
        with pytest.raises(OSError, match="disk full"):
            export.side_result("fails")
        assert export.side_value_if_any("fails") is None and export.side_value_if_any("never started") is None
        with pytest.raises(ValueError, match="now"):
            export.start_side(SideWork("now", now))
    assert order == ["now", "later"]


def test_a_close_or_a_cancel_stops_the_side_work_and_waits_for_it():
    def loop(stopped):
        while not stopped():
            time.sleep(0.002)
        return "stopped"
    export = ExportJob(None, None, beside=[SideWork("loop", loop)])
    assert export.side_running("loop")
    export.close()                                # the job failed: nothing of it runs once close returns
    assert not export.side_running("loop") and export.side_value_if_any("loop") == "stopped"
    export.close()                                # idempotent
    cancelled = threading.Event()
    with ExportJob(None, None, beside=[SideWork("loop", loop)], cancel=cancelled.is_set) as export:
        cancelled.set()
        assert export.side_result("loop") == "stopped"


def test_side_work_on_the_gpu_waits_while_the_export_holds_the_critical_path():
    entered, go, checks = threading.Event(), threading.Event(), []

    def preview(stopped):
        entered.set()
        go.wait(5)
        checks.append(stopped())                  # its cancel check: held here while the gate is closed
        return threading.current_thread().name
    export = ExportJob(None, None, device="cpu", beside=[SideWork("preview", preview, on_gpu=True)])
    try:
        assert entered.wait(5)
        export.gate.on_progress("visibility", 0, 10)      # the export's visibility renders under way
        go.set()
        time.sleep(0.1)
        assert export.side_running("preview") and checks == []
        export.gate.on_progress("visibility", 10, 10)     # ... done: the preview goes on
        assert export.side_result("preview") == "trellis-preview" and checks == [False]
        assert export.held_s >= 0.05
    finally:
        export.close()
    # a close opens the gate: side work held there stops at once
    entered.clear()
    go.clear()
    export = ExportJob(None, None, device="cpu", beside=[SideWork("preview", preview, on_gpu=True)])
    assert entered.wait(5)
    export.gate.on_progress("visibility", 0, 10)
    go.set()
    time.sleep(0.05)
    export.close()
    assert checks == [False, True] and not export.side_running("preview")
