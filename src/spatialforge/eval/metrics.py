"""Spatial-VQA metrics with bootstrap confidence intervals, Markdown reports and model comparisons (torch-free).

Per question
------------
:func:`score_item` turns a :class:`~spatialforge.eval.types.BenchmarkItem` and the
:class:`~spatialforge.eval.types.ParsedAnswer` read from a model's reply into one JSON-serialisable
record. Whether a question is *answered*:

* ``status`` ``ok`` or ``range`` with a usable value is answered. A range ("2-3 m") is answered by
  its midpoint (the parser puts the midpoint in ``value``) and the record carries the flag ``range``
  (as Q-Spatial Bench's helper code does, which averages the numbers inside its answer box).
* ``refusal``, ``no_answer`` and ``ambiguous`` are unanswered.
* A NaN / inf value from a parser is unanswered: the record's ``status`` becomes ``no_answer``, its
  ``value`` ``None`` and it gets the flag ``non_finite``. A value of the wrong type (a bool for a
  number, a non-integer option index) is unanswered likewise, with the flag ``bad_value``; an
  answered status without a value gets ``no_value``.

Unanswered questions stay in every denominator below that is "all questions" and count as failures
there (the benchmarks' worst case: wrong / outside / MRA 0).

Record fields: ``id, benchmark, type, kind, unit, question, truth, answer, status, flags, value,
answered, invalid_truth, correct, ratio, abs_rel_err, within_2x, within_1.25x, within_25pct, mra,
hour, hour_err, within_1h`` (point records also ``in_mask, error_m, pixel_error``). Fields that do not
apply to a question's kind are ``None``.

* ``yes_no`` / ``choice``: ``correct`` = (value == truth); unanswered -> ``False``.
* quantitative, unit ``m`` / ``ratio`` (truth ``y`` > 0, prediction ``ŷ``):
  ``ratio`` = ŷ / y, ``abs_rel_err`` = |ŷ − y| / y (both ``None`` when unanswered). The bands
  (unanswered -> ``False``; both bounds inside):

  - ``within_2x``: 1/2 ≤ ŷ/y ≤ 2, i.e. max(ŷ/y, y/ŷ) ≤ 2 (a factor of 2 either way);
  - ``within_1.25x``: 1/1.25 = 0.8 ≤ ŷ/y ≤ 1.25, i.e. max(ŷ/y, y/ŷ) ≤ 1.25 (a factor of 1.25 either
    way, the same multiplicative rule as within_2x; 0.75x is outside);
  - ``within_25pct``: 0.75 ≤ ŷ/y ≤ 1.25, i.e. |ŷ − y| ≤ 0.25·y (±25 %, additive: 0.75x is inside,
    0.79x too).

  ``mra`` = (1/10) Σ_{θ ∈ {0.50, 0.55, …, 0.95}} 1[|ŷ − y| / y < 1 − θ] (strict; unanswered -> 0).
  A truth that is not finite or ≤ 0 makes the ratio undefined: the record gets ``invalid_truth =
  True`` and ``None`` for all of these fields.
* ``point`` (unit ``point``, the affordance "where would you hold ...?" questions; truth = an image
  pixel, a 3D point in metres and the part's mask in ``item.meta["mask"]``): the answer's pixel
  (rounded to whole pixels) is ``in_mask`` when the mask holds it; ``pixel_error`` = its distance in
  pixels to the truth pixel, ``error_m`` = the distance in metres of its 3D point to the truth point
  (``None`` when the answer gives no pixel / no 3D point); ``correct`` = ``in_mask``; unanswered ->
  ``in_mask`` and ``correct`` ``False``. Only point records carry the three point fields. An item
  without a readable mask sets ``invalid_truth``.
* quantitative, unit ``count`` (a whole number >= 0): ``correct`` = (value == truth); unanswered ->
  ``False``; a truth that is not a whole number >= 0 sets ``invalid_truth``.
* quantitative, unit ``clock`` (hours 1-12): the answer (which may hold minutes or be the midpoint
  of a range, e.g. 10.5 for "10:30") is turned into a whole ``hour`` by the item's convention,
  ``item.meta["clock_rounding"]``:

  - ``"nearest"`` (the default; spatialforge's own questions, whose truth is the hour nearest to the
    direction): ⌊ŷ + 0.5⌋, so 10:20 is 10 and 10:30 is 11;
  - ``"up"`` (SpatialRGPT-Bench, whose truth is 12 − ⌊angle / 30°⌋ with the angle measured from 12
    o'clock counter-clockwise, i.e. the hour at the clockwise end of the 30° sector holding the
    direction): ⌈ŷ⌉, so 10:20 and 10:40 are both 11, 10:00 is 10.

  0 becomes 12. ``hour_err`` = circular distance min(d, 12 − d) with d = |hour − y| mod 12 (12 vs 1
  is 1 hour), ``correct`` = (hour_err == 0), ``within_1h`` = (hour_err ≤ 1); unanswered ->
  ``False`` / ``None``.

Boundary comparisons use a slack of 1e-9 toward the decimal definition, so that values given in
decimal land on the side they are on in decimal arithmetic: 2.0 vs 1.0 and 0.5 vs 1.0 are within 2x,
1.25 / 0.8 vs 1.0 within 1.25x, 0.75 vs 1.0 within ±25 %, and 1.2 vs 1.0 (relative error 0.2,
0.19999999999999996 in binary) does *not* pass the MRA threshold θ = 0.80 (0.2 < 0.2 is false).

Aggregates (:func:`summarize`)
------------------------------
Per scope (overall, each ``kind``, each ``type`` and, when the records hold several benchmarks,
each benchmark with its own kinds and types). Every rate is a dict ``{"value", "ci": [lo, hi], "n"}``
where ``n`` is its denominator; a rate with an empty denominator is ``{"value": None, "ci": None,
"n": 0}`` (never NaN).

* ``answered`` — answered questions / all questions of the scope.
* ``refusal_rate`` / ``ambiguous_rate`` — status ``refusal`` / ``ambiguous`` over all questions;
  ``counts`` holds the raw counts of every status and of ``non_finite`` and ``invalid_truth``.
* ``qualitative`` (kinds ``yes_no`` + ``choice``): ``accuracy`` = correct / all qualitative
  questions (unanswered are wrong); ``answered`` = answered / all qualitative questions.
* ``quantitative`` (units ``m`` + ``ratio``; questions with an invalid truth are excluded from every
  quantitative rate and counted in ``invalid_truth``; denominators below are the valid questions):

  - ``answered`` — share of questions whose answer holds a number.
  - ``within_2x`` — share of *all* valid questions whose answer is within [0.5x, 2x] of the truth;
    unanswered = fail. SpatialVLM (Chen et al., CVPR 2024) reports answers "within 50%-200% of the
    ground truth"; Q-Spatial Bench (Liao et al., EMNLP 2024) calls it the success rate with
    δ = 2, success = max(ŷ/y, y/ŷ) < δ in its helper code (strict, so the two differ only for an
    answer exactly at 0.5x or 2x, which is inside here).
  - ``within_1.25x`` — share of all valid questions with 0.8·y ≤ ŷ ≤ 1.25·y (a factor of 1.25 either
    way): the δ < 1.25 accuracy of depth estimation, which SpatialRGPT-Bench's evaluation code also
    reports for lengths (``a1`` = mean of max(y/ŷ, ŷ/y) < 1.25, strict; ``scripts/srgpt/eval/
    evaluate_spatial_with_gpt4.py`` of github.com/AnjieCheng/SpatialRGPT); unanswered = fail.
  - ``within_25pct`` — share of all valid questions with 0.75·y ≤ ŷ ≤ 1.25·y: the SpatialRGPT-Bench
    (Cheng et al., NeurIPS 2024) quantitative success rate ("within ±25%", bounds inclusive in the
    same evaluation code; unmatched answers count as failures). It accepts more below the truth
    than ``within_1.25x`` (0.75x-0.8x).
  - ``mra`` — VSI-Bench (Yang et al., "Thinking in Space", 2024) mean relative accuracy: the mean over
    all valid questions of the per-question MRA above (unanswered = 0, VSI-Bench's worst case). The
    paper's formula uses the strict "<" implemented here; its lmms-eval code compares with "<=",
    which differs only for a relative error exactly on one of the ten tolerances.
  - ``abs_rel_err_median`` / ``abs_rel_err_mean`` — median / mean of |ŷ − y| / y over the *answered*
    valid questions (SpatialRGPT-Bench reports the mean).
* ``count`` (unit ``count``, the composite "how many objects ..." questions): ``accuracy`` = the answer is
  exactly the true whole number / all count questions (unanswered or non-integer answers are wrong),
  ``answered``.
* ``point`` (kind ``point``; items with an invalid truth excluded): ``in_mask`` = answers whose pixel lies
  in the mask / all point questions (unanswered are outside); ``answered``; ``answered_3d`` = answers
  with a 3D point / all point questions; ``within_5cm`` = answers whose 3D point is within 0.05 m of
  the truth / all point questions (unanswered or without a 3D point = fail); ``error_m_median`` /
  ``error_m_mean`` = median / mean 3D error (m) over the answers with a 3D point;
  ``pixel_error_median`` over the answers with a pixel.
* ``clock`` (unit ``clock``): ``accuracy`` = exact hour / all clock questions, ``within_1h`` = circular
  error ≤ 1 hour / all clock questions (SpatialRGPT-Bench's direction success), ``answered``; the
  hour of an answer follows each item's rounding convention (above).

Confidence intervals: nonparametric percentile bootstrap over questions. For each scope a numpy
``Generator`` seeded with ``(seed, crc32(scope name))`` draws ``n_boot`` multinomial weight vectors
(equivalent to resampling the scope's questions with replacement); each rate is recomputed as a
weighted ratio (a weighted median for ``abs_rel_err_median``) in one matrix product, resamples whose
denominator is empty are dropped, and ``ci`` holds the (1 − confidence)/2 and (1 + confidence)/2
percentiles. A scope with one question has a degenerate CI [v, v]. ``n_boot = 0`` gives ``ci = None``.
Everything is deterministic for a given seed.
"""

from __future__ import annotations

import json
import math
import numbers
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spatialforge.eval.types import KINDS, BenchmarkItem, ParsedAnswer
from spatialforge.io.dataset import rle_contains, rle_problem

__all__ = ["BREAKDOWNS", "compare_markdown", "score_item", "summarize", "summary_markdown", "write_summary"]

SCHEMA = "spatialforge.eval.summary/1"
QUALITATIVE_KINDS = ("yes_no", "choice")
RATIO_UNITS = ("m", "ratio")
STATUSES = ("ok", "range", "refusal", "no_answer", "ambiguous")
# 1 - theta for theta in {0.50, 0.55, ..., 0.95}: 0.50, 0.45, ..., 0.05 (each the double nearest the decimal)
MRA_TOLERANCES = np.arange(50, 0, -5) / 100.0
_SLACK = 1e-9
CLOCK_ROUNDINGS = ("nearest", "up")
_BOOT_CELLS = 2_000_000  # bootstrap weight-matrix cells per chunk (bounds memory for large benchmarks)


# ----------------------------------------------------------------------------------------------- per question


def _finite_number(v: Any) -> float | None:
    """``v`` as a finite float; ``None`` for bools, non-numbers and NaN / inf."""
    if isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Real):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _is_non_finite(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_) and not math.isfinite(float(v))


def _plain(v: Any) -> Any:
    """numpy scalars -> Python scalars; NaN / inf -> None (JSON has neither)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _mra(rel_err: float) -> float:
    return float(np.count_nonzero(rel_err < MRA_TOLERANCES - _SLACK)) / MRA_TOLERANCES.size


def _within(ratio: float, low: float, high: float) -> bool:
    return bool(low - _SLACK <= ratio <= high + _SLACK)


def _clock_rounding(item: BenchmarkItem) -> str:
    meta = item.meta if isinstance(item.meta, Mapping) else {}
    rounding = meta.get("clock_rounding", "nearest")
    if rounding not in CLOCK_ROUNDINGS:
        raise ValueError(f"{item.id}: meta clock_rounding must be one of {', '.join(CLOCK_ROUNDINGS)}, "
                         f"got {rounding!r}")
    return rounding


def _whole_hour(value: float, rounding: str) -> int:
    """The hour 1-12 of a clock reading: nearest (halves up) or the next whole hour (``up``)."""
    hour = math.floor(value + 0.5) if rounding == "nearest" else math.ceil(value - _SLACK)
    hour %= 12
    return 12 if hour == 0 else int(hour)


def _answer_value(item: BenchmarkItem, value: Any) -> tuple[Any, str | None]:
    """The answer's value in the item's type, or ``(None, flag)`` when it cannot be used."""
    if value is None:
        return None, "no_value"
    if _is_non_finite(value):
        return None, "non_finite"
    if item.kind == "yes_no":
        return (bool(value), None) if isinstance(value, bool | np.bool_) else (None, "bad_value")
    if item.kind == "choice":
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real) or float(value) != int(value):
            return None, "bad_value"
        return int(value), None
    if item.kind == "point":
        return _point_value(value)
    num = _finite_number(value)
    return (num, None) if num is not None else (None, "bad_value")


def _point_value(value: Any) -> tuple[Any, str | None]:
    """A point answer ``{"pixel": [u, v] or None, "point_3d": [x, y, z] or None}`` with finite numbers."""
    if not isinstance(value, Mapping):
        return None, "bad_value"
    out: dict[str, list[float] | None] = {}
    for key, n in (("pixel", 2), ("point_3d", 3)):
        v = value.get(key)
        if v is None:
            out[key] = None
            continue
        if not isinstance(v, list | tuple) or len(v) != n:
            return None, "bad_value"
        nums = [_finite_number(x) for x in v]
        if any(x is None for x in nums):
            return None, "non_finite" if any(_is_non_finite(x) for x in v) else "bad_value"
        out[key] = nums  # type: ignore[assignment]
    if out["pixel"] is None and out["point_3d"] is None:
        return None, "no_value"
    return out, None


def _score_point(item: BenchmarkItem, rec: dict[str, Any], value: Any, answered: bool) -> None:
    meta = item.meta if isinstance(item.meta, Mapping) else {}
    mask = meta.get("mask")
    truth = item.truth if isinstance(item.truth, Mapping) else {}
    rec["truth"] = {"pixel": [_plain(x) for x in truth.get("pixel") or ()],
                    "point_3d": [_plain(x) for x in truth.get("point_3d") or ()]}
    rec.update(in_mask=None, error_m=None, pixel_error=None)
    if rle_problem(mask) is not None or len(rec["truth"]["pixel"]) != 2 or len(rec["truth"]["point_3d"]) != 3:
        rec["invalid_truth"] = True
        return
    rec["in_mask"] = rec["correct"] = False
    if not answered:
        return
    if value["pixel"] is not None:
        u, v = (int(math.floor(x + 0.5)) for x in value["pixel"])
        rec["in_mask"] = rec["correct"] = rle_contains(mask, u, v)
        rec["pixel_error"] = float(math.dist(value["pixel"], rec["truth"]["pixel"]))
    if value["point_3d"] is not None:
        rec["error_m"] = float(math.dist(value["point_3d"], rec["truth"]["point_3d"]))


def score_item(item: BenchmarkItem, parsed: ParsedAnswer, answer_text: str = "") -> dict:
    """One per-question record (JSON-serialisable); the fields are defined in the module docstring."""
    flags = list(parsed.flags)
    status = parsed.status
    if status == "range" and "range" not in flags:
        flags.append("range")
    if status in ("ok", "range"):
        value, problem = _answer_value(item, parsed.value)
        if problem is not None:
            status = "no_answer"
            flags.append(problem)
    else:  # keep what an unanswered parse holds, minus NaN / inf
        value = _plain(parsed.value)
        if _is_non_finite(parsed.value):
            flags.append("non_finite")
    answered = status in ("ok", "range")

    rec: dict[str, Any] = {
        "id": item.id, "benchmark": item.benchmark, "type": item.type, "kind": item.kind, "unit": item.unit,
        "question": item.question, "truth": _plain(item.truth), "answer": answer_text, "status": status,
        "flags": flags, "value": value, "answered": answered, "invalid_truth": False, "correct": None,
        "ratio": None, "abs_rel_err": None, "within_2x": None, "within_1.25x": None, "within_25pct": None,
        "mra": None, "hour": None, "hour_err": None, "within_1h": None,
    }
    if item.kind == "yes_no":
        rec["truth"] = bool(item.truth)
        rec["correct"] = answered and value == bool(item.truth)
    elif item.kind == "choice":
        rec["truth"] = int(item.truth)
        rec["correct"] = answered and value == int(item.truth)
    elif item.kind == "point":
        _score_point(item, rec, value, answered)
    elif item.unit == "count":  # a whole number: exact match only
        truth = _finite_number(item.truth)
        if truth is None or truth < 0 or truth != int(truth):
            rec["invalid_truth"] = True
            return rec
        rec["truth"] = int(truth)
        rec["correct"] = bool(answered and value == int(truth))
    elif item.unit == "clock":
        truth = _finite_number(item.truth)
        if truth is None:
            rec["invalid_truth"] = True
            return rec
        rec["truth"] = truth
        rec["correct"] = rec["within_1h"] = False
        if answered:
            rounding = _clock_rounding(item)
            hour = _whole_hour(value, rounding)
            d = abs(hour - _whole_hour(truth, rounding)) % 12
            err = int(min(d, 12 - d))
            rec.update(hour=hour, hour_err=err, correct=err == 0, within_1h=err <= 1)
    else:
        truth = _finite_number(item.truth)
        if truth is None or truth <= 0:
            rec["invalid_truth"] = True
            return rec
        rec["truth"] = truth
        rec.update({"within_2x": False, "within_1.25x": False, "within_25pct": False, "mra": 0.0})
        if answered:
            ratio = value / truth
            rel = abs(value - truth) / truth
            rec.update({
                "ratio": ratio, "abs_rel_err": rel, "mra": _mra(rel),
                "within_2x": _within(ratio, 1 / 2.0, 2.0),
                "within_1.25x": _within(ratio, 1 / 1.25, 1.25),
                "within_25pct": _within(ratio, 0.75, 1.25),
            })
    return rec


# ----------------------------------------------------------------------------------------------- aggregation


def _flag(recs: Sequence[Mapping], fn: Callable[[Mapping], Any]) -> np.ndarray:
    return np.fromiter((bool(fn(r)) for r in recs), dtype=bool, count=len(recs))


def _answered(r: Mapping) -> bool:
    return bool(r.get("answered", r.get("status") in ("ok", "range")))


def _num_or_nan(v: Any) -> float:
    f = _finite_number(v)
    return math.nan if f is None else f


def _rel_err(r: Mapping) -> float:
    v = r.get("abs_rel_err")
    return float(v) if v is not None and _answered(r) else math.nan


class _Bootstrap:
    """Rates of one scope, point estimates and percentile CIs from shared multinomial resamples."""

    def __init__(self, n: int, *, n_boot: int, rng: np.random.Generator, confidence: float) -> None:
        self.n, self.n_boot, self.rng, self.confidence = n, n_boot, rng, confidence
        self._means: list[tuple[str, np.ndarray, np.ndarray]] = []  # (name, values, mask)
        self._medians: list[tuple[str, np.ndarray, np.ndarray]] = []

    def mean(self, name: str, values: np.ndarray, mask: np.ndarray) -> None:
        self._means.append((name, np.where(mask, values, 0.0).astype(float), mask.astype(float)))

    def median(self, name: str, values: np.ndarray, mask: np.ndarray) -> None:
        self._medians.append((name, values.astype(float), mask))

    def _weights(self) -> list[np.ndarray]:
        """``n_boot`` resamples as (rows, n) count matrices: counts[b, i] = times question i was drawn."""
        rows = max(1, _BOOT_CELLS // max(self.n, 1))
        p = np.full(self.n, 1.0 / self.n)
        out, left = [], self.n_boot
        while left > 0:
            k = min(rows, left)
            out.append(self.rng.multinomial(self.n, p, size=k).astype(float))
            left -= k
        return out

    def _ci(self, boot: np.ndarray) -> list[float] | None:
        boot = boot[np.isfinite(boot)]
        if boot.size == 0:
            return None
        tail = 50.0 * (1.0 - self.confidence)
        lo, hi = np.percentile(boot, [tail, 100.0 - tail])
        return [float(lo), float(hi)]

    def run(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        weights = self._weights() if self.n_boot > 0 and self.n > 0 else []
        if self._means:
            X = np.stack([x for _, x, _ in self._means], axis=1)  # (n, k)
            M = np.stack([m for _, _, m in self._means], axis=1)
            num, den = X.sum(axis=0), M.sum(axis=0)
            boots = []
            for W in weights:
                bn, bd = W @ X, W @ M
                with np.errstate(invalid="ignore", divide="ignore"):
                    boots.append(np.where(bd > 0, bn / np.where(bd > 0, bd, 1.0), np.nan))
            boot = np.concatenate(boots, axis=0) if boots else None
            for j, (name, _, _) in enumerate(self._means):
                if den[j] == 0:
                    out[name] = _null()
                    continue
                ci = self._ci(boot[:, j]) if boot is not None else None
                out[name] = {"value": float(num[j] / den[j]), "ci": ci, "n": int(den[j])}
        for name, values, mask in self._medians:
            idx = np.flatnonzero(mask)
            if idx.size == 0:
                out[name] = _null()
                continue
            order = idx[np.argsort(values[idx], kind="stable")]
            v = values[order]
            boots = [_weighted_median(v, W[:, order]) for W in weights]
            ci = self._ci(np.concatenate(boots)) if boots else None
            out[name] = {"value": float(np.median(v)), "ci": ci, "n": int(idx.size)}
        return out


def _weighted_median(sorted_values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Row-wise median of ``sorted_values`` repeated ``counts[b, j]`` times (NaN for an empty row)."""
    cum = np.cumsum(counts, axis=1)
    k = cum[:, -1]
    lo_rank, hi_rank = np.floor((k + 1) / 2), np.floor(k / 2) + 1  # 1-based ranks of the two middle values
    lo = np.argmax(cum >= lo_rank[:, None], axis=1)
    hi = np.argmax(cum >= hi_rank[:, None], axis=1)
    med = (sorted_values[lo] + sorted_values[hi]) / 2.0
    return np.where(k > 0, med, np.nan)


def _null() -> dict:
    return {"value": None, "ci": None, "n": 0}


def _scope(recs: Sequence[Mapping], *, key: str, n_boot: int, seed: int, confidence: float) -> dict:
    n = len(recs)
    rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])
    status = np.array([str(r.get("status", "")) for r in recs], dtype=object)
    kind = np.array([str(r.get("kind", "")) for r in recs], dtype=object)
    unit = np.array([str(r.get("unit", "")) for r in recs], dtype=object)
    answered = _flag(recs, _answered)
    invalid = _flag(recs, lambda r: r.get("invalid_truth", False))
    correct = _flag(recs, lambda r: r.get("correct"))
    qual = np.isin(kind, QUALITATIVE_KINDS)
    quant = (kind == "quantitative") & np.isin(unit, RATIO_UNITS) & ~invalid
    clock = (kind == "quantitative") & (unit == "clock") & ~invalid
    count = (kind == "quantitative") & (unit == "count") & ~invalid
    point = (kind == "point") & ~invalid
    all_q = np.ones(n, dtype=bool)
    rel = np.fromiter((_rel_err(r) for r in recs), dtype=float, count=n)

    b = _Bootstrap(n, n_boot=n_boot, rng=rng, confidence=confidence)
    b.mean("answered", answered, all_q)
    b.mean("refusal_rate", status == "refusal", all_q)
    b.mean("ambiguous_rate", status == "ambiguous", all_q)
    b.mean("qual.accuracy", correct, qual)
    b.mean("qual.answered", answered, qual)
    b.mean("quant.answered", answered, quant)
    b.mean("quant.within_2x", _flag(recs, lambda r: r.get("within_2x")), quant)
    b.mean("quant.within_1.25x", _flag(recs, lambda r: r.get("within_1.25x")), quant)
    b.mean("quant.within_25pct", _flag(recs, lambda r: r.get("within_25pct")), quant)
    mra = np.fromiter((float(r.get("mra") or 0.0) for r in recs), dtype=float, count=n)
    b.mean("quant.mra", mra, quant)
    b.mean("quant.abs_rel_err_mean", np.nan_to_num(rel), quant & answered & np.isfinite(rel))
    b.median("quant.abs_rel_err_median", rel, quant & answered & np.isfinite(rel))
    b.mean("clock.accuracy", correct, clock)
    b.mean("clock.within_1h", _flag(recs, lambda r: r.get("within_1h")), clock)
    b.mean("clock.answered", answered, clock)
    b.mean("count.accuracy", correct, count)
    b.mean("count.answered", answered, count)
    err_m = np.fromiter((_num_or_nan(r.get("error_m")) for r in recs), dtype=float, count=n)
    px_err = np.fromiter((_num_or_nan(r.get("pixel_error")) for r in recs), dtype=float, count=n)
    b.mean("point.in_mask", _flag(recs, lambda r: r.get("in_mask")), point)
    b.mean("point.answered", answered, point)
    b.mean("point.answered_3d", np.isfinite(err_m), point)
    b.mean("point.within_5cm", np.isfinite(err_m) & (np.nan_to_num(err_m, nan=np.inf) <= 0.05 + _SLACK), point)
    b.mean("point.error_m_mean", np.nan_to_num(err_m), point & np.isfinite(err_m))
    b.median("point.error_m_median", err_m, point & np.isfinite(err_m))
    b.median("point.pixel_error_median", px_err, point & np.isfinite(px_err))
    m = b.run()

    counts = {s: int(np.count_nonzero(status == s)) for s in STATUSES}
    counts["answered"] = int(np.count_nonzero(answered))
    counts["non_finite"] = sum(1 for r in recs if "non_finite" in (r.get("flags") or ()))
    counts["invalid_truth"] = int(np.count_nonzero(invalid))
    n_quant = int(np.count_nonzero((kind == "quantitative") & np.isin(unit, RATIO_UNITS)))
    return {
        "n": n,
        "counts": counts,
        "answered": m["answered"],
        "refusal_rate": m["refusal_rate"],
        "ambiguous_rate": m["ambiguous_rate"],
        "qualitative": {"n": int(np.count_nonzero(qual)), "accuracy": m["qual.accuracy"],
                        "answered": m["qual.answered"]},
        "quantitative": {
            "n": n_quant, "invalid_truth": n_quant - int(np.count_nonzero(quant)),
            "answered": m["quant.answered"], "within_2x": m["quant.within_2x"],
            "within_1.25x": m["quant.within_1.25x"], "within_25pct": m["quant.within_25pct"],
            "mra": m["quant.mra"],
            "abs_rel_err_median": m["quant.abs_rel_err_median"], "abs_rel_err_mean": m["quant.abs_rel_err_mean"],
        },
        "clock": {"n": int(np.count_nonzero((kind == "quantitative") & (unit == "clock"))),
                  "accuracy": m["clock.accuracy"], "within_1h": m["clock.within_1h"], "answered": m["clock.answered"]},
        "count": {"n": int(np.count_nonzero((kind == "quantitative") & (unit == "count"))),
                  "accuracy": m["count.accuracy"], "answered": m["count.answered"]},
        "point": {"n": int(np.count_nonzero(kind == "point")), "invalid_truth": int(np.count_nonzero(
                  (kind == "point") & invalid)), "in_mask": m["point.in_mask"], "answered": m["point.answered"],
                  "answered_3d": m["point.answered_3d"], "within_5cm": m["point.within_5cm"],
                  "error_m_median": m["point.error_m_median"], "error_m_mean": m["point.error_m_mean"],
                  "pixel_error_median": m["point.pixel_error_median"]},
    }


def _groups(recs: Sequence[Mapping], field: str) -> dict[str, list[Mapping]]:
    out: dict[str, list[Mapping]] = {}
    for r in recs:
        out.setdefault(str(r.get(field, "")), []).append(r)
    return out


def _breakdown(recs: Sequence[Mapping], prefix: str, **kw: Any) -> dict:
    by_kind = _groups(recs, "kind")
    kinds = [k for k in KINDS if k in by_kind] + sorted(k for k in by_kind if k not in KINDS)
    by_type = _groups(recs, "type")
    return {
        "overall": _scope(recs, key=f"{prefix}overall", **kw),
        "by_kind": {k: _scope(by_kind[k], key=f"{prefix}kind:{k}", **kw) for k in kinds},
        "by_type": {t: _scope(by_type[t], key=f"{prefix}type:{t}", **kw) for t in sorted(by_type)},
    }


def summarize(records: Sequence[dict], *, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Aggregate :func:`score_item` records overall, per kind, per type (and per benchmark) with bootstrap CIs.

    The metrics, their denominators and the CI procedure are defined in the module docstring.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 0:
        raise ValueError(f"n_boot must be a non-negative integer, got {n_boot!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    recs = list(records)
    kw = {"n_boot": int(n_boot), "seed": int(seed), "confidence": float(confidence)}
    summary: dict[str, Any] = {
        "schema": SCHEMA,
        "bootstrap": {"method": "percentile", **kw},
        **_breakdown(recs, "", **kw),
    }
    by_bench = _groups(recs, "benchmark")
    if len(by_bench) > 1:
        summary["by_benchmark"] = {b: _breakdown(by_bench[b], f"benchmark:{b}/", **kw) for b in sorted(by_bench)}
    return summary


# ----------------------------------------------------------------------------------------------- reports

# (column header, path into a scope)
_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("accuracy", ("qualitative", "accuracy")),
    ("answered", ("answered",)),
    ("within 2x", ("quantitative", "within_2x")),
    ("within 1.25x", ("quantitative", "within_1.25x")),
    ("within ±25%", ("quantitative", "within_25pct")),
    ("MRA", ("quantitative", "mra")),
    ("median rel err", ("quantitative", "abs_rel_err_median")),
    ("mean rel err", ("quantitative", "abs_rel_err_mean")),
    ("clock exact", ("clock", "accuracy")),
    ("clock ±1h", ("clock", "within_1h")),
    ("count exact", ("count", "accuracy")),
    ("in mask", ("point", "in_mask")),
    ("median 3D err (cm)", ("point", "error_m_median")),
    ("within 5 cm", ("point", "within_5cm")),
    ("refusals", ("refusal_rate",)),
)
#: columns shown in another unit than the summary stores (header -> factor)
_SCALE = {"median 3D err (cm)": 100.0}
_DASH = "—"


def _get(scope: Mapping | None, path: Sequence[str]) -> Any:
    cur: Any = scope
    for p in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(p)
    return cur


def _fmt(metric: Any, scale: float = 1.0) -> str:
    if not isinstance(metric, Mapping) or metric.get("value") is None:
        return _DASH
    text = f"{scale * metric['value']:.2f}"
    ci = metric.get("ci")
    if ci is not None and None not in ci:
        text += f" [{scale * ci[0]:.2f}, {scale * ci[1]:.2f}]"
    return text


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _scopes(summary: Mapping) -> list[tuple[str, Mapping]]:
    """(label, scope) rows: overall, per kind, per type, per benchmark."""
    out: list[tuple[str, Mapping]] = []
    if isinstance(summary.get("overall"), Mapping):
        out.append(("overall", summary["overall"]))
    out += [(f"kind: {k}", s) for k, s in (summary.get("by_kind") or {}).items()]
    out += [(f"type: {t}", s) for t, s in (summary.get("by_type") or {}).items()]
    out += [(f"benchmark: {b}", s.get("overall", {})) for b, s in (summary.get("by_benchmark") or {}).items()]
    return out


def _ci_note(summary: Mapping) -> str:
    boot = summary.get("bootstrap") or {}
    if not boot.get("n_boot"):
        return "Values are point estimates (no bootstrap)."
    return (f"Values: point estimate [{100 * boot.get('confidence', 0.95):g}% bootstrap percentile CI over questions, "
            f"{boot['n_boot']} resamples, seed {boot.get('seed', 0)}]; {_DASH} = no question in the denominator.")


def summary_markdown(summary: dict, title: str = "") -> str:
    """A Markdown table of a :func:`summarize` result: rows overall / per kind / per type / per benchmark."""
    rows = []
    for label, scope in _scopes(summary):
        rows.append([label, str(scope.get("n", 0))] + [_fmt(_get(scope, path), _SCALE.get(name, 1.0))
                                                        for name, path in _COLUMNS])
    keep = [j for j in range(len(_COLUMNS)) if any(r[2 + j] != _DASH for r in rows)]
    header = ["scope", "n"] + [_COLUMNS[j][0] for j in keep]
    body = [r[:2] + [r[2 + j] for j in keep] for r in rows]
    counts = (summary.get("overall") or {}).get("counts") or {}
    lines = [f"## {title or 'Spatial VQA results'}", "", *_table(header, body), "", _ci_note(summary), ""]
    lines.append(
        "Counts (overall): " + ", ".join(f"{k.replace('_', ' ')} {counts.get(k, 0)}" for k in
                                         ("answered", "range", "refusal", "no_answer", "ambiguous", "non_finite",
                                          "invalid_truth")) + "."
    )
    return "\n".join(lines) + "\n"


BREAKDOWNS = ("kind", "type", "benchmark")


def _compare_rows(models: Sequence[str], per_model: Mapping[str, Mapping[str, Mapping]]) -> list[list[str]]:
    labels: list[str] = []
    for m in models:
        labels += [lab for lab in per_model[m] if lab not in labels]
    rows = []
    for lab in labels:
        scopes = [per_model[m].get(lab) for m in models]
        rows.append([lab, "n", *(str(s.get("n", 0)) if s is not None else _DASH for s in scopes)])
        for name, path in _COLUMNS:
            cells = [_fmt(_get(s, path), _SCALE.get(name, 1.0)) for s in scopes]
            if any(c != _DASH for c in cells):
                rows.append([lab, name, *cells])
    return rows


def compare_markdown(summaries: Mapping[str, dict], breakdowns: Sequence[str] = BREAKDOWNS) -> str:
    """Several models side by side: one row per (scope, metric), one column per model name.

    The overall table comes first, then one table per entry of ``breakdowns`` (``kind``: per
    question kind, ``type``: per question type, ``benchmark``: per benchmark, where the summaries
    have several); ``breakdowns=()`` gives the overall table alone.
    """
    if not summaries:
        raise ValueError("compare_markdown needs at least one summary")
    unknown = [b for b in breakdowns if b not in BREAKDOWNS]
    if unknown:
        raise ValueError(f"unknown breakdown(s) {unknown}; use {', '.join(BREAKDOWNS)}")
    models = list(summaries)
    scoped = {m: _scopes(summaries[m]) for m in models}
    sections = [("Model comparison", "overall")] + [(f"Model comparison by {b}", b) for b in BREAKDOWNS
                                                     if b in breakdowns]
    lines: list[str] = []
    for title, part in sections:
        prefix = "overall" if part == "overall" else f"{part}: "
        per_model = {m: {lab: s for lab, s in scoped[m] if lab.startswith(prefix)} for m in models}
        rows = _compare_rows(models, per_model)
        if part != "overall" and not rows:
            lines += [f"## {title}", "", f"No {part} breakdown in these summaries.", ""]
            continue
        lines += [f"## {title}", "", *_table(["scope", "metric", *models], rows), ""]
    lines.append(_ci_note(summaries[models[0]]))
    return "\n".join(lines) + "\n"


def write_summary(summary: dict, out_dir: str | Path, name: str = "summary", *, title: str = "") -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` under ``out_dir`` atomically; returns both paths."""
    from spatialforge.io.dataset import atomic_write_bytes, atomic_write_json

    json.dumps(summary, allow_nan=False, default=_json_default)  # ValueError on NaN / inf before anything is written
    out = Path(out_dir)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    atomic_write_json(json_path, summary)
    atomic_write_bytes(md_path, summary_markdown(summary, title=title).encode("utf-8"))
    return json_path, md_path
