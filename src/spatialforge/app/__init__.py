"""The web app (``spatialforge app``, the ``demo`` extra): see a scene's masks, depth, 3D view, scene graph
and questions in a browser, ask your own questions, and see affordance heatmaps. See docs/app.md.

``build_app(config)`` returns the Gradio page (not launched); :mod:`spatialforge.app.handlers` holds what
it does, without Gradio.
"""

from spatialforge.app.handlers import AppConfig, AppLimits

__all__ = ["AppConfig", "AppLimits", "build_app"]


def build_app(config: AppConfig | None = None):
    """The app's ``gr.Blocks`` (see :func:`spatialforge.app.ui.build_app`)."""
    from spatialforge.app.ui import build_app as _build

    return _build(config)
