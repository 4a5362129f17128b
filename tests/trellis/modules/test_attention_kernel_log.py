"""The attention kernel each call ran, and why, is noted per stage; a variable of the reference's that overrides our
auto choice is named, in the notes and in a line for the server's start (a real process with the variable set)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from trellis.modules.attention import kernel_log
from trellis.modules.attention.functional import dense_attention, varlen_attention
from trellis.pipelines.memory import StageTracker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_a_stage_counts_its_attention_calls_and_nothing_outside_is_noted():
    q = torch.randn(1, 8, 2, 16)
    x = torch.randn(10, 2, 16)
    dense_attention(q, q, q)                            # no log open: nothing kept anywhere
    tracker = StageTracker(torch.device("cpu"))
    with tracker.stage("flow"):
        dense_attention(q, q, q)
        varlen_attention(x, x, x, [4, 6], [4, 6])
        varlen_attention(x, x, x, [5, 5], [5, 5], backend="naive")
    with tracker.stage("decode"):
        pass
    flow, decode = tracker.as_dicts()
    assert flow["attention"] == {"sdpa": {"calls": 2, "why": "auto"}, "naive": {"calls": 1, "why": "auto"}}, flow
    assert decode["attention"] is None
    with kernel_log.recording() as log:
        with kernel_log.recording() as inner:
            dense_attention(q, q, q)
        assert inner == {"sdpa": {"calls": 1, "why": "auto"}} and log == {}


def test_the_reference_variable_is_named_as_why_and_in_the_start_line():
    code = ("import json, torch\n"
            "from trellis.core import backends\n"
            "from trellis.modules.attention import kernel_log\n"
            "from trellis.modules.attention.functional import dense_attention, varlen_attention\n"
            "q = torch.randn(1, 4, 1, 8)\n"
            "with kernel_log.recording() as log:\n"
            "    dense_attention(q, q, q)\n"
            "    varlen_attention(q[0], q[0], q[0], [4], [4])\n"
            "print(json.dumps({'log': log, 'line': backends.attention_override_line(),\n"
            "                  'health': backends.describe_attention(16384)}))\n")
    env = {**os.environ, "ATTN_BACKEND": "naive", "PYTHONPATH": ROOT}
    env.pop("SPARSE_ATTN_BACKEND", None)
    out = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                    check=True, timeout=120).stdout)
    # SPARSE_ATTN_BACKEND unset follows ATTN_BACKEND, as in the reference
    assert out["log"] == {"naive": {"calls": 2, "why": "ATTN_BACKEND=naive"}}, out
    assert out["health"]["dense"] == {"backend": "naive", "set_by": "ATTN_BACKEND"}
    assert out["health"]["varlen"] == {"backend": "naive", "set_by": "ATTN_BACKEND"}
    assert out["line"].startswith("attention: ATTN_BACKEND=naive set in the environment overrides"), out["line"]
    env.pop("ATTN_BACKEND")
    out = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                    check=True, timeout=120).stdout)
    assert out["line"] is None and out["log"] == {"sdpa": {"calls": 2, "why": "auto"}}, out
    assert out["health"]["varlen"] == {"backend": "auto", "set_by": "default"}


def test_8bit_calls_are_noted_under_the_path_that_answered(monkeypatch):
    """The dispatcher's first choice for 8-bit attention is a kernel; when it declines the inputs (the Triton
    kernel: heads narrower than 32) or fails (switched off, the call redone), the log names the twin that answered.
    The kernel here is registered for the test (a real one cannot run on a CPU)."""
    import types

    from trellis import fastpaths
    from trellis.modules.attention import attention_precision
    from trellis.modules.attention.quantised import attention_8bit_torch

    mod = types.ModuleType("test_attention_8bit_kernel")
    mod.behaviour = "answer"

    def kernel(*args):
        if mod.behaviour == "decline":
            return NotImplemented
        if mod.behaviour == "fail":
            raise RuntimeError("kernel launch failed")
        return attention_8bit_torch(*args)          # the twin's result, answered by "the kernel"
    mod.attention_8bit = kernel
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(fastpaths.KERNELS, "attention_8bit", (
        fastpaths.Kernel("attention_8bit", "triton", mod.__name__, "attention_8bit",
                         "trellis.modules.attention.quantised.attention_8bit_torch"),))
    monkeypatch.setattr(fastpaths, "_disabled", {})
    monkeypatch.setattr(fastpaths, "_override", None)
    monkeypatch.delenv(fastpaths.ENV_VAR, raising=False)
    monkeypatch.setattr(fastpaths, "_backend_reason", lambda backend, device: None)
    assert fastpaths.path_of("attention_8bit", "cpu") == "triton"

    q = torch.randn(1, 8, 2, 16)
    x = torch.randn(10, 2, 16)

    def calls_noted():
        with kernel_log.recording() as log, attention_precision("8bit"):
            dense_attention(q, q, q)
            varlen_attention(x, x, x, [4, 6], [4, 6])
        return {name: e["calls"] for name, e in log.items()}

    assert calls_noted() == {"8bit_triton": 2}
    mod.behaviour = "decline"
    assert calls_noted() == {"8bit_twin": 2} and fastpaths.path_of("attention_8bit", "cpu") == "triton"
    mod.behaviour = "fail"
    with kernel_log.recording() as log, attention_precision("8bit"), \
            pytest.warns(RuntimeWarning, match="attention_8bit:triton"):
        dense_attention(q, q, q)
    assert {name: e["calls"] for name, e in log.items()} == {"8bit_twin": 1}
    assert fastpaths.path_of("attention_8bit", "cpu") == "pytorch"      # switched off: the twin from now on
    assert calls_noted() == {"8bit_twin": 2}
