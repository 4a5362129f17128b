"""TRELLIS.2's framing of the object (TRELLIS2_FACTS §5.1) beside v1's, through the shared preprocessing."""
import numpy as np
from PIL import Image

from trellis.pipelines.preprocess import TRELLIS2_FRAMING, Framing, crop_and_composite, preprocess_image


def rgba_with_box(w, h, box, alpha=255, colour=(200, 100, 50)):
    arr = np.zeros((h, w, 4), np.uint8)
    x0, y0, x1, y1 = box                      # inclusive pixel bounds
    arr[y0:y1 + 1, x0:x1 + 1] = (*colour, alpha)
    return arr


def expected_crop(arr, margin, threshold=0.8 * 255):
    """The facts' crop box, computed independently: centre +- int(margin * longer bbox side) // 2."""
    ys, xs = np.nonzero(arr[:, :, 3] > threshold)
    cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    half = int(margin * max(xs.max() - xs.min(), ys.max() - ys.min())) // 2
    return Image.fromarray(arr).crop((cx - half, cy - half, cx + half, cy + half))


def test_trellis2_crops_with_no_margin_and_keeps_the_crop_size():
    arr = rgba_with_box(100, 80, (20, 10, 59, 29))
    out = crop_and_composite(Image.fromarray(arr), framing=TRELLIS2_FRAMING)
    want = expected_crop(arr, 1.0)
    assert out.mode == "RGB" and out.size == want.size == (38, 38)
    assert np.array_equal(np.asarray(out), np.asarray(want)[:, :, :3])          # alpha 255: colours unchanged
    v1 = crop_and_composite(Image.fromarray(arr))
    assert v1.size == (518, 518) and expected_crop(arr, 1.2).size == (46, 46)    # v1: 1.2 margin, then 518²


def test_premultiplied_on_black_and_the_threshold_is_strict():
    arr = rgba_with_box(64, 64, (10, 10, 40, 40))
    arr[20:30, 20:30] = (200, 100, 50, 128)          # half-transparent patch inside the object
    arr[0:2, 0:2, 3] = 204                           # exactly 0.8 * 255: not foreground
    out = np.asarray(crop_and_composite(Image.fromarray(arr), framing=TRELLIS2_FRAMING))
    crop = np.asarray(expected_crop(arr, 1.0)).astype(np.float32) / 255
    want = (crop[:, :, :3] * crop[:, :, 3:4] * 255).astype(np.uint8)
    assert np.array_equal(out, want)
    assert tuple(out[10, 10]) == (100, 50, 25)       # 200 * 128/255 = 100.4 -> 100 (truncated, as the reference)
    assert out.shape[:2] == (30, 30)                 # the 204-alpha corner did not widen the box
    loose = crop_and_composite(Image.fromarray(arr), framing=Framing(margin=1.0, threshold=203, output_size=None))
    assert loose.size == (40, 40)                    # with alpha 204 counted the box starts at (0, 0)


def test_trellis2_caps_an_image_with_alpha_at_1024_before_cropping():
    arr = rgba_with_box(1200, 600, (0, 0, 1199, 599), alpha=250)
    img = Image.fromarray(arr)
    out = preprocess_image(img, framing=TRELLIS2_FRAMING)
    capped = img.resize((1024, 512), Image.Resampling.LANCZOS)
    assert out.size == expected_crop(np.asarray(capped), 1.0).size == (1022, 1022)
    assert expected_crop(arr, 1.0).size == (1198, 1198)      # uncapped, as v1 treats an image with alpha
