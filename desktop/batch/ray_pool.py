"""The batch on a Ray cluster: one actor per GPU on every node, each loading its pipelines once.

Imported only with `--ray` (Ray is an optional extra: requirements_ray.txt). Each actor asks Ray for one
unit of `resource` ("GPU": Ray sets CUDA_VISIBLE_DEVICES to the GPU it gave; a custom resource stands in
for GPUs in the tests) and makes two items at a time (max_concurrency=2: one samples while the other is
exported, worker.ItemWorker). Image bytes (and a look's mesh) travel through Ray's object store, so the workers
need no access to the driver's files. Where a worker sees the driver's outputs folder (shared storage; checked by
a probe file the driver writes), it moves the finished folder there itself; elsewhere it returns the
files and the driver writes them. An actor that dies (killed, its node lost) fails its items with
RayActorError: they go back to the queue, and a new actor is asked for in its place, wherever Ray finds
the resource.

On the CPU (`--device cpu`, resource "CPU"), a worker is one actor per node, using all its cores, as a
local `--device cpu` worker uses the machine's: one per core would hold a model copy per core. It asks
Ray for one CPU (so that it can start beside other work) and is pinned to its node.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from . import manifest as mf
from .files import read_regular

PER_WORKER = 2
# Larger than any image the app opens; a larger file is left for the worker to refuse.
IMAGE_MAX_BYTES = 1 << 30
MAX_REPLACEMENTS = 16      # actors started in place of dead ones, in all


class BatchActor:
    """The actor: an ItemWorker on the device Ray gave it."""

    def __init__(self, device: str | None, threads: int | None, resource: str = "GPU"):
        import torch

        from .worker import ItemWorker

        # Ray gives an actor without CPUs of its own OMP_NUM_THREADS=1: the export (and torch on the CPU)
        # would run on one core. Share the node's cores among its workers instead, as the local mode does.
        threads = threads or max(1, (os.cpu_count() or 1) // _units_on_this_node(resource))
        os.environ["OMP_NUM_THREADS"] = str(threads)       # for the export's child processes too
        if device is None:
            device = "cuda:0" if torch.cuda.is_available() else "cpu"
        self.worker = ItemWorker(device, threads)

    def ready(self, probe: str, token: str) -> dict:
        try:
            with open(probe, encoding="utf-8") as f:
                shared = f.read().strip() == token
        except OSError:
            shared = False
        return {"pid": self.worker.pid, "host": self.worker.host, "device": self.worker.device, "shared": shared}

    def process(self, task: dict, data) -> dict:
        return self.worker.process(task, data)


class _Actor:
    def __init__(self, handle, ready_ref):
        self.handle, self.ready_ref = handle, ready_ref
        self.node = None               # the node a CPU worker is pinned to
        self.info = None               # ready()'s answer once it came
        self.refs = set()


class RayPool:
    def __init__(self, address: str, resource: str, device: str | None, max_workers: int | None, common: dict,
                 output: str = "auto", threads: int | None = None, per_worker: int = PER_WORKER):
        self.address, self.resource, self.device = address, resource, device
        self.max_workers, self.common, self.output, self.threads = max_workers, common, output, threads
        self.per_worker = per_worker
        self.notes = []
        self.actors = []
        self.in_flight = {}            # ref -> (actor, task)
        self.data = {}                 # item name -> ObjectRef of its image bytes (kept for retries)
        self.replacements = 0
        self.we_started = False
        self.cpu_nodes = []            # [(node id, CPUs)] where CPU workers go

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        import ray

        if not ray.is_initialized():
            env = {"env_vars": _actor_env()}
            try:
                if self.address == "local":
                    ray.init(runtime_env=env, log_to_driver=False, include_dashboard=False)
                else:
                    _check_reachable(self.address)
                    ray.init(address=self.address, runtime_env=env, log_to_driver=False)
            except Exception as err:
                raise RuntimeError(f"cannot join the Ray cluster at {self.address}: {str(err).strip()[:300]}; start "
                                   "one with `ray start --head` on this or another machine (or use --ray local "
                                   "for this machine alone)") from None
            self.we_started = True
        if self.resource == "CPU":
            self.cpu_nodes = _cpu_nodes()
            total = len(self.cpu_nodes)
        else:
            total = int(ray.cluster_resources().get(self.resource, 0))
        if total < 1 and self.resource == "CPU":
            raise RuntimeError("the Ray cluster has no node with a CPU for workers")
        if total < 1:
            raise RuntimeError(f"the Ray cluster has no {self.resource!r} resource (no GPU on any node?); start "
                               "the nodes with GPUs (`ray start ...` on a machine with NVIDIA GPUs) or name the "
                               "resource with --ray-resource")
        self.target = min(total, self.max_workers) if self.max_workers else total
        out = Path(self.common["out"])
        (out / mf.WORK_DIR).mkdir(parents=True, exist_ok=True)
        self.token = uuid.uuid4().hex
        self.probe = out / mf.WORK_DIR / f"probe-{self.token[:8]}"
        self.probe.write_text(self.token, encoding="utf-8")
        self._remote = ray.remote(BatchActor)
        for _ in range(self.target):
            self._new_actor()

    def _new_actor(self, node=None) -> None:
        options = {"max_concurrency": self.per_worker, "num_cpus": 0,
                   "runtime_env": {"env_vars": _actor_env()}}
        threads = self.threads
        if self.resource == "GPU":
            options["num_gpus"] = 1
        elif self.resource == "CPU":
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            taken = {a.node for a in self.actors}
            node = node or next((n for n in self.cpu_nodes if n[0] not in taken), self.cpu_nodes[0])
            # soft: a replacement whose node is gone starts on another one
            options.update(num_cpus=1, scheduling_strategy=NodeAffinitySchedulingStrategy(node[0], soft=True))
            threads = threads or node[1]
        else:
            options["resources"] = {self.resource: 1}
        handle = self._remote.options(**options).remote(self.device, threads, self.resource)
        actor = _Actor(handle, handle.ready.remote(str(self.probe), self.token))
        actor.node = node[0] if node else None
        self.actors.append(actor)

    # ------------------------------------------------------------------ the pool
    def idle(self) -> list:
        return [a for a in self.actors if a.info is not None and len(a.refs) < self.per_worker]

    def size(self) -> int:
        return sum(a.info is not None for a in self.actors)

    def starting(self) -> bool:
        return any(a.info is None for a in self.actors)

    def workers(self) -> list:
        return [f"{a.info['device']} on {a.info['host']}" for a in self.actors if a.info]

    def submit(self, actor: _Actor, task: dict) -> None:
        import ray

        task = {**task, **self.common, "return_files": self._returns(actor)}
        data = None
        if task["kind"] in ("image", "look"):
            if task["name"] not in self.data:
                try:
                    image = read_regular(task["source"], IMAGE_MAX_BYTES, "an image file")
                    # a look's mesh travels beside its image (the largest the app opens: meshes.MAX_MESH_BYTES)
                    files = (image, read_regular(task["mesh"], IMAGE_MAX_BYTES, "a 3-D model file")) \
                        if task["kind"] == "look" else image
                    self.data[task["name"]] = ray.put(files)
                except OSError:
                    self.data[task["name"]] = None        # the worker reports the problem as the item's
            data = self.data[task["name"]]
        ref = actor.handle.process.remote(task, data)
        actor.refs.add(ref)
        self.in_flight[ref] = (actor, task)

    def poll(self, timeout: float) -> list:
        import ray

        waiting = {a.ready_ref: a for a in self.actors if a.info is None}
        refs = list(self.in_flight) + list(waiting)
        if not refs:
            return []
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        finished = []
        for ref in ready:
            if ref in waiting:
                self._started(waiting[ref], ref)
                continue
            actor, task = self.in_flight.pop(ref)
            actor.refs.discard(ref)
            try:
                finished.append((task, ray.get(ref)))
            except ray.exceptions.RayActorError:
                finished.append((task, None))
                self._lost(actor)
            except ray.exceptions.RayError as err:    # the call failed inside Ray (e.g. unpickling)
                finished.append((task, {"state": "failed", "kind": "internal", "retry": True,
                                        "error": f"the Ray call failed: {err}"}))
        return finished

    def _returns(self, actor: _Actor) -> bool:
        """Whether this worker sends its files back (it cannot see OUT, or --ray-output driver)."""
        return self.output == "driver" or (self.output == "auto" and not actor.info["shared"])

    def _started(self, actor: _Actor, ref) -> None:
        import ray

        try:
            actor.info = ray.get(ref)
        except ray.exceptions.RayError as err:
            self.notes.append(f"a Ray worker could not start: {str(err).splitlines()[0]}")
            self._lost(actor)
            return
        where = "returns its files to the driver" if self._returns(actor) else "writes to the outputs folder"
        self.notes.append(f"worker {actor.info['device']} on {actor.info['host']} (pid {actor.info['pid']}) ready; "
                          f"it {where}")

    def _lost(self, actor: _Actor) -> None:
        import ray

        if actor not in self.actors:
            return
        self.actors.remove(actor)
        who = f"{actor.info['device']} on {actor.info['host']} (pid {actor.info['pid']})" if actor.info else "starting"
        try:
            ray.kill(actor.handle)
        except Exception:
            pass
        if self.replacements < MAX_REPLACEMENTS:
            self.replacements += 1
            self.notes.append(f"worker {who} died; its items go back to the queue, a new worker is started")
            node = next((n for n in self.cpu_nodes if n[0] == actor.node), None)
            self._new_actor(node)
        else:
            self.notes.append(f"worker {who} died; {MAX_REPLACEMENTS} workers were replaced already, not this one")

    def close(self, kill: bool = False) -> None:
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor.handle)
            except Exception:
                pass
        self.actors = []
        self.data.clear()
        try:
            self.probe.unlink()
        except (OSError, AttributeError):
            pass
        if self.we_started:
            ray.shutdown()


CONNECT_TIMEOUT_S = 5.0


def _check_reachable(address: str) -> None:
    """For an address HOST:PORT (or ray://HOST:PORT): raise at once, with the reason, when nothing accepts a
    connection there. ray.init would otherwise wait for the cluster's GCS for minutes, saying nothing useful.
    "auto" (the cluster this machine belongs to) is left to Ray, which fails fast when there is none."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return                        # "auto" or a form Ray resolves itself
    host = host.strip("[]") or "127.0.0.1"
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise RuntimeError(f"nothing answers at {hostport} ({reason} after at most {CONNECT_TIMEOUT_S:.0f} s)") from None


def _cpu_nodes() -> list:
    """[(node id, CPUs)] of the live nodes with a CPU, most CPUs first: where CPU workers go, one each."""
    import ray

    nodes = [(n["NodeID"], int(n.get("Resources", {}).get("CPU", 0))) for n in ray.nodes() if n.get("Alive")]
    return sorted((n for n in nodes if n[1] >= 1), key=lambda n: -n[1])


def _units_on_this_node(resource: str) -> int:
    """How many workers this node can hold (its units of `resource`), at least 1."""
    import ray

    try:
        node = ray.get_runtime_context().get_node_id()
        found = [n["Resources"].get(resource, 0) for n in ray.nodes() if n.get("NodeID") == node]
        return max(1, int(found[0])) if found else 1
    except Exception:
        return 1


# Settings of the driver's environment that the actors (on any node) must see too.
_FORWARDED_ENV = ("TRELLIS_COMPILE_FLOWS", "TRELLIS_FAST_PATHS")


def _actor_env() -> dict:
    env = {"PYTHONPATH": _pythonpath()}
    env.update({k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ})
    return env


def _pythonpath() -> str:
    """This checkout first, so that every worker imports the same desktop/ and trellis/ (a multi-node
    cluster needs the app at the same path on each node)."""
    root = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH", "")
    return root + (os.pathsep + rest if rest else "")
