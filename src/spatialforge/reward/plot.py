"""The reward curve as a PNG (PIL only, like :mod:`spatialforge.viz`): distance and reward against time, with
the frames' thumbnails underneath."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from spatialforge.reward.engine import RewardResult
from spatialforge.reward.types import Trajectory

__all__ = ["plot_reward", "render_reward"]

_DIST = (0, 110, 200)
_REWARD = (235, 125, 30)
_INTERP = (215, 40, 40)
_CONF = (205, 215, 228)


def render_reward(result: RewardResult, traj: Trajectory, *, width: int = 960, n_thumbs: int = 8) -> Image.Image:
    """The picture :func:`plot_reward` saves.

    Top: distance (blue, metres, left scale) and reward (orange, scaled to its own range, right labels)
    against time; the light band along the bottom rises with each frame's confidence; red ticks mark
    interpolated frames; a dashed line marks the success threshold. Bottom: ``n_thumbs`` evenly spaced
    frames with their boxes (blue: object, orange: target), frame number and distance.
    """
    rows = result.rows
    n = len(rows)
    times = result.times
    dist = result.distances
    rew = result.rewards
    conf = result.confidence
    interp = result.interpolated
    plot_h, pad_l, pad_r, pad_t, pad_b = 260, 56, 56, 24, 34
    frames = traj.frames
    k = min(n_thumbs, n, len(frames))
    thumb_w = (width - 8 * (k + 1)) // max(k, 1)
    fh, fw = frames[0].image.shape[:2]
    thumb_h = max(1, int(round(thumb_w * fh / fw)))
    canvas = Image.new("RGB", (width, plot_h + thumb_h + 40), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x0, x1, y0, y1 = pad_l, width - pad_r, pad_t, plot_h - pad_b
    t_lo, t_hi = float(times.min()), float(times.max()) if n > 1 else float(times.min()) + 1.0
    t_hi = t_hi if t_hi > t_lo else t_lo + 1.0
    d_hi = max(float(dist.max()) * 1.1, 1e-3)

    def px(t: float) -> float:
        return x0 + (t - t_lo) / (t_hi - t_lo) * (x1 - x0)

    def py(v: float, lo: float, hi: float) -> float:
        return y1 - (v - lo) / (hi - lo) * (y1 - y0)

    # Confidence band, then axes.
    band = [(px(t), py(c * 0.25 * d_hi, 0.0, d_hi)) for t, c in zip(times, conf, strict=True)]
    if n > 1:
        draw.polygon([(px(t_lo), y1), *band, (px(times[-1]), y1)], fill=_CONF)
    draw.rectangle([x0, y0, x1, y1], outline=(90, 90, 90))
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        v = frac * d_hi
        draw.text((4, py(v, 0.0, d_hi) - 6), f"{v:.2f} m", fill=_DIST)
        t = t_lo + frac * (t_hi - t_lo)
        draw.text((px(t) - 10, y1 + 4), f"{t:.1f}s", fill=(60, 60, 60))
    r_lo, r_hi = float(rew.min()), float(rew.max())
    if r_hi - r_lo < 1e-9:
        r_lo, r_hi = r_lo - 0.5, r_hi + 0.5
    draw.text((x1 + 4, y0 - 6), f"{r_hi:.2f}", fill=_REWARD)
    draw.text((x1 + 4, y1 - 6), f"{r_lo:.2f}", fill=_REWARD)
    thr = float(result.summary.get("success_threshold_m", 0.0) or 0.0)
    if 0.0 < thr < d_hi:
        yt = py(thr, 0.0, d_hi)
        for xs in range(int(x0), int(x1), 8):
            draw.line([(xs, yt), (min(xs + 4, x1), yt)], fill=(40, 150, 60))
        draw.text((x0 + 4, yt - 12), "success threshold", fill=(40, 150, 60))
    for t, m in zip(times, interp, strict=True):
        if m:
            draw.line([(px(t), y1 - 8), (px(t), y1)], fill=_INTERP, width=2)
    if n > 1:
        draw.line([(px(t), py(v, r_lo, r_hi)) for t, v in zip(times, rew, strict=True)], fill=_REWARD, width=2)
        draw.line([(px(t), py(d, 0.0, d_hi)) for t, d in zip(times, dist, strict=True)], fill=_DIST, width=2)
    for t, d, m in zip(times, dist, interp, strict=True):
        x, y = px(t), py(d, 0.0, d_hi)
        draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=_INTERP if m else _DIST)
    reward_name = result.summary.get("reward", "reward")
    draw.text((x0 + 4, 4), f"distance (m)  |  {reward_name}  |  confidence (band)  |  interpolated (red)  "
              f"{result.summary.get('object', '')} -> {result.summary.get('target', '')}", fill=(30, 30, 30))

    # Thumbnails.
    picks = np.unique(np.linspace(0, min(n, len(frames)) - 1, k).round().astype(int)) if k else []
    for j, i in enumerate(picks):
        fr = frames[int(i)]
        im = Image.fromarray(fr.image)
        d = ImageDraw.Draw(im)
        row = rows[int(i)]
        for box, colour in ((row.object_box, _DIST), (row.target_box, _REWARD)):
            if box is not None:
                d.rectangle(list(box), outline=colour, width=max(1, fw // 160))
        im = im.resize((thumb_w, thumb_h))
        xo = 8 + j * (thumb_w + 8)
        canvas.paste(im, (xo, plot_h))
        label = f"#{row.frame} {row.distance_m:.2f} m" + (" (interp.)" if row.interpolated else "")
        draw.text((xo, plot_h + thumb_h + 4), label, fill=_INTERP if row.interpolated else (30, 30, 30))
        draw.line([(px(row.time_s), y1), (xo + thumb_w / 2, plot_h - 2)], fill=(200, 200, 200))
    return canvas


def plot_reward(result: RewardResult, traj: Trajectory, path: str | Path) -> Path:
    """Save :func:`render_reward`'s picture as a PNG at ``path`` and return it."""
    path = Path(path)
    render_reward(result, traj).save(path, format="PNG")
    return path
