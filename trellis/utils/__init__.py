"""Utilities: low-discrepancy sequences, rendering and post-processing helpers."""
