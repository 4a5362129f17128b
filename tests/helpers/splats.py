"""Gaussian splats for the renderer tests: a Gaussian from plain values, a random scene with splats behind the near
plane and off screen, a float64 per-pixel reference render, and the check that a batch of views equals its singles."""
import math

import numpy as np
import torch

from trellis.representations.gaussian import SH_C0, Gaussian

AABB = [-0.5, -0.5, -0.5, 1.0, 1.0, 1.0]


def make_gaussian(xyz, scales, rots, opacities, colors):
    """A Gaussian with the given activated values; colours in RGB, converted to DC coefficients."""
    g = Gaussian(AABB, mininum_kernel_size=0.0)
    f = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    g.from_xyz(f(xyz).reshape(-1, 3))
    g.from_scaling(f(scales).reshape(-1, 3))
    g.from_rotation(torch.nn.functional.normalize(f(rots).reshape(-1, 4), dim=-1))
    g.from_opacity(f(opacities).reshape(-1, 1))
    g.from_features(((f(colors).reshape(-1, 3) - 0.5) / SH_C0).reshape(-1, 1, 3))
    return g


def random_scene(rng, n=50, eye=None):
    """`n` random splats in the unit cube, four of them in front of `eye` but closer than the near plane and four
    far off screen; colours partly outside [0, 1]."""
    xyz = rng.uniform(-0.5, 0.5, (n, 3))
    xyz[:4] = eye * rng.uniform(0.65, 0.9, (4, 1))
    xyz[4:8] = rng.normal(size=(4, 3)) * 4.0
    scales = np.exp(rng.uniform(math.log(0.01), math.log(0.25), (n, 3)))
    rots = rng.normal(size=(n, 4))
    opac = rng.uniform(0.02, 0.999, n)
    cols = rng.uniform(-0.2, 1.2, (n, 3))
    return make_gaussian(xyz, scales, rots, opac, cols)


# Plain per-pixel reference (float64, every Gaussian at every pixel, no tiles, no culling radius).
def quat_to_rot(q):
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def render_brute_force(g, extrinsics, intrinsics, height, width, near=0.8, bg=(0, 0, 0), kernel_size=0.1):
    """(colour [3, H, W], alpha [1, H, W], depth [1, H, W]) as float64 numpy arrays."""
    xyz = g.get_xyz.double().numpy()
    scales = g.get_scaling.double().numpy()
    rots = g.get_rotation.double().numpy()
    opac = g.get_opacity.double().numpy()[:, 0]
    cols = np.maximum(SH_C0 * g.get_features.double().numpy().reshape(-1, 3) + 0.5, 0)
    ext = np.asarray(extrinsics, dtype=np.float64)
    k = np.asarray(intrinsics, dtype=np.float64)
    fx, fy, cx, cy = k[0, 0] * width, k[1, 1] * height, k[0, 2] * width, k[1, 2] * height
    splats = []
    for i in range(len(xyz)):
        x, y, z = ext[:3, :3] @ xyz[i] + ext[:3, 3]
        if z <= near:
            continue
        u, v = fx * x / z + cx, fy * y / z + cy
        jac = np.array([[fx / z, 0, -fx * x / z ** 2], [0, fy / z, -fy * y / z ** 2]])
        rot = quat_to_rot(rots[i])
        cov3 = rot @ np.diag(scales[i] ** 2) @ rot.T
        cov2 = jac @ ext[:3, :3] @ cov3 @ ext[:3, :3].T @ jac.T
        cov2f = cov2 + kernel_size * np.eye(2)
        o = opac[i] * math.sqrt(max(np.linalg.det(cov2), 0.0) / np.linalg.det(cov2f))
        splats.append((z, u, v, np.linalg.inv(cov2f), o, cols[i]))
    splats.sort(key=lambda s: s[0])
    color = np.zeros((3, height, width))
    alpha = np.zeros((1, height, width))
    depth = np.zeros((1, height, width))
    for r in range(height):
        for c in range(width):
            px, py = c + 0.5, r + 0.5
            t, acc, dep = 1.0, np.zeros(3), 0.0
            for z, u, v, inv, o, col in splats:
                d = np.array([px - u, py - v])
                a = min(0.99, o * math.exp(-0.5 * d @ inv @ d))
                if a < 1 / 255:
                    continue
                t_next = t * (1 - a)
                if t_next < 1e-4:
                    break
                acc += a * t * col
                dep += a * t * z
                t = t_next
            color[:, r, c] = acc + t * np.asarray(bg)
            alpha[0, r, c] = 1 - t
            depth[0, r, c] = dep
    return color, alpha, depth


def assert_views_equal(batch, singles):
    """Each view equals its own render up to the float32 rounding of its band's row offset (a splat's centre moved by
    up to ~5e-4 px in a tall batch): at most a few thousandths anywhere and within 1e-4 on all but 0.1 % of the pixels.
    Depth is the alpha-weighted camera z, so a weight's rounding shows in it times z: it is compared relative to its
    largest value."""
    for key in ("color", "alpha", "depth"):
        want = torch.stack([s[key] for s in singles])
        assert batch[key].shape == want.shape, key
        diff = (batch[key] - want).abs()
        if key == "depth":
            diff = diff / want.max().clamp(min=1.0)
        assert diff.max().item() <= 5e-3, (key, diff.max().item())
        assert (diff > 1e-4).float().mean().item() <= 1e-3, (key, (diff > 1e-4).float().mean().item())
