"""3-D Gaussians with degree-0 spherical harmonics, as the reference stores and activates them (spec §13.1)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# The PLY axis transform of the reference: (x, y, z) -> (x, -z, y). GLB uses another one (§15.6).
PLY_TRANSFORM = [[1, 0, 0], [0, 0, -1], [0, 1, 0]]
_PLY_FIELDS = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
               "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


# Raw scale -> activated scale and back, keyed by the `scaling_activation` value of pipeline.json.
_SCALE_MAPS = {
    "exp": (torch.exp, torch.log),
    "softplus": (F.softplus, lambda y: y + torch.log(-torch.expm1(-y))),
}


def _f32(x: float) -> float:
    """Round a Python float through float32 (the bias constants are evaluated in float32, spec §13.1)."""
    return float(np.float32(x))


def _raw_scale_shift(activation: str, scaling_bias: float) -> float:
    """b_s with act(b_s) = scaling_bias: log(b) for exp, log(expm1(b)) for softplus."""
    b = np.float32(scaling_bias)
    return _f32(np.log(b) if activation == "exp" else np.log(np.expm1(b)))


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    w, x, y, z = F.normalize(q, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(m: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] -> unit quaternions (w, x, y, z) with w >= 0 (robust branch choice)."""
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # |w|, |x|, |y|, |z| from the diagonal, then signs from the off-diagonal of the largest one.
    mag = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    mag = 0.5 * torch.sqrt(mag.clamp(min=0))
    best = mag.argmax(-1)
    d = [m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1],
         m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1]]
    cands = []
    for i in range(4):
        s = 4 * mag[..., i].clamp(min=1e-12)
        if i == 0:
            q = [mag[..., 0], d[0] / s, d[1] / s, d[2] / s]
        elif i == 1:
            q = [d[0] / s, mag[..., 1], d[3] / s, d[4] / s]
        elif i == 2:
            q = [d[1] / s, d[3] / s, mag[..., 2], d[5] / s]
        else:
            q = [d[2] / s, d[4] / s, d[5] / s, mag[..., 3]]
        cands.append(torch.stack(q, -1))
    q = torch.stack(cands, -2).gather(-2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = torch.where(q[..., :1] < 0, -q, q)
    return F.normalize(q, dim=-1)


class Gaussian:
    """Degree-0 3-D Gaussians kept as raw fields (`_xyz`, `_features_dc`, `_scaling`, `_rotation`,
    `_opacity`) plus the few constants their activations need; `get_*` gives the activated values.

    The keyword names are the reference's (they are the keys of pipeline.json's representation_config),
    hence `mininum_kernel_size` as spelled there. They are kept verbatim in `init_params`, so that
    `Gaussian(**g.init_params)` builds an empty twin; everything stored besides is derived from them.
    """

    def __init__(self, aabb, *, sh_degree: int = 0, mininum_kernel_size: float = 0.0, scaling_bias: float = 0.01,
                 opacity_bias: float = 0.1, scaling_activation: str = "exp", device="cpu"):
        if sh_degree != 0:
            raise ValueError("only degree-0 spherical harmonics are used by TRELLIS")
        if scaling_activation not in _SCALE_MAPS:
            raise ValueError(f"scaling_activation {scaling_activation!r} is not one of {sorted(_SCALE_MAPS)}")
        # Grouped as the activations use them: the box, then scale, then opacity.
        self.init_params = {
            "aabb": list(aabb),
            "scaling_activation": scaling_activation, "scaling_bias": scaling_bias,
            "mininum_kernel_size": mininum_kernel_size,
            "opacity_bias": opacity_bias,
            "sh_degree": sh_degree,
        }
        # Box: origin aabb[:3] and size aabb[3:]; its device is `device` until there are Gaussians.
        self.aabb = torch.tensor(aabb, dtype=torch.float32, device=device)
        # Scale: raw -> act(raw + scale_bias), then widened by the 3-D filter k: sqrt(s^2 + k^2).
        self._scale_kind = scaling_activation
        self.scale_bias = _raw_scale_shift(scaling_activation, scaling_bias)
        self._kernel_sq = mininum_kernel_size ** 2
        # Rotation: the raw field is an offset from the identity quaternion (w, x, y, z).
        self._identity_quat = torch.tensor([1.0, 0.0, 0.0, 0.0], device=device)
        # Opacity: sigmoid(raw + logit(opacity_bias)).
        p = np.float32(opacity_bias)
        self._opacity_shift = _f32(np.log(p / (1 - p)))
        self._xyz = self._features_dc = self._scaling = self._rotation = self._opacity = None

    @property
    def device(self) -> torch.device:
        """Where the Gaussians are (the box's device while there are none)."""
        return self.aabb.device if self._xyz is None else self._xyz.device

    # ------------------------------------------------------------------ activations
    @property
    def get_xyz(self) -> torch.Tensor:
        return self._xyz * self.aabb[None, 3:] + self.aabb[None, :3]

    @property
    def get_scaling(self) -> torch.Tensor:
        act, _ = _SCALE_MAPS[self._scale_kind]
        return torch.sqrt(act(self._scaling + self.scale_bias).square() + self._kernel_sq)

    @property
    def get_rotation(self) -> torch.Tensor:
        return F.normalize(self._rotation + self._identity_quat, dim=-1)

    @property
    def get_opacity(self) -> torch.Tensor:
        return torch.sigmoid(self._opacity + self._opacity_shift)

    @property
    def get_features(self) -> torch.Tensor:
        return self._features_dc

    # ------------------------------------------------------------------ setters from activated values
    def from_xyz(self, xyz):
        self._xyz = (xyz - self.aabb[None, :3]) / self.aabb[None, 3:]

    def from_scaling(self, scales):
        _, inverse = _SCALE_MAPS[self._scale_kind]
        unfiltered = torch.sqrt((scales.square() - self._kernel_sq).clamp(min=1e-20))
        self._scaling = inverse(unfiltered) - self.scale_bias

    def from_rotation(self, rots):
        self._rotation = rots - self._identity_quat

    def from_opacity(self, opacities):
        self._opacity = torch.logit(opacities) - self._opacity_shift

    def from_features(self, features):
        self._features_dc = features

    def __len__(self) -> int:
        return 0 if self._xyz is None else self._xyz.shape[0]

    def to(self, device) -> "Gaussian":
        for name in ("aabb", "_identity_quat", "_xyz", "_features_dc", "_scaling", "_rotation", "_opacity"):
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t.to(device))
        return self

    # ------------------------------------------------------------------ raw fields, exactly
    RAW_FIELDS = ("xyz", "features_dc", "scaling", "rotation", "opacity")

    def raw_fields(self) -> dict:
        """The stored (pre-activation) tensors by name (``RAW_FIELDS``): with ``init_params``, everything that makes
        these Gaussians, bit for bit (the PLY stores activated values, which do not round-trip exactly)."""
        return {name: getattr(self, "_" + name) for name in self.RAW_FIELDS}

    @classmethod
    def from_raw_fields(cls, init_params: dict, fields: dict, device="cpu") -> "Gaussian":
        """The Gaussians of ``init_params`` and ``raw_fields()``, on ``device``."""
        missing = [n for n in cls.RAW_FIELDS if n not in fields]
        if missing:
            raise ValueError(f"missing Gaussian fields {missing}")
        g = cls(**{k: v for k, v in init_params.items()}, device=device)
        for name in cls.RAW_FIELDS:
            setattr(g, "_" + name, torch.as_tensor(fields[name]).to(device=device, dtype=torch.float32))
        return g

    # ------------------------------------------------------------------ PLY
    def save_ply(self, path, transform=PLY_TRANSFORM) -> None:
        """Binary little-endian PLY in the 3DGS layout (x y z nx ny nz f_dc_* opacity scale_* rot_*)."""
        xyz = self.get_xyz.detach().float()
        rot = (self._rotation + self._identity_quat).detach().float()
        if transform is not None:
            t = torch.tensor(transform, dtype=torch.float32, device=xyz.device)
            xyz = xyz @ t.T
            rot = matrix_to_quaternion(t @ quaternion_to_matrix(rot))
        columns = [xyz, torch.zeros_like(xyz), self._features_dc.detach().float().reshape(-1, 3),
                   torch.logit(self.get_opacity.detach().float()), torch.log(self.get_scaling.detach().float()), rot]
        data = torch.cat(columns, dim=1).cpu().numpy().astype("<f4")
        header = "ply\nformat binary_little_endian 1.0\nelement vertex %d\n" % data.shape[0]
        header += "".join(f"property float {name}\n" for name in _PLY_FIELDS) + "end_header\n"
        with open(path, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(np.ascontiguousarray(data).tobytes())

    def load_ply(self, path, transform=PLY_TRANSFORM) -> None:
        with open(path, "rb") as f:
            names, count = [], 0
            while True:
                line = f.readline().decode("ascii").strip()
                if line.startswith("element vertex"):
                    count = int(line.split()[-1])
                elif line.startswith("property"):
                    names.append(line.split()[-1])
                elif line == "end_header":
                    break
                elif not line and f.tell() > 1 << 16:
                    raise ValueError(f"{path}: not a PLY file (no end_header)")
            data = np.frombuffer(f.read(count * 4 * len(names)), dtype="<f4").reshape(count, len(names))
        col = {n: i for i, n in enumerate(names)}
        pick = lambda keys: torch.from_numpy(data[:, [col[k] for k in keys]].copy()).to(self.device)  # noqa: E731
        xyz = pick(["x", "y", "z"])
        rot = pick(["rot_0", "rot_1", "rot_2", "rot_3"])
        if transform is not None:
            t = torch.tensor(transform, dtype=torch.float32, device=xyz.device)
            xyz = xyz @ t                                   # inverse of a rotation = its transpose
            rot = matrix_to_quaternion(t.T @ quaternion_to_matrix(rot))
        self.from_xyz(xyz)
        self._features_dc = pick(["f_dc_0", "f_dc_1", "f_dc_2"]).reshape(-1, 1, 3)
        self.from_opacity(torch.sigmoid(pick(["opacity"])))
        self.from_scaling(torch.exp(pick(["scale_0", "scale_1", "scale_2"])))
        self.from_rotation(F.normalize(rot, dim=-1))


SH_C0 = 0.28209479177387814
