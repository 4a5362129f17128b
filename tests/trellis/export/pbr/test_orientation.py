"""The O-Voxel export's face orientation (trellis/export/pbr/orientation.py) and the key sort it uses
(trellis/export/key_order.py): the stable order from numpy's default sort against ``np.argsort(kind="stable")``,
the two-face edges against a dictionary of half-edges, and closed surfaces in pieces (shuffled, randomly wound,
several components, duplicated pairs) wound back as they were, facing out."""
import numpy as np
import pytest
import trimesh

from trellis.export.key_order import sorted_and_order, stable_argsort
from trellis.export.pbr.orientation import edge_pairs, orientation_agrees, unify_orientation


@pytest.mark.parametrize("keys", [
    np.random.default_rng(0).integers(0, 50, 5000),                       # many ties
    np.random.default_rng(1).integers(-10 ** 12, 10 ** 12, 3000),         # negative, wide
    np.repeat(np.arange(400), 7)[::-1].copy(),                            # sorted runs, descending
    np.array([np.iinfo(np.int64).min, 0, np.iinfo(np.int64).max, 0]),    # past 63 bits: argsort's own order
    np.array([5]),
    np.zeros(0, dtype=np.int64),
])
def test_the_default_sort_of_packed_keys_gives_the_stable_order(keys):
    want = np.argsort(keys, kind="stable")
    sk, order = sorted_and_order(keys)
    np.testing.assert_array_equal(order, want)
    np.testing.assert_array_equal(sk, keys[want])
    np.testing.assert_array_equal(stable_argsort(keys), want)
    assert order.dtype == np.int64 and sk.dtype == np.int64


def test_edge_pairs_are_the_edges_of_exactly_two_faces():
    rng = np.random.default_rng(2)
    f = rng.integers(0, 40, size=(300, 3))                              # fins, repeated and degenerate faces
    users = {}
    for i, face in enumerate(f):
        for a, b in ((face[0], face[1]), (face[1], face[2]), (face[2], face[0])):
            users.setdefault((min(a, b), max(a, b)), []).append((i, a < b))
    want = {}
    for (lo, hi), use in users.items():
        if len(use) == 2 and use[0][0] != use[1][0]:
            want[(use[0][0], use[1][0])] = want.get((use[0][0], use[1][0]), []) + [use[0][1] == use[1][1]]
    fa, fb, disagree = edge_pairs(f)
    got = {}
    for a, b, d in zip(fa.tolist(), fb.tolist(), disagree.tolist()):
        got[(a, b)] = got.get((a, b), []) + [d]
    assert (fa < fb).all()
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in want.items()}


def test_closed_pieces_shuffled_and_randomly_wound_are_wound_back_facing_out():
    parts = [trimesh.creation.icosphere(2), trimesh.creation.torus(0.3, 0.1, 24, 12),
             trimesh.creation.box((0.2, 0.3, 0.4))]
    v, f, base = [], [], 0
    for k, m in enumerate(parts):
        v.append(m.vertices + [k * 2.0, 0, 0])
        f.append(m.faces + base)
        base += len(m.vertices)
    v, f = np.concatenate(v), np.concatenate(f)
    rng = np.random.default_rng(3)
    order = rng.permutation(len(f))                                   # a component's first face anywhere
    wound = f[order].copy()
    flip = rng.random(len(f)) < 0.5
    wound[flip] = wound[flip][:, [0, 2, 1]]
    assert orientation_agrees(wound) < 0.7
    np.testing.assert_array_equal(unify_orientation(v, wound), f[order])
    inward = f[order][:, [0, 2, 1]]
    np.testing.assert_array_equal(unify_orientation(v, inward, outward=False), inward)


def test_faces_around_fins_keep_the_rest_of_the_surface_consistent():
    sphere = trimesh.creation.icosphere(2)
    n = len(sphere.faces)
    # five faces doubled (three of them reversed): their edges have three or four faces, no pair
    f = np.concatenate([sphere.faces, sphere.faces[:5], sphere.faces[:3, [1, 0, 2]]])
    f[7::2] = f[7::2][:, [0, 2, 1]]
    out = unify_orientation(sphere.vertices, f)
    assert out.shape == f.shape and out.dtype == np.int64
    np.testing.assert_array_equal(np.sort(out, 1), np.sort(f, 1))            # only windings change
    np.testing.assert_array_equal(out[5:n], sphere.faces[5:])                 # the rest of the sphere, facing out
