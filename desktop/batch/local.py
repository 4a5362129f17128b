"""The batch on one machine: one worker process per GPU (or N on the CPU), each loading its pipelines once.

Processes, not threads: a worker that crashes (or is killed) takes only its own items with it, and the
driver sees it at once (its pipe closes) and starts another. Each process sees only its GPU
(CUDA_VISIBLE_DEVICES, set before torch is imported) and makes two items at a time (worker.ItemWorker,
overlap.Overlap: one samples while the other's files are written). Messages go over one pipe per worker; a task goes to one
worker, so the driver knows which items a dead worker had.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import threading

from trellis.core.concurrency import start_process, start_thread

# A worker slot that dies this often is not restarted again (a broken GPU, a driver that kills it).
MAX_RESTARTS = 8
PER_WORKER = 2          # items in flight per worker: one sampling, one exporting


def worker_main(conn, visible: str | None, device: str, threads: int, per_worker: int = PER_WORKER) -> None:
    """The worker process: items in from `conn`, answers out, two at a time. Ends when the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)        # Ctrl-C is the driver's to handle
    if visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    from .worker import ItemWorker

    worker = ItemWorker(device, threads)
    tasks = queue.Queue()
    send = threading.Lock()

    def serve():
        while True:
            task = tasks.get()
            if task is None:
                return
            answer = worker.process(task)
            with send:
                try:
                    conn.send(("answer", task["id"], answer))
                except (OSError, EOFError):
                    os._exit(0)                          # the driver is gone

    threads_ = [start_thread(serve, f"trellis-batch-serve-{i}") for i in range(per_worker)]
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            os._exit(0)                                  # the driver is gone: stop at once
        if message[0] == "item":
            tasks.put(message[1])
        elif message[0] == "stop":
            for _ in threads_:
                tasks.put(None)
            for t in threads_:
                t.join()
            return


def local_devices(gpus, device, workers) -> list:
    """[(label, CUDA_VISIBLE_DEVICES, device inside the worker)] of the local workers: one per GPU of --gpus,
    `workers` on --device, else one per GPU here (or `workers` on the CPU when there is none)."""
    if gpus:
        return [(f"cuda:{g}", str(g), "cuda:0") for g in gpus]
    if device and device.startswith("cuda:"):
        g = device.split(":")[1]
        return [(f"{device}#{i}", g, "cuda:0") for i in range(workers or 1)]
    if device == "cpu":
        return [(f"cpu#{i}", "", "cpu") for i in range(workers or 1)]
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return [(f"cpu#{i}", "", "cpu") for i in range(workers or 1)]
    gpus = list(range(count))[:workers] if workers else list(range(count))
    return [(f"cuda:{g}", str(g), "cuda:0") for g in gpus]


class _Slot:
    def __init__(self, label: str, visible, device: str):
        self.label, self.visible, self.device = label, visible, device
        self.proc = self.conn = None
        self.tasks = {}                # task id -> task
        self.restarts = 0


class LocalPool:
    """`devices`: [(label, CUDA_VISIBLE_DEVICES value or None, device inside the worker)]."""

    def __init__(self, devices: list, common: dict, threads: int, per_worker: int = PER_WORKER):
        self.common = common           # task fields every task gets (model, text_model, out)
        self.threads, self.per_worker = threads, per_worker
        self.slots = [_Slot(*d) for d in devices]
        self.notes = []
        self._ctx = multiprocessing.get_context("spawn")

    def start(self) -> None:
        for slot in self.slots:
            self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        ours, theirs = self._ctx.Pipe()
        slot.proc = start_process(self._ctx, worker_main, (theirs, slot.visible, slot.device, self.threads,
                                                           self.per_worker), f"trellis-batch-{slot.label}")
        theirs.close()
        slot.conn = ours

    def idle(self) -> list:
        return [s for s in self.slots if s.proc is not None and len(s.tasks) < self.per_worker]

    def size(self) -> int:
        return sum(s.proc is not None for s in self.slots)

    def starting(self) -> bool:
        return False

    def workers(self) -> list:
        return [s.label for s in self.slots if s.proc is not None]

    def submit(self, slot: _Slot, task: dict) -> None:
        task = {**task, **self.common}
        slot.tasks[task["id"]] = task
        try:
            slot.conn.send(("item", task))
        except OSError:
            pass                       # dead already: poll() finds it and gives the task back

    def poll(self, timeout: float) -> list:
        live = [s for s in self.slots if s.proc is not None]
        if not live:
            return []
        waits = {s.conn: s for s in live}
        waits.update({s.proc.sentinel: s for s in live})
        finished = []
        for ready in multiprocessing.connection.wait(list(waits), timeout):
            slot = waits[ready]
            if slot.proc is None:
                continue
            if ready is slot.conn:
                finished += self._drain(slot)
            if not slot.proc.is_alive() or ready is slot.proc.sentinel:
                finished += self._drain(slot)
                finished += self._died(slot)
        return finished

    def _drain(self, slot: _Slot) -> list:
        out = []
        try:
            while slot.conn.poll():
                kind, task_id, answer = slot.conn.recv()
                task = slot.tasks.pop(task_id, None)
                if task is not None:
                    out.append((task, answer))
        except (EOFError, OSError):
            pass
        return out

    def _died(self, slot: _Slot) -> list:
        slot.proc.join(5)
        code = slot.proc.exitcode
        lost = [(task, None) for task in slot.tasks.values()]
        slot.tasks = {}
        slot.conn.close()
        slot.proc = slot.conn = None
        how = f"signal {-code}" if isinstance(code, int) and code < 0 else f"exit code {code}"
        if slot.restarts < MAX_RESTARTS:
            slot.restarts += 1
            self.notes.append(f"worker {slot.label} died ({how}) with {len(lost)} item(s); starting another")
            self._spawn(slot)
        else:
            self.notes.append(f"worker {slot.label} died ({how}) {MAX_RESTARTS + 1} times; not restarted")
        return lost

    def close(self, kill: bool = False) -> None:
        for slot in self.slots:
            if slot.proc is None:
                continue
            if kill:
                slot.proc.kill()
            else:
                try:
                    slot.conn.send(("stop",))
                except OSError:
                    pass
        for slot in self.slots:
            if slot.proc is not None:
                slot.proc.join(10 if kill else 60)
                if slot.proc.is_alive():
                    slot.proc.kill()
                    slot.proc.join(5)
                slot.conn.close()
                slot.proc = slot.conn = None
