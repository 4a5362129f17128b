"""What another process's start may delete, and what survives a stop: real processes throughout.

* The export's decimation folder belongs to the process that made it: a start of the app in another process
  (its recovery pass) leaves a live one alone however old it looks, and removes one whose process was killed.
* The outputs folder's recovery pass never fails on damaged job folders and lists them as damaged.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers.repo import ROOT_DIR as ROOT
posix_only = pytest.mark.skipif(os.name != "posix", reason="pauses and kills processes with POSIX signals")

# A process that exports: a BackgroundSimplify of a ~720 k-face noisy height field (8 pieces, one child per
# core), reports its temp folder and the children's pids, waits for a line on stdin, then collects the result
# and compares it with simplify_mesh of the same input.
OWNER = r"""
import json, sys
import numpy as np
from trellis.export.cleanup.decimate import BackgroundSimplify, simplify_mesh
n = 600
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:n, 0:n]
v = np.stack([xx.ravel() / n, yy.ravel() / n, 0.02 * rng.random(n * n)], 1)
q = (yy[:-1, :-1] * n + xx[:-1, :-1]).ravel()
f = np.concatenate([np.stack([q, q + 1, q + n + 1], 1), np.stack([q, q + n + 1, q + n], 1)])
job = BackgroundSimplify(v, f, 0.95)
procs = job.decimation.children()
print(json.dumps({"folder": job.folder, "children": [p.pid for p in procs]}), flush=True)
sys.stdin.readline()
got = job.result()
ref = simplify_mesh(v, f, 0.95)
same = all(a.shape == b.shape and (a == b).all() for a, b in zip(got, ref))
print(json.dumps({"same": same, "faces": len(got[1]), "target": round(0.05 * len(f))}), flush=True)
"""

# Every start of the app (UI, API, CLI, a batch worker) runs this pass on its outputs folder.
RECOVER = r"""
import json, sys
from desktop.jobs.recovery import recover_outputs
rec = recover_outputs(sys.argv[1])
print(json.dumps({"removed": rec.removed}))
"""


def env_with(tmp) -> dict:
    return {**os.environ, "PYTHONPATH": ROOT, "TMPDIR": str(tmp)}


def recover_in_another_process(outputs, tmp) -> list:
    out = subprocess.run([sys.executable, "-c", RECOVER, str(outputs)], env=env_with(tmp), cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])["removed"]


def start_owner(tmp):
    proc = subprocess.Popen([sys.executable, "-c", OWNER], env=env_with(tmp), cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line, proc.communicate()[1]
    return proc, json.loads(line)


def end(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_gone(pids, seconds: float) -> None:
    """Wait until every process of `pids` has ended (a zombie counts as ended); AssertionError after `seconds`."""
    def running(pid):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not any(running(pid) for pid in pids):
            return
        time.sleep(0.1)
    raise AssertionError(f"the killed owner's children {pids} were still running after {seconds} s")


def age(path, seconds=3600.0) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


MAKER = r"""
import sys, time
from trellis.export import temp_dirs
print(temp_dirs.make("x_", sys.argv[1]).path, flush=True)
time.sleep(600)
"""


def test_an_owned_folder_is_alive_while_its_process_runs_and_gone_after(tmp_path):
    """The ownership test across real processes: no pid or process table, the OS lock alone."""
    from trellis.export import temp_dirs

    proc = subprocess.Popen([sys.executable, "-c", MAKER, str(tmp_path)], env=env_with(tmp_path), cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        folder = proc.stdout.readline().strip()
        assert os.path.isdir(folder) and open(os.path.join(folder, temp_dirs.OWNER)).read().split()[0] == \
            str(proc.pid)
        assert temp_dirs.owner_state(folder) == "alive"
        assert temp_dirs.adopt(folder) is None and not temp_dirs.remove_if_gone(folder)
    finally:
        proc.kill()
        proc.communicate()
    assert temp_dirs.owner_state(folder) == "gone"
    taken = temp_dirs.adopt(folder)               # the one taking it over holds it now: alive to everyone else
    assert taken is not None and temp_dirs.owner_state(folder) == "alive" and temp_dirs.adopt(folder) is None
    taken.remove()
    assert not os.path.exists(folder)
    # Made by this process: alive to it as well (another open file of the lock), gone once removed.
    mine = temp_dirs.make("y_", str(tmp_path))
    assert temp_dirs.owner_state(mine.path) == "alive"
    mine.remove()
    assert not os.path.exists(mine.path)
    (tmp_path / "z_plain").mkdir()
    (tmp_path / "z_half").mkdir()
    (tmp_path / "z_half" / temp_dirs.OWNER).write_bytes(b"")      # made, never locked
    assert temp_dirs.owner_state(tmp_path / "z_plain") == temp_dirs.owner_state(tmp_path / "z_half") == "unmarked"
    assert temp_dirs.adopt(tmp_path / "z_half") is None


@posix_only
def test_a_start_elsewhere_leaves_a_running_decimation_alone(tmp_path):
    """The decimation children work from the temp root (they are pooled), so no process has the folder as its
    working folder; it looks an hour old. Another process's start must still leave it, and the export ends with
    the result simplify_mesh gives."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    owner, info = start_owner(tmp)
    folder, children = info["folder"], info["children"]
    try:
        assert os.path.dirname(folder) == str(tmp) and os.path.basename(folder).startswith("trellis_simplify_")
        for pid in children:                  # a slow decimation: nothing it writes refreshes the folder's age
            os.kill(pid, signal.SIGSTOP)
        age(folder)
        removed = recover_in_another_process(tmp_path / "outputs", tmp)
        assert folder not in removed and os.path.isdir(folder), removed
        assert any(n.startswith("in") for n in os.listdir(folder))
        for pid in children:
            os.kill(pid, signal.SIGCONT)
        out, err = owner.communicate("go\n", timeout=300)
    finally:
        end(children)
        if owner.poll() is None:
            owner.kill()
            owner.communicate()
    assert owner.returncode == 0, err
    result = json.loads(out.splitlines()[-1])
    assert result["same"] is True, result
    assert abs(result["faces"] - result["target"]) <= 0.02 * result["target"], result
    assert not os.path.exists(folder)                     # removed by its owner once collected


@posix_only
def test_a_killed_exports_folder_is_removed_at_the_next_start(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    owner, info = start_owner(tmp)
    folder, children = info["folder"], info["children"]
    try:
        owner.kill()                       # kill -9 of the exporting process; its children may outlive it
        owner.communicate(timeout=60)
        # They leave once they see their parent gone; while one still runs it holds the folder's lock (alive, rightly
        # kept), which on a loaded machine can last a few seconds.
        wait_gone(children, 60)
        # A folder of another tool with our prefix (no owner marker) is judged by its age only: a fresh one
        # stays, an hour-old one goes; so does a marked folder whose marker was never locked.
        fresh = tmp / "trellis_simplify_fresh"
        fresh.mkdir()
        stale = tmp / "trellis_simplify_stale"
        stale.mkdir()
        (stale / "in0.npz").write_bytes(b"x")
        age(stale)
        removed = recover_in_another_process(tmp_path / "outputs", tmp)     # at once: no grace period
        assert folder in removed and not os.path.exists(folder), removed
        assert str(stale) in removed and not stale.exists()
        assert fresh.is_dir() and str(fresh) not in removed
    finally:
        end(children)


# ------------------------------------------------------------------------------------------ damaged folders

def write_job(out, name, settings=None, timings=None, error=None):
    """A job folder as the app leaves it (records given as text are written as they are)."""
    folder = out / name
    folder.mkdir(parents=True)
    job_id = name[-8:] + "0" * 24
    records = {"settings.json": settings if settings is not None else
               {"job_id": job_id, "kind": "generate", "created": "2025-01-01T00:00:00", "seed": 1,
                "settings": {"seed": 1, "randomize_seed": False, "formats": ["glb"]}},
               "timings.json": timings, "error.json": error}
    for file, value in records.items():
        if value is None:
            continue
        data = value if isinstance(value, bytes) else value.encode() if isinstance(value, str) \
            else json.dumps(value).encode()
        (folder / file).write_bytes(data)
    (folder / "model.glb").write_bytes(b"glTF")
    return job_id


DAMAGED = {       # folder name -> (records, the file the warning names)
    "20250102-000001-d0000001": (dict(settings='{"job_id": "d0000001', timings={"total": 1}), "settings.json"),
    "20250102-000002-d0000002": (dict(error=b"\xff\xfe garbage {", timings=None), "error.json"),
    "20250102-000003-d0000003": (dict(timings="[1, 2, 3]"), "timings.json"),
    "20250102-000004-d0000004": (dict(settings='"a string"', timings={"total": 1}), "settings.json"),
    "20250102-000005-d0000005": (dict(settings="[" * 100_000 + "]" * 100_000, timings={"total": 1}), "settings.json"),
    "20250102-000006-d0000006": (dict(error="{\"a\": " * 1000 + "1" + "}" * 1000), "error.json"),
    "20250102-000007-d0000007": (dict(settings=b'{"job_id": "d0000007\x00\x00\x00', timings={"total": 1}),
                                 "settings.json"),
}
ODD = "20250102-000008-0dd00008"      # readable records with odd values: a done job all the same


@pytest.fixture(scope="module")
def crowded_outputs(tmp_path_factory):
    """3,000 finished jobs and the damaged folders of DAMAGED."""
    out = tmp_path_factory.mktemp("crowded") / "out"
    for i in range(3000):
        write_job(out, f"20250101-{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}-{i:08x}", timings={"total": 1.5})
    for name, (records, _) in DAMAGED.items():
        write_job(out, name, **records)
    write_job(out, ODD, timings={"total": "abc", "warnings": 5})
    return out


def test_damaged_folders_are_listed_as_damaged_and_the_pass_stays_short(crowded_outputs):
    from desktop.jobs.folder import list_history
    from desktop.jobs.recovery import recover_outputs

    warnings = []
    t = time.perf_counter()
    rec = recover_outputs(crowded_outputs, warn=warnings.append)
    took = time.perf_counter() - t
    assert took < 15, took                           # about 1 s on 2 busy cores: one listing and 3 small reads a job
    assert len(rec.jobs) == 3001 + len(DAMAGED) and len(rec.damaged) == len(DAMAGED)
    assert len(warnings) == len(DAMAGED)
    for name, (_, file) in DAMAGED.items():
        (line,) = [w for w in warnings if name in w]
        assert file in line and "damaged" in line, line
    damaged = {j.out_dir: j for j in rec.jobs if j.error_kind == "damaged"}
    assert {os.path.basename(d) for d in damaged} == set(DAMAGED)
    assert all(j.state == "failed" and "damaged job folder" in j.error for j in damaged.values())
    assert sum(j.state == "done" for j in rec.jobs) == 3001
    # Named by their own job id when settings.json says it, by the folder's name otherwise.
    ids = {os.path.basename(d): j.id for d, j in damaged.items()}
    assert ids["20250102-000002-d0000002"] == "d0000002" + "0" * 24
    assert ids["20250102-000005-d0000005"] == "20250102-000005-d0000005"
    # The files are left as they were, and the UI's history lists them as damaged.
    assert (crowded_outputs / "20250102-000005-d0000005" / "settings.json").stat().st_size == 200_000
    labels = dict((name, label) for label, name in list_history(crowded_outputs, limit=5000))
    assert all(labels[name].endswith("· damaged") for name in DAMAGED), [labels[n] for n in DAMAGED]
    assert labels["20250101-000000-00000000"].endswith("· done") and labels[ODD].endswith("· done")


@pytest.mark.skipif(os.name != "posix", reason="stops the server with POSIX signals")
@pytest.mark.slow
def test_the_api_server_starts_on_thousands_of_jobs_and_damaged_folders(crowded_outputs, tiny_pipeline_dir, tmp_path):
    from tests.helpers.api_process import ApiProcess as Api

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    t = time.perf_counter()
    api = Api(tiny_pipeline_dir, crowded_outputs, tmp)
    started = time.perf_counter() - t
    try:
        jobs, offset = [], 0
        while offset is not None:            # the list pages (at most 1 000 a page)
            page = api.client.get(f"/v1/jobs?limit=1000&offset={offset}").json()
            assert page["total"] == 3001 + len(DAMAGED)
            jobs, offset = jobs + page["jobs"], page["next_offset"]
        assert len(jobs) == 3001 + len(DAMAGED)
        damaged = {os.path.basename(j["out_dir"]): j for j in jobs if j["error_kind"] == "damaged"}
        assert set(damaged) == set(DAMAGED)
        for name, (_, file) in DAMAGED.items():
            job = damaged[name]
            assert job["state"] == "failed" and file in job["error"], job
            again = api.client.get(f"/v1/jobs/{job['id']}")
            assert again.status_code == 200 and again.json()["error_kind"] == "damaged"
            assert "model.glb" in {f["name"] for f in job["files"]}
            r = api.client.post(f"/v1/jobs/{job['id']}/rerun")
            assert r.status_code == 409 and "damaged" in r.json()["detail"], r.text
        assert api.client.get("/v1/health").json()["status"] == "ok"
    finally:
        code, err = api.stop()
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("warning: damaged job folder")]
    assert len(lines) == len(DAMAGED), err
    print(f"API server on 3,000 jobs + {len(DAMAGED)} damaged folders: answering {started:.1f} s after its start")


# ------------------------------------------------------------------------------------------ running a job again

def test_text_and_new_look_jobs_run_again_from_their_folders(tiny_text_models_dir, tmp_path):
    """After a restart, a prompt job and a new-look job (model + prompt, model + photo) run again in one call each:
    the same kind, prompt, 3-D model, photo and seed, so the same asset."""
    import trimesh

    from desktop.jobs import JobRequest, JobRunner
    from desktop.settings import GenerationSettings
    from tests.helpers.images import rgba_blob

    rod = tmp_path / "rod.glb"
    trimesh.creation.cylinder(radius=0.02, height=1.0, sections=8).export(rod)
    photo = rgba_blob(tmp_path / "look.png")
    fast = GenerationSettings(seed=3, randomize_seed=False, ss_steps=2, slat_steps=2, formats=("ply",))
    out = tmp_path / "out"

    def runner():
        return JobRunner(os.path.join(tiny_text_models_dir, "TRELLIS-image-large"), out, device="cpu",
                         text_model=os.path.join(tiny_text_models_dir, "TRELLIS-text-tiny"))
    first = runner()
    try:
        made = [first.submit_request(JobRequest(prompt="a red chair", settings=fast)),
                first.submit_request(JobRequest(mesh=str(rod), prompt="made of gold", settings=fast)),
                first.submit_request(JobRequest(mesh=str(rod), images=photo, settings=fast))]
        assert all(j.wait(300) and j.state == "done" for j in made), [j.error for j in made]
    finally:
        first.shutdown(wait=True, timeout=60)
    again = runner()
    try:
        redone = [again.rerun(j.id) for j in made]
        assert all(j.wait(300) and j.state == "done" for j in redone), [j.error for j in redone]
    finally:
        again.shutdown(wait=True, timeout=60)
    for old, new in zip(made, redone):
        assert (new.kind, new.prompt, new.seed) == (old.kind, old.prompt, 3)
        assert open(new.files["ply"], "rb").read() == open(old.files["ply"], "rb").read(), old.kind
    for old, new in zip(made[1:], redone[1:]):
        assert open(new.files["mesh"], "rb").read() == rod.read_bytes()
    assert open(redone[2].files["input"], "rb").read() == open(photo, "rb").read()


def test_a_deep_record_is_damaged_whatever_the_recursion_limit(tmp_path):
    """The depth is checked before parsing: with a raised recursion limit (as hypothesis sets one) a record
    nested 1,000 deep would parse, and still is no job's record."""
    import sys

    from desktop.jobs.jsonio import load_json

    path = tmp_path / "error.json"
    path.write_text('{"a": ' * 1000 + "1" + "}" * 1000)
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        value, problem = load_json(path)
    finally:
        sys.setrecursionlimit(old)
    assert value is None and "nested more than" in problem
