"""Background removal for preprocessing (spec §11.1 step 2): rembg with the `u2net` model on the CPU, the
model file kept in a folder we control and downloaded once when missing. Used by preprocess.py, which
re-exports these names.

Nothing here imports torch or touches a GPU. rembg (and with it onnxruntime) is imported only when
background removal is first needed, because importing it costs about two seconds.
"""
from __future__ import annotations

import hashlib
import io
import os
import threading
import urllib.request
from pathlib import Path
from typing import Callable, Optional, Protocol, Union

from PIL import Image

U2NET_FILE = "u2net.onnx"
# Where rembg itself downloads u2net from (rembg's README, "Models"), and the md5 it verifies.
U2NET_URL = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net.onnx"
U2NET_MD5 = "60024c5c889badc19c04ad937298a77b"


class BackgroundRemovalUnavailable(RuntimeError):
    """Background removal cannot run here (model file missing and not downloadable, rembg absent)."""


class Remover(Protocol):
    def remove(self, img: Image.Image) -> Image.Image: ...


def default_model_dir() -> Path:
    """Folder that holds u2net.onnx: $TRELLIS_MODEL_DIR/u2net, else <repo>/.cache/models/u2net."""
    root = os.environ.get("TRELLIS_MODEL_DIR")
    if root:
        return Path(os.path.expanduser(root)) / "u2net"
    return Path(__file__).resolve().parents[2] / ".cache" / "models" / "u2net"


# rembg reads its model folder from the process environment; hold this while it is changed.
_ENV_LOCK = threading.Lock()


class BackgroundRemover:
    """rembg with the `u2net` model (always named explicitly: rembg's default model is BRIA's
    non-commercial RMBG), run by onnxruntime on the CPU execution provider only.

    The model file lives in a folder we control, `model_dir` (default: `default_model_dir()`), as
    `<model_dir>/u2net.onnx`; rembg is pointed at it through its documented `U2NET_HOME` variable,
    set only while the session is created. When the file is missing it is downloaded once from
    `download_url` (default: $TRELLIS_U2NET_URL, else rembg's own URL) and checked against rembg's
    md5, unless `allow_download` is False. `model_path` instead names any local u2net-style ONNX
    file (rembg's `u2net_custom` session: input [1,3,320,320], first output [1,1,320,320]); it is
    never downloaded. The ONNX session is created lazily, once, on the first `remove` call.
    """

    def __init__(self, model_dir: Union[str, os.PathLike, None] = None,
                 model_path: Union[str, os.PathLike, None] = None, allow_download: bool = True,
                 download_url: Optional[str] = None,
                 progress: Optional[Callable[[int, Optional[int]], None]] = None):
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        self.model_path = Path(model_path).resolve() if model_path is not None else None
        self.allow_download = allow_download
        self.download_url = download_url or os.environ.get("TRELLIS_U2NET_URL") or U2NET_URL
        self.progress = progress
        self._session = None
        self._lock = threading.Lock()

    @property
    def model_file(self) -> Path:
        return self.model_path if self.model_path is not None else self.model_dir / U2NET_FILE

    def remove(self, img: Image.Image) -> Image.Image:
        """RGB image -> RGBA image of the same size whose alpha is u2net's foreground mask."""
        session = self._get_session()
        import rembg

        rgb = img.convert("RGB")
        try:
            out = rembg.remove(rgb, session=session)
        except Exception as e:
            raise RuntimeError(f"Background removal failed while running u2net: {e}") from e
        if not isinstance(out, Image.Image):
            out = Image.open(io.BytesIO(out)) if isinstance(out, bytes) else Image.fromarray(out)
        out = out.convert("RGBA")
        if out.size != rgb.size:
            raise RuntimeError(f"Background removal returned size {out.size} for an input of {rgb.size}.")
        return out

    def ensure_model(self) -> Path:
        """Path of the model file, downloading u2net.onnx first if needed and allowed."""
        path = self.model_file
        if path.is_file():
            return path
        if self.model_path is not None:
            raise BackgroundRemovalUnavailable(
                f"Background removal is unavailable: the model file {path} does not exist. Point "
                "model_path at an existing u2net-style .onnx file, or upload an image with a "
                "transparent background (an RGBA PNG) so that no background removal is needed."
            )
        if not self.allow_download:
            raise self._unavailable("downloading is switched off")
        try:
            self._download(path)
        except (OSError, ValueError) as e:  # URLError and HTTPError are OSErrors
            raise self._unavailable(f"the download failed: {e}") from e
        return path

    def _unavailable(self, why: str) -> BackgroundRemovalUnavailable:
        return BackgroundRemovalUnavailable(
            f"Background removal is unavailable: the u2net model file '{U2NET_FILE}' is not in "
            f"{self.model_dir} and {why}. To fix it, download {self.download_url} yourself and save "
            f"it as {self.model_dir / U2NET_FILE} (or set TRELLIS_MODEL_DIR to a folder whose "
            f"'u2net' subfolder holds it). Alternatively, upload an image that already has a "
            "transparent background (an RGBA PNG), which needs no background removal."
        )

    def _download(self, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        md5 = hashlib.md5()
        try:
            with urllib.request.urlopen(self.download_url, timeout=30) as resp, open(part, "wb") as f:
                total = resp.headers.get("Content-Length")
                total = int(total) if total and total.isdigit() else None
                done = 0
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
                    md5.update(chunk)
                    done += len(chunk)
                    if self.progress is not None:
                        self.progress(done, total)
            if md5.hexdigest() != U2NET_MD5:
                raise ValueError(f"the file from {self.download_url} has md5 {md5.hexdigest()}, "
                                 f"expected {U2NET_MD5} (wrong or damaged file)")
            os.replace(part, dest)
        finally:
            if part.exists():
                part.unlink()

    def _get_session(self):
        with self._lock:
            if self._session is None:
                self._session = self._create_session()
            return self._session

    def _create_session(self):
        path = self.ensure_model()
        try:
            import rembg
        except ImportError as e:  # rembg, or the onnxruntime it imports, is not installed
            raise BackgroundRemovalUnavailable(
                f"Background removal is unavailable: {e}. Install it with "
                "`pip install rembg==2.0.86 onnxruntime==1.31.1` (never rembg[cli]), or upload an "
                "image with a transparent background (an RGBA PNG)."
            ) from e
        if self.model_path is not None:
            # rembg only accepts a model_path inside its home folder: make the file's folder the home
            home, name, extra = path.parent, "u2net_custom", {"model_path": str(path)}
        else:
            home, name, extra = self.model_dir, "u2net", {}
        with _ENV_LOCK:
            saved = os.environ.get("U2NET_HOME")
            os.environ["U2NET_HOME"] = str(home)
            try:
                return rembg.new_session(name, providers=["CPUExecutionProvider"], **extra)
            except Exception as e:
                raise BackgroundRemovalUnavailable(
                    f"Background removal is unavailable: the model file {path} could not be loaded "
                    f"({e}). Delete it and let the app download it again (or save {U2NET_URL} "
                    "there yourself), or upload an image with a transparent background."
                ) from e
            finally:
                if saved is None:
                    os.environ.pop("U2NET_HOME", None)
                else:
                    os.environ["U2NET_HOME"] = saved


_default_remover: Optional[BackgroundRemover] = None
_default_lock = threading.Lock()


def get_default_remover() -> BackgroundRemover:
    """The process-wide remover (its ONNX session is created once, on first use)."""
    global _default_remover
    with _default_lock:
        if _default_remover is None:
            _default_remover = BackgroundRemover()
        return _default_remover
