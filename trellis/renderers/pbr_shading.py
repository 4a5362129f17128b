"""Physically based shading of a metallic-roughness material, per pixel, in pure PyTorch (any device).

The model is the usual real-time one, written from its public equations:

* specular: Cook-Torrance microfacets with the GGX (Trowbridge-Reitz) distribution
  ``D = a^2 / (pi ((n.h)^2 (a^2 - 1) + 1)^2)`` with ``a = roughness^2``, Schlick's Fresnel
  ``F = F0 + (1 - F0) (1 - v.h)^5`` and the Smith-Schlick masking term ``G1(x) = x / (x (1 - k) + k)``,
  ``k = (roughness + 1)^2 / 8``; ``F0 = mix(0.04, base colour, metallic)``;
* diffuse: Lambert ``base / pi``, weighted by ``(1 - F) (1 - metallic)`` (a metal has no diffuse part);
* light: a few fixed directional lights (world frame, z up) and a procedural environment: a sky over a darker
  ground, joined at a bright horizon. Its diffuse part is the hemisphere light of that sky and ground (``mix(ground,
  sky, (1 + n.z) / 2)``); its specular part is the environment seen in the reflection direction, blurred with
  the roughness, times the split-sum scale and bias of the environment BRDF in Karis's analytic fit. So a polished
  metal mirrors the sky and the ground in its own colour instead of going black where no light hits it.

Colours: textures hold sRGB base colour (decoded with the exact sRGB curve before shading) and linear data (metal,
roughness, normals); the result is linear radiance, which ``linear_to_srgb`` encodes for display.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["srgb_to_linear", "linear_to_srgb", "LIGHTS", "SKY_ZENITH", "SKY_HORIZON", "GROUND", "DIELECTRIC_F0",
           "MIN_ROUGHNESS", "apply_normal_map", "environment", "hemisphere_light", "env_brdf", "shade"]

# Linear radiance of the procedural environment (z up): a pale blue zenith, a warm white horizon, a dark ground.
SKY_ZENITH = (0.50, 0.62, 0.85)
SKY_HORIZON = (1.00, 0.96, 0.90)
GROUND = (0.16, 0.14, 0.12)
# (direction towards the light, world frame z up; linear irradiance RGB): a warm key, a cool fill, a rim behind.
LIGHTS = (((0.55, 0.65, 0.75), (2.4, 2.25, 2.05)),
          ((-0.75, 0.35, 0.25), (0.45, 0.55, 0.70)),
          ((-0.20, -0.85, 0.50), (0.90, 0.90, 0.95)))
DIELECTRIC_F0 = 0.04          # the reflectance at normal incidence of common non-metals
MIN_ROUGHNESS = 0.045         # below this a point light's GGX lobe is narrower than a pixel: it flickers


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """The sRGB decoding curve (IEC 61966-2-1) on values in [0, 1]."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """The sRGB encoding curve (IEC 61966-2-1), clamping to [0, 1] first."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


def _vec(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1, keepdim=True)


def apply_normal_map(normal: torch.Tensor, tangent: torch.Tensor, sign: torch.Tensor,
                     mapped: torch.Tensor) -> torch.Tensor:
    """The shading normal [P,3] from a tangent-space normal map (glTF convention): ``mapped`` [P,3] in [-1, 1]
    (x along the tangent, y along the bitangent ``cross(n, t) * sign``, z along the normal), the interpolated
    vertex ``normal`` and ``tangent`` [P,3] and the handedness ``sign`` [P,1]."""
    n = F.normalize(normal, dim=-1)
    t = F.normalize(tangent - n * _dot(tangent, n), dim=-1)     # re-orthogonalised after interpolation
    b = torch.cross(n, t, dim=-1) * sign
    out = t * mapped[:, :1] + b * mapped[:, 1:2] + n * mapped[:, 2:3]
    return F.normalize(out, dim=-1)


def environment(direction: torch.Tensor, roughness: torch.Tensor) -> torch.Tensor:
    """Radiance [P,3] of the procedural environment seen along unit `direction` [P,3], blurred for a surface of
    `roughness` [P,1]: the sky-ground transition widens with it, and a rough surface sees the hemisphere's mean."""
    z = direction[:, 2:3]
    a = roughness * roughness
    width = 0.04 + 0.9 * a
    above = torch.clamp((z + width) / (2 * width), 0.0, 1.0)
    above = above * above * (3 - 2 * above)                    # smoothstep across the horizon
    sky = torch.lerp(_vec(SKY_HORIZON, z), _vec(SKY_ZENITH, z), z.clamp(min=0.0).sqrt())
    sharp = torch.lerp(_vec(GROUND, z).expand_as(sky), sky, above)
    return torch.lerp(sharp, hemisphere_light(direction), a)


def hemisphere_light(normal: torch.Tensor) -> torch.Tensor:
    """The environment's diffuse radiance [P,3] for unit `normal` [P,3]: the mean sky and ground, mixed by how
    much of each the normal's hemisphere sees."""
    sky = (_vec(SKY_ZENITH, normal) + _vec(SKY_HORIZON, normal)) / 2
    return torch.lerp(_vec(GROUND, normal), sky, (1 + normal[:, 2:3]) / 2)


def env_brdf(roughness: torch.Tensor, n_dot_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, bias) [P,1] of the pre-integrated GGX environment BRDF, ``F0 * scale + bias`` (Karis's analytic
    fit for mobile, after Lazarov)."""
    c0 = _vec((-1.0, -0.0275, -0.572, 0.022), roughness)
    c1 = _vec((1.0, 0.0425, 1.04, -0.04), roughness)
    r = roughness * c0 + c1
    a004 = torch.minimum(r[:, :1] * r[:, :1], torch.exp2(-9.28 * n_dot_v)) * r[:, :1] + r[:, 1:2]
    return a004 * -1.04 + r[:, 2:3], a004 * 1.04 + r[:, 3:4]


def shade(base: torch.Tensor, metallic: torch.Tensor, roughness: torch.Tensor, normal: torch.Tensor,
          view: torch.Tensor) -> torch.Tensor:
    """Linear radiance [P,3] leaving each point towards the camera.

    base [P,3] linear base colour, metallic and roughness [P,1] in [0, 1], normal [P,3] unit shading normal
    (facing the camera), view [P,3] unit direction from the point to the camera; all in the world frame."""
    rough = roughness.clamp(MIN_ROUGHNESS, 1.0)
    metal = metallic.clamp(0.0, 1.0)
    f0 = torch.lerp(torch.full_like(base, DIELECTRIC_F0), base, metal)
    diffuse_albedo = base * (1 - metal)
    n_dot_v = _dot(normal, view).clamp(1e-4, 1.0)
    a2 = (rough * rough) ** 2
    k = (rough + 1) ** 2 / 8
    g_v = n_dot_v / (n_dot_v * (1 - k) + k)
    out = torch.zeros_like(base)
    for direction, irradiance in LIGHTS:
        light = F.normalize(_vec(direction, base), dim=-1).expand_as(normal)
        n_dot_l = _dot(normal, light).clamp(min=0.0)
        half = F.normalize(light + view, dim=-1)
        n_dot_h = _dot(normal, half).clamp(0.0, 1.0)
        v_dot_h = _dot(view, half).clamp(0.0, 1.0)
        fresnel = f0 + (1 - f0) * (1 - v_dot_h) ** 5
        d = a2 / (math.pi * (n_dot_h * n_dot_h * (a2 - 1) + 1) ** 2)
        g = g_v * n_dot_l / (n_dot_l * (1 - k) + k)
        specular = fresnel * (d * g / (4 * n_dot_v * n_dot_l.clamp(min=1e-4)))
        diffuse = (1 - fresnel) * diffuse_albedo / math.pi
        out = out + (diffuse + specular) * _vec(irradiance, base) * n_dot_l
    reflected = F.normalize(2 * _dot(normal, view) * normal - view, dim=-1)
    scale, bias = env_brdf(rough, n_dot_v)
    out = out + environment(reflected, rough) * (f0 * scale + bias)
    return out + diffuse_albedo * hemisphere_light(normal)
