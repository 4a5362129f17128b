"""Cameras in the reference's conventions (spec §14.1, §14.3).

World frame: z up, objects inside [-0.5, 0.5]^3. Extrinsics are OpenCV world->camera 4x4 matrices
(x right, y down, z forward). Intrinsics are normalised to an image of size 1 (fx = fy = 0.5 /
tan(fov / 2), cx = cy = 0.5). All functions take and return float32 tensors on the given device.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core.lowdiscrepancy import radical_inverse


def image_size(resolution) -> tuple[int, int]:
    """(height, width) of a renderer's ``resolution``: an int (a square) or (height, width)."""
    if isinstance(resolution, int):
        return resolution, resolution
    return int(resolution[0]), int(resolution[1])


def look_at_opencv(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """[..., 3] eye/target/up -> [..., 4, 4] OpenCV world->camera extrinsics."""
    z = F.normalize(target - eye, dim=-1)
    x = F.normalize(torch.cross(-up.expand_as(z), z, dim=-1), dim=-1)
    y = torch.cross(z, x, dim=-1)
    rot = torch.stack([x, y, z], dim=-2)
    ext = torch.zeros(*eye.shape[:-1], 4, 4, dtype=eye.dtype, device=eye.device)
    ext[..., :3, :3] = rot
    ext[..., :3, 3] = -(rot @ eye[..., None])[..., 0]
    ext[..., 3, 3] = 1
    return ext


def intrinsics_from_fov(fov: float | torch.Tensor, device=None) -> torch.Tensor:
    """Normalised 3x3 intrinsics for a square image and a field of view in radians."""
    fov = torch.as_tensor(fov, dtype=torch.float32, device=device)
    f = 0.5 / torch.tan(fov / 2)
    k = torch.zeros(*fov.shape, 3, 3, dtype=torch.float32, device=device)
    k[..., 0, 0] = f
    k[..., 1, 1] = f
    k[..., 0, 2] = 0.5
    k[..., 1, 2] = 0.5
    k[..., 2, 2] = 1
    return k


def orbit_cameras(yaws, pitches, radius=2.0, fov=40.0, device=None):
    """Cameras on a sphere around the origin looking at it (yaw/pitch in radians, fov in degrees).

    eye = r (sin yaw cos pitch, cos yaw cos pitch, sin pitch). Returns (extrinsics [N,4,4],
    intrinsics [N,3,3]).
    """
    yaws = torch.as_tensor(yaws, dtype=torch.float32, device=device).reshape(-1)
    pitches = torch.as_tensor(pitches, dtype=torch.float32, device=device).reshape(-1)
    radius = torch.as_tensor(radius, dtype=torch.float32, device=device).expand_as(yaws)
    fov = torch.as_tensor(fov, dtype=torch.float32, device=device).expand_as(yaws)
    eye = torch.stack([torch.sin(yaws) * torch.cos(pitches), torch.cos(yaws) * torch.cos(pitches),
                       torch.sin(pitches)], -1) * radius[:, None]
    target = torch.zeros_like(eye)
    up = torch.tensor([0.0, 0.0, 1.0], device=eye.device)
    return look_at_opencv(eye, target, up), intrinsics_from_fov(torch.deg2rad(fov), device=eye.device)


def hammersley_sphere_views(n: int):
    """Yaw/pitch (radians) of view i of n on the spherical Hammersley sequence (§14.3)."""
    yaws, pitches = [], []
    for i in range(n):
        u, v = i / n, radical_inverse(i, 2)
        yaws.append(2 * math.pi * v)
        pitches.append(math.acos(1 - 2 * u) - math.pi / 2)
    return yaws, pitches


def projection_opencv(intrinsics: torch.Tensor, near: float, far: float) -> torch.Tensor:
    """4x4 projection applied to OpenCV camera coordinates (image row 0 = top), spec §14.1."""
    fx, fy = intrinsics[..., 0, 0], intrinsics[..., 1, 1]
    cx, cy = intrinsics[..., 0, 2], intrinsics[..., 1, 2]
    p = torch.zeros(*intrinsics.shape[:-2], 4, 4, dtype=intrinsics.dtype, device=intrinsics.device)
    p[..., 0, 0] = 2 * fx
    p[..., 0, 2] = 2 * cx - 1
    p[..., 1, 1] = 2 * fy
    p[..., 1, 2] = -2 * cy + 1
    p[..., 2, 2] = far / (far - near)
    p[..., 2, 3] = near * far / (near - far)
    p[..., 3, 2] = 1
    return p


def video_cameras(num_frames: int = 300, r: float = 2.0, fov: float = 40.0):
    """The render_video orbit (§14.2): yaw = linspace(0, 2 * 3.1415, n) (3.1415 as in the reference),
    pitch = 0.25 + 0.5 * sin(yaw), radius r, fov in degrees. Returns (extrinsics, intrinsics)."""
    yaws = torch.linspace(0, 2 * 3.1415, num_frames)
    pitches = 0.25 + 0.5 * torch.sin(torch.linspace(0, 2 * 3.1415, num_frames))
    return orbit_cameras(yaws, pitches, r, fov)
