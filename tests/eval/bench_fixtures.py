"""Writers of tiny benchmark files in the released schemas (see docs/benchmarks.md for the sources).

* Q-Spatial Bench (HF ``andrewliao11/Q-Spatial-Bench``): Parquet files named like the Hub's
  ``data/QSpatial_plus-00000-of-00001.parquet`` with the columns ``question`` (string),
  ``answer_value`` (float32), ``answer_unit`` (string), ``question_type`` (string), ``image_path``
  (string), ``image`` (struct<bytes, path>, an HF ``Image`` feature; null for ``QSpatial_scannet``),
  the same as a ``datasets.save_to_disk`` folder, and a JSON-lines export.
* SpatialRGPT-Bench (HF ``a8cheng/SpatialRGPT-Bench``): ``SpatialRGPT-Bench_v1.json``, a JSON list of
  records ``{id, image_info {file_path, height, width}, text_q, qa_info {type, category},
  conversations [{from, value}], bbox, rle}`` plus the images under their ``file_path``.

The expected items are spelled out next to the records so the tests can check them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

QSPATIAL_COLUMNS = ("question", "answer_value", "answer_unit", "question_type", "image_path", "image")


def jpeg_bytes(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# Q-Spatial Bench

# (question, answer_value, answer_unit, question_type, image_path, embedded image?)
QSPATIAL_PLUS = [
    ("What is the minimum distance between the coffee grinder and the base of the gooseneck kettle in the image?",
     96.0, "centimeter", "horizontal_distance", "QSpatial_plus/images/IMG_0001.jpg", True),
    ("How far is the top of the lamp above the table surface?", 0.3, "meter", "vertical_distance",
     "QSpatial_plus/images/IMG_0002.jpg", True),
    ("How wide is the wooden bench?", 3.0, "feet", "1d_horizontal", "QSpatial_plus/images/IMG_0003.jpg", True),
    ("What is the distance between the two chairs?", 2.0, "cubits", "horizontal_distance",
     "QSpatial_plus/images/IMG_0004.jpg", True),
    ("What is the distance between the sofa and the door?", 150.0, "centimeter", "horizontal_distance",
     "QSpatial_plus/images/IMG_0005.jpg", False),
]
QSPATIAL_SCANNET = [
    ("How tall is the office chair?", 1.0, "meter", "object_height", "QSpatial_scannet/images/scene0015_00/color/0.jpg",
     False),
    ("What is the direct distance between the bed and the desk?", 180.0, "centimeter", "direct_distance",
     "QSpatial_scannet/images/scene0019_00/color/400.jpg", False),
]
# id -> truth in metres, for the rows that load (the others are skipped)
QSPATIAL_EXPECTED = {
    "QSpatial_plus-0000": 0.96,
    "QSpatial_plus-0001": 0.3,
    "QSpatial_plus-0002": 0.9144,
    "QSpatial_scannet-0000": 1.0,
}
QSPATIAL_SKIPS = {
    "QSpatial_plus-0003": "unknown_unit",
    "QSpatial_plus-0004": "missing_image",
    "QSpatial_scannet-0001": "missing_image",
}


def _qspatial_records(rows: list[tuple]) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {c: [] for c in QSPATIAL_COLUMNS}
    for i, (q, v, u, t, p, embedded) in enumerate(rows):
        cols["question"].append(q)
        cols["answer_value"].append(v)
        cols["answer_unit"].append(u)
        cols["question_type"].append(t)
        cols["image_path"].append(p)
        cols["image"].append({"bytes": jpeg_bytes(i), "path": None} if embedded else None)
    return cols


def _qspatial_schema() -> pa.Schema:
    schema = pa.schema([
        ("question", pa.string()),
        ("answer_value", pa.float32()),
        ("answer_unit", pa.string()),
        ("question_type", pa.string()),
        ("image_path", pa.string()),
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
    ])
    features = {
        "question": {"dtype": "string", "_type": "Value"},
        "answer_value": {"dtype": "float32", "_type": "Value"},
        "answer_unit": {"dtype": "string", "_type": "Value"},
        "question_type": {"dtype": "string", "_type": "Value"},
        "image_path": {"dtype": "string", "_type": "Value"},
        "image": {"_type": "Image"},
    }
    return schema.with_metadata({b"huggingface": json.dumps({"info": {"features": features}}).encode()})


def write_scannet_images(image_root: Path) -> Path:
    """The one ScanNet frame the fixture has (``scene0015_00/color/0.jpg``), laid out as the helper script does."""
    frame = image_root / "scene0015_00" / "color" / "0.jpg"
    frame.parent.mkdir(parents=True, exist_ok=True)
    frame.write_bytes(jpeg_bytes(100))
    return image_root


def write_qspatial_parquet(root: Path) -> Path:
    """``root/data/QSpatial_{plus,scannet}-00000-of-00001.parquet`` as on the Hub; returns ``root``."""
    schema = _qspatial_schema()
    for split, rows in (("QSpatial_plus", QSPATIAL_PLUS), ("QSpatial_scannet", QSPATIAL_SCANNET)):
        path = root / "data" / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pydict(_qspatial_records(rows), schema=schema), path)
    return root


def write_qspatial_save_to_disk(root: Path) -> Path:
    """The same two splits as ``DatasetDict.save_to_disk(root)``; returns ``root``."""
    import datasets

    features = datasets.Features({
        "question": datasets.Value("string"),
        "answer_value": datasets.Value("float32"),
        "answer_unit": datasets.Value("string"),
        "question_type": datasets.Value("string"),
        "image_path": datasets.Value("string"),
        "image": datasets.Image(),
    })
    dd = datasets.DatasetDict({
        split: datasets.Dataset.from_dict(_qspatial_records(rows), features=features)
        for split, rows in (("QSpatial_plus", QSPATIAL_PLUS), ("QSpatial_scannet", QSPATIAL_SCANNET))
    })
    dd.save_to_disk(str(root))
    return root


def write_qspatial_jsonl(path: Path) -> Path:
    """A JSON-lines export of ``QSpatial_scannet`` (no image column) plus one unparseable line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"question": q, "answer_value": v, "answer_unit": u, "question_type": t, "image_path": p})
             for q, v, u, t, p, _ in QSPATIAL_SCANNET]
    lines.append("{not json")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------
# SpatialRGPT-Bench

_SUN = "SUNRGBD/kv1/NYUdata/NYU{:04d}/image/NYU{:04d}.jpg"


def encode_rle(mask: np.ndarray) -> str:
    """COCO's compressed RLE string of a (height, width) mask (runs down the columns, first run of 0s;
    each run a variable-length number, 5 bits per character from '0', from the fourth run on as the
    difference to the run two places before). Written from the format, for fixtures that must not
    depend on pycocotools."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    runs, current, n = [], False, 0
    for v in flat:
        if v != current:
            runs.append(n)
            current, n = v, 0
        n += 1
    runs.append(n)
    out = []
    for i, r in enumerate(runs):
        x = r - runs[i - 2] if i > 2 else r
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = not ((c & 0x10 == 0 and x == 0) or (c & 0x10 and x == -1))
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def ellipse_mask(height: int, width: int, box: list[int]) -> np.ndarray:
    """The ellipse inscribed in ``box`` = [x1, y1, x2, y2] (exclusive ends), as a bool mask."""
    x1, y1, x2, y2 = box
    yy, xx = np.mgrid[0:height, 0:width]
    cx, cy, rx, ry = (x1 + x2 - 1) / 2, (y1 + y2 - 1) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def _record(rid: str, kind: str, category: str, text_q: str, answer: str, image: int, n_regions: int = 2) -> dict:
    question = text_q
    for k in range(n_regions):
        question = question.replace(f"Region [{k}]", "<mask>")
    bbox = [[4 + 8 * k, 6, 30 + 8 * k, 40] for k in range(n_regions)]
    rle = [{"size": [48, 64], "counts": encode_rle(ellipse_mask(48, 64, b))} for b in bbox]
    return {
        "id": rid,
        "image_info": {"file_path": _SUN.format(image, image), "height": 48, "width": 64},
        "text_q": text_q,
        "qa_info": {"type": kind, "category": category},
        "conversations": [{"from": "human", "value": "<image>\n" + question}, {"from": "gpt", "value": answer}],
        "bbox": bbox,
        "rle": rle,
    }


SPATIALRGPT_RECORDS = [
    _record("quantitative_Qd1stAnce1", "quantitative", "distance_data", "How far apart are Region [0] and Region [1]?",
            "Region [0] and Region [1] are 1.5 meters apart.", 1),
    _record("quantitative_H3ightInch", "quantitative", "height_data",
            "Determine the vertical dimensions of Region [0].", "Region [0] is 30 inches in height.", 1, n_regions=1),
    _record("quantitative_W1dthFeet0", "quantitative", "width_data", "Measure the width of Region [0].",
            "The width of Region [0] is 3 feet.", 2, n_regions=1),
    _record("quantitative_D1rection0", "quantitative", "direction", "If you are at Region [0], where will you find "
            "Region [1]?", "Region [0] will find Region [1] around the 10 o'clock direction.", 2),
    _record("qualitative_Beh1ndYes0", "qualitative", "behind_predicate", "Is Region [0] behind Region [1]?",
            "Yes, it is.", 1),
    _record("qualitative_LeftNo00000", "qualitative", "left_predicate", "Does Region [0] appear on the left side of "
            "Region [1]?", "In fact, Region [0] is to the right of Region [1].", 2),
    _record("qualitative_TallCho1ce0", "qualitative", "tall_choice", "Who is taller, Region [0] or Region [1]?",
            "Standing taller between the two is Region [1].", 1),
    _record("qualitative_SmallNo0000", "qualitative", "small_predicate", "Can you confirm if Region [0] is smaller "
            "than Region [1]?", "Incorrect, Region [0] is not smaller in size than Region [1].", 2),
    _record("quantitative_HorizFtIn0", "quantitative", "horizontal_distance_data", "How far apart are Region [0] and "
            "Region [1] horizontally?", "They are 5 feet 3 inches apart.", 1),
    _record("quantitative_VertSupp00", "quantitative", "vertical_distance_data", "What is the vertical distance "
            "between Region [0] and Region [1]?", "Region [1] directly supports Region [0], with no vertical distance "
            "between them.", 1),
    _record("qualitative_Aligned0000", "qualitative", "left_predicate", "Is Region [0] to the left of Region [1] from "
            "the viewer's perspective?", "Region [0] and Region [1] are horizontally aligned without one being to "
            "the left or right of the other.", 2),
    _record("quantitative_NoImage000", "quantitative", "distance_data", "How far is Region [0] from Region [1]?",
            "Region [0] is 2 meters away from Region [1].", 9),
    _record("qualitative_Unknown0000", "qualitative", "count_data", "How many objects are near Region [0]?",
            "There are 3.", 1, n_regions=1),
]
# id -> (kind, type, unit, truth, options)
SPATIALRGPT_EXPECTED = {
    "quantitative_Qd1stAnce1": ("quantitative", "distance", "m", 1.5, ()),
    "quantitative_H3ightInch": ("quantitative", "height", "m", 0.762, ()),
    "quantitative_W1dthFeet0": ("quantitative", "width", "m", 0.9144, ()),
    "quantitative_D1rection0": ("quantitative", "clock_direction", "clock", 10, ()),
    "qualitative_Beh1ndYes0": ("yes_no", "behind_predicate", "bool", True, ()),
    "qualitative_LeftNo00000": ("yes_no", "left_predicate", "bool", False, ()),
    "qualitative_TallCho1ce0": ("choice", "tall_choice", "option", 1, ("Region [0]", "Region [1]")),
    "qualitative_SmallNo0000": ("yes_no", "small_predicate", "bool", False, ()),
    "quantitative_HorizFtIn0": ("quantitative", "horizontal_distance", "m", 1.6002, ()),
}
SPATIALRGPT_SKIPS = {
    "quantitative_VertSupp00": "unparseable_truth",
    "qualitative_Aligned0000": "ambiguous_truth",
    "quantitative_NoImage000": "missing_image",
    "qualitative_Unknown0000": "unknown_category",
}


def write_spatialrgpt_images(image_root: Path) -> Path:
    """The images records 1 and 2 use (record ``NoImage`` points at NYU0009, which is not written)."""
    for n in (1, 2):
        p = image_root / _SUN.format(n, n)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(jpeg_bytes(200 + n))
    return image_root


def write_spatialrgpt(root: Path) -> Path:
    """``root/SpatialRGPT-Bench_v1.json`` (a JSON list, as released) and the images under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "SpatialRGPT-Bench_v1.json"
    path.write_text(json.dumps(SPATIALRGPT_RECORDS, indent=2), encoding="utf-8")
    write_spatialrgpt_images(root)
    return path


def write_spatialrgpt_jsonl(path: Path) -> Path:
    """The same records one per line, plus a line that is not JSON (images not written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in SPATIALRGPT_RECORDS] + ['{"id": "broken"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_spatialrgpt_parquet(root: Path) -> Path:
    """A Parquet export of the records (``root/data/test-00000-of-00001.parquet``) with the nested fields
    stored as strings and the images embedded; returns ``root``. (The real Parquet upload's schema could
    not be checked offline; this exercises the loader's handling of such exports.)"""
    rows = []
    for r in SPATIALRGPT_RECORDS:
        n = int(r["image_info"]["file_path"][-8:-4])  # .../NYU0001.jpg -> 1
        rows.append({
            "id": r["id"],
            "image_info": json.dumps(r["image_info"]),
            "text_q": r["text_q"],
            "qa_info": repr(r["qa_info"]),
            "conversations": repr(r["conversations"]),
            "bbox": json.dumps(r["bbox"]),
            "rle": json.dumps(r["rle"]),
            "image": {"bytes": jpeg_bytes(200 + n), "path": None} if n in (1, 2) else None,
        })
    path = root / "data" / "test-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return root


# --------------------------------------------------------------------------------------------------
# SpatialRGPT-Bench regions on larger, plain images (pixel checks of the drawn marks)

REGION_IMAGE_SIZE = (320, 240)
REGION_GREY = (128, 128, 128)
# id -> (question, answer, bbox, which regions get an RLE mask, corrupt masks)
REGION_RECORDS = {
    "qualitative_BoxesOnly00": ("Is Region [0] to the left of Region [1]?", "Yes, it is.",
                                [[20, 60, 120, 200], [180, 90, 300, 220]], (), ()),
    "qualitative_MasksBoth00": ("Is Region [0] behind Region [1]?", "No, it is not.",
                                [[30, 80, 150, 210], [170, 40, 290, 160]], (0, 1), ()),
    "qualitative_BadMask0000": ("Is Region [0] above Region [1]?", "Yes.",
                                [[40, 100, 140, 200], [200, 60, 280, 180]], (0, 1), (1,)),
    "qualitative_NoRegion100": ("Is Region [0] bigger than Region [1]?", "No.",
                                [[40, 100, 140, 200]], (), ()),
    "quantitative_Clock00000": ("If you are at Region [0], where will you find Region [1]?",
                                "Region [0] will find Region [1] around the 11 o'clock direction.",
                                [[20, 60, 120, 200], [180, 90, 300, 220]], (), ()),
}


def write_spatialrgpt_regions(root: Path) -> Path:
    """``root/SpatialRGPT-Bench_v1.json`` with :data:`REGION_RECORDS` on flat grey PNG images (320 x 240).

    Regions listed as masked get the RLE of the ellipse inscribed in their box; a corrupt mask's
    counts are cut short (its box is drawn instead); ``NoRegion1`` names a region the record lacks.
    """
    w, h = REGION_IMAGE_SIZE
    root.mkdir(parents=True, exist_ok=True)
    image = root / "images" / "grey.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), REGION_GREY).save(image)
    records = []
    for rid, (text_q, answer, bbox, masked, corrupt) in REGION_RECORDS.items():
        rle = []
        for k, box in enumerate(bbox):
            if k not in masked:
                rle.append(None)
                continue
            counts = encode_rle(ellipse_mask(h, w, box))
            rle.append({"size": [h, w], "counts": counts[: len(counts) // 2] if k in corrupt else counts})
        category = "direction" if rid.startswith("quantitative") else "left_predicate"
        question = text_q.replace("Region [0]", "<mask>").replace("Region [1]", "<mask>")
        records.append({
            "id": rid, "image_info": {"file_path": "images/grey.png", "height": h, "width": w}, "text_q": text_q,
            "qa_info": {"type": rid.split("_")[0], "category": category},
            "conversations": [{"from": "human", "value": "<image>\n" + question}, {"from": "gpt", "value": answer}],
            "bbox": bbox, "rle": rle if masked else [],
        })
    path = root / "SpatialRGPT-Bench_v1.json"
    path.write_text(json.dumps(records, indent=2), encoding="utf-8")
    return path


def write_region_example(root: Path) -> Path:
    """A SpatialRGPT-style record on a synthetic scene (the picture in docs/benchmarks.md): region 0 the
    vase's mask, region 1 the book stack's mask, region 2 the table's box only."""
    from spatialforge.synth import SynthConfig, generate_scene

    scene = generate_scene(0, seed=5, config=SynthConfig(width=640, height=480))
    h, w = scene.instances.shape
    root.mkdir(parents=True, exist_ok=True)
    Image.fromarray(scene.image).save(root / "scene.png")
    by_name = {o["caption"]: o["id"] for o in scene.objects}
    bbox, rle = [], []
    for name, with_mask in (("blue vase", True), ("purple book stack", True), ("white table", False)):
        mask = scene.instances == by_name[name]
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        bbox.append([int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1])
        rle.append({"size": [h, w], "counts": encode_rle(mask)} if with_mask else None)
    record = {"id": "qualitative_Example000", "image_info": {"file_path": "scene.png", "height": h, "width": w},
              "text_q": "Is Region [0] to the left of Region [1], and is it closer than Region [2]?",
              "qa_info": {"type": "qualitative", "category": "left_predicate"},
              "conversations": [{"from": "human", "value": "<image>\nIs <mask> to the left of <mask>?"},
                                {"from": "gpt", "value": "Yes, it is."}],
              "bbox": bbox, "rle": rle}
    path = root / "SpatialRGPT-Bench_v1.json"
    path.write_text(json.dumps([record]), encoding="utf-8")
    return path
