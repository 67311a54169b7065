"""Benchmark loaders for spatial VQA evaluation (torch-free).

Every loader turns a benchmark's released records into :class:`BenchmarkItem` objects with an exact
truth in our units (metres, clock hours, bools, option indices) and returns a :class:`Benchmark`.
A record that cannot be used (no image, a ground truth that cannot be read, an unknown unit ...) is
never dropped silently: it is listed in ``Benchmark.skipped`` with a reason key and a one-line
message. A file that cannot be read at all raises :class:`~spatialforge.errors.DatasetError` naming
it. The record schemas assumed here, with their sources, are in ``docs/benchmarks.md``.

* :func:`load_spatialforge` - a ``spatialforge generate`` output folder (or a synthetic benchmark)
* :func:`load_qspatial` - Q-Spatial Bench (Liao et al. 2024), HF ``andrewliao11/Q-Spatial-Bench``
* :func:`load_spatialrgpt` - SpatialRGPT-Bench (Cheng et al. 2024), HF ``a8cheng/SpatialRGPT-Bench``
* :func:`build_synthetic_benchmark` - a held-out benchmark from synthetic scenes with exact truth
* :func:`load_benchmark` - dispatch on a spec string such as ``"qspatial:PATH:QSpatial_plus"``
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import math
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from spatialforge._text import count
from spatialforge.errors import ConfigError, DatasetError
from spatialforge.eval.regions import MARKS_VERSION, REGION_MODES, RegionMarkedItem, parse_regions
from spatialforge.eval.types import KINDS, BenchmarkItem
from spatialforge.io.outdir import OutputKind, prepare_output_dir
from spatialforge.qa.afford_types import AFFORD_TYPES

__all__ = [
    "BENCHMARK_OUTPUT",
    "BENCHMARK_SPECS",
    "QSPATIAL_HUB",
    "QSPATIAL_SPLITS",
    "REGION_MODES",
    "SPATIALRGPT_CLOCK_ROUNDING",
    "SPATIALRGPT_HUB",
    "SYNTHETIC_BENCHMARK_SEED",
    "Benchmark",
    "benchmark_path",
    "build_synthetic_benchmark",
    "composite_benchmark",
    "load_benchmark",
    "load_qspatial",
    "load_spatialforge",
    "load_spatialrgpt",
    "parse_length_m",
    "spatialforge_item",
]

QSPATIAL_HUB = "andrewliao11/Q-Spatial-Bench"
QSPATIAL_SPLITS = ("QSpatial_plus", "QSpatial_scannet")
SPATIALRGPT_HUB = "a8cheng/SpatialRGPT-Bench"
# Disjoint from the seeds used for training data by default (small integers).
SYNTHETIC_BENCHMARK_SEED = 1_000_003
BENCHMARK_SPECS = (
    "qspatial:PATH_OR_HUB[:SPLIT]",
    "spatialrgpt:PATH[:regions=draw|none]",
    "spatialforge:PATH",
    "PATH (a spatialforge dataset or synthetic benchmark folder)",
)
DESCRIPTOR_NAME = "benchmark.json"
DESCRIPTOR_FORMAT = "spatialforge-benchmark/1"
_SCENES_DIR = "_scenes"
#: what :func:`build_synthetic_benchmark` writes in its folder (``overwrite`` deletes exactly these)
BENCHMARK_OUTPUT = OutputKind("eval-benchmark", ("data", "_state", "scene_graphs", "manifest.json", "config.json",
                                                 DESCRIPTOR_NAME, _SCENES_DIR))

# Lengths: how many metres one unit is. Keys are lower-case spellings.
_METRES_PER_UNIT: Mapping[str, float] = MappingProxyType({
    "m": 1.0, "meter": 1.0, "meters": 1.0, "metre": 1.0, "metres": 1.0,
    "cm": 0.01, "centimeter": 0.01, "centimeters": 0.01, "centimetre": 0.01, "centimetres": 0.01,
    "mm": 0.001, "millimeter": 0.001, "millimeters": 0.001, "millimetre": 0.001, "millimetres": 0.001,
    "km": 1000.0, "kilometer": 1000.0, "kilometers": 1000.0, "kilometre": 1000.0, "kilometres": 1000.0,
    "in": 0.0254, "inch": 0.0254, "inches": 0.0254,
    "ft": 0.3048, "foot": 0.3048, "feet": 0.3048,
    "yd": 0.9144, "yard": 0.9144, "yards": 0.9144,
})
_NUMBER = r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
_UNIT_ALTERNATION = "|".join(sorted((re.escape(u) for u in _METRES_PER_UNIT), key=len, reverse=True))
_MEASURE_RE = re.compile(rf"{_NUMBER}[\s-]*(?P<unit>{_UNIT_ALTERNATION})\.?(?![a-z])", re.IGNORECASE)
_CLOCK_RE = re.compile(r"\b(\d{1,2})\s*o\s*['’`]?\s*clock", re.IGNORECASE)
_REGION_RE = re.compile(r"Region\s*\[\s*(\d+)\s*\]", re.IGNORECASE)
_MASK_RE = re.compile(r"<mask>(?:\s*<depth>)?")
# Lead-ins of the SpatialRGPT predicate answers (dataset_pipeline/osdsynth/processor/prompt_template.py).
_NO_LEADS = ("that is false", "that's false", "incorrect", "in fact", "actually", "false", "nope", "no")
_YES_LEADS = ("that is true", "that's true", "indeed", "correct", "true", "yes", "yeah", "yep")

_QSPATIAL_REQUIRED = ("question", "answer_value", "answer_unit")
_QSPATIAL_TYPES: Mapping[str, str] = MappingProxyType({
    "direct_distance": "distance",
    "horizontal_distance": "horizontal_distance",
    "vertical_distance": "vertical_distance",
    "object_width": "width",
    "object_height": "height",
})
_SRGPT_QUANTITATIVE: Mapping[str, tuple[str, str]] = MappingProxyType({
    "distance_data": ("distance", "m"),
    "horizontal_distance_data": ("horizontal_distance", "m"),
    "vertical_distance_data": ("vertical_distance", "m"),
    "width_data": ("width", "m"),
    "height_data": ("height", "m"),
    "direction": ("clock_direction", "clock"),
})
_SRGPT_ANNOTATION = "SpatialRGPT-Bench_v1.json"
#: how SpatialRGPT-Bench turns a direction into an hour: the hour at the clockwise end of its 30-degree
#: sector (a reading between h-1 and h is h); see ``spatialforge.eval.metrics``
SPATIALRGPT_CLOCK_ROUNDING = "up"
_SPEC_REGIONS_RE = re.compile(r"^(?P<path>.*):regions=(?P<mode>[^:/\\]*)$", re.IGNORECASE)
_SPATIALFORGE_COLUMNS = ("scene_id", "image", "qa")
_HUB_NAME_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# --------------------------------------------------------------------------------------------------
# The container


@dataclass
class Benchmark:
    """A named list of :class:`BenchmarkItem` with provenance.

    ``source``: where it was read from. ``skipped``: one dict per record (or QA pair) that could not
    be used: ``{"id", "reason", "message", "where"}``. ``info``: format, record counts, skip counts
    by reason, the descriptor of a synthetic benchmark, subset parameters ...
    """

    name: str
    items: list[BenchmarkItem]
    source: str = ""
    skipped: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.items = list(self.items)
        index: dict[str, int] = {}
        for i, item in enumerate(self.items):
            if not isinstance(item, BenchmarkItem):
                raise ConfigError(f"benchmark {self.name!r}: items must be BenchmarkItem, got {type(item).__name__}")
            if item.id in index:
                raise ConfigError(f"benchmark {self.name!r}: duplicate item id {item.id!r}")
            index[item.id] = i
        self._index = index

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[BenchmarkItem]:
        return iter(self.items)

    def by_id(self, item_id: str) -> BenchmarkItem:
        """The item with this id (``KeyError`` naming the benchmark if there is none)."""
        i = self._index.get(item_id)
        if i is None or i >= len(self.items) or self.items[i].id != item_id:  # items changed since
            self.__post_init__()
            i = self._index.get(item_id)
        if i is None:
            raise KeyError(f"benchmark {self.name!r} has no item {item_id!r}")
        return self.items[i]

    def counts(self) -> dict[str, Any]:
        """Items per kind and per type, and skips per reason."""
        return {
            "items": len(self.items),
            "per_kind": dict(sorted(Counter(i.kind for i in self.items).items())),
            "per_type": dict(sorted(Counter(i.type for i in self.items).items())),
            "skipped": len(self.skipped),
            "skipped_by_reason": dict(sorted(Counter(s["reason"] for s in self.skipped).items())),
        }

    def subset(self, types: str | Iterable[str] | None = None, kinds: str | Iterable[str] | None = None,
               limit: int | None = None, seed: int = 0) -> Benchmark:
        """Items of the given types / kinds; with ``limit``, a deterministic sample of that many.

        The sample ranks items by a hash of ``(seed, id)``, so it depends only on the seed and the
        ids (not on the order of the items or on the machine), and a smaller limit with the same seed
        gives a subset of a larger one. Items keep their original order.
        """
        type_set = _name_set(types, "types")
        kind_set = _name_set(kinds, "kinds")
        if kind_set is not None and not kind_set <= set(KINDS):
            bad = ", ".join(sorted(kind_set - set(KINDS)))
            raise ConfigError(f"subset: unknown kind(s) {bad}; kinds are {', '.join(KINDS)}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 0):
            raise ConfigError(f"subset: limit must be a non-negative integer or None, got {limit!r}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise ConfigError(f"subset: seed must be an integer, got {seed!r}")
        items = [it for it in self.items
                 if (type_set is None or it.type in type_set) and (kind_set is None or it.kind in kind_set)]
        if limit is not None and limit < len(items):
            rank = sorted(range(len(items)),
                          key=lambda i: hashlib.sha256(f"{int(seed)}\x00{items[i].id}".encode()).digest())
            items = [items[i] for i in sorted(rank[:int(limit)])]
        info = dict(self.info)
        info["subset"] = {"types": sorted(type_set) if type_set is not None else None,
                          "kinds": sorted(kind_set) if kind_set is not None else None,
                          "limit": None if limit is None else int(limit), "seed": int(seed),
                          "of": len(self.items)}
        return Benchmark(self.name, items, self.source, [dict(s) for s in self.skipped], info)


def _name_set(value: str | Iterable[str] | None, what: str) -> set[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {value}
    try:
        names = set(value)
    except TypeError:
        raise ConfigError(f"subset: {what} must be a string or a list of strings, got {value!r}") from None
    if not all(isinstance(n, str) for n in names):
        raise ConfigError(f"subset: {what} must be strings, got {sorted(map(repr, names))}")
    return names


class _Skip(Exception):
    """Internal flow control: this record (or QA pair) is skipped for ``reason``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Collector:
    """Items and skips of one load, with duplicate-id detection."""

    def __init__(self) -> None:
        self.items: list[BenchmarkItem] = []
        self.skipped: list[dict[str, Any]] = []
        self._ids: set[str] = set()

    def add(self, item: BenchmarkItem, where: str) -> None:
        if item.id in self._ids:
            self.skip(item.id, "duplicate_id", f"item id {item.id!r} appears more than once", where)
            return
        self._ids.add(item.id)
        self.items.append(item)

    def skip(self, item_id: str | None, reason: str, message: str, where: str) -> None:
        self.skipped.append({"id": item_id, "reason": reason, "message": message, "where": where})

    def finish(self, name: str, source: str, info: dict[str, Any]) -> Benchmark:
        info = dict(info)
        info["skipped_by_reason"] = dict(sorted(Counter(s["reason"] for s in self.skipped).items()))
        info["per_kind"] = dict(sorted(Counter(i.kind for i in self.items).items()))
        return Benchmark(name, self.items, source, self.skipped, info)


# --------------------------------------------------------------------------------------------------
# Shared helpers


def _read_parquet(path: Path, required: Sequence[str], what: str) -> list[dict[str, Any]]:
    """All rows of one Parquet file; ``DatasetError`` naming it if unreadable or lacking a column."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{path}: not a readable Parquet file ({exc})", path=str(path)) from None
    missing = [c for c in required if c not in schema.names]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)} (expected {what}; "
                           f"found {', '.join(schema.names) or 'none'})", path=str(path))
    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{path}: cannot read Parquet data ({exc})", path=str(path)) from None


def _read_json_records(path: Path) -> list[tuple[int, Any]]:
    """(line or list index, record) of a JSON list file or a JSON-lines file.

    A line of a JSON-lines file that does not parse is returned as a ``_Skip`` (one bad record); a
    file that is not JSON at all, or holds no record, raises ``DatasetError``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the file ({exc})", path=str(path)) from None
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON ({exc})", path=str(path)) from None
        return list(enumerate(data))
    out: list[tuple[int, Any]] = []
    n_ok = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((lineno, json.loads(line)))
            n_ok += 1
        except json.JSONDecodeError as exc:
            out.append((lineno, _Skip("bad_record", f"line {lineno} is not valid JSON ({exc.msg})")))
    if n_ok == 0:
        raise DatasetError(f"{path}: no JSON record found (expected a JSON list or one JSON object per line)",
                           path=str(path))
    return out


def _structured(value: Any) -> Any:
    """A nested field that an export may have stored as a JSON or Python-literal string, decoded."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            try:
                return ast.literal_eval(value.strip())
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                return value
    return value


def _image_bytes(value: Any) -> bytes | None:
    """Encoded image bytes from an image cell: ``{"bytes", "path"}`` (HF ``Image``) or raw bytes."""
    if isinstance(value, bytes | bytearray) and value:
        return bytes(value)
    if isinstance(value, Mapping):
        data = value.get("bytes")
        if isinstance(data, bytes | bytearray) and data:
            return bytes(data)
    return None


def _first_file(candidates: Iterable[Path]) -> Path | None:
    for c in candidates:
        if c.is_file():
            return c
    return None


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or value is None:
        raise _Skip("bad_truth", f"{what} is {value!r}, not a number")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise _Skip("bad_truth", f"{what} is {value!r}, not a number") from None
    if not math.isfinite(v):
        raise _Skip("bad_truth", f"{what} is {v}, not a finite number")
    return v


def _clean_float32(v: float) -> float:
    """``0.30000001192...`` -> ``0.3`` for values stored as float32 (Q-Spatial's ``answer_value``)."""
    f32 = np.float32(v)
    if float(f32) == v:
        return float(np.format_float_positional(f32, unique=True, trim="-"))
    return v


def parse_length_m(text: str) -> float | None:
    """The one length a ground-truth sentence states, in metres (``"30 inches"`` -> 0.762).

    ``"5 feet 3 inches"`` is summed. Returns ``None`` if the text states no length, or several
    different ones. A bare ``in`` followed by a word ("30 in height") is not read as inches.
    """
    matches = []
    for m in _MEASURE_RE.finditer(text):
        unit = m.group("unit").lower()
        if unit == "in" and re.match(r"\s+[a-z]", text[m.end():], re.IGNORECASE):
            continue
        matches.append((m.start(), m.end(), float(m.group("num").replace(",", "")) * _METRES_PER_UNIT[unit],
                        _METRES_PER_UNIT[unit]))
    values: list[float] = []
    i = 0
    while i < len(matches):
        _, end, metres, per_unit = matches[i]
        if (per_unit == _METRES_PER_UNIT["ft"] and i + 1 < len(matches)
                and matches[i + 1][3] == _METRES_PER_UNIT["in"]
                and re.fullmatch(r"[\s,]*(?:and\s*)?", text[end:matches[i + 1][0]], re.IGNORECASE)):
            metres += matches[i + 1][2]
            i += 1
        values.append(round(metres, 9))
        i += 1
    distinct = sorted(set(values))
    return distinct[0] if len(distinct) == 1 else None


def _parse_clock(text: str) -> int | None:
    hours = {int(h) for h in _CLOCK_RE.findall(text)}
    if len(hours) != 1:
        return None
    hour = hours.pop()
    return hour if 1 <= hour <= 12 else None


def _parse_yes_no(text: str) -> bool | None:
    lowered = text.strip().lower()
    for lead in _NO_LEADS:
        if re.match(rf"{re.escape(lead)}\b", lowered):
            return False
    for lead in _YES_LEADS:
        if re.match(rf"{re.escape(lead)}\b", lowered):
            return True
    return None


def _regions(text: str) -> list[int]:
    """Region numbers in order of first mention."""
    seen: list[int] = []
    for m in _REGION_RE.finditer(text):
        k = int(m.group(1))
        if k not in seen:
            seen.append(k)
    return seen


# --------------------------------------------------------------------------------------------------
# spatialforge datasets


def _dataset_root(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if (p / "data").is_dir():
        return p
    if p.is_dir() and p.name == "data" and any(p.glob("*.parquet")):
        return p.parent
    raise DatasetError(f"{p}: not a spatialforge dataset: no data/*.parquet (expected the output folder of "
                       "`spatialforge generate`, its data/ folder, or a synthetic benchmark folder)", path=str(p))


def _read_descriptor(root: Path) -> dict[str, Any] | None:
    path = root / DESCRIPTOR_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the benchmark descriptor ({exc})", path=str(path)) from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: the benchmark descriptor must be a JSON object", path=str(path))
    return data


def _point_item(afford: Any, meta: dict[str, Any], common: dict[str, Any]) -> BenchmarkItem:
    """The item of an affordance point question: its truth from the row's ``afford`` entry (docs/formats.md)."""
    from spatialforge.io.dataset import rle_contains, rle_problem

    if afford is None:
        raise _Skip("missing_afford", "a point question needs its entry in the row's afford column (pixel, 3D point "
                                      "and part mask), which `spatialforge generate --afford` writes; none found")
    if not isinstance(afford, Mapping):
        raise _Skip("bad_truth", f"its afford entry is {type(afford).__name__}, not a struct")
    try:
        pixel = tuple(int(x) for x in afford["pixel"])
        point = tuple(_finite(x, "afford point_3d") for x in afford["point_3d"])
    except (KeyError, TypeError, ValueError):
        raise _Skip("bad_truth", "its afford entry needs pixel [u, v] and point_3d [x, y, z]") from None
    if len(pixel) != 2 or len(point) != 3:
        raise _Skip("bad_truth", f"afford pixel {list(pixel)} / point_3d {list(point)} are not 2 and 3 numbers")
    mask = afford.get("mask")
    problem = rle_problem(mask, foreground=True)
    if problem is not None:
        raise _Skip("bad_truth", f"afford mask: {problem}")
    size = meta.get("image_size")
    h, w = (int(x) for x in mask["size"])
    if size is not None and tuple(size) != (w, h):
        raise _Skip("bad_truth", f"afford mask is {w}x{h}, the image {size[0]}x{size[1]}")
    if not rle_contains(mask, *pixel):
        raise _Skip("bad_truth", f"afford pixel ({pixel[0]}, {pixel[1]}) is not in the part's mask")
    meta.update(image_size=(w, h), mask={"size": [h, w], "counts": [int(c) for c in mask["counts"]]},
                part_id=afford.get("part_id"), part_name=afford.get("part_name"), action=afford.get("action"))
    return BenchmarkItem(kind="point", truth={"pixel": pixel, "point_3d": point}, unit="point", **common)


def spatialforge_item(bench: str, qa: Any, image: bytes, meta: dict[str, Any], *,
                      afford: Mapping[str, Any] | None = None) -> BenchmarkItem:
    """The benchmark item of one QA record of a spatialforge dataset (training builds its examples from the
    same items, so a model is trained on exactly what ``eval run`` asks). A bad record raises the loader's
    skip, which the callers count.

    ``afford``: the record's entry of the row's ``afford`` column (affordance point questions, kind
    ``point``: the truth pixel and 3D point, the part's mask); a point question without one is skipped
    (reason ``missing_afford``), one whose mask holds no pixel, whose truth pixel is not in its mask or whose
    mask's size is not ``meta["image_size"]`` (width, height) is skipped as ``bad_truth``."""
    if not isinstance(qa, Mapping):
        raise _Skip("bad_record", f"a qa entry is {type(qa).__name__}, not a struct")
    for key in ("id", "type", "kind", "question", "value", "unit"):
        if qa.get(key) is None:
            raise _Skip("missing_field", f"qa field {key!r} is missing")
    kind, unit = str(qa["kind"]), str(qa["unit"])
    composite = kind == "composite"
    afford_choice = kind == "choice" and str(qa["type"]) in AFFORD_TYPES
    if composite:  # a composite question (spatialforge.qa.composite): scored by its type's answer kind
        from spatialforge.qa.composite import COMPOSITE_TYPES

        ctype = COMPOSITE_TYPES.get(str(qa["type"]))
        if ctype is None:
            raise _Skip("unknown_type", f"composite type {qa['type']!r} is not one of {', '.join(COMPOSITE_TYPES)}")
        kind = ctype.answer_kind
    try:
        subjects = [int(s) for s in (qa.get("subjects") or [])]
    except (TypeError, ValueError):
        raise _Skip("bad_record", f"qa subjects {qa.get('subjects')!r} are not object ids") from None
    names = [str(n) for n in (qa.get("names") or [])]
    meta = dict(meta, subjects=subjects, roles=list(qa.get("roles") or []), names=names)
    if composite:
        meta["composite"] = True
    common = {"id": str(qa["id"]), "benchmark": bench, "question": str(qa["question"]), "type": str(qa["type"]),
              "reference_answer": str(qa.get("answer") or ""), "image_bytes": image, "meta": meta}
    value = _finite(qa["value"], "qa value")
    if kind == "point":
        return _point_item(afford, meta, common)
    if kind == "quantitative":
        if unit in ("m", "ratio"):
            return BenchmarkItem(kind="quantitative", truth=value, unit=unit, **common)
        if unit == "clock":
            if value != int(value) or not 1 <= value <= 12:
                raise _Skip("bad_truth", f"clock value {value} is not an hour 1-12")
            return BenchmarkItem(kind="quantitative", truth=int(value), unit="clock", **common)
        if unit == "count":
            if value != int(value) or value < 0:
                raise _Skip("bad_truth", f"count value {value} is not a whole number >= 0")
            try:
                return BenchmarkItem(kind="quantitative", truth=int(value), unit="count", **common)
            except ValueError:  # an eval.types without the count unit
                raise _Skip("unknown_unit", "quantitative unit 'count' is not supported") from None
        raise _Skip("unknown_unit", f"quantitative unit {unit!r} is not one of m, ratio, clock, count")
    if kind == "yes_no":
        if value not in (0.0, 1.0):
            raise _Skip("bad_truth", f"yes/no value {value} is not 1.0 or 0.0")
        return BenchmarkItem(kind="yes_no", truth=bool(value), unit="bool", **common)
    if kind == "choice":
        if len(subjects) < 2 or len(names) != len(subjects):
            raise _Skip("bad_record", f"a choice needs >= 2 subjects with one name each, got subjects "
                                      f"{subjects} and {len(names)} names")
        # the candidates are the subjects in roles A and B; a reference object (role C, as in "which
        # of A and B is closer to C?") is named by the question but is not an answer. Composite types say
        # which roles are candidates; "which object affords ...?" offers 2-4 objects in roles A-D.
        roles = [str(r) for r in (qa.get("roles") or [])]
        cand_roles = ctype.candidate_roles if composite else ("A", "B", "C", "D") if afford_choice else ("A", "B")
        keep = [i for i, r in enumerate(roles) if r in cand_roles] if len(roles) == len(subjects) else []
        if len(keep) < 2:
            keep = list(range(len(subjects)))
        cand_ids, cand_names = [subjects[i] for i in keep], [names[i] for i in keep]
        if value != int(value) or int(value) not in cand_ids:
            raise _Skip("bad_truth", f"choice value {value} is not one of the candidates {cand_ids}")
        return BenchmarkItem(kind="choice", truth=cand_ids.index(int(value)), unit="option",
                             options=tuple(cand_names), **common)
    raise _Skip("unknown_kind", f"kind {kind!r} is not one of {', '.join(KINDS)}")


def load_spatialforge(path: str | os.PathLike[str], name: str | None = None) -> Benchmark:
    """Every QA pair of a ``spatialforge generate`` output folder (or its ``data/`` folder) as an item.

    ``id`` is the QA id (``<scene_id>-NNN``); ``kind`` / ``type`` / ``unit`` come from the record;
    truth: the value for quantitative pairs (an ``int`` hour for unit ``clock``), ``bool(value)`` for
    yes/no, and for choices the index of the chosen object among ``subjects`` (``options`` = the
    ``names``); affordance point questions (kind ``point``) take their truth pixel, 3D point and
    mask from the row's ``afford`` column (``generate --afford``), and ``meta["image_size"]`` is the
    row's ``(width, height)`` (a point question of a row without a positive size is skipped as
    ``bad_truth``). The image bytes come from the row. A synthetic benchmark folder's
    ``benchmark.json`` gives the default name and is kept in ``info["descriptor"]``.
    """
    root = _dataset_root(path)
    files = sorted((root / "data").glob("*.parquet"))
    if not files:
        raise DatasetError(f"{root / 'data'}: no Parquet shards", path=str(root / "data"))
    descriptor = _read_descriptor(root)
    bench = name or (str(descriptor["name"]) if descriptor and descriptor.get("name") else root.name)
    col = _Collector()
    n_rows = n_pairs = 0
    for f in files:
        for r, row in enumerate(_read_parquet(f, _SPATIALFORGE_COLUMNS, "a spatialforge shard")):
            n_rows += 1
            where = f"{f.name} row {r}"
            scene_id = row.get("scene_id")
            qa_list = row.get("qa")
            if not isinstance(qa_list, list):
                col.skip(None, "bad_record", f"scene {scene_id!r}: column 'qa' is not a list", where)
                continue
            image = _image_bytes(row.get("image"))
            image_name = row["image"].get("path") if isinstance(row.get("image"), Mapping) else None
            afford = {str(a["qa_id"]): a for a in (row.get("afford") or ())
                      if isinstance(a, Mapping) and a.get("qa_id") is not None}
            size = (row.get("width"), row.get("height"))
            for qa in qa_list:
                n_pairs += 1
                qa_id = str(qa["id"]) if isinstance(qa, Mapping) and qa.get("id") is not None else None
                if image is None:
                    col.skip(qa_id, "missing_image", f"scene {scene_id!r} has no image bytes", where)
                    continue
                meta = {"scene_id": scene_id, "image_name": image_name, "shard": f.name}
                if all(isinstance(x, int) and x > 0 for x in size):
                    meta["image_size"] = size
                elif isinstance(qa, Mapping) and qa.get("kind") == "point":  # its pixels are read in that size
                    col.skip(qa_id, "bad_truth", f"{qa_id or scene_id}: the row's width x height {size[0]} x "
                                                 f"{size[1]} is not a positive image size, which a point question "
                                                 "needs", where)
                    continue
                try:
                    col.add(spatialforge_item(bench, qa, image, meta, afford=afford.get(qa_id or "")), where)
                except _Skip as skip:
                    col.skip(qa_id, skip.reason, f"{qa_id or scene_id}: {skip}", where)
    info: dict[str, Any] = {"format": "spatialforge", "shards": [f.name for f in files], "rows": n_rows,
                            "records": n_pairs}
    if descriptor is not None:
        info["descriptor"] = descriptor
    return col.finish(bench, str(root), info)


def composite_benchmark(scenes: Iterable[tuple[Any, bytes | None]], config: Any = None,
                        name: str = "spatialforge-composite") -> Benchmark:
    """A composite-question benchmark (``spatialforge.qa.composite``) from ``(scene graph, image bytes)``
    pairs: every question of :func:`~spatialforge.qa.composite.generate_composite` becomes an item scored by
    its answer kind (``yes_no``, ``choice`` among its candidates, ``quantitative`` in ``m`` / ``clock`` /
    ``count``), with ``meta["composite"] = True`` and ``meta["scene_id"]``. ``config``: a ``CompositeConfig``.
    An image of ``None`` gives items without an image (for tool chains that read the scene graph only).
    Composite rows of a ``spatialforge generate`` dataset are read by :func:`load_spatialforge` the same way.
    """
    from spatialforge.qa.composite import CompositeConfig, generate_composite

    cfg = config if config is not None else CompositeConfig()
    if not isinstance(cfg, CompositeConfig):
        raise ConfigError(f"composite_benchmark: config must be a CompositeConfig, got {type(cfg).__name__}")
    col = _Collector()
    n_scenes = n_pairs = 0
    for graph, image in scenes:
        n_scenes += 1
        for qa in generate_composite(graph, None, cfg):
            n_pairs += 1
            rec = dict(qa.to_dict(), value=float(qa.value))
            try:
                col.add(spatialforge_item(name, rec, image, {"scene_id": graph.scene_id}), graph.scene_id)  # type: ignore[arg-type]
            except _Skip as skip:
                col.skip(qa.id, skip.reason, f"{qa.id}: {skip}", graph.scene_id)
    return col.finish(name, "scene graphs", {"format": "composite", "scenes": n_scenes, "records": n_pairs,
                                             "config": cfg.to_dict()})


# --------------------------------------------------------------------------------------------------
# Q-Spatial Bench


def _split_of(file_name: str) -> str:
    """``QSpatial_plus-00000-of-00001.parquet`` -> ``QSpatial_plus``."""
    stem = file_name.split(".")[0]
    return re.sub(r"-\d{5}-of-\d{5}$", "", stem)


@dataclass(frozen=True)
class _Part:
    split: str
    rows: list[Any]
    base: Path | None  # folder that relative image paths may be relative to
    origin: str


def _hf_rows(ds: Any) -> list[dict[str, Any]]:
    """Rows of a ``datasets.Dataset`` with the image column undecoded (``{"bytes", "path"}``)."""
    datasets = _require_datasets()
    if "image" in ds.features and isinstance(ds.features["image"], datasets.Image):
        ds = ds.cast_column("image", datasets.Image(decode=False))
    return list(ds)


def _require_datasets() -> Any:
    from spatialforge._optional import require

    return require("datasets", extra="hf", feature="reading Hugging Face datasets")


def _check_columns(names: Iterable[str], required: Sequence[str], origin: str, what: str) -> None:
    names = list(names)
    missing = [c for c in required if c not in names]
    if missing:
        raise DatasetError(f"{origin}: missing column(s) {', '.join(missing)} (expected {what}; "
                           f"found {', '.join(names) or 'none'})", path=origin)


def _pick_splits(available: Sequence[str], split: str | None, origin: str) -> list[str]:
    if split is None:
        return list(available)
    if split not in available:
        raise ConfigError(f"{origin}: no split {split!r}; available: {', '.join(available) or 'none'}")
    return [split]


def _qspatial_from_disk(p: Path, split: str | None) -> list[_Part]:
    datasets = _require_datasets()
    try:
        loaded = datasets.load_from_disk(str(p))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{p}: cannot load the saved `datasets` folder ({exc})", path=str(p)) from None
    if isinstance(loaded, datasets.DatasetDict):
        parts = []
        for s in _pick_splits(list(loaded.keys()), split, str(p)):
            _check_columns(loaded[s].column_names, _QSPATIAL_REQUIRED, str(p / s), "Q-Spatial Bench columns")
            parts.append(_Part(s, _hf_rows(loaded[s]), p, str(p / s)))
        return parts
    _check_columns(loaded.column_names, _QSPATIAL_REQUIRED, str(p), "Q-Spatial Bench columns")
    name = split or (p.name if p.name in QSPATIAL_SPLITS else "QSpatial")
    return [_Part(name, _hf_rows(loaded), p, str(p))]


def _qspatial_from_hub(name: str, split: str | None) -> list[_Part]:
    datasets = _require_datasets()
    try:
        loaded = datasets.load_dataset(name, split=split)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{name}: cannot load the dataset from the Hugging Face Hub ({exc})", path=name) from None
    if isinstance(loaded, datasets.DatasetDict):
        for s in loaded:
            _check_columns(loaded[s].column_names, _QSPATIAL_REQUIRED, f"{name}:{s}", "Q-Spatial Bench columns")
        return [_Part(s, _hf_rows(loaded[s]), None, f"{name}:{s}") for s in loaded]
    _check_columns(loaded.column_names, _QSPATIAL_REQUIRED, name, "Q-Spatial Bench columns")
    return [_Part(split or "QSpatial", _hf_rows(loaded), None, f"{name}:{split}")]


def _qspatial_file(f: Path, split: str | None) -> _Part:
    file_split = _split_of(f.name)
    if f.suffix == ".parquet":
        rows: list[Any] = _read_parquet(f, _QSPATIAL_REQUIRED, "Q-Spatial Bench columns")
    elif f.suffix in (".jsonl", ".json"):
        rows = [r for _, r in _read_json_records(f)]
        records = [r for r in rows if isinstance(r, Mapping)]
        if records and all(any(c not in r for c in _QSPATIAL_REQUIRED) for r in records):
            _check_columns(records[0].keys(), _QSPATIAL_REQUIRED, str(f), "Q-Spatial Bench fields")
    else:
        raise DatasetError(f"{f}: unsupported file type (expected .parquet, .jsonl or .json)", path=str(f))
    if split is not None and file_split in QSPATIAL_SPLITS and file_split != split:
        raise ConfigError(f"{f}: holds split {file_split!r}, not {split!r}")
    return _Part(split or file_split, rows, f.parent, str(f))


def _qspatial_parts(path: str | os.PathLike[str], split: str | None) -> tuple[str, list[_Part]]:
    p = Path(path)
    if p.is_file():
        return str(p), [_qspatial_file(p, split)]
    if p.is_dir():
        if (p / "dataset_dict.json").is_file() or (p / "state.json").is_file():
            return str(p), _qspatial_from_disk(p, split)
        files = sorted([*p.glob("*.parquet"), *p.glob("data/*.parquet")])
        if not files:
            files = sorted([*p.glob("*.jsonl"), *p.glob("*.json")])
        if not files:
            raise DatasetError(f"{p}: no Q-Spatial Bench data (expected a `datasets.save_to_disk` folder, "
                               "Parquet files such as data/QSpatial_plus-00000-of-00001.parquet, or .jsonl)",
                               path=str(p))
        by_split: dict[str, list[Path]] = {}
        for f in files:
            by_split.setdefault(_split_of(f.name), []).append(f)
        parts = []
        for s in _pick_splits(list(by_split), split, str(p)):
            for f in by_split[s]:
                parts.append(replace(_qspatial_file(f, None), split=s))
        return str(p), parts
    if isinstance(path, str) and _HUB_NAME_RE.match(path):
        return f"hf://{path}", _qspatial_from_hub(path, split)
    raise DatasetError(f"{p}: no such file or folder (and not a Hugging Face dataset name like {QSPATIAL_HUB})",
                       path=str(p))


def _qspatial_image(row: Mapping[str, Any], part: _Part, image_root: Path | None) -> tuple[bytes | None, str | None]:
    data = _image_bytes(row.get("image"))
    if data is not None:
        return data, None
    rels = [r for r in (row.get("image_path"),
                        row["image"].get("path") if isinstance(row.get("image"), Mapping) else None)
            if isinstance(r, str) and r]
    roots = [r for r in (image_root, part.base) if r is not None]
    candidates = []
    for rel in rels:
        rp = Path(rel)
        if rp.is_absolute():
            candidates.append(rp)
            continue
        prefix = f"{part.split}/images/"
        stripped = Path(rel[len(prefix):]) if rel.startswith(prefix) else None
        for root in roots:
            candidates.append(root / rp)
            if stripped is not None:
                candidates.append(root / stripped)
    found = _first_file(candidates)
    if found is None:
        where = ", ".join(str(r) for r in roots) or "no image_root given"
        raise _Skip("missing_image", f"no embedded image and {rels[0] if rels else 'no image_path'} not found "
                                     f"under {where} (QSpatial_scannet frames must be downloaded from ScanNet; "
                                     "pass image_root)")
    return None, str(found)


def _qspatial_item(bench: str, row: Any, part: _Part, index: int, image_root: Path | None) -> BenchmarkItem:
    item_id = f"{part.split}-{index:04d}"
    if isinstance(row, _Skip):
        raise row
    if not isinstance(row, Mapping):
        raise _Skip("bad_record", f"record is {type(row).__name__}, not an object")
    for key in _QSPATIAL_REQUIRED:
        if row.get(key) is None or (isinstance(row.get(key), str) and not row[key].strip()):
            raise _Skip("missing_field", f"field {key!r} is missing or empty")
    value = _clean_float32(_finite(row["answer_value"], "answer_value"))
    if value <= 0:
        raise _Skip("bad_truth", f"answer_value {value} is not a positive length")
    unit = str(row["answer_unit"]).strip()
    per_unit = _METRES_PER_UNIT.get(unit.lower())
    if per_unit is None:
        raise _Skip("unknown_unit", f"answer_unit {unit!r} is not a length unit this loader knows")
    image_bytes, image_path = _qspatial_image(row, part, image_root)
    raw_type = str(row.get("question_type") or "")
    return BenchmarkItem(
        id=item_id, benchmark=bench, question=str(row["question"]).strip(), kind="quantitative",
        type=_QSPATIAL_TYPES.get(raw_type, raw_type or "length"), truth=round(value * per_unit, 9), unit="m",
        reference_answer=f"{value:g} {unit}", image_path=image_path, image_bytes=image_bytes,
        meta={"split": part.split, "index": index, "question_type": raw_type, "answer_value": value,
              "answer_unit": unit, "image_path": row.get("image_path")})


def load_qspatial(path: str | os.PathLike[str] = QSPATIAL_HUB, split: str | None = None, *,
                  image_root: str | os.PathLike[str] | None = None, name: str = "qspatial") -> Benchmark:
    """Q-Spatial Bench: every record becomes a quantitative item with its truth in metres.

    ``path``: a ``datasets.save_to_disk`` folder, a Parquet file or a folder of them (the Hub layout
    ``data/QSpatial_plus-00000-of-00001.parquet``), a ``.jsonl`` / ``.json`` export with the same
    fields, or a Hub name (default ``andrewliao11/Q-Spatial-Bench``, needs ``spatialforge[hf]`` and a
    network). ``split``: ``QSpatial_plus`` or ``QSpatial_scannet`` (default: all). Records have no id;
    the item id is ``<split>-<row index, 4 digits>``. ``QSpatial_scannet`` rows carry no image (ScanNet
    licence): their ``image_path`` (``QSpatial_scannet/images/<scene>/color/<frame>.jpg``) is looked up
    under ``image_root`` (with and without the ``QSpatial_scannet/images/`` prefix); rows whose image
    is not found are skipped as ``missing_image``.
    """
    root = Path(image_root) if image_root is not None else None
    source, parts = _qspatial_parts(path, split)
    col = _Collector()
    n = 0
    next_index: dict[str, int] = {}  # one running row index per split, across its Parquet files
    for part in parts:
        for row in part.rows:
            index = next_index.get(part.split, 0)
            next_index[part.split] = index + 1
            n += 1
            item_id = f"{part.split}-{index:04d}"
            where = f"{part.origin} row {index}"
            try:
                col.add(_qspatial_item(name, row, part, index, root), where)
            except _Skip as skip:
                col.skip(item_id, skip.reason, f"{item_id}: {skip}", where)
    info = {"format": "qspatial", "splits": sorted({p.split for p in parts}), "records": n,
            "image_root": None if root is None else str(root)}
    return col.finish(name, source, info)


# --------------------------------------------------------------------------------------------------
# SpatialRGPT-Bench


def _conversation_pairs(convs: Any) -> list[tuple[str, str]]:
    """(question, answer) pairs of a LLaVA-style conversation (``from``/``value`` or ``role``/``content``)."""
    if not isinstance(convs, list):
        return []
    turns = []
    for t in convs:
        if not isinstance(t, Mapping):
            return []
        who = str(t.get("from", t.get("role", ""))).lower()
        text = t.get("value", t.get("content"))
        if not isinstance(text, str):
            return []
        turns.append(("q" if who in ("human", "user") else "a" if who in ("gpt", "assistant") else "?", text))
    pairs = []
    for (w1, t1), (w2, t2) in itertools.pairwise(turns):
        if w1 == "q" and w2 == "a":
            pairs.append((t1, t2))
    return pairs


def _region_text(question: str) -> str:
    """``"<image>\\nIs <mask> behind <mask>?"`` -> ``"Is Region [0] behind Region [1]?"``."""
    text = question.replace("<image>", "").strip()
    counter = iter(range(10_000))
    return _MASK_RE.sub(lambda _m: f"Region [{next(counter)}]", text)


def _srgpt_files(p: Path) -> Path | list[Path]:
    if p.is_file():
        return p
    if not p.is_dir():
        raise DatasetError(f"{p}: no such file or folder", path=str(p))
    if (p / _SRGPT_ANNOTATION).is_file():
        return p / _SRGPT_ANNOTATION
    candidates = sorted(f for f in [*p.glob("*.jsonl"), *p.glob("*.json")] if f.name != DESCRIPTOR_NAME)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        parquet = sorted([*p.glob("*.parquet"), *p.glob("data/*.parquet")])
        if parquet:
            return parquet
    listing = ", ".join(f.name for f in candidates) or "none"
    raise DatasetError(f"{p}: cannot tell which file is the SpatialRGPT-Bench annotation (expected {_SRGPT_ANNOTATION} "
                       f"or exactly one .json / .jsonl file; found {listing})", path=str(p))


def _srgpt_records(p: Path) -> tuple[str, list[tuple[int, Any]], Path]:
    found = _srgpt_files(p)
    if isinstance(found, list):
        records: list[tuple[int, Any]] = []
        for f in found:
            rows = _read_parquet(f, ("id", "conversations", "qa_info"), "SpatialRGPT-Bench fields")
            records.extend(enumerate(rows, start=len(records)))
        return str(p), records, p
    if found.suffix == ".parquet":
        rows = _read_parquet(found, ("id", "conversations", "qa_info"), "SpatialRGPT-Bench fields")
        return str(found), list(enumerate(rows)), found.parent
    if found.suffix not in (".json", ".jsonl"):
        raise DatasetError(f"{found}: unsupported file type (expected .json, .jsonl or .parquet)", path=str(found))
    records = _read_json_records(found)
    usable = [r for _, r in records if isinstance(r, Mapping)]
    if usable and all("conversations" not in r and "qa_info" not in r for r in usable):
        raise DatasetError(f"{found}: records lack the fields 'conversations' and 'qa_info' "
                           "(not a SpatialRGPT-Bench annotation file)", path=str(found))
    return str(found), records, found.parent


def _srgpt_image(record: Mapping[str, Any], roots: Sequence[Path]) -> tuple[bytes | None, str | None, Any]:
    info = _structured(record.get("image_info"))
    data = _image_bytes(record.get("image"))
    if data is not None:
        return data, None, info
    file_path = info.get("file_path") if isinstance(info, Mapping) else None
    if not isinstance(file_path, str) or not file_path:
        raise _Skip("missing_field", "image_info.file_path is missing")
    rel = Path(file_path)
    candidates = [rel] if rel.is_absolute() else [c for r in roots for c in (r / rel, r / "images" / rel)]
    found = _first_file(candidates)
    if found is None:
        raise _Skip("missing_image", f"image {file_path} not found under {', '.join(map(str, roots))} "
                                     "(pass image_root: the Omni3D datasets folder)")
    return None, str(found), info


def _srgpt_truth(category: str, question: str, answer: str) -> dict[str, Any]:
    """kind / type / unit / truth (/ options) of one SpatialRGPT question from its category and answer."""
    if category in _SRGPT_QUANTITATIVE:
        qtype, unit = _SRGPT_QUANTITATIVE[category]
        if unit == "clock":
            hour = _parse_clock(answer)
            if hour is None:
                raise _Skip("unparseable_truth", f"no single clock hour 1-12 in the answer {answer!r}")
            return {"kind": "quantitative", "type": qtype, "unit": "clock", "truth": hour}
        metres = parse_length_m(answer)
        if metres is None:
            raise _Skip("unparseable_truth", f"no single length with a unit in the answer {answer!r}")
        if metres <= 0:
            raise _Skip("bad_truth", f"length {metres} m in the answer {answer!r} is not positive")
        return {"kind": "quantitative", "type": qtype, "unit": "m", "truth": metres}
    if category.endswith("_predicate"):
        yes = _parse_yes_no(answer)
        if yes is None:
            raise _Skip("ambiguous_truth", f"the answer {answer!r} states neither yes nor no")
        return {"kind": "yes_no", "type": category, "unit": "bool", "truth": yes}
    if category.endswith("_choice"):
        regions = _regions(question)
        if len(regions) < 2:
            raise _Skip("bad_record", f"the choice question {question!r} names fewer than two regions")
        chosen = _regions(answer)
        if len(chosen) != 1 or chosen[0] not in regions:
            raise _Skip("ambiguous_truth", f"the answer {answer!r} does not name exactly one of the regions "
                                           f"{regions} of the question")
        return {"kind": "choice", "type": category, "unit": "option", "truth": regions.index(chosen[0]),
                "options": tuple(f"Region [{k}]" for k in regions)}
    raise _Skip("unknown_category", f"qa_info.category {category!r} is not a known SpatialRGPT-Bench category")


def _image_frame(info: Any) -> tuple[int, int] | None:
    """``(width, height)`` of ``image_info`` (the size the boxes refer to), or ``None``."""
    if not isinstance(info, Mapping):
        return None
    w, h = info.get("width"), info.get("height")
    ok = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in (w, h))
    return (int(w), int(h)) if ok else None


def _srgpt_items(bench: str, record: Any, roots: Sequence[Path], regions_mode: str = "draw",
                 notes: list[str] | None = None) -> list[BenchmarkItem]:
    if isinstance(record, _Skip):
        raise record
    if not isinstance(record, Mapping):
        raise _Skip("bad_record", f"record is {type(record).__name__}, not an object")
    rid = record.get("id")
    if rid is None or str(rid).strip() == "":
        raise _Skip("missing_field", "field 'id' is missing")
    qa_info = _structured(record.get("qa_info"))
    if not isinstance(qa_info, Mapping) or not qa_info.get("category"):
        raise _Skip("missing_field", "qa_info.category is missing")
    pairs = _conversation_pairs(_structured(record.get("conversations")))
    if not pairs:
        raise _Skip("missing_field", "conversations hold no (human, gpt) turn pair")
    category = str(qa_info["category"])
    image_bytes, image_path, image_info = _srgpt_image(record, roots)
    bbox = _structured(record.get("bbox"))
    rle = _structured(record.get("rle"))
    regions, problems = parse_regions(bbox, rle, _image_frame(image_info))
    text_q = record.get("text_q")
    items: list[BenchmarkItem] = []
    for k, (q, a) in enumerate(pairs):
        use_text_q = k == 0 and isinstance(text_q, str) and text_q.strip()
        question = text_q.replace("<image>", "").strip() if use_text_q else _region_text(q)
        truth = _srgpt_truth(category, question, a)
        common = dict(
            id=str(rid) if len(pairs) == 1 else f"{rid}#{k}", benchmark=bench, question=question,
            reference_answer=a.strip(), image_path=image_path, image_bytes=image_bytes,
            meta={"category": category, "qa_type": qa_info.get("type"), "record_id": str(rid),
                  "regions": len(bbox) if isinstance(bbox, list) else None, "bbox": bbox, "rle": rle,
                  "image_info": image_info, "conversation_question": q, "region_marks": regions_mode,
                  "region_notes": list(problems), "clock_rounding": SPATIALRGPT_CLOCK_ROUNDING},
            **truth)
        if regions_mode == "draw":
            drawable = {r.index for r in regions}
            missing = [n for n in _regions(question) if n not in drawable]
            if missing:
                why = "; ".join(problems) or f"the record has {count(len(regions), 'region')}"
                raise _Skip("bad_region", f"region{'s' if len(missing) > 1 else ''} "
                                          f"{', '.join(map(str, missing))} of the question cannot be drawn ({why})")
            items.append(RegionMarkedItem(regions=regions, **common))
        else:
            items.append(BenchmarkItem(**common))
    if notes is not None and problems and items:
        notes.extend(f"{rid}: {p}" for p in problems)
    return items


def load_spatialrgpt(path: str | os.PathLike[str], image_root: str | os.PathLike[str] | None = None, *,
                     name: str | None = None, regions: str = "draw") -> Benchmark:
    """SpatialRGPT-Bench from its released annotation file (``SpatialRGPT-Bench_v1.json``).

    ``path``: the JSON list file, a JSON-lines file with the same records, a folder holding one of
    them, or a Parquet export (nested fields may be stored as strings). ``image_root``: the folder
    ``image_info.file_path`` is relative to (Omni3D's ``datasets/``); default: the annotation's folder.
    Questions are the ``text_q`` text (regions named ``Region [k]``, ``k`` indexing ``bbox`` / ``rle``,
    kept in ``meta``). Categories ``*_data`` become quantitative items in metres (the length the answer
    states, inches / feet / cm converted), ``direction`` a clock hour, ``*_predicate`` yes/no items (from
    the answer's lead-in: Yes / Indeed / Correct / That is True vs No / In fact / Actually / Incorrect /
    That is False), ``*_choice`` choice items with options ``("Region [0]", "Region [1]")``.

    ``regions``: ``"draw"`` (default) gives :class:`~spatialforge.eval.regions.RegionMarkedItem` items,
    whose ``load_image()`` returns the image with the regions drawn (labelled mask outlines or boxes,
    see :mod:`spatialforge.eval.regions`), for models without region input; the benchmark is named
    ``spatialrgpt+regions`` by default. A question naming a region that has neither a usable box
    nor a usable mask is skipped (``bad_region``). ``"none"``: the plain image (name ``spatialrgpt``),
    for a model that gets the regions another way (they stay in ``meta``). Either way a run folder
    cannot mix the two: the name differs, and ``info["regions"]`` says what was drawn. Clock answers
    on these items are scored with the benchmark's rounding (``meta["clock_rounding"] = "up"``).
    """
    if regions not in REGION_MODES:
        raise ConfigError(f"regions must be one of {', '.join(REGION_MODES)}, got {regions!r}")
    if name is None:
        name = "spatialrgpt+regions" if regions == "draw" else "spatialrgpt"
    source, records, folder = _srgpt_records(Path(path))
    roots = [Path(image_root)] if image_root is not None else [folder]
    col = _Collector()
    notes: list[str] = []
    for index, record in records:
        rid = str(record["id"]) if isinstance(record, Mapping) and record.get("id") is not None else None
        where = f"{source} record {index}"
        try:
            for item in _srgpt_items(name, record, roots, regions, notes):
                col.add(item, where)
        except _Skip as skip:
            col.skip(rid, skip.reason, f"{rid or f'record {index}'}: {skip}", where)
    marked = [it for it in col.items if isinstance(it, RegionMarkedItem)]
    info: dict[str, Any] = {"format": "spatialrgpt", "records": len(records), "image_root": str(roots[0])}
    info["regions"] = {
        "mode": regions,
        "marks_version": MARKS_VERSION if regions == "draw" else None,
        "masks": sum(r.has_mask for it in marked for r in it.regions),
        "boxes": sum(not r.has_mask for it in marked for r in it.regions),
        "notes": len(notes),
        "note_examples": notes[:5],
    }
    return col.finish(name, source, info)


# --------------------------------------------------------------------------------------------------
# Synthetic benchmark


def build_synthetic_benchmark(out_dir: str | os.PathLike[str], n_scenes: int = 200,
                              seed: int = SYNTHETIC_BENCHMARK_SEED, qa_per_image: int = 10, units: str = "metric",
                              noise: float = 0.0, progress: bool = True, *, synth: Any = None,
                              name: str | None = None, overwrite: bool = False, keep_scenes: bool = False,
                              flag: str = "out_dir") -> Path:
    """A held-out benchmark with exact truth: synthetic scenes -> ``spatialforge generate`` -> ``out_dir``.

    ``seed`` (default 1_000_003, disjoint from training seeds) drives the scenes, the geometry and the
    questions; ``noise`` is the synthetic depth noise sigma; ``synth``: a ``SynthConfig`` for the
    scenes (image size ...). ``out_dir`` gets the dataset (``data/``, ``scene_graphs/``,
    ``manifest.json``) and ``benchmark.json`` {format, name, seed, n_scenes, created_by, spatialforge
    version, counts ...}; the scene folders (``_scenes/``) are deleted unless ``keep_scenes``.
    Deterministic: the same arguments give the same items and the same ``benchmark.json``.

    ``out_dir`` is claimed with :func:`~spatialforge.io.outdir.prepare_output_dir` (kind
    :data:`BENCHMARK_OUTPUT`) before any work: a non-empty folder that an earlier build did not
    write is refused, with or without ``overwrite``; a finished benchmark is replaced only with
    ``overwrite=True``, which deletes only what a build writes (anything else is left in place); a
    build that was interrupted is started again. ``flag`` names ``out_dir`` in error messages.
    """
    from spatialforge import __version__
    from spatialforge.geometry import GeometryConfig
    from spatialforge.io.dataset import atomic_write_json
    from spatialforge.pipeline import GenerateConfig, run_generate
    from spatialforge.qa.generator import QAConfig
    from spatialforge.synth import SynthConfig, write_synthetic_dataset

    for what, v, lo in (("n_scenes", n_scenes, 1), ("seed", seed, 0), ("qa_per_image", qa_per_image, 1)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
            raise ConfigError(f"build_synthetic_benchmark: {what} must be an integer >= {lo}, got {v!r}")
    if isinstance(noise, bool) or not isinstance(noise, int | float) or not math.isfinite(noise) or noise < 0:
        raise ConfigError(f"build_synthetic_benchmark: noise must be a finite number >= 0, got {noise!r}")
    if synth is None:
        synth = SynthConfig()
    elif not isinstance(synth, SynthConfig):
        raise ConfigError(f"build_synthetic_benchmark: synth must be a SynthConfig, got {type(synth).__name__}")
    synth = replace(synth, depth_noise=float(noise))
    qa_cfg = QAConfig(qa_per_image=int(qa_per_image), units=units, seed=int(seed))
    cfg = GenerateConfig(qa=qa_cfg, geometry=GeometryConfig(seed=int(seed)))

    out = Path(out_dir)
    prepared = prepare_output_dir(out, BENCHMARK_OUTPUT, overwrite=overwrite, flag=flag)
    if prepared.resumed:
        if (out / DESCRIPTOR_NAME).is_file():
            raise ConfigError(f"{flag} {out}: already holds a benchmark ({DESCRIPTOR_NAME}); use a new folder, or "
                              "overwrite to replace it")
        prepare_output_dir(out, BENCHMARK_OUTPUT, overwrite=True, flag=flag)  # an interrupted build: start again
    scenes = out / _SCENES_DIR
    write_synthetic_dataset(scenes, n=int(n_scenes), seed=int(seed), config=synth, progress=progress)
    manifest = run_generate(scenes, out, cfg, progress=progress)
    if not keep_scenes:
        shutil.rmtree(scenes)  # the scene folders this call rendered, inside its own output
    bench_name = name or f"spatialforge-synthetic-{int(seed)}"
    bench = load_spatialforge(out, name=bench_name)
    counts = manifest["counts"]
    descriptor = {
        "format": DESCRIPTOR_FORMAT,
        "name": bench_name,
        "seed": int(seed),
        "n_scenes": int(n_scenes),
        "qa_per_image": int(qa_per_image),
        "units": units,
        "depth_noise": float(noise),
        "image_size": [synth.width, synth.height],
        "created_by": "spatialforge.eval.benchmarks.build_synthetic_benchmark",
        "spatialforge_version": __version__,
        "generate_fingerprint": cfg.fingerprint(),
        "counts": {
            "scenes": counts["scenes_found"],
            "scenes_ok": counts["scenes_ok"],
            "scenes_rejected": counts["scenes_rejected"],
            "scenes_failed": counts["scenes_failed"],
            **bench.counts(),
        },
    }
    atomic_write_json(out / DESCRIPTOR_NAME, descriptor)
    return out


# --------------------------------------------------------------------------------------------------
# Dispatch


def _spec_parts(spec: str) -> tuple[str, str, str | None]:
    """``(kind, path or hub name, split)`` of a spec; kind ``""`` for a bare folder."""
    kind, rest, split, _ = _spec_options(spec)
    return kind, rest, split


def _spec_options(spec: str) -> tuple[str, str, str | None, str | None]:
    """``(kind, path or hub name, split, regions)`` of a spec; ``regions`` from a ``:regions=MODE`` suffix."""
    prefix, sep, rest = spec.partition(":")
    kind = prefix.lower() if sep else ""
    if kind not in ("qspatial", "spatialrgpt", "spatialforge", "synthetic"):
        return "", spec, None, None
    regions = None
    m = _SPEC_REGIONS_RE.match(rest)
    if m:
        rest, regions = m.group("path"), m.group("mode").strip().lower()
    if kind == "qspatial":
        head, colon, tail = rest.rpartition(":")
        if colon and head and tail and "/" not in tail and "\\" not in tail:
            return kind, head, tail, regions
    return kind, rest, None, regions


def benchmark_path(spec: str) -> Path | None:
    """The local file or folder a benchmark spec reads, or ``None`` (a hub name, or nothing there).

    Commands pass it to :func:`~spatialforge.io.outdir.prepare_output_dir` as an input, so that an
    output folder can never be the benchmark, lie inside it or contain it.
    """
    if not isinstance(spec, str) or not spec.strip():
        return None
    _, path, _ = _spec_parts(spec.strip())
    return Path(path) if path and Path(path).exists() else None


def load_benchmark(spec: str, *, image_root: str | os.PathLike[str] | None = None,
                   regions: str | None = None) -> Benchmark:
    """Load a benchmark from a spec string (see ``BENCHMARK_SPECS``).

    ``"qspatial:PATH_OR_HUB[:SPLIT]"`` (e.g. ``qspatial:andrewliao11/Q-Spatial-Bench:QSpatial_plus``),
    ``"spatialrgpt:PATH[:regions=draw|none]"``, ``"spatialforge:PATH"``, or a folder (a spatialforge
    dataset / synthetic benchmark). ``image_root`` is passed to the Q-Spatial and SpatialRGPT loaders.
    ``regions`` (``"draw"`` / ``"none"``; default: the spec's ``regions=``, else ``"draw"``) says
    whether SpatialRGPT-Bench's regions are drawn on its images (:func:`load_spatialrgpt`); the
    other benchmarks have no regions: ``"draw"`` is refused for them, ``"none"`` changes nothing.
    """
    forms = "; ".join(BENCHMARK_SPECS)
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"benchmark spec must be a non-empty string, got {spec!r}; accepted forms: {forms}")
    spec = spec.strip()
    kind, rest, split, spec_regions = _spec_options(spec)
    for where, mode in (("", regions), (f"benchmark spec {spec!r}: ", spec_regions)):
        if mode is not None and mode not in REGION_MODES:
            raise ConfigError(f"{where}regions must be one of {', '.join(REGION_MODES)}, got {mode!r}")
    if regions is not None and spec_regions is not None and regions != spec_regions:
        raise ConfigError(f"benchmark spec {spec!r} says regions={spec_regions}, but regions={regions} was asked for")
    mode = regions or spec_regions
    if kind != "spatialrgpt" and (spec_regions is not None or mode == "draw"):
        raise ConfigError(f"benchmark spec {spec!r}: only SpatialRGPT-Bench (spatialrgpt:PATH) has regions to draw")
    if kind:
        if not rest:
            raise ConfigError(f"benchmark spec {spec!r} names no path; accepted forms: {forms}")
        if kind == "qspatial":
            return load_qspatial(rest, split, image_root=image_root)
        if kind == "spatialrgpt":
            return load_spatialrgpt(rest, image_root=image_root, regions=mode or "draw")
        return load_spatialforge(rest)
    if Path(spec).is_dir():
        return load_spatialforge(spec)
    raise ConfigError(f"unknown benchmark {spec!r}: not an existing folder and no known prefix; "
                      f"accepted forms: {forms}")
