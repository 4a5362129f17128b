"""Gradio, imported on first use: `--help` and a usage error stay instant, and the environment that gradio
reads when it loads is set first. Every module of the page writes `gr.X`; `gr` imports gradio then."""
import os

_gradio = None


def load_gradio():
    global _gradio
    if _gradio is None:
        # Before the import: gradio reads these when it loads.
        os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        import gradio
        _gradio = gradio
    return _gradio


class _Gradio:
    """Stands for the gradio module: each attribute is read from it, importing it the first time."""

    def __getattr__(self, name):
        return getattr(load_gradio(), name)


gr = _Gradio()
