"""RefCOCO / RefCOCO+ / RefCOCOg in the refer distribution (https://github.com/lichengunc/refer).

On-disk layout (``DATA_ROOT`` is the refer ``data`` folder)::

    DATA_ROOT/refcoco/refs(unc).p        refs(google).p     a Python 2 pickle: list of ref dicts
    DATA_ROOT/refcoco/instances.json                        COCO: images, annotations, categories
    DATA_ROOT/refcoco+/refs(unc).p       instances.json
    DATA_ROOT/refcocog/refs(umd).p       refs(google).p     instances.json
    DATA_ROOT/images/mscoco/images/train2014/COCO_train2014_000000xxxxxx.jpg

A ref is ``{ref_id, ann_id, image_id, category_id, split, sentences: [{sent, raw, tokens, sent_id}],
sent_ids, file_name}``. The ref's ``file_name`` carries an ``_<ann_id>`` suffix and names no real file:
the image file name comes from the image record in ``instances.json``. Splits are ``train``/``val``/
``testA``/``testB`` (refcoco, refcoco+ by unc), ``train``/``val``/``test`` (refcocog by umd),
``train``/``val`` (refcocog by google). The pickles were written by Python 2, so they are read with
``encoding="latin1"``; byte strings and byte keys are decoded, UTF-8 read as latin-1 is repaired.

The pickle is read with an unpickler that only resolves the few globals a refs file can hold
(``_codecs.encode`` for bytes, numpy scalars), so a hostile file cannot run code.

Refs that cannot be used are skipped, recorded in ``skipped`` and counted by reason (see
``SKIP_REASONS``); files that are missing or malformed raise :class:`DatasetError` naming the file.
Torch-free; ``pycocotools`` is imported only to decode masks.
"""

from __future__ import annotations

import bisect
import importlib
import json
import operator
import os
import pickle
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spatialforge._optional import require
from spatialforge.errors import ConfigError, DatasetError

__all__ = [
    "DATASETS",
    "DEFAULT_SPLIT_BY",
    "IMAGE_SUBDIRS",
    "SKIP_REASONS",
    "VALID_SPLIT_BY",
    "ConcatRefDataset",
    "ExcludeImages",
    "RefDataset",
    "RefSample",
    "open_refer",
    "parse_refer_name",
]

DATASETS = ("refcoco", "refcoco+", "refcocog")
VALID_SPLIT_BY: dict[str, tuple[str, ...]] = {
    "refcoco": ("unc", "google"),
    "refcoco+": ("unc", "google"),
    "refcocog": ("umd", "google"),
}
DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}
# where COCO train2014 may live under DATA_ROOT; the first is the refer layout
IMAGE_SUBDIRS = ("images/mscoco/images/train2014", "train2014", "images/train2014")
SKIP_REASONS = (
    "duplicate_ref",  # a ref_id seen before in the same file (the first is kept)
    "missing_annotation",  # the ref's ann_id is not in instances.json
    "annotation_image_mismatch",  # the annotation belongs to another image than the ref says
    "missing_image_record",  # the ref's image_id is not in instances.json
    "no_sentences",  # no sentence, or only empty ones
    "empty_mask",  # empty segmentation (or, with check_masks, a mask that decodes to no pixel)
    "bad_segmentation",  # a segmentation that is neither polygons nor a valid RLE
    "missing_image",  # check_images=True and the image file does not exist
)
REQUIRED_REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")
TEXT_FIELDS = ("sent", "raw")
_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2, "testA": 3, "testB": 4, "testC": 5}


@dataclass(frozen=True)
class RefSample:
    """One referred object: its sentences, its image and where to find its mask."""

    dataset: str
    ref_id: int
    ann_id: int
    image_id: int
    category_id: int
    split: str
    sentences: tuple[str, ...]
    image_path: Path
    height: int
    width: int


# ---------------------------------------------------------------- small helpers

def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _text(value: object) -> str:
    """A Python 2 ``str`` read as latin-1 (or left as bytes) back to the text it was."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin1")
    text = str(value)
    if text.isascii():
        return text
    try:  # UTF-8 bytes that latin1 decoding turned into mojibake ("cafÃ©" -> "café")
        return text.encode("latin1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def _str_keys(record: dict) -> dict:
    if all(isinstance(k, str) for k in record):
        return record
    return {(_text(k) if isinstance(k, bytes) else k): v for k, v in record.items()}


def _split_key(name: str) -> tuple[int, str]:
    return (_SPLIT_ORDER.get(name, len(_SPLIT_ORDER)), name)


def _numpy_scalar() -> Any:
    try:
        module = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy < 2
        module = importlib.import_module("numpy.core.multiarray")
    return module.scalar


class _RefsUnpickler(pickle.Unpickler):
    """Resolves only the globals plain data needs: bytes (protocol 2 from Python 3) and numpy scalars."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return importlib.import_module("_codecs").encode
        if module in ("__builtin__", "builtins") and name in ("set", "frozenset", "bytearray"):
            return {"set": set, "frozenset": frozenset, "bytearray": bytearray}[name]
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "scalar":
            return _numpy_scalar()
        if module == "numpy" and name == "dtype":
            return np.dtype
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a refs file never holds")


def _load_pickle(path: Path) -> Any:
    try:
        with open(path, "rb") as fh:
            return _RefsUnpickler(fh, encoding="latin1").load()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read refs pickle ({_one_line(exc.strerror or exc)})",
                           path=str(path)) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            KeyError, UnicodeError, MemoryError, RecursionError) as exc:
        raise DatasetError(f"{path}: corrupt or not a refs pickle ({type(exc).__name__}: {_one_line(exc)})",
                           path=str(path)) from None


def _as_int(value: object, where: str, path: Path) -> int:
    if isinstance(value, bool):
        raise DatasetError(f"{path}: {where} is a bool, expected an integer id", path=str(path))
    try:
        return operator.index(value)  # int, Python 2 long, numpy integer
    except TypeError:
        pass
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise DatasetError(f"{path}: {where} is not an integer ({_one_line(repr(value))[:60]})", path=str(path))


def _sentences(raw: object, text_field: str, where: str, path: Path) -> tuple[str, ...]:
    if isinstance(raw, dict):  # a single sentence dict instead of a list of them
        raw = [raw]
    if not isinstance(raw, (list, tuple)):
        raise DatasetError(f"{path}: {where} 'sentences' is a {type(raw).__name__}, expected a list",
                           path=str(path))
    other = TEXT_FIELDS[1 - TEXT_FIELDS.index(text_field)]
    out = []
    for j, entry in enumerate(raw):
        if isinstance(entry, dict):
            entry = _str_keys(entry)
            value = entry.get(text_field) or entry.get(other)
        elif isinstance(entry, (str, bytes)):
            value = entry
        else:
            raise DatasetError(f"{path}: {where} sentences[{j}] is a {type(entry).__name__}, expected a dict "
                               f"with 'sent'/'raw'", path=str(path))
        if value is None:
            continue
        if not isinstance(value, (str, bytes)):
            raise DatasetError(f"{path}: {where} sentences[{j}] '{text_field}' is a {type(value).__name__}, "
                               f"expected a string", path=str(path))
        text = " ".join(_text(value).split())
        if text:
            out.append(text)
    return tuple(out)


def _segmentation_problem(seg: object, height: int, width: int) -> tuple[str, str] | None:
    """(reason, detail) when the segmentation cannot give a mask; None when it looks usable."""
    if isinstance(seg, list):
        if not seg:
            return "empty_mask", "segmentation is an empty list"
        for k, poly in enumerate(seg):
            if not isinstance(poly, list) or not all(isinstance(v, (int, float)) for v in poly):
                return "bad_segmentation", f"segmentation[{k}] is not a list of numbers"
            if len(poly) % 2:
                return "bad_segmentation", f"segmentation[{k}] has an odd number of coordinates ({len(poly)})"
        if not any(len(poly) >= 6 for poly in seg):
            return "empty_mask", "no polygon has 3 or more points"
        return None
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(isinstance(v, int) for v in size):
            return "bad_segmentation", "RLE has no integer [height, width] 'size'"
        if list(size) != [height, width]:
            return "bad_segmentation", f"RLE size {list(size)} differs from the image record ({height}x{width})"
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != height * width:
                return "bad_segmentation", "uncompressed RLE counts do not cover height*width pixels"
            if sum(counts[1::2]) == 0:
                return "empty_mask", "RLE has no foreground pixel"
            return None
        if isinstance(counts, (str, bytes)):
            return None if counts else ("empty_mask", "RLE counts are empty")
        return "bad_segmentation", "RLE 'counts' is neither a list nor a string"
    return "bad_segmentation", f"segmentation is a {type(seg).__name__}"


def parse_refer_name(name: str) -> tuple[str, str]:
    """``"refcocog/umd"`` -> ``("refcocog", "umd")``; ``"refcoco"`` -> ``("refcoco", "unc")``."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"refer dataset name must be a non-empty string like 'refcoco/unc', got {name!r}")
    dataset, _, split_by = name.strip().partition("/")
    dataset = dataset.strip().lower()
    if dataset not in DATASETS:
        raise ConfigError(f"unknown refer dataset {dataset!r} in {name!r}; valid: {', '.join(DATASETS)}")
    split_by = split_by.strip() or DEFAULT_SPLIT_BY[dataset]
    if split_by not in VALID_SPLIT_BY[dataset]:
        raise ConfigError(f"invalid splitBy {split_by!r} for {dataset}; valid: {', '.join(VALID_SPLIT_BY[dataset])}")
    return dataset, split_by


# ---------------------------------------------------------------- instances.json

class _Instances:
    """The parts of a COCO instances.json the loader needs, indexed by id."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            raise DatasetError(f"instances file not found: {path}", path=str(path)) from None
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read ({_one_line(exc.strerror or exc)})", path=str(path)) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{path}: not valid JSON ({_one_line(exc)})", path=str(path)) from None
        if not isinstance(data, dict):
            raise DatasetError(f"{path}: expected a JSON object with 'images' and 'annotations', "
                               f"got a {type(data).__name__}", path=str(path))
        self.images: dict[int, dict] = self._index(data, "images")
        self.annotations: dict[int, dict] = self._index(data, "annotations")
        self.categories: dict[int, str] = {}
        cats = data.get("categories", [])
        if isinstance(cats, list):
            for cat in cats:
                if isinstance(cat, dict) and "id" in cat:
                    self.categories[_as_int(cat["id"], "categories[].id", path)] = str(cat.get("name", ""))

    def _index(self, data: dict, key: str) -> dict[int, dict]:
        records = data.get(key)
        if not isinstance(records, list):
            what = "missing" if records is None else f"a {type(records).__name__}, not a list"
            raise DatasetError(f"{self.path}: '{key}' is {what}", path=str(self.path))
        index: dict[int, dict] = {}
        for i, rec in enumerate(records):
            if not isinstance(rec, dict) or "id" not in rec:
                raise DatasetError(f"{self.path}: {key}[{i}] has no 'id'", path=str(self.path))
            index[_as_int(rec["id"], f"{key}[{i}].id", self.path)] = rec
        return index

    def image_size(self, image_id: int) -> tuple[int, int]:
        rec = self.images[image_id]
        try:
            height, width = operator.index(rec["height"]), operator.index(rec["width"])
        except (KeyError, TypeError):
            raise DatasetError(f"{self.path}: image record {image_id} needs integer 'height' and 'width'",
                               path=str(self.path)) from None
        if height < 1 or width < 1:
            raise DatasetError(f"{self.path}: image record {image_id} has size {height}x{width}",
                               path=str(self.path))
        return height, width


# ---------------------------------------------------------------- one dataset

class RefDataset:
    """The refs of one refer dataset (``refcoco``, ``refcoco+``, ``refcocog``) for one splitBy and split(s).

    ``split`` is one split name or a sequence of them (``"all"`` for every split in the file).
    ``text_field`` picks the sentence text: ``"sent"`` (the cleaned, lower-cased one) or ``"raw"``;
    when it is empty the other is used. ``check_images`` skips refs whose image file is missing;
    ``check_masks`` decodes every mask at construction and skips the empty ones (slow: needs pycocotools).
    """

    def __init__(self, data_root: str | os.PathLike, dataset: str = "refcoco", split_by: str | None = None,
                 split: str | Sequence[str] = "train", image_dir: str | os.PathLike | None = None,
                 check_images: bool = False, *, text_field: str = "sent", check_masks: bool = False) -> None:
        if dataset not in DATASETS:
            raise ConfigError(f"unknown refer dataset {dataset!r}; valid: {', '.join(DATASETS)}")
        split_by = DEFAULT_SPLIT_BY[dataset] if split_by is None else split_by
        if split_by not in VALID_SPLIT_BY[dataset]:
            raise ConfigError(f"invalid splitBy {split_by!r} for {dataset}; "
                              f"valid: {', '.join(VALID_SPLIT_BY[dataset])}")
        if text_field not in TEXT_FIELDS:
            raise ConfigError(f"text_field must be one of {', '.join(TEXT_FIELDS)}, got {text_field!r}")
        if isinstance(split, str):
            splits: tuple[str, ...] = (split,)
        elif isinstance(split, Sequence) and split and all(isinstance(s, str) for s in split):
            splits = tuple(dict.fromkeys(split))
        else:
            raise ConfigError(f"split must be a split name or a non-empty list of them, got {split!r}")

        self.data_root = Path(data_root)
        self.dataset, self.split_by = dataset, split_by
        self.text_field = text_field
        if not self.data_root.is_dir():
            raise DatasetError(f"refer data root not found: {self.data_root}", path=str(self.data_root))
        self.dataset_dir = self.data_root / dataset
        if not self.dataset_dir.is_dir():
            present = sorted(p.name for p in self.data_root.iterdir() if p.is_dir())
            raise DatasetError(f"{self.dataset_dir} not found (folders in {self.data_root}: "
                               f"{', '.join(present) or 'none'})", path=str(self.dataset_dir))
        self.refs_path = self.dataset_dir / f"refs({split_by}).p"
        self.instances_path = self.dataset_dir / "instances.json"
        if not self.refs_path.is_file():
            present = sorted(p.name for p in self.dataset_dir.glob("refs(*).p"))
            raise DatasetError(f"refs pickle not found: {self.refs_path} (refs files in {self.dataset_dir}: "
                               f"{', '.join(present) or 'none'})", path=str(self.refs_path))
        self.image_dir = self._resolve_image_dir(image_dir)

        refs = _load_pickle(self.refs_path)
        if not isinstance(refs, (list, tuple)):
            raise DatasetError(f"{self.refs_path}: expected a list of refs, got a {type(refs).__name__}",
                               path=str(self.refs_path))
        self._instances_cache: dict[Path, _Instances] = {}
        instances = self._instances(self.instances_path)
        self.categories: dict[int, str] = dict(instances.categories)

        self.samples: list[RefSample] = []
        self.skipped: list[dict] = []
        self.splits_in_file: dict[str, int] = {}
        self._segmentations: dict[int, Any] = {}
        self._build(refs, instances, splits)
        self._instances_cache.clear()  # only the selected refs' segmentations are kept
        if check_images:
            self._drop_missing_images()
        if check_masks:
            self._drop_empty_masks()
        self.split = splits[0] if len(splits) == 1 else ",".join(self._selected_splits)

    def _resolve_image_dir(self, image_dir: str | os.PathLike | None) -> Path:
        if image_dir is not None:
            return Path(image_dir)
        candidates = [self.data_root / sub for sub in IMAGE_SUBDIRS]
        return next((c for c in candidates if c.is_dir()), candidates[0])

    def _instances(self, path: Path) -> _Instances:
        key = path.resolve()
        if key not in self._instances_cache:
            self._instances_cache[key] = _Instances(path)
        return self._instances_cache[key]

    def _skip(self, ref_id: int | None, reason: str, detail: str) -> None:
        self.skipped.append({"ref_id": ref_id, "reason": reason, "detail": detail})

    def _build(self, refs: Sequence[Any], instances: _Instances, splits: tuple[str, ...]) -> None:
        path = self.refs_path
        split_counts: Counter[str] = Counter()
        wanted = None if splits == ("all",) else set(splits)
        seen: set[int] = set()
        images, anns = instances.images, instances.annotations
        for i, raw in enumerate(refs):
            if not isinstance(raw, dict):
                raise DatasetError(f"{path}: ref #{i} is a {type(raw).__name__}, expected a dict", path=str(path))
            ref = _str_keys(raw)
            for key in REQUIRED_REF_KEYS:
                if key not in ref:
                    raise DatasetError(f"{path}: ref #{i} has no '{key}' key", path=str(path))
            split = ref["split"]
            if not isinstance(split, (str, bytes)):
                raise DatasetError(f"{path}: ref #{i} 'split' is not a string", path=str(path))
            split = _text(split)
            split_counts[split] += 1
            if wanted is not None and split not in wanted:
                continue
            ref_id = _as_int(ref["ref_id"], f"ref #{i} 'ref_id'", path)
            ann_id = _as_int(ref["ann_id"], f"ref #{i} 'ann_id'", path)
            image_id = _as_int(ref["image_id"], f"ref #{i} 'image_id'", path)
            sentences = _sentences(ref["sentences"], self.text_field, f"ref #{i}", path)
            if ref_id in seen:
                self._skip(ref_id, "duplicate_ref", f"ref #{i} repeats ref_id {ref_id}")
                continue
            seen.add(ref_id)
            ann = anns.get(ann_id)
            if ann is None:
                self._skip(ref_id, "missing_annotation", f"ann_id {ann_id} is not in {self.instances_path.name}")
                continue
            if "image_id" in ann and _as_int(ann["image_id"], f"annotation {ann_id} 'image_id'",
                                             self.instances_path) != image_id:
                self._skip(ref_id, "annotation_image_mismatch",
                           f"annotation {ann_id} is on image {ann['image_id']}, the ref says {image_id}")
                continue
            if image_id not in images:
                self._skip(ref_id, "missing_image_record",
                           f"image_id {image_id} is not in {self.instances_path.name}")
                continue
            if not sentences:
                self._skip(ref_id, "no_sentences", "the ref has no non-empty sentence")
                continue
            height, width = instances.image_size(image_id)
            seg = ann.get("segmentation")
            problem = _segmentation_problem(seg, height, width)
            if problem is not None:
                self._skip(ref_id, problem[0], f"annotation {ann_id}: {problem[1]}")
                continue
            category = ref.get("category_id", ann.get("category_id", -1))
            file_name = images[image_id].get("file_name") or f"COCO_train2014_{image_id:012d}.jpg"
            self._segmentations[ann_id] = seg
            self.samples.append(RefSample(
                dataset=self.dataset, ref_id=ref_id, ann_id=ann_id, image_id=image_id,
                category_id=_as_int(category, f"ref #{i} 'category_id'", path), split=split,
                sentences=sentences, image_path=self.image_dir / _text(file_name), height=height, width=width,
            ))
        self.splits_in_file = {k: split_counts[k] for k in sorted(split_counts, key=_split_key)}
        if wanted is not None:
            unknown = [s for s in splits if s not in split_counts]
            if unknown:
                raise ConfigError(f"split {unknown[0]!r} is not in {path}; splits present: "
                                  f"{', '.join(self.splits_in_file) or 'none (the file holds no refs)'}")
        self._selected_splits = [s for s in self.splits_in_file if wanted is None or s in wanted]

    def _drop_missing_images(self) -> None:
        if not self.image_dir.is_dir():
            tried = [str(self.data_root / sub) for sub in IMAGE_SUBDIRS]
            raise DatasetError(f"image folder not found: {self.image_dir} (looked for COCO train2014 in "
                               f"{', '.join(tried)})", path=str(self.image_dir))
        listing = set(os.listdir(self.image_dir))
        kept = []
        for s in self.samples:
            rel = s.image_path.relative_to(self.image_dir) if s.image_path.is_relative_to(self.image_dir) else None
            exists = (rel.name in listing) if rel is not None and len(rel.parts) == 1 else s.image_path.is_file()
            if exists:
                kept.append(s)
            else:
                self._skip(s.ref_id, "missing_image", f"image file not found: {s.image_path}")
        self._keep(kept)

    def _drop_empty_masks(self) -> None:
        kept = []
        for s in self.samples:
            if self._decode(s).any():
                kept.append(s)
            else:
                self._skip(s.ref_id, "empty_mask", f"annotation {s.ann_id} decodes to no pixel")
        self._keep(kept)

    def _keep(self, kept: list[RefSample]) -> None:
        self.samples = kept
        used = {s.ann_id for s in kept}
        self._segmentations = {k: v for k, v in self._segmentations.items() if k in used}

    # ------------------------------------------------------------ access

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> RefSample:
        return self.samples[index]

    def __iter__(self) -> Iterator[RefSample]:
        return iter(self.samples)

    def __repr__(self) -> str:
        return f"RefDataset({self.dataset}/{self.split_by}, split={self.split!r}, refs={len(self.samples)})"

    def _sample(self, sample: RefSample | int) -> RefSample:
        if isinstance(sample, RefSample):
            if sample.dataset != self.dataset or sample.ann_id not in self._segmentations:
                raise ConfigError(f"ref {sample.ref_id} ({sample.dataset}) is not a sample of {self!r}")
            return sample
        return self.samples[operator.index(sample)]

    def _decode(self, sample: RefSample) -> np.ndarray:
        require("pycocotools", extra="afford", feature="RefCOCO masks")
        from pycocotools import mask as mask_api

        seg, h, w = self._segmentations[sample.ann_id], sample.height, sample.width
        try:
            if isinstance(seg, list):
                polygons = [[float(v) for v in poly] for poly in seg if len(poly) >= 6]
                rle = mask_api.merge(mask_api.frPyObjects(polygons, h, w))
            elif isinstance(seg.get("counts"), list):
                rle = mask_api.frPyObjects(seg, h, w)
            else:
                rle = {"size": [h, w], "counts": seg["counts"]}
            decoded = mask_api.decode(rle)
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise DatasetError(f"{self.instances_path}: annotation {sample.ann_id} (ref {sample.ref_id}) cannot be "
                               f"decoded ({type(exc).__name__}: {_one_line(exc)})",
                               path=str(self.instances_path)) from None
        if decoded.ndim == 3:
            decoded = decoded.any(axis=2)
        return np.ascontiguousarray(decoded, dtype=bool)

    def mask(self, sample: RefSample | int) -> np.ndarray:
        """The referred object's mask, bool (H, W), from its polygons or RLE."""
        sample = self._sample(sample)
        out = self._decode(sample)
        if not out.any():
            raise DatasetError(f"{self.instances_path}: annotation {sample.ann_id} (ref {sample.ref_id}) decodes to "
                               f"an empty mask (construct with check_masks=True to skip such refs)",
                               path=str(self.instances_path))
        return out

    def image(self, sample: RefSample | int) -> np.ndarray:
        """The image, uint8 RGB (H, W, 3); grayscale / CMYK / palette COCO images are converted."""
        sample = self._sample(sample)
        return _read_rgb(sample)

    def sentence(self, sample: RefSample | int, rng: np.random.Generator) -> str:
        """One of the ref's sentences, drawn uniformly with ``rng``."""
        sample = self._sample(sample)
        return _pick(sample, rng)

    def category_name(self, sample: RefSample | int) -> str:
        return self.categories.get(self._sample(sample).category_id, "")

    def skipped_by_reason(self) -> dict[str, int]:
        counts = Counter(s["reason"] for s in self.skipped)
        return {k: counts[k] for k in sorted(counts)}

    def summary(self) -> dict[str, Any]:
        per_split = Counter(s.split for s in self.samples)
        return {
            "dataset": self.dataset,
            "split_by": self.split_by,
            "split": self.split,
            "refs": len(self.samples),
            "images": len({s.image_id for s in self.samples}),
            "sentences": sum(len(s.sentences) for s in self.samples),
            "refs_per_split": {k: per_split[k] for k in sorted(per_split, key=_split_key)},
            "splits_in_file": dict(self.splits_in_file),
            "skipped": self.skipped_by_reason(),
            "skipped_total": len(self.skipped),
        }


def _pick(sample: RefSample, rng: np.random.Generator) -> str:
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return sample.sentences[int(rng.integers(len(sample.sentences)))]


def _read_rgb(sample: RefSample) -> np.ndarray:
    path = sample.image_path
    try:
        with Image.open(path) as im:
            rgb = np.array(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"image not found: {path} (image_id {sample.image_id}, ref {sample.ref_id})",
                           path=str(path)) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: cannot read image ({_one_line(exc)})", path=str(path)) from None
    if rgb.shape[:2] != (sample.height, sample.width):
        raise DatasetError(f"{path}: image is {rgb.shape[1]}x{rgb.shape[0]} but instances.json records "
                           f"{sample.width}x{sample.height} (image_id {sample.image_id})", path=str(path))
    return rgb


# ---------------------------------------------------------------- several datasets

class ConcatRefDataset:
    """Several :class:`RefDataset` indexed as one (e.g. refcoco + refcoco+ + refcocog train)."""

    def __init__(self, members: Sequence[RefDataset]) -> None:
        members = list(members)
        if not members or not all(isinstance(m, RefDataset) for m in members):
            raise ConfigError("ConcatRefDataset needs a non-empty list of RefDataset")
        self.members = members
        self._ends = list(np.cumsum([len(m) for m in members]).tolist())
        self.samples: list[RefSample] = [s for m in members for s in m.samples]

    @property
    def skipped(self) -> list[dict]:
        return [{**s, "dataset": f"{m.dataset}/{m.split_by}"} for m in self.members for s in m.skipped]

    def __len__(self) -> int:
        return self._ends[-1]

    def __getitem__(self, index: int) -> RefSample:
        return self.samples[index]

    def __iter__(self) -> Iterator[RefSample]:
        return iter(self.samples)

    def __repr__(self) -> str:
        names = ", ".join(f"{m.dataset}/{m.split_by}" for m in self.members)
        return f"ConcatRefDataset([{names}], refs={len(self)})"

    def member_of(self, sample: RefSample | int) -> RefDataset:
        """The member dataset a sample (or a global index) comes from."""
        if isinstance(sample, RefSample):
            for m in self.members:
                if m.dataset == sample.dataset and sample.ann_id in m._segmentations:
                    return m
            raise ConfigError(f"ref {sample.ref_id} ({sample.dataset}) is not a sample of {self!r}")
        index = operator.index(sample)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {sample} out of range for {len(self)} refs")
        return self.members[bisect.bisect_right(self._ends, index)]

    def _resolve(self, sample: RefSample | int) -> tuple[RefDataset, RefSample]:
        member = self.member_of(sample)
        return member, sample if isinstance(sample, RefSample) else self.samples[operator.index(sample)]

    def mask(self, sample: RefSample | int) -> np.ndarray:
        member, s = self._resolve(sample)
        return member.mask(s)

    def image(self, sample: RefSample | int) -> np.ndarray:
        member, s = self._resolve(sample)
        return member.image(s)

    def sentence(self, sample: RefSample | int, rng: np.random.Generator) -> str:
        _, s = self._resolve(sample)
        return _pick(s, rng)

    def skipped_by_reason(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for m in self.members:
            counts.update(m.skipped_by_reason())
        return {k: counts[k] for k in sorted(counts)}

    def summary(self) -> dict[str, Any]:
        return {
            "refs": len(self),
            "images": len({s.image_id for s in self.samples}),
            "sentences": sum(len(s.sentences) for s in self.samples),
            "skipped": self.skipped_by_reason(),
            "skipped_total": sum(len(m.skipped) for m in self.members),
            "members": [m.summary() for m in self.members],
        }


def open_refer(data_root: str | os.PathLike, names: str | Sequence[str], split: str | Sequence[str] = "train",
               **kw: Any) -> RefDataset | ConcatRefDataset:
    """Open ``names`` (``"refcoco"``, ``"refcoco+/unc"``, ``"refcocog/umd"`` ...) under ``data_root``.

    One name gives a :class:`RefDataset`, several a :class:`ConcatRefDataset`; ``kw`` goes to each
    :class:`RefDataset` (``image_dir``, ``check_images``, ``text_field``, ``check_masks``).
    """
    if isinstance(names, str):
        names = [names]
    parsed = [parse_refer_name(n) for n in names]
    if not parsed:
        raise ConfigError("open_refer needs at least one dataset name like 'refcoco/unc'")
    dupes = [f"{d}/{s}" for (d, s), c in Counter(parsed).items() if c > 1]
    if dupes:
        raise ConfigError(f"refer dataset {dupes[0]} is named twice")
    members = [RefDataset(data_root, dataset=d, split_by=s, split=split, **kw) for d, s in parsed]
    return members[0] if len(members) == 1 else ConcatRefDataset(members)


class ExcludeImages:
    """A view of a ref dataset without the refs of some images (e.g. the validation images: RefCOCO,
    RefCOCO+ and RefCOCOg share COCO images, so training on one and validating on another would
    otherwise train on validation images). Same interface as the dataset it wraps."""

    def __init__(self, source: RefDataset | ConcatRefDataset, image_ids: set[int] | frozenset[int]) -> None:
        self.source = source
        self.samples = [s for s in source.samples if s.image_id not in image_ids]
        self.excluded = len(source.samples) - len(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> RefSample:
        return self.samples[index]

    def __iter__(self) -> Iterator[RefSample]:
        return iter(self.samples)

    def image(self, sample: RefSample) -> np.ndarray:
        return self.source.image(sample)

    def mask(self, sample: RefSample) -> np.ndarray:
        return self.source.mask(sample)

    def sentence(self, sample: RefSample, rng: np.random.Generator) -> str:
        return self.source.sentence(sample, rng)

    def summary(self) -> dict[str, Any]:
        return dict(self.source.summary(), refs=len(self.samples), excluded_overlapping_refs=self.excluded)
