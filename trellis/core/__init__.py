"""The library's bottom layer: what every other part may use and what uses nothing of theirs.

``callbacks`` (cancel checks and progress callbacks), ``device`` (free / release / cap device memory),
``backends`` (which attention and sparse-conv implementation runs), ``lowdiscrepancy`` (Hammersley
points), ``concurrency`` (the one module that starts threads, child processes and CUDA streams). Nothing here imports from ``trellis``; tests/test_layers.py holds the package to that.
"""
