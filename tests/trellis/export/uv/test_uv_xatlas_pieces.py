"""xatlas's pieces (trellis/export/uv/xatlas.py ``split_pieces``): every piece of a level halved at once gives the
pieces, numbered alike, of halving the largest piece one at a time (the definition, written out here), where
centroids tie (quantised and flat meshes, signed zeros) and at any piece size; the child started before its input
is written lays the mesh out as before (same corners, same face order) and a child that dies at once is an error."""
import numpy as np
import pytest
import trimesh

from trellis.export.uv import xatlas as uvx


def one_at_a_time(vertices, faces, piece_faces):
    """Piece id per face: the last piece made is halved (a stable sort along its centroids' longest side) until
    each has at most ``piece_faces`` faces, numbered as they are finished."""
    centroid = vertices[faces].mean(1)
    todo, done = [np.arange(len(faces))], []
    while todo:
        g = todo.pop()
        if len(g) <= piece_faces:
            done.append(g)
            continue
        c = centroid[g]
        axis = int(np.argmax(c.max(0) - c.min(0)))
        order = g[np.argsort(c[:, axis], kind="stable")]
        todo += [order[:len(g) // 2], order[len(g) // 2:]]
    piece = np.empty(len(faces), dtype=np.int64)
    for i, g in enumerate(done):
        piece[g] = i
    return piece


def meshes():
    sphere = trimesh.creation.icosphere(4)
    v, f = sphere.vertices.astype(np.float32), sphere.faces.astype(np.int64)
    rng = np.random.default_rng(0)
    yield "sphere", v, f
    yield "sphere float64", v.astype(np.float64), f
    yield "shuffled", v, f[rng.permutation(len(f))]
    yield "quantised", np.round(v * 8) / 8, f                        # many equal centroid coordinates
    flat = v * np.array([1, 1, 0], np.float32)
    flat[: len(v) // 2, 2] = -0.0                                     # -0.0 and 0.0 compare equal
    yield "flat", flat, f
    yield "random", rng.normal(size=(500, 3)).astype(np.float32), rng.integers(0, 500, size=(7000, 3))


@pytest.mark.parametrize("piece_faces", [1, 37, 600, uvx.PIECE_FACES, 10 ** 6])
def test_pieces_halved_level_by_level_are_those_halved_one_at_a_time(piece_faces):
    for name, v, f in meshes():
        piece = uvx.split_pieces(v, f, piece_faces)
        np.testing.assert_array_equal(piece, one_at_a_time(v, f, piece_faces), err_msg=name)
        assert piece.dtype == np.int64 and np.bincount(piece).max() <= max(piece_faces, 1)


def test_median_partitions_cut_pieces_of_the_same_sizes():
    _, v, f = next(meshes())
    sizes = np.sort(np.bincount(uvx.split_pieces(v, f, 600, partition=True)))
    np.testing.assert_array_equal(sizes, np.sort(np.bincount(one_at_a_time(v, f, 600))))


def test_the_child_started_before_its_input_lays_the_mesh_out():
    sphere = trimesh.creation.icosphere(4)
    v, f = sphere.vertices.astype(np.float32), sphere.faces.astype(np.int64)
    vv, ff, uv, vm = uvx.xatlas_layout(v, f, 60.0, 256, 2, None, None)
    np.testing.assert_array_equal(vm[ff], f)                         # the same corners, face order kept
    np.testing.assert_array_equal(vv, v[vm])
    assert uv.dtype == np.float32 and uv.min() >= 0 and uv.max() <= 1
    again = uvx.xatlas_layout(v, f, 60.0, 256, 2, None, None)
    assert all(np.array_equal(a, b) for a, b in zip((vv, ff, uv, vm), again))


def test_a_child_that_dies_before_its_input_is_written_is_an_error(monkeypatch):
    monkeypatch.setattr(uvx, "XATLAS_CHILD", "import os; os._exit(3)")
    sphere = trimesh.creation.icosphere(2)
    with pytest.raises(RuntimeError, match="exited with 3"):
        uvx.xatlas_layout(sphere.vertices.astype(np.float32), sphere.faces.astype(np.int64), 60.0, 64, 2, None,
                          None)
