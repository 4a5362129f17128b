"""Pipeline folders laid out where the app's installer puts them, for the code that finds them there."""
import os
import shutil
from pathlib import Path


def install_trellis2(models: Path, tiny_trellis2_dir: str) -> Path:
    """The tiny TRELLIS.2 as the installer's TRELLIS.2-4B in the models folder `models` ($TRELLIS_MODEL_DIR): where
    trellis2_availability looks. Returns `models`."""
    models.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(tiny_trellis2_dir, models / "TRELLIS.2-4B", target_is_directory=True)
    except OSError:                                  # no symlinks here: a copy (a few MB)
        shutil.copytree(tiny_trellis2_dir, models / "TRELLIS.2-4B")
    return models
