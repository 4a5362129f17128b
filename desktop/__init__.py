"""Trellis Desktop: the app around the `trellis` library (UI, REST API, CLI, job runner).

The library never imports this package; data flows from here into `trellis`, never back.
"""
