"""Image preprocessing (spec §11.1): exact crop/resize/composite, every kind of bad input, and
background removal through rembg + onnxruntime with a tiny generated model. Offline and fast."""
import io
import os
import struct
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from trellis.pipelines import preprocess as pp
from trellis.pipelines.preprocess import (BackgroundRemovalUnavailable, BackgroundRemover,
                                          load_image, preprocess_image, split_multiview_strip)

REFUSED = "http://127.0.0.1:9/u2net.onnx"  # the discard port: nothing listens, connection refused


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def rgba_with_rect(w, h, x0, y0, x1, y1, colour=(200, 100, 50)):
    """Transparent-black w x h image with an opaque rectangle on pixel indices x0..x1, y0..y1."""
    a = np.zeros((h, w, 4), np.uint8)
    a[y0:y1 + 1, x0:x1 + 1] = (*colour, 255)
    return a


def reference_preprocess(rgba: np.ndarray) -> np.ndarray:
    """§11.1 steps 3-5 written out plainly: numpy bbox, explicit rounding and padding."""
    ys, xs = np.where(rgba[:, :, 3] > 204)
    x_min, x_max, y_min, y_max = xs.min(), xs.max(), ys.min(), ys.max()
    cx, cy = (x_min + x_max) / 2, (y_min + y_max) / 2
    half = int(1.2 * max(x_max - x_min, y_max - y_min)) // 2
    # Python's round() is half-to-even, the rule Pillow applies to a float crop box (§20)
    left, top, right, bottom = (round(v) for v in (cx - half, cy - half, cx + half, cy + half))
    crop = np.zeros((bottom - top, right - left, 4), np.uint8)  # outside the image: (0,0,0,0)
    h, w = rgba.shape[:2]
    sy0, sy1, sx0, sx1 = max(top, 0), min(bottom, h), max(left, 0), min(right, w)
    crop[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = rgba[sy0:sy1, sx0:sx1]
    big = np.asarray(Image.fromarray(crop).resize((518, 518), Image.Resampling.LANCZOS))
    f = big.astype(np.float32) / 255
    return (f[:, :, :3] * f[:, :, 3:4] * 255).astype(np.uint8)


class MustNotRun:
    def remove(self, img):
        raise AssertionError("background removal must not run for an image with real alpha")


class Recording:
    """Fake remover: records its input and cuts out a centred box."""

    def __init__(self):
        self.seen = []

    def remove(self, img):
        self.seen.append((img.mode, img.size))
        w, h = img.size
        a = np.zeros((h, w), np.uint8)
        a[h // 4:3 * h // 4, w // 4:3 * w // 4] = 255
        out = img.convert("RGBA")
        out.putalpha(Image.fromarray(a))
        return out


def png_bytes(img, **kw):
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def write_blank_png(path, w, h):
    """A valid 1-bit black PNG of any size, written row block by row block (no big allocation)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(1)
    row = bytes(1 + (w + 7) // 8)  # filter byte 0 + packed bits
    idat = []
    done = 0
    while done < h:
        n = min(1000, h - done)
        idat.append(comp.compress(row * n))
        done += n
    idat.append(comp.flush())
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)))
        f.write(chunk(b"IDAT", b"".join(idat)))
        f.write(chunk(b"IEND", b""))


def write_flat_grey_jpeg(path, w, h):
    """A valid baseline greyscale JPEG of any size (multiples of 8), mid grey everywhere.

    One-symbol Huffman tables make every 8x8 block two zero bits (DC difference 0, then EOB), so a
    20000x20000 image is 1.5 MB of zero bytes and needs no encoder.
    """
    assert w % 8 == 0 and h % 8 == 0
    seg = lambda marker, body: marker + struct.pack(">H", len(body) + 2) + body
    one_code = bytes([1] + [0] * 15)  # a single code of length 1 ('0')
    blocks = (w // 8) * (h // 8)
    with open(path, "wb") as f:
        f.write(b"\xff\xd8")
        f.write(seg(b"\xff\xdb", b"\x00" + bytes([1] * 64)))                            # DQT
        f.write(seg(b"\xff\xc0", struct.pack(">BHHB", 8, h, w, 1) + b"\x01\x11\x00"))   # SOF0
        f.write(seg(b"\xff\xc4", b"\x00" + one_code + b"\x00"))                          # DHT DC: 0
        f.write(seg(b"\xff\xc4", b"\x10" + one_code + b"\x00"))                          # DHT AC: EOB
        f.write(seg(b"\xff\xda", b"\x01\x01\x00\x00\x3f\x00"))                           # SOS
        nbits = 2 * blocks
        f.write(bytes(nbits // 8))
        if nbits % 8:
            f.write(bytes([(1 << (8 - nbits % 8)) - 1]))  # pad the last byte with 1-bits
        f.write(b"\xff\xd9")


def peak_rss_mb():
    import resource
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


# ---------------------------------------------------------------------------------------------
# §11.1 exactness
# ---------------------------------------------------------------------------------------------

def test_crop_resize_composite_is_exact():
    # opaque rectangle on x 60..139, y 30..69 of a 200x100 transparent image. By hand:
    # extents 79 and 39 -> side int(1.2*79) = 94, half 47; centre (99.5, 49.5);
    # box (52.5, 2.5, 146.5, 96.5) -> Pillow rounds half to even -> (52, 2, 146, 96), 94x94;
    # the rectangle lands on crop columns 8..87 and rows 28..67, i.e. 518/94 = 5.51 times that:
    # output x 44..485, y 154..375 (plus a few pixels of Lanczos ringing).
    a = rgba_with_rect(200, 100, 60, 30, 139, 69)
    out = preprocess_image(Image.fromarray(a), remover=MustNotRun())
    assert out.mode == "RGB" and out.size == (518, 518)
    got = np.asarray(out)
    np.testing.assert_array_equal(got, reference_preprocess(a))

    # hand-derived pixels: inside the object the colour survives exactly (alpha 1 ->
    # 200/255*1*255 = 200.0 in float32, truncated to 200); transparent regions come out black
    for y, x in [(259, 259), (200, 100), (350, 460), (180, 80)]:
        assert tuple(got[y, x]) == (200, 100, 50), (y, x)
    for y, x in [(0, 0), (517, 517), (120, 259), (400, 259), (259, 20), (259, 505)]:
        assert tuple(got[y, x]) == (0, 0, 0), (y, x)

    # centred: the object's rows/cols are symmetric about 259 within the half-pixel crop offset
    opaque = np.all(got == (200, 100, 50), axis=2)
    ys, xs = np.nonzero(opaque)
    assert abs((xs.min() + xs.max()) / 2 - 259) <= 6 and abs((ys.min() + ys.max()) / 2 - 259) <= 6
    # the long side spans about 1/1.2 of the frame
    assert 0.78 < (xs.max() - xs.min() + 1) / 518 < 0.86


def test_crop_reaching_outside_the_image_is_transparent_black():
    # object touching the left and top border: the square crop extends past the image
    a = rgba_with_rect(120, 90, 0, 0, 59, 79, colour=(10, 250, 130))
    a[:, :, 3][a[:, :, 3] == 255] = 230  # partially transparent, still above 204: real alpha
    out = np.asarray(preprocess_image(a, remover=MustNotRun()))
    np.testing.assert_array_equal(out, reference_preprocess(a))
    assert tuple(out[5, 259]) == (0, 0, 0) and tuple(out[259, 5]) == (0, 0, 0)
    # Pillow resizes RGBA premultiplied, which rounds the colour (10, 250, 130) at alpha 230 to
    # (9, 249, 129); compositing then truncates 9*230/255 = 8.12, 249*230/255 = 224.59 and
    # 129*230/255 = 116.35 (in float32, /255 first as in the spec)
    assert tuple(out[259, 259]) == (8, 224, 116)


def test_real_alpha_skips_background_removal_and_opaque_alpha_does_not():
    a = rgba_with_rect(64, 48, 10, 10, 40, 30)
    preprocess_image(Image.fromarray(a), remover=MustNotRun())  # must not call the remover

    opaque = np.full((48, 64, 4), 255, np.uint8)
    rec = Recording()
    out = preprocess_image(Image.fromarray(opaque), remover=rec)
    assert rec.seen == [("RGB", (64, 48))] and out.size == (518, 518)


def test_long_side_capped_at_1024_before_background_removal():
    rec = Recording()
    preprocess_image(Image.new("RGB", (2000, 1000), (90, 90, 90)), remover=rec)
    preprocess_image(Image.new("RGB", (700, 3000), (90, 90, 90)), remover=rec)
    # 700 * 1024/3000 = 238.93 -> 238 (truncated)
    assert rec.seen == [("RGB", (1024, 512)), ("RGB", (238, 1024))]


def test_no_foreground_is_a_clear_error(tmp_path):
    p = tmp_path / "empty.png"
    Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(p)
    with pytest.raises(ValueError, match="No foreground found.*transparen"):
        preprocess_image(str(p), remover=MustNotRun())

    class NothingFound:
        def remove(self, img):
            out = img.convert("RGBA")
            out.putalpha(100)  # nothing above 204
            return out

    with pytest.raises(ValueError, match="No foreground found: background removal"):
        preprocess_image(Image.new("RGB", (64, 64)), remover=NothingFound())


# ---------------------------------------------------------------------------------------------
# inputs: types, modes, orientation, bad files
# ---------------------------------------------------------------------------------------------

def test_input_types_agree(tmp_path):
    a = rgba_with_rect(80, 60, 20, 15, 59, 44)
    p = tmp_path / "obj.png"
    Image.fromarray(a).save(p)
    ref = np.asarray(preprocess_image(Image.fromarray(a), remover=MustNotRun()))
    for src in (a, str(p), p, p.read_bytes(), bytearray(p.read_bytes()), a.astype(np.float32) / 255,
                a.astype(np.uint16) * 257):
        np.testing.assert_array_equal(np.asarray(preprocess_image(src, remover=MustNotRun())), ref)


def test_bad_files(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture\n" * 20)
    with pytest.raises(ValueError, match="not an image file"):
        load_image(text)

    missing = tmp_path / "nope.jpg"
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        load_image(str(missing))

    with pytest.raises(ValueError, match="is a folder"):
        load_image(tmp_path)

    good = png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)))
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good[:60])
    with pytest.raises(ValueError, match="damaged or truncated|not an image"):
        load_image(truncated)

    with pytest.raises(ValueError, match="empty"):
        load_image(b"")
    with pytest.raises(TypeError, match="Unsupported image input"):
        load_image(12345)


def test_tiny_and_empty_images(tmp_path):
    with pytest.raises(ValueError, match="0x0 pixels"):
        load_image(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(ValueError, match="1x1 pixels"):
        load_image(np.zeros((1, 1, 3), np.uint8))
    p = tmp_path / "dot.png"
    Image.new("RGB", (1, 1)).save(p)
    with pytest.raises(ValueError, match="1x1 pixels.*larger image"):
        load_image(p)
    with pytest.raises(ValueError, match="7x100"):
        load_image(Image.new("RGB", (7, 100)))
    # a foreground speck too small to crop
    a = np.zeros((32, 32, 4), np.uint8)
    a[10, 10] = 255
    with pytest.raises(ValueError, match="only 1x1 pixels"):
        preprocess_image(a, remover=MustNotRun())


def test_bad_arrays():
    with pytest.raises(ValueError, match=r"channels last.*transpose"):
        load_image(np.zeros((3, 64, 64), np.float32))
    with pytest.raises(ValueError, match="shape"):
        load_image(np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="dtype int64"):
        load_image(np.zeros((64, 64, 3), np.int64))
    with pytest.raises(ValueError, match=r"\[0, 1\].*Divide"):
        load_image(np.full((64, 64, 3), 200.0))
    nan = np.zeros((64, 64, 3), np.float32)
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        load_image(nan)
    # accepted: grey, grey+1 channel, bool, float in [0, 1]
    assert load_image(np.zeros((16, 16), np.uint8)).mode == "RGB"
    assert load_image(np.zeros((16, 16, 1), np.uint8)).mode == "RGB"
    assert load_image(np.ones((16, 16), bool)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.full((16, 16, 3), 0.5)).getpixel((0, 0)) == (128, 128, 128)


def test_sixteen_bit_png_and_array(tmp_path):
    grey = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(grey).save(p)
    with Image.open(p) as im:
        assert im.mode.startswith("I")
    img = load_image(p)
    assert img.mode == "RGB" and img.size == (64, 64)
    # 16-bit -> 8-bit is x / 257 rounded, not Pillow's clipping convert
    np.testing.assert_array_equal(np.asarray(img)[:, :, 0], np.round(grey / 257).astype(np.uint8))
    assert preprocess_image(p, remover=Recording()).size == (518, 518)

    rgba16 = rgba_with_rect(64, 64, 10, 10, 50, 50).astype(np.uint16) * 257
    img = load_image(rgba16)
    assert img.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(img), rgba16 // 257)
    assert preprocess_image(rgba16, remover=MustNotRun()).size == (518, 518)


def test_cmyk_jpeg(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (64, 64), (0, 255, 255, 0)).save(p, quality=95)  # red
    with Image.open(p) as im:
        assert im.mode == "CMYK"
    img = load_image(p)
    assert img.mode == "RGB"
    r, g, b = img.getpixel((32, 32))
    assert r > 220 and g < 40 and b < 40
    assert preprocess_image(p, remover=Recording()).size == (518, 518)


def test_palette_png_with_transparency(tmp_path):
    pal = Image.new("P", (64, 64), 0)
    pal.paste(1, (20, 16, 44, 48))
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p = tmp_path / "pal.png"
    pal.save(p, transparency=0)
    with Image.open(p) as im:
        assert im.mode == "P"
    img = load_image(p)
    assert img.mode == "RGBA" and pp.has_real_alpha(img)
    assert img.getpixel((0, 0))[3] == 0 and img.getpixel((30, 30)) == (255, 0, 0, 255)
    out = preprocess_image(p, remover=MustNotRun())
    assert out.getpixel((259, 259)) == (255, 0, 0) and out.getpixel((0, 0)) == (0, 0, 0)


def test_other_modes():
    assert load_image(Image.new("LA", (16, 16), (100, 50))).mode == "RGBA"
    assert load_image(Image.new("LA", (16, 16), (100, 255))).mode == "RGB"  # opaque alpha dropped
    assert load_image(Image.new("L", (16, 16), 7)).getpixel((0, 0)) == (7, 7, 7)
    assert load_image(Image.new("1", (16, 16), 1)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(Image.new("F", (16, 16), 0.5)).getpixel((0, 0)) == (128, 128, 128)
    assert load_image(Image.new("I", (16, 16), 65535)).getpixel((0, 0)) == (255, 255, 255)
    grey_trns = Image.new("L", (16, 16), 9)
    grey_trns.info["transparency"] = 9
    assert load_image(grey_trns).getpixel((0, 0)) == (9, 9, 9, 0)
    src = Image.new("RGBA", (16, 16), (1, 2, 3, 4))
    load_image(src)
    assert src.mode == "RGBA" and src.getpixel((0, 0)) == (1, 2, 3, 4)  # input left untouched


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = (255, 0, 0)  # left half red
    a[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    p = tmp_path / "rotated.jpg"
    Image.fromarray(a).save(p, quality=95, exif=exif.tobytes())
    img = load_image(p)
    assert img.size == (20, 40)  # upright: portrait
    top, bottom = img.getpixel((10, 5)), img.getpixel((10, 34))
    assert top[0] > 200 and top[2] < 60        # the left half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


# ---------------------------------------------------------------------------------------------
# huge images (module docstring: MAX_PIXELS policy)
# ---------------------------------------------------------------------------------------------

def test_huge_png_is_refused_fast(tmp_path):
    p = tmp_path / "huge.png"
    write_blank_png(p, 20000, 20000)
    assert p.stat().st_size < 1_000_000
    t = time.perf_counter()
    with pytest.raises(ValueError, match="too large.*Downscale"):
        load_image(p)
    with pytest.raises(ValueError, match="too large"):
        load_image(p.read_bytes())
    assert time.perf_counter() - t < 2.0


def test_over_budget_png_is_refused_with_its_size(tmp_path, monkeypatch):
    monkeypatch.setattr(pp, "MAX_PIXELS", 100_000)
    p = tmp_path / "big.png"
    write_blank_png(p, 400, 300)
    with pytest.raises(ValueError, match=r"400x300 pixels.*Downscale it to at most 316"):
        load_image(p)
    # already in memory: shrunk by an integer factor instead (400x300 / 2 = 200x150)
    assert load_image(Image.new("RGB", (400, 300))).size == (200, 150)


def test_over_budget_jpeg_is_decoded_at_reduced_scale(tmp_path, monkeypatch):
    monkeypatch.setattr(pp, "MAX_PIXELS", 100_000)
    p = tmp_path / "big.jpg"
    Image.new("RGB", (800, 400), (30, 160, 90)).save(p)
    img = load_image(p)  # 320k pixels -> libjpeg scale 1/2 = 80k, within budget
    assert img.size == (400, 200)
    r, g, b = img.getpixel((200, 100))
    assert abs(r - 30) < 4 and abs(g - 160) < 4 and abs(b - 90) < 4


def test_over_budget_progressive_jpeg_is_refused_beyond_3x(tmp_path, monkeypatch):
    monkeypatch.setattr(pp, "MAX_PIXELS", 100_000)
    p = tmp_path / "prog.jpg"
    Image.new("RGB", (800, 400), (30, 160, 90)).save(p, progressive=True)
    with pytest.raises(ValueError, match="800x400 pixels"):
        load_image(p)  # 320k pixels > 3 x 100k
    Image.new("RGB", (500, 400), (30, 160, 90)).save(p, progressive=True)
    assert load_image(p).size == (250, 200)  # 200k pixels: drafted to 1/2


@pytest.mark.skipif(sys.platform == "win32", reason="peak RSS via the resource module")
def test_20000_square_jpeg_loads_at_reduced_scale_cheaply(tmp_path):
    p = tmp_path / "huge.jpg"
    write_flat_grey_jpeg(p, 20000, 20000)  # 400 MP; a full RGB decode would need 1.2 GB
    assert p.stat().st_size < 2_000_000
    before = peak_rss_mb()
    t = time.perf_counter()
    img = load_image(p)
    assert time.perf_counter() - t < 5.0
    assert img.size == (5000, 5000) and img.mode == "RGB"  # scale 1/4: 25 MP <= 64 MP
    assert img.getpixel((1250, 1250)) == (128, 128, 128)
    assert peak_rss_mb() - before < 200


# ---------------------------------------------------------------------------------------------
# background removal: unavailable, session choice, real onnxruntime with a tiny model
# ---------------------------------------------------------------------------------------------

def test_model_folder_default_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("TRELLIS_MODEL_DIR", raising=False)
    d = pp.default_model_dir()
    assert d.parts[-3:] == (".cache", "models", "u2net")
    assert (d.parents[2] / "trellis" / "pipelines" / "preprocess.py").is_file()
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(tmp_path))
    assert pp.default_model_dir() == tmp_path / "u2net"
    assert BackgroundRemover().model_file == tmp_path / "u2net" / "u2net.onnx"


def test_unavailable_without_download(tmp_path):
    r = BackgroundRemover(model_dir=tmp_path / "models", allow_download=False)
    with pytest.raises(BackgroundRemovalUnavailable) as e:
        preprocess_image(Image.new("RGB", (64, 64)), remover=r)
    msg = str(e.value)
    assert "u2net.onnx" in msg and str(tmp_path / "models") in msg
    assert pp.U2NET_URL in msg and "transparent background" in msg


def test_unavailable_when_download_fails(tmp_path, monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TRELLIS_U2NET_URL", REFUSED)
    model_dir = tmp_path / "empty"
    model_dir.mkdir()
    r = BackgroundRemover(model_dir=model_dir)
    assert r.download_url == REFUSED
    t = time.perf_counter()
    with pytest.raises(BackgroundRemovalUnavailable) as e:
        r.remove(Image.new("RGB", (64, 64)))
    assert time.perf_counter() - t < 10
    msg = str(e.value)
    assert "download failed" in msg and "u2net.onnx" in msg and str(model_dir) in msg
    assert REFUSED in msg and "transparent background" in msg
    assert list(model_dir.iterdir()) == []  # no partial file left behind


def test_missing_custom_model_path(tmp_path):
    r = BackgroundRemover(model_path=tmp_path / "mine.onnx")
    with pytest.raises(BackgroundRemovalUnavailable, match="mine.onnx.*does not exist"):
        r.remove(Image.new("RGB", (64, 64)))


def test_session_is_u2net_on_cpu_with_our_folder(tmp_path, monkeypatch):
    rembg = pytest.importorskip("rembg")
    (tmp_path / "u2net.onnx").write_bytes(b"stand-in")
    monkeypatch.setenv("U2NET_HOME", "/somewhere/else")
    calls = []

    def fake_new_session(name, *args, **kwargs):
        calls.append((name, args, kwargs, os.environ.get("U2NET_HOME")))
        return "session"

    monkeypatch.setattr(rembg, "new_session", fake_new_session)
    r = BackgroundRemover(model_dir=tmp_path)
    assert r._get_session() == "session" and r._get_session() == "session"  # created once
    assert calls == [("u2net", (), {"providers": ["CPUExecutionProvider"]}, str(tmp_path))]
    assert os.environ["U2NET_HOME"] == "/somewhere/else"  # restored


def tiny_u2net(path):
    """A u2net-shaped ONNX model: [1,3,320,320] -> [1,1,320,320] = sigmoid(20 * mean of the
    normalised channels), i.e. bright pixels -> 1, dark pixels -> 0 (saturated at both ends, so
    rembg's min-max normalisation leaves them at exactly 255 and 0)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((1, 3, 1, 1), 20 / 3, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["logit"]),
         helper.make_node("Sigmoid", ["logit"], ["mask"])], "tiny_u2net",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 320, 320])],
        initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def bright_disc_photo(w=300, h=200):
    yy, xx = np.mgrid[:h, :w]
    r2 = (xx - 170) ** 2 + (yy - 90) ** 2
    a = np.full((h, w, 3), 20, np.uint8)
    a[r2 < 50 ** 2] = (230, 200, 180)
    return Image.fromarray(a), r2 < 46 ** 2, r2 > 54 ** 2  # image, inner disc, clear background


def check_cutout(out):
    got = np.asarray(out)
    assert out.mode == "RGB" and out.size == (518, 518)
    assert got[:8].max() == 0 and got[-8:].max() == 0 and got[:, :8].max() == 0 and got[:, -8:].max() == 0
    assert tuple(got[259, 259]) == (230, 200, 180)
    ys, xs = np.nonzero(got.sum(axis=2) > 300)
    # the disc (diameter 99 px -> side 118) fills about 1/1.2 of the frame, centred
    assert 0.75 < (xs.max() - xs.min()) / 518 < 0.9 and abs((xs.min() + xs.max()) / 2 - 259) < 8


def test_real_onnxruntime_with_custom_model_path(tmp_path):
    pytest.importorskip("rembg")
    model = tiny_u2net(tmp_path / "tiny_u2net.onnx")
    remover = BackgroundRemover(model_path=model)
    photo, inner, outer = bright_disc_photo()
    cut = remover.remove(photo)
    assert cut.mode == "RGBA" and cut.size == photo.size
    alpha = np.asarray(cut)[:, :, 3]
    assert alpha[inner].min() == 255 and alpha[outer].max() == 0
    check_cutout(preprocess_image(photo, remover=remover))


def test_real_onnxruntime_with_u2net_file_in_model_dir(tmp_path, monkeypatch):
    pytest.importorskip("rembg")
    # if rembg ever failed to find the file it would try GitHub: make that fail at once
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    tiny_u2net(tmp_path / "u2net.onnx")
    remover = BackgroundRemover(model_dir=tmp_path, allow_download=False)
    photo, _, _ = bright_disc_photo()
    check_cutout(preprocess_image(photo, remover=remover))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u2net.onnx"]  # nothing downloaded


def test_broken_model_file_is_a_clear_error(tmp_path):
    pytest.importorskip("rembg")
    (tmp_path / "u2net.onnx").write_bytes(b"not an onnx model")
    r = BackgroundRemover(model_dir=tmp_path, allow_download=False)
    with pytest.raises(BackgroundRemovalUnavailable, match="could not be loaded.*Delete it"):
        r.remove(Image.new("RGB", (64, 64)))


# ---------------------------------------------------------------------------------------------
# multi-view strip
# ---------------------------------------------------------------------------------------------

def test_split_multiview_strip():
    strip = np.zeros((60, 200, 4), np.uint8)
    strip[10:50, 0:30] = (255, 0, 0, 255)      # touches the left edge
    strip[20:40, 70:110] = (0, 255, 0, 255)
    strip[5:55, 150:200] = (0, 0, 255, 255)    # touches the right edge
    views = split_multiview_strip(strip, preprocess=False)
    assert [v.size for v in views] == [(30, 60), (40, 60), (50, 60)]
    outs = split_multiview_strip(Image.fromarray(strip), remover=MustNotRun())
    assert [o.getpixel((259, 259)) for o in outs] == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    assert all(o.size == (518, 518) for o in outs)

    with pytest.raises(ValueError, match="needs transparency"):
        split_multiview_strip(Image.new("RGB", (100, 40)))
    with pytest.raises(ValueError, match="fully transparent"):
        split_multiview_strip(np.zeros((40, 100, 4), np.uint8))


def test_elongated_objects_and_images_are_refused_cheaply():
    band = Image.new("RGBA", (100_000, 8), (0, 0, 0, 0))
    band.paste((200, 80, 40, 255), (0, 2, 100_000, 6))
    with pytest.raises(ValueError, match="25000 times wider than tall"):
        pp.crop_and_composite(band)
    with pytest.raises(ValueError, match="times taller than wide"):
        pp.crop_and_composite(band.transpose(Image.Transpose.ROTATE_90))
    with pytest.raises(ValueError, match="The image is 20000x8 pixels"):
        pp.preprocess_image(Image.new("RGB", (20_000, 8), (9, 9, 9)), remover=lambda img: img)
    # A small object in a very wide image is fine: only the object's shape counts.
    dot = Image.new("RGBA", (50_000, 64), (0, 0, 0, 0))
    dot.paste((200, 80, 40, 255), (30_000, 10, 30_040, 50))
    assert pp.crop_and_composite(dot).size == (518, 518)
    # 100:1 is still accepted.
    ok = Image.new("RGBA", (1000, 10), (200, 80, 40, 255))
    assert pp.crop_and_composite(ok).size == (518, 518)


def test_crop_beyond_the_square_budget_is_made_from_a_shrunk_image(monkeypatch):
    monkeypatch.setattr(pp, "MAX_CROP_SIDE", 256)
    img = Image.new("RGBA", (800, 600), (0, 0, 0, 0))
    img.paste((200, 80, 40, 255), (100, 100, 700, 500))       # crop side 1.2 * 599 = 718 > 256
    seen = []
    real_crop = Image.Image.crop
    monkeypatch.setattr(Image.Image, "crop", lambda self, box=None: seen.append(box) or real_crop(self, box))
    out = pp.crop_and_composite(img)
    assert out.size == (518, 518)
    (box,) = seen
    assert box[2] - box[0] <= 256
    arr = np.asarray(out).astype(int)
    assert arr[259, 259].tolist() == [200, 80, 40]              # the object, in the middle
    assert arr[5, 5].tolist() == [0, 0, 0]                      # the margin, black
