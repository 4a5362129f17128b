"""Image preprocessing: any picture in, the RGB cutout TRELLIS conditions on out (spec §11.1; TRELLIS.2 facts
§5.1).

Data path, top to bottom:
    load_image            file / bytes / numpy / PIL -> upright 8-bit RGB or RGBA (real alpha kept)
    BackgroundRemover     RGB -> RGBA with rembg's `u2net` model, on the CPU only (background.py)
    preprocess_image      RGBA -> crop around the object -> 518x518 -> composite on black -> RGB
                          (`framing`: TRELLIS v1's by default; TRELLIS2_FRAMING caps every input at 1024 px,
                          crops with no margin and keeps the crop's own size)
    split_multiview_strip one RGBA strip of several views -> one preprocessed image per view

Nothing here imports torch or touches a GPU. rembg (and with it onnxruntime) is imported only when
background removal is first needed, because importing it costs about two seconds.

Huge images (the pixel budget, MAX_PIXELS = 64 megapixels):
* JPEG files above the budget are decoded at 1/2, 1/4 or 1/8 scale by libjpeg (`Image.draft`), so
  they never occupy more than the budget in memory; one that would not fit even at 1/8 is refused,
  and so is a progressive JPEG above 3x the budget (libjpeg buffers all its coefficients).
* Other files above the budget (PNG, WebP, TIFF, ...) are refused with a ValueError that says to
  downscale them; they are not decoded at all (only the header is read).
* Images already in memory (PIL images, numpy arrays) above the budget are shrunk by an integer
  factor (`Image.reduce`) to fit.
Below the budget nothing is resampled while loading, so results match the reference exactly.

Extreme shapes: an object (or, when the background must be removed, an image) more than MAX_ASPECT
times wider than tall (or taller than wide) is refused with a ValueError: at 518² it would be a line
a few pixels thick. A square crop larger than MAX_CROP_SIDE (a long, thin object in a huge image)
is made from the image shrunk first by an integer factor, so it never costs more than that square.
"""
from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

# Background removal lives in background.py; its names stay importable from here.
from .background import (U2NET_FILE, U2NET_MD5, U2NET_URL, BackgroundRemovalUnavailable,  # noqa: F401
                         BackgroundRemover, Remover, default_model_dir, get_default_remover)

ImageInput = Union[Image.Image, np.ndarray, str, os.PathLike, bytes, bytearray, memoryview]

MIN_SIDE = 8                      # pixels; anything smaller cannot hold a recognisable object
MAX_PIXELS = 64_000_000           # decode budget, see the module docstring
MAX_REMBG_SIDE = 1024             # §11.1 step 2
OUTPUT_SIZE = 518                 # §11.1 step 4
ALPHA_THRESHOLD = 0.8 * 255       # §11.1 step 3: foreground is alpha > 204
CROP_MARGIN = 1.2                 # §11.1 step 3
MAX_ASPECT = 100                  # longest / shortest side of an object (or of an image to cut out)
MAX_CROP_SIDE = 8192              # larger square crops are made from a shrunk image (bounded memory)



@dataclass(frozen=True)
class Framing:
    """How a model family frames the object (the steps after the alpha test)."""
    margin: float = CROP_MARGIN              # square side = margin * the opaque box's longer side
    threshold: float = ALPHA_THRESHOLD       # opaque = alpha > threshold
    output_size: Optional[int] = OUTPUT_SIZE  # side of the square output; None keeps the crop's own size
    cap_every_input: bool = False            # long side <= MAX_REMBG_SIDE for inputs with alpha too


V1_FRAMING = Framing()
# TRELLIS.2 facts §5.1: downscale any input first, no margin (factor 1.0), no resize (its conditioner resizes).
TRELLIS2_FRAMING = Framing(margin=1.0, output_size=None, cap_every_input=True)

_JPEG_MAGIC = b"\xff\xd8\xff"
_READABLE = "PNG, JPEG, WebP, BMP, TIFF or GIF"


# ---------------------------------------------------------------------------------------------
# Loading and mode normalisation
# ---------------------------------------------------------------------------------------------

def load_image(image: ImageInput) -> Image.Image:
    """Any supported image input -> an upright 8-bit PIL image, mode "RGB" or "RGBA".

    Accepts a PIL image, a numpy array (HxW, HxWx1, HxWx2, HxWx3 or HxWx4; uint8, uint16, bool,
    or float in [0, 1]), a path (str or os.PathLike) or the encoded bytes of an image file.
    EXIF orientation is applied. The result is "RGBA" only when the alpha channel is real (some
    value below 255); an opaque alpha channel is dropped. 16-bit data is scaled to 8 bits
    (x / 257), CMYK/YCbCr/LAB/HSV become RGB, a palette or grey image with a transparent colour
    becomes RGBA. Huge inputs follow the MAX_PIXELS policy in the module docstring.

    Raises FileNotFoundError for a missing path, ValueError (saying what is wrong and what to do)
    for anything that is not a usable image, TypeError for an unsupported input type.
    """
    if isinstance(image, Image.Image):
        img = _normalise(image, source="the image")
        return _fit_budget_in_memory(img)
    if isinstance(image, np.ndarray):
        img = _normalise(_array_to_pil(image), source="the array")
        return _fit_budget_in_memory(img)
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data:
            raise ValueError("The image data is empty (0 bytes). Provide the contents of an image file.")
        return _read_file(io.BytesIO(data), source="the uploaded data")
    if isinstance(image, (str, os.PathLike)):
        path = Path(os.path.expanduser(os.fspath(image)))
        if not path.exists():
            raise FileNotFoundError(f"Image file not found: {path}")
        if path.is_dir():
            raise ValueError(f"{path} is a folder, not an image file. Pick one image file inside it.")
        with open(path, "rb") as fp:
            if os.fstat(fp.fileno()).st_size == 0 and path.is_file():
                raise ValueError(f"{path} is empty (0 bytes): a download or copy that did not finish? Use the "
                                 f"image file itself (a {_READABLE} image).")
            return _read_file(fp, source=str(path))
    raise TypeError(
        f"Unsupported image input of type {type(image).__name__}: pass a PIL image, a numpy array, "
        "a file path or the bytes of an image file."
    )


def has_real_alpha(img: Image.Image) -> bool:
    """True for an RGBA image with at least one alpha value below 255 (§11.1 step 1)."""
    return img.mode == "RGBA" and img.getchannel("A").getextrema()[0] < 255


def _read_file(fp, source: str) -> Image.Image:
    head = fp.read(len(_JPEG_MAGIC))
    fp.seek(0)
    try:
        with warnings.catch_warnings():
            # Our own budget below replaces Pillow's size warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if head == _JPEG_MAGIC:
                # Opened through the JPEG plugin directly: Pillow's generic size guard would refuse
                # very large photos (e.g. 200 MP phone shots) that libjpeg can decode at 1/8 scale
                # cheaply; our budget check below keeps memory bounded instead.
                img = _decoded(lambda: JpegImagePlugin.JpegImageFile(fp), source)
            else:
                img = _decoded(lambda: Image.open(fp), source)
            with img:
                _check_size(img.size, source)
                if img.width * img.height > MAX_PIXELS:
                    _draft_into_budget(img, source)
                _decoded(img.load, source)
                return _normalise(img, source=source)
    except Image.DecompressionBombError as e:
        raise ValueError(
            f"{source} is far too large to open safely ({e}). Downscale it to at most "
            f"{_budget_side()} pixels on the long side and try again."
        ) from None
    except (UnidentifiedImageError, SyntaxError, EOFError) as e:
        # Pillow's "cannot identify image file <_io.BytesIO object at 0x...>" says nothing a user can use.
        detail = "" if isinstance(e, UnidentifiedImageError) else f" ({e})"
        raise ValueError(
            f"{source} is not an image file this app can read{detail}. Use a {_READABLE} image."
        ) from None
    except OSError as e:
        if isinstance(e, (FileNotFoundError, PermissionError)):
            raise
        raise ValueError(
            f"{source} could not be decoded; the file looks damaged or truncated ({e}). "
            f"Re-export or re-download it, or use another {_READABLE} image."
        ) from None


def _decoded(step, source: str):
    """step()'s result; a ValueError of Pillow's (a file it refuses to read on, e.g. a PNG whose compressed metadata
    would unpack past its safety limit) said as this file's, with what to do."""
    try:
        return step()
    except ValueError as e:
        raise ValueError(
            f"{source} could not be decoded ({e}): the file is damaged or holds more than an image (such as "
            f"metadata too large to read safely). Re-export it without its metadata, or use another {_READABLE} "
            "image."
        ) from None


def _budget_side() -> int:
    return int(math.isqrt(MAX_PIXELS))


def _check_size(size: tuple[int, int], source: str) -> None:
    w, h = size
    if min(w, h) < MIN_SIDE:
        raise ValueError(
            f"{source} is only {w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed "
            "(a few hundred pixels or more works best). Use a larger image."
        )


def _draft_into_budget(img: Image.Image, source: str) -> None:
    """Let libjpeg decode at a reduced scale so the pixels fit MAX_PIXELS, or refuse."""
    w, h = img.size
    # A progressive JPEG makes libjpeg hold every DCT coefficient (about 3 bytes per pixel) however
    # small the output, so only moderately oversized ones are drafted.
    progressive_too_big = img.info.get("progressive") and w * h > 3 * MAX_PIXELS
    if img.format in ("JPEG", "MPO") and not progressive_too_big:
        scale = 1
        while -(-w // scale) * -(-h // scale) > MAX_PIXELS and scale < 8:
            scale *= 2
        # draft picks the strongest reduction whose result is still at least the requested size
        img.draft(None, (-(-w // scale), -(-h // scale)))
        if img.width * img.height <= MAX_PIXELS:
            return
    raise ValueError(
        f"{source} is {w}x{h} pixels ({w * h / 1e6:.0f} megapixels), more than the "
        f"{MAX_PIXELS / 1e6:.0f} megapixels this app decodes. Downscale it to at most "
        f"{_budget_side()} pixels on the long side (more than 1024 brings nothing) and try again."
    )


def _fit_budget_in_memory(img: Image.Image) -> Image.Image:
    pixels = img.width * img.height
    if pixels <= MAX_PIXELS:
        return img
    factor = math.ceil(math.sqrt(pixels / MAX_PIXELS))
    while (img.width // factor) * (img.height // factor) > MAX_PIXELS:
        factor += 1
    return img.reduce(factor)


def _array_to_pil(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (2, 3, 4)):
        raise ValueError(
            f"Image arrays must be HxW or HxWxC with C in 1-4 channels (channels last); got shape "
            f"{arr.shape}. A CxHxW array needs arr.transpose(1, 2, 0) first."
        )
    if min(arr.shape[0], arr.shape[1]) < MIN_SIDE:
        raise ValueError(
            f"The array is only {arr.shape[1]}x{arr.shape[0]} pixels; at least {MIN_SIDE}x{MIN_SIDE} "
            "is needed. Use a larger image."
        )
    if arr.dtype == np.uint8:
        data = arr
    elif arr.dtype == np.uint16:
        data = np.round(arr.astype(np.float32) / 257.0).astype(np.uint8)
    elif arr.dtype == np.bool_:
        data = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("The float image array contains NaN or infinity. Fix the data and try again.")
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f"Float image arrays must hold values in [0, 1]; this one spans [{lo:g}, {hi:g}]. "
                "Divide 0-255 data by 255 (or pass it as uint8)."
            )
        data = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise ValueError(
            f"Unsupported image array dtype {arr.dtype}: use uint8 (0-255), uint16 (0-65535) or "
            "float (0-1)."
        )
    # Pillow infers L / LA / RGB / RGBA from the shape of a uint8 array
    return Image.fromarray(np.ascontiguousarray(data))


def _normalise(img: Image.Image, source: str) -> Image.Image:
    """Upright, 8-bit, RGB or RGBA (RGBA only with real alpha). Never modifies `img`."""
    _check_size(img.size, source)
    try:
        img = ImageOps.exif_transpose(img)  # always returns a new image
    except Exception:  # a malformed EXIF block must not block the image itself
        img = img.copy()

    mode = img.mode
    if mode.startswith("I") or mode == "F":
        img = _high_depth_to_l(img)
    palette_alpha = img.mode == "P" and img.palette is not None and img.palette.mode == "RGBA"
    if (img.mode in ("LA", "La", "PA", "RGBa") or palette_alpha
            or (img.mode != "RGBA" and "transparency" in img.info)):
        img = img.convert("RGBA")  # keeps the alpha channel / the tRNS transparent colour
    elif img.mode not in ("RGB", "RGBA"):  # 1, L, P, CMYK, YCbCr, LAB, HSV, RGBX
        img = img.convert("RGB")
    if img.mode == "RGBA" and not has_real_alpha(img):
        img = img.convert("RGB")
    return img


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """Grey 16/32-bit integer or float images -> 8-bit "L" (Pillow's own convert would clip)."""
    a = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        hi = float(np.nanmax(a)) if a.size else 0.0
        scale = 255.0 if hi <= 1.0 else 1.0  # float data in [0, 1], else already 0-255
    elif img.mode.startswith("I;16"):
        scale = 1 / 257.0
    else:  # "I": 32-bit integers; guess the range from the data
        hi = float(a.max())
        scale = 1.0 if hi <= 255 else (1 / 257.0 if hi <= 65535 else 255.0 / hi)
    a = np.nan_to_num(a * scale, nan=0.0)
    return Image.fromarray(np.round(np.clip(a, 0, 255)).astype(np.uint8))


# ---------------------------------------------------------------------------------------------
# Crop, resize, composite (§11.1)
# ---------------------------------------------------------------------------------------------

def preprocess_image(image: ImageInput, remover: Optional[Remover] = None,
                     framing: Framing = V1_FRAMING) -> Image.Image:
    """Any image input -> the RGB image TRELLIS conditions on (spec §11.1: 518x518 with `V1_FRAMING`).

    An RGBA input with real transparency is used as is (its long side capped at 1024 px too with
    `framing.cap_every_input`); anything else has its background removed by `remover` (default:
    `get_default_remover()`) after its long side is capped at 1024 px.
    Raises ValueError when no foreground is found, BackgroundRemovalUnavailable when background
    removal is needed but cannot run.
    """
    img = load_image(image)
    if has_real_alpha(img):
        rgba = _cap_size(img, MAX_REMBG_SIDE) if framing.cap_every_input else img
        where = "the image's transparency leaves no solid object"
    else:
        check_aspect(img.width, img.height, "The image")
        rgb = _cap_size(img.convert("RGB"), MAX_REMBG_SIDE)
        rgba = (remover if remover is not None else get_default_remover()).remove(rgb)
        if not isinstance(rgba, Image.Image) or rgba.size != rgb.size:
            raise RuntimeError("Background removal must return a PIL image of the input's size.")
        rgba = rgba.convert("RGBA")
        where = "background removal found no object in the picture"
    return crop_and_composite(rgba, where, framing)


def _cap_size(img: Image.Image, max_side: int) -> Image.Image:
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    scale = max_side / max(w, h)
    # integer truncation as in §11.1; max(1, .) only guards extreme aspect ratios
    return img.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.Resampling.LANCZOS)


def check_aspect(width: int, height: int, what: str) -> None:
    """ValueError when `what` (width x height pixels) is more than MAX_ASPECT times longer than wide."""
    long, short = max(width, height), max(1, min(width, height))
    if long > MAX_ASPECT * short:
        shape = "wider than tall" if width >= height else "taller than wide"
        raise ValueError(
            f"{what} is {width}x{height} pixels, {long / short:.0f} times {shape}; at most {MAX_ASPECT}:1 "
            "can become a 3D object (more would be a line a few pixels thick). Crop the image around the "
            "object, or use a picture in which the object is less elongated."
        )


def crop_and_composite(rgba: Image.Image, where: str = "no object found",
                       framing: Framing = V1_FRAMING) -> Image.Image:
    """§11.1 steps 3-5 on an RGBA image: crop around alpha > 204, resize to 518², composite on black
    (the opaque threshold, the margin and the output size from `framing`)."""
    alpha = np.asarray(rgba.getchannel("A"))
    # Rows and columns first: the object's box without a coordinate list as long as its pixel count.
    mask = alpha > framing.threshold
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        raise ValueError(
            f"No foreground found: {where} (no pixel is more than {framing.threshold / 2.55:.0f}% opaque). "
            "Provide an image with a clearly visible object, or one whose transparency marks the object."
        )
    x_min, x_max = int(cols[0]), int(cols[-1])
    y_min, y_max = int(rows[0]), int(rows[-1])
    check_aspect(x_max - x_min + 1, y_max - y_min + 1, "The object (its opaque part)")
    cx, cy = (x_min + x_max) / 2, (y_min + y_max) / 2
    side = int(framing.margin * max(x_max - x_min, y_max - y_min))
    half = side // 2
    if half < 1:
        raise ValueError(
            f"No usable foreground: the object is only {x_max - x_min + 1}x{y_max - y_min + 1} "
            "pixels. Provide an image in which the object is clearly visible."
        )
    if 2 * half > MAX_CROP_SIDE:
        # The square around a huge object would not fit in memory (Pillow refuses it): shrink first.
        return crop_and_composite(rgba.reduce(-(-2 * half // MAX_CROP_SIDE)), where, framing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        # float box: Pillow rounds each coordinate (half to even); outside the image is (0,0,0,0)
        crop = rgba.crop((cx - half, cy - half, cx + half, cy + half))
    if framing.output_size is not None:
        crop = crop.resize((framing.output_size, framing.output_size), Image.Resampling.LANCZOS)
    arr = np.asarray(crop).astype(np.float32) / 255
    rgb = arr[:, :, :3] * arr[:, :, 3:4]
    return Image.fromarray((rgb * 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------------
# Multi-view strip (§11.1, multi-view demo helper; used with §11.7's run_multi_image)
# ---------------------------------------------------------------------------------------------

def split_multiview_strip(image: ImageInput, preprocess: bool = True,
                          remover: Optional[Remover] = None) -> list[Image.Image]:
    """Split a horizontal RGBA strip of views at the columns where "any alpha > 0" switches.

    Each view is a maximal run of columns holding some non-transparent pixel, full strip height.
    Unlike the reference helper, a run touching the strip's left or right edge is kept too.
    With `preprocess` (default) each view goes through `preprocess_image`; otherwise the raw RGBA
    crops are returned.
    """
    img = load_image(image)
    if img.mode != "RGBA":
        raise ValueError(
            "A multi-view strip needs transparency between the views (an RGBA PNG whose gaps are "
            "transparent); this image has none."
        )
    filled = np.asarray(img.getchannel("A")).max(axis=0) > 0
    edges = np.flatnonzero(np.diff(np.concatenate(([0], filled.astype(np.int8), [0]))))
    runs = list(zip(edges[0::2].tolist(), edges[1::2].tolist()))  # [start, stop) per view
    if not runs:
        raise ValueError("The multi-view strip is fully transparent; it holds no views.")
    views = [img.crop((start, 0, stop, img.height)) for start, stop in runs]
    if not preprocess:
        return views
    return [preprocess_image(view, remover=remover) for view in views]
