"""Our chart layout beside the observation renders: alone, in a thread while this process renders views (as the
export ran it) and in a warm child process of its own meanwhile (as ``trellis.export.uv.in_child`` runs it), on the
realistic objects' cleaned meshes; the renders alone for scale. Results: docs/benchmarks/app.md (the chart layout
in a child process).

    python benchmarks/uv_contention_gpu.py --shapes nut bunny --runs 3 [--device cuda] [--out uv.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CHILD = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from trellis.export.uv.geometric import geometric_layout
print("ready", flush=True)
for line in sys.stdin:
    src, dst = line.split()
    d = np.load(src)
    v, f, uv, vm = geometric_layout(d["v"], d["f"], 1024, 2)
    np.savez(dst + ".tmp.npz", v=v, f=f, uv=uv, vm=vm)
    os.replace(dst + ".tmp.npz", dst)
    print("done", flush=True)
"""


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["nut", "bunny"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    from realistic_objects import realistic_object
    from trellis.export.bake.observations import observation_cameras, render_observations
    from trellis.export.cleanup.chain import clean_mesh_for_export
    from trellis.export.uv.geometric import geometric_layout

    dev = torch.device(a.device)
    results = {}
    child = subprocess.Popen([sys.executable, "-P", "-c", CHILD, str(ROOT)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir())
    assert child.stdout.readline().strip() == "ready"
    tmp = tempfile.mkdtemp()
    for shape in a.shapes:
        g, m = realistic_object(shape, device=a.device)
        v, f = clean_mesh_for_export(m["vertices"], m["faces"], simplify=0.975, device=dev)
        v, f = np.asarray(v), np.asarray(f)
        ext, intr = observation_cameras(50, device=dev)

        def views():
            while True:
                for view in render_observations(g, ext, intr, 1024, gaussian_scale=0.6):
                    yield view

        stream = views()
        geometric_layout(v, f, 1024, 2)
        rows = {"faces": int(len(f))}

        def alone():
            t = time.perf_counter()
            geometric_layout(v, f, 1024, 2)
            return time.perf_counter() - t, 0

        def threaded():
            box = {}

            def work():
                t = time.perf_counter()
                geometric_layout(v, f, 1024, 2)
                box["s"] = time.perf_counter() - t
            th = threading.Thread(target=work)
            th.start()
            n = 0
            while th.is_alive():
                next(stream)
                n += 1
            th.join()
            sync(dev)
            return box["s"], n

        def in_child():
            src, dst = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
            if os.path.exists(dst):
                os.remove(dst)
            t = time.perf_counter()
            np.savez(src, v=v, f=f)
            child.stdin.write(f"{src} {dst}\n")
            child.stdin.flush()
            n = 0
            while not os.path.exists(dst):
                next(stream)
                n += 1
            d = np.load(dst)
            _ = d["uv"]
            s = time.perf_counter() - t
            assert child.stdout.readline().strip() == "done"
            sync(dev)
            return s, n

        def renders_alone():
            sync(dev)
            t = time.perf_counter()
            for _ in range(20):
                next(stream)
            sync(dev)
            return (time.perf_counter() - t) / 20, 20

        for name, fn in (("alone", alone), ("thread", threaded), ("child", in_child), ("render", renders_alone)):
            fn()
            got = [fn() for _ in range(a.runs)]
            rows[name] = {"seconds": [round(s, 3) for s, _ in got], "views": [n for _, n in got]}
            print(shape, name, rows[name], flush=True)
        results[shape] = rows
    child.stdin.close()
    child.wait()
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
