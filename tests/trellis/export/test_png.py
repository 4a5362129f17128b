"""trellis.export.png: PNG files written in bands by threads, read back by Pillow (a real decoder, which checks every
chunk's CRC and the zlib stream's Adler-32) pixel for pixel."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from trellis.export import png
from trellis.export.assemble import texture_image


def decoded(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    img.load()
    a = np.asarray(img)
    return a[:, :, None] if a.ndim == 2 else a


def chunks(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, out = 8, []
    while at < len(data):
        (n,) = struct.unpack_from(">I", data, at)
        kind = data[at + 4:at + 8]
        body = data[at + 8:at + 8 + n]
        (crc,) = struct.unpack_from(">I", data, at + 8 + n)
        assert crc == zlib.crc32(kind + body)
        out.append((kind, body))
        at += 12 + n
    return out


def smooth_texture(size=256, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    t = np.stack([0.5 + 0.3 * np.sin(9 * xx), 0.5 + 0.3 * np.cos(7 * yy), 0.4 + 0.2 * np.sin(5 * (xx + yy))], -1)
    return (np.clip(t + rng.normal(0, 0.01, t.shape), 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 9, 4), (7, 5, 4), (300, 17, 1), (130, 64, 3), (257, 3, 3)])
@pytest.mark.parametrize("threads", [1, 2, 5])
def test_random_pixels_read_back_exactly(shape, threads):
    a = np.random.default_rng(sum(shape) + threads).integers(0, 256, shape, dtype=np.uint8)
    data = png.encode_png(a, threads=threads)
    assert np.array_equal(decoded(data), a)
    kinds = [k for k, _ in chunks(data)]
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]


def test_grey_two_dimensional_input():
    a = np.random.default_rng(1).integers(0, 256, (70, 40), dtype=np.uint8)
    img = Image.open(io.BytesIO(png.encode_png(a)))
    assert img.mode == "L" and np.array_equal(np.asarray(img), a)


def test_bands_make_one_stream_and_the_file_names_its_level():
    tex = smooth_texture(512)
    one, many = png.encode_png(tex, threads=1), png.encode_png(tex, threads=8)
    assert np.array_equal(decoded(one), tex) and np.array_equal(decoded(many), tex)
    (_, idat_one), (_, idat_many) = chunks(one)[1], chunks(many)[1]
    # the bands are fixed (BAND_ROWS rows each): the same file whatever the threads
    assert idat_one == idat_many and len(range(0, 512 - png.BAND_ROWS // 2, png.BAND_ROWS)) == 4
    assert idat_many[1] >> 6 == 0                              # level 1: FLEVEL "fastest"
    assert chunks(png.encode_png(tex, level=9))[1][1][1] >> 6 == 3   # FLEVEL "best"
    assert png.encode_png(tex, threads=8) == many               # the same bytes every time


def test_each_row_gets_the_filter_that_fits_it():
    rows = np.zeros((4, 64, 1), dtype=np.uint8)
    rows[0, :, 0] = np.arange(64) * 3            # a ramp along the row: "sub" leaves 3s
    rows[1, :, 0] = rows[0, :, 0]                # the row above again: "up" leaves zeros
    rows[2, :, 0] = np.random.default_rng(0).integers(0, 256, 64)    # noise
    rows[3, :, 0] = 77
    filtered = np.frombuffer(zlib.decompress(chunks(png.encode_png(rows, threads=1))[1][1]), np.uint8)
    types = filtered.reshape(4, 65)[:, 0]
    assert types[0] == 1 and types[1] == 2
    assert np.array_equal(decoded(png.encode_png(rows)), rows)


def test_texture_image_saves_through_the_fast_encoder(tmp_path):
    tex = smooth_texture(128)
    img = texture_image(tex)
    assert isinstance(img, png.FastPngImage)
    buf = io.BytesIO()
    img.save(buf, format="png")                            # as trimesh's GLB writer calls it
    assert buf.getvalue() == png.encode_png(tex, level=1)
    img.save(tmp_path / "t.png")                           # as the OBJ writer does
    assert (tmp_path / "t.png").read_bytes() == buf.getvalue()
    img.save(tmp_path / "t.jpg", quality=95)               # another format: PIL's own encoder
    assert Image.open(tmp_path / "t.jpg").format == "JPEG"
    strong = io.BytesIO()
    img.save(strong, format="png", compress_level=9)
    assert np.array_equal(decoded(strong.getvalue()), tex) and len(strong.getvalue()) < len(buf.getvalue())


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 2), np.uint8),
                                 np.zeros((0, 4, 3), np.uint8), np.zeros((2, 2, 2, 3), np.uint8)])
def test_bad_input_is_refused(bad):
    with pytest.raises(ValueError, match="uint8"):
        png.encode_png(bad)


def shared_mesh(tex):
    """A small TexturedMesh (two triangles over the whole texture) for the file writers."""
    from trellis.export.textured import TexturedMesh
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    f = np.array([[0, 1, 2], [0, 2, 3]], np.int64)
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    return TexturedMesh(v, f, uv, tex, {})


def test_files_written_side_by_side_share_one_encode(tmp_path, monkeypatch):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import trimesh

    from trellis.export.formats import write
    tex = smooth_texture(256, seed=3)
    mesh = shared_mesh(tex)
    encodes = []
    real = png.encode_png

    def counted(*args, **kwargs):
        encodes.append(threading.get_ident())
        return real(*args, **kwargs)
    monkeypatch.setattr(png, "encode_png", counted)
    start = threading.Barrier(3)

    def one(name):
        start.wait()
        return write(mesh, tmp_path / name)
    with ThreadPoolExecutor(3) as pool:
        paths = list(pool.map(one, ["model.glb", "model.obj", "again.glb"]))
    assert len(encodes) == 1                                   # one encode for the three files
    own = real(tex, level=1)
    assert (tmp_path / "model.png").read_bytes() == own        # the OBJ's texture: the file itself
    for glb in (paths[0], paths[2]):
        loaded = trimesh.load(glb, force="mesh")
        image = loaded.visual.material.baseColorTexture
        assert np.array_equal(np.asarray(image.convert("RGB")), tex)
        assert own in open(glb, "rb").read()                   # embedded byte for byte
    assert mesh.png_texture() is mesh.png_texture()


def test_a_shared_image_keeps_its_format_when_another_is_asked(tmp_path):
    from trellis.export.formats import write
    from trellis.export.formats.gltf import encoded_texture
    mesh = shared_mesh(smooth_texture(64, seed=4))
    shared = mesh.png_texture()
    jpeg = encoded_texture(shared, "jpeg")
    assert jpeg is not shared and jpeg.format == "JPEG"
    assert shared.format != "JPEG" and not getattr(shared, "encoderinfo", {})
    write(mesh, tmp_path / "a.obj", texture_format="jpeg")
    write(mesh, tmp_path / "b.obj")
    assert Image.open(tmp_path / "a.jpg").format == "JPEG" and Image.open(tmp_path / "b.png").format == "PNG"
    assert (tmp_path / "b.png").read_bytes() == png.encode_png(mesh.texture, level=1)


def test_png_bytes_are_encoded_once_per_level_and_survive_pickling():
    import pickle
    tex = smooth_texture(96, seed=5)
    img = texture_image(tex)
    first = img.png_bytes()
    assert img.png_bytes() is first and first == png.encode_png(tex, level=1)
    strong = img.png_bytes(9)
    assert strong is not first and np.array_equal(decoded(strong), tex)
    back = pickle.loads(pickle.dumps(shared_mesh(tex)))
    assert back.png_texture().png_bytes() == first


def test_images_encoded_side_by_side_keep_their_files_for_their_saves(monkeypatch):
    a, b = texture_image(smooth_texture(64, seed=1)), texture_image(smooth_texture(64, seed=2))
    plain = Image.fromarray(smooth_texture(64, seed=3))           # not a FastPngImage: left to its own save
    encodes = []
    real = png.encode_png
    monkeypatch.setattr(png, "encode_png", lambda *args, **kwargs: encodes.append(1) or real(*args, **kwargs))
    assert png.encode_side_by_side([a, b, a, plain, None]) == 2
    assert len(encodes) == 2                                       # each image once, the repeat skipped
    for img in (a, b):
        out = io.BytesIO()
        img.save(out, format="png")                                # as trimesh's GLB writer saves it
        assert out.getvalue() == real(np.asarray(img), level=1)
    assert len(encodes) == 2                                       # the saves took the files already made
