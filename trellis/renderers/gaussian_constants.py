"""The cut-offs of Gaussian compositing, written once for its three paths: the PyTorch twin
(`gaussian_render.composite_torch`) and the kernels `trellis_triton.gaussian_composite` and
`trellis_nvrtc.gaussian_composite`. The paths agree only while they cut at the same values."""
from __future__ import annotations

# A contribution below one 8-bit step is skipped; a splat's extent (the box binned into tiles) is the
# ellipse on which its alpha falls to this value.
ALPHA_MIN = 1.0 / 255.0
# One splat never makes a pixel opaque on its own, so the transmittance stays positive and the twin's
# sum of log(1 - alpha) stays finite.
ALPHA_MAX = 0.99
# A splat that would bring a pixel's transmittance below this is not composited and ends the pixel:
# what lies behind could add at most this much. It is (1 - ALPHA_MAX)^2: a pixel reaches it only after two
# splats of the highest alpha, as in the reference 3DGS rasteriser.
T_MIN = 1e-4
# Floor of the Gaussian exponent before exp: alpha >= ALPHA_MIN needs an exponent >= log(1/255) (~-5.5),
# so the floor changes no kept value and keeps exp away from denormals.
POWER_MIN = -10.0
# Pixels per side of a kernel tile (one thread per pixel, 256 a block); the NVRTC kernel is written for
# this size only.
TILE_SIZE = 16
# Columns of the float32 per-splat table the kernels read (`gaussian_render.kernel_inputs`), in order.
KERNEL_COLUMNS = ("u", "v", "conic_a", "conic_b", "conic_c", "log_opacity", "r", "g", "b", "z")
