"""Pictures of a scene graph for people: projected 3D boxes with captions, and a top-down map."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from spatialforge.core.types import RGBDScene, SceneGraph

__all__ = ["project_points", "render_scene_graph"]

_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]
_EDGES = [(0, 1), (0, 2), (1, 3), (2, 3), (4, 5), (4, 6), (5, 7), (6, 7), (0, 4), (1, 5), (2, 6), (3, 7)]


def project_points(graph: SceneGraph, points_canonical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N, 2) of canonical-frame points, and their camera z-depth (N,)."""
    g, k = graph.gravity, graph.intrinsics
    cam = (np.asarray(points_canonical) - g.t) @ g.R  # R^T (p - t), row-vector form
    z = cam[:, 2]
    safe = np.where(np.abs(z) < 1e-9, 1e-9, z)
    uv = np.stack([k.fx * cam[:, 0] / safe + k.cx, k.fy * cam[:, 1] / safe + k.cy], axis=1)
    return uv, z


def render_scene_graph(scene: RGBDScene, graph: SceneGraph, map_size: int | None = None) -> Image.Image:
    """Side-by-side picture: the image with 3D boxes and captions, and a top-down metric map."""
    img = Image.fromarray(scene.image).convert("RGB")
    draw = ImageDraw.Draw(img)
    h = img.height
    size = map_size or h
    top = Image.new("RGB", (size, size), (245, 245, 245))
    tdraw = ImageDraw.Draw(top)
    objs = graph.objects
    x_half = max([1.0] + [abs(float(o.center[0])) + 0.6 for o in objs])
    y_far = max([2.0] + [float(o.center[1]) + 0.6 for o in objs])
    scale = (size - 20) / max(2 * x_half, y_far)

    def to_map(x: float, y: float) -> tuple[float, float]:
        return size / 2 + x * scale, size - 10 - y * scale

    for m in range(-int(x_half) - 1, int(x_half) + 2):  # 1 m grid
        x0, _ = to_map(m, 0)
        tdraw.line([(x0, 0), (x0, size)], fill=(225, 225, 225))
    for m in range(0, int(y_far) + 2):
        _, y0 = to_map(0, m)
        tdraw.line([(0, y0), (size, y0)], fill=(225, 225, 225))
    cx, cy = to_map(0, 0)
    tdraw.polygon([(cx, cy - 8), (cx - 6, cy + 6), (cx + 6, cy + 6)], fill=(0, 0, 0))
    for i, o in enumerate(objs):
        color = _PALETTE[i % len(_PALETTE)]
        corners = o.box.corners()
        uv, z = project_points(graph, corners)
        if np.all(z > 0.05):
            for a, b in _EDGES:
                draw.line([tuple(uv[a]), tuple(uv[b])], fill=color, width=2)
        label = f"{o.id}: {o.caption} ({o.width:.2f}x{o.depth:.2f}x{o.height:.2f} m)"
        u, v = o.image_centroid
        draw.text((u + 1, v + 1), label, fill=(0, 0, 0))
        draw.text((u, v), label, fill=color)
        foot = [to_map(float(p[0]), float(p[1])) for p in corners[[0, 2, 6, 4]]]
        tdraw.polygon(foot, outline=color, fill=None, width=2)
        tdraw.text(to_map(float(o.center[0]), float(o.center[1])), str(o.id), fill=color)
    g = graph.gravity
    note = f"gravity: {g.source}" + (f", camera {g.camera_height:.2f} m above support" if g.camera_height else "")
    draw.text((6, 6), note, fill=(255, 255, 255))
    tdraw.text((6, 6), "top view, 1 m grid (camera at bottom)", fill=(60, 60, 60))
    out = Image.new("RGB", (img.width + size, max(h, size)), (255, 255, 255))
    out.paste(img, (0, 0))
    out.paste(top, (img.width, 0))
    return out
