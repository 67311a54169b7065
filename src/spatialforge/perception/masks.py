"""Turning per-detection masks into one instance map (numpy and scipy only; no torch).

A segmenter returns one boolean mask per detection, and the masks may overlap (a mug mask lies
inside the table mask). The 3D stages need every pixel to belong to at most one object, so:

* :func:`resolve_overlaps` flattens ``N`` masks into an ``(H, W)`` int32 instance map where pixel
  value ``i + 1`` means mask ``i`` and ``0`` means no mask. Where masks overlap, the pixel goes to
  the mask of **smaller area** (the mug keeps its pixels, the table loses them); equal areas go to
  the higher score, then to the lower index. With ``order="score"`` the higher score wins instead
  (then the smaller area, then the lower index).
* :func:`clean_instance_mask` keeps, per instance id, only its largest 8-connected component and
  drops ids whose remaining area is below ``min_pixels``.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from scipy import ndimage

from spatialforge.perception.checks import check_number, count

__all__ = ["ORDERS", "clean_instance_mask", "resolve_overlaps"]

#: Valid values of ``resolve_overlaps(order=...)``.
ORDERS = ("area", "score")

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _box_window(box: np.ndarray, margin: float, height: int, width: int) -> tuple[slice, slice]:
    """Rows and columns of the pixels inside pixel-xyxy ``box`` grown by ``margin``, rounded outwards."""
    x0, y0, x1, y1 = (float(v) for v in box)
    c0 = max(int(np.floor(x0 - margin)), 0)
    r0 = max(int(np.floor(y0 - margin)), 0)
    c1 = min(int(np.ceil(x1 + margin)) + 1, width)
    r1 = min(int(np.ceil(y1 + margin)) + 1, height)
    return slice(r0, max(r1, r0)), slice(c0, max(c1, c0))


def resolve_overlaps(masks: np.ndarray, scores: np.ndarray, boxes: np.ndarray | None = None, order: str = "area",
                     *, box_margin: float = 2.0) -> np.ndarray:
    """Give every pixel to at most one mask: an ``(H, W)`` int32 map, ``i + 1`` for mask ``i``, 0 for none.

    Overlap rule (``order="area"``, the default): a pixel covered by several masks goes to the mask
    with the smallest area (pixel count), so an object lying on or in front of a larger one keeps
    its pixels; equal areas go to the higher score, equal scores to the lower index.
    ``order="score"``: the higher score wins, then the smaller area, then the lower index.

    Args:
        masks: ``(N, H, W)`` masks (bool, or numbers where non-zero means inside).
        scores: ``(N,)`` finite quality scores (e.g. the segmenter's predicted IoU).
        boxes: optional ``(N, 4)`` pixel xyxy boxes the masks were prompted with. When given, each
            mask is first restricted to its box grown by ``box_margin`` pixels on every side
            (rounded outwards), which removes mask leakage onto neighbouring objects; areas are
            counted after that restriction.
        order: ``"area"`` or ``"score"``.
        box_margin: the growth of the boxes in pixels (>= 0); unused without ``boxes``.

    Raises:
        ValueError: bad shapes, non-finite scores or boxes, an unknown ``order`` or a negative margin.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    m = np.asarray(masks)
    if m.ndim != 3:
        raise ValueError(f"masks must be an (N, H, W) array, got shape {m.shape}")
    if m.dtype != bool:
        if not np.issubdtype(m.dtype, np.number):
            raise ValueError(f"masks must be boolean or numeric, got dtype {m.dtype}")
        m = m != 0
    n, height, width = m.shape
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != n:
        raise ValueError(f"{count(n, 'mask')} but {count(len(s), 'score')}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    if boxes is not None:
        check_number(box_margin, "box_margin", low=0.0, error=ValueError)
        b = np.asarray(boxes, dtype=np.float64)
        if b.shape != (n, 4):
            raise ValueError(f"boxes must have shape ({n}, 4) for {count(n, 'mask')}, got {b.shape}")
        if not np.all(np.isfinite(b)):
            raise ValueError("boxes must be finite")
        clipped = np.zeros_like(m)
        for i in range(n):
            rows, cols = _box_window(b[i], float(box_margin), height, width)
            clipped[i, rows, cols] = m[i, rows, cols]
        m = clipped

    out = np.zeros((height, width), dtype=np.int32)
    if n == 0:
        return out
    area = m.reshape(n, -1).sum(axis=1)
    index = np.arange(n)
    # np.lexsort sorts by the last key first: the winner of an overlap comes first
    keys = (index, -s, area) if order == "area" else (index, area, -s)
    for i in np.lexsort(keys):
        free = m[i] & (out == 0)
        out[free] = i + 1
    return out


def clean_instance_mask(instances: np.ndarray, min_pixels: int,
                        keep_largest_component: bool = True) -> tuple[np.ndarray, list[int]]:
    """Clean an ``(H, W)`` instance map: largest 8-connected component per id, then drop small ids.

    For every id ``> 0`` present in ``instances``: when ``keep_largest_component`` is true, only its
    largest 8-connected component (``scipy.ndimage.label``) is kept (on equal sizes, the component
    met first in row-major order); then, if fewer than ``min_pixels`` pixels remain, the id is
    dropped. Removed pixels become 0. Ids are not renumbered.

    Returns:
        ``(cleaned, dropped_ids)``: a new int32 map (the input is not modified) and the sorted ids
        that were present in the input but no longer are.

    Raises:
        ValueError: ``instances`` is not a 2-D integer array of values >= 0, or ``min_pixels`` is
            not an integer >= 0.
    """
    if isinstance(min_pixels, bool) or not isinstance(min_pixels, Integral) or min_pixels < 0:
        raise ValueError(f"min_pixels must be an integer >= 0, got {min_pixels!r}")
    inst = np.asarray(instances)
    if inst.ndim != 2:
        raise ValueError(f"instances must be an (H, W) array, got shape {inst.shape}")
    if inst.dtype == bool or not np.issubdtype(inst.dtype, np.integer):
        raise ValueError(f"instances must be an integer array, got dtype {inst.dtype}")
    if inst.size and int(inst.min()) < 0:
        raise ValueError("instances must be >= 0 (0 = no instance)")
    if inst.size and int(inst.max()) > np.iinfo(np.int32).max:
        raise ValueError("instance ids must fit in int32")
    out = inst.astype(np.int32, copy=True)
    if not out.size:
        return out, []

    dropped: list[int] = []
    # find_objects gives, for each id, the bounding slices of its pixels (None if absent)
    for idx, window in enumerate(ndimage.find_objects(out)):
        if window is None:
            continue
        ident = idx + 1
        region = out[window]
        here = region == ident
        if keep_largest_component:
            labels, count = ndimage.label(here, structure=_EIGHT_CONNECTED)
            if count > 1:
                sizes = np.bincount(labels.ravel(), minlength=count + 1)
                sizes[0] = 0
                here_kept = labels == int(np.argmax(sizes))
                region[here & ~here_kept] = 0
                here = here_kept
        if int(here.sum()) < min_pixels:
            region[here] = 0
            dropped.append(ident)
    return out, dropped
