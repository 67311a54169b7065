"""The web app (``spatialforge app``, the ``demo`` extra): see a scene's masks, depth, 3D view, scene graph
and questions in a browser, ask your own questions (answered from the scene graph and, with ``--vlm``, by
a VLM beside it), and see affordance heatmaps lifted into 3D. See docs/app.md.

``build_app(config)`` returns the Gradio page (not launched); :mod:`spatialforge.app.handlers` holds what
it does, without Gradio, and :class:`AppModels` the models it loads at their first use, once per app.
"""

from spatialforge.app.handlers import AppConfig, AppLimits, AppModels

__all__ = ["AppConfig", "AppLimits", "AppModels", "build_app"]


def build_app(config: AppConfig | None = None, models: AppModels | None = None):
    """The app's ``gr.Blocks`` (see :func:`spatialforge.app.ui.build_app`)."""
    from spatialforge.app.ui import build_app as _build

    return _build(config, models)
