"""Dataset output: Parquet shards (one row per image), scene graphs, manifest, LLaVA export.

The Parquet schema carries Hugging Face ``datasets`` feature metadata, so
``datasets.load_dataset("parquet", data_files=...)`` decodes ``image`` as an ``Image`` feature.
See docs/formats.md for every column.
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
    "ROW_SCHEMA",
    "atomic_write_bytes",
    "atomic_write_json",
    "encode_png",
    "encode_shard",
    "iter_rows",
    "json_bytes",
    "make_row",
    "messages_from_qa",
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


def _qa_row(pair: QAPair) -> dict[str, Any]:
    d = pair.to_dict()
    d["value"] = float(d["value"])  # bool -> 1.0/0.0, object id -> float; see docs/formats.md
    return d


def make_row(scene_id: str, image_bytes: bytes, image_name: str, width: int, height: int,
             qa: Sequence[QAPair], gravity_source: str, *, messages: list[dict[str, Any]] | None = None
             ) -> dict[str, Any]:
    """One dataset row; ``messages`` (default: :func:`messages_from_qa`) when answers carry reasoning."""
    return {
        "scene_id": scene_id,
        "image": {"bytes": image_bytes, "path": image_name},
        "width": width,
        "height": height,
        "messages": messages_from_qa(qa) if messages is None else messages,
        "qa": [_qa_row(p) for p in qa],
        "gravity_source": gravity_source,
    }


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


def encode_shard(rows: list[dict[str, Any]]) -> bytes:
    """The bytes of a Parquet shard holding ``rows`` (validated by :data:`ROW_SCHEMA`, zstd-compressed).

    Deterministic: the same rows give the same bytes, whichever process encodes them.
    """
    table = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
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
