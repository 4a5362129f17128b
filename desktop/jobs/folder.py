"""The job folder: `<outputs>/<YYYYmmdd-HHMMSS>-<id8>/`, one per job. This module is the only one that
knows its layout: it writes every file of it and reads them back (for the UI's history, the API and
the recovery after a restart).

    input.png (input_2.jpg, ...)   the submitted image(s), as given
    input_mesh.glb (.obj, ...)     new-look jobs: the submitted 3-D model (its format from its bytes)
    settings.json                  every parameter and the seed actually used (SETTINGS)
    preprocessed.png (_2, ...)     what the pipeline conditioned on
    model.ply, preview.mp4         Gaussians (TRELLIS.2: the mesh, vertex-coloured), turntable preview
    model.glb                      textured mesh
    model.obj + model.mtl + model.png
    timings.json                   the job is done (TIMINGS) ...
    error.json                     ... or failed, was cancelled or interrupted (ERROR)

Every file is written atomically (a hidden `.<stem>.partial-<hex><ext>` then a rename), so a failure never
leaves a half-written file. While its job runs, a folder is locked by its process: an OS lock on
`<outputs>/.<folder name>.lock`, taken before the folder is made, released once its final file is
written (the OS drops it when the process dies), so that another process's recovery leaves it alone.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

from .jsonio import MAX_JSON_BYTES, json_bytes, jsonable, load_json, read_json  # noqa: F401  (imported from here)
from .request import prompt_label

SETTINGS = "settings.json"
TIMINGS = "timings.json"
ERROR = "error.json"
PREPROCESSED = "preprocessed.png"
MESH_INPUT = "input_mesh"          # + the model's format: input_mesh.glb, input_mesh.obj, ...

# File name -> kind in Job.files, in the order the UI lists them (inputs and extra views come after).
FILE_KINDS = {"model.glb": "glb", "model.ply": "ply", "model.obj": "obj", "model.mtl": "mtl",
              "model.png": "texture", "preview.mp4": "mp4", PREPROCESSED: "preprocessed",
              "model.stl": "stl", "model.3mf": "3mf", "model.usdz": "usdz", "export.json": "report",
              SETTINGS: "settings", TIMINGS: "timings", ERROR: "error", "result.npz": "result",
              **{f"model_lod{level}.glb": f"glb_lod{level}" for level in range(1, 4)}}
NAMES = {kind: name for name, kind in FILE_KINDS.items()}          # kind -> file name


def lod_kind(level: int) -> str:
    """The file kind of the GLB's level of detail `level` (1: the first reduced one)."""
    kind = f"glb_lod{level}"
    if kind not in NAMES:
        raise ValueError(f"no file kind for level of detail {level}")
    return kind
OBJ_PARTS = ("model.obj", "model.mtl", "model.png")                 # what save_obj writes together
# a PBR material's maps beside them, where the MTL names them (trellis.export.formats.material_maps)
OBJ_MAPS = ("model_roughness.png", "model_metallic.png", "model_normal.png", "model_alpha.png")

# <YYYYmmdd-HHMMSS>-<first 8 hex digits of the job id>: the folders JobRunner makes.
JOB_DIR = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{8}$")


# ---------------------------------------------------------------------------------------------
# Atomic files
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_path(final: Path):
    """Yield a temporary path next to `final` (same extension, so writers that pick the format from
    the name still work); on success it is renamed onto `final`, on failure removed."""
    final = Path(final)
    tmp = final.with_name(f".{final.stem}.partial-{uuid.uuid4().hex[:8]}{final.suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise OSError(f"the writer produced no file for {final.name}")
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            with contextlib.suppress(OSError):
                tmp.unlink()


def write_atomic(path: Path, data) -> Path:
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def is_partial(name: str) -> bool:
    """A hidden partial file or folder of an atomic write (left behind when its process died)."""
    return name.startswith(".") and "partial-" in name


def sniff_extension(head: bytes) -> str:
    """The file extension of image bytes, from their first 16 bytes (".bin" when unknown)."""
    if head.startswith(b"\x89PNG"):
        return ".png"
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return ".gif"
    if head.startswith(b"BM"):
        return ".bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return ".tif"
    return ".bin"


# ---------------------------------------------------------------------------------------------
# The running job's lock
# ---------------------------------------------------------------------------------------------

def lock_path(outputs_dir: Path, folder_name: str) -> Path:
    return Path(outputs_dir) / f".{folder_name}.lock"


def try_lock(path: Path) -> Optional[int]:
    """An open, exclusively locked file descriptor on `path` (created if missing); None when another
    process holds the lock (or the file cannot be made)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def release_lock(fd: Optional[int], path: Path) -> None:
    """Drop a lock taken by try_lock and remove its file."""
    if fd is None:
        return
    if os.name == "nt":            # Windows cannot remove an open file
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    with contextlib.suppress(OSError):
        os.unlink(path)
    with contextlib.suppress(OSError):
        os.close(fd)




# ---------------------------------------------------------------------------------------------
# One folder
# ---------------------------------------------------------------------------------------------

class JobFolder:
    """One job's folder. The writers return {kind: path} of what they wrote (for Job.files); the
    readers give None (or nothing) for what is missing or unreadable."""

    def __init__(self, path, on_settings: Optional[Callable[[], None]] = None):
        self.path = Path(path)
        self.on_settings = on_settings  # called once settings.json is written (the job's queue record goes)
        self.lock = None                # (fd, path) of the running job's lock, held from `create` to `release`

    def __repr__(self) -> str:
        return f"JobFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def create(cls, outputs_dir: Path, job, on_settings: Optional[Callable[[], None]] = None) -> "JobFolder":
        """Make the folder of a starting job (named after its start time and id), its lock taken first:
        another process's recovery pass then never takes this folder for a dead job's. The folder holds the
        lock until `release()`."""
        root = Path(outputs_dir)
        root.mkdir(parents=True, exist_ok=True)
        stamp = datetime.fromtimestamp(job.started or time.time()).strftime("%Y%m%d-%H%M%S")
        out = root / f"{stamp}-{job.id[:8]}"
        folder = cls(out, on_settings)
        lock = lock_path(root, out.name)
        fd = try_lock(lock)
        folder.lock = (fd, lock) if fd is not None else None
        try:
            out.mkdir()
        except BaseException:
            folder.release()
            raise
        return folder

    def release(self) -> None:
        """Drop the lock of a job whose final file is written: the folder is no longer this process's."""
        if self.lock is not None:
            release_lock(*self.lock)
            self.lock = None

    # ------------------------------------------------------------------ writers
    def file(self, kind: str) -> Path:
        """Where the file of `kind` ("glb", "settings", "preprocessed_2", ...) goes."""
        if kind in NAMES:
            return self.path / NAMES[kind]
        if kind.startswith("preprocessed_"):
            return self.path / f"{kind}.png"
        raise KeyError(kind)

    def copy_inputs(self, job) -> None:
        """The submitted images as input.<ext>, input_2.<ext>, ... (into job.files). An upload held in
        memory is replaced in job.inputs by the path of its copy."""
        for i, x in enumerate(job.inputs):
            base = "input" if i == 0 else f"input_{i + 1}"
            if isinstance(x, (str, os.PathLike)):
                src = Path(os.path.expanduser(os.fspath(x)))
                dest = self.path / (base + src.suffix.lower()[:10])
                with atomic_path(dest) as tmp:
                    shutil.copyfile(src, tmp)
            elif isinstance(x, (bytes, bytearray, memoryview)):
                dest = self.path / (base + sniff_extension(bytes(x[:16])))
                write_atomic(dest, bytes(x))
            elif hasattr(x, "save"):                  # PIL image
                dest = self.path / (base + ".png")
                with atomic_path(dest) as tmp:
                    x.save(tmp, format="PNG")
            else:
                continue
            job.files[base] = str(dest)
            if not isinstance(x, (str, os.PathLike)):
                # From now on the copy stands for it: a long-running server (the REST API) then holds
                # no upload in memory once its job has started.
                job.inputs[i] = str(dest)

    def copy_mesh(self, job, ext: str) -> dict:
        """A new-look job's 3-D model as input_mesh<ext>; an upload held in memory is replaced in job.mesh by
        the path of its copy."""
        dest = self.path / (MESH_INPUT + ext)
        if isinstance(job.mesh, tuple):                # (name, bytes) of an upload
            write_atomic(dest, bytes(job.mesh[1]))
            job.mesh = str(dest)
        else:
            with atomic_path(dest) as tmp:
                shutil.copyfile(os.path.expanduser(os.fspath(job.mesh)), tmp)
        return {"mesh": str(dest)}

    def copy_from(self, files: dict) -> dict:
        """The inputs, preprocessed images and 3-D model of another job (its Job.files), for an export job."""
        copied = {}
        for key, path in files.items():
            if (key.startswith(("input", "preprocessed")) or key == "mesh") and os.path.isfile(path):
                dest = self.path / os.path.basename(path)
                with atomic_path(dest) as tmp:
                    shutil.copyfile(path, tmp)
                copied[key] = str(dest)
        return copied

    def write_json(self, kind: str, record) -> dict:
        path = self.file(kind)
        write_atomic(path, json_bytes(record))
        return {kind: str(path)}

    def write_settings(self, record: dict) -> dict:
        written = self.write_json("settings", record)
        # From now on the folder names the job: what stood for it until it started can go (queued.py).
        if self.on_settings is not None:
            self.on_settings()
        return written

    def write_timings(self, timings: dict) -> dict:
        return self.write_json("timings", jsonable(timings))

    def write_error(self, record: dict) -> dict:
        return self.write_json("error", record)

    def write_preprocessed(self, images: list) -> dict:
        """The images the pipeline conditions on: preprocessed.png, preprocessed_2.png, ..."""
        written = {}
        for i, img in enumerate(images):
            kind = "preprocessed" if i == 0 else f"preprocessed_{i + 1}"
            with atomic_path(self.file(kind)) as tmp:
                img.save(tmp, format="PNG")
            written[kind] = str(self.file(kind))
        return written

    def write_result(self, gaussian, mesh) -> dict:
        """result.npz: the decoded Gaussians and mesh, exactly, so that the job can be exported again after the
        app restarts (trellis.export.result_file)."""
        from trellis.export import save_result

        with atomic_path(self.file("result")) as tmp:
            save_result(tmp, gaussian, mesh)
        return {"result": str(self.file("result"))}

    def write_ovoxel_result(self, mesh, extra: dict | None = None) -> dict:
        """result.npz of a TRELLIS.2 job: its O-Voxel exactly (trellis.export.ovoxel_result)."""
        from trellis.export import save_ovoxel_result

        with atomic_path(self.file("result")) as tmp:
            save_ovoxel_result(tmp, mesh, extra)
        return {"result": str(self.file("result"))}

    def result_family(self):
        """The family whose result.npz this is: the one settings.json names, else the file's (its members)."""
        from ..families import family_of_result_file

        return family_of_result_file(self.file("result"), self.settings_record())

    def check_result(self) -> None:
        """DamagedResultError (a ValueError) unless result.npz is a usable result of its family, every member checked
        as `read_result` reads it."""
        from trellis.export import check_ovoxel_result, check_result

        (check_ovoxel_result if self.result_family().result_key == "ovoxel" else check_result)(self.file("result"))

    def read_result(self, device="cpu") -> dict:
        """{"gaussian", "mesh"} (TRELLIS v1) or {"ovoxel"} (TRELLIS.2: `result_family`) from result.npz, on `device`;
        trellis.export.result_file.DamagedResultError (a ValueError, the job's input problem) when it is missing,
        not a file, or damaged."""
        from trellis.export import load_ovoxel_result, load_result

        if self.result_family().result_key == "ovoxel":
            return {"ovoxel": load_ovoxel_result(self.file("result"), device=device)}
        gaussian, mesh = load_result(self.file("result"), device=device)
        return {"gaussian": gaussian, "mesh": mesh}

    def write_ply(self, gaussian) -> dict:
        with atomic_path(self.file("ply")) as tmp:
            gaussian.save_ply(tmp)
        return {"ply": str(self.file("ply"))}

    def write_video(self, frames, fps: int, progress=None, cancel=None, count=None) -> dict:
        from trellis.utils.render_utils import save_video

        with atomic_path(self.file("mp4")) as tmp:
            save_video(frames, tmp, fps=fps, progress=progress, cancel=cancel, count=count)
        return {"mp4": str(self.file("mp4"))}

    def write_mesh(self, kind: str, textured, format: str | None = None, **options) -> dict:
        """The file of `kind` (model.<kind>, or a level of detail's) from the library's TexturedMesh in `format`
        (default: `kind`; ``trellis.export.formats``: glb, obj, stl, 3mf, usdz; ``options``: height, pivot, up,
        units, geometry_only, texture_format, draco, print_ready). The OBJ and its material and texture are written
        together into a hidden folder, then moved, the .obj last (a finished .obj always has them)."""
        if kind != "obj":
            with atomic_path(self.file(kind)) as tmp:
                textured.save(tmp, format=format or kind, **options)
            return {kind: str(self.file(kind))}
        obj = self.file("obj")
        tmp_dir = self.path / f".obj-partial-{uuid.uuid4().hex[:8]}"
        tmp_dir.mkdir()
        moved = []
        try:
            textured.save(str(tmp_dir / obj.name), format="obj", **options)
            for f in sorted(tmp_dir.iterdir(), key=lambda p: p.suffix == ".obj"):     # the .obj last
                os.replace(f, self.path / f.name)
                moved.append(self.path / f.name)
        except BaseException:
            for f in moved:
                with contextlib.suppress(OSError):
                    f.unlink()
            raise
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        return {FILE_KINDS[f.name]: str(f) for f in moved if f.name in FILE_KINDS}

    # ------------------------------------------------------------------ readers
    def settings_record(self) -> Optional[dict]:
        """settings.json (None when missing or unreadable)."""
        record = read_json(self.path / SETTINGS)
        return record if isinstance(record, dict) else None

    def export_report(self) -> Optional[dict]:
        """export.json (None when missing or unreadable)."""
        report = read_json(self.file("report"))
        return report if isinstance(report, dict) else None

    def timings(self) -> Optional[dict]:
        timings = read_json(self.path / TIMINGS)
        return timings if isinstance(timings, dict) else None

    def error(self) -> Optional[dict]:
        error = read_json(self.path / ERROR)
        return error if isinstance(error, dict) else None

    def is_final(self) -> bool:
        """The job wrote its last file (timings.json or error.json)."""
        return (self.path / TIMINGS).is_file() or (self.path / ERROR).is_file()

    def modified(self, kind: str) -> Optional[float]:
        """When the file of `kind` was written (None when it is not there)."""
        with contextlib.suppress(OSError):
            return os.path.getmtime(self.file(kind))
        return None

    def created_fallback(self) -> float:
        return (self.path / SETTINGS).stat().st_mtime

    def records(self) -> tuple:
        """({"settings", "error", "timings": the file's object, or None when missing or damaged}, [what is damaged,
        one line per file]): each file read once."""
        values, damage = {}, []
        for kind in ("settings", "error", "timings"):
            value, problem = load_json(self.file(kind))
            if problem is None and value is not None and not isinstance(value, dict):
                problem = f"holds a JSON {type(value).__name__}, not an object"
            if problem is not None:
                damage.append(f"{NAMES[kind]} {problem}")
                value = None
            values[kind] = value
        return values, damage

    def state(self, running_dirs=()) -> str:
        """done, failed, cancelled, interrupted; damaged (a record of it cannot be read); running (its folder is in
        `running_dirs`) or incomplete."""
        values, damage = self.records()
        if damage:
            return "damaged"
        if values["error"] is not None:
            return str(values["error"].get("state") or "failed")
        if values["timings"] is not None:
            return "done"
        return "running" if str(self.path) in running_dirs else "incomplete"

    def existing(self, kind: str) -> Optional[Path]:
        """The file of `kind` when it is there."""
        path = self.file(kind)
        return path if path.is_file() else None

    def obj_parts(self) -> list:
        """The OBJ and the material and texture beside it; [] when there is no OBJ."""
        if not (self.path / OBJ_PARTS[0]).is_file():
            return []
        return [self.path / n for n in OBJ_PARTS + OBJ_MAPS if (self.path / n).is_file()]

    def listed_files(self) -> list:
        """Its files for a download list: the known ones in FILE_KINDS order, then inputs and extra views."""
        files = [self.path / n for n in FILE_KINDS if (self.path / n).is_file()]
        files += sorted(p for p in self.path.iterdir() if p.is_file() and not p.name.startswith(".")
                        and p.name not in FILE_KINDS and p.name.startswith(("input", "preprocessed")))
        return files

    def file_kinds(self) -> dict:
        """kind -> path of its finished files (hidden partial files excluded), as Job.files has them."""
        files = {}
        base = str(self.path)
        with os.scandir(base) as listing:          # one listing, no stat per file: thousands of folders at start
            entries = sorted((e.name, e) for e in listing if not e.name.startswith("."))
        for name, entry in entries:
            if not entry.is_file():
                continue
            stem = os.path.splitext(name)[0]
            path = os.path.join(base, name)
            if name in FILE_KINDS:
                files[FILE_KINDS[name]] = path
            elif stem == MESH_INPUT:
                files["mesh"] = path
            elif stem == "input" or re.fullmatch(r"input_\d+", stem):
                files[stem] = path
            elif re.fullmatch(r"preprocessed_\d+", stem):
                files[stem] = path
        return files

    def remove_partials(self) -> list:
        """The hidden partial files and folders that atomic writes leave when their process dies."""
        removed = []
        for name in os.listdir(self.path):
            if not is_partial(name):
                continue
            p = self.path / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
            if not p.exists():
                removed.append(str(p))
        return removed


# ---------------------------------------------------------------------------------------------
# The outputs folder
# ---------------------------------------------------------------------------------------------

def find(outputs_dir: Path, name) -> Optional[JobFolder]:
    """The job folder `name` of the outputs folder; None for anything else (a path, a hidden name, ...)."""
    if not name or not isinstance(name, str) or name != os.path.basename(name) or name.startswith("."):
        return None
    folder = Path(outputs_dir) / name
    return JobFolder(folder) if folder.is_dir() else None


def describe_record(record: dict) -> str:
    """A job in a few words for the history: its image(s), its prompt (quoted, cut) and its 3-D model."""
    names = [os.path.basename(str(x)) for x in record.get("inputs") or []]
    what = names[0] if names else ""
    if len(names) > 1:
        what += f" + {len(names) - 1}"
    prompt = record.get("prompt")
    if isinstance(prompt, str) and prompt:
        what = prompt_label(prompt)
    mesh = record.get("mesh")
    if isinstance(mesh, str) and mesh:
        what = f"{os.path.basename(mesh)} → {what or '?'}"
    return what or "?"


def list_history(outputs_dir: Path, running_dirs=(), limit: int = 200) -> list:
    """[(label, folder name)] of the job folders in the outputs folder, newest first."""
    try:
        folders = [p for p in Path(outputs_dir).iterdir() if p.is_dir() and not p.name.startswith(".")
                   and (JOB_DIR.match(p.name) or (p / SETTINGS).is_file())]
    except OSError:
        return []
    folders.sort(key=lambda p: p.name, reverse=True)
    out = []
    for path in folders[:limit]:
        folder = JobFolder(path)
        record = folder.settings_record() or {}
        try:
            what = describe_record(record) + (" (export)" if record.get("kind") == "export" else "")
        except (TypeError, ValueError):         # a readable record with values of the wrong kinds
            what = "?"
        stamp = path.name[:15]
        try:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.strptime(stamp, "%Y%m%d-%H%M%S"))
        except ValueError:
            pass
        out.append((f"{stamp} · {what} · {folder.state(running_dirs)}", path.name))
    return out
