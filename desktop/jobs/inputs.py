"""Input images: any picture in, the 518² RGB image the pipeline conditions on out (or InputError).

The one rule the app applies, written once here (the UI's upload check uses it too): an image whose
transparency marks the object is cropped to it; any other image has its background removed (when asked)."""
from __future__ import annotations

from .job import InputError

NO_OBJECT_IN_ALPHA = "the image's transparency leaves no solid object"


def load_and_cut_out(image):
    """(img, cutout): the loaded image and, when its transparency marks the object, the 518² cutout made
    from it; cutout is None when the image has no real transparency (its background must be removed).
    Raises what the library's loader raises (ValueError, OSError, ...)."""
    from trellis.pipelines import preprocess as pre

    img = pre.load_image(image)
    if pre.has_real_alpha(img):          # no removal needed: crop to the alpha as usual
        return img, pre.crop_and_composite(img, NO_OBJECT_IN_ALPHA)
    return img, None


def prepare_image(image, remove_background: bool, remover=None, check_only: bool = False):
    """Any input -> the 518² RGB image the pipeline conditions on. Raises InputError.

    With `check_only`, an image that needs background removal is only loaded (the removal itself,
    slow and possibly a model download, is skipped) and None is returned for it."""
    from PIL import Image

    from trellis.pipelines import preprocess as pre

    try:
        img, cutout = load_and_cut_out(image)
        if cutout is not None:
            return cutout
        if not remove_background:
            return img.convert("RGB")
        if check_only:
            pre.check_aspect(img.width, img.height, "The image")     # as preprocess_image will
            return None
        return pre.preprocess_image(img, remover=remover or pre.get_default_remover())
    except (ValueError, TypeError, FileNotFoundError, IsADirectoryError) as err:
        raise InputError(str(err)) from None
    except Image.DecompressionBombError as err:      # a size no check above foresaw: still the input's
        raise InputError(f"the image is too large to process ({err}); downscale it and try again") from None
    except PermissionError as err:
        raise InputError(f"cannot read {err.filename}: permission denied") from None


def check_image(image, remove_background: bool = True) -> None:
    """Raise InputError when `image` cannot be used (not an image, damaged, too large, fully
    transparent), in well under a second and without the model: callers such as the REST API refuse
    a bad upload at once instead of queueing a job that would fail."""
    prepare_image(image, remove_background, check_only=True)
