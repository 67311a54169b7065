"""Baselines: a fixed-prior answerer and a blind (question-only) wrapper around any model.

:class:`PriorModel` (spec ``prior``) sees neither the image nor the question's objects. It answers

* quantitative questions with one typical value per question type, else per unit
  (:data:`DEFAULT_PRIOR_VALUES`): distances between objects 1.5 m, distance to the camera 2.0 m,
  vertical distances and offsets 0.3 m, left/right/front/behind offsets 0.5 m, widths 0.5 m,
  depths 0.4 m, heights 0.8 m, any other length 1.5 m, ratios 1.0, clock directions 12 o'clock;
  phrased "about 1.5 meters", "about 1.0", "12 o'clock". Types that are not in the table are
  matched by the words ``width`` / ``depth`` / ``height`` / ``distance`` in their id, then by unit;
* yes/no questions with "yes" (or "no" with ``yes_no=False``, e.g. when "no" is the majority);
* choice questions with the first option;
* point questions (kind ``point``) with the centre of the image, "(320, 240)" for a 640 x 480 image,
  and no 3D point (the image size comes from the item; without it the prior declines: "I cannot tell
  without the image."). Its in-mask rate is the chance that the part covers the image centre.

:class:`BlindModel` (spec ``blind:<inner spec>``) asks the inner model the same questions without
the image: it calls ``inner.answer(items, use_image=False)`` (see
:mod:`spatialforge.eval.models.base`).

Both have a ``fingerprint()`` (their parameters; the blind wrapper's is the inner model's), which
an evaluation run folder checks before resuming.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from spatialforge.errors import ConfigError
from spatialforge.eval.models.base import ModelAnswer, VQAModel
from spatialforge.eval.types import BenchmarkItem

__all__ = ["DEFAULT_PRIOR_VALUES", "BlindModel", "PriorModel"]

# question type (spatialforge catalogue ids) or unit -> typical value (metres / number / clock hour)
DEFAULT_PRIOR_VALUES: Mapping[str, float] = MappingProxyType({
    "distance": 1.5,
    "horizontal_distance": 1.5,
    "vertical_distance": 0.3,
    "camera_distance": 2.0,
    "width": 0.5,
    "depth": 0.4,
    "height": 0.8,
    "left_offset": 0.5,
    "right_offset": 0.5,
    "behind_offset": 0.5,
    "front_offset": 0.5,
    "height_difference": 0.3,
    "above_offset": 0.3,
    "height_ratio": 1.0,
    "clock_direction": 12,
    # fallbacks by unit
    "m": 1.5,
    "ratio": 1.0,
    "clock": 12,
})

_KEYWORDS = ("width", "depth", "height", "distance")


def _fmt(value: float) -> str:
    text = f"{value:g}"
    return text if any(c in text for c in ".en") else text + ".0"


class PriorModel:
    """Fixed typical values, no image, no reasoning (see the module doc for the defaults).

    ``values`` overrides or adds entries of :data:`DEFAULT_PRIOR_VALUES` (keys: question types or
    units ``m`` / ``ratio`` / ``clock``); ``yes_no``: the answer to every yes/no question.
    """

    name = "prior"

    def __init__(self, values: Mapping[str, float] | None = None, *, yes_no: bool = True) -> None:
        if values is not None and not isinstance(values, Mapping):
            raise ConfigError(f"prior: values must be a mapping of question type or unit to a number, got {values!r}")
        merged = dict(DEFAULT_PRIOR_VALUES)
        for key, value in (values or {}).items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"prior: the value for {key!r} must be a finite number, got {value!r}")
            merged[str(key)] = float(value)
        for unit in ("m", "ratio"):
            if merged[unit] <= 0:
                raise ConfigError(f"prior: the value for {unit!r} must be > 0, got {merged[unit]!r}")
        clock = merged["clock"]
        if not 1 <= round(clock) <= 12:
            raise ConfigError(f"prior: the clock value must be an hour from 1 to 12, got {clock!r}")
        if not isinstance(yes_no, bool):
            raise ConfigError(f"prior: yes_no must be true or false, got {yes_no!r}")
        self.values = merged
        self.yes_no = yes_no

    def describe(self) -> dict[str, Any]:
        return {"backend": "prior", "name": self.name, "values": dict(self.values),
                "yes_no": "yes" if self.yes_no else "no", "choice": "first option", "point": "image centre"}

    def fingerprint(self) -> dict[str, Any]:
        """What decides the answers: the table of values and the yes/no answer."""
        return {"backend": "prior", "values": dict(sorted(self.values.items())),
                "yes_no": "yes" if self.yes_no else "no", "choice": "first option"}

    def _value(self, item: BenchmarkItem) -> tuple[float, str]:
        """The typical value for ``item`` and the table key it came from."""
        if item.type in self.values:
            return self.values[item.type], item.type
        if item.unit == "m":
            for word in _KEYWORDS:
                if word in item.type.lower():
                    return self.values[word], word
        return self.values.get(item.unit, self.values["m"]), item.unit

    def answer_one(self, item: BenchmarkItem) -> ModelAnswer:
        if item.kind == "yes_no":
            return ModelAnswer(item.id, "yes" if self.yes_no else "no", latency_s=0.0, meta={"prior": "yes_no"})
        if item.kind == "choice":
            return ModelAnswer(item.id, item.options[0], latency_s=0.0, meta={"prior": "first_option"})
        if item.kind == "point":
            size = (item.meta or {}).get("image_size")
            if not size:
                return ModelAnswer(item.id, "I cannot tell without the image.", latency_s=0.0,
                                   meta={"prior": "no_image_size"})
            return ModelAnswer(item.id, f"({int(size[0]) // 2}, {int(size[1]) // 2})", latency_s=0.0,
                               meta={"prior": "image_centre"})
        value, key = self._value(item)
        if item.unit == "clock":
            text = f"{min(12, max(1, round(value)))} o'clock"
        elif item.unit == "m":
            text = f"about {_fmt(value)} meters"
        else:
            text = f"about {_fmt(value)}"
        return ModelAnswer(item.id, text, latency_s=0.0, meta={"prior": key})

    def answer(self, items: Sequence[BenchmarkItem], *, progress: bool = False,
               use_image: bool = True) -> list[ModelAnswer]:
        """One fixed answer per item (``progress`` and ``use_image`` are accepted and ignored)."""
        return [self.answer_one(item) for item in items]


def _accepts_use_image(model: Any) -> bool:
    try:
        params = inspect.signature(model.answer).parameters
    except (TypeError, ValueError):
        return False
    return "use_image" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class BlindModel:
    """``inner`` asked without the image: the language-prior baseline of a VLM."""

    def __init__(self, inner: VQAModel) -> None:
        if not callable(getattr(inner, "answer", None)) or not isinstance(getattr(inner, "name", None), str):
            raise ConfigError(f"blind: {inner!r} is not a model backend")
        if not _accepts_use_image(inner):
            raise ConfigError(f"blind: {inner.name} cannot answer without the image (its answer() has no use_image)")
        self.inner = inner
        self.name = f"blind:{inner.name}"

    def describe(self) -> dict[str, Any]:
        return {"backend": "blind", "name": self.name, "use_image": False, "inner": self.inner.describe()}

    def fingerprint(self) -> dict[str, Any]:
        """The inner model's fingerprint (its name when it has none), asked without the image."""
        inner = getattr(self.inner, "fingerprint", None)
        return {"backend": "blind", "inner": inner() if callable(inner) else {"name": self.inner.name}}

    def answer(self, items: Sequence[BenchmarkItem], *, progress: bool = False,
               use_image: bool = True) -> list[ModelAnswer]:
        """The inner model's answers without the image (``use_image`` is ignored: always blind)."""
        return self.inner.answer(items, progress=progress, use_image=False)
