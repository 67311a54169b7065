"""The Gradio page of ``spatialforge app``: tabs Scene, Ask and Affordance (see docs/app.md).

:func:`build_app` builds the page and loads nothing: the scene state lives per browser session
(``gr.State``), models (perception, AffordanceCLIP, the VLM) load at their first use, once per app
(:class:`~spatialforge.app.handlers.AppModels`). Every handler turns a
:class:`~spatialforge.errors.SpatialForgeError` into one line in the page (``#sf-status`` on the Scene
tab, the answer boxes on the Ask tab, ``#sf-afford-info`` on the Affordance tab), never into a server error.
"""

from __future__ import annotations

import html
import os
import re
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from spatialforge.app.handlers import (
    AFFORD_HEADERS,
    GRAPH_HEADERS,
    NO_AFFORD,
    NO_VLM,
    QA_HEADERS,
    STEP_HEADERS,
    AppConfig,
    AppModels,
    SceneView,
    VLMAnswer,
    affordance,
    analyse_scene,
    ask_vlm,
    graph_rows,
    load_synthetic,
    load_upload,
    qa_rows,
    scene_answer,
    short_reply,
    summary_markdown,
)
from spatialforge.errors import SpatialForgeError

__all__ = ["API_ENDPOINTS", "MAX_3D_POINTS", "afford_outputs", "ask_outputs", "build_app"]

#: the app's named API endpoints (``gradio_client.Client(url).predict(..., api_name="/ask")``)
API_ENDPOINTS = ("/show_synthetic", "/show_upload", "/ask", "/afford")
#: points of the interactive 3D view (enough to see the scene; the page stays light)
MAX_3D_POINTS = 20_000
_NO_SCENE = "Pick a synthetic scene or upload one on the **Scene** tab first."


def _error(message: str) -> str:
    return f"**Error:** {message}"


def _plain(text: str) -> str:
    """``text`` shown as it is in a Markdown box: no HTML, no Markdown emphasis, links or code from it."""
    return re.sub(r"([\\`*_\[\]#|~])", r"\\\1", html.escape(str(text), quote=False))


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


def _vlm_markdown(result: VLMAnswer) -> str:
    """The VLM's box: its name, the verdict of the evaluation's parser, the reply (escaped), or its error."""
    name = _plain(result.model)
    if result.error is not None:
        return f"**VLM ({name}):** no answer: {_plain(result.error)}"
    reply = _plain(short_reply(result.reply or ""))
    return f"**VLM ({name}):** {_plain(result.verdict)}  \nits reply: “{reply}”"


def _afford_plot(view: SceneView, result: Any) -> Any:
    from spatialforge.viz3d import affordance_figure

    return affordance_figure(view.scene, view.graph, result.regions, names=result.names, max_points=MAX_3D_POINTS,
                             title=f"'{result.action}': {len(result.regions)} regions (gravity frame, metres)")


def ask_outputs(view: SceneView | None, question: str, config: AppConfig, models: AppModels
                ) -> tuple[str, str, list[list[Any]]]:
    """The Ask tab's outputs: the scene graph's answer, the VLM's box (empty without ``--vlm``), the steps.

    A question the scene graph cannot read still goes to the VLM (the page says so); a VLM that fails gives
    one line in its box, the scene graph's answer stays.
    """
    if view is None:
        return _error(_NO_SCENE), "", []
    answer, steps = None, []
    try:
        answer = scene_answer(view, question)
        graph_text, steps = f"**Answer (from the 3D scene graph):** {_plain(answer.text)}", answer.steps
    except SpatialForgeError as exc:
        graph_text = _error(_plain(str(exc)))
    if config.vlm is None or not " ".join(str(question or "").split()):
        return graph_text, "", steps
    try:
        model = models.vlm()
    except SpatialForgeError as exc:
        return graph_text, f"**VLM ({_plain(config.vlm)}):** cannot be used: {_plain(str(exc))}", steps
    with models.using("vlm") if callable(getattr(model, "load", None)) else nullcontext():  # a local model: serial
        result = ask_vlm(view, question, model, answer)
    text = _vlm_markdown(result)
    if answer is None and result.error is None:
        text += "  \n(the scene graph could not read this question: the VLM's reply is shown as it is, not compared)"
    return graph_text, text, steps


def afford_outputs(view: SceneView | None, action: str, threshold: Any, config: AppConfig, models: AppModels
                   ) -> tuple[str, Any, Any, list[list[Any]]]:
    """The Affordance tab's outputs: a line about the regions, the marked heatmap, the 3D plot, the region table."""
    if config.afford_checkpoint is None:
        return _error(NO_AFFORD), None, None, []
    if view is None:
        return _error(_NO_SCENE), None, None, []
    try:
        predictor = models.afford()
        with models.using("afford"):
            result = affordance(view, action, predictor, threshold)
    except SpatialForgeError as exc:
        return _error(_plain(str(exc))), None, None, []
    n = len(result.regions)
    info = (f"**{_plain(result.action)}**: {n} region{'s' if n != 1 else ''} (pixels with heat >= "
            f"{result.relative_threshold:g} x the peak {result.peak:.2f} over pixels with valid depth, on an object); "
            "the marked pixels are the interaction points; coordinates in the gravity frame (x right, y forward, "
            "z up, metres)")
    return info, result.image, _afford_plot(view, result), result.rows()


def build_app(config: AppConfig | None = None, models: AppModels | None = None) -> Any:
    """The app's ``gr.Blocks`` (not launched). No network, no model loads here.

    ``models``: the :class:`AppModels` the page uses (default: a new one for ``config``); each model is
    built at its first use, once.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from spatialforge._optional import require

    gr = require("gradio", extra="demo", feature="spatialforge app")
    require("plotly", extra="viz3d", feature="the app's 3D view")
    config = config or AppConfig()
    models = models or AppModels(config)

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
            scene, source = load_upload(path, config, label=label, models=models)
            return _scene_outputs(analyse_scene(scene, source, seed=config.seed))
        except SpatialForgeError as exc:
            return _empty_outputs(str(exc))

    def ask(view: SceneView | None, question: str) -> tuple[str, str, list[list[Any]]]:
        return ask_outputs(view, question, config, models)

    def afford(view: SceneView | None, action: str, threshold: Any) -> tuple[str, Any, Any, list[list[Any]]]:
        return afford_outputs(view, action, threshold, config, models)

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
            status = gr.Markdown("Pick a synthetic scene or upload one.", label="status", elem_id="sf-status")
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
            if config.vlm is None:
                gr.Markdown(NO_VLM, elem_id="sf-vlm-note")
            else:
                gr.Markdown(f"VLM `{config.vlm}` answers the same question about the scene's image (it loads at the "
                            "first question); the evaluation's parser reads its reply and compares it with the "
                            "scene graph's value.", elem_id="sf-vlm-note")
            question = gr.Textbox(label="your question", placeholder="How far is the chair from the table?",
                                  elem_id="sf-question")
            ask_btn = gr.Button("Ask", variant="primary", elem_id="sf-ask")
            with gr.Row():
                answer = gr.Markdown(label="scene-graph answer", elem_id="sf-answer")
                vlm_answer = gr.Markdown(label="VLM answer", elem_id="sf-vlm-answer")
            steps = gr.Dataframe(headers=STEP_HEADERS, label="measurements used", interactive=False,
                                 elem_id="sf-steps")
        with gr.Tab("Affordance"):
            if config.afford_checkpoint is None:
                gr.Markdown(NO_AFFORD, elem_id="sf-afford-note")
            else:
                gr.Markdown(f"AffordanceCLIP checkpoint: `{config.afford_checkpoint}` (loads at the first action). "
                            "The heatmap is lifted into 3D with the scene's depth and masks: per object, the region, "
                            "its area, the interaction point and the approach direction.", elem_id="sf-afford-note")
            with gr.Row():
                action = gr.Textbox(label="action", placeholder="pour, cut with, hold", elem_id="sf-action", scale=3)
                threshold = gr.Slider(0.05, 1.0, value=0.5, step=0.05, label="region threshold (fraction of the peak "
                                      "heat)", elem_id="sf-afford-threshold", scale=2)
            afford_btn = gr.Button("Show affordance", variant="primary", elem_id="sf-afford")
            afford_info = gr.Markdown(label="affordance summary", elem_id="sf-afford-info")
            with gr.Row():
                heat = gr.Image(label="heatmap with the interaction points", type="pil", elem_id="sf-heat", scale=2)
                afford_plot = gr.Plot(label="affordance regions in 3D (heat colours, interaction point, approach)",
                                      elem_id="sf-afford-plot", scale=3)
            afford_table = gr.Dataframe(headers=AFFORD_HEADERS, label="affordance regions (gravity frame)",
                                        interactive=False, elem_id="sf-afford-regions")

        # one named API endpoint per action (API_ENDPOINTS; the button and the Enter key share it), so that
        # gradio_client scripts call /show_synthetic, /show_upload, /ask and /afford
        outputs = [status, overlay, depth, plot, graph_table, qa_table, view_state]
        synth_btn.click(show_synthetic, inputs=[index, seed], outputs=outputs, api_name="show_synthetic")
        upload.upload(show_upload, inputs=[upload], outputs=outputs, api_name="show_upload")
        gr.on([ask_btn.click, question.submit], ask, inputs=[view_state, question],
              outputs=[answer, vlm_answer, steps], api_name="ask")
        gr.on([afford_btn.click, action.submit], afford, inputs=[view_state, action, threshold],
              outputs=[afford_info, heat, afford_plot, afford_table], api_name="afford")
    return demo
