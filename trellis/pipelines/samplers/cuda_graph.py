"""Replay a flow model's forward as a CUDA graph inside one sampling run.

Every step of a run calls the model on inputs of the same shape (and, for the sparse flow, the same
coordinates), so the thousands of kernel launches of one forward can be recorded once and replayed.
This removes the Python and launch overhead that leaves the GPU idle most of the time in eager mode.
Only what changes between steps is copied into the static inputs: x, t (and cond, which is usually
the same). Outputs are cloned out of the graph's memory before the next replay.
"""
from __future__ import annotations

import warnings

import torch

from ...modules.sparse import SparseTensor


class GraphedFlow:
    """The first two calls of each input shape run eagerly (the first builds the cached maps and initialises
    the kernels), the third is captured, later ones replay. A capture costs about one eager forward on top of
    its replay, so a shape used only twice (the two unguided steps at the end of a 12-step run with a CFG
    interval) is never captured."""

    EAGER_CALLS = 2

    def __init__(self, model):
        self.model = model
        self.graphs: dict = {}
        self.seen: dict = {}
        self.pool = None

    @staticmethod
    def _key(x, t, cond):
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
        # "thread_local": other threads of this process may use the GPU while this one captures. With CUDA's
        # default ("global") a batch worker's export thread, rendering and copying to the host while the
        # sampling thread captures, had its own calls fail (and broke the capture). Such a thread must still
        # not draw from the default CUDA generator while a capture runs (a private torch.Generator is fine):
        # the export draws none (tests/gpu/test_attention_gpu.py::test_graph_capture_beside_a_busy_thread).
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            out = self.model(sx, st, sc)
        if self.pool is None:
            self.pool = graph.pool()
        return graph, sx, st, sc, out

    def __call__(self, x, t, cond):
        key = self._key(x, t, cond)
        calls = self.seen.get(key, 0)
        if calls < self.EAGER_CALLS:
            self.seen[key] = calls + 1
            return self.model(x, t, cond)
        if key not in self.graphs:
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
