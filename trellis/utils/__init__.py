"""The reference's utility modules at their paths: ``render_utils`` (renders, videos) and ``postprocessing_utils``
(``to_glb`` / ``to_obj`` over ``trellis.export``)."""
