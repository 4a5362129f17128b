"""The attention kernel each call ran, and why, is noted per stage; a variable of the reference's that overrides our
auto choice is named, in the notes and in a line for the server's start (a real process with the variable set)."""
import json
import os
import subprocess
import sys

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
