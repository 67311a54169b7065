"""Pictures of a scene graph for people: projected 3D boxes with captions, and a top-down map."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from spatialforge.core.types import RGBDScene, SceneGraph

__all__ = ["colorize_depth", "place_labels", "project_points", "render_depth", "render_heatmap", "render_overlay",
           "render_scene_graph"]

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


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(anchors: list[tuple[float, float]], sizes: list[tuple[int, int]], width: int,
                 height: int) -> list[tuple[int, int]]:
    """Top-left corners for text labels of ``sizes`` near their ``anchors``, inside a ``width`` x ``height``
    picture and not overlapping one another (greedy, in order; a label that finds no free place nearby
    takes the free place nearest to its anchor along its column, or, failing that, stays clamped)."""
    placed: list[tuple[float, float, float, float]] = []
    corners = []
    for (ax, ay), (w, h) in zip(anchors, sizes, strict=True):
        x = int(min(max(ax - w / 2, 0), max(width - w, 0)))
        base_y = int(min(max(ay - h / 2, 0), max(height - h, 0)))
        best = None
        for step in range(0, 2 * (height // max(h, 1)) + 2):
            dy = (step + 1) // 2 * (h + 1) * (1 if step % 2 else -1)
            y = base_y + dy
            if y < 0 or y + h > height:
                continue
            box = (x, y, x + w, y + h)
            if not any(_overlaps(box, q) for q in placed):
                best = box
                break
        box = best or (x, base_y, x + w, base_y + h)
        placed.append(box)
        corners.append((int(box[0]), int(box[1])))
    return corners


def render_scene_graph(scene: RGBDScene, graph: SceneGraph, map_size: int | None = None) -> Image.Image:
    """Side-by-side picture: the image with 3D boxes and numbered tags, and a top-down metric map; below,
    a legend with each object's caption and measured size. Tags never overlap or leave the picture."""
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
    tags, anchors, legend = [], [], []
    for i, o in enumerate(objs):
        color = _PALETTE[i % len(_PALETTE)]
        corners = o.box.corners()
        uv, z = project_points(graph, corners)
        if np.all(z > 0.05):
            for a, b in _EDGES:
                draw.line([tuple(uv[a]), tuple(uv[b])], fill=color, width=2)
        tags.append((str(o.id), color))
        anchors.append(tuple(map(float, o.image_centroid)))
        legend.append((color, f"{o.id}: {o.caption} ({o.width:.2f} x {o.depth:.2f} x {o.height:.2f} m, "
                              f"{o.camera_distance:.2f} m away)"))
        foot = [to_map(float(p[0]), float(p[1])) for p in corners[[0, 2, 6, 4]]]
        tdraw.polygon(foot, outline=color, fill=None, width=2)
        tdraw.text(to_map(float(o.center[0]), float(o.center[1])), str(o.id), fill=color)
    sizes = [(7 * len(t) + 5, 13) for t, _ in tags]
    for (text, color), (x, y), (w, hh) in zip(tags, place_labels(anchors, sizes, img.width, img.height), sizes,
                                               strict=True):
        draw.rectangle([x, y, x + w - 1, y + hh - 1], fill=color)
        draw.text((x + 2, y), text, fill=(0, 0, 0))
    g = graph.gravity
    note = f"gravity: {g.source}" + (f", camera {g.camera_height:.2f} m above support" if g.camera_height else "")
    draw.text((6, 6), note, fill=(255, 255, 255))
    tdraw.text((6, 6), "top view, 1 m grid (camera at bottom)", fill=(60, 60, 60))
    row_h = 16
    panel = max(h, size)
    out = Image.new("RGB", (img.width + size, panel + row_h * len(legend) + 8), (255, 255, 255))
    out.paste(img, (0, 0))
    out.paste(top, (img.width, 0))
    d = ImageDraw.Draw(out)
    for r, (color, text) in enumerate(legend):
        y = panel + 4 + r * row_h
        d.rectangle([8, y + 2, 18, y + 12], fill=color)
        d.text((24, y), text, fill=(0, 0, 0))
    return out


# Perceptually ordered colour ramp (dark blue -> teal -> yellow), anchors interpolated linearly.
_RAMP = np.array([[48, 18, 59], [70, 107, 227], [40, 187, 236], [49, 242, 153], [162, 252, 60],
                  [237, 208, 58], [251, 128, 34], [208, 47, 5], [122, 4, 3]], dtype=np.float64)


def colorize_depth(depth: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """(H, W, 3) uint8 picture of a depth map (near = dark blue, far = red); invalid pixels black."""
    valid = depth > 0
    if not valid.any():
        return np.zeros((*depth.shape, 3), np.uint8)
    lo = float(np.percentile(depth[valid], 1)) if lo is None else lo
    hi = float(np.percentile(depth[valid], 99)) if hi is None else hi
    t = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1) * (len(_RAMP) - 1)
    i = np.minimum(t.astype(int), len(_RAMP) - 2)
    f = (t - i)[..., None]
    rgb = _RAMP[i] * (1 - f) + _RAMP[i + 1] * f
    rgb[~valid] = 0
    return rgb.astype(np.uint8)


def _upscale_factor(width: int, min_width: int) -> int:
    return max(1, -(-min_width // max(width, 1)))


def render_depth(depth: np.ndarray, title: str = "", min_width: int = 480) -> Image.Image:
    """Colour-mapped depth (near = dark blue, far = red, invalid = black) with a scale bar in metres.

    Small maps are enlarged by a whole factor (nearest neighbour) to at least ``min_width`` pixels.
    """
    valid = depth > 0
    lo = float(np.percentile(depth[valid], 1)) if valid.any() else 0.0
    hi = float(np.percentile(depth[valid], 99)) if valid.any() else 1.0
    img = Image.fromarray(colorize_depth(depth, lo, hi))
    k = _upscale_factor(img.width, min_width)
    if k > 1:
        img = img.resize((img.width * k, img.height * k), Image.Resampling.NEAREST)
    out = Image.new("RGB", (img.width, img.height + 40), (255, 255, 255))
    out.paste(img, (0, 0))
    bar = colorize_depth(np.tile(np.linspace(lo, hi, 256)[None, :], (10, 1)), lo, hi)
    bar_img = Image.fromarray(bar).resize((max(img.width - 140, 64), 10))
    out.paste(bar_img, (70, img.height + 4))
    d = ImageDraw.Draw(out)
    d.text((4, img.height + 2), f"{lo:.2f} m", fill=(0, 0, 0))
    d.text((74 + bar_img.width, img.height + 2), f"{hi:.2f} m", fill=(0, 0, 0))
    d.text((4, img.height + 22), title, fill=(0, 0, 0))
    return out


def render_overlay(scene: RGBDScene, alpha: float = 0.45, min_width: int = 480) -> Image.Image:
    """The image with each instance mask tinted and boxed, its id at the box, and a legend of captions.

    The legend (right) lists ``id: caption`` and the ambiguity group of objects that share one.
    Small images are enlarged by a whole factor (nearest neighbour) to at least ``min_width`` pixels.
    """
    base = scene.image.astype(np.float64)
    tint = np.zeros_like(base)
    weight = np.zeros(scene.instances.shape, dtype=np.float64)
    for i, obj in enumerate(scene.objects):
        m = scene.instances == obj.id
        tint[m] = _PALETTE[i % len(_PALETTE)]
        weight[m] = alpha
    mixed = base * (1 - weight[..., None]) + tint * weight[..., None]
    img = Image.fromarray(np.clip(np.rint(mixed), 0, 255).astype(np.uint8))
    k = _upscale_factor(img.width, min_width)
    if k > 1:
        img = img.resize((img.width * k, img.height * k), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)
    legend_rows = []
    for i, obj in enumerate(scene.objects):
        color = _PALETTE[i % len(_PALETTE)]
        rr, cc = np.nonzero(scene.instances == obj.id)
        group = f"  [group {obj.group}]" if obj.group is not None else ""
        legend_rows.append((color, f"{obj.id}: {obj.caption}{group}" + ("" if len(rr) else "  (no pixels)")))
        if len(rr) == 0:
            continue
        x0, y0, x1, y1 = int(cc.min()) * k, int(rr.min()) * k, (int(cc.max()) + 1) * k - 1, (int(rr.max()) + 1) * k - 1
        draw.rectangle([x0, y0, x1, y1], outline=color, width=2)
        tag = str(obj.id)
        draw.rectangle([x0, y0, x0 + 7 * len(tag) + 4, y0 + 12], fill=color)
        draw.text((x0 + 2, y0), tag, fill=(0, 0, 0))
    panel_w, row_h = 300, 16
    height = max(img.height, row_h * (len(legend_rows) + 1) + 8)
    out = Image.new("RGB", (img.width + panel_w, height), (255, 255, 255))
    out.paste(img, (0, 0))
    d = ImageDraw.Draw(out)
    d.text((img.width + 8, 4), f"{len(scene.objects)} objects", fill=(0, 0, 0))
    for r, (color, text) in enumerate(legend_rows, start=1):
        y = 4 + r * row_h
        d.rectangle([img.width + 8, y + 2, img.width + 18, y + 12], fill=color)
        d.text((img.width + 24, y), text, fill=(0, 0, 0))
    return out


def render_heatmap(image: np.ndarray, heat: np.ndarray, title: str = "", alpha: float = 0.55) -> Image.Image:
    """An affordance heatmap (values in [0, 1], the image's size) blended over the image, with a title."""
    if heat.shape != image.shape[:2]:
        raise ValueError(f"heatmap {heat.shape} does not match the image {image.shape[:2]}")
    h = np.clip(np.nan_to_num(heat.astype(np.float64)), 0.0, 1.0)
    t = h * (len(_RAMP) - 1)
    i = np.minimum(t.astype(int), len(_RAMP) - 2)
    f = (t - i)[..., None]
    colour = _RAMP[i] * (1 - f) + _RAMP[i + 1] * f
    w = (alpha * h)[..., None]  # cold regions keep the photo, hot ones take the colour
    mixed = image.astype(np.float64) * (1 - w) + colour * w
    img = Image.fromarray(np.clip(np.rint(mixed), 0, 255).astype(np.uint8))
    out = Image.new("RGB", (img.width, img.height + 20), (255, 255, 255))
    out.paste(img, (0, 0))
    ImageDraw.Draw(out).text((4, img.height + 4), f"{title}  (max {float(h.max()):.2f})", fill=(0, 0, 0))
    return out
