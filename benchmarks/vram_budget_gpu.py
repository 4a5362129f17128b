"""A VRAM budget honoured beside another program: the app's whole job while a second process holds the rest of the GPU.

    python benchmarks/vram_budget_gpu.py [--work /tmp/app_gpu] [--object bunny] [--leave-gib 3.2] [--budget-gib 3]
                                         [--runs 1] [--dry-run]

(a) A holder process takes all of GPU 0's memory but ``--leave-gib`` (its own CUDA context included) and keeps it
until the end. (b) The app's whole job (`benchmarks/app_gpu.py`'s: the command-line generator, GLB + PLY + OBJ + MP4,
the realistic object swapped in for the random weights' outputs) in a fresh process with ``--vram-budget
--budget-gib``, balanced preset. (c) The same with the low-VRAM preset and no budget flag: its own default budget
(2.5 GiB). Each case reports whether every job finished with checked files, the whole job's peak allocated / reserved
memory (timings.json "memory", desktop/jobs/budget.py), whether the peak reserved stayed within the budget, the job
process's largest device memory as nvidia-smi saw it (reserved + the CUDA context, which the budget does not count)
and the least memory the device had free meanwhile. Prints one JSON line (last line of the output).

This parent process never touches CUDA itself (its context would take memory from the job): nvidia-smi only.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

GiB = 2 ** 30
MiB = 2 ** 20

# The holder: takes GPU memory in blocks until only `leave` bytes are free, says so (one JSON line), then holds it
# until its stdin closes.
HOLDER = r"""
import json, sys, torch
leave = int(float(sys.argv[1]) * 2 ** 30)
device = torch.device("cuda", 0)
torch.cuda.init()
torch.empty(1, device=device)                      # the context first: what is left is counted after it
blocks = []
while True:
    free, total = torch.cuda.mem_get_info(device)
    want = min(free - leave, 1 << 30) // (2 << 20) * (2 << 20)
    if want <= 0:
        break
    blocks.append(torch.empty(want, dtype=torch.uint8, device=device))
free, total = torch.cuda.mem_get_info(device)
print(json.dumps({"held_bytes": sum(b.numel() for b in blocks), "free_bytes": free, "total_bytes": total}), flush=True)
sys.stdin.read()
"""


def cases(budget_gib: float) -> list:
    """(name, preset, extra generate flags, the budget the job should run under)."""
    return [(f"budget {budget_gib:g} GiB", "balanced", ["--vram-budget", f"{budget_gib:g}"], budget_gib),
            ("low-vram preset default", "low-vram", [], 2.5)]


def smi(query: str) -> list:
    """Rows of `nvidia-smi --query-<query> --format=csv,noheader,nounits` (GPU 0), each a list of fields; [] when
    nvidia-smi cannot answer."""
    kind, fields = query.split("=", 1)
    try:
        out = subprocess.run(["nvidia-smi", f"--query-{kind}={fields}", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [[x.strip() for x in line.split(",")] for line in out.strip().splitlines() if line.strip()]


def mib(text: str):
    try:
        return float(text) * MiB
    except ValueError:
        return None


class Watch:
    """Polls nvidia-smi while a job runs: the device's least free memory, and the largest memory of process `pid`
    (None where nvidia-smi lists no processes, e.g. in a container's PID namespace)."""

    def __init__(self, pid: int, every_s: float = 0.2):
        self.pid, self.every_s = pid, every_s
        self.min_free = self.max_used = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self) -> None:
        while not self.stop.is_set():
            free = [mib(row[0]) for row in smi("gpu=memory.free")]
            if free and free[0] is not None:
                self.min_free = free[0] if self.min_free is None else min(self.min_free, free[0])
            for row in smi("compute-apps=pid,used_memory"):
                if len(row) == 2 and row[0] == str(self.pid) and mib(row[1]) is not None:
                    self.max_used = max(self.max_used or 0, mib(row[1]))
            self.stop.wait(self.every_s)

    def done(self) -> dict:
        self.stop.set()
        self.thread.join()
        return {"device_min_free_gib": gib(self.min_free), "process_max_used_gib": gib(self.max_used)}


def gib(x):
    return None if x is None else round(x / GiB, 3)


def run_case(name: str, preset: str, extra: list, budget: float, args, model: Path, image: Path) -> dict:
    from app_gpu import check_outputs, job_command, job_env, job_summary

    out = Path(args.work) / f"outputs-vram-{preset}-{name.split()[0]}"
    before = {p.name for p in out.iterdir()} if out.is_dir() else set()
    cmd = job_command(args.object, image, out, model, args.runs, preset, extra)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watch = Watch(proc.pid)
    _, stderr = proc.communicate()
    row = {"case": name, "preset": preset, "budget_gib": budget, "exit": proc.returncode,
           "wall_s": round(time.perf_counter() - t0, 2), **watch.done(), "jobs": []}
    folders = sorted(p for p in out.iterdir() if p.is_dir() and p.name not in before) if out.is_dir() else []
    for folder in folders:
        if (folder / "error.json").exists():
            error = json.loads((folder / "error.json").read_text())
            row["jobs"].append({"ok": False, "kind": error.get("kind"), "error": error.get("error"),
                                "memory": (error.get("timings") or {}).get("memory")})
            continue
        checked = check_outputs(folder)
        memory = checked["timings"].get("memory") or {}
        reserved = memory.get("peak_reserved_bytes")
        row["jobs"].append({"ok": True, **job_summary(checked["timings"]),
                            "within_budget": None if reserved is None else reserved <= budget * GiB,
                            "memory_policy": checked["timings"].get("memory_policy"),
                            "glb_faces": checked["glb_faces"], "mp4_frames": checked["mp4_frames"]})
    row["ok"] = proc.returncode == 0 and len(row["jobs"]) == args.runs and all(
        j["ok"] and j.get("within_budget") for j in row["jobs"])
    if not row["ok"]:
        row["stderr_tail"] = stderr[-1500:]
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/app_gpu", help="app_gpu.py's work folder (the random pipeline is made "
                                                             "there once)")
    ap.add_argument("--object", default="bunny", choices=("random", "bunny", "nut"))
    ap.add_argument("--leave-gib", type=float, default=3.2, help="GPU memory the holder leaves free (default 3.2)")
    ap.add_argument("--budget-gib", type=float, default=3.0, help="the budget of case (b) (default 3)")
    ap.add_argument("--runs", type=int, default=1, help="jobs per case in one process (the first loads the model)")
    ap.add_argument("--dry-run", action="store_true", help="print the cases' commands and stop (no GPU needed)")
    args = ap.parse_args(argv)
    work = Path(args.work)
    model, image = work / "TRELLIS-image-large-random", work / "object.png"
    if args.dry_run:
        from app_gpu import job_command

        commands = [{"case": name, "command": job_command(args.object, image, work / "out", model, args.runs,
                                                          preset, extra)[3:]}
                    for name, preset, extra, _ in cases(args.budget_gib)]
        print(json.dumps({"holder_leaves_gib": args.leave_gib, "cases": commands}))
        return 0
    from app_gpu import test_image, write_full_pipeline

    work.mkdir(parents=True, exist_ok=True)
    if not (model / "pipeline.json").exists():
        write_full_pipeline(model)            # on the CPU: no CUDA context in this process
    test_image(image)
    gpu = smi("gpu=name,memory.total")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(args.leave_gib)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        held = json.loads(holder.stdout.readline() or "{}")
        if not held:
            raise SystemExit("the holder process could not take the GPU's memory")
        rows = [run_case(name, preset, extra, budget, args, model, image)
                for name, preset, extra, budget in cases(args.budget_gib)]
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    from provenance import source_commit

    commit = source_commit()
    print(json.dumps({"gpu": gpu[0][0] if gpu else None, "commit": commit, "object": args.object,
                      "holder": {"held_gib": gib(held["held_bytes"]), "left_free_gib": gib(held["free_bytes"]),
                                 "total_gib": gib(held["total_bytes"])},
                      "ok": all(r["ok"] for r in rows), "cases": rows}))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
