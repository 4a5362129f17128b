"""installer/: nvidia-smi parsing, the install plan for real-world machines, preset thresholds, licences.

The plan table below is the acceptance table of issue #6: each row is what nvidia-smi prints on a real
machine, the plan we expect, and the published fact behind it (`why`; the rule ids point into
installer.plan.RULES, which carries the full citation). A few rows go through the real CLI in a
subprocess (`python -m installer plan --json --nvidia-smi-output FILE`), the rest through make_plan.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from installer import detect, licences, plan
from installer.detect import System, detect_system, parse_nvidia_smi, parse_version, query_nvidia_smi
from installer.plan import RULES, make_plan

from tests.helpers.install_apps import make_system
from tests.helpers.repo import ROOT
ON_LINUX = sys.platform.startswith("linux")


@dataclass
class Case:
    id: str
    smi: str                         # what nvidia-smi --query-gpu=... printed
    os: str                          # "Linux" or "Windows" (driver numbering and minimums differ)
    cuda_tag: str
    attention: str
    precision: str
    offload: str
    why: str                         # the published fact the expectation follows
    rules: tuple[str, ...]           # installer.plan.RULES ids the plan must cite
    warn: tuple[str, ...] = ()       # substrings expected in the warnings
    no_warnings: bool = False        # make_plan rows only: nothing to warn about
    note: tuple[str, ...] = ()       # substrings expected in the notes
    cfg_batch: bool | None = None
    gpu_index: int | None = None
    wsl: bool = False
    cli: bool = False                # run through `python -m installer plan` (Linux rows only)
    triton: bool = False             # the plan adds the pinned triton-windows wheel (Windows, cc >= 7.0)
    torch: str = plan.TORCH_VERSION  # the PyTorch release planned (older ones for older drivers, issue #16)


CASES = [
    Case("no_gpu", "", "Linux", "cpu", "sdpa", "fp32", "none",
         why="An empty nvidia-smi answer means no NVIDIA GPU: CPU wheels from download.pytorch.org/whl/cpu; "
             "memory.py::pick_preset gives fp32 on the CPU.",
         rules=("no_gpu_cpu", "attention_sdpa", "preset_memory"), warn=("very slow", "CPU build"), cli=True),
    Case("gtx1080ti_driver470_3_fields", "NVIDIA GeForce GTX 1080 Ti, 11264, 470.256.02\n", "Linux",
         "cu118", "sdpa", "fp32", "model", torch="2.7.1", cfg_batch=False,
         why="R470 predates the compute_cap field (3 fields) and CUDA 12 (minor-version compatibility starts at "
             "525.60.13), so no torch 2.13 build runs; it is >= 450.80.02, CUDA 11.x minor-version compatibility, "
             "and torch 2.7.1 is the last release with a cu118 build (sm_60 code runs on 6.1). 11 GiB of Pascal: "
             "fp32 (memory.precision_for: fp16 arithmetic at 1/64 rate), offloaded below fp32's 16 GiB budget.",
         rules=("driver_cuda11", "gpu_arch_cu118", "torch_builds_older", "cc_from_name", "attention_varlen_torch"),
         warn=("470.256.02 is older", "minor-version compatibility"), note=("525.60.13 or newer",), cli=True),
    Case("gtx1070_driver535", "NVIDIA GeForce GTX 1070, 8192, 535.183.01, 6.1\n", "Linux",
         "cu126", "sdpa", "fp32", "model",
         why="Pascal is only in the cu126 build; 535 < 560.35.05 (CUDA 12.6 U3) but >= 525.60.13, so it runs under "
             "minor-version compatibility; FlashAttention needs 8.0. 8 GiB of Pascal: fp32 (>= 7.5 GiB), offloaded, "
             "CFG passes in turn (7.5 GiB free < fp32's 12).",
         rules=("gpu_arch", "driver_cuda12", "attention_sdpa", "pascal_fp16"),
         warn=("minor-version compatibility",), note=("fp16 far slower", "runs fp32"), cfg_batch=False, cli=True),
    Case("gtx1060_windows_driver581", "NVIDIA GeForce GTX 1060 6GB, 6144, 581.57, 6.1\n", "Windows",
         "cu126", "sdpa", "fp16", "model",
         why="Pascal: cu126 only, even on an R580 driver (cu130 starts at Turing 7.5); 6 GiB minus the context is "
             "below pick_preset's 6 GiB CFG-batch threshold.",
         rules=("gpu_arch", "binary_compat"), no_warnings=True, cfg_batch=False),
    Case("rtx2060_driver550", "NVIDIA GeForce RTX 2060, 6144, 550.120, 7.5\n", "Linux",
         "cu126", "sdpa", "fp16", "model",
         why="Turing is in cu126 and cu130; cu130 needs R580, so cu126 under 12.x minor-version compatibility; "
             "Turing (7.5) is below FlashAttention's 8.0.",
         rules=("driver_cuda12", "attention_sdpa"), warn=("minor-version compatibility",),
         note=("580 or newer",)),
    Case("rtx2080ti_driver580", "NVIDIA GeForce RTX 2080 Ti, 11264, 580.95.05, 7.5\n", "Linux",
         "cu130", "sdpa", "fp16", "none",
         why="R580 runs CUDA 13.0, which keeps Turing; 11 GiB is above pick_preset's 10 GiB resident budget.",
         rules=("driver_cuda13", "gpu_arch", "attention_sdpa", "preset_memory"), cfg_batch=True, cli=True),
    Case("rtx3060_driver535", "NVIDIA GeForce RTX 3060, 12288, 535.230.02, 8.6\n", "Linux",
         "cu126", "torch_varlen", "fp16", "none",
         why="Ubuntu 22.04's R535: too old for CUDA 13 (R580), cu126 through 12.x minor-version compatibility; "
             "Ampere runs FlashAttention.",
         rules=("driver_cuda12", "driver_cuda13", "attention_varlen"), warn=("535.230.02 is older",)),
    Case("rtx3080_windows_driver566", "NVIDIA GeForce RTX 3080, 10240, 566.36, 8.6\n", "Windows",
         "cu126", "torch_varlen", "fp16", "model",
         why="566.36 >= 561.17 (CUDA 12.6 U3, Windows) but < 580: cu126 with full support; 10 GiB minus the "
             "context is below the 10 GiB resident budget, so model offload.",
         rules=("driver_cuda12",), no_warnings=True, note=("580 or newer",), cfg_batch=True, triton=True),
    Case("rtx3090_driver570", "NVIDIA GeForce RTX 3090, 24576, 570.195.03, 8.6\n", "Linux",
         "cu126", "torch_varlen", "fp16", "none",
         why="R570 is a CUDA 12.8 driver: no CUDA 13 (R580), and torch 2.13 has no cu128 build; cu126 fully supported.",
         rules=("torch_builds", "driver_cuda12"), no_warnings=True, note=("cu130",)),
    Case("rtx4090_windows_driver591", "NVIDIA GeForce RTX 4090, 24564, 591.44, 8.9\n", "Windows",
         "cu130", "torch_varlen", "fp16", "none",
         why="Ada (8.9) runs cu130's sm_86 code (binary compatibility within major 8); 591 >= 580.",
         rules=("gpu_arch", "binary_compat", "driver_cuda13", "attention_varlen"), no_warnings=True, triton=True),
    Case("rtx4060_laptop_driver580", "NVIDIA GeForce RTX 4060 Laptop GPU, 8188, 580.82.09, 8.9\n", "Linux",
         "cu130", "torch_varlen", "fp16", "model",
         why="8 GiB: below the 10 GiB resident budget (model offload), above 6 GiB (batched CFG).",
         rules=("preset_memory", "driver_cuda13"), no_warnings=True, cfg_batch=True),
    Case("rtx5090_driver580", "NVIDIA GeForce RTX 5090, 32607, 580.95.05, 12.0\n", "Linux",
         "cu130", "torch_varlen", "fp16", "none",
         why="Blackwell sm_120 is only in CUDA >= 12.8 builds; of torch 2.13's builds that is cu130 (R580). "
             "spconv has no sm_120 kernels.",
         rules=("gpu_arch", "driver_cuda13", "spconv_not_planned"), note=("no kernels for this GPU",), cli=True),
    Case("rtx5070_windows_driver572", "NVIDIA GeForce RTX 5070, 12227, 572.83, 12.0\n", "Windows",
         "cu128", "torch_varlen", "fp16", "none", torch="2.11.0",
         why="An early Blackwell driver (R570, CUDA 12.8): cu126 has no sm_120 code and cu130 needs R580, so no "
             "torch 2.13 build runs; torch 2.11.0 is the last release with cu128 (sm_120), and 572.83 >= 572.61 "
             "(CUDA 12.8 U1, Windows): full support. triton-windows follows torch 2.11 (Triton 3.6).",
         rules=("gpu_arch_cu128", "driver_cuda12_8", "torch_builds_older", "triton_windows_2_11"), no_warnings=True,
         note=("580 or newer", "newest release that has one"), cfg_batch=True, triton=True),
    Case("laptop_4gb_windows_driver560", "NVIDIA GeForce RTX 3050 Laptop GPU, 4096, 560.94, 8.6\n", "Windows",
         "cu126", "torch_varlen", "fp16", "model",
         why="560.94 < 561.17 (CUDA 12.6 U3 on Windows): minor-version compatibility; 4 GiB: offload and "
             "sequential CFG, close to the 2.78 GiB low-VRAM peak.",
         rules=("driver_cuda12", "preset_memory", "small_gpu"),
         warn=("minor-version compatibility", "low-memory preset"), cfg_batch=False, triton=True),
    Case("two_gpus", "NVIDIA GeForce RTX 3060, 12288, 580.95.05, 8.6\nNVIDIA GeForce RTX 4090, 24564, 580.95.05, 8.9\n",
         "Linux", "cu130", "torch_varlen", "fp16", "none",
         why="The app uses one GPU: the one with most memory (nvidia-smi index 1), pinned with "
             "CUDA_DEVICE_ORDER=PCI_BUS_ID (CUDA's own order is fastest-first).",
         rules=("multi_gpu",), note=("will use GPU 1",), gpu_index=1, cli=True),
    Case("two_gpus_pascal_and_ada", "NVIDIA GeForce GTX 1080, 8192, 580.95.05, 6.1\n"
                                    "NVIDIA GeForce RTX 4070, 12282, 580.95.05, 8.9\n",
         "Linux", "cu130", "torch_varlen", "fp16", "none",
         why="The 4070 gets cu130; the GTX 1080 (Pascal) has no code in cu130 and is left out.",
         rules=("multi_gpu", "gpu_arch"), note=("GPU 0 (NVIDIA GeForce GTX 1080", "no kernels in the cu130"),
         gpu_index=1),
    Case("kepler_gtx780", "NVIDIA GeForce GTX 780, 3072, 470.256.02\n", "Linux",
         "cpu", "sdpa", "fp32", "none",
         why="Kepler (3.5) is below every torch 2.13 build (cu126 starts at Maxwell 5.0).",
         rules=("gpu_arch", "gpu_arch_cu118", "no_gpu_cpu"), warn=("not supported by any PyTorch CUDA build",)),
    Case("v100_driver580", "Tesla V100-SXM2-16GB, 16384, 580.95.05, 7.0\n", "Linux",
         "cu126", "sdpa", "fp16", "none",
         why="Volta (7.0) is only in cu126 (dropped from CUDA 12.8+/13 builds); below FlashAttention's 8.0.",
         rules=("gpu_arch", "attention_sdpa"), no_warnings=True),
    Case("h100_driver580", "NVIDIA H100 80GB HBM3, 81559, 580.95.05, 9.0\n", "Linux",
         "cu130", "torch_varlen", "fp16", "none",
         why="Hopper 9.0 is in cu130; R580.", rules=("gpu_arch", "driver_cuda13", "attention_cudnn"),
         note=("cuDNN attention",), no_warnings=True),
    Case("wsl_rtx4070_driver561", "NVIDIA GeForce RTX 4070, 12282, 561.09, 8.9\n", "Linux",
         "cu126", "torch_varlen", "fp16", "none",
         why="Under WSL the driver is the Windows one: 561.09 < 561.17 (Windows column) though >= 560.35.05 "
             "(Linux column).",
         rules=("wsl_driver", "driver_cuda12"), warn=("minor-version compatibility",), wsl=True),
    Case("rtx4080_driver550", "NVIDIA GeForce RTX 4080, 16376, 550.144.03, 8.9\n", "Linux",
         "cu126", "torch_varlen", "fp16", "none",
         why="R550 (CUDA 12.4 driver): no CUDA 13; cu126 runs through 12.x minor-version compatibility (>= "
             "525.60.13); Ada runs sm_86 code.",
         rules=("driver_cuda12", "binary_compat"), warn=("550.144.03 is older",), note=("580 or newer",)),
    Case("rtx2070_windows_driver591", "NVIDIA GeForce RTX 2070 SUPER, 8192, 591.44, 7.5\n", "Windows",
         "cu130", "sdpa", "fp16", "model",
         why="Turing is in cu130 and 591 >= 580; 8 GiB: model offload with batched CFG; below FlashAttention's 8.0.",
         rules=("driver_cuda13", "attention_sdpa", "preset_memory"), no_warnings=True, cfg_batch=True, triton=True),
    Case("rtx5080_driver575", "NVIDIA GeForce RTX 5080, 16303, 575.64.05, 12.0\n", "Linux",
         "cu128", "torch_varlen", "fp16", "none", torch="2.11.0",
         why="R575 (CUDA 12.9 driver) runs Blackwell, but torch 2.13 has sm_120 only in cu130 (R580); torch 2.11.0's "
             "cu128 has sm_120 and 575.64.05 >= 570.124.06 (CUDA 12.8 U1, Linux).",
         rules=("gpu_arch_cu128", "driver_cuda12_8", "torch_builds_older", "triton_linux"), no_warnings=True,
         note=("580 or newer",), cli=True),
    # Issue #16's acceptance rows.
    Case("rtx5090_windows_driver572", "NVIDIA GeForce RTX 5090, 32607, 572.16, 12.0\n", "Windows",
         "cu128", "torch_varlen", "fp16", "none", torch="2.11.0",
         why="Blackwell on R570: only cu128 (torch 2.11.0, the last release with it) has sm_120 for a pre-R580 "
             "driver; 572.16 < 572.61 (CUDA 12.8 U1, Windows) but >= 528.33: minor-version compatibility.",
         rules=("torch_builds_older", "gpu_arch_cu128", "driver_cuda12_8", "triton_windows_2_11", "attention_varlen"),
         warn=("572.16 is older", "minor-version compatibility"), note=("580 or newer",), cfg_batch=True,
         triton=True),
    Case("gtx1060_windows_driver472", "NVIDIA GeForce GTX 1060 6GB, 6144, 472.12, 6.1\n", "Windows",
         "cu118", "sdpa", "fp16", "model", torch="2.7.1",
         why="472.12 is below CUDA 12's 528.33 but >= 452.39 (CUDA 11.x minor-version compatibility, Windows); "
             "torch 2.7.1 is the newest release with cu118, whose Windows build compiles sm_61. No triton-windows "
             "(Pascal; and it needs CUDA 12); no varlen_attn in torch 2.7.",
         rules=("torch_builds_older", "gpu_arch_cu118", "driver_cuda11", "attention_varlen_torch", "triton_floor"),
         warn=("472.12 is older", "minor-version compatibility"), note=("528.33 or newer", "no varlen_attn"),
         cfg_batch=False),
    Case("rtx4060_laptop_windows_driver551", "NVIDIA GeForce RTX 4060 Laptop GPU, 8188, 551.86, 8.9\n", "Windows",
         "cu126", "torch_varlen", "fp16", "model",
         why="551.86 is a CUDA 12.4 driver: below 561.17 (CUDA 12.6 U3) but >= 528.33, so torch 2.13's cu126 runs "
             "under CUDA 12.x minor-version compatibility (PyTorch's cu12x wheels carry their own CUDA runtime); "
             "the newest release wins over 2.11's cu128. Ada runs sm_86 code.",
         rules=("driver_cuda12", "binary_compat", "triton_windows"), warn=("minor-version compatibility",),
         note=("580 or newer",), cfg_batch=True, triton=True),
    Case("rtx3060_windows_driver472", "NVIDIA GeForce RTX 3060, 12288, 472.12, 8.6\n", "Windows",
         "cu118", "sdpa", "fp16", "none", torch="2.7.1",
         why="A CUDA 11.4 driver: torch 2.7.1+cu118 (sm_86); triton-windows needs a CUDA 12 PyTorch and driver, so "
             "none; torch 2.7 has no varlen_attn, so SDPA even on Ampere.",
         rules=("driver_cuda11", "triton_windows_cu118", "attention_varlen_torch", "fast_path_fallback"),
         warn=("minor-version compatibility",), note=("triton-windows is not installed",)),
    Case("gtx970_windows_driver441_too_old", "NVIDIA GeForce GTX 970, 4096, 441.22\n", "Windows",
         "cpu", "sdpa", "fp32", "none",
         why="441.22 (a CUDA 10.2 driver) is below CUDA 11.x minor-version compatibility (452.39 on Windows), the "
             "oldest driver any planned build runs on: update the driver.",
         rules=("driver_cuda11", "no_gpu_cpu"), warn=("441.22 is too old", "452.39", "torch 2.7.1+cu118")),
    Case("nvml_error", "Failed to initialize NVML: Driver/library version mismatch\n", "Linux",
         "cpu", "sdpa", "fp32", "none",
         why="nvidia-smi printed an NVML error instead of GPU rows (e.g. after a driver update without a reboot): no "
             "GPU can be planned, the CPU build, and the warning says to fix the driver.",
         rules=("no_gpu_cpu",), warn=("NVML", "CPU build"), cli=True),
    Case("gtx1650_4gb_windows_driver566", "NVIDIA GeForce GTX 1650, 4096, 566.36, 7.5\n", "Windows",
         "cu126", "sdpa", "fp16", "model",
         why="4 GiB Turing on R565: cu126 (full support on Windows >= 561.17); low-memory preset, sequential CFG.",
         rules=("driver_cuda12", "small_gpu"), warn=("low-memory preset",), cfg_batch=False, triton=True),
    Case("compute_cap_na_from_name", "NVIDIA GeForce RTX 4070 SUPER, 12282, 580.95.05, [N/A]\n", "Linux",
         "cu130", "torch_varlen", "fp16", "none",
         why="nvidia-smi printed [N/A] for compute_cap: 8.9 from NVIDIA's compute capability list.",
         rules=("cc_from_name",), note=("assumed from its name",)),
]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "installer", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=env, check=False)


def plan_via_cli(smi: str, tmp_path: Path) -> dict:
    f = tmp_path / "smi.txt"
    f.write_text(smi)
    proc = run_cli("plan", "--json", "--nvidia-smi-output", str(f))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def check_case(case: Case, p: dict, exact_warnings: bool) -> None:
    assert p["cuda_tag"] == case.cuda_tag
    assert p["device"] == ("cpu" if case.cuda_tag == "cpu" else "cuda")
    index = "https://download.pytorch.org/whl/" + case.cuda_tag
    assert p["torch_index_url"] == index
    assert p["packages"] == [f"torch=={case.torch}+{case.cuda_tag}"]
    pin = {plan.TORCH_VERSION: plan.TRITON_WINDOWS_VERSION, "2.11.0": plan.TRITON_WINDOWS_VERSION_CU128}
    assert p["optional_packages"] == ([f"triton-windows=={pin[case.torch]}"] if case.triton else [])
    assert (p["attention_backend"], p["precision"], p["offload"]) == (case.attention, case.precision, case.offload)
    assert p["sparse_conv_backend"] == "torch"
    if case.cfg_batch is not None:
        assert p["cfg_batch"] is case.cfg_batch
    warnings, notes = "\n".join(p["warnings"]), "\n".join(p["notes"])
    for s in case.warn:
        assert s in warnings, (s, p["warnings"])
    for s in case.note:
        assert s in notes, (s, p["notes"])
    if case.no_warnings and exact_warnings:
        assert p["warnings"] == []
    if case.cuda_tag == "cpu":
        assert p["gpu"] is None and p["env"] == {}
    else:
        assert not any("xformers" in o for o in p["optional_packages"])
        assert any("xformers is not installed" in n for n in p["notes"])
    if case.gpu_index is not None:
        assert p["gpu"]["index"] == case.gpu_index
        assert p["env"] == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": str(case.gpu_index)}
    cited = {r["rule"] for r in p["rules"]}
    for rule in case.rules:
        assert rule in cited, (rule, sorted(cited))
    assert all(r["source"] == RULES[r["rule"]] for r in p["rules"])


@pytest.mark.parametrize("case", [c for c in CASES if not (c.cli and ON_LINUX)], ids=lambda c: c.id)
def test_plan_table_make_plan(case):
    check_case(case, json.loads(plan.to_json(make_plan(make_system(case)))), exact_warnings=True)


@pytest.mark.skipif(not ON_LINUX, reason="the CLI rows use this machine's OS (their expectations are for Linux)")
@pytest.mark.parametrize("case", [c for c in CASES if c.cli], ids=lambda c: c.id)
def test_plan_table_cli(case, tmp_path):
    check_case(case, plan_via_cli(case.smi, tmp_path), exact_warnings=False)


def test_table_covers_the_issue_cases():
    ids = {c.id for c in CASES}
    assert len(CASES) >= 12
    assert {"no_gpu", "gtx1080ti_driver470_3_fields", "rtx5090_driver580", "laptop_4gb_windows_driver560",
            "two_gpus"} <= ids
    # issue #16: a CUDA build for these, the CPU for no GPU and an NVML error
    assert {"rtx5090_windows_driver572", "gtx1060_windows_driver472", "rtx4060_laptop_windows_driver551",
            "nvml_error"} <= ids
    assert {c.torch for c in CASES} == {b.torch for b in plan.TORCH_CUDA_BUILDS}     # every release is planned
    assert {c.id.split("_")[0][:5] for c in CASES} >= {"rtx20", "rtx30", "rtx40", "rtx50", "gtx10"}
    for family in ("rtx20", "rtx30", "rtx40", "rtx50"):     # several drivers per generation
        assert len({c.smi.split(",")[2] for c in CASES if c.id.startswith(family)}) >= 2, family
    for c in CASES:
        assert c.why and c.rules and all(r in RULES for r in c.rules)


def test_rules_have_sources_and_builds_cite_them():
    assert all(len(source) > 40 for source in RULES.values())
    for build in plan.TORCH_CUDA_BUILDS:
        assert all(r in RULES for r in build.rules)
    # torch 2.13: cu130 and cu126 (cu128 dropped in 2.12); older releases for older drivers (issue #16)
    assert [(b.tag, b.torch) for b in plan.TORCH_CUDA_BUILDS] == [
        ("cu130", "2.13.0"), ("cu126", "2.13.0"), ("cu128", "2.11.0"), ("cu118", "2.7.1")]
    assert plan.OLDEST_TORCH_VERSION == "2.7.1"
    for build in plan.TORCH_CUDA_BUILDS:       # each fact in the rules the build cites
        text = " ".join(RULES[r] for r in build.rules)
        assert build.torch in text or build.torch == plan.TORCH_VERSION, build.tag
        for os_name in ("Linux", "Windows"):
            for driver in (build.driver_full[os_name], build.driver_compat[os_name]):
                assert driver in text, (build.tag, driver)


def test_newest_release_wins_and_older_builds_only_fill_gaps():
    """For every GPU generation and driver, the plan picks the newest torch release that runs, never an older one
    where torch 2.13 fits."""
    gens = {"5.2": "GTX 980", "6.1": "GTX 1080", "7.0": "TITAN V", "7.5": "RTX 2080", "8.6": "RTX 3080",
            "8.9": "RTX 4080", "12.0": "RTX 5080"}
    for driver in ("452.39", "472.12", "528.33", "551.86", "566.36", "572.16", "581.57"):
        for cc, name in gens.items():
            sys_ = make_system(Case("x", f"NVIDIA GeForce {name}, 16384, {driver}, {cc}\n", "Windows", "", "", "",
                                    "", why="-", rules=()))
            p = make_plan(sys_)
            d = parse_version(driver)
            if cc == "12.0":
                want = "cu130" if d >= (580,) else "cu128" if d >= (528, 33) else "cpu"
            elif d >= (528, 33):
                want = "cu130" if d >= (580,) and cc not in ("5.2", "6.1", "7.0") else "cu126"
            else:
                want = "cu118"
            assert p.cuda_tag == want, (driver, cc, p.cuda_tag, p.warnings)


def test_torch_pin_matches_requirements_1():
    pins = [line.split("#")[0].strip() for line in (ROOT / "requirements_1.txt").read_text().splitlines()]
    assert f"torch=={plan.TORCH_VERSION}" in pins


def test_blackwell_never_gets_spconv_or_xformers():
    s = System(gpus=parse_nvidia_smi("NVIDIA GeForce RTX 5080, 16303, 581.29, 12.0")[0])
    p = make_plan(s)
    assert p.cuda_tag == "cu130" and p.optional_packages == []
    assert not any("spconv" in pkg or "xformers" in pkg for pkg in p.packages + p.optional_packages)


def test_several_gpus_pick_the_one_that_holds_most_then_newest():
    # RTX 3090 (24576 MiB) and RTX 4090 (24564 MiB): both hold everything, the newer one wins despite 12 MiB less.
    two = parse_nvidia_smi("NVIDIA GeForce RTX 3090, 24576, 580.95.05, 8.6\n"
                           "NVIDIA GeForce RTX 4090, 24564, 580.95.05, 8.9")[0]
    assert make_plan(System(gpus=two)).gpu["index"] == 1
    # A 12 GiB RTX 3060 holds the pipeline resident, an 8 GiB RTX 4060 must offload: the 3060 wins.
    two = parse_nvidia_smi("NVIDIA GeForce RTX 4060, 8188, 580.95.05, 8.9\n"
                           "NVIDIA GeForce RTX 3060, 12288, 580.95.05, 8.6")[0]
    p = make_plan(System(gpus=two))
    assert p.gpu["index"] == 1 and p.offload == "none" and p.env["CUDA_VISIBLE_DEVICES"] == "1"


def test_ptx_only_gpu_is_noted_on_linux():
    # A future compute capability 12.x beyond 12.0 runs the sm_120 code; a 13.x one only cu130's PTX (Linux).
    s = System(gpus=parse_nvidia_smi("Future GPU, 49152, 610.10, 13.0")[0])
    p = make_plan(s)
    assert p.cuda_tag == "cu130" and any("PTX" in n for n in p.notes)
    assert make_plan(System(os="Windows", gpus=s.gpus)).cuda_tag == "cpu"


def test_platform_and_python_warnings():
    mac = make_plan(System(os="Darwin", machine="arm64"))
    assert mac.cuda_tag == "cpu" and any("x86-64 only" in w for w in mac.warnings)
    old = make_plan(System(python=(3, 9, 18)))
    assert any("Python 3.9 cannot be used" in w for w in old.warnings)
    py313 = make_plan(System(python=(3, 13, 1)))
    assert any("Python 3.13 is not one" in w for w in py313.warnings)


def test_disk_and_long_path_warnings():
    gpus = parse_nvidia_smi("NVIDIA GeForce RTX 4090, 24564, 591.44, 8.9")[0]
    low = make_plan(System(os="Windows", gpus=gpus, free_disk_bytes=5 * 2 ** 30, app_dir="C:\\T",
                           long_paths_enabled=True))
    assert any("Only 5.0 GiB free" in w and "15 GiB" in w for w in low.warnings)
    deep = "C:\\Users\\Someone With A Long Name\\Documents\\Downloads\\trellis-desktop-1.0.0\\trellis-desktop"
    long = make_plan(System(os="Windows", gpus=gpus, app_dir=deep, long_paths_enabled=False))
    assert any("long paths are off" in w and "LongPathsEnabled" in w for w in long.warnings)
    short = make_plan(System(os="Windows", gpus=gpus, app_dir="C:\\TrellisDesktop", long_paths_enabled=False))
    assert short.warnings == [] and any("long paths are off" in n for n in short.notes)


def test_human_readable_plan(tmp_path):
    f = tmp_path / "smi.txt"
    f.write_text("NVIDIA GeForce RTX 3060, 12288, 580.95.05, 8.6\n")
    proc = run_cli("plan", "--nvidia-smi-output", str(f))
    assert proc.returncode == 0, proc.stderr
    assert "cu130" in proc.stdout and "RTX 3060" in proc.stdout and "fp16, offload none" in proc.stdout


def test_cpu_forces_the_cpu_build(tmp_path):
    gpus = parse_nvidia_smi("NVIDIA GeForce RTX 4090, 24564, 591.44, 8.9")[0]
    p = make_plan(System(gpus=gpus), force_cpu=True)
    assert (p.cuda_tag, p.packages, p.precision, p.gpu) == ("cpu", ["torch==2.13.0+cpu"], "fp32", None)
    assert any(r["rule"] == "cpu_requested" for r in p.rules) and "--cpu was given" in p.warnings[0]
    f = tmp_path / "smi.txt"
    f.write_text("NVIDIA GeForce RTX 4090, 24564, 580.95.05, 8.9\n")
    proc = run_cli("plan", "--json", "--cpu", "--nvidia-smi-output", str(f))
    assert json.loads(proc.stdout)["cuda_tag"] == "cpu"
    mac = make_plan(System(os="Darwin", machine="arm64"), force_cpu=True)
    assert mac.packages == ["torch==2.13.0"]          # macOS and Arm wheels have no local version


def test_unknown_command_is_a_usage_error():
    proc = run_cli("frobnicate")
    assert proc.returncode == 2 and "unknown command" in proc.stderr and "launch" in proc.stderr


def test_unreadable_smi_file_is_a_clear_error(tmp_path):
    proc = run_cli("plan", "--nvidia-smi-output", str(tmp_path / "missing.txt"))
    assert proc.returncode == 2 and "Cannot read --nvidia-smi-output" in proc.stderr


def test_installer_does_not_import_torch():
    code = ("import sys, installer, installer.__main__, installer.licences, installer.install, installer.launch, "
            "installer.weights, installer.launcher, installer.build_launcher; print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.stdout.strip() == "False", proc.stderr


# ------------------------------------------------------------------------- nvidia-smi parsing

def test_parse_three_and_four_fields():
    gpus, notes = parse_nvidia_smi("NVIDIA GeForce RTX 3090, 24576, 535.104.05, 8.6\r\n"
                                   "NVIDIA GeForce GTX 1080, 8192, 470.199.02\r\n\r\n")
    assert notes == []
    a, b = gpus
    assert (a.index, a.name, a.memory_mib, a.driver_version, a.driver, a.compute_capability) == \
           (0, "NVIDIA GeForce RTX 3090", 24576, "535.104.05", (535, 104, 5), (8, 6))
    assert a.compute_capability_from == "nvidia-smi"
    assert (b.index, b.driver, b.compute_capability, b.compute_capability_from) == (1, (470, 199, 2), (6, 1), "name")


@pytest.mark.parametrize("line, memory, driver, cc, source", [
    ("NVIDIA GeForce RTX 4080, [N/A], 581.29, 8.9", None, "581.29", (8, 9), "nvidia-smi"),
    ("NVIDIA GeForce RTX 4080, 16376, [Not Supported], 8.9", 16376, None, (8, 9), "nvidia-smi"),
    ("NVIDIA GeForce RTX 4080, 16376, 581.29, [Not Supported]", 16376, "581.29", (8, 9), "name"),
    ("Mystery Accelerator 9000, 16376, 581.29, [N/A]", 16376, "581.29", None, "unknown"),
    ("NVIDIA GeForce RTX 4080, 16376 MiB, 581.29, 8.9", 16376, "581.29", (8, 9), "nvidia-smi"),
    ("  NVIDIA RTX A6000 ,49140,  550.54.15 ,8.6  ", 49140, "550.54.15", (8, 6), "nvidia-smi"),
    ("NVIDIA GeForce RTX 5090, 32607, 580.95.05, 12.0", 32607, "580.95.05", (12, 0), "nvidia-smi"),
])
def test_parse_odd_values(line, memory, driver, cc, source):
    (g,), _ = parse_nvidia_smi(line)
    assert (g.memory_mib, g.driver_version, g.compute_capability, g.compute_capability_from) == \
           (memory, driver, cc, source)


def test_parse_skips_headers_and_messages():
    gpus, notes = parse_nvidia_smi("name, memory.total [MiB], driver_version, compute_cap\n"
                                   "NVIDIA GeForce RTX 3060, 12288, 580.95.05, 8.6\n")
    assert len(gpus) == 1 and notes == []
    gpus, notes = parse_nvidia_smi("No devices were found\n")
    assert gpus == [] and "not a GPU row" in notes[0]
    s = detect_system(nvidia_smi_output="No devices were found\n")
    assert s.gpus == [] and "No devices were found" in s.gpu_error
    assert make_plan(s).cuda_tag == "cpu"


def test_parse_version():
    assert parse_version("535.104.05") == (535, 104, 5)
    assert parse_version("572.16") == (572, 16)
    assert parse_version(" 580 ") == (580,)
    assert parse_version("[N/A]") is None and parse_version(None) is None and parse_version("5x") is None


def test_compute_capability_from_name():
    names = {"NVIDIA GeForce RTX 5070 Ti": (12, 0), "NVIDIA GeForce RTX 4060 Laptop GPU": (8, 9),
             "NVIDIA RTX 6000 Ada Generation": (8, 9), "NVIDIA GeForce RTX 3050": (8, 6),
             "NVIDIA A100-SXM4-80GB": (8, 0), "NVIDIA GeForce GTX 1660 SUPER": (7, 5), "Tesla T4": (7, 5),
             "NVIDIA GeForce GTX 1080 Ti": (6, 1), "NVIDIA GeForce GTX 970": (5, 2),
             "NVIDIA GeForce GTX 750 Ti": (5, 0), "NVIDIA GeForce GTX 780": (3, 5), "Tesla K80": (3, 7)}
    for name, cc in names.items():
        assert detect.compute_capability_from_name(name) == cc, name


def test_machine_facts_are_guarded(tmp_path):
    assert detect.free_disk_bytes(str(tmp_path / "not" / "yet" / "created")) > 0   # asks the drive it will be on
    if sys.platform != "win32":
        assert detect.windows_long_paths_enabled() is None
    s = detect_system(nvidia_smi_output="")
    assert s.app_dir == str(ROOT) and s.python == tuple(sys.version_info[:3]) and s.gpus == [] and s.gpu_error is None


# ------------------------------------------------------------------- running nvidia-smi (faked)

class FakeRunner:
    def __init__(self, *results):
        self.results, self.calls = list(results), []

    def __call__(self, args, timeout):
        self.calls.append(args)
        r = self.results.pop(0)
        if isinstance(r, BaseException):
            raise r
        return subprocess.CompletedProcess(args, r[0], r[1], r[2])


def test_query_ok_and_failures():
    out, err = query_nvidia_smi(FakeRunner((0, "NVIDIA GeForce RTX 3060, 12288, 580.95.05, 8.6\n", "")),
                                executable="nvidia-smi")
    assert err is None and "RTX 3060" in out
    _, err = query_nvidia_smi(FakeRunner(FileNotFoundError()), executable="nvidia-smi")
    assert "not found" in err
    _, err = query_nvidia_smi(FakeRunner(subprocess.TimeoutExpired("nvidia-smi", 20)), executable="nvidia-smi")
    assert "did not answer within 20 s" in err
    _, err = query_nvidia_smi(FakeRunner(PermissionError(13, "Permission denied")), executable="nvidia-smi")
    assert "could not be started" in err
    failing = (9, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", "")
    _, err = query_nvidia_smi(FakeRunner(failing), executable="nvidia-smi")
    assert "exit status 9" in err and "couldn't communicate" in err


def test_query_retries_without_compute_cap_for_old_drivers():
    runner = FakeRunner((2, "", 'Field "compute_cap" is not a valid field to query.\n'),
                        (0, "NVIDIA GeForce GTX 1080, 8192, 470.199.02\n", ""))
    s = detect_system(runner=runner, nvidia_smi="nvidia-smi")
    assert "compute_cap" in runner.calls[0][1] and "compute_cap" not in runner.calls[1][1]
    assert runner.calls[1][2] == "--format=csv,noheader,nounits"
    (g,) = s.gpus
    assert g.compute_capability == (6, 1) and g.compute_capability_from == "name"
    assert any("assumed from its name" in n for n in s.notes)


def test_detect_timeout_becomes_a_warning():
    s = detect_system(runner=FakeRunner(subprocess.TimeoutExpired("nvidia-smi", 20)), nvidia_smi="nvidia-smi")
    p = make_plan(s)
    assert p.cuda_tag == "cpu" and any("did not answer" in w for w in p.warnings)


@pytest.mark.skipif(not ON_LINUX, reason="fake nvidia-smi executables are shell scripts")
def test_cli_nvidia_smi_missing(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = run_cli("plan", "--json", env={**os.environ, "PATH": str(empty)})
    assert proc.returncode == 0, proc.stderr
    p = json.loads(proc.stdout)
    assert p["cuda_tag"] == "cpu" and p["precision"] == "fp32"
    assert any("nvidia-smi was not found" in w and "very slow" in w for w in p["warnings"])


def _fake_smi(tmp_path: Path, script: str) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + textwrap.dedent(script))
    exe.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.mark.skipif(not ON_LINUX, reason="fake nvidia-smi executables are shell scripts")
def test_cli_nvidia_smi_failing(tmp_path):
    env = _fake_smi(tmp_path, """
        echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the"
        echo "latest NVIDIA driver is installed and running."
        exit 9
    """)
    p = json.loads(run_cli("plan", "--json", env=env).stdout)
    assert p["cuda_tag"] == "cpu"
    assert any("exit status 9" in w and "couldn't communicate" in w for w in p["warnings"])
    assert "couldn't communicate" in p["system"]["gpu_error"]


@pytest.mark.skipif(not ON_LINUX, reason="fake nvidia-smi executables are shell scripts")
def test_cli_old_nvidia_smi_without_compute_cap(tmp_path):
    env = _fake_smi(tmp_path, """
        case "$1" in *compute_cap*) echo 'Field "compute_cap" is not a valid field to query.' >&2; exit 2;; esac
        echo "NVIDIA GeForce RTX 3070, 8192, 581.57"
    """)
    p = json.loads(run_cli("plan", "--json", env=env).stdout)
    assert p["cuda_tag"] == "cu130"   # 581.57 >= 580 and Ampere 8.6 (from the name) is in cu130
    assert (p["attention_backend"], p["offload"]) == ("torch_varlen", "model")
    assert p["gpu"]["compute_capability"] == "8.6" and p["gpu"]["compute_capability_from"] == "name"


# --------------------------------------------------------------------------- preset thresholds

def test_preset_thresholds_agree_with_memory_pick_preset():
    torch = pytest.importorskip("torch")
    from trellis.pipelines import memory

    assert plan.RESIDENT_BUDGET_BYTES == memory.RESIDENT_BUDGET_BYTES
    cuda = torch.device("cuda")     # only its type is read when free_bytes is given: no GPU needed
    gib = 2 ** 30
    for free in (0, 1, 4 * gib, 6 * gib - 1, 6 * gib, 8 * gib, 10 * gib - 1, 10 * gib, 80 * gib):
        p = memory.pick_preset(cuda, free_bytes=free)
        assert (p.precision, p.offload, p.cfg_batch) == plan.preset_for_free_bytes(free), free
    p = memory.pick_preset(torch.device("cpu"))
    assert (p.precision, p.offload, p.cfg_batch) == plan.CPU_PRESET
    # the card's compute capability and total memory decide the precision (Pascal: fp32 from 7.5 GiB)
    assert (plan.RESIDENT_BUDGET_FP32_BYTES, plan.FP32_MIN_GIB) == (memory.RESIDENT_BUDGET_FP32_BYTES,
                                                                    memory.FP32_MIN_GIB)
    for cc in (None, (5, 2), (6, 1), (7, 0), (7, 5), (8, 6), (9, 0)):
        for total in (4 * gib, 6 * gib, 8 * gib, 11 * gib, 12 * gib, 16 * gib, 24 * gib, 80 * gib):
            for free in (total - gib // 2, total // 3, 12 * gib, 20 * gib):
                free = min(free, total)
                p = memory.pick_preset(cuda, free_bytes=free, capability=cc, total_bytes=total)
                assert (p.precision, p.offload, p.cfg_batch) == plan.preset_for_free_bytes(free, cc, total), \
                    (cc, total, free)


# -------------------------------------------------------------------------------------- licences

def test_requirements_licences_are_clean():
    """Everything in requirements_1/2.txt and what it requires: no copyleft/non-commercial licence unless allowed."""
    report = licences.check_requirements(str(ROOT / "requirements_1.txt"), str(ROOT / "requirements_2.txt"))
    assert report.missing == [], report.summary()
    assert report.rejected == [], report.summary()
    names = {licences.normalise(i.name) for i in report.checked}
    assert {"torch", "numpy", "rembg", "onnxruntime", "imageio-ffmpeg"} <= names
    for info in report.allowed:
        assert len(info.allowed_reason) > 100     # a written reason, not a bare waiver


@pytest.mark.parametrize("expression, licence, classifiers, flags", [
    ("MIT", "", [], []),
    ("Apache-2.0 WITH LLVM-exception AND BSD-3-Clause", "", [], []),
    ("MIT OR GPL-2.0-or-later", "", [], []),
    ("(MIT OR Apache-2.0) AND LGPL-2.1-only", "", [], ["LGPL"]),
    ("GPL-3.0-or-later WITH GCC-exception-3.1", "", [], ["GPL"]),
    ("AGPL-3.0-only", "", [], ["AGPL"]),
    ("CC-BY-NC-4.0", "", [], ["non-commercial"]),
    ("LicenseRef-NVIDIA-Source-Code-License", "", [], []),
    ("MIT", "", ["License :: OSI Approved :: GNU General Public License v3 (GPLv3)"], []),   # PEP 639: expression wins
    ("", "GPLv3", [], ["GPL"]),
    ("", "GNU Lesser General Public License v3 (LGPLv3)", [], ["LGPL"]),
    ("", "NVIDIA Source Code License", [], ["NSCL"]),
    ("", "Creative Commons Attribution-NonCommercial 4.0", [], ["non-commercial"]),
    ("", "The MIT License (MIT)", [], []),
    ("", "MPL-2.0 AND MIT", [], []),
    ("", "", ["License :: OSI Approved :: GNU Affero General Public License v3"], ["AGPL"]),
    ("", "", ["License :: OSI Approved :: GNU Library or Lesser General Public License (LGPL)"], ["LGPL"]),
    ("", "", ["License :: Free for non-commercial use"], ["non-commercial"]),
    ("", "", ["License :: OSI Approved :: BSD License"], []),
    # A whole licence text: only its "License:" lines and titles count, not prose that mentions the GPL.
    ("", "Copyright (c) X\nPermission is granted... this licence is GPL-compatible.\nMore text.", [], []),
    ("", "BSD 3-Clause\n\nName: libquadmath\nLicense: LGPL-2.1-or-later\n", [], ["LGPL"]),
    ("", "Bundled:\n\n                    GNU GENERAL PUBLIC LICENSE\n   Version 3\n", [], ["GPL"]),
])
def test_licence_classifier(expression, licence, classifiers, flags):
    import email.message

    meta = email.message.Message()
    if expression:
        meta["License-Expression"] = expression
    if licence:
        meta["License"] = licence
    for c in classifiers:
        meta["Classifier"] = c
    info = licences.inspect_metadata("example", "1.0", meta)
    assert info.flagged == flags, info
    assert info.rejected == bool(flags)


def test_synthetic_gpl_package_fails_the_check(tmp_path, monkeypatch):
    """A GPL package installed next to the real ones (and pulled in through Requires-Dist) is rejected."""
    for name, version, meta in (
        ("trellis_fake_app", "1.0", ("License-Expression: MIT\nRequires-Dist: trellis-fake-gpl>=1\n"
                                     "Requires-Dist: trellis-fake-extra ; extra == \"dev\"\n")),
        ("trellis_fake_gpl", "2.0", ("License: GPL-3.0-only\nClassifier: License :: OSI Approved :: "
                                     "GNU General Public License v3 (GPLv3)\nRequires-Dist: numpy\n")),
    ):
        info = tmp_path / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.4\nName: {name.replace('_', '-')}\n"
                                       f"Version: {version}\n{meta}")
    monkeypatch.syspath_prepend(str(tmp_path))
    report = licences.check_distributions(["trellis-fake-app"])
    names = [licences.normalise(i.name) for i in report.rejected]
    assert names == ["trellis-fake-gpl"], report.summary()
    assert "REJECTED trellis-fake-gpl 2.0: GPL" in report.summary()
    assert "numpy" in {licences.normalise(i.name) for i in report.checked}      # followed its Requires-Dist
    assert "trellis-fake-extra" not in report.missing                            # extras are not followed
    monkeypatch.setitem(licences.ALLOWED, "trellis-fake-gpl", "a written reason " * 8)
    assert licences.check_distributions(["trellis-fake-app"]).rejected == []


def test_requirement_names_apply_markers(tmp_path):
    f = tmp_path / "req.txt"
    f.write_text("# comment\n--index-url https://example.invalid\nnumpy==2.4.6  # why\n"
                 "spconv==2.3.8; sys_platform == \"nonexistent\"\nPillow[extra]>=1\n")
    assert licences.requirement_names(str(f)) == ["numpy", "Pillow"]
