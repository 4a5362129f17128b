"""Small test images shared by the app tests."""
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
