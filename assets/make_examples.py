"""Draws the app's example images: RGBA PNGs of simple objects on a transparent background.

    python assets/make_examples.py          # (re)writes assets/examples/*.png

Everything is procedural (numpy + Pillow, no randomness), so the files are reproducible. Each
object is drawn at twice the final size and scaled down, which anti-aliases the edges.
"""
from __future__ import annotations

import os
import sys

import numpy as np
from PIL import Image

SIZE = 384            # final side in pixels
SS = 2                # supersampling factor
LIGHT = np.array([-0.45, -0.55, 0.70])     # towards the light: left, up, front (x right, y down, z to viewer)
LIGHT = LIGHT / np.linalg.norm(LIGHT)
HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "examples")


class Canvas:
    """A float RGBA canvas; shapes are painted back to front with a coverage mask each."""

    def __init__(self, side: int = SIZE * SS):
        self.n = side
        self.rgb = np.zeros((side, side, 3), np.float32)
        self.alpha = np.zeros((side, side), np.float32)
        yy, xx = np.mgrid[:side, :side].astype(np.float32)
        # Normalised coordinates: -1..1 on both axes, y down.
        self.x = (xx + 0.5) / side * 2 - 1
        self.y = (yy + 0.5) / side * 2 - 1

    def paint(self, mask: np.ndarray, color: np.ndarray) -> None:
        """color: HxWx3 (or a 3-vector) in 0..1; mask: boolean or 0..1 coverage."""
        m = mask.astype(np.float32)[..., None]
        self.rgb = self.rgb * (1 - m) + np.broadcast_to(color, self.rgb.shape) * m
        self.alpha = np.maximum(self.alpha, m[..., 0])

    def image(self) -> Image.Image:
        rgba = np.concatenate([np.clip(self.rgb, 0, 1), self.alpha[..., None]], axis=-1)
        img = Image.fromarray((rgba * 255 + 0.5).astype(np.uint8), "RGBA")
        return img.resize((self.n // SS, self.n // SS), Image.Resampling.LANCZOS)


def lambert(normal: np.ndarray, base, ambient: float = 0.28, spec: float = 0.0) -> np.ndarray:
    """Diffuse shading (+ an optional highlight) of a base colour for per-pixel normals HxWx3."""
    base = np.asarray(base, np.float32)
    d = np.clip(normal @ LIGHT, 0, 1)[..., None]
    color = base * (ambient + (1 - ambient) * d)
    if spec:
        half = LIGHT + np.array([0, 0, 1.0])
        half = half / np.linalg.norm(half)
        color = color + spec * np.clip(normal @ half, 0, 1)[..., None] ** 40
    return color.astype(np.float32)


def flat(base, normal) -> np.ndarray:
    """Shading of a flat face with a constant normal."""
    n = np.asarray(normal, np.float32)
    n = n / np.linalg.norm(n)
    d = float(np.clip(n @ LIGHT, 0, 1))
    return np.asarray(base, np.float32) * (0.3 + 0.7 * d)


def polygon_mask(c: Canvas, points) -> np.ndarray:
    """Inside test of a convex or concave polygon (even-odd rule) given in normalised coordinates."""
    inside = np.zeros_like(c.x, dtype=bool)
    pts = list(points)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
        crosses = (y0 > c.y) != (y1 > c.y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (c.y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (c.x < x_at)
    return inside


def rect(c: Canvas, x0, y0, x1, y1) -> np.ndarray:
    return (c.x >= x0) & (c.x <= x1) & (c.y >= y0) & (c.y <= y1)


# ---------------------------------------------------------------------------------------------
# The objects
# ---------------------------------------------------------------------------------------------

def sphere() -> Image.Image:
    c = Canvas()
    r = 0.72
    d2 = c.x ** 2 + c.y ** 2
    mask = d2 < r * r
    z = np.sqrt(np.clip(r * r - d2, 0, None))
    normal = np.stack([c.x, c.y, z], -1) / r
    # A red ball with a pale band around its (tilted) equator.
    axis = np.array([-0.3, 0.85, 0.45]) / np.linalg.norm([-0.3, 0.85, 0.45])
    band = np.abs(normal @ axis) < 0.13
    base = np.where(band[..., None], np.float32([0.95, 0.9, 0.75]), np.float32([0.82, 0.16, 0.12]))
    c.paint(mask, lambert(normal, base, spec=0.55))
    return c.image()


def mug() -> Image.Image:
    c = Canvas()
    x0, x1, top, bottom = -0.5, 0.38, -0.5, 0.62
    cx, r = (x0 + x1) / 2, (x1 - x0) / 2
    # Handle: a thick ring on the right, drawn first so the body covers its inner end.
    hx, hy = x1 + 0.02, 0.05
    ring = np.sqrt((c.x - hx) ** 2 + (c.y - hy) ** 2)
    handle = (ring > 0.2) & (ring < 0.34) & (c.x > x1 - 0.05)
    t = np.clip((ring - 0.27) / 0.07, -1, 1)
    hn = np.stack([(c.x - hx) / (ring + 1e-6) * t, (c.y - hy) / (ring + 1e-6) * t,
                   np.sqrt(np.clip(1 - t * t, 0, None))], -1)
    blue = np.float32([0.16, 0.38, 0.75])
    c.paint(handle, lambert(hn, blue, spec=0.3))
    # Body: a cylinder seen from slightly above (normals from the horizontal position).
    u = np.clip((c.x - cx) / r, -1, 1)
    body_n = np.stack([u, np.zeros_like(u), np.sqrt(1 - u * u)], -1)
    ell = 0.1                                     # half height of the rim ellipse
    body = rect(c, x0, top, x1, bottom) | (((c.x - cx) / r) ** 2 + ((c.y - bottom) / ell) ** 2 < 1)
    c.paint(body, lambert(body_n, blue, spec=0.4))
    # Opening: the rim ellipse, dark inside.
    rim = ((c.x - cx) / r) ** 2 + ((c.y - top) / ell) ** 2
    c.paint(rim < 1, np.float32([0.2, 0.42, 0.78]))
    c.paint(rim < 0.8, np.float32([0.05, 0.09, 0.17]) + 0.08 * np.clip(c.y - top + ell, 0, 1)[..., None])
    return c.image()


def house() -> Image.Image:
    c = Canvas()
    # Front wall, side wall in perspective, roof (front gable and the long side), door, windows.
    front = polygon_mask(c, [(-0.7, -0.05), (0.05, -0.05), (0.05, 0.65), (-0.7, 0.65)])
    side = polygon_mask(c, [(0.05, -0.05), (0.7, -0.2), (0.7, 0.5), (0.05, 0.65)])
    gable = polygon_mask(c, [(-0.7, -0.05), (-0.325, -0.55), (0.05, -0.05)])
    roof = polygon_mask(c, [(-0.325, -0.55), (0.38, -0.7), (0.78, -0.17), (0.05, -0.05)])
    wall = np.float32([0.93, 0.82, 0.6])
    c.paint(front, flat(wall, [-0.2, 0, 1]))
    c.paint(side, flat(wall, [0.9, 0, 0.5]))
    c.paint(gable, flat(wall * 0.97, [-0.2, 0, 1]))
    c.paint(roof, flat(np.float32([0.7, 0.2, 0.14]), [0.3, -0.8, 0.5]))
    c.paint(rect(c, -0.42, 0.25, -0.22, 0.65), np.float32([0.38, 0.22, 0.1]))           # door
    for x in (-0.62, -0.12):
        c.paint(rect(c, x, 0.08, x + 0.15, 0.23), np.float32([0.55, 0.75, 0.92]))       # front windows
    win = polygon_mask(c, [(0.22, 0.12), (0.5, 0.06), (0.5, 0.26), (0.22, 0.32)])
    c.paint(win, np.float32([0.45, 0.65, 0.85]))                                          # side window
    c.paint(rect(c, 0.2, -0.68, 0.32, -0.45) & ~roof | rect(c, 0.2, -0.62, 0.32, -0.45),
            flat(np.float32([0.5, 0.47, 0.45]), [0.2, 0, 1]))                             # chimney
    return c.image()


def chair() -> Image.Image:
    c = Canvas()
    wood = np.float32([0.62, 0.4, 0.2])
    dark = wood * 0.7
    # Back legs (behind), seat, front legs, backrest with slats; a 3/4 view made of flat quads.
    for x in (-0.22, 0.38):
        c.paint(rect(c, x, 0.05, x + 0.07, 0.62), flat(dark, [0.3, 0, 1]))
    seat_top = polygon_mask(c, [(-0.5, 0.08), (0.12, 0.12), (0.5, -0.02), (-0.12, -0.06)])
    seat_edge = polygon_mask(c, [(-0.5, 0.08), (0.12, 0.12), (0.12, 0.2), (-0.5, 0.16)])
    seat_side = polygon_mask(c, [(0.12, 0.12), (0.5, -0.02), (0.5, 0.06), (0.12, 0.2)])
    c.paint(seat_top, flat(wood, [0, -1, 0.4]))
    c.paint(seat_edge, flat(wood, [-0.3, 0, 1]))
    c.paint(seat_side, flat(wood, [1, 0, 0.4]))
    for x in (-0.48, 0.06):
        c.paint(rect(c, x, 0.18, x + 0.07, 0.8), flat(wood, [-0.3, 0, 1]))
    # Backrest: two posts rising from the back corners and three slats between them.
    c.paint(polygon_mask(c, [(-0.14, -0.06), (-0.07, -0.06), (-0.05, -0.72), (-0.12, -0.72)]), flat(wood, [0, 0, 1]))
    c.paint(polygon_mask(c, [(0.43, -0.02), (0.5, -0.02), (0.52, -0.8), (0.45, -0.8)]), flat(wood, [0, 0, 1]))
    for k, y in enumerate((-0.68, -0.5, -0.32)):
        slat = polygon_mask(c, [(-0.1, y), (0.48, y - 0.08), (0.48, y - 0.01), (-0.1, y + 0.07)])
        c.paint(slat, flat(wood * (1.0 - 0.04 * k), [0.1, 0, 1]))
    return c.image()


def mushroom() -> Image.Image:
    c = Canvas()
    # Stem: a slightly flared cylinder.
    half = 0.14 + 0.05 * np.clip(c.y - 0.1, 0, 1)
    stem = (np.abs(c.x) < half) & (c.y > -0.05) & (c.y < 0.68)
    u = np.clip(c.x / half, -1, 1)
    c.paint(stem, lambert(np.stack([u, np.zeros_like(u), np.sqrt(1 - u * u)], -1), [0.93, 0.9, 0.8]))
    # Cap: the upper half of an ellipsoid, white spots on red.
    a, b, cy = 0.7, 0.55, 0.05
    e = (c.x / a) ** 2 + ((c.y - cy) / b) ** 2
    cap = (e < 1) & (c.y < cy + 0.04)
    z = np.sqrt(np.clip(1 - e, 0, None))
    normal = np.stack([c.x / a, (c.y - cy) / b, z], -1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-6
    spots = np.zeros_like(cap)
    for sx, sy, sr in [(-0.3, -0.2, 0.09), (0.1, -0.35, 0.08), (0.38, -0.12, 0.07), (-0.05, -0.08, 0.06),
                       (-0.5, -0.02, 0.05), (0.25, -0.02, 0.05)]:
        spots |= (c.x - sx) ** 2 + (c.y - sy) ** 2 < sr * sr
    base = np.where(spots[..., None], np.float32([0.97, 0.95, 0.9]), np.float32([0.85, 0.12, 0.1]))
    c.paint(cap, lambert(normal, base, spec=0.35))
    return c.image()


EXAMPLES = {"sphere": sphere, "mug": mug, "house": house, "chair": chair, "mushroom": mushroom}


def main(out_dir: str = OUT_DIR) -> list:
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, draw in EXAMPLES.items():
        path = os.path.join(out_dir, f"{name}.png")
        draw().save(path, format="PNG", optimize=True)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in main(sys.argv[1] if len(sys.argv) > 1 else OUT_DIR):
        print(f"{p}  {os.path.getsize(p) // 1024} KB")
