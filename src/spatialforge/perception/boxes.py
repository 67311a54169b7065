"""Pixel-box geometry shared by the detectors and the photo pipeline (numpy only; no torch).

Boxes are ``(N, 4)`` pixel ``x0, y0, x1, y1`` arrays (``x0 <= x1``, ``y0 <= y1``), as in
:class:`~spatialforge.perception.types.Detections`. A box's area is ``(x1 - x0) * (y1 - y0)``
(continuous coordinates, no ``+ 1``), so a box that spans a whole ``W x H`` image is
``[0, 0, W, H]`` with area ``W * H``.

* :func:`box_iou` - pairwise intersection over union;
* :func:`nms` - greedy, class-agnostic non-maximum suppression;
* :func:`clip_boxes` - clip boxes to the image;
* :func:`filter_detections` - the cleaning applied to a detector's raw output: clip, drop degenerate
  boxes, score threshold, size filters, NMS, sort by score, cap.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np

from spatialforge.perception.checks import check_number, count
from spatialforge.perception.types import Detections

__all__ = ["box_area", "box_iou", "clip_boxes", "filter_detections", "nms"]


# ----------------------------------------------------------------------------- validation
def _as_boxes(boxes: Any, what: str) -> np.ndarray:
    """``boxes`` as a float64 (N, 4) array of finite numbers (an empty input gives (0, 4))."""
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be an (N, 4) array of numbers: {exc}") from None
    if arr.size == 0:
        return np.zeros((0, 4), np.float64)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{what} must have shape (N, 4) (pixel x0, y0, x1, y1), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains non-finite coordinates")
    return arr


def _unit_interval(value: Any, what: str) -> float:
    return check_number(value, what, low=0.0, high=1.0, error=ValueError)


# ----------------------------------------------------------------------------- geometry
def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of (N, 4) xyxy boxes (float64); inverted boxes count as 0."""
    b = _as_boxes(boxes, "boxes")
    return np.clip(b[:, 2] - b[:, 0], 0.0, None) * np.clip(b[:, 3] - b[:, 1], 0.0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` (N, 4) with every box of ``b`` (M, 4): float64 (N, M).

    Pairs whose union is empty (two zero-area boxes) have IoU 0. Boxes that only touch have IoU 0.
    """
    a = _as_boxes(a, "a")
    b = _as_boxes(b, "b")
    area_a = box_area(a)
    area_b = box_area(b)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def clip_boxes(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """(N, 4) float64 boxes clipped to the image: ``0 <= x <= width``, ``0 <= y <= height``.

    The one box clipper of the perception path: the detectors clip their outputs and the
    segmenters their box prompts with it. ``ValueError`` for non-finite coordinates.
    """
    b = _as_boxes(boxes, "boxes").copy()
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0.0, float(width))
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0.0, float(height))
    return b


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy class-agnostic non-maximum suppression; the kept indices (int64), best score first.

    Repeatedly keeps the highest-scoring remaining box and removes every remaining box whose IoU
    with it is **greater than** ``iou_threshold``: boxes at exactly the threshold survive, and
    ``iou_threshold=1`` suppresses nothing (IoU never exceeds 1). Equal scores keep the earlier
    index first. Each step compares the kept box with all remaining boxes at once.
    """
    b = _as_boxes(boxes, "boxes")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != len(b):
        raise ValueError(f"nms: {count(len(b), 'box', 'boxes')} but {count(len(s), 'score')}")
    if not np.all(np.isfinite(s)):
        raise ValueError("nms: scores must be finite")
    thr = _unit_interval(iou_threshold, "iou_threshold")
    order = np.argsort(-s, kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        if not rest.size:
            break
        ious = box_iou(b[best:best + 1], b[rest])[0]
        order = rest[ious <= thr]
    return np.asarray(keep, dtype=np.int64)


# ----------------------------------------------------------------------------- detector output cleaning
def filter_detections(det: Detections, width: int, height: int, *, score_threshold: float, iou_threshold: float,
                      min_area_frac: float = 0.0005, max_area_frac: float = 0.9,
                      max_detections: int = 30) -> Detections:
    """Clean a detector's raw output for an image of ``width x height`` pixels.

    In order:

    1. clip every box to the image (``[0, width] x [0, height]``);
    2. drop degenerate boxes (zero width or height after clipping);
    3. keep boxes with ``score >= score_threshold``;
    4. keep boxes whose area, as a fraction of the image area, is within
       ``[min_area_frac, max_area_frac]`` (drops specks and whole-image "background" boxes);
    5. class-agnostic greedy NMS at ``iou_threshold`` (the same object found by two prompts keeps
       only its best-scoring box; see :func:`nms`);
    6. sort by score (best first; ties keep the input order) and keep at most ``max_detections``.

    The returned :class:`Detections` holds the clipped boxes and the surviving boxes' scores,
    labels and captions (if any).
    """
    if not isinstance(det, Detections):
        raise ValueError(f"det must be a Detections, got {type(det).__name__}")
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1 (pixels), got {v!r}")
    check_number(score_threshold, "score_threshold", error=ValueError)
    iou_thr = _unit_interval(iou_threshold, "iou_threshold")
    lo = _unit_interval(min_area_frac, "min_area_frac")
    hi = _unit_interval(max_area_frac, "max_area_frac")
    if lo > hi:
        raise ValueError(f"min_area_frac ({lo}) must be <= max_area_frac ({hi})")
    if isinstance(max_detections, bool) or not isinstance(max_detections, Integral) or max_detections < 0:
        raise ValueError(f"max_detections must be an integer >= 0, got {max_detections!r}")
    if len(det) == 0:
        return Detections.empty()

    boxes = clip_boxes(det.boxes, int(width), int(height))
    scores = det.scores.astype(np.float64)
    frac = box_area(boxes) / float(int(width) * int(height))
    ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    ok &= np.isfinite(scores) & (scores >= float(score_threshold))
    ok &= (frac >= lo) & (frac <= hi)
    idx = np.nonzero(ok)[0]
    if idx.size:
        idx = idx[nms(boxes[idx], scores[idx], iou_thr)]  # nms returns best-first, stable on ties
    idx = idx[: int(max_detections)]
    out = det.select(idx)
    return Detections(boxes[idx].astype(np.float32), out.scores, out.labels, out.captions)
