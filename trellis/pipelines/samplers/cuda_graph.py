"""Replay a flow model's forward as a CUDA graph inside one sampling run.

Every step of a run calls the model on inputs of the same shape (and, for the sparse flow, the same
coordinates), so the thousands of kernel launches of one forward can be recorded once and replayed.
This removes the Python and launch overhead that leaves the GPU idle most of the time in eager mode.
Only what changes between steps is copied into the static inputs: x, t (and cond, which is usually
the same). Outputs are cloned out of the graph's memory before the next replay.
"""
from __future__ import annotations

import warnings
import weakref

import torch

from ...core.concurrency import side_stream
from ...modules.sparse import SparseTensor

# Models captured at least once in this process (GraphedFlow.EAGER_CALLS / WARM_EAGER_CALLS).
_WARM: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()
# One capture stream per device, reused by every capture (cuBLAS keeps a workspace per stream).
_CAPTURE_STREAMS: dict[int, torch.cuda.Stream] = {}


def capture(graph: "torch.cuda.CUDAGraph", pool, fn):
    """Record `fn()`'s GPU work into `graph` (memory from `pool`, or a new pool when None) and return its result.

    What ``torch.cuda.graph`` does, without its preamble: it synchronises the device and empties PyTorch's
    device and pinned-host caches before every capture. Here the capture stream waits for the current stream
    on the GPU instead, so the host records the graph while the GPU still runs the steps queued before it,
    and the cached blocks stay cached: after a capture in the middle of a run (the SLat flow's per-run
    graphs) the eager steps, the decoders and the next job would otherwise pay cudaMalloc again for memory the
    caching allocator had just given back.

    "thread_local": other threads of this process may use the GPU while this one captures. With CUDA's default
    ("global") a batch worker's export thread, rendering and copying to the host while the sampling thread
    captures, had its own calls fail (and broke the capture). Such a thread must still not draw from the
    default CUDA generator while a capture runs (a private torch.Generator is fine): the export draws none
    (tests/gpu/test_attention_gpu.py::test_graph_capture_beside_a_busy_thread)."""
    device = torch.cuda.current_device()
    stream = _CAPTURE_STREAMS.get(device)
    if stream is None:
        stream = _CAPTURE_STREAMS[device] = side_stream(device)
    current = torch.cuda.current_stream(device)
    stream.wait_stream(current)           # the captured work follows what is queued (on the GPU, no host wait)
    with torch.cuda.stream(stream):
        if pool is None:
            graph.capture_begin(capture_error_mode="thread_local")
        else:
            graph.capture_begin(pool, capture_error_mode="thread_local")
        try:
            out = fn()
        finally:
            graph.capture_end()
    current.wait_stream(stream)
    return out


class GraphedFlow:
    """The first calls of each input shape run eagerly (the first builds the cached maps and initialises the
    kernels), the next is captured, later ones replay. A capture costs about one eager forward of host time on
    top of its replay, so a shape used only twice (the two unguided steps at the end of a 12-step run with a CFG
    interval) is not worth capturing for one run.

    Two eager calls per shape until this model has been captured once in this process (lazy initialisations:
    the cuBLAS workspace of the capture stream, kernels compiled at first use); one afterwards (the SLat flow's
    per-run graphs: every job brings new shapes, and the first call of a shape is only needed for the tensor's
    cached maps and the shape's own first-use work, which it does).

    `steps_left` (set by the sampler before each step: the steps after this one) keeps a graph made for one run
    from being captured when fewer than ``MIN_STEPS_LEFT`` steps could replay it. A ``kept`` one (held by the
    pipeline from job to job) captures regardless: the next jobs replay it."""

    EAGER_CALLS = 2          # per shape, before this model's first capture in this process
    WARM_EAGER_CALLS = 1     # per shape, after it
    MIN_STEPS_LEFT = 2

    def __init__(self, model, kept: bool = False):
        self.model, self.kept = model, kept
        self.graphs: dict = {}
        self.seen: dict = {}
        self.pool = None
        self.steps_left: int | None = None

    @staticmethod
    def key(x, t, cond):
        if isinstance(x, SparseTensor):
            return ("sparse", tuple(x.feats.shape), x.feats.dtype, id(x.coords), tuple(cond.shape))
        return ("dense", tuple(x.shape), x.dtype, tuple(cond.shape))

    def _capture(self, x, t, cond):
        if isinstance(x, SparseTensor):
            # Same coordinates, layout and cache (neighbour maps, windows, ... are built in the warm-up).
            sx = SparseTensor(x.feats.clone(), x.coords, layout=x.layout, cache=x.cache)
        else:
            sx = x.clone()
        st, sc = t.clone(), cond.clone()
        graph = torch.cuda.CUDAGraph()
        out = capture(graph, self.pool, lambda: self.model(sx, st, sc))
        if self.pool is None:
            self.pool = graph.pool()
        _WARM.add(self.model)
        return graph, sx, st, sc, out

    def __call__(self, x, t, cond):
        key = self.key(x, t, cond)
        calls = self.seen.get(key, 0)
        if calls < (self.WARM_EAGER_CALLS if self.model in _WARM else self.EAGER_CALLS):
            self.seen[key] = calls + 1
            return self.model(x, t, cond)
        if key not in self.graphs:
            if not self.kept and self.steps_left is not None and self.steps_left < self.MIN_STEPS_LEFT:
                return self.model(x, t, cond)
            try:
                self.graphs[key] = self._capture(x, t, cond)
            except RuntimeError as err:   # an op that cannot be captured: stay eager, say so once
                warnings.warn(f"CUDA graph capture failed ({err}); running this model eagerly.", RuntimeWarning,
                              stacklevel=2)
                self.graphs[key] = None
        entry = self.graphs[key]
        if entry is None:
            return self.model(x, t, cond)
        graph, sx, st, sc, out = entry
        if isinstance(x, SparseTensor):
            sx.feats.copy_(x.feats)
        else:
            sx.copy_(x)
        st.copy_(t)
        sc.copy_(cond)
        graph.replay()
        if isinstance(out, SparseTensor):
            return x.replace(out.feats.clone())
        return out.clone()
