"""Every print file (STL, 3MF) an export writes is what its report says, read back by trimesh as a slicer's user
would: one watertight body (split into one), positive volume, no degenerate face, and export.json's triangles, size
and base those of the file. Inputs: a TRELLIS v1 job's shape from the tiny random-weight pipeline (whose rebuilt
solid came out of the decimator with two vertices at one point: two zero-area triangles in the file) and the
scanned bunny."""
import numpy as np
import pytest
import trimesh

from trellis.export.formats import write
from trellis.export.report import describe_export
from trellis.export.textured import TexturedMesh

PRINT = dict(print_ready=True, units="mm", pivot="bottom")


def shape_mesh(v, f) -> TexturedMesh:
    return TexturedMesh(np.asarray(v, np.float32), np.asarray(f, np.int64), np.zeros((len(v), 2), np.float32),
                        None, {})


@pytest.fixture(scope="module")
def v1_shape(tiny_pipeline_dir):
    """A v1 job's mesh as the print destination exports it (``clean_shape``: no texture)."""
    from tests.helpers.images import object_image
    from tests.helpers.tiny_models import FAST
    from trellis.export.shape_only import clean_shape
    from trellis.pipelines import TrellisImageTo3DPipeline

    pipe = TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir)
    mesh = pipe.run(object_image(), seed=3, preprocess_image=False, formats=["mesh"], **FAST)["mesh"][0]
    return clean_shape(mesh, simplify=0.95, device="cpu")


@pytest.fixture(scope="module")
def bunny():
    from benchmarks.realistic_objects import prepare_source
    from trellis.export.cleanup.decimate import simplify_mesh

    v, f = prepare_source("bunny")
    return shape_mesh(*simplify_mesh(v, f, 1.0 - 12000 / len(f), pieces=1))


def check_print_files(mesh, folder, **placing):
    files = {kind: write(mesh, folder / f"model.{kind}", **PRINT, **placing) for kind in ("stl", "3mf")}
    report = describe_export(mesh, files, destination="print", print_ready=True, **placing, pivot="bottom")
    assert report["watertight"] and report["outward"] and report["shells"] == 1
    for kind, path in files.items():
        read = trimesh.load(path, force="mesh")            # points equal in the file merged, as trimesh reads STL
        assert read.is_watertight, kind
        assert len(read.split(only_watertight=False)) == 1, kind
        assert read.volume > 0, kind
        assert read.nondegenerate_faces().all(), kind
        assert (read.area_faces > 0).all(), kind
        # the report's numbers are the file's: triangles, vertices, size and base (mm in the file, m in the report)
        assert report["triangles"] == len(read.faces) == report["files"][kind]["triangles"], kind
        assert report["vertices"] == len(read.vertices), kind
        size = read.bounds[1] - read.bounds[0]
        np.testing.assert_allclose([report["size_m"][k] for k in ("width", "depth", "height")], size / 1000,
                                   atol=2e-6)
        assert report["base_m"] == pytest.approx(read.bounds[0][2] / 1000, abs=2e-6)
    return report


def test_a_v1_jobs_print_files_are_one_watertight_body_as_reported(v1_shape, tmp_path):
    report = check_print_files(v1_shape, tmp_path)
    assert report["print_repair"]["method"] == "rebuilt"       # the decoder's fragments: rebuilt as one solid
    assert report["triangles"] != len(v1_shape.faces)          # so the file's numbers are not the shape's


def test_the_bunnys_print_files_are_one_watertight_body_as_reported(bunny, tmp_path):
    report = check_print_files(bunny, tmp_path, height=0.12)
    assert report["size_m"]["height"] == pytest.approx(0.12, abs=2e-6)


def test_a_report_with_a_textured_file_beside_keeps_its_numbers_and_names_the_print_files(bunny, tmp_path):
    files = {"glb": write(bunny, tmp_path / "model.glb", geometry_only=True),
             "stl": write(bunny, tmp_path / "model.stl", **PRINT)}
    report = describe_export(bunny, files, print_ready=True, pivot="bottom", geometry_only=True)
    assert report["triangles"] == len(bunny.faces)
    assert report["files"]["stl"]["triangles"] == len(trimesh.load(files["stl"], force="mesh").faces)
    assert "triangles" not in report["files"]["glb"]
