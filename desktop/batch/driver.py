"""The batch's driver: which items still need making (resume), and the loop that hands them to a pool of
workers, retries what failed or was lost with a dead worker, and records every outcome in the manifest.

A pool (local.LocalPool, ray_pool.RayPool) has:
    start()                       start the workers (they load their pipelines on their first item)
    idle() -> [worker]            workers with room for one more item (each takes two: one samples while
                                  the other is exported)
    submit(worker, task)
    poll(timeout) -> [(task, answer)]   finished items; answer None when the worker died with the item
                                  (the pool replaces the worker); a pool message goes to `pool.notes`
    size() -> int                 live workers
    workers() -> [label]
    close(kill=False)
"""
from __future__ import annotations

import collections
import errno
import random
from pathlib import Path

from ..settings import GenerationSettings
from . import manifest as mf

# The failure kind of an item whose worker died with it. It counts as an attempt (--retries), so that a
# poison input cannot take down every worker of the cluster in turn.
DIED = "worker_died"


def plan(items: list, base: GenerationSettings, out_dir, log: mf.Manifest, say) -> tuple:
    """(tasks to run, names skipped as already done, items that cannot run: [(name, message)]).

    Skipped: the manifest says done and the folder is complete, or a complete folder of this item is
    there. A folder at OUT/<name> that is incomplete is set aside (never deleted) and the item made again;
    one that is another input's result fails that item. A seed drawn for an item (randomize_seed) is
    drawn once, recorded, and kept by later reruns."""
    out_dir = Path(out_dir)
    last = log.last()
    seeds = log.planned_seeds()
    rng = random.SystemRandom()
    tasks, skipped, bad = [], [], []
    for item in items:
        key = mf.source_key(item.kind, item.identity())
        final = out_dir / item.name
        problem = mf.folder_problem(final, key)
        if problem is None:
            skipped.append(item.name)
            if last.get(item.name, {}).get("event") != "done":
                log.append("done", item=item.name, key=key, recovered=True)
            continue
        if item.problem:
            bad.append((item.name, item.problem))
            continue
        if problem == "not this item's folder":
            if mf.folder_item_key(final) is None and not _is_job_folder(final):
                bad.append((item.name, f"{final} exists and is not a batch item's folder; move it away or "
                                       "choose another -o"))
                continue
            if mf.folder_item_key(final) not in (None, key):
                bad.append((item.name, f"{final} holds the result of another input with the same name; "
                                       "rename the item (a `name` column) or choose another -o"))
                continue
        if problem != "missing":
            moved = mf.set_aside(out_dir, final)
            say(f"{item.name}: its folder was incomplete ({problem}); moved to {moved}, making it again")
        settings = item.settings(base)
        seed_was_random = settings.randomize_seed
        if settings.randomize_seed:
            old_key, old_seed = seeds.get(item.name, (None, None))
            seed = old_seed if old_key == key and isinstance(old_seed, int) else rng.randint(0, 2 ** 31 - 1)
            settings = settings.replace(seed=seed, randomize_seed=False)
        look = {"mesh": item.mesh} if item.mesh is not None else {}
        asked = {"family": item.family} if item.family is not None else {}
        log.append("planned", item=item.name, key=key, kind=item.kind, source=item.source, **look, **asked,
                   seed=settings.seed)
        tasks.append({"id": item.name, "name": item.name, "kind": item.kind, "source": item.source, "key": key,
                      "settings": settings.to_dict(), "explicit": sorted(settings.explicit),
                      "seed_was_random": seed_was_random, "attempt": 0, **look, **asked})
    return tasks, skipped, bad


def _is_job_folder(path: Path) -> bool:
    return (path / mf.job_folder.SETTINGS).is_file()


class Scheduler:
    """Hands tasks to the pool's workers and takes their answers until every task is finished or stopped."""

    def __init__(self, pool, log: mf.Manifest, display, out_dir, retries: int = 2, max_failures: int = 0):
        self.pool, self.log, self.display = pool, log, display
        self.out_dir = Path(out_dir)
        self.retries, self.max_failures = max(0, retries), max(0, max_failures)
        self.queue = collections.deque()
        self.in_flight = 0
        self.failures = []             # (name, message)
        self.done = self.retried = self.lost = 0
        self.stopped = None            # why scheduling stopped early (max failures, the model cannot load)
        self.per_worker = {}           # label -> {"items", "sample", "export"}

    def run(self, tasks: list) -> None:
        self.queue.extend(tasks)
        while self.queue or self.in_flight:
            while self.queue and not self.stopped:
                idle = self.pool.idle()
                if not idle:
                    break
                self.pool.submit(idle[0], self.queue.popleft())
                self.in_flight += 1
            if self.stopped and not self.in_flight:
                break
            for task, answer in self.pool.poll(0.5):
                self.in_flight -= 1
                self._take(task, answer)
            for note in self.pool.notes:
                self.display.say(note)
            self.pool.notes.clear()
            self.display.workers = self.pool.size()
            self.display.update()
            if self.queue and not self.stopped and self.pool.size() == 0 and not self.pool.starting():
                self.stopped = "no worker is left (each one died or could not start)"

    def _take(self, task: dict, answer) -> None:
        name = task["name"]
        if answer is None:
            self.lost += 1
            answer = {"state": "failed", "kind": DIED, "retry": True,
                      "error": "its worker died while making it (killed, or the process crashed)"}
        if answer["state"] == "done" and "files" in answer:    # a worker without the shared folder: written here
            answer = self._land(name, answer)
        if answer["state"] == "done":
            duplicate = bool(answer.get("duplicate"))
            self.log.append("done", item=name, key=task["key"], attempt=task["attempt"] + 1,
                            duplicate=duplicate, worker=_label(answer), seconds=answer.get("seconds"))
            self.done += 1
            self.display.done += 1
            stats = self.per_worker.setdefault(_label(answer), {"items": 0, "sample": 0.0, "export": 0.0})
            stats["items"] += 1
            for k in ("sample", "export"):
                stats[k] += (answer.get("seconds") or {}).get(k, 0.0)
            for warning in answer.get("warnings") or ():
                self.display.say(f"{name}: warning: {warning}")
            self.display.update(force=True)
            return
        task["attempt"] += 1
        if answer.get("retry") and task["attempt"] <= self.retries:
            self.retried += 1
            self.log.append("retry", item=name, attempt=task["attempt"], kind=answer.get("kind"),
                            error=answer.get("error"), worker=_label(answer))
            self.display.say(f"{name}: attempt {task['attempt']} failed ({answer.get('error')}); trying again")
            self.queue.appendleft(task)
            return
        self.fail(name, answer.get("error") or "failed", answer.get("kind"), task["attempt"])
        if answer.get("kind") == "model" and not self.stopped:
            self.stopped = "the model could not be loaded"

    def _land(self, name: str, answer: dict) -> dict:
        """Write the files a worker returned and move them onto OUT/<name>; a write that fails (a full disk)
        fails this attempt, as it would have failed on the worker."""
        try:
            work = mf.write_files(self.out_dir, name, answer.pop("files"))
            return {**answer, "duplicate": not mf.commit(work, self.out_dir / name)}
        except OSError as err:
            full = err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1), errno.EFBIG)
            message = (f"the outputs folder is full ({self.out_dir}): free some disk space there or choose another "
                       "outputs folder, then try again." if full
                       else f"could not write {err.filename or self.out_dir}: {err.strerror or err}")
            return {**answer, "state": "failed", "kind": "disk" if full else "internal", "error": message,
                    "retry": True}

    def fail(self, name: str, message: str, kind=None, attempts: int = 0) -> None:
        self.log.append("failed", item=name, kind=kind, error=message, attempts=attempts)
        self.failures.append((name, message))
        self.display.failed += 1
        self.display.say(f"{name}: FAILED: {message}")
        if self.max_failures and len(self.failures) >= self.max_failures and not self.stopped:
            self.stopped = f"{len(self.failures)} item(s) failed (--max-failures {self.max_failures})"


def _label(answer: dict) -> str:
    host = answer.get("host")
    return f"{answer.get('device', '?')} pid {answer.get('pid', '?')}" + (f" on {host}" if host else "")
