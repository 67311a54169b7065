"""Interactive 3D views of a scene graph: a self-contained Plotly page and a rerun recording.

Both show the same things in the canonical gravity-aligned frame (metres, ``z`` up, origin on the
support plane below the camera; see docs/conventions.md): the scene's point cloud in its own
colours, every measured object's upright box with its caption, the camera (its centre, a frustum,
and in rerun the image itself), and the support plane where the floor or table was fitted. For a
scene of a generated dataset its question-answer pairs come along (the HTML side panel, rerun text
entries). See docs/views.md.

Plotly and rerun-sdk are optional (the ``viz3d`` extra) and imported only when a view is built.
Nothing here needs torch or a network: the HTML page inlines plotly.js and opens offline.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spatialforge._optional import require
from spatialforge.core.types import RGBDScene, SceneGraph
from spatialforge.errors import ConfigError
from spatialforge.geometry.backproject import backproject
from spatialforge.geometry.config import GeometryConfig
from spatialforge.io.outdir import atomic_path
from spatialforge.viz import _EDGES, _PALETTE

__all__ = ["affordance_figure", "canonical_points", "frustum", "point_palette", "qa_for_scene", "require_plotly",
           "require_rerun", "scene_figure", "support_patch", "write_html", "write_rerun"]

_FEATURE = "3D views"


def require_plotly() -> Any:
    """``plotly.graph_objects``, or a :class:`MissingExtraError` naming the ``viz3d`` extra."""
    require("plotly", extra="viz3d", feature=_FEATURE)
    return require("plotly.graph_objects", extra="viz3d", feature=_FEATURE)


def require_rerun() -> Any:
    """The ``rerun`` module, or a :class:`MissingExtraError` naming the ``viz3d`` extra."""
    return require("rerun", extra="viz3d", feature=_FEATURE)


# ----------------------------------------------------------------------------- geometry shared by both views
def canonical_points(scene: RGBDScene, graph: SceneGraph, *, max_points: int = 200_000,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The valid depth pixels as canonical-frame points (N, 3) and their image colours (N, 3) uint8.

    Points come in row-major pixel order. When there are more than ``max_points``, a subset chosen
    by ``seed`` is kept (the same for the same inputs), still in pixel order.
    """
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    rows, cols = np.nonzero(scene.depth > 0)
    if len(rows) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), max_points, replace=False))
        rows, cols = rows[keep], cols[keep]
    cam = backproject(scene.depth, scene.intrinsics, rows=rows, cols=cols)
    return graph.gravity.to_canonical(cam), scene.image[rows, cols].astype(np.uint8)


def support_patch(points: np.ndarray, graph: SceneGraph, *, tolerance: float | None = None) -> np.ndarray | None:
    """The outline (K, 3), at ``z = 0``, of the canonical ``points`` lying on the fitted support plane.

    A point is on the plane when ``|z|`` is within the plane-fit tolerance (the default geometry
    threshold plus the scene's depth noise at the camera's height). The outline is the convex hull
    of those points' footprint, counter-clockwise. ``None`` when the scene has no fitted plane
    (camera-prior gravity) or fewer than three non-collinear plane points.
    """
    g = graph.gravity
    if not g.reliable or len(points) < 3:
        return None
    if tolerance is None:
        tolerance = GeometryConfig().plane_threshold_m + 2.5 * graph.depth_noise * float(g.camera_height or 0.0)
    on = points[np.abs(points[:, 2]) <= tolerance][:, :2]
    if len(on) < 3:
        return None
    from scipy.spatial import ConvexHull, QhullError

    try:
        hull = ConvexHull(on)
    except QhullError:  # all on one line
        return None
    xy = on[hull.vertices]
    return np.column_stack([xy, np.zeros(len(xy))])


def frustum(graph: SceneGraph, depth: float) -> tuple[np.ndarray, np.ndarray]:
    """The camera centre (3,) and the four image corners at z-depth ``depth`` (4, 3), canonical frame.

    Corners run top-left, top-right, bottom-right, bottom-left as seen in the image.
    """
    k = graph.intrinsics
    u = np.array([-0.5, k.width - 0.5, k.width - 0.5, -0.5])
    v = np.array([-0.5, -0.5, k.height - 0.5, k.height - 0.5])
    cam = np.column_stack([(u - k.cx) / k.fx * depth, (v - k.cy) / k.fy * depth, np.full(4, depth)])
    return graph.gravity.t.copy(), graph.gravity.to_canonical(cam)


def _frustum_depth(graph: SceneGraph) -> float:
    """A frustum length that suits the scene: a fifth of the farthest object's distance, 0.15-0.6 m."""
    far = max([1.0] + [o.camera_distance for o in graph.objects])
    return float(np.clip(far / 5, 0.15, 0.6))


def _label(obj) -> str:
    return f"{obj.id}: {obj.caption}"


def _rgb(color: tuple[int, int, int]) -> str:
    return f"rgb({color[0]},{color[1]},{color[2]})"


def qa_for_scene(dataset: str | os.PathLike[str], scene_id: str, *, flag: str = "--dataset") -> list[dict[str, Any]]:
    """The QA pairs (dicts as stored, see docs/formats.md) of ``scene_id`` in a ``generate`` output folder.

    An affordance point question of a ``generate --afford`` dataset also gets its entry of the row's
    ``afford`` column under ``"afford"`` (part name, truth pixel and 3D point; without the mask).
    Raises :class:`ConfigError` (one line naming ``flag``) when the folder is no dataset or holds no
    row for the scene.
    """
    import pyarrow.parquet as pq

    from spatialforge.errors import SpatialForgeError
    from spatialforge.io.dataset import iter_rows

    root = Path(dataset)
    if not root.is_dir():
        raise ConfigError(f"{flag} {dataset}: not a folder (give the output folder of `spatialforge generate`)")
    try:
        shards = sorted((root / "data").glob("*.parquet"))
        columns = ["scene_id", "qa"] + (["afford"] if shards and "afford" in pq.read_schema(shards[0]).names else [])
        rows = [r for r in iter_rows(root, columns=columns) if r["scene_id"] == scene_id]
    except SpatialForgeError as exc:
        raise ConfigError(f"{flag} {dataset}: no Parquet shards under data/ (give the output folder of "
                          "`spatialforge generate`)") from exc
    except (OSError, ValueError, KeyError) as exc:  # unreadable shard or another schema
        raise ConfigError(f"{flag} {dataset}: cannot read its shards ({type(exc).__name__}: {exc})") from exc
    if not rows:
        raise ConfigError(f"{flag} {dataset}: has no row for scene {scene_id!r}")
    out = []
    for r in rows:
        truth = {a.get("qa_id"): {k: v for k, v in a.items() if k != "mask"} for a in (r.get("afford") or [])}
        for p in r["qa"] or []:
            pair = dict(p)
            if pair.get("id") in truth:
                pair["afford"] = truth[pair["id"]]
            out.append(pair)
    return out


def _qa_value(pair: dict[str, Any]) -> str:
    value, unit = pair.get("value"), pair.get("unit") or ""
    if value is None:
        return ""
    if pair.get("kind") == "yes_no":
        return "yes" if value else "no"
    if pair.get("kind") == "choice":
        return f"object {int(value)}"
    if pair.get("kind") == "point":  # the value is the part's id; its truth is in the afford column
        a = pair.get("afford") or {}
        part = f"the {a['part_name']} (part {int(value)})" if a.get("part_name") else f"part {int(value)}"
        if a.get("object_id") is not None:
            part += f" of object {a['object_id']}"
        pixel, point = a.get("pixel") or (), a.get("point_3d") or ()
        if len(pixel) != 2 or len(point) != 3 or any(c is None for c in (*pixel, *point)):
            return part
        return (f"{part}: pixel ({pixel[0]}, {pixel[1]}), 3D point ({point[0]:.3f}, {point[1]:.3f}, {point[2]:.3f}) "
                "m")
    return f"{float(value):.3f} {unit}".strip()


# ----------------------------------------------------------------------------- Plotly
def point_palette(colors: np.ndarray, max_colors: int = 256) -> tuple[np.ndarray, list[list[Any]]]:
    """Colours ``(N, 3)`` uint8 as one palette index per point (uint8) and a Plotly colorscale whose entry
    ``i`` (at ``i / (k - 1)``) is palette colour ``i``: exact when there are at most ``max_colors`` distinct
    colours, else a median-cut palette of ``max_colors`` (deterministic). Plot with ``cmin=0, cmax=k - 1``."""
    if not 2 <= max_colors <= 256:
        raise ValueError(f"max_colors must be from 2 to 256, got {max_colors}")
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    if len(colors) == 0:
        return np.zeros(0, dtype=np.uint8), [[0.0, "rgb(0,0,0)"], [1.0, "rgb(0,0,0)"]]
    palette, index = np.unique(colors, axis=0, return_inverse=True)
    if len(palette) > max_colors:
        from PIL import Image

        quant = Image.fromarray(colors[None]).quantize(colors=max_colors, method=Image.Quantize.MEDIANCUT)
        index = np.asarray(quant, dtype=np.uint8).reshape(-1)
        palette = np.asarray(quant.getpalette()[: 3 * (int(index.max()) + 1)], dtype=np.uint8).reshape(-1, 3)
    index = np.asarray(index, dtype=np.uint8).reshape(-1)
    k = len(palette)
    if k == 1:
        c = _rgb(tuple(int(v) for v in palette[0]))
        return index, [[0.0, c], [1.0, c]]
    return index, [[i / (k - 1), _rgb(tuple(int(v) for v in palette[i]))] for i in range(k)]


def scene_figure(scene: RGBDScene, graph: SceneGraph, *, max_points: int = 200_000, seed: int = 0,
                 title: str | None = None) -> Any:
    """A Plotly figure of the scene in the canonical frame (metres, ``z`` up, equal aspect).

    Traces, in order: ``points`` (the point cloud in the image's colours, subsampled to at most
    ``max_points`` with ``seed``), ``support plane`` (a translucent patch; absent without a fitted
    plane), one ``box <id>: <caption>`` line trace per measured object, ``captions`` (each caption
    above its box), and ``camera`` (its centre first, then the frustum's lines).
    """
    go = require_plotly()
    pts, colors = canonical_points(scene, graph, max_points=max_points, seed=seed)
    index, colorscale = point_palette(colors)
    # float32 coordinates and one palette index per point: the figure's JSON (what a page downloads) is about a
    # third of float64 with a colour string per point, and Plotly validates one array instead of N strings
    xyz = pts.astype(np.float32)
    traces = [go.Scatter3d(
        name="points", x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="markers", hoverinfo="skip",
        marker={"size": 1.5, "color": index, "colorscale": colorscale, "cmin": 0,
                "cmax": max(len(colorscale) - 1, 1), "showscale": False})]
    patch = support_patch(pts, graph)
    if patch is not None:
        n = len(patch)
        traces.append(go.Mesh3d(
            name="support plane", x=patch[:, 0], y=patch[:, 1], z=patch[:, 2],
            i=np.zeros(n - 2, int), j=np.arange(1, n - 1), k=np.arange(2, n), color="rgb(120,160,220)",
            opacity=0.3, hoverinfo="name", showlegend=True))
    tops, captions, tag_colors = [], [], []
    for idx, obj in enumerate(graph.objects):
        color = _rgb(_PALETTE[idx % len(_PALETTE)])
        corners = obj.box.corners()
        xs: list[float | None] = []
        ys: list[float | None] = []
        zs: list[float | None] = []
        for a, b in _EDGES:
            for p in (corners[a], corners[b]):
                xs.append(float(p[0]))
                ys.append(float(p[1]))
                zs.append(float(p[2]))
            xs.append(None)
            ys.append(None)
            zs.append(None)
        hover = (f"{_label(obj)}<br>{obj.width:.2f} x {obj.depth:.2f} x {obj.height:.2f} m"
                 f"<br>{obj.camera_distance:.2f} m from the camera")
        traces.append(go.Scatter3d(name=f"box {_label(obj)}", x=xs, y=ys, z=zs, mode="lines",
                                   line={"color": color, "width": 4}, hovertext=hover, hoverinfo="text"))
        tops.append(obj.center + np.array([0.0, 0.0, obj.height / 2 + 0.05]))
        captions.append(_label(obj))
        tag_colors.append(color)
    if tops:
        top = np.array(tops)
        traces.append(go.Scatter3d(name="captions", x=top[:, 0], y=top[:, 1], z=top[:, 2], mode="text",
                                   text=captions, textfont={"color": tag_colors, "size": 12}, hoverinfo="skip"))
    centre, corners = frustum(graph, _frustum_depth(graph))
    order = [centre, corners[0], None, centre, corners[1], None, centre, corners[2], None, centre, corners[3],
             None, corners[0], corners[1], corners[2], corners[3], corners[0]]
    cam_xyz = [[None if p is None else float(p[axis]) for p in order] for axis in range(3)]
    traces.append(go.Scatter3d(
        name="camera", mode="lines+markers", x=cam_xyz[0], y=cam_xyz[1], z=cam_xyz[2],
        line={"color": "black", "width": 3}, marker={"size": [6] + [0] * (len(order) - 1), "color": "black"},
        hovertext="camera", hoverinfo="text"))
    g = graph.gravity
    if title is None:
        where = (f"camera {g.camera_height:.2f} m above the support plane" if g.reliable and g.camera_height
                 else f"no support plane ({g.reason or g.source}): z is the camera's prior up")
        title = f"{graph.scene_id}: {len(graph.objects)} objects; {where}"
    fig = go.Figure(data=traces)
    axis = {"showbackground": True, "backgroundcolor": "rgb(248,248,248)"}
    fig.update_layout(
        title={"text": html.escape(title)}, margin={"l": 0, "r": 0, "t": 40, "b": 0}, legend={"itemsizing": "constant"},
        scene={"aspectmode": "data",
               "xaxis": {"title": {"text": "x (m, camera right)"}, **axis},
               "yaxis": {"title": {"text": "y (m, forward)"}, **axis},
               "zaxis": {"title": {"text": "z (m, up)"}, **axis},
               "camera": {"up": {"x": 0, "y": 0, "z": 1}, "eye": {"x": 0.0, "y": -1.6, "z": 1.0}}})
    return fig


def affordance_figure(scene: RGBDScene, graph: SceneGraph, regions: Sequence[Any], *,
                      names: dict[Any, str] | None = None, max_points: int = 200_000, max_region_points: int = 5_000,
                      arrow_length: float = 0.15, heat_range: tuple[float, float] | None = None, seed: int = 0,
                      title: str | None = None) -> Any:
    """:func:`scene_figure` with lifted affordance regions on top (``regions``: ``lift_affordance``'s).

    Per region, four traces are added after the scene's, named with ``names[object_id]`` (default
    ``#<id>``); one legend entry, ``affordance <name>``, turns all four on and off:
    ``affordance <name>`` (the region's points coloured by heat on one colour scale for all regions,
    ``heat_range`` (default: 0 to the highest heat of the regions), subsampled to at most
    ``max_region_points`` with ``seed``), ``interaction <name>`` (the interaction point),
    ``approach <name>`` (a line of ``arrow_length`` metres ending at the interaction point along the
    approach direction) and ``approach head <name>`` (a cone at the point). The regions must be in the
    gravity frame of ``graph`` (lift with ``graph.gravity``).
    """
    go = require_plotly()
    if arrow_length <= 0:
        raise ValueError(f"arrow_length must be > 0, got {arrow_length}")
    if max_region_points < 1:
        raise ValueError(f"max_region_points must be >= 1, got {max_region_points}")
    if heat_range is None:
        top = max((float(np.max(r.heat)) for r in regions if len(r.heat)), default=1.0)
        heat_range = (0.0, top if top > 0 else 1.0)
    lo, hi = (float(v) for v in heat_range)
    if not hi > lo:
        raise ValueError(f"heat_range must be (low, high) with high > low, got {heat_range}")
    fig = scene_figure(scene, graph, max_points=max_points, seed=seed, title=title)
    names = names or {}
    for k, r in enumerate(regions):
        label = names.get(r.object_id, f"#{r.object_id}")
        pts, heat = np.asarray(r.points, dtype=np.float64), np.asarray(r.heat, dtype=np.float64)
        if len(pts) > max_region_points:
            keep = np.sort(np.random.default_rng(seed).choice(len(pts), max_region_points, replace=False))
            pts, heat = pts[keep], heat[keep]
        group = f"region {k}"
        fig.add_trace(go.Scatter3d(
            name=f"affordance {label}", legendgroup=group, x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], mode="markers",
            marker={"size": 2.5, "color": heat, "colorscale": "YlOrRd", "cmin": lo, "cmax": hi,
                    "showscale": k == 0, "colorbar": {"title": {"text": "heat"}, "len": 0.5, "thickness": 12,
                                                      "x": 0.0, "xanchor": "left"}},
            hovertemplate=f"{html.escape(label)}<br>heat %{{marker.color:.3f}}<extra></extra>"))
        p = np.asarray(r.interaction_point, dtype=np.float64)
        a = np.asarray(r.approach, dtype=np.float64)
        area = f"{r.area_m2 * 1e4:.1f} cm^2"
        fig.add_trace(go.Scatter3d(
            name=f"interaction {label}", legendgroup=group, showlegend=False, x=[p[0]], y=[p[1]], z=[p[2]],
            mode="markers",
            marker={"size": 7, "color": "black", "symbol": "diamond", "line": {"color": "white", "width": 2}},
            hovertext=f"{html.escape(label)}: interaction point ({p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f}) m; region {area}",
            hoverinfo="text"))
        start = p - arrow_length * a
        fig.add_trace(go.Scatter3d(
            name=f"approach {label}", legendgroup=group, showlegend=False, x=[start[0], p[0]], y=[start[1], p[1]],
            z=[start[2], p[2]], mode="lines", line={"color": "rgb(0,120,255)", "width": 6}, hoverinfo="text",
            hovertext=f"{html.escape(label)}: approach ({a[0]:+.2f}, {a[1]:+.2f}, {a[2]:+.2f})"))
        head = arrow_length / 4
        fig.add_trace(go.Cone(
            name=f"approach head {label}", legendgroup=group, x=[p[0]], y=[p[1]], z=[p[2]], u=[a[0] * head],
            v=[a[1] * head], w=[a[2] * head], anchor="tip", sizemode="absolute", sizeref=head, showscale=False,
            colorscale=[[0, "rgb(0,120,255)"], [1, "rgb(0,120,255)"]], hoverinfo="skip", showlegend=False))
    return fig


def _side_panel(graph: SceneGraph, qa: Sequence[dict[str, Any]] | None, source: str | None) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{o.id}</td><td>{esc(o.caption)}</td><td>{o.width:.2f} x {o.depth:.2f} x {o.height:.2f}</td>"
        f"<td>{o.camera_distance:.2f}</td></tr>" for o in graph.objects)
    parts = [f"<h2>{esc(graph.scene_id)}</h2>",
             "<h3>Objects</h3><table><tr><th>id</th><th>caption</th><th>w x d x h (m)</th><th>distance (m)</th></tr>"
             f"{rows}</table>"]
    if qa is not None:
        where = f" from {esc(source)}" if source else ""
        items = "".join(
            f"<li class='qa'><b>Q:</b> {esc(str(p.get('question', '')))}<br><b>A:</b> {esc(str(p.get('answer', '')))}"
            f"<br><span class='value'>{esc(str(p.get('type', '')))}: {esc(_qa_value(p))}</span></li>" for p in qa)
        parts.append(f"<h3>{len(qa)} QA pairs{where}</h3><ol>{items}</ol>")
    return "".join(parts)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ margin: 0; font-family: sans-serif; display: flex; height: 100vh; }}
#view {{ flex: 1 1 auto; min-width: 0; }}
#panel {{ order: 2; flex: 0 0 26em; overflow-y: auto; padding: 0 1em; border-left: 1px solid #ddd; font-size: 13px; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 2px 6px; border-bottom: 1px solid #eee; text-align: left; }}
li.qa {{ margin-bottom: 0.6em; }} .value {{ color: #555; }}
</style></head>
<body><div id="panel">{panel}</div><div id="view">{figure}</div></body></html>
"""


def write_html(fig: Any, path: str | os.PathLike[str], *, graph: SceneGraph | None = None,
               qa: Sequence[dict[str, Any]] | None = None, qa_source: str | None = None) -> Path:
    """Write ``fig`` as one self-contained HTML page (plotly.js inlined: it opens offline).

    With ``graph`` a side panel lists the objects, and with ``qa`` (dicts as stored in a dataset's
    ``qa`` column) the scene's questions and answers with their exact values. The file appears
    atomically: an interrupted write leaves no partial page.
    """
    require_plotly()
    body = fig.to_html(full_html=False, include_plotlyjs=True, default_width="100%", default_height="100vh",
                       config={"displaylogo": False})
    title = html.escape(graph.scene_id if graph is not None else "spatialforge 3D view")
    panel = _side_panel(graph, qa, qa_source) if graph is not None else ""
    page = _PAGE.format(title=title, figure=body, panel=panel)  # the panel comes first: the plot sizes itself to
    # the room left when its script runs
    final = Path(path)
    with atomic_path(final) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return final


# ----------------------------------------------------------------------------- rerun
def write_rerun(scene: RGBDScene, graph: SceneGraph, path: str | os.PathLike[str], *,
                qa: Sequence[dict[str, Any]] | None = None, max_points: int = 200_000, seed: int = 0) -> Path:
    """Write a rerun recording (``.rrd``, open it with ``rerun FILE.rrd``) of the scene, offline.

    Entities (all static): ``world`` (view coordinates: right-handed, z up), ``world/points``
    (Points3D with the image's colours), ``world/objects`` (Boxes3D, labelled ``<id>: <caption>``),
    ``world/support_plane`` (a translucent Mesh3D; absent without a fitted plane), ``world/camera``
    (Transform3D from the camera to the canonical frame, and a Pinhole), ``world/camera/image`` and
    ``world/camera/depth``; with ``qa``, ``qa`` (a markdown TextDocument of all pairs) and ``qa/log``
    (one TextLog per pair on the ``qa`` sequence timeline). The file appears atomically.
    """
    rr = require_rerun()
    pts, colors = canonical_points(scene, graph, max_points=max_points, seed=seed)
    final = Path(path)
    with atomic_path(final) as tmp:
        rec = rr.RecordingStream("spatialforge", recording_id=graph.scene_id, send_properties=False)
        try:
            rec.save(tmp)
            rec.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
            rec.log("world/points", rr.Points3D(pts, colors=colors, radii=0.004), static=True)
            if graph.objects:
                objs = graph.objects
                rec.log("world/objects", rr.Boxes3D(
                    centers=[o.box.center for o in objs], sizes=[o.box.size for o in objs],
                    rotation_axis_angles=[rr.RotationAxisAngle(axis=[0.0, 0.0, 1.0], radians=float(o.box.yaw))
                                          for o in objs],
                    colors=[_PALETTE[i % len(_PALETTE)] for i in range(len(objs))],
                    labels=[_label(o) for o in objs], show_labels=True), static=True)
            patch = support_patch(pts, graph)
            if patch is not None:
                n = len(patch)
                tris = np.column_stack([np.zeros(n - 2, int), np.arange(1, n - 1), np.arange(2, n)])
                rec.log("world/support_plane", rr.Mesh3D(vertex_positions=patch, triangle_indices=tris,
                                                         albedo_factor=[120, 160, 220, 90]), static=True)
            g, k = graph.gravity, graph.intrinsics
            rec.log("world/camera", rr.Transform3D(translation=g.t, mat3x3=g.R), static=True)
            rec.log("world/camera", rr.Pinhole(image_from_camera=k.matrix, resolution=[k.width, k.height],
                                               camera_xyz=rr.ViewCoordinates.RDF,
                                               image_plane_distance=_frustum_depth(graph)), static=True)
            rec.log("world/camera/image", rr.Image(scene.image), static=True)
            rec.log("world/camera/depth", rr.DepthImage(scene.depth, meter=1.0), static=True)
            if qa is not None:
                doc = "\n".join(f"{i + 1}. **Q:** {p.get('question', '')}  \n   **A:** {p.get('answer', '')} "
                                f"(`{p.get('type', '')}`: {_qa_value(p)})" for i, p in enumerate(qa))
                rec.log("qa", rr.TextDocument(f"# {graph.scene_id}: {len(qa)} QA pairs\n\n{doc}\n",
                                              media_type=rr.MediaType.MARKDOWN), static=True)
                for i, p in enumerate(qa):
                    rec.set_time("qa", sequence=i)
                    rec.log("qa/log", rr.TextLog(f"Q: {p.get('question', '')} A: {p.get('answer', '')} "
                                                 f"[{p.get('type', '')}: {_qa_value(p)}]", level="INFO"))
            rec.flush()
        finally:
            rec.disconnect()
    return final
