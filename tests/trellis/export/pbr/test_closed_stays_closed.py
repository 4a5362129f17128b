"""A closed 2-manifold O-Voxel (a sphere, a torus, a cup whose wall is 2.5 voxels thick) stays closed and manifold
through the PBR export's preparation (clustering, refinement, hole filling, trims, orientation, UV) at the default
and the game settings, and the record says so; an open input is reported open."""
import numpy as np
import pytest
import torch

from tests.helpers.ovoxel_blobs import random_blob
from tests.helpers.ovoxel_shapes import cup_ovoxel, sphere_ovoxel, torus_ovoxel
from trellis.export.options import PbrOptions
from trellis.export.pbr.cluster import cluster_vertices
from trellis.export.pbr.manifold import edge_counts
from trellis.export.pbr.orientation import orientation_agrees
from trellis.export.pbr.prepare import dense_mesh, prepare_ovoxel_mesh
from trellis.export.pbr.refine import refine_clusters

CLOSED = {"boundary_edges": 0, "nonmanifold_edges": 0}
SHAPES = {"sphere": sphere_ovoxel, "torus": torus_ovoxel, "cup": cup_ovoxel}
_cache = {}


def shape(name):
    if name not in _cache:
        _cache[name] = SHAPES[name](48)
    return _cache[name]


def welded(vertices, faces):
    """The faces over the distinct positions (the prepared mesh is split along its UV seams)."""
    _, inverse = np.unique(np.asarray(vertices), axis=0, return_inverse=True)
    return inverse.reshape(-1)[np.asarray(faces)]


@pytest.mark.parametrize("name", list(SHAPES))
def test_the_shapes_are_closed(name):
    v, f = dense_mesh(shape(name))
    assert edge_counts(f) == CLOSED


def test_plain_clustering_breaks_the_thin_cup():
    """What refine is for: a cell wider than the wall merges its two sides."""
    v, f = dense_mesh(shape("cup"))
    cv, cf = cluster_vertices(v, f, 4.0 * shape("cup").voxel_size)
    counts = edge_counts(cf)
    assert counts["nonmanifold_edges"] + counts["boundary_edges"] > 0
    rv, rf = refine_clusters(v, f, 4.0 * shape("cup").voxel_size, shape("cup").voxel_size / 2)
    assert edge_counts(rf) == CLOSED and len(rf) < len(f) / 4


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("options", [PbrOptions(), PbrOptions(target_faces=None, destination="game"),
                                     PbrOptions(target_faces=400)], ids=["default", "game", "400"])
def test_prepared_mesh_stays_closed(name, options):
    mesh = shape(name)
    info = {}
    target = options.face_target(int(mesh.faces.shape[0]))
    prepared = prepare_ovoxel_mesh(mesh, target, texture_size=256, info=info)
    topology = info["reduce"]["topology"]
    assert topology["input"] == CLOSED and topology["output"] == CLOSED
    faces = welded(prepared.vertices, prepared.faces)
    assert edge_counts(faces) == CLOSED
    assert orientation_agrees(faces) == 1.0
    if target < info["input_faces"]:
        assert abs(len(prepared.faces) - target) <= 0.05 * target


def test_an_open_input_is_reported_open():
    mesh = random_blob(6, latent=16)
    info = {}
    prepared = prepare_ovoxel_mesh(mesh, 2000, texture_size=256, info=info)
    topology = info["reduce"]["topology"]
    assert topology["input"] == edge_counts(prepared.dense_faces)
    assert topology["input"]["boundary_edges"] > 0
    assert "refine" not in info["reduce"]              # open sheets are not refined back to the dense mesh
    assert topology["output"] == edge_counts(welded(prepared.vertices, prepared.faces))
    assert topology["output"]["boundary_edges"] > 0


def test_edge_counts_of_a_tetrahedron_and_its_variants():
    tet = np.array([[0, 1, 2], [0, 3, 1], [1, 3, 2], [2, 3, 0]])
    assert edge_counts(tet) == CLOSED
    assert edge_counts(tet[:3]) == {"boundary_edges": 3, "nonmanifold_edges": 0}
    fin = np.concatenate([tet, [[0, 1, 4]]])
    assert edge_counts(torch.as_tensor(fin)) == {"boundary_edges": 2, "nonmanifold_edges": 1}


def test_pieces_in_cell_twins_agree():
    """The scipy pieces and their PyTorch twin split the cells alike (one id per piece, numbered differently)."""
    from trellis.export.pbr.refine import pieces_in_cell, pieces_in_cell_torch
    v, f = dense_mesh(shape("cup"))
    key = torch.floor((v - v.amin(0)) / (4.0 * shape("cup").voxel_size)).long() @ torch.tensor([1 << 20, 1 << 10, 1])
    edges = torch.unique(torch.sort(f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), dim=1)[0], dim=0)
    a, b = pieces_in_cell(key, edges), pieces_in_cell_torch(key, edges)
    pairs = torch.unique(torch.stack([a, b], 1), dim=0)
    assert len(pairs) == len(torch.unique(a)) == len(torch.unique(b)) > len(torch.unique(key))
