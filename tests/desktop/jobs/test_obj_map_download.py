"""A job folder's OBJ download (the zip of desktop/ui/names.obj_zip) holds every file its MTL names: with a PBR
material (TRELLIS.2) also the roughness, metallic, normal and alpha maps written beside it."""
import zipfile
from pathlib import Path

import numpy as np
import trimesh

from desktop.jobs.folder import JobFolder
from desktop.ui.names import obj_zip
from trellis.export.pbr.material import pbr_maps
from trellis.export.pbr.textured import pbr_textured_mesh


def mtl_names(mtl: Path) -> set:
    return {parts[-1] for parts in (line.split() for line in mtl.read_text().splitlines())
            if len(parts) >= 2 and (parts[0].startswith("map_") or parts[0] == "norm")}


def test_the_obj_download_zips_the_maps_its_mtl_names(tmp_path):
    sphere = trimesh.creation.icosphere(subdivisions=2)
    rng = np.random.default_rng(0)
    size = 16
    alpha = np.where(rng.random((size, size)) < 0.5, 0, 255).astype(np.uint8)
    maps = pbr_maps(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), alpha, "MASK", 0.5)
    mesh = pbr_textured_mesh(sphere.vertices.astype(np.float32), sphere.faces.astype(np.int64),
                             rng.random((len(sphere.vertices), 2)).astype(np.float32),
                             rng.integers(0, 256, (size, size, 3), dtype=np.uint8), {}, None, maps)
    folder = JobFolder(tmp_path / "job")
    folder.path.mkdir()
    folder.write_mesh("obj", mesh)
    named = mtl_names(folder.path / "model.mtl")
    assert named == {"model.png", "model_roughness.png", "model_metallic.png", "model_alpha.png"}
    with zipfile.ZipFile(obj_zip(folder.obj_parts(), tmp_path / "model.zip", "model")) as z:
        inside = {Path(n).name for n in z.namelist()}
    assert inside == named | {"model.obj", "model.mtl"}
