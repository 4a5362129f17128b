"""The page's 3D view of a Draco-compressed GLB (the Web destination's): Gradio's viewer would fetch its Draco
decoder from a CDN, so offline it drew nothing; history.viewable_glb hands it a decoded copy instead, made once per
file, and any other GLB as it is."""
import numpy as np
import trimesh

from desktop.ui.history import viewable_glb
from tests.helpers.gltf import glb_json
from trellis.export.assemble import glb_bytes
from trellis.export.formats.draco import EXTENSION, draco_glb
from trellis.export.formats.gltf import glb_mesh


def test_a_draco_glb_is_shown_decoded_and_a_plain_one_as_it_is(tmp_path):
    sphere = trimesh.creation.icosphere(subdivisions=2)
    uv = np.stack([sphere.vertices[:, 0] * 0.5 + 0.5, sphere.vertices[:, 1] * 0.5 + 0.5], axis=1)
    texture = np.full((16, 16, 3), 200, np.uint8)
    plain = tmp_path / "job" / "chair.glb"
    plain.parent.mkdir()
    plain.write_bytes(glb_bytes(glb_mesh(sphere.vertices, sphere.faces, uv, texture)))
    assert viewable_glb(str(plain), tmp_path / "viewer") == str(plain)

    packed = tmp_path / "job" / "chair_web.glb"
    packed.write_bytes(draco_glb(plain.read_bytes()))
    assert EXTENSION in glb_json(packed)["extensionsUsed"]
    shown = viewable_glb(str(packed), tmp_path / "viewer")
    assert shown != str(packed) and shown.endswith("chair_web.glb")
    assert "extensionsUsed" not in glb_json(shown) or EXTENSION not in glb_json(shown)["extensionsUsed"]
    assert len(trimesh.load(shown, force="mesh").faces) == len(sphere.faces)
    made = (tmp_path / "viewer").rglob("*.glb")
    assert viewable_glb(str(packed), tmp_path / "viewer") == shown and len(list(made)) == 1      # made once


def test_a_damaged_draco_glb_is_shown_as_written(tmp_path):
    """A Draco buffer that does not decode (DracoPy raises its own error type): the view gets the file as it is."""
    from trellis.export.formats.draco import pack_glb, read_glb

    sphere = trimesh.creation.icosphere(subdivisions=1)
    uv = np.zeros((len(sphere.vertices), 2))
    doc, binary = read_glb(draco_glb(glb_bytes(glb_mesh(sphere.vertices, sphere.faces, uv,
                                                        np.zeros((4, 4, 3), np.uint8)))))
    view = doc["bufferViews"][doc["meshes"][0]["primitives"][0]["extensions"][EXTENSION]["bufferView"]]
    start = view.get("byteOffset", 0)
    broken = binary[:start] + b"\xff" * view["byteLength"] + binary[start + view["byteLength"]:]
    path = tmp_path / "broken.glb"
    path.write_bytes(pack_glb(doc, broken))
    assert viewable_glb(str(path), tmp_path / "viewer") == str(path)
