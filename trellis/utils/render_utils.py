"""Turntable videos, multi-view renders and snapshots of TRELLIS outputs (spec §12, §14).

The reference's API on the pure-PyTorch renderers of `trellis.renderers`:

* `render_frames(sample, extrinsics, intrinsics, options, ...)` renders one frame per camera with
  `trellis.renderers.render` (which picks the renderer by representation), with these defaults:

  ====================  ============================  =========================================
  representation        renderer (defaults)           keys of the returned dict of lists
  ====================  ============================  =========================================
  `Gaussian`            gaussian_render (near 0.8,    ``color`` (uint8 HxWx3), ``depth`` (float32
                        far 1.6, ssaa 1, kernel 0.1)  HxW, alpha-weighted camera depth)
  `MeshExtractResult`   mesh_render (near 1, far 100, ``normal`` (uint8 HxWx3, (n + 1) / 2 on a
                        ssaa 4)                       black background), ``mask`` (float32 HxW
                                                      coverage in [0,1])
  `Strivec`             radiance_field_render (near   ``color`` (uint8 HxWx3), ``depth`` (float32
                        0.8, far 1.6, ssaa 4)         HxW, alpha-weighted camera depth)
  ====================  ============================  =========================================

  ``options`` keys: ``resolution`` (512), ``bg_color`` ((0, 0, 0)), and to override the defaults
  above ``near``, ``far``, ``ssaa``, ``kernel_size``. Colour images are converted like the
  reference: float [3,H,W] clipped to [0,1], times 255, truncated to uint8, HxWx3.
* `render_video` (§14.2 orbit), `render_multiview` (§14.3 spherical Hammersley views) and
  `render_snapshot` (4 views around the object) build the cameras and call `render_frames`.
* `save_video(frames, path, fps)` writes an H.264 / yuv420p mp4 (see its docstring).

Every frame loop calls ``progress(done, total)`` after each frame and ``cancel()`` before each frame, or
before each batch of frames where Gaussians are rendered several at a time (and the renderers poll it between
their chunks); a True from ``cancel()`` raises `trellis.core.callbacks.Cancelled`.
"""
from __future__ import annotations

import copy
import itertools
import math
import os
from typing import Optional, Sequence

import numpy as np
import torch

from ..core.callbacks import CancelCheck, Cancelled, StepProgress, check
from ..renderers import render
from ..renderers.cameras import hammersley_sphere_views, image_size, orbit_cameras, video_cameras
from ..renderers.gaussian_render import render_gaussian_views
from ..renderers.gaussian_views import free_memory, views_at_once
from ..representations.gaussian import SH_C0, Gaussian
from ..representations.mesh import MeshExtractResult
from ..representations.radiance_field import Strivec

__all__ = ["render_frames", "render_video", "render_multiview", "render_snapshot", "save_video",
           "VIDEO_CRF", "VIDEO_PRESET", "Cancelled"]

# Per-representation renderer defaults (spec §14.2).
_GAUSSIAN_DEFAULTS = dict(near=0.8, far=1.6, ssaa=1, kernel_size=0.1)
_MESH_DEFAULTS = dict(near=1.0, far=100.0, ssaa=4)
_RF_DEFAULTS = dict(near=0.8, far=1.6, ssaa=4)

# save_video encoder settings: visually lossless-ish constant quality, widely compatible profile.
VIDEO_CRF = 18
VIDEO_PRESET = "medium"


def _to_uint8_image(img: torch.Tensor) -> np.ndarray:
    """float [..., 3, H, W] -> uint8 [..., H, W, 3] (clip to [0,1], x255, truncate), like the reference."""
    # On the image's own device (float32 clamp, x255 and truncation are exact, so a GPU gives the same
    # bytes), then a 4x smaller copy to the host: a video frame costs the host far less this way.
    out = img.detach().to(torch.float32).clamp(0.0, 1.0).mul(255).to(torch.uint8)
    return out.movedim(-3, -1).contiguous().cpu().numpy()


def _to_float_map(img: torch.Tensor) -> np.ndarray:
    """float [..., 1, H, W] -> float32 [..., H, W]."""
    return img.detach().to("cpu", torch.float32).numpy()[..., 0, :, :]


def _overwrite_colors(gaussian: Gaussian, colors) -> Gaussian:
    """Shallow copy of `gaussian` whose degree-0 colour is `colors` [M,3] (RGB, before clamping)."""
    colors = torch.as_tensor(colors, dtype=torch.float32, device=gaussian.device).reshape(-1, 3)
    if colors.shape[0] != len(gaussian):
        raise ValueError(f"colors_overwrite has {colors.shape[0]} rows for {len(gaussian)} Gaussians")
    g = copy.copy(gaussian)
    g._features_dc = ((colors - 0.5) / SH_C0).reshape(-1, 1, 3)
    return g


def _progress_bar(total: int, verbose: bool):
    if not verbose:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency of huggingface_hub
        return None
    return tqdm(total=total, desc="Rendering", leave=False)


# How each image a renderer returns becomes a frame.
_FRAME = {"color": _to_uint8_image, "normal": _to_uint8_image, "depth": _to_float_map, "mask": _to_float_map}


def _renderer_options(sample, options: dict, bg_color: tuple) -> tuple[dict, tuple[str, ...]]:
    """The renderer's keyword arguments for `sample` (the defaults above, overridden by `options`) and
    the keys of the frames it gives (module docstring)."""
    if isinstance(sample, Gaussian):
        opt = {k: options.get(k, v) for k, v in _GAUSSIAN_DEFAULTS.items()}
        if opt.pop("ssaa") != 1:
            raise ValueError("the Gaussian renderer renders without supersampling (ssaa must be 1)")
        return {**opt, "bg_color": bg_color}, ("color", "depth")
    if isinstance(sample, MeshExtractResult):
        opt = {k: options.get(k, v) for k, v in _MESH_DEFAULTS.items()}
        return {**opt, "return_types": ("mask", "normal")}, ("normal", "mask")
    if isinstance(sample, Strivec):
        opt = {k: options.get(k, v) for k, v in _RF_DEFAULTS.items()}
        return {**opt, "bg_color": bg_color}, ("color", "depth")
    raise TypeError(f"render_frames: unsupported representation {type(sample).__name__} "
                    "(expected Gaussian, MeshExtractResult or Strivec)")


def render_frames(sample, extrinsics, intrinsics, options: Optional[dict] = None, colors_overwrite=None,
                  verbose: bool = True, progress: StepProgress = None, cancel: CancelCheck = None,
                  only: Optional[Sequence[str]] = None, views_per_call: Optional[int] = None, **kwargs) -> dict:
    """Render `sample` from every camera. extrinsics [n,4,4] (or a list of [4,4]), intrinsics [n,3,3].

    Returns a dict of lists (one entry per camera), keys per representation as in the module
    docstring (``only``: just those of them). ``colors_overwrite`` ([M,3] RGB per Gaussian) replaces a
    Gaussian's colours; it is only defined for Gaussians. ``views_per_call``: Gaussian frames rendered per
    call (default: as many as the device has room for, one on a CPU). Extra keyword arguments are passed to
    the renderer.
    """
    options = dict(options or {})
    resolution = options.get("resolution", 512)
    bg_color = tuple(float(c) for c in options.get("bg_color", (0, 0, 0)))
    if isinstance(extrinsics, (list, tuple)):
        extrinsics = torch.stack([torch.as_tensor(e) for e in extrinsics])
    if isinstance(intrinsics, (list, tuple)):
        intrinsics = torch.stack([torch.as_tensor(k) for k in intrinsics])
    extrinsics = torch.as_tensor(extrinsics, dtype=torch.float32).reshape(-1, 4, 4)
    intrinsics = torch.as_tensor(intrinsics, dtype=torch.float32).reshape(-1, 3, 3)
    if extrinsics.shape[0] != intrinsics.shape[0]:
        raise ValueError(f"{extrinsics.shape[0]} extrinsics for {intrinsics.shape[0]} intrinsics")
    n = extrinsics.shape[0]

    if colors_overwrite is not None and not isinstance(sample, Gaussian):
        raise ValueError("colors_overwrite is only supported for Gaussian samples")
    opt, keys = _renderer_options(sample, options, bg_color)
    rep = sample if colors_overwrite is None else _overwrite_colors(sample, colors_overwrite)

    # Gaussians render several frames per call where the device has room (gaussian_render.render_gaussian_views):
    # the same frames, with a few launches and host syncs per batch instead of per frame.
    per = 1
    if isinstance(rep, Gaussian):
        height, width = image_size(resolution)
        per = views_per_call or views_at_once(len(rep), height * width, free_memory(rep.device))

    def batch(start, stop):
        if stop - start == 1:
            r = {key: img[None] for key, img in
                 render(rep, extrinsics[start], intrinsics[start], resolution, cancel=cancel, **opt, **kwargs).items()}
        else:
            r = render_gaussian_views(rep, extrinsics[start:stop], intrinsics[start:stop], resolution,
                                      cancel=cancel, **opt, **kwargs)
        return {key: _FRAME[key](r[key]) for key in wanted}

    wanted = keys if only is None else tuple(k for k in keys if k in only)
    out: dict = {key: [] for key in wanted}
    bar = _progress_bar(n, verbose)
    try:
        for start in range(0, n, per):
            check(cancel)
            stop = min(start + per, n)
            frames = batch(start, stop)
            for i in range(start, stop):
                for key in wanted:
                    out[key].append(frames[key][i - start])
                if bar is not None:
                    bar.update(1)
                if progress is not None:
                    progress(i + 1, n)
    finally:
        if bar is not None:
            bar.close()
    return out


def render_video(sample, resolution: int = 512, bg_color=(0, 0, 0), num_frames: int = 300, r: float = 2,
                 fov: float = 40, progress: StepProgress = None, cancel: CancelCheck = None, **kwargs) -> dict:
    """Turntable video frames (§14.2): dict of frame lists, ``color``/``depth`` for Gaussians and
    radiance fields, ``normal``/``mask`` for meshes. Extra keyword arguments go to `render_frames`
    (``options`` entries are merged over resolution/bg_color)."""
    if num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    extrinsics, intrinsics = video_cameras(num_frames, r, fov)
    options = {"resolution": resolution, "bg_color": bg_color, **kwargs.pop("options", {})}
    return render_frames(sample, extrinsics, intrinsics, options, progress=progress, cancel=cancel, **kwargs)


def render_multiview(sample, resolution: int = 512, nviews: int = 30, progress: StepProgress = None,
                     cancel: CancelCheck = None, **kwargs):
    """Renders from the spherical Hammersley views (§14.3; r 2, fov 40°, black background).

    Returns (frames, extrinsics [n,4,4], intrinsics [n,3,3]); frames are the ``color`` images
    (``normal`` for a mesh, which has no colour)."""
    yaws, pitches = hammersley_sphere_views(nviews)
    extrinsics, intrinsics = orbit_cameras(yaws, pitches, 2.0, 40.0)
    options = {"resolution": resolution, "bg_color": (0, 0, 0), **kwargs.pop("options", {})}
    res = render_frames(sample, extrinsics, intrinsics, options, progress=progress, cancel=cancel, **kwargs)
    frames = res["color"] if "color" in res else res["normal"]
    return frames, extrinsics, intrinsics


def render_snapshot(samples, resolution: int = 512, bg_color=(0, 0, 0),
                    offset: Sequence[float] = (-16 / 180 * math.pi, 20 / 180 * math.pi), r: float = 10,
                    fov: float = 8, progress: StepProgress = None, cancel: CancelCheck = None, **kwargs) -> dict:
    """Four views at yaw 0, 90, 180, 270° plus offset[0], pitch offset[1] (radians), radius r,
    fov in degrees (a near-orthographic look). Returns render_frames' dict of 4-frame lists."""
    yaws = [k * math.pi / 2 + offset[0] for k in range(4)]
    pitches = [offset[1]] * 4
    extrinsics, intrinsics = orbit_cameras(yaws, pitches, r, fov)
    options = {"resolution": resolution, "bg_color": bg_color, **kwargs.pop("options", {})}
    return render_frames(samples, extrinsics, intrinsics, options, progress=progress, cancel=cancel, **kwargs)


def _frame_rgb(frame) -> np.ndarray:
    """Any HxW / HxWx1 / HxWx3 / HxWx4 frame (uint8, or float in [0,1]) -> uint8 HxWx3."""
    a = frame.detach().cpu().numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"save_video: a frame must be HxW, HxWx1, HxWx3 or HxWx4, got shape {a.shape}")
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            a = (np.clip(a, 0.0, 1.0) * 255).round()
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    return a


def save_video(frames, path, fps: float = 30, crf: int | None = None, preset: str | None = None,
               progress: StepProgress = None, cancel: CancelCheck = None, count: int | None = None) -> str:
    """Write frames to an mp4 that plays in browsers and Unity.

    Encoding: H.264 (libx264, High profile), yuv420p 4:2:0 (the only chroma layout browsers and
    hardware decoders all accept), constant quality ``crf`` with x264's ``preset`` (None: ``VIDEO_CRF`` and
    ``VIDEO_PRESET`` as they are at the call; CRF 18 is visually lossless for these renders at a few hundred
    kB per 512² second), BT.709 matrix and tags, ``+faststart`` (the
    index is moved to the front so playback starts before the download ends). 4:2:0 needs even
    sizes: odd widths/heights are padded by repeating the last column/row. Frames: a list (or
    iterable) of uint8 (or float [0,1]) HxWx3 arrays of one size; grey and RGBA are converted. An iterator is
    encoded as it yields (ffmpeg encodes while the next frame is made); ``count``: how many it yields, the total
    ``progress(done, total)`` reports (default: ``len(frames)``).
    Returns the path. Raises ValueError for an empty frame list or mismatched sizes.
    """
    import imageio_ffmpeg

    crf = VIDEO_CRF if crf is None else crf            # the module's settings as they are at the call
    preset = VIDEO_PRESET if preset is None else preset
    n = count if count is not None else (len(frames) if hasattr(frames, "__len__") else None)
    frames = iter(frames)
    head = next(frames, None)
    if head is None:
        raise ValueError("save_video: no frames to write (the frame list is empty)")
    path = os.fspath(path)
    first = _frame_rgb(head)
    h, w = first.shape[:2]
    if h < 1 or w < 1:
        raise ValueError(f"save_video: empty frame size {w}x{h}")
    pad_h, pad_w = h % 2, w % 2
    out_w, out_h = w + pad_w, h + pad_h
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    # No "-threads": x264's own count (1.5 per core); fewer measured no better beside the export's work
    # (docs/benchmarks/app.md#the-apps-whole-job).
    output_params = [
        "-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p,"
               "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv",
        "-preset", str(preset), "-crf", str(int(crf)), "-profile:v", "high",
        "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
        "-movflags", "+faststart",
    ]
    writer = imageio_ffmpeg.write_frames(path, (out_w, out_h), pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
                                         fps=fps, quality=None, codec="libx264", macro_block_size=1,
                                         ffmpeg_log_level="error", output_params=output_params)
    writer.send(None)
    ok = False
    try:
        for i, frame in enumerate(itertools.chain([head], frames)):
            check(cancel)
            a = first if i == 0 else _frame_rgb(frame)
            if a.shape[:2] != (h, w):
                raise ValueError(f"save_video: frame {i} is {a.shape[1]}x{a.shape[0]}, expected {w}x{h}")
            if pad_h or pad_w:
                a = np.pad(a, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            writer.send(np.ascontiguousarray(a))
            sent = i + 1
            if progress is not None and (n is None or sent < n):
                progress(sent, n if n is not None else sent)
        ok = True
    finally:
        writer.close()
        if not ok and os.path.exists(path):
            os.remove(path)
    if progress is not None:       # the last step once ffmpeg has finished the file (its buffered frames, the index)
        progress(sent, n if n is not None else sent)
    return path
