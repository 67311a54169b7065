"""The Gradio page of ``spatialforge app``: tabs Scene, Ask and Affordance (see docs/app.md).

:func:`build_app` builds the page and loads nothing: the scene state lives per browser session
(``gr.State``), models (perception, AffordanceCLIP) load at their first use and are kept per app.
Every handler turns a :class:`~spatialforge.errors.SpatialForgeError` into the page's error box
(``#sf-status``, one line), never into a server error.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from spatialforge.app.handlers import (
    GRAPH_HEADERS,
    QA_HEADERS,
    STEP_HEADERS,
    AppConfig,
    SceneView,
    affordance,
    analyse_scene,
    answer_question,
    graph_rows,
    load_synthetic,
    load_upload,
    qa_rows,
    summary_markdown,
)
from spatialforge.errors import SpatialForgeError

__all__ = ["MAX_3D_POINTS", "build_app"]

#: points of the interactive 3D view (enough to see the scene; the page stays light)
MAX_3D_POINTS = 20_000
_NO_SCENE = "Pick a synthetic scene or upload one on the **Scene** tab first."


def _error(message: str) -> str:
    return f"**Error:** {message}"


class _Models:
    """Models the app loads at their first use (one per app, shared by its sessions, guarded by a lock)."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._afford: Any = None

    def afford(self) -> Any:
        from spatialforge.afford.predict import AffordancePredictor

        with self._lock:
            if self._afford is None:
                self._afford = AffordancePredictor.from_checkpoint(str(self.config.afford_checkpoint),
                                                                   device=self.config.device)
            return self._afford


def _scene_outputs(view: SceneView) -> tuple[Any, ...]:
    from spatialforge.viz import render_depth, render_overlay
    from spatialforge.viz3d import scene_figure

    scene = view.scene
    model = scene.provenance.get("depth_model", scene.provenance.get("depth_file", ""))
    return (summary_markdown(view), render_overlay(scene), render_depth(scene.depth, title=f"depth: {model}"),
            scene_figure(scene, view.graph, max_points=MAX_3D_POINTS),
            graph_rows(view), qa_rows(view), view)


def _empty_outputs(message: str) -> tuple[Any, ...]:
    return _error(message), None, None, None, [], [], None


def build_app(config: AppConfig | None = None) -> Any:
    """The app's ``gr.Blocks`` (not launched). No network, no model loads here."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from spatialforge._optional import require

    gr = require("gradio", extra="demo", feature="spatialforge app")
    require("plotly", extra="viz3d", feature="the app's 3D view")
    config = config or AppConfig()
    models = _Models(config)

    def show_synthetic(index: Any, seed: Any) -> tuple[Any, ...]:
        try:
            scene = load_synthetic(index, seed)
            return _scene_outputs(analyse_scene(scene, f"synthetic, seed {int(seed)}", seed=config.seed))
        except SpatialForgeError as exc:
            return _empty_outputs(str(exc))

    def show_upload(file: Any) -> tuple[Any, ...]:
        if file is None:
            return _empty_outputs("no file uploaded")
        path = Path(file if isinstance(file, str) else getattr(file, "name", file))
        label = Path(getattr(file, "orig_name", None) or path.name).name
        try:
            scene, source = load_upload(path, config, label=label)
            return _scene_outputs(analyse_scene(scene, source, seed=config.seed))
        except SpatialForgeError as exc:
            return _empty_outputs(str(exc))

    def ask(view: SceneView | None, question: str) -> tuple[str, list[list[Any]]]:
        if view is None:
            return _error(_NO_SCENE), []
        try:
            answer, steps = answer_question(view, question)
        except SpatialForgeError as exc:
            return _error(str(exc)), []
        return f"**Answer (from the 3D scene graph):** {answer}", steps

    def afford(view: SceneView | None, action: str) -> tuple[str, Any]:
        if config.afford_checkpoint is None:
            return _error(_NO_AFFORD), None
        if view is None:
            return _error(_NO_SCENE), None
        try:
            image, info = affordance(view, action, models.afford())
        except SpatialForgeError as exc:
            return _error(str(exc)), None
        on = f" on #{info['object']} {info['object_name']}" if info["object"] is not None else " (background)"
        x, y, z = info["point"]
        return (f"hottest point for **{info['action']}**: pixel ({info['pixel'][0]}, {info['pixel'][1]}), heat "
                f"{info['heat']:.2f}{on}; in 3D (gravity frame, m): x {x:.3f}, y {y:.3f}, z {z:.3f}"), image

    photo_note = (f"photos go through the perception models of {config.perception_source}"
                  if config.perception is not None else
                  "photos need the perception models: start with `--config perception.toml`")
    with gr.Blocks(title="spatialforge", analytics_enabled=False) as demo:
        gr.Markdown("# spatialforge\nMetric 3D scene graphs and spatial questions from RGB-D scenes and photos.")
        view_state = gr.State(None)
        with gr.Tab("Scene"):
            with gr.Row():
                with gr.Column(scale=1):
                    gr.Markdown("**Built-in synthetic scene** (offline, exact depth)")
                    index = gr.Number(value=0, precision=0, minimum=0, label="scene index", elem_id="sf-index")
                    seed = gr.Number(value=0, precision=0, minimum=0, label="seed", elem_id="sf-seed")
                    synth_btn = gr.Button("Show synthetic scene", variant="primary", elem_id="sf-synth")
                with gr.Column(scale=1):
                    gr.Markdown(f"**Upload** an RGB-D scene folder as .zip (image, depth, instances.png, "
                                f"camera.json, objects.json; docs/formats.md) or a photo ({photo_note}).")
                    upload = gr.File(label="scene .zip or photo", elem_id="sf-upload")
            status = gr.Markdown("Pick a synthetic scene or upload one.", elem_id="sf-status")
            with gr.Row():
                overlay = gr.Image(label="masks and captions", type="pil", elem_id="sf-overlay")
                depth = gr.Image(label="metric depth", type="pil", elem_id="sf-depth")
            plot = gr.Plot(label="3D view (gravity frame: z up, metres)", elem_id="sf-plot")
            graph_table = gr.Dataframe(headers=GRAPH_HEADERS, label="3D scene graph (centres in the gravity frame)",
                                       interactive=False, elem_id="sf-graph")
            qa_table = gr.Dataframe(headers=QA_HEADERS, label="generated questions with exact values",
                                    interactive=False, wrap=True, elem_id="sf-qa")
        with gr.Tab("Ask"):
            gr.Markdown("Ask about the current scene, naming objects as the scene-graph table does (or `#id`): "
                        "distances (also horizontal, vertical), clock directions, height, width, depth, distance "
                        "from the camera, elevation, or compare two objects (taller, wider, closer to the camera).")
            question = gr.Textbox(label="your question", placeholder="How far is the chair from the table?",
                                  elem_id="sf-question")
            ask_btn = gr.Button("Ask", variant="primary", elem_id="sf-ask")
            answer = gr.Markdown(elem_id="sf-answer")
            steps = gr.Dataframe(headers=STEP_HEADERS, label="measurements used", interactive=False,
                                 elem_id="sf-steps")
        with gr.Tab("Affordance"):
            if config.afford_checkpoint is None:
                gr.Markdown(_NO_AFFORD, elem_id="sf-afford-note")
            else:
                gr.Markdown(f"AffordanceCLIP checkpoint: `{config.afford_checkpoint}` (loads at the first action).")
            action = gr.Textbox(label="action", placeholder="pour, cut with, hold", elem_id="sf-action")
            afford_btn = gr.Button("Show affordance", variant="primary", elem_id="sf-afford")
            afford_info = gr.Markdown(elem_id="sf-afford-info")
            heat = gr.Image(label="heatmap", type="pil", elem_id="sf-heat")

        outputs = [status, overlay, depth, plot, graph_table, qa_table, view_state]
        synth_btn.click(show_synthetic, inputs=[index, seed], outputs=outputs)
        upload.upload(show_upload, inputs=[upload], outputs=outputs)
        ask_btn.click(ask, inputs=[view_state, question], outputs=[answer, steps])
        question.submit(ask, inputs=[view_state, question], outputs=[answer, steps])
        afford_btn.click(afford, inputs=[view_state, action], outputs=[afford_info, heat])
    return demo


_NO_AFFORD = ("No AffordanceCLIP checkpoint is configured: start the app with `--afford-checkpoint FOLDER` (a "
              "checkpoint of `spatialforge afford train`, docs/affordance.md) to see heatmaps here.")
