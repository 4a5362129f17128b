"""PNG encoding of 8-bit textures on several cores (``encode_png``), and a PIL image that saves through it
(``FastPngImage``).

The file is an ordinary PNG (ISO/IEC 15948): one IHDR, one zlib stream in IDAT chunks, IEND. Each row gets the
filter whose residuals, read as signed bytes, have the smallest absolute sum (the usual heuristic); the rows are
deflated in bands by threads (zlib leaves the GIL while it works), each band a fresh raw deflate stream that ends
on a byte boundary without the final-block bit (a sync flush), so that the bands joined in order are one valid
deflate stream; the zlib header and the Adler-32 of all rows go around it. Any PNG reader decodes it as one
stream. Pillow encodes a texture on one core, where this takes a fraction of that on a many-core machine
(docs/benchmarks/export.md#assembly).
"""
from __future__ import annotations

import os
import struct
import threading
import zlib

import numpy as np
from PIL import Image

from ..core.concurrency import thread_pool

__all__ = ["BAND_ROWS", "MAX_THREADS", "filter_rows", "encode_png", "FastPngImage", "fast_png_image",
           "encode_side_by_side"]

# Rows per band (the last takes the rest): fixed, so that a file's bytes depend on its pixels and level only, not on
# the machine's cores; each join costs the next band its 32 KiB dictionary (a few hundred bytes per band).
BAND_ROWS = 128
# At most this many threads encode one image (two images are often encoded side by side).
MAX_THREADS = 8
_COLOUR_TYPE = {1: 0, 3: 2, 4: 6}           # channels -> PNG colour type: grey, RGB, RGBA


def filter_rows(rows: np.ndarray, above: np.ndarray | None, bpp: int) -> np.ndarray:
    """[H, 1 + W*C] uint8: each of ``rows`` [H, W*C] (uint8) preceded by its filter type and filtered with the
    type (0 none, 1 sub, 2 up, 3 average, 4 Paeth) whose residuals have the smallest absolute sum as signed
    bytes; ``above`` [W*C] is the row before the first (None: the image's first row, zeros); ``bpp`` the bytes
    per pixel."""
    x = np.ascontiguousarray(rows, dtype=np.uint8)
    prev = np.empty_like(x)
    prev[0] = 0 if above is None else above
    prev[1:] = x[:-1]
    left = np.zeros_like(x)
    left[:, bpp:] = x[:, :-bpp]
    up_left = np.zeros_like(x)
    up_left[:, bpp:] = prev[:, :-bpp]
    # Paeth's predictor in int16; the residuals wrap in uint8 as PNG's arithmetic does (modulo 256)
    a, b, c = left.astype(np.int16), prev.astype(np.int16), up_left.astype(np.int16)
    pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, up_left))
    average = (left >> 1) + (prev >> 1) + (left & prev & 1)
    out = np.empty((x.shape[0], x.shape[1] + 1), dtype=np.uint8)
    best_score = None
    for kind, residual in enumerate((x, x - left, x - prev, x - average, x - paeth)):
        score = np.add.reduce(np.minimum(residual, -residual), axis=1, dtype=np.int32)   # |signed byte| summed
        if best_score is None:
            out[:, 0], out[:, 1:], best_score = kind, residual, score
            continue
        better = score < best_score
        if better.any():
            out[better, 0], out[better, 1:], best_score[better] = kind, residual[better], score[better]
    return out


def _band(pixels: np.ndarray, start: int, stop: int, bpp: int, level: int, last: bool) -> tuple[bytes, bytes]:
    """(filtered rows, their raw deflate bytes) of rows start:stop."""
    rows = filter_rows(pixels[start:stop], None if start == 0 else pixels[start - 1], bpp).tobytes()
    packer = zlib.compressobj(level, zlib.DEFLATED, -15)
    data = packer.compress(rows) + packer.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
    return rows, data


def encode_png(image: np.ndarray, level: int = 1, threads: int | None = None) -> bytes:
    """The PNG file of ``image`` [H, W] or [H, W, C] uint8 (C 1, 3 or 4: grey, RGB, RGBA), zlib ``level``, rows
    deflated in bands of BAND_ROWS rows by up to ``threads`` threads (default: the cores, at most MAX_THREADS).
    The same pixels as any other PNG encoder's file; the same bytes for the same pixels and level, whatever
    ``threads``."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] not in _COLOUR_TYPE or min(a.shape[:2]) < 1:
        raise ValueError(f"encode_png takes [H, W] or [H, W, 1|3|4] uint8 pixels (got {a.dtype} {a.shape})")
    height, width, channels = a.shape
    pixels = np.ascontiguousarray(a).reshape(height, width * channels)
    if threads is None:
        threads = min(MAX_THREADS, os.cpu_count() or 1)
    starts = list(range(0, max(1, height - BAND_ROWS // 2), BAND_ROWS))      # no band of under half the rows
    jobs = [(start, starts[i + 1] if i + 1 < len(starts) else height, i + 1 == len(starts))
            for i, start in enumerate(starts)]
    if len(jobs) == 1 or threads <= 1:
        parts = [_band(pixels, start, stop, channels, level, last) for start, stop, last in jobs]
    else:
        with thread_pool(min(int(threads), len(jobs)), "trellis-png") as pool:
            parts = list(pool.map(lambda j: _band(pixels, j[0], j[1], channels, level, j[2]), jobs))
    adler = 1
    for rows, _ in parts:
        adler = zlib.adler32(rows, adler)
    # zlib header: deflate with a 32 KiB window, FLEVEL from the level (0 fastest ... 3 best), check bits
    cmf = 0x78
    flevel = 0 if level <= 1 else 1 if level <= 5 else 2 if level == 6 else 3
    flg = flevel << 6
    flg |= 31 - (cmf * 256 + flg) % 31
    stream = bytes((cmf, flg)) + b"".join(data for _, data in parts) + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPE[channels], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


_SLOTS_LOCK = threading.Lock()


class FastPngImage(Image.Image):
    """A PIL image whose saves as PNG (``img.save(f, format="png")``, as trimesh's GLB writer calls it, or to a path
    ending in .png) write ``encode_png``'s file at zlib level ``png_level`` (or the save's ``compress_level``); other
    formats save as usual, with the image's ``encoderinfo``. Made by ``fast_png_image``. Its PNG file is encoded
    once per level (``png_bytes``) and kept for its later saves, so files that embed one texture (a GLB and an OBJ
    written side by side) share one encode: its pixels are not to be changed after it is made."""

    png_level = 1

    def png_bytes(self, level: int | None = None) -> bytes:
        """The PNG file of this image at zlib ``level`` (default ``png_level``): encoded by the first caller, other
        callers (threads included) wait for that encode and get the same bytes."""
        level = self.png_level if level is None else int(level)
        with _SLOTS_LOCK:           # (PIL's pickling keeps no instance attributes: the slots are made here)
            slots = self.__dict__.setdefault("png_slots", {})
            slot = slots.setdefault(level, [threading.Lock(), None])
        with slot[0]:
            if slot[1] is None:
                slot[1] = encode_png(np.asarray(self), level=level)
            return slot[1]

    def save(self, fp, format=None, **params):
        name = os.fspath(fp) if isinstance(fp, (str, os.PathLike)) else None
        kind = format or (os.path.splitext(name)[1][1:] if isinstance(name, str) else None) or self.format
        if str(kind).lower() != "png" or self.mode not in ("L", "RGB", "RGBA"):
            return super().save(fp, format, **params)
        data = self.png_bytes(int(params.get("compress_level", self.png_level)))
        if name is None:
            fp.write(data)
        else:
            with open(name, "wb") as fh:
                fh.write(data)


def fast_png_image(img: Image.Image, level: int = 1) -> FastPngImage:
    """``img`` (an "L", "RGB" or "RGBA" PIL image) as a ``FastPngImage`` saving at zlib ``level``: the same object,
    its class changed (PIL's images carry no state a subclass would need)."""
    img.__class__ = FastPngImage
    img.png_level = int(level)
    return img


def encode_side_by_side(images) -> int:
    """The PNG files of the ``FastPngImage``s among ``images`` (others and repeats skipped) at their ``png_level``,
    encoded at once, one thread each (their bands share the cores instead of each image waiting for the last
    one's), kept for their later saves; returns how many were encoded."""
    todo = list({id(img): img for img in images if isinstance(img, FastPngImage)
                 and img.mode in ("L", "RGB", "RGBA")}.values())
    if len(todo) > 1:
        with thread_pool(len(todo), "trellis-png-images") as pool:
            list(pool.map(lambda img: img.png_bytes(), todo))
    elif todo:
        todo[0].png_bytes()
    return len(todo)
