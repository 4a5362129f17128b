"""`python -m desktop batch --ray`: a local Ray cluster started by the test (two actors on a custom resource
that stands in for GPUs, tiny pipeline, CPU): one actor SIGKILLed mid-item, every item lands exactly once;
a rerun skips everything; an item with a file lost is made again, by a worker that returns its files to the
driver (as one that cannot see the outputs folder does)."""
import os
import shutil

import pytest

from desktop.batch import manifest as mf
from desktop.batch.command import main as batch_main
from tests.helpers.batch_runs import SMALL, KillOneWorker, check_every_item_once, events, make_eight_images

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def eight_images(tmp_path_factory):
    return make_eight_images(tmp_path_factory)


@pytest.fixture(scope="module")
def ray_cluster():
    """A private Ray cluster on this machine: this test process is its driver; 2 units of `fake_gpu`."""
    old = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"          # no token file written into the user's home
    ray.init(num_cpus=2, resources={"fake_gpu": 2}, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()
    if old is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = old


def run_batch(capsys, *args):
    rc = batch_main([*map(str, args)])
    return rc, capsys.readouterr().err


def test_ray_address_with_nothing_there_fails_fast_and_writes_no_item(tiny_pipeline_dir, eight_images, tmp_path,
                                                                       capsys):
    """`--ray HOST:PORT` where no cluster listens: a clear error within seconds (ray.init alone waited for the
    cluster for minutes: killed at 120 s), exit 1, no item folder. First in this module: the other tests'
    cluster is not up yet, so the driver really tries to join."""
    import socket
    import time

    assert not ray.is_initialized()
    with socket.socket() as s:             # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    t = time.monotonic()
    rc, err = run_batch(capsys, eight_images, "-o", out, "--model", tiny_pipeline_dir, "--device", "cpu",
                        "--ray", f"127.0.0.1:{port}", "--ray-resource", "fake_gpu", *SMALL)
    assert rc == 1
    assert time.monotonic() - t < 30
    assert f"nothing answers at 127.0.0.1:{port}" in err and "ray start --head" in err
    assert not ray.is_initialized()
    assert not [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]


def test_ray_actor_killed_mid_item_every_item_once_rerun_skips_driver_writes(ray_cluster, tiny_pipeline_dir,
                                                                             eight_images, tmp_path, capsys):
    out = tmp_path / "out"
    names = [f"object_{i}" for i in range(8)]
    common = ["--model", tiny_pipeline_dir, "--device", "cpu", "--ray", "auto", "--ray-resource", "fake_gpu", *SMALL]
    killer = KillOneWorker(out, spare={os.getpid()})
    try:
        rc, err = run_batch(capsys, eight_images, "-o", out, *common)
    finally:
        killer.stop.set()
    assert killer.killed, err
    assert rc == 0, err
    assert err.count("writes to the outputs folder") >= 3            # two actors, then the one replacing the dead
    assert f"(pid {killer.killed[0]}) died; its items go back to the queue" in err
    check_every_item_once(out, names, eight_images)
    retried = events(out, "retry")
    assert killer.killed[1] in [e["item"] for e in retried] and {e["kind"] for e in retried} == {"worker_died"}
    done_by = {e["item"]: e["worker"] for e in events(out, "done")}
    assert len(set(done_by.values())) >= 2 and not any(str(killer.killed[0]) in w for w in done_by.values())
    assert not (out / mf.WORK_DIR).exists()

    # Rerun: everything skipped, no actor started.
    rc, err = run_batch(capsys, eight_images, "-o", out, *common)
    assert rc == 0 and "8 of 8 item(s) already done: skipped" in err and "ready; it" not in err, err

    # A file of a finished item lost: that item is made again (its old folder set aside, not deleted), here by
    # a worker that sends its files back through Ray for the driver to write (--ray-output driver).
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.parent.name != "object_5"
              and p.parent != out}
    (out / "object_5" / "model.glb").unlink()
    rc, err = run_batch(capsys, eight_images, "-o", out, *common, "--ray-output", "driver")
    assert rc == 0 and "returns its files to the driver" in err, err
    assert "object_5: its folder was incomplete (missing model.glb)" in err
    assert "7 of 8 item(s) already done" in err and "1 item(s) made" in err
    assert [p.name.split(".")[0] for p in (out / mf.WORK_DIR).iterdir()] == ["replaced-object_5"]
    shutil.rmtree(out / mf.WORK_DIR)
    check_every_item_once(out, names, eight_images)
    assert [e["item"] for e in events(out, "done", run=2)] == ["object_5"]
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.parent.name != "object_5"
                      and p.parent != out}


def test_device_cpu_on_a_cluster_without_gpus_asks_ray_for_cpus(ray_cluster, tiny_pipeline_dir, eight_images,
                                                                  tmp_path, capsys):
    """`--device cpu` alone on a CPU-only cluster (this one has CPUs and `fake_gpu`, no GPU): the workers ask
    Ray for CPUs (it used to ask for a GPU and stop: "the Ray cluster has no 'GPU' resource"), one worker
    per node using the node's cores, not one per core (each would hold its own copy of the model)."""
    images = tmp_path / "images"
    images.mkdir()
    for i in (0, 1, 2):
        shutil.copy(eight_images / f"object_{i}.png", images)
    assert "GPU" not in ray.cluster_resources()
    out = tmp_path / "out"
    rc, err = run_batch(capsys, images, "-o", out, "--model", tiny_pipeline_dir, "--device", "cpu", "--ray", "auto",
                        *SMALL)
    assert rc == 0, err
    assert err.count("ready; it writes to the outputs folder") == 1 and "worker cpu on " in err, err
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["object_0", "object_1", "object_2"]
    assert len({e["worker"] for e in events(out, "done")}) == 1          # the one node's one worker made all
