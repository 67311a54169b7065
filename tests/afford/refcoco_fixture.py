"""Tiny refer-distribution datasets (RefCOCO / RefCOCO+ / RefCOCOg) in the exact on-disk format.

``write_refer_dataset`` writes, under ``root``::

    images/mscoco/images/train2014/COCO_train2014_%012d.jpg   gray images with coloured shapes
    <dataset>/instances.json                                  COCO: polygons of the shapes (or RLE)
    <dataset>/refs(<split_by>).p                              protocol-2 pickle as Python 2 wrote it
    <dataset>/gt_masks(<split_by>).npz                        the rasterised shapes, keyed by ann_id
    <dataset>/manifest(<split_by>).json                       what was written: refs per split, sentences,
                                                              the broken refs by expected skip reason

The ``py2`` pickle style writes the opcodes Python 2's pickler emits for plain data: text as byte
strings (``SHORT_BINSTRING``, UTF-8 bytes), ``raw`` sentences as unicode, ints as ``BININT``/``LONG1``.
``write_refer_index`` writes a large index (refs + instances.json, no images) for speed checks.
"""

from __future__ import annotations

import json
import math
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["SPLITS", "py2_pickle_dumps", "write_refer_dataset", "write_refer_index"]

SPLITS = {
    ("refcoco", "unc"): ("train", "val", "testA", "testB"),
    ("refcoco+", "unc"): ("train", "val", "testA", "testB"),
    ("refcoco", "google"): ("train", "val", "test"),
    ("refcoco+", "google"): ("train", "val", "test"),
    ("refcocog", "umd"): ("train", "val", "test"),
    ("refcocog", "google"): ("train", "val"),
}
COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 50), "yellow": (235, 210, 30),
           "purple": (140, 40, 180)}
KINDS = ("square", "circle", "triangle")
CATEGORY = {"square": 1, "circle": 2, "triangle": 3}
IMAGE_ID_BASE = {"refcoco": 100_000, "refcoco+": 200_000, "refcocog": 300_000}


# ---------------------------------------------------------------- a Python 2 style pickle

class _Py2Bytes(bytes):
    """Marks text that Python 2 held as a byte ``str``."""


def py2_pickle_dumps(obj: object) -> bytes:
    """Protocol-2 opcodes for plain data, as Python 2 wrote them (``str`` -> ``_Py2Bytes`` byte strings)."""
    out = bytearray(b"\x80\x02")
    memo = [0]

    def put() -> None:
        idx = memo[0]
        memo[0] += 1
        out.extend(b"q" + bytes([idx]) if idx < 256 else b"r" + struct.pack("<I", idx))

    def emit(value: object) -> None:
        if value is None:
            out.extend(b"N")
        elif value is True or value is False:
            out.extend(b"\x88" if value else b"\x89")
        elif isinstance(value, int):
            if 0 <= value < 256:
                out.extend(b"K" + bytes([value]))
            elif 0 <= value < 65536:
                out.extend(b"M" + struct.pack("<H", value))
            elif -(2**31) <= value < 2**31:
                out.extend(b"J" + struct.pack("<i", value))
            else:  # a Python 2 long
                n = (value.bit_length() + 8) // 8
                out.extend(b"\x8a" + bytes([n]) + value.to_bytes(n, "little", signed=True))
        elif isinstance(value, float):
            out.extend(b"G" + struct.pack(">d", value))
        elif isinstance(value, bytes):  # Python 2 str
            data = bytes(value)
            out.extend(b"U" + bytes([len(data)]) + data if len(data) < 256 else b"T" + struct.pack("<i", len(data))
                       + data)
            put()
        elif isinstance(value, str):  # Python 2 unicode
            data = value.encode("utf-8")
            out.extend(b"X" + struct.pack("<I", len(data)) + data)
            put()
        elif isinstance(value, (list, tuple)):
            out.extend(b"]")
            put()
            if value:
                out.extend(b"(")
                for item in value:
                    emit(item)
                out.extend(b"e")
        elif isinstance(value, dict):
            out.extend(b"}")
            put()
            if value:
                out.extend(b"(")
                for k, v in value.items():
                    emit(k)
                    emit(v)
                out.extend(b"u")
        else:
            raise TypeError(f"cannot write {type(value).__name__} as a Python 2 pickle")

    emit(obj)
    out.extend(b".")
    return bytes(out)


def _as_py2(value: object, unicode_keys: frozenset[str] = frozenset({"raw"})) -> object:
    """Text -> Python 2 byte strings (UTF-8), except the values of ``unicode_keys`` (kept unicode)."""
    if isinstance(value, str):
        return _Py2Bytes(value.encode("utf-8"))
    if isinstance(value, list):
        return [_as_py2(v, unicode_keys) for v in value]
    if isinstance(value, dict):
        return {_as_py2(k): (v if k in unicode_keys else _as_py2(v, unicode_keys)) for k, v in value.items()}
    return value


def _bytes_everywhere(value: object) -> object:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list):
        return [_bytes_everywhere(v) for v in value]
    if isinstance(value, dict):
        return {_bytes_everywhere(k): _bytes_everywhere(v) for k, v in value.items()}
    return value


def _write_refs(path: Path, refs: list[dict], style: str) -> None:
    if style == "py2":
        path.write_bytes(py2_pickle_dumps(_as_py2(refs)))
    elif style == "py3":
        with open(path, "wb") as fh:
            pickle.dump(refs, fh, protocol=2)
    elif style == "bytes_keys":  # Python 3 protocol 2 with bytes keys and values (loads as bytes with latin1)
        with open(path, "wb") as fh:
            pickle.dump(_bytes_everywhere(refs), fh, protocol=2)
    else:
        raise ValueError(f"unknown pickle style {style!r}")


# ---------------------------------------------------------------- shapes

def _shape(kind: str, cx: float, cy: float, r: float, height: int, width: int) -> tuple[list[float], np.ndarray]:
    """(COCO polygon, mask of the pixels whose centres lie inside the shape)."""
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    if kind == "square":
        x0, y0, x1, y1 = round(cx - r), round(cy - r), round(cx + r), round(cy + r)
        poly = [x0, y0, x1, y0, x1, y1, x0, y1]
        truth = (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
    elif kind == "circle":
        n = 48
        rr = r * (1 + 1 / math.cos(math.pi / n)) / 2  # between inscribed and circumscribed: equal area
        poly = []
        for k in range(n):
            a = 2 * math.pi * k / n
            poly += [cx + rr * math.cos(a), cy + rr * math.sin(a)]
        truth = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    else:  # upward triangle
        pts = [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
        poly = [v for p in pts for v in p]
        truth = np.ones((height, width), bool)
        for (ax, ay), (bx, by) in zip(pts, pts[1:] + pts[:1], strict=True):
            truth &= (bx - ax) * (yy - ay) - (by - ay) * (xx - ax) >= 0
    return [float(v) for v in poly], truth


def _column_rle(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts (column-major, starting with a run of zeros)."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = int(v), 1
    counts.append(run)
    return counts


# ---------------------------------------------------------------- the writer

def write_refer_dataset(root: Path, dataset: str = "refcoco", split_by: str = "unc", n_images: int = 3,
                        refs_per_image: int = 2, size: tuple[int, int] = (64, 80), seed: int = 0,
                        shapes: bool = True, *, splits: tuple[str, ...] | None = None, pickle_style: str = "py2",
                        missing_annotation: bool = False, no_sentences: bool = False, rle: bool = False,
                        missing_image: bool = False, missing_image_record: bool = False, empty_mask: bool = False,
                        duplicate_ref: bool = False, grayscale: bool = False, non_ascii: bool = False) -> Path:
    """Write one refer dataset under ``root`` (the refer ``data`` folder) and return ``root``.

    ``size`` is (height, width). Image ``i`` goes to split ``splits[i % len(splits)]`` (default: the
    dataset's splits, train first); each image holds ``refs_per_image`` shapes, one ref each.
    ``shapes=False`` writes no image files (index only). Broken cases are extra refs in ``train``:
    ``missing_annotation``, ``no_sentences`` (two refs: none / only blank), ``empty_mask``,
    ``missing_image_record``, ``missing_image`` (an image record whose file is not written),
    ``duplicate_ref`` (repeats the first train ref's id). ``rle`` stores the first annotation as
    compressed RLE and the second as uncompressed RLE. ``grayscale`` saves the images as 8-bit gray.
    """
    root = Path(root)
    height, width = size
    splits = splits or SPLITS[(dataset, split_by)]
    rng = np.random.default_rng(seed)
    ds_dir = root / dataset
    img_dir = root / "images" / "mscoco" / "images" / "train2014"
    ds_dir.mkdir(parents=True, exist_ok=True)
    if shapes:
        img_dir.mkdir(parents=True, exist_ok=True)

    images, annotations, refs = [], [], []
    truth: dict[str, np.ndarray] = {}
    manifest: dict = {"dataset": dataset, "split_by": split_by, "refs": {}, "sentences": {}, "ann_of_ref": {},
                      "broken": {}, "rle_ann_ids": [], "shapes": {}}
    base = IMAGE_ID_BASE[dataset]
    names = list(COLOURS)
    counter = {"ref": 1, "ann": 1, "sent": 1}

    def add_ref(image_id: int, ann_id: int, split: str, sentences: list[str], category: int,
                ref_id: int | None = None) -> int:
        if ref_id is None:
            ref_id = counter["ref"]
            counter["ref"] += 1
        sents = []
        for text in sentences:
            sents.append({"tokens": text.split(), "raw": text.upper() if text.strip() else text,
                          "sent_id": counter["sent"], "sent": text})
            counter["sent"] += 1
        refs.append({"sent_ids": [s["sent_id"] for s in sents], "file_name":
                     f"COCO_train2014_{image_id:012d}_{ann_id}.jpg", "ann_id": ann_id, "ref_id": ref_id,
                     "image_id": image_id, "split": split, "sentences": sents, "category_id": category})
        return ref_id

    def add_ann(image_id: int, segmentation: object, category: int, bbox: list[float], area: float) -> int:
        ann_id = counter["ann"]
        counter["ann"] += 1
        annotations.append({"segmentation": segmentation, "area": area, "iscrowd": 0, "image_id": image_id,
                            "bbox": bbox, "category_id": category, "id": ann_id})
        return ann_id

    first_train: tuple[int, int, str] | None = None  # (ref_id, image_id, split) for the duplicate
    first_poly: tuple[int, list, int] | None = None
    for i in range(n_images):
        image_id = base + i
        split = splits[i % len(splits)]
        file_name = f"COCO_train2014_{image_id:012d}.jpg"
        images.append({"license": 1, "file_name": file_name, "coco_url": "", "height": height, "width": width,
                       "date_captured": "2013-11-14 16:28:13", "flickr_url": "", "id": image_id})
        canvas = np.full((height, width, 3), 128, np.uint8)
        cell = width / refs_per_image
        colour_order = rng.permutation(len(names))
        for j in range(refs_per_image):
            colour = names[int(colour_order[j % len(names)])]
            kind = KINDS[(i + j) % len(KINDS)]
            r = 0.3 * min(cell, height)
            cx = cell * (j + 0.5) + float(rng.uniform(-0.05, 0.05)) * cell
            cy = height / 2 + float(rng.uniform(-0.1, 0.1)) * height
            poly, mask = _shape(kind, cx, cy, r, height, width)
            canvas[mask] = COLOURS[colour]
            ys, xs = np.nonzero(mask)
            bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
            ann_id = add_ann(image_id, [poly], CATEGORY[kind], bbox, float(mask.sum()))
            truth[str(ann_id)] = mask
            manifest["shapes"][str(ann_id)] = {"kind": kind, "colour": colour}
            where = "on the left" if j == 0 else ("on the right" if j == refs_per_image - 1 else "in the middle")
            options = [f"{colour} {kind}", f"the {colour} {kind}", f"{kind} {where}"]
            if non_ascii and i == 0 and j == 0:
                options[0] = f"{colour} {kind} near the café"
            k = int(rng.integers(1, 4))
            sentences = options[:k]
            ref_id = add_ref(image_id, ann_id, split, sentences, CATEGORY[kind])
            manifest["refs"].setdefault(split, []).append(ref_id)
            manifest["sentences"][str(ref_id)] = sentences
            manifest["ann_of_ref"][str(ref_id)] = ann_id
            if first_train is None and split == "train":
                first_train = (ref_id, image_id, split)
            if first_poly is None:
                first_poly = (image_id, [poly], CATEGORY[kind])
        if shapes:
            img = Image.fromarray(canvas)
            if grayscale:
                img = img.convert("L")
            img.save(img_dir / file_name, quality=95)

    if rle:
        import pycocotools.mask as mask_api

        for k, ann in enumerate(annotations[:2]):
            m = truth[str(ann["id"])]
            if k == 0:
                enc = mask_api.encode(np.asfortranarray(m.astype(np.uint8)))
                ann["segmentation"] = {"size": [height, width], "counts": enc["counts"].decode("ascii")}
            else:
                ann["segmentation"] = {"size": [height, width], "counts": _column_rle(m)}
            manifest["rle_ann_ids"].append(ann["id"])

    def broken(reason: str, ref_id: int) -> None:
        manifest["broken"].setdefault(reason, []).append(ref_id)

    if first_poly is not None:
        img0, poly0, cat0 = first_poly
        if missing_annotation:
            broken("missing_annotation", add_ref(img0, 999_999, "train", ["the lost thing"], cat0))
        if no_sentences:
            for sentences in ([], ["   ", ""]):
                ann_id = add_ann(img0, poly0, cat0, [0, 0, 1, 1], 1.0)
                broken("no_sentences", add_ref(img0, ann_id, "train", sentences, cat0))
        if empty_mask:
            ann_id = add_ann(img0, [], cat0, [0, 0, 0, 0], 0.0)
            broken("empty_mask", add_ref(img0, ann_id, "train", ["nothing at all"], cat0))
        if missing_image_record:
            ann_id = add_ann(base + 90_000, poly0, cat0, [0, 0, 1, 1], 1.0)
            broken("missing_image_record", add_ref(base + 90_000, ann_id, "train", ["a ghost image"], cat0))
        if missing_image:
            image_id = base + 80_000
            images.append({"file_name": f"COCO_train2014_{image_id:012d}.jpg", "height": height, "width": width,
                           "id": image_id})
            ann_id = add_ann(image_id, poly0, cat0, [0, 0, 1, 1], 1.0)
            broken("missing_image", add_ref(image_id, ann_id, "train", ["the unseen square"], cat0))
        if duplicate_ref and first_train is not None:
            ann_id = add_ann(first_train[1], poly0, cat0, [0, 0, 1, 1], 1.0)
            broken("duplicate_ref", add_ref(first_train[1], ann_id, "train", ["again"], cat0, ref_id=first_train[0]))

    instances = {"info": {"description": "fixture"}, "images": images, "licenses": [], "annotations": annotations,
                 "categories": [{"supercategory": "shape", "id": v, "name": k} for k, v in CATEGORY.items()]}
    (ds_dir / "instances.json").write_text(json.dumps(instances))
    _write_refs(ds_dir / f"refs({split_by}).p", refs, pickle_style)
    np.savez_compressed(ds_dir / f"gt_masks({split_by}).npz", **truth)
    (ds_dir / f"manifest({split_by}).json").write_text(json.dumps(manifest, ensure_ascii=False))
    return root


def read_manifest(root: Path, dataset: str = "refcoco", split_by: str = "unc") -> dict:
    return json.loads((Path(root) / dataset / f"manifest({split_by}).json").read_text())


def read_truth(root: Path, dataset: str = "refcoco", split_by: str = "unc") -> dict[int, np.ndarray]:
    with np.load(Path(root) / dataset / f"gt_masks({split_by}).npz") as data:
        return {int(k): data[k] for k in data.files}


def write_refer_index(root: Path, n_refs: int, dataset: str = "refcoco", split_by: str = "unc", seed: int = 0,
                      refs_per_image: int = 4, extra_annotations: int = 0) -> Path:
    """A large index: ``n_refs`` refs (+ ``extra_annotations`` unreferenced annotations), no image files."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    ds_dir = root / dataset
    ds_dir.mkdir(parents=True, exist_ok=True)
    splits = SPLITS[(dataset, split_by)]
    n_images = -(-n_refs // refs_per_image)
    images = [{"id": i + 1, "file_name": f"COCO_train2014_{i + 1:012d}.jpg", "height": 480, "width": 640}
              for i in range(n_images)]
    xy = rng.uniform(10, 400, (n_refs + extra_annotations, 2)).round(1)
    annotations = []
    for a in range(n_refs + extra_annotations):
        x, y = float(xy[a, 0]), float(xy[a, 1])
        annotations.append({"id": a + 1, "image_id": a // refs_per_image % n_images + 1, "category_id": 1,
                            "segmentation": [[x, y, x + 30, y, x + 30, y + 30, x, y + 30]], "area": 900.0,
                            "bbox": [x, y, 30.0, 30.0], "iscrowd": 0})
    refs = []
    for r in range(n_refs):
        image_id = r // refs_per_image + 1
        refs.append({"ref_id": r, "ann_id": r + 1, "image_id": image_id, "category_id": 1,
                     "split": splits[image_id % len(splits)], "sent_ids": [2 * r, 2 * r + 1],
                     "file_name": f"COCO_train2014_{image_id:012d}_{r + 1}.jpg",
                     "sentences": [{"sent": f"object {r}", "raw": f"Object {r}", "tokens": ["object", str(r)],
                                    "sent_id": 2 * r},
                                   {"sent": f"thing {r}", "raw": f"Thing {r}", "tokens": ["thing", str(r)],
                                    "sent_id": 2 * r + 1}]})
    (ds_dir / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                       "categories": [{"id": 1, "name": "thing"}]}))
    with open(ds_dir / f"refs({split_by}).p", "wb") as fh:
        pickle.dump(refs, fh, protocol=2)
    return root
