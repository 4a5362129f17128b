"""Launch -> first GLB (issue 14 §5): the real REST API server started in a fresh process, timed from the process
start to the server answering, the model loaded, the first job's GLB and the second (warm) job's GLB.

    python benchmarks/launch_gpu.py [--work DIR] [--preset balanced] [--submit-after 0,10] [--warmup on,off]
                                    [--bytecode cached|as-is] [--discard-first 1|0]
                                    [--object random|bunny|nut] [--out launch_gpu.json] [--md launch_gpu.md]
    python benchmarks/launch_gpu.py --tiny --device cpu       # the code path on a CPU, tiny pipeline

The model is the full-size random-weight TRELLIS-image-large folder of app_gpu.py (written once under --work;
shapes decide time and memory), on an RGBA example from assets/ (its alpha is used as it is: no background
removal, so no u2net download; the run needs no network). Each run is one fresh `python -m desktop api`
process (nothing warm but the OS file cache, Triton's on-disk kernel cache and Python's bytecode of our modules,
which a user's second launch has too: ``--bytecode``; the first launch, with the server's packages still cold in the
page cache, is run and kept apart: ``--discard-first``): it waits `--submit-after` seconds after the server answers
(0: a script that posts at once; 10: a user picking an image), posts a job (GLB only, the preset's settings), then a
second one when the first is done.
`--warmup off` starts the server with --no-warmup (what the app did before the background warm-up).

Columns, seconds from the process start: server answers /ping; /v1/health says the model is loaded; the first and
second GLB are written (the job is done); and each job from its submission. The server's own log lines of the
warm-up (model load, kernel warm run) and each job's timings.json (load_model, pipeline, export) come with it.
Each launch is written to --out and --md as it ends (a failed one under `failed`, with why), and an answer of the
server that is not JSON is noted in its row (`answers_not_json`: status, type, body) instead of ending the run.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

IMAGE = ROOT / "assets" / "examples" / "mug.png"
POLL_S = 0.02


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_folder(work: Path, tiny: bool) -> Path:
    if tiny:
        from trellis.tools.tiny_pipeline import write_tiny_pipeline

        folder = work / "tiny"
        if not (folder / "pipeline.json").exists():
            write_tiny_pipeline(str(folder), seed=0)
        return folder
    from app_gpu import write_full_pipeline

    folder = work / "TRELLIS-image-large-random"
    if not (folder / "pipeline.json").exists():
        t0 = time.perf_counter()
        write_full_pipeline(folder)
        print(f"wrote the full-size random pipeline in {time.perf_counter() - t0:.1f} s", flush=True)
    return folder


def job_settings(preset: str, tiny: bool) -> dict:
    body = {"preset": preset, "seed": 3, "formats": ["glb"]}
    if tiny:
        body.update(ss_steps=2, slat_steps=2, texture_size=64, bake_views=4, bake_resolution=64, fill_holes=False)
    return body


def bytecode_env(work: Path, cached: bool) -> dict:
    """The server's environment for Python's bytecode: ``cached`` (what a user's second launch has) writes and reads
    it under WORK/pycache even where PYTHONDONTWRITEBYTECODE is set (the lent GPU hosts set it: every process there
    compiled every module of ours from source) and compiles the repository's packages into it first; else as given."""
    env = dict(os.environ)
    if cached:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0",
                        *[str(ROOT / d) for d in ("trellis", "desktop", "extensions", "benchmarks", "installer")]],
                       env=env, check=False, stdout=subprocess.DEVNULL)
    return env


def one_launch(model: Path, outputs: Path, device: str, warmup: bool, submit_after: float, body: dict,
               obj: str, base_env: dict | None = None) -> dict:
    """One fresh server process, two jobs; seconds from the process start."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    from app_gpu import DESKTOP, REALISTIC_BOOTSTRAP

    code, args = (DESKTOP, []) if obj == "random" else (REALISTIC_BOOTSTRAP, [obj])
    head = [sys.executable, "-c", code, *args]
    cmd = [*head, "api", "--model", str(model), "--port", str(port), "--outputs", str(outputs), "--device", device]
    if not warmup:
        cmd.append("--no-warmup")
    base_env = os.environ if base_env is None else base_env
    env = {**base_env, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "benchmarks"),
                                                      *filter(None, [base_env.get("PYTHONPATH")])])}
    for name in ("TRELLIS_DESKTOP_API_TOKEN", "TRELLIS_DESKTOP_WARMUP"):
        env.pop(name, None)
    log: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def read_log():
        for line in proc.stderr:
            log.append((time.perf_counter() - t0, line.rstrip()))
    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    row = {"warmup": "on" if warmup else "off", "submit_after_s": submit_after}
    loaded = {}
    client = httpx.Client(base_url=url, timeout=600)

    def answer(method: str, path: str, **kwargs):
        """(status, JSON body or None) of a request; an answer that is not JSON is noted in the row, not fatal."""
        r = client.request(method, path, **kwargs)
        try:
            return r.status_code, r.json()
        except ValueError:
            row.setdefault("answers_not_json", []).append(
                {"s": round(time.perf_counter() - t0, 3), "request": f"{method} {path}", "status": r.status_code,
                 "content_type": r.headers.get("content-type"), "body": r.text[:300]})
            return r.status_code, None

    def health() -> None:
        if "model_loaded_s" not in loaded:
            try:
                _, info = answer("GET", "/v1/health")
                if info and info.get("model_loaded"):
                    loaded["model_loaded_s"] = time.perf_counter() - t0
            except httpx.TransportError:
                pass
    try:
        while True:
            try:
                if client.get("/ping", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.perf_counter() - t0 > 600:
                raise RuntimeError("the server did not start:\n" + "\n".join(line for _, line in log[-30:]))
            time.sleep(POLL_S)
        row["server_s"] = time.perf_counter() - t0
        until = time.perf_counter() + submit_after
        while time.perf_counter() < until:
            health()
            time.sleep(POLL_S)
        image = base64.b64encode(IMAGE.read_bytes()).decode()
        for n in (1, 2):
            submitted = time.perf_counter()
            status, made = answer("POST", "/v1/jobs", json={"images": [image], **body})
            if status != 202 or made is None:
                raise RuntimeError(f"job {n}: HTTP {status}: {made}")
            job_id = made["id"]
            while True:
                status, info = answer("GET", f"/v1/jobs/{job_id}")
                if info is not None and status == 200 and info["state"] in ("done", "failed", "cancelled"):
                    break
                health()
                time.sleep(POLL_S)
            done = time.perf_counter()
            if info["state"] != "done":
                raise RuntimeError(f"job {n} {info['state']}: {info.get('error')}")
            folder = Path(info["out_dir"])
            timings = json.loads((folder / "timings.json").read_text())
            health()
            row[f"glb{n}_s"] = done - t0
            row[f"job{n}_s"] = done - submitted
            row[f"job{n}_timings"] = {k: timings.get(k) for k in ("load_model", "preprocess", "total")} | {
                "pipeline": (timings.get("pipeline") or {}).get("seconds"),
                "glb_bytes": (folder / "model.glb").stat().st_size}
            row[f"job{n}_timings_json"] = timings                 # every stage and export part, for the note
        row.update(loaded)
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
        reader.join(10)
    for t, line in log:       # the warm-up's own figures (desktop/jobs/runner.py prints them)
        m = re.search(r"(model loaded|kernels warmed) in ([0-9.]+) s \(background warm-up\)", line)
        if m:
            row["warmup_load_s" if m.group(1) == "model loaded" else "warmup_run_s"] = float(m.group(2))
        m = re.search(r"libraries warmed in ([0-9.]+) s beside the load", line)
        if m:
            row["libraries_s"] = float(m.group(1))
        m = re.search(r"structure flow's graphs ([0-9.]+)(?:, decoder ([0-9.]+))? beside the load", line)
        if m:
            row["graphs_s"] = float(m.group(1))
            row["decoder_s"] = float(m.group(2)) if m.group(2) else None
    row["server_log"] = [f"{t:.2f} s: {line}" for t, line in log][-40:]
    return row


def markdown(rows: list[dict], meta: dict) -> str:
    out = [f"{meta['device']}, torch {meta['torch']}, commit {meta['commit']}, {meta['date']}; model {meta['model']}, "
           f"preset {meta['preset']}, GLB only, {meta['image']}, bytecode {meta.get('bytecode', 'as-is')}", "",
           "| warm-up | submit after s | server answers s | model loaded s | first GLB s | first job s | "
           "second GLB s | second job s | first job's load_model s | first job's pipeline s (condition / stage 1 / "
           "stage 2) | warm-up load s | libraries beside it s | graphs (+ decoder) beside it s | warm-up run s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(v):
        return "-" if v is None else f"{v:.2f}"

    def pipeline(r):
        """The first job's sampling and decoding seconds, with its condition, stage 1 and stage 2."""
        timings = r.get("job1_timings_json") or {}
        stages = {s["stage"]: s["seconds"] for s in (timings.get("pipeline") or {}).get("stages", [])}
        seconds = (timings.get("pipeline") or {}).get("seconds")
        return (f"{f(seconds)} ({' / '.join(f(stages.get(k)) for k in ('condition', 'sparse_structure', 'slat'))})"
                if seconds is not None else "-")
    for r in rows:
        out.append(f"| {r['warmup']} | {r['submit_after_s']:g} | {f(r.get('server_s'))} | "
                   f"{f(r.get('model_loaded_s'))} | {f(r.get('glb1_s'))} | {f(r.get('job1_s'))} | "
                   f"{f(r.get('glb2_s'))} | {f(r.get('job2_s'))} | "
                   f"{f((r.get('job1_timings') or {}).get('load_model'))} | {pipeline(r)} | "
                   f"{f(r.get('warmup_load_s'))} | "
                   f"{f(r.get('libraries_s'))} | {f(r.get('graphs_s'))}"
                   f"{' + ' + f(r['decoder_s']) if r.get('decoder_s') is not None else ''} | {f(r.get('warmup_run_s'))} |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/launch_gpu", help="model folder and outputs (default %(default)s)")
    ap.add_argument("--preset", default="balanced")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--warmup", default="on,off", help="warm-up settings to run, in order (default %(default)s)")
    ap.add_argument("--warmup-off", action="store_true", help="only the runs without the warm-up (--warmup off)")
    ap.add_argument("--submit-after", default="0,10", help="seconds between the server answering and the first "
                                                          "job, one run per value (default %(default)s)")
    ap.add_argument("--object", default="random", choices=("random", "bunny", "nut"),
                    help="decoder outputs replaced by a realistic object (app_gpu.py) or the random-weight blob")
    ap.add_argument("--tiny", action="store_true", help="tiny random pipeline (checks the code path, e.g. on a CPU)")
    ap.add_argument("--bytecode", default="cached", choices=("cached", "as-is"),
                    help="cached (default): the server reads our modules' bytecode, compiled once before the first run "
                         "(a user's second launch); as-is: the environment decides (PYTHONDONTWRITEBYTECODE)")
    ap.add_argument("--discard-first", type=int, default=1, choices=(0, 1),
                    help="1 (default): one launch first whose row is kept apart (the first server process of a host "
                         "reads its packages from a cold page cache: a user's first start after the install)")
    ap.add_argument("--out", default=None, help="JSON file (default: WORK/launch_gpu.json)")
    ap.add_argument("--md", default=None, help="markdown table file (default: WORK/launch_gpu.md)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = model_folder(work, args.tiny)
    body = job_settings(args.preset, args.tiny)
    warmups = ["off"] if args.warmup_off else [w.strip() for w in args.warmup.split(",") if w.strip()]
    waits = [float(x) for x in args.submit_after.split(",") if x.strip()]
    import provenance
    import torch

    cuda = args.device.startswith("cuda") and torch.cuda.is_available()
    meta = {"device": torch.cuda.get_device_name() if cuda else "CPU", "torch": torch.__version__,
            "commit": os.environ.get("TRELLIS_COMMIT") or provenance.source_commit(),
            "date": date.today().isoformat(), "model": "tiny random" if args.tiny else "full-size random weights",
            "preset": args.preset, "image": f"{IMAGE.relative_to(ROOT)} (RGBA)", "object": args.object,
            "fast_paths": os.environ.get("TRELLIS_FAST_PATHS", "on"), "bytecode": args.bytecode}
    rows = []
    env = bytecode_env(work, args.bytecode == "cached")
    discarded = []
    failed = []

    def save() -> None:
        """The launches so far, written as each ends: a launch that fails (or a killed run) loses no other."""
        result = {"meta": meta, "runs": rows, "discarded": discarded, "failed": failed}
        Path(args.out or work / "launch_gpu.json").write_text(json.dumps(result, indent=2))
        Path(args.md or work / "launch_gpu.md").write_text(markdown(rows, meta))

    def launch(outputs: Path, warmup: bool, wait: float):
        try:
            return one_launch(model, outputs, args.device, warmup, wait, body, args.object, env)
        except Exception as err:            # noted with its launch; the other launches still run
            failed.append({"warmup": "on" if warmup else "off", "submit_after_s": wait,
                           "error": f"{type(err).__name__}: {err}"})
            print("FAILED:", json.dumps(failed[-1]), flush=True)
            save()
            return None
    if args.discard_first:
        row = launch(work / "outputs-discarded", warmups[0] == "on", waits[0])
        if row is not None:
            discarded.append(row)
            print("discarded:", json.dumps(row), flush=True)
            save()
    for wait in waits:
        for w in warmups:
            row = launch(work / f"outputs-warmup-{w}-after-{wait:g}", w == "on", wait)
            if row is not None:
                rows.append(row)
                print(json.dumps(row), flush=True)
                save()
    save()
    print(markdown(rows, meta), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
