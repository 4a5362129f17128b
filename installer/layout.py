"""Where everything lives inside the app folder: the venv, its state file, the log, the caches, the weights.

Nothing of the app is written outside this folder (pip's own download cache aside): deleting the folder
uninstalls it.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

APP_REQUIREMENTS = ("requirements_1.txt", "requirements_2.txt")
TEST_REQUIREMENTS = "requirements_test.txt"
STATE_NAME = "trellis-install.json"


def files_hash(paths) -> str:
    """The first 16 hex digits of sha256 over the files' bytes, concatenated in order.

    The same value run.sh / run.bat used to name their `.venv/.installed-<hash>` stamp files, so a
    venv installed by them is recognised (installer.install.load_state)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Layout:
    app_dir: Path
    windows: bool = os.name == "nt"

    @classmethod
    def of(cls, app_dir=None, windows: bool | None = None) -> Layout:
        from .detect import default_app_dir

        root = Path(os.path.abspath(app_dir or default_app_dir()))
        return cls(root, os.name == "nt" if windows is None else windows)

    # ---------------------------------------------------------------- the venv
    @property
    def venv(self) -> Path:
        return self.app_dir / ".venv"

    @property
    def venv_previous(self) -> Path:
        """The old venv, kept here while a new one is built (restored if the new one fails)."""
        return self.app_dir / ".venv.previous"

    def venv_python(self, venv: Path | None = None) -> Path:
        venv = self.venv if venv is None else venv
        return venv / ("Scripts/python.exe" if self.windows else "bin/python")

    @property
    def state_file(self) -> Path:
        return self.venv / STATE_NAME

    def requirement(self, name: str) -> Path:
        return self.app_dir / name

    def app_key(self) -> str:
        return files_hash(self.requirement(n) for n in APP_REQUIREMENTS)

    def test_key(self) -> str:
        return files_hash(self.requirement(n) for n in (*APP_REQUIREMENTS, TEST_REQUIREMENTS))

    # --------------------------------------------------------- log and caches
    @property
    def log_file(self) -> Path:
        return self.app_dir / "logs" / "installer.log"

    @property
    def cache(self) -> Path:
        return self.app_dir / ".cache"

    @property
    def models(self) -> Path:
        """TRELLIS_MODEL_DIR: the pipeline weights and u2net (trellis.pipelines.preprocess.default_model_dir)."""
        return self.cache / "models"

    @property
    def hf_home(self) -> Path:
        return self.cache / "huggingface"

    @property
    def torch_home(self) -> Path:
        return self.cache / "torch"

    @property
    def u2net_dir(self) -> Path:
        return self.models / "u2net"

    @property
    def dinov2_dir(self) -> Path:
        """torch.hub.get_dir()/checkpoints with TORCH_HOME set: where trellis looks for the DINOv2 file."""
        return self.torch_home / "hub" / "checkpoints"

    @property
    def verified_file(self) -> Path:
        return self.models / "verified.json"

    def app_env(self) -> dict[str, str]:
        """Cache locations for the app's process, all inside the app folder."""
        return {
            "HF_HOME": str(self.hf_home),
            "HF_HUB_CACHE": str(self.hf_home / "hub"),
            "TORCH_HOME": str(self.torch_home),
            "U2NET_HOME": str(self.u2net_dir),
            "TRELLIS_MODEL_DIR": str(self.models),
        }
