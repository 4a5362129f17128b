"""`--gpu-build TAG`: the install plan for an NVIDIA GPU that is not in this machine.

A container image is built where no GPU is (a laptop, CI) and runs on GPU servers, so the PyTorch build is
named instead of detected: one of installer.plan.TORCH_CUDA_BUILDS (cu130, cu126, cu128, cu118), with the
PyTorch release the plan pairs with it. The install's GPU checks (a CUDA computation, the fast kernels) need
the GPU and are not run; the app picks precision, offload and attention from the GPU it finds when it starts.
"""
from __future__ import annotations

from .detect import System
from .plan import RULES, TORCH_CUDA_BUILDS, TORCH_INDEX, Plan, torch_requirement

GPU_BUILD_TAGS = tuple(b.tag for b in TORCH_CUDA_BUILDS)


def plan_for_build(system: System, tag: str) -> Plan:
    """The plan that installs PyTorch's `tag` build whatever GPU this machine has (ValueError: no such build here)."""
    build = next((b for b in TORCH_CUDA_BUILDS if b.tag == tag), None)
    if build is None:
        raise ValueError(f"--gpu-build {tag}: choose one of {', '.join(GPU_BUILD_TAGS)} (python -m installer plan "
                         "on the GPU machine names the one for its GPU and driver)")
    if system.os not in ("Windows", "Linux") or system.machine != "x86_64":
        raise ValueError(f"--gpu-build {tag}: PyTorch's CUDA builds are for Windows and Linux on x86-64, not "
                         f"{system.os} on {system.machine}")
    lo, hi = build.pythons
    if not lo <= tuple(system.python[:2]) <= hi:
        raise ValueError(f"--gpu-build {tag}: {build.name} has wheels for Python {lo[0]}.{lo[1]} to {hi[0]}.{hi[1]}, "
                         f"not {system.python[0]}.{system.python[1]}")
    rules = [*build.rules, "torch_local_version"]
    optional = []
    if system.os == "Windows" and build.triton_windows is not None:
        optional = [f"triton-windows=={build.triton_windows}"]
        rules.append("triton_windows")
    note = (f"--gpu-build {tag}: {build.name} (CUDA {build.cuda}) for a GPU that is not in this machine: "
            f"{build.arch_range}, NVIDIA driver {build.driver_compat[system.os]} or newer on the machine that runs "
            "it. The GPU check is not run here; the app chooses precision, offload and attention on that GPU.")
    return Plan(device="cuda", cuda_tag=tag, torch_index_url=TORCH_INDEX + tag,
                packages=[torch_requirement(system, tag, None, build.torch)], optional_packages=optional,
                attention_backend="auto", sparse_conv_backend="torch", precision="auto", offload="auto",
                cfg_batch=True, gpu=None, notes=[note], rules=[{"rule": r, "source": RULES[r]} for r in rules],
                system={"os": system.os, "machine": system.machine, "python": ".".join(map(str, system.python))})
