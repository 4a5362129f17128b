"""The fast-path dispatcher (trellis/fastpaths.py): order of backends, the one setting, failure handling.

Real kernel modules cannot run on a CPU, so these use small kernel modules registered for the test; the
renderers' own fallbacks are tested in test_gaussian_render.py / test_mesh_render.py and the kernels
against their twins on a GPU in tests/gpu/.
"""
import sys
import types

import pytest
import torch

from trellis import fastpaths


@pytest.fixture
def fake(monkeypatch):
    """Two kernels of one name ("triton" then "nvrtc") in modules made for the test; every backend usable."""
    calls = []
    mods = {}
    for backend in ("triton", "nvrtc"):
        mod = types.ModuleType(f"fake_{backend}_kernels")
        mod.behaviour = "ok"

        def fn(x, _backend=backend, _mod=mod):
            calls.append(_backend)
            if _mod.behaviour == "fail":
                raise RuntimeError(f"{_backend} compile error")
            if _mod.behaviour == "decline":
                return NotImplemented
            return f"{_backend}:{x}"
        mod.fn = fn
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
        mods[backend] = mod
    kernels = tuple(fastpaths.Kernel("fake", b, f"fake_{b}_kernels", "fn", "tests.test_fastpaths.twin")
                    for b in ("triton", "nvrtc"))
    monkeypatch.setitem(fastpaths.KERNELS, "fake", kernels)
    monkeypatch.setattr(fastpaths, "_disabled", {})
    monkeypatch.setattr(fastpaths, "_override", None)
    monkeypatch.delenv(fastpaths.ENV_VAR, raising=False)
    monkeypatch.setattr(fastpaths, "_backend_reason", lambda backend, device: None)
    return calls, mods


def twin(x):
    return f"twin:{x}"


def test_first_usable_backend_runs(fake):
    calls, _ = fake
    assert fastpaths.dispatch("fake", "cuda", twin, 1) == "triton:1"
    assert fastpaths.path_of("fake", "cuda") == "triton" and calls == ["triton"]


def test_the_setting_selects_a_backend_or_none(fake, monkeypatch):
    calls, _ = fake
    monkeypatch.setenv(fastpaths.ENV_VAR, "nvrtc")
    assert fastpaths.dispatch("fake", "cuda", twin, 2) == "nvrtc:2" and fastpaths.path_of("fake", "cuda") == "nvrtc"
    monkeypatch.setenv(fastpaths.ENV_VAR, "off")
    assert fastpaths.dispatch("fake", "cuda", twin, 3) == "twin:3" and calls == ["nvrtc"]
    assert "switched off" in fastpaths.reason_off("fake", "cuda")
    monkeypatch.setenv(fastpaths.ENV_VAR, "Yes")
    assert fastpaths.dispatch("fake", "cuda", twin, 4) == "triton:4"
    monkeypatch.setenv(fastpaths.ENV_VAR, "cuda-please")             # a typo is refused, not guessed
    with pytest.raises(ValueError, match="TRELLIS_FAST_PATHS='cuda-please' is not a known value: use on"):
        fastpaths.dispatch("fake", "cuda", twin, 4)
    monkeypatch.setenv(fastpaths.ENV_VAR, "on")
    fastpaths.set_enabled(False)                                     # the in-process override wins
    try:
        assert fastpaths.dispatch("fake", "cuda", twin, 5) == "twin:5"
    finally:
        fastpaths.set_enabled(None)


def test_a_failing_kernel_is_switched_off_and_the_next_path_redoes_the_call(fake):
    calls, mods = fake
    mods["triton"].behaviour = "fail"
    resets = []
    with pytest.warns(RuntimeWarning, match="fake:triton"):
        out = fastpaths.dispatch("fake", "cuda", twin, 6, on_failure=lambda: resets.append(1))
    assert out == "nvrtc:6" and resets == [1] and "fake:triton" in fastpaths._disabled
    assert fastpaths.dispatch("fake", "cuda", twin, 7) == "nvrtc:7"          # not tried again
    assert calls == ["triton", "nvrtc", "nvrtc"]
    mods["nvrtc"].behaviour = "fail"
    with pytest.warns(RuntimeWarning, match="fake:nvrtc"):
        assert fastpaths.dispatch("fake", "cuda", twin, 8) == "twin:8"
    assert fastpaths.path_of("fake", "cuda") == "pytorch"
    assert "switched off after a failure" in fastpaths.reason_off("fake", "cuda")


def test_declining_inputs_keeps_the_kernel_on(fake):
    calls, mods = fake
    mods["triton"].behaviour = "decline"
    assert fastpaths.dispatch("fake", "cuda", twin, 9) == "nvrtc:9"
    assert not fastpaths._disabled and fastpaths.path_of("fake", "cuda") == "triton"


def test_fatal_errors_are_raised_not_retried(fake, monkeypatch):
    calls, mods = fake

    def oom(x):
        calls.append("oom")
        raise torch.OutOfMemoryError("CUDA out of memory")
    monkeypatch.setattr(mods["triton"], "fn", oom)
    with pytest.raises(torch.OutOfMemoryError):
        fastpaths.dispatch("fake", "cuda", twin, 10)
    assert calls == ["oom"] and not fastpaths._disabled


def test_status_and_the_line_for_the_ui(fake, monkeypatch):
    monkeypatch.setattr(fastpaths, "_backend_reason",
                        lambda backend, device: "Triton is not installed" if backend == "triton" else None)
    monkeypatch.setattr(fastpaths, "KERNELS", {"fake": fastpaths.KERNELS["fake"]})
    st = fastpaths.status("cuda")
    assert st["fast"] and st["paths"] == {"fake": "nvrtc"} and st["kernels"] == {"fake": None}
    assert fastpaths.describe("cuda") == "fast paths on (NVRTC kernels)"
    monkeypatch.setattr(fastpaths, "_backend_reason", lambda backend, device: f"no {backend}")
    st = fastpaths.status("cuda")
    assert not st["fast"] and st["paths"] == {"fake": "pytorch"}
    assert fastpaths.describe("cuda") == "slower path: PyTorch twins (triton: no triton; nvrtc: no nvrtc)"
    assert fastpaths.describe("cpu") == "CPU: PyTorch paths (no GPU kernels)"


def test_a_kernel_asked_for_on_demand_does_not_make_the_line_partly_fast(fake, monkeypatch):
    """Windows without Triton: every default kernel has its NVRTC version; the compiled flow block (only with
    --compile, which needs Triton anyway) has none, and the line says so apart instead of "partly fast"."""
    monkeypatch.setattr(fastpaths, "_backend_reason",
                        lambda backend, device: "Triton is not installed" if backend == "triton" else None)
    compiled = fastpaths.Kernel("flow_block", "triton", "fake_triton_kernels", "fn", "tests.test_fastpaths.twin")
    monkeypatch.setattr(fastpaths, "KERNELS", {"fake": fastpaths.KERNELS["fake"], "flow_block": (compiled,)})
    st = fastpaths.status("cuda")
    assert st["fast"] and st["reason"] is None
    assert st["paths"] == {"fake": "nvrtc", "flow_block": "pytorch"}
    assert st["kernels"]["flow_block"] == "triton: Triton is not installed"
    assert fastpaths.describe("cuda") == "fast paths on (NVRTC kernels; flow_block off: triton: Triton is not installed)"
    monkeypatch.setattr(fastpaths, "_backend_reason", lambda backend, device: f"no {backend}")
    assert fastpaths.describe("cuda") == "slower path: PyTorch twins (triton: no triton; nvrtc: no nvrtc)"


def test_the_real_kernel_packages_import_without_a_gpu():
    for kernels in fastpaths.KERNELS.values():
        for k in kernels:
            assert callable(getattr(fastpaths._import_kernel_module(k.module), k.function))
    assert fastpaths.path_of("mesh_raster", "cpu") == "pytorch"


def test_paths_taken_names_the_path_that_answered_not_the_first_choice(fake):
    calls, mods = fake
    assert fastpaths.dispatch("fake", "cuda", twin, 1) == "triton:1"          # no block open: nothing kept
    with fastpaths.paths_taken() as taken:
        fastpaths.dispatch("fake", "cuda", twin, 2)
    assert taken == {"fake": "triton"}
    mods["triton"].behaviour = "decline"                                      # the next backend answers
    with fastpaths.paths_taken() as taken:
        assert fastpaths.dispatch("fake", "cuda", twin, 3) == "nvrtc:3"
    assert taken == {"fake": "nvrtc"} and fastpaths.path_of("fake", "cuda") == "triton"
    mods["nvrtc"].behaviour = "decline"                                       # every kernel declines: the twin
    with fastpaths.paths_taken() as outer:
        with fastpaths.paths_taken() as inner:
            assert fastpaths.dispatch("fake", "cuda", twin, 4) == "twin:4"
        mods["triton"].behaviour = "ok"
        fastpaths.dispatch("fake", "cuda", twin, 5)                           # the last dispatch of a name counts
        assert inner == {"fake": "pytorch"} and outer == {"fake": "triton"}
    assert not fastpaths._disabled


def test_paths_taken_names_the_twin_after_a_kernel_fails(fake):
    calls, mods = fake
    mods["triton"].behaviour = mods["nvrtc"].behaviour = "fail"
    with fastpaths.paths_taken() as taken, pytest.warns(RuntimeWarning, match="fake:(triton|nvrtc)"):
        assert fastpaths.dispatch("fake", "cuda", twin, 6) == "twin:6"
    assert taken == {"fake": "pytorch"} and calls == ["triton", "nvrtc"]
    assert fastpaths.path_of("fake", "cuda") == "pytorch"


def test_paths_taken_is_each_threads_own(fake):
    """The app runs jobs on worker threads: a block sees its own thread's dispatches only."""
    import threading

    calls, mods = fake
    mods["triton"].behaviour = "decline"
    opened, dispatched, seen = threading.Event(), threading.Event(), {}

    def worker():
        with fastpaths.paths_taken() as mine:
            opened.set()
            dispatched.wait(10)                  # the main thread dispatches while this block is open
            seen.update(mine)
    t = threading.Thread(target=worker)
    t.start()
    opened.wait(10)
    with fastpaths.paths_taken() as taken:
        fastpaths.dispatch("fake", "cuda", twin, 7)
    dispatched.set()
    t.join(10)
    assert taken == {"fake": "nvrtc"} and seen == {}
