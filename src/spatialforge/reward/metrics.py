"""Scores of a reward curve against truth: per-frame distance error and Value-Order Correlation (VOC).

VOC (as GVL reports it) is the Spearman rank correlation between the predicted progress of the frames and
their time order: 1 when progress rises monotonically through a successful episode, near 0 or negative when
it does not. :func:`shuffled_voc` is the control: the same frames presented in a random order must give a
VOC near 0, so a high VOC cannot come from the predictor ignoring the frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from spatialforge.errors import SpatialForgeError

__all__ = ["distance_errors", "rank_average", "shuffled_voc", "spearman", "value_order_correlation"]


def rank_average(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` with ties given the average of the ranks they span."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), dtype=np.float64)
    sorted_v = v[order]
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return ranks


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation (Pearson correlation of the tie-averaged ranks); NaN when either is constant."""
    a, b = np.asarray(x, dtype=np.float64).reshape(-1), np.asarray(y, dtype=np.float64).reshape(-1)
    if len(a) != len(b):
        raise SpatialForgeError(f"spearman: {len(a)} values against {len(b)}")
    if len(a) < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise SpatialForgeError("spearman: needs at least 2 pairs of finite values")
    ra, rb = rank_average(a), rank_average(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb / den) if den > 0 else math.nan


def value_order_correlation(progress: Sequence[float] | np.ndarray, times: Sequence[float] | np.ndarray) -> float:
    """VOC: Spearman correlation of predicted ``progress`` with ``times`` (the frames' order)."""
    return spearman(progress, times)


def shuffled_voc(progress: Sequence[float] | np.ndarray, times: Sequence[float] | np.ndarray, *,
                 seed: int = 0, repeats: int = 20) -> float:
    """Mean VOC when the frames (their progress) are presented in random orders (``repeats`` permutations)."""
    p = np.asarray(progress, dtype=np.float64)
    rng = np.random.default_rng(seed)
    vals = [value_order_correlation(p[rng.permutation(len(p))], times) for _ in range(repeats)]
    return float(np.nanmean(vals))


def distance_errors(result: Any, truth: dict[str, Any], *, key: str = "distance_m") -> dict[str, Any]:
    """Per-frame absolute error of ``result``'s distances against ``truth[key]`` and its summary.

    Returns ``{"per_frame": [...], "mean_abs": ..., "median_abs": ..., "max_abs": ..., "mean_abs_measured":
    ...}``; ``mean_abs_measured`` leaves out the interpolated frames (None when every frame is interpolated).
    """
    if truth is None or key not in truth:
        raise SpatialForgeError(f"distance_errors: the truth has no {key!r}")
    pred = np.array([r.distance_m for r in result.rows], dtype=np.float64)
    true = np.asarray(truth[key], dtype=np.float64)
    if len(pred) != len(true):
        raise SpatialForgeError(f"distance_errors: {len(pred)} frames in the result, {len(true)} in the truth")
    err = np.abs(pred - true)
    measured = ~np.array([r.interpolated for r in result.rows], dtype=bool)
    return {
        "per_frame": [float(e) for e in err],
        "mean_abs": float(err.mean()), "median_abs": float(np.median(err)), "max_abs": float(err.max()),
        "mean_abs_measured": float(err[measured].mean()) if measured.any() else None,
    }
