"""KLD / SIM / NSS for affordance heatmaps, following the AGD20K evaluation protocol (torch-free).

The protocol is the one of the reference AGD20K evaluation code (Cross-View-AG, LOCATE, and the
methods that reuse it). Per test image:

1. Prediction: resize to ``size x size`` (bilinear, OpenCV ``INTER_LINEAR`` semantics, see
   :func:`resize_bilinear`), *then* min-max normalise: ``P = (P - min) / (max - min + 1e-10)``.
2. Ground truth: the uint8 PNG divided by 255, *then* resized the same way (the reference divides
   first; bilinear resizing is linear, so the order only changes float rounding).
3. ``eps = 1e-12``; ``p = P / (sum P + eps)``, ``g = G / (sum G + eps)``.

   * ``KLD = sum g * log(g / (p + eps) + eps)`` (lower is better)
   * ``SIM = sum min(p, g)`` (higher is better)
   * ``NSS``: ``Z = (P - mean P) / std P`` (population std, no epsilon in the reference),
     ``F = 1[(G - min G) / (max G - min G + 1e-12) > 0.1]`` (computed on ``G / 255`` exactly like the
     reference does), ``NSS = sum(Z * F) / sum(F + 1e-12)`` (the epsilon is added per pixel).

The dataset score is the plain mean over test images.

Edge cases (no NaN is ever returned):

* Constant prediction: min-max turns it into all zeros, so ``p == 0``: KLD is large but finite
  (``sum g * log(g * 1e12 + 1e-12)``) and SIM is 0 - both exactly what the reference formulas give.
  ``std P == 0`` makes the reference's NSS ``0 / 0 = NaN``; here **NSS is defined as 0** (the chance
  level: a constant map ranks no pixel above another). This is the one deliberate deviation.
* Empty ground truth (all zeros): ``g == 0`` so KLD = 0 and SIM = 0; ``F`` is empty so NSS = 0.
  This is what the reference formulas give (KLD 0 is a quirk: an empty GT rewards any prediction).
* Zeros in the prediction are fine (``p + eps`` in the KLD denominator).

Numerics differ from the reference only at float rounding level: everything here is float64, while
the reference resizes float32 network outputs in float32 and OpenCV keeps float32 interpolation
weights (differences are around 1e-7).
"""

from __future__ import annotations

import numpy as np

from spatialforge.errors import ConfigError

__all__ = [
    "EPS",
    "MINMAX_EPS",
    "NSS_THRESHOLD",
    "SIZE",
    "kld",
    "minmax",
    "nss",
    "prepare",
    "resize_bilinear",
    "score_map",
    "sim",
]

SIZE = 224
"""The side of the square evaluation resolution of the AGD20K protocol."""
EPS = 1e-12
"""The epsilon of the KLD / SIM normalisation and of the NSS fixation map."""
MINMAX_EPS = 1e-10
"""The epsilon of the prediction min-max normalisation."""
NSS_THRESHOLD = 0.1
"""A GT pixel is a "fixation" for NSS when its min-max normalised value is strictly above this."""


def _as_map(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x)
    if not (a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ConfigError(f"{name}: expected a real-valued 2-D map, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ConfigError(f"{name}: expected a 2-D map (H, W), got shape {a.shape}")
    if a.size == 0:
        raise ConfigError(f"{name}: the map is empty (shape {a.shape})")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ConfigError(f"{name}: the map has NaN or infinite values")
    return a


def _pair(pred: np.ndarray, gt: np.ndarray, *, nonneg: bool) -> tuple[np.ndarray, np.ndarray]:
    p = _as_map(pred, "pred")
    g = _as_map(gt, "gt")
    if p.shape != g.shape:
        raise ConfigError(f"pred and gt shapes differ: {p.shape} vs {g.shape}; call prepare() first")
    if nonneg:
        if p.min() < 0:
            raise ConfigError("pred has negative values; min-max normalise it first (prepare())")
        if g.min() < 0:
            raise ConfigError("gt has negative values; expected a heatmap in [0, 1]")
    return p, g


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of OpenCV's INTER_LINEAR along one axis."""
    scale = n_in / n_out
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    i0 = np.floor(src).astype(np.int64)
    frac = src - i0
    below = i0 < 0  # left of the first pixel centre: take the first pixel (OpenCV clamps, no extrapolation)
    i0[below] = 0
    frac[below] = 0.0
    above = i0 >= n_in - 1  # at or right of the last pixel centre: take the last pixel
    i0[above] = n_in - 1
    frac[above] = 0.0
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, frac


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D float map to ``size = (height, width)`` like ``cv2.resize(x, (width, height))``.

    OpenCV ``INTER_LINEAR``: separable linear interpolation with half-pixel centres
    (``src = (dst + 0.5) * in / out - 0.5``), coordinates clamped to the border pixels, and no
    antialiasing when downsampling (unlike PIL). Note the argument order: OpenCV's ``dsize`` is
    ``(width, height)``, this function's ``size`` is ``(height, width)``. Computed in float64.
    """
    a = _as_map(x, "x")
    if len(size) != 2:
        raise ConfigError(f"size must be (height, width), got {size!r}")
    h, w = (int(s) for s in size)
    if h <= 0 or w <= 0 or h != size[0] or w != size[1]:
        raise ConfigError(f"size must be two positive integers (height, width), got {size!r}")
    r0, r1, fy = _axis_weights(a.shape[0], h)
    c0, c1, fx = _axis_weights(a.shape[1], w)
    rows = a[r0] * (1.0 - fy)[:, None] + a[r1] * fy[:, None]
    return rows[:, c0] * (1.0 - fx) + rows[:, c1] * fx


def minmax(x: np.ndarray, eps: float = MINMAX_EPS) -> np.ndarray:
    """``(x - min) / (max - min + eps)``; a constant map becomes all zeros."""
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        raise ConfigError(f"minmax: the map is empty (shape {a.shape})")
    lo = a.min()
    return (a - lo) / (a.max() - lo + eps)


def _distributions(p: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return p / (p.sum() + EPS), g / (g.sum() + EPS)


def kld(pred: np.ndarray, gt: np.ndarray) -> float:
    """Kullback-Leibler divergence of the prediction from the GT on prepared maps (lower is better)."""
    p, g = _distributions(*_pair(pred, gt, nonneg=True))
    return float(np.sum(g * np.log(g / (p + EPS) + EPS)))


def sim(pred: np.ndarray, gt: np.ndarray) -> float:
    """Histogram intersection of the two maps normalised to sum 1, in [0, 1] (higher is better)."""
    p, g = _distributions(*_pair(pred, gt, nonneg=True))
    return float(np.sum(np.minimum(p, g)))


def nss(pred: np.ndarray, gt: np.ndarray) -> float:
    """Normalised scanpath saliency on prepared maps (higher is better); 0 for a constant prediction."""
    p, g = _pair(pred, gt, nonneg=False)
    # The reference divides both maps by 255 here: irrelevant for the z-score, but it scales the GT
    # relative to the 1e-12 of its min-max, so it is replicated for the fixation map.
    p = p / 255.0
    g = g / 255.0
    std = p.std()  # population std (ddof=0), no epsilon, as in the reference
    if std == 0.0:
        return 0.0  # the reference gives 0 / 0 = NaN; a constant map scores the chance level 0
    z = (p - p.mean()) / std
    fix = ((g - g.min()) / (g.max() - g.min() + EPS) > NSS_THRESHOLD).astype(np.float64)
    return float(np.sum(z * fix) / np.sum(fix + EPS))


def _gt_to_float(gt: np.ndarray) -> np.ndarray:
    a = np.asarray(gt)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float64) / 65535.0
    if a.dtype == np.bool_:
        return a.astype(np.float64)
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float64)
    raise ConfigError(f"gt: expected a uint8 / uint16 PNG map or a float map in [0, 1], got dtype {a.dtype}")


def prepare(pred: np.ndarray, gt: np.ndarray, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Bring a raw prediction and a GT map to the protocol's ``size x size`` float maps.

    ``pred``: any real 2-D map at any resolution (resized, then min-max normalised).
    ``gt``: a uint8 map (divided by 255; uint16 by 65535) or a float map in [0, 1], then resized.
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size <= 0:
        raise ConfigError(f"size must be a positive integer, got {size!r}")
    p = _as_map(pred, "pred")
    g = _as_map(_gt_to_float(gt), "gt")
    if g.min() < 0:
        raise ConfigError(f"gt has negative values (min {g.min():.4g}); expected a heatmap in [0, 1]")
    s = (int(size), int(size))
    return minmax(resize_bilinear(p, s)), resize_bilinear(g, s)


def score_map(pred: np.ndarray, gt: np.ndarray, size: int = SIZE) -> dict[str, float]:
    """``{"KLD", "SIM", "NSS"}`` of one raw prediction against one GT map (see :func:`prepare`)."""
    p, g = prepare(pred, gt, size)
    return {"KLD": kld(p, g), "SIM": sim(p, g), "NSS": nss(p, g)}
