"""Small test images: an RGBA blob for the app, an object picture for the pipeline, a JPEG's bytes."""
import io

import numpy as np
from PIL import Image


def rgba_blob(path, size=96, color=(200, 80, 40)):
    """An RGBA PNG with real transparency (no background removal, so nothing is downloaded)."""
    yy, xx = np.mgrid[:size, :size]
    mask = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    a = np.zeros((size, size, 4), np.uint8)
    a[mask] = (*color, 255)
    Image.fromarray(a, "RGBA").save(path)
    return str(path)


def object_image(seed=0, size=518):
    """An RGB picture of a coloured blob on black (what preprocessing produces)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    mask = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 3) ** 2
    img = np.zeros((size, size, 3), np.uint8)
    img[mask] = rng.integers(40, 255, 3)
    return Image.fromarray(img)


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()
