"""The containers shared by the evaluation modules (torch-free)."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from spatialforge.errors import DatasetError

__all__ = ["KINDS", "UNITS", "BenchmarkItem", "ParsedAnswer"]

KINDS = ("quantitative", "yes_no", "choice", "point")
# quantitative units: "m" (metres), "ratio" (a pure number, e.g. height ratio), "clock" (hour 1-12);
# qualitative units: "bool" (yes/no), "option" (choice: truth is an index into ``options``);
# "point": an image pixel and a 3D point in metres (kind ``point``, the affordance questions)
UNITS = ("m", "ratio", "clock", "bool", "option", "count", "point")


@dataclass(frozen=True)
class BenchmarkItem:
    """One question of a benchmark with its exact truth.

    ``truth``: metres (unit ``m``), a number (``ratio``), an hour 1-12 (``clock``), a bool
    (``bool``) or the index of the right option (``option``); for kind ``point`` (unit ``point``)
    ``{"pixel": (u, v), "point_3d": (x, y, z)}``: the image pixel (column, row) and the 3D point in
    metres, with the region that counts as right in ``meta["mask"]`` (a run-length encoded mask,
    :func:`spatialforge.io.dataset.encode_mask_rle`) and the image's ``meta["image_size"]``
    (width, height). ``options``: for choice questions, how the question names each candidate ("the
    red mug", "the chair on the left").
    """

    id: str
    benchmark: str
    question: str
    kind: Literal["quantitative", "yes_no", "choice", "point"]
    type: str
    truth: float | bool | int | Mapping[str, Any]
    unit: str
    options: tuple[str, ...] = ()
    reference_answer: str = ""
    image_path: str | None = None
    image_bytes: bytes | None = field(default=None, repr=False)
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.id}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.unit not in UNITS:
            raise ValueError(f"{self.id}: unit must be one of {UNITS}, got {self.unit!r}")
        if self.kind == "choice" and not (isinstance(self.truth, int) and 0 <= self.truth < len(self.options)):
            raise ValueError(f"{self.id}: a choice needs options and the index of the right one")
        if (self.kind == "point") != (self.unit == "point"):
            raise ValueError(f"{self.id}: kind point goes with unit point (got kind {self.kind!r}, unit {self.unit!r})")
        if self.kind == "point" and not (isinstance(self.truth, Mapping) and _coords(self.truth.get("pixel"), 2)
                                         and _coords(self.truth.get("point_3d"), 3)):
            raise ValueError(f"{self.id}: a point needs the truth {{'pixel': (u, v), 'point_3d': (x, y, z)}}, "
                             f"got {self.truth!r}")

    def load_image(self) -> Any:
        """The image as an RGB PIL image (``DatasetError`` naming the file if it cannot be read)."""
        from PIL import Image, UnidentifiedImageError

        try:
            if self.image_bytes is not None:
                img = Image.open(io.BytesIO(self.image_bytes))
            elif self.image_path is not None:
                img = Image.open(self.image_path)
            else:
                raise DatasetError(f"{self.id}: the item has no image")
            return img.convert("RGB")
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
            if self.image_bytes is not None:  # PIL's message would print the buffer's memory address
                raise DatasetError(f"{self.id}: cannot read the image bytes ({type(exc).__name__})") from None
            raise DatasetError(f"{self.image_path}: cannot read image ({exc})", path=self.image_path) from None


def _coords(value: Any, n: int) -> bool:
    """Whether ``value`` is ``n`` finite numbers."""
    return (isinstance(value, list | tuple) and len(value) == n
            and all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in value))


@dataclass(frozen=True)
class ParsedAnswer:
    """What a free-text answer states.

    ``status``: ``ok`` (a value), ``range`` (a range: ``value`` is its midpoint), ``refusal`` (the
    model declines / says it cannot tell), ``no_answer`` (no number / no yes-no / no option found),
    ``ambiguous`` (contradictory: several different options or both yes and no).
    ``value``: metres / number / hour (quantitative), bool (yes_no), option index (choice), and for a
    point ``{"pixel": [u, v] or None, "point_3d": [x, y, z] (metres) or None}``.
    ``flags``: extra notes, e.g. ``approx`` ("about"), ``unit_assumed`` (a bare number), ``range``.
    """

    status: Literal["ok", "range", "refusal", "no_answer", "ambiguous"]
    value: float | bool | int | dict[str, Any] | None = None
    flags: tuple[str, ...] = ()
    span: str = ""  # the part of the text the value was read from

    @property
    def answered(self) -> bool:
        return self.status in ("ok", "range")
