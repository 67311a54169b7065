"""Dataset output: Parquet shards (one row per image), scene graphs, manifest, LLaVA export.

The Parquet schema carries Hugging Face ``datasets`` feature metadata, so
``datasets.load_dataset("parquet", data_files=...)`` decodes ``image`` as an ``Image`` feature.
See docs/formats.md for every column.

Runs with affordance questions (``spatialforge generate --afford``) write :data:`AFFORD_ROW_SCHEMA`:
the same columns plus ``afford``, the truth of each point question (pixel, 3D point, part id and the
part's mask as run-length encoding: :func:`encode_mask_rle`), so that the dataset alone is enough to
score them. Runs without it write :data:`ROW_SCHEMA`, unchanged.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from spatialforge.core.types import QAPair
from spatialforge.errors import SpatialForgeError
from spatialforge.io.outdir import atomic_path

__all__ = [
    "AFFORD_ROW_SCHEMA",
    "ROW_SCHEMA",
    "atomic_write_bytes",
    "atomic_write_json",
    "decode_mask_rle",
    "encode_mask_rle",
    "encode_png",
    "encode_shard",
    "iter_rows",
    "json_bytes",
    "make_row",
    "messages_from_qa",
    "rle_contains",
    "rle_problem",
    "shard_name",
    "write_shard",
    "write_shard_bytes",
]

_QA_TYPE = pa.struct([
    ("id", pa.string()),
    ("type", pa.string()),
    ("kind", pa.string()),
    ("question", pa.string()),
    ("answer", pa.string()),
    ("value", pa.float64()),
    ("unit", pa.string()),
    ("subjects", pa.list_(pa.int32())),
    ("roles", pa.list_(pa.string())),
    ("names", pa.list_(pa.string())),
])
_CONTENT = pa.struct([("type", pa.string()), ("text", pa.string())])
_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.list_(_CONTENT))])

_BASE_SCHEMA = pa.schema([
    ("scene_id", pa.string()),
    ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("messages", pa.list_(_MESSAGE)),
    ("qa", pa.list_(_QA_TYPE)),
    ("gravity_source", pa.string()),
])
#: the truth of one affordance point question (docs/formats.md, "The afford column")
_AFFORD_TYPE = pa.struct([
    ("qa_id", pa.string()),
    ("part_id", pa.int32()),
    ("part_name", pa.string()),
    ("action", pa.string()),
    ("object_id", pa.int32()),
    ("pixel", pa.list_(pa.int32())),
    ("point_3d", pa.list_(pa.float64())),
    ("mask", pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.list_(pa.int64()))])),
])


def _hf_feature(t: pa.DataType) -> dict[str, Any]:
    if pa.types.is_struct(t):
        return {t.field(i).name: _hf_feature(t.field(i).type) for i in range(t.num_fields)}
    if pa.types.is_list(t):
        return {"feature": _hf_feature(t.value_type), "_type": "List"}
    name = {pa.string(): "string", pa.binary(): "binary", pa.float64(): "float64",
            pa.int32(): "int32", pa.int64(): "int64", pa.bool_(): "bool"}[t]
    return {"dtype": name, "_type": "Value"}


def _with_hf_metadata(schema: pa.Schema) -> pa.Schema:
    features = {f.name: _hf_feature(f.type) for f in schema}
    features["image"] = {"_type": "Image"}
    meta = {"info": {"features": features}}
    return schema.with_metadata({b"huggingface": json.dumps(meta).encode()})


ROW_SCHEMA = _with_hf_metadata(_BASE_SCHEMA)
#: the rows of a run with affordance questions: :data:`ROW_SCHEMA` plus the ``afford`` column
AFFORD_ROW_SCHEMA = _with_hf_metadata(_BASE_SCHEMA.append(pa.field("afford", pa.list_(_AFFORD_TYPE))))


def encode_mask_rle(mask: Any) -> dict[str, list[int]]:
    """A binary mask as uncompressed run-length encoding in the COCO layout: ``{"size": [height, width],
    "counts": [...]}``, the pixels taken column by column (top to bottom, then left to right), the runs
    alternating background / mask and starting with a (possibly empty) background run. ``pycocotools``
    reads it with ``mask.frPyObjects(rle, h, w)``."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"a mask must be 2-D, got shape {m.shape}")
    h, w = m.shape
    flat = m.T.reshape(-1)
    if flat.size == 0:
        return {"size": [h, w], "counts": []}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]]))
    if flat[0]:
        counts = np.concatenate([[0], counts])
    return {"size": [int(h), int(w)], "counts": [int(c) for c in counts]}


def rle_problem(rle: Any, *, foreground: bool = False) -> str | None:
    """Why ``rle`` is not a valid :func:`encode_mask_rle` encoding (``None`` when it is).

    ``foreground``: the mask must also hold a pixel (the truth of a point question): a zero height or width
    and a mask without any mask pixel are problems too."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        return "not a {size, counts} run-length encoding"
    size, counts = rle["size"], rle["counts"]
    if not isinstance(size, list | tuple) or len(size) != 2 or not all(
            isinstance(x, int | np.integer) and not isinstance(x, bool) and x >= 0 for x in size):
        return f"size {size!r} is not [height, width]"
    if not isinstance(counts, list | tuple) or not all(
            isinstance(c, int | np.integer) and not isinstance(c, bool) and c >= 0 for c in counts):
        return "counts are not whole numbers >= 0"
    if sum(int(c) for c in counts) != int(size[0]) * int(size[1]):
        return f"counts add up to {sum(int(c) for c in counts)}, not height x width = {int(size[0]) * int(size[1])}"
    if foreground and (int(size[0]) == 0 or int(size[1]) == 0):
        return f"size {[int(x) for x in size]} holds no pixel"
    if foreground and not any(int(c) for c in counts[1::2]):
        return "the mask has no pixel (every run is background)"
    return None


def decode_mask_rle(rle: dict[str, Any]) -> np.ndarray:
    """The boolean ``(height, width)`` mask of an :func:`encode_mask_rle` encoding."""
    problem = rle_problem(rle)
    if problem is not None:
        raise ValueError(f"bad mask encoding: {problem}")
    h, w = (int(x) for x in rle["size"])
    counts = np.asarray(rle["counts"], dtype=np.int64)
    flat = np.repeat(np.arange(counts.size) % 2 == 1, counts)
    return flat.reshape(w, h).T


def rle_contains(rle: dict[str, Any], u: int, v: int) -> bool:
    """Whether pixel column ``u``, row ``v`` is in the mask of an :func:`encode_mask_rle` encoding (without
    decoding it; a pixel outside the image is not)."""
    h, w = (int(x) for x in rle["size"])
    if not (0 <= u < w and 0 <= v < h):
        return False
    ends = np.cumsum(np.asarray(rle["counts"], dtype=np.int64))
    run = int(np.searchsorted(ends, u * h + v, side="right"))
    return run % 2 == 1


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def messages_from_qa(qa: Sequence[QAPair]) -> list[dict[str, Any]]:
    """Hugging Face chat format: the image in the first user turn, then alternating turns."""
    messages: list[dict[str, Any]] = []
    for i, pair in enumerate(qa):
        content = [{"type": "image", "text": None}] if i == 0 else []
        content.append({"type": "text", "text": pair.question})
        messages.append({"role": "user", "content": content})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": pair.answer}]})
    return messages


def _qa_row(pair: Any) -> dict[str, Any]:
    """The ``qa`` struct of one pair: a pair with a ``qa_record()`` (the affordance questions) gives its own."""
    record = getattr(pair, "qa_record", None)
    if callable(record):
        return record()
    d = pair.to_dict()
    d["value"] = float(d["value"])  # bool -> 1.0/0.0, object id -> float; see docs/formats.md
    return d


def make_row(scene_id: str, image_bytes: bytes, image_name: str, width: int, height: int,
             qa: Sequence[QAPair], gravity_source: str, *, messages: list[dict[str, Any]] | None = None,
             afford: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One dataset row; ``messages`` (default: :func:`messages_from_qa`) when answers carry reasoning;
    ``afford`` (runs with affordance questions only, even when empty): the ``afford`` column's entries."""
    row = {
        "scene_id": scene_id,
        "image": {"bytes": image_bytes, "path": image_name},
        "width": width,
        "height": height,
        "messages": messages_from_qa(qa) if messages is None else messages,
        "qa": [_qa_row(p) for p in qa],
        "gravity_source": gravity_source,
    }
    if afford is not None:
        row["afford"] = afford
    return row


def shard_name(index: int, total: int, split: str = "train") -> str:
    return f"{split}-{index:05d}-of-{total:05d}.parquet"


def _atomic(path: Path, write) -> None:
    """Write through a temporary file renamed into place (with the umask's permissions)."""
    with atomic_path(path) as tmp:
        write(str(tmp))


def _write_all(fh, data: bytes) -> None:
    """Write ``data`` to the open binary file ``fh`` (one place every shard's bytes go through)."""
    fh.write(data)


def _write_file(tmp: str, data: bytes, *, sync: bool) -> None:
    with open(tmp, "wb") as fh:
        _write_all(fh, data)
        if sync:  # on disk before the rename publishes it: a power cut leaves the old file or the whole new one
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_bytes(path: Path, data: bytes, *, sync: bool = False) -> None:
    """Write ``data`` through a temporary file renamed into place; ``sync`` also flushes it to the disk first."""
    _atomic(path, lambda tmp: _write_file(tmp, data, sync=sync))


def json_bytes(obj: Any) -> bytes:
    """The bytes :func:`atomic_write_json` writes for ``obj`` (indented JSON, numpy values as numbers)."""
    return (json.dumps(obj, indent=2, default=_json_default) + "\n").encode()


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def encode_shard(rows: list[dict[str, Any]], *, afford: bool = False) -> bytes:
    """The bytes of a Parquet shard holding ``rows`` (validated by :data:`ROW_SCHEMA`, or by
    :data:`AFFORD_ROW_SCHEMA` with ``afford``, zstd-compressed).

    Deterministic: the same rows give the same bytes, whichever process encodes them.
    """
    table = pa.Table.from_pylist(rows, schema=AFFORD_ROW_SCHEMA if afford else ROW_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def write_shard_bytes(path: Path, data: bytes) -> None:
    """Publish an encoded shard: temporary name, flushed to disk, renamed into place (never half a shard)."""
    atomic_write_bytes(path, data, sync=True)


def write_shard(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows to a Parquet file atomically (temp file + rename), validated by the schema."""
    write_shard_bytes(path, encode_shard(rows))


def iter_rows(out_dir: str | os.PathLike[str], columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Rows of every shard under ``out_dir/data`` in shard order (pure pyarrow)."""
    files = sorted((Path(out_dir) / "data").glob("*.parquet"))
    if not files:
        raise SpatialForgeError(f"{out_dir}: no Parquet shards under data/ (is this a spatialforge output?)")
    for f in files:
        table = pq.read_table(f, columns=columns)
        yield from table.to_pylist()


def read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)
