"""What `verify-fast-paths` measures between an exact run and a fast-path run of the same image, seed and settings,
and the verdict it draws (desktop/verify_fast_paths.py runs them; docs/benchmarks/attention_8bit.md says why these
thresholds):

    voxel_agreement(a, b)              occupancy IoU and flipped voxels of two voxel sets ([N, 3] integer coords)
    mesh_agreement(va, fa, vb, fb)     Chamfer distance (share of the exact mesh's bounding-box diagonal) and F-score
                                       at 1 % of that diagonal, from area-weighted surface samples (fixed seed)
    frames_agreement(a, b)             PSNR and SSIM of rendered frames (uint8 H x W x 3)
    verdict(measures)                  "same", "close" or "differs", with the measures that decided it

numpy and scipy only (both are dependencies); SSIM is computed here (scikit-image is not one).
"""
from __future__ import annotations

import math

import numpy as np

# The verdict's thresholds: "same" needs every one of its row, "close" every one of its row; else "differs".
THRESHOLDS = {
    "same": {"iou": 0.95, "fscore": 0.95, "psnr_db": 30.0, "ssim": 0.95},
    "close": {"iou": 0.80, "fscore": 0.80, "psnr_db": 24.0, "ssim": 0.85},
}
VERDICT_WORDS = {
    "same": "the same asset: the fast path changed nothing you would see",
    "close": "close: the same object, with details that differ (look at both before relying on the fast path)",
    "differs": "differs: the fast path changes this asset; keep it off for images like this one",
}
FSCORE_SHARE = 0.01          # F-score's distance threshold, as a share of the exact mesh's bounding-box diagonal
SURFACE_SAMPLES = 20000      # points sampled on each surface
SAMPLE_SEED = 0              # the surface samples' seed: the same points every time
SSIM_SIGMA = 1.5             # SSIM's Gaussian window (Wang et al. 2004: sigma 1.5, 11 taps)
SSIM_TRUNCATE = 3.5          # radius int(3.5 * 1.5 + 0.5) = 5: 11 taps
SSIM_K1, SSIM_K2 = 0.01, 0.03


def voxel_agreement(exact, fast) -> dict:
    """{"iou", "flipped", "exact_voxels", "fast_voxels"} of two sets of voxels (integer coords [N, 3]); two empty
    sets agree fully (IoU 1)."""
    a, b = (np.asarray(x, dtype=np.int64).reshape(-1, 3) for x in (exact, fast))
    side = int(max(a.max(initial=0), b.max(initial=0))) + 1
    ka = np.unique((a[:, 0] * side + a[:, 1]) * side + a[:, 2])
    kb = np.unique((b[:, 0] * side + b[:, 1]) * side + b[:, 2])
    both = np.intersect1d(ka, kb, assume_unique=True).size
    union = ka.size + kb.size - both
    return {"iou": 1.0 if union == 0 else both / union, "flipped": int(union - both),
            "exact_voxels": int(ka.size), "fast_voxels": int(kb.size)}


def coarsened(coords, res: int, to_res: int) -> np.ndarray:
    """Voxel coords on a res^3 grid mapped onto a coarser to_res^3 grid (two runs whose grids differ)."""
    return (np.asarray(coords, dtype=np.int64) * to_res) // res


def surface_samples(vertices, faces, count: int = SURFACE_SAMPLES, seed: int = SAMPLE_SEED) -> np.ndarray:
    """`count` points spread uniformly over a triangle mesh's area ([count, 3] float64); none for a mesh without
    area."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if not len(f) or not len(v):
        return np.zeros((0, 3))
    p0, p1, p2 = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(p1 - p0, p2 - p0), axis=1)
    total = area.sum()
    if not np.isfinite(total) or total <= 0:
        return np.zeros((0, 3))
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(f), size=count, p=area / total)
    r1, r2 = rng.random(count), rng.random(count)
    s = np.sqrt(r1)             # uniform over each triangle (not crowded at a corner)
    return ((1 - s)[:, None] * p0[pick] + (s * (1 - r2))[:, None] * p1[pick] + (s * r2)[:, None] * p2[pick])


def mesh_agreement(exact_vertices, exact_faces, fast_vertices, fast_faces, count: int = SURFACE_SAMPLES,
                   seed: int = SAMPLE_SEED) -> dict:
    """{"chamfer" (mean of both directions' mean closest-point distance, as a share of the exact mesh's bounding-box
    diagonal), "fscore", "precision", "recall" (at FSCORE_SHARE of that diagonal), "diagonal", "exact_faces",
    "fast_faces"}; a mesh without area gives None for the distances (and F-score 0 where only one has one)."""
    from scipy.spatial import cKDTree

    a = surface_samples(exact_vertices, exact_faces, count, seed)
    b = surface_samples(fast_vertices, fast_faces, count, seed)
    out = {"exact_faces": int(np.asarray(exact_faces).reshape(-1, 3).shape[0]),
           "fast_faces": int(np.asarray(fast_faces).reshape(-1, 3).shape[0])}
    if not len(a) or not len(b):
        both_empty = not len(a) and not len(b)
        return {**out, "chamfer": None, "fscore": 1.0 if both_empty else 0.0, "precision": None, "recall": None,
                "diagonal": None}
    v = np.asarray(exact_vertices, dtype=np.float64).reshape(-1, 3)
    diagonal = float(np.linalg.norm(v.max(axis=0) - v.min(axis=0)))
    to_fast = cKDTree(b).query(a)[0]              # each exact sample's distance to the fast surface
    to_exact = cKDTree(a).query(b)[0]
    tau = FSCORE_SHARE * diagonal
    recall, precision = float(np.mean(to_fast <= tau)), float(np.mean(to_exact <= tau))
    fscore = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    chamfer = 0.5 * (to_fast.mean() + to_exact.mean()) / diagonal if diagonal > 0 else 0.0
    return {**out, "chamfer": float(chamfer), "fscore": fscore, "precision": precision, "recall": recall,
            "diagonal": diagonal}


def psnr(mse: float, peak: float = 255.0):
    """PSNR in dB of a mean squared error; None for identical images (an infinite PSNR, which JSON cannot hold)."""
    return None if mse <= 0 else 10.0 * math.log10(peak * peak / mse)


def ssim(a, b, peak: float = 255.0) -> float:
    """Mean SSIM of two H x W (x C) images (per channel, then averaged), Gaussian-weighted windows."""
    from scipy.ndimage import gaussian_filter

    x, y = (np.asarray(t, dtype=np.float64) for t in (a, b))
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    sigma = (SSIM_SIGMA, SSIM_SIGMA, 0)

    def blur(t):
        return gaussian_filter(t, sigma=sigma, truncate=SSIM_TRUNCATE, mode="reflect")
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2
    m = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(m.mean())


def frames_agreement(exact_frames, fast_frames) -> dict:
    """{"psnr_db" (of all frames' pixels together; None: identical), "worst_frame_psnr_db", "ssim" (mean over frames),
    "worst_frame_ssim", "frames", "identical"} of two equally long lists of uint8 H x W x 3 frames."""
    if len(exact_frames) != len(fast_frames) or not exact_frames:
        raise ValueError("the two runs' previews must have the same, non-zero number of frames")
    mses, ssims = [], []
    for fa, fb in zip(exact_frames, fast_frames):
        a, b = np.asarray(fa, dtype=np.float64), np.asarray(fb, dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"frames of different sizes: {a.shape} and {b.shape}")
        mses.append(float(np.mean((a - b) ** 2)))
        ssims.append(ssim(a, b))
    return {"psnr_db": psnr(float(np.mean(mses))), "worst_frame_psnr_db": psnr(max(mses)),
            "ssim": float(np.mean(ssims)), "worst_frame_ssim": float(min(ssims)), "frames": len(mses),
            "identical": max(mses) == 0}


def verdict(structure: dict, mesh: dict, look: dict) -> tuple:
    """(verdict, [what fell short of "same", with its numbers]) of one image's measures, by THRESHOLDS: a PSNR of None
    (identical frames) passes every row."""
    values = {"iou": structure["iou"], "fscore": mesh["fscore"], "psnr_db": look["psnr_db"], "ssim": look["ssim"]}

    def passes(row):
        return [name for name, least in THRESHOLDS[row].items()
                if values[name] is not None and values[name] < least]
    short = passes("same")
    if not short:
        return "same", []
    why = [f"{name} {values[name]:.4g} < {THRESHOLDS['same'][name]:g}" for name in short]
    return ("close" if not passes("close") else "differs"), why
