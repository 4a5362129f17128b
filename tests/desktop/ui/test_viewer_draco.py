"""The page's 3D view of a Draco-compressed GLB (the Web destination's): Gradio's viewer would fetch its Draco
decoder from a CDN, so offline it drew nothing; history.viewable_glb hands it a decoded copy instead, made once per
file, and any other GLB as it is; only a Draco GLB is read whole (export.json or the file's JSON chunk tells)."""
import builtins
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import trimesh

from desktop.ui.history import viewable_glb
from tests.helpers.gltf import glb_json
from trellis.export.assemble import glb_bytes
from trellis.export.formats.draco import EXTENSION, draco_glb
from trellis.export.formats.gltf import glb_mesh


def sphere_glb(subdivisions: int = 2) -> bytes:
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    uv = np.stack([sphere.vertices[:, 0] * 0.5 + 0.5, sphere.vertices[:, 1] * 0.5 + 0.5], axis=1)
    return glb_bytes(glb_mesh(sphere.vertices, sphere.faces, uv, np.full((16, 16, 3), 200, np.uint8)))


@pytest.fixture
def bytes_read(monkeypatch):
    """bytes_read(path): a list that gets the length of every read of the file at `path` (open().read and
    Path.read_bytes), whoever reads it."""
    real_open, real_read_bytes = builtins.open, Path.read_bytes
    watched, reads = set(), []

    class Counted:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            data = self.f.read(n)
            reads.append(len(data))
            return data

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def __getattr__(self, name):
            return getattr(self.f, name)

    def counted_open(file, *args, **kwargs):
        f = real_open(file, *args, **kwargs)
        return Counted(f) if str(file) in watched else f

    def counted_read_bytes(self):
        data = real_read_bytes(self)
        if str(self) in watched:
            reads.append(len(data))
        return data
    monkeypatch.setattr(builtins, "open", counted_open)
    monkeypatch.setattr(Path, "read_bytes", counted_read_bytes)

    def watch(path):
        watched.add(str(path))
        return reads
    return watch


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


def test_a_glb_without_draco_is_judged_by_its_json_chunk_alone(tmp_path, bytes_read):
    """A plain GLB whose binary chunk is 64 MB of zeros (a sparse file) and then garbage: shown as it is, with only its
    header and JSON chunk read. Reading the whole file (or its binary chunk) fails this test."""
    doc = {"asset": {"version": "2.0"}, "extensionsUsed": ["KHR_materials_unlit"], "meshes": [{"primitives": [
        {"attributes": {"POSITION": 0}, "extensions": {"KHR_materials_variants": {}}}]}]}
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    size = 64 << 20
    path = tmp_path / "big.glb"
    with open(path, "wb") as f:
        f.write(struct.pack("<4sIIII", b"glTF", 2, 20 + len(text) + 8 + size, len(text), 0x4E4F534A) + text)
        f.write(struct.pack("<II", size, 0x004E4942))
        f.truncate(20 + len(text) + 8 + size - 4)
        f.seek(0, 2)
        f.write(b"\xde\xad\xbe\xef")
    reads = bytes_read(path)
    assert viewable_glb(str(path), tmp_path / "viewer") == str(path)
    assert 0 < sum(reads) <= 20 + len(text), reads
    assert not (tmp_path / "viewer").exists()


def test_export_json_saying_no_draco_spares_the_read_and_one_saying_draco_decodes(tmp_path, bytes_read):
    plain = tmp_path / "job" / "chair.glb"
    plain.parent.mkdir()
    plain.write_bytes(sphere_glb(1))
    reads = bytes_read(plain)
    assert viewable_glb(str(plain), tmp_path / "viewer", draco=False) == str(plain) and reads == []
    # a report that says Draco of a file without it: read, found plain, shown as it is
    assert viewable_glb(str(plain), tmp_path / "viewer", draco=True) == str(plain) and reads
    packed = tmp_path / "job" / "chair_web.glb"
    packed.write_bytes(draco_glb(plain.read_bytes()))
    shown = viewable_glb(str(packed), tmp_path / "viewer", draco=True)
    assert shown != str(packed) and EXTENSION not in glb_json(shown).get("extensionsUsed", [])


@pytest.mark.parametrize("where", ["extensionsRequired", "primitive"])
def test_draco_named_anywhere_in_the_json_is_decoded(tmp_path, where):
    """Draco named only as required, or only on its primitive (the lists left without it): still decoded."""
    from trellis.export.formats.draco import pack_glb, read_glb

    doc, binary = read_glb(draco_glb(sphere_glb(1)))
    doc.pop("extensionsRequired" if where == "primitive" else "extensionsUsed")
    if where == "primitive":
        doc.pop("extensionsUsed")
    path = tmp_path / f"{where}.glb"
    path.write_bytes(pack_glb(doc, binary))
    shown = viewable_glb(str(path), tmp_path / "viewer")
    assert shown != str(path) and "extensions" not in glb_json(shown)["meshes"][0]["primitives"][0]


def test_a_file_that_is_no_glb_is_shown_as_written(tmp_path):
    path = tmp_path / "notes.glb"
    path.write_bytes(b"glTF\x02\x00\x00\x00")
    assert viewable_glb(str(path), tmp_path / "viewer") == str(path)
