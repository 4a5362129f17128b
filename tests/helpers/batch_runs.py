"""`python -m desktop batch` runs in tests: small settings, eight coloured input images, a watcher that SIGKILLs the
worker making an item, and the manifest's events and the finished items checked."""
import json
import os
import signal
import threading
import time
from pathlib import Path

from desktop.batch import manifest as mf
from tests.helpers.images import rgba_blob

# Small everything: 2 + 2 steps, a 64² texture baked from 4 views at 64², no hole filling.
SMALL = ["--preset", "fast", "--steps", "2", "--texture-size", "64", "--formats", "glb,ply",
         "--set", "fill_holes=false", "--set", "bake_views=4", "--set", "bake_resolution=64"]
COLOURS = [(200, 80, 40), (30, 90, 220), (20, 160, 60), (220, 200, 30), (120, 40, 160), (240, 240, 240),
           (90, 60, 30), (0, 140, 140)]


def make_eight_images(tmp_path_factory):
    """A new folder of object_0.png ... object_7.png, one blob of each of COLOURS."""
    folder = tmp_path_factory.mktemp("batch_images")
    for i, colour in enumerate(COLOURS):
        rgba_blob(folder / f"object_{i}.png", color=colour)
    return folder


class KillOneWorker(threading.Thread):
    """Watches OUT/.batch-work for an item being made and SIGKILLs the process making it, once: a real
    signal to the real worker process (a local worker, or a Ray actor)."""

    def __init__(self, out: Path, spare=()):
        super().__init__(daemon=True)
        self.out, self.spare = Path(out), set(spare)
        self.killed = None             # (pid, item name)
        self.stop = threading.Event()
        self.start()

    def run(self):
        work = self.out / mf.WORK_DIR
        while not self.stop.is_set():
            for owner in sorted(work.glob(f"*/{mf.OWNER}")) if work.is_dir() else []:
                try:
                    pid = json.loads(owner.read_text())["pid"]
                except (OSError, ValueError, KeyError):
                    continue
                # Mid-item: its settings are written, so the model is loaded and sampling has begun.
                if pid in self.spare or not (owner.parent / "settings.json").is_file():
                    continue
                os.kill(pid, signal.SIGKILL)
                self.killed = (pid, owner.parent.name.rsplit(".", 1)[0])
                return
            time.sleep(0.05)


def events(out, kind=None, run=None):
    """The manifest's events (of one kind; of the run-th batch run only, counting from 0)."""
    found, runs = [], -1
    for e in map(json.loads, (Path(out) / mf.MANIFEST).read_text().splitlines()):
        runs += e["event"] == "batch"
        if (kind is None or e["event"] == kind) and (run is None or run == runs):
            found.append(e)
    return found


def check_every_item_once(out, names, images, run=0):
    """Each item's folder is there, complete, made from its own image; nothing else and nothing half; the
    run-th batch run made each item once."""
    out = Path(out)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(names)
    for name in names:
        folder = out / name
        assert mf.folder_problem(folder, mf.source_key("image", str(Path(images) / f"{name}.png"))) is None
        assert (folder / "input.png").read_bytes() == (Path(images) / f"{name}.png").read_bytes()
        assert sorted(p.name for p in folder.iterdir()) == ["export.json", "input.png", "model.glb", "model.ply",
                                                            "preprocessed.png", "result.npz", "settings.json",
                                                            "timings.json"]
    done = [e["item"] for e in events(out, "done", run)]
    assert sorted(done) == sorted(names)                  # one "done" per item: none landed twice
    assert not any(e.get("duplicate") for e in events(out, "done"))
