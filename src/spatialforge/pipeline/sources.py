"""Where photos come from: one :class:`Source` abstraction over folders, Hugging Face datasets (also
streaming), WebDataset tar shards (local paths, brace patterns, URLs) and Parquet tables (image
bytes, or paths / URLs).

A source is cut into deterministic *input shards* (:class:`InputShard`: the folder, one tar file,
one Parquet row group, one data file of a streamed dataset) and yields one
:class:`~spatialforge.perception.image_io.SourceItem` per photo, in a fixed order, without decoding
anything: the perception runner reads an item (its bytes and their SHA-256) only when the photo has
no final record, skips it when the same bytes came before (reason ``duplicate``), and decodes it
last.

**Ids.** Every item gets a stable id that is a safe folder name
(:func:`~spatialforge.perception.image_io.safe_id`: no separators, no ``..``, at most 100
characters): a photo file's stem (the folder rules of
:func:`~spatialforge.perception.image_io.list_image_files`), a WebDataset sample's ``__key__``, the
value of the id column of a Parquet table or a Hugging Face dataset when one is named, else the
row's position (``<table>-<row>``, ``<split>-<index>``); where that is missing (a null or empty id
value), the content hash ``sha256-<16 hex digits>``. Ids are unique: an id already taken gets
``_2``, ``_3``, ... in the source's order (:class:`IdAllocator`), so the same input always gives the
same ids.

**Resume.** The perception records resume photo by photo. On top of that, a source whose shards
are costly to read again (WebDataset tar files, Parquet row groups, the data files of a streamed
Hugging Face dataset) records each shard it read completely in ``OUT/perception/shards/`` with the
ids it held; a rerun skips such a shard without opening it when every one of its photos has a final
record. A shard that cannot be read (a truncated tar, a URL that answers 404) is recorded with its
reason and the run goes on with the next one (a streamed Hugging Face dataset stops instead, since
its ids count rows across shards); a rerun tries it again. :class:`SourceReader` writes a summary to
``OUT/perception/source.json``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import tarfile
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from spatialforge._optional import require
from spatialforge.errors import ConfigError, SpatialForgeError
from spatialforge.io.dataset import atomic_write_json
from spatialforge.perception.image_io import (
    FETCH_TIMEOUT_S,
    IMAGE_SUFFIXES,
    MAX_FETCH_BYTES,
    SourceItem,
    list_image_files,
    safe_id,
)

__all__ = ["SHARD_SUFFIXES", "FolderSource", "HFDatasetSource", "IdAllocator", "ImageFolderSource", "InputShard",
           "ParquetSource", "PhotoSource", "ReadContext", "Source", "SourceReader", "WebDatasetSource",
           "content_id"]

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
#: the members a WebDataset sample's photo is taken from, in this order of preference
IMAGE_FIELDS = tuple(s.lstrip(".") for s in IMAGE_SUFFIXES)
#: what a shard that cannot be read raises (a truncated or corrupt archive, a failed download, a bad file)
_SHARD_ERRORS = (OSError, EOFError, ValueError, tarfile.TarError, zlib.error, http.client.HTTPException)


# ----------------------------------------------------------------------------- ids
class IdAllocator:
    """Safe, unique image ids, given out in the source's order (the same input gives the same ids).

    :meth:`claim` maps a raw key with :func:`safe_id` and, when that id is taken, appends ``_2``,
    ``_3``, ...; :meth:`reserve` marks ids as taken (those of a shard skipped on resume).
    """

    def __init__(self) -> None:
        self.used: set[str] = set()

    def claim(self, raw: str) -> str:
        sid = safe_id(raw)
        candidate, k = sid, 2
        while candidate in self.used:
            candidate, k = f"{sid}_{k}", k + 1
        self.used.add(candidate)
        return candidate

    def reserve(self, ids: Sequence[str]) -> None:
        self.used.update(ids)


def content_id(item: SourceItem, ids: IdAllocator) -> str:
    """The id of an item with no key: ``sha256-<16 hex>`` of its bytes (read now), else a hash of its reference."""
    item.read()
    if item.digest is not None:
        return ids.claim(f"sha256-{item.digest[:16]}")
    return ids.claim(f"ref-{hashlib.sha1(item.source.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}")


# ----------------------------------------------------------------------------- the abstraction
@dataclass(frozen=True)
class InputShard:
    """A deterministic piece of a source: the unit that is recorded when read completely, and skipped on resume.

    ``name`` is unique within the source and stable between runs; ``ref`` says where it is (a path,
    a URL); ``size`` is its number of items when known without reading it. ``recorded``: a complete
    read is recorded (``OUT/perception/shards/``) so that a rerun can skip it unopened. ``fatal``: a
    shard that cannot be read stops the run (the ids of later shards would otherwise move).
    """

    name: str
    ref: str
    size: int | None = None
    key: Any = None
    recorded: bool = False
    fatal: bool = False


@dataclass
class ReadContext:
    """What a source needs while reading a shard: the id allocator, the index of the shard's first item in the
    whole source, and the output folder (a path in a table that points into it is refused)."""

    ids: IdAllocator = field(default_factory=IdAllocator)
    start: int = 0
    out_dir: Path | None = None


class Source(ABC):
    """A source of photos: :meth:`open` checks it (one clear error before anything is written), :meth:`shards`
    cuts it into deterministic input shards, :meth:`read` yields a shard's items in a fixed order."""

    kind: str = "?"

    def __init__(self) -> None:
        self.notes: list[str] = []  # what was left out and why (e.g. a table without the image column)

    def open(self) -> None:  # noqa: B027 - optional: most sources check themselves here
        """Check the source and get ready to read it; raises :class:`SpatialForgeError` (one line)."""

    @abstractmethod
    def shards(self) -> list[InputShard]:
        """The input shards, in order (after :meth:`open`)."""

    @abstractmethod
    def read(self, shard: InputShard, ctx: ReadContext) -> Iterator[SourceItem]:
        """The items of one shard, in order; a shard that cannot be read raises one of the OS/format errors."""

    @property
    def total(self) -> int | None:
        """The number of items, when known without reading them."""
        sizes = [s.size for s in self.shards()]
        return None if any(n is None for n in sizes) else sum(sizes)  # type: ignore[misc]

    def inputs(self) -> list[Path]:
        """The local paths this source reads (for the output-folder checks)."""
        return []

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}


# ----------------------------------------------------------------------------- path and cell handling
def _scheme(text: str) -> str:
    scheme = urlsplit(text).scheme.lower()
    return "" if len(scheme) <= 1 else scheme  # "C:\\x" is a Windows path, not a URL


def _inside(path: Path, folder: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(Path(os.path.realpath(folder)))


def path_item(image_id: str, source: str, text: str, *, base: Path | None, root: Path | None,
              out_dir: Path | None, focal: float | None = None) -> SourceItem:
    """An item for a path or URL held in a table cell.

    http(s) URLs are fetched when read; ``file://`` URLs and paths are local files: a relative path
    is resolved against ``base`` (the table's folder), and the file (symbolic links resolved) must
    lie inside ``root`` (reason ``outside_root``; a source with no root reads no local path) and
    not inside ``out_dir`` (reason ``inside_output``). Other schemes: reason ``unsupported_url``.
    """
    text = text.strip()
    if not text:
        return SourceItem(image_id, source, failure=("null_image", f"{source}: the image cell is empty"))
    scheme = _scheme(text)
    if scheme in ("http", "https"):
        return SourceItem(image_id, f"{source} ({text})", url=text, focal_length_px=focal)
    if scheme == "file":
        text = url2pathname(urlsplit(text).path)
    elif scheme:
        return SourceItem(image_id, source, failure=(
            "unsupported_url", f"{source}: {text!r}: only local paths, file:// and http(s):// URLs are read"))
    path = Path(text)
    if not path.is_absolute():
        if base is None:
            return SourceItem(image_id, source, failure=(
                "outside_root", f"{source}: relative path {text!r} but the source has no folder to resolve it in"))
        path = base / path
    where = f"{source} ({text})"
    if root is None or not _inside(path, root):
        allowed = f"outside {root}" if root is not None else "a local path, and this source reads none"
        return SourceItem(image_id, where, failure=(
            "outside_root", f"{where}: {path} is {allowed} (the table's folder unless --path-root names another)"))
    if out_dir is not None and _inside(path, out_dir):
        return SourceItem(image_id, where, failure=("inside_output", f"{where}: {path} is inside the output folder"))
    return SourceItem(image_id, where, path=Path(os.path.realpath(path)), focal_length_px=focal)


def _focal(value: Any, column: str | None, source: str) -> float | tuple[str, str] | None:
    if column is None or value is None:
        return None
    try:
        focal = float(value)
    except (TypeError, ValueError):
        focal = float("nan")
    if not focal > 0 or focal == float("inf"):
        return "bad_metadata", f"{source}: focal length {value!r} in column {column!r} is not a positive number"
    return focal


def cell_item(image_id: str, source: str, cell: Any, *, base: Path | None, root: Path | None,
              out_dir: Path | None, focal: Any = None, focal_column: str | None = None,
              trusted_paths: bool = False) -> SourceItem:
    """An item for an image cell: bytes, a path or URL (:func:`path_item`), or a ``{"bytes", "path"}`` struct
    (the Hugging Face ``Image`` feature, not decoded); null is reason ``null_image``, anything else
    ``not_an_image``. ``trusted_paths``: a struct's path is the dataset library's own file (no root check)."""
    f = _focal(focal, focal_column, source)
    if isinstance(f, tuple):
        return SourceItem(image_id, source, failure=f)
    if isinstance(cell, dict) and ("bytes" in cell or "path" in cell):
        if cell.get("bytes") is not None:
            cell = cell["bytes"]
        elif isinstance(cell.get("path"), str) and cell["path"]:
            if trusted_paths:
                return _trusted_path_item(image_id, source, cell["path"], f)
            cell = cell["path"]
        else:
            cell = None
    if cell is None:
        return SourceItem(image_id, source, failure=("null_image", f"{source}: the image is null"))
    if isinstance(cell, (bytes, bytearray, memoryview)):
        return SourceItem(image_id, source, data=bytes(cell), focal_length_px=f)
    if isinstance(cell, str):
        return path_item(image_id, source, cell, base=base, root=root, out_dir=out_dir, focal=f)
    return SourceItem(image_id, source, failure=(
        "not_an_image", f"{source}: the image cell holds {type(cell).__name__}, not an image (bytes, a path or a URL)"))


def _trusted_path_item(image_id: str, source: str, text: str, focal: float | None) -> SourceItem:
    """A path the datasets library resolved itself: a local file, an http(s) URL, or one of its own URLs
    (``hf://``, ``zip://``, read with its ``xopen``)."""
    if Path(text).is_file():
        return SourceItem(image_id, source, path=text, focal_length_px=focal)
    if _scheme(text) in ("http", "https"):
        return SourceItem(image_id, source, url=text, focal_length_px=focal)

    def read() -> SourceItem:
        from datasets.utils.file_utils import xopen

        try:
            with xopen(text, "rb") as f:
                data = f.read(MAX_FETCH_BYTES + 1)
        except (OSError, ValueError) as exc:
            return SourceItem(image_id, source, failure=("fetch_failed", f"{source}: cannot read {text} ({exc})"))
        return SourceItem(image_id, source, data=data, focal_length_px=focal)

    return SourceItem(image_id, source, resolve=read)


# ----------------------------------------------------------------------------- folders of photos
class ImageFolderSource(Source):
    """The image files of a folder (not recursive), ids by :func:`list_image_files`; one unrecorded shard
    (listing a folder is cheap, and every photo has its own record)."""

    kind = "folder"

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        super().__init__()
        self.folder = Path(folder)
        self._files: list[tuple[str, Path]] | None = None

    def open(self) -> None:
        if not self.folder.is_dir():
            raise ConfigError(f"{self.folder}: no such folder")
        self._files = list_image_files(self.folder)
        if not self._files:
            raise ConfigError(f"{self.folder}: no image files (jpg, png, webp, ...)")

    def shards(self) -> list[InputShard]:
        if self._files is None:
            self.open()
        return [InputShard(str(self.folder), str(self.folder), size=len(self._files or []))]

    def read(self, shard: InputShard, ctx: ReadContext) -> Iterator[SourceItem]:
        for image_id, path in self._files or []:
            yield SourceItem(ctx.ids.claim(image_id), str(path), path=path)

    def inputs(self) -> list[Path]:
        return [self.folder]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "folder": str(self.folder)}


# ----------------------------------------------------------------------------- WebDataset
def _local_path(text: str) -> Path | None:
    """The local path a shard spec names (a path or a file:// URL), or None for a remote URL."""
    scheme = _scheme(text)
    if scheme == "file":
        return Path(url2pathname(urlsplit(text).path))
    return Path(text) if not scheme else None


def _is_shard_file(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(SHARD_SUFFIXES)


def expand_shards(spec: str) -> list[str]:
    """The shards a spec names: brace patterns (``shards-{000..003}.tar``) expanded, a local folder replaced by
    its shard files (sorted); a local shard that does not exist is a :class:`ConfigError`."""
    if "{" in spec:
        braceexpand = require("braceexpand", extra="sources", feature="brace patterns of WebDataset shards")
        names = list(braceexpand.braceexpand(spec))
    else:
        names = [spec]
    out: list[str] = []
    for name in names:
        local = _local_path(name)
        if local is None:
            out.append(name)
        elif local.is_dir():
            found = sorted(str(p) for p in local.iterdir() if _is_shard_file(p))
            if not found:
                raise ConfigError(f"{spec}: {local} holds no WebDataset shards ({', '.join(SHARD_SUFFIXES)})")
            out += found
        elif local.is_file():
            out.append(name)
        else:
            raise ConfigError(f"{spec}: no such shard: {local}")
    return out


def _open_shard(ref: str) -> IO[bytes]:
    """A readable stream of one shard: a local file, an http(s) download (streamed), or another URL scheme
    through WebDataset's ``gopen`` (``pipe:``, ``gs://``, ...; needs the ``sources`` extra)."""
    local = _local_path(ref)
    if local is not None:
        return open(local, "rb")
    scheme = _scheme(ref)
    if scheme in ("http", "https"):
        import urllib.request

        return urllib.request.urlopen(ref, timeout=FETCH_TIMEOUT_S)
    gopen = require("webdataset.gopen", extra="sources", feature=f"reading {scheme}: WebDataset shards")
    return gopen.gopen(ref, "rb")


def _split_member(name: str) -> tuple[str, str]:
    """A member's sample key and field, as WebDataset splits them: ``dir/000123.seg.png`` -> (``dir/000123``,
    ``seg.png``); the field is lower-cased."""
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext.lower()


def _member_problem(info: tarfile.TarInfo) -> tuple[str, str] | None:
    """Why a tar member cannot be part of a sample, or None."""
    name = info.name
    shown = name.encode("utf-8", "backslashreplace").decode("utf-8")
    if any(ord(c) < 32 or 0xDC80 <= ord(c) <= 0xDCFF for c in name):
        return "bad_name", f"member {shown!r}: its name holds control characters or bytes that are not UTF-8"
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or "\\" in name:
        return "bad_name", f"member {shown!r}: its name points outside the archive (absolute, '..' or '\\')"
    if not info.isreg():
        what = "symbolic link" if info.issym() else "hard link" if info.islnk() else "special file"
        return "not_a_file", f"member {shown!r} is a {what}: only regular files are read"
    base = parts[-1] if parts else ""
    stem, dot, ext = base.partition(".")
    if not stem or not dot or not ext:
        return "bad_name", (f"member {shown!r}: a WebDataset member is named KEY.FIELD (e.g. 000123.jpg); this one "
                            f"has {'no key' if not stem else 'no field'}")
    return None


class WebDatasetSource(Source):
    """WebDataset tar shards: local files, folders of shards, brace patterns, ``file://`` and http(s) URLs (and
    the other schemes of WebDataset's ``gopen`` with the ``sources`` extra).

    Members are grouped into samples as WebDataset does (consecutive members sharing the key: the
    name up to the first dot of its last part); a sample's photo is its ``image_field`` member, or by
    default the first of the fields ``jpg``, ``jpeg``, ``png``, ``webp``, ``bmp``, ``tif``, ``tiff`` it
    has (decoded by content, whatever the field says). Each shard is an input shard of its own.
    A member with a bad name (absolute, ``..``, control characters, no key or field) or that is not
    a regular file is recorded (reasons ``bad_name``, ``not_a_file``) under the id ``rejected-<hash>``
    and never read; a sample with no photo member gets reason ``no_image``.
    """

    kind = "webdataset"

    def __init__(self, shards: str | Sequence[str], *, image_field: str | None = None) -> None:
        super().__init__()
        self.specs = (shards,) if isinstance(shards, str) else tuple(shards)
        if not self.specs:
            raise ConfigError("WebDataset: no shards given")
        self.image_field = image_field.lower().lstrip(".") if image_field else None
        self._urls: list[str] | None = None

    def open(self) -> None:
        urls: list[str] = []
        for spec in self.specs:
            urls += expand_shards(spec)
        seen: set[str] = set()
        for url in urls:
            if url in seen:
                raise ConfigError(f"{', '.join(self.specs)}: shard {url} is named twice")
            seen.add(url)
        self._urls = urls

    def shards(self) -> list[InputShard]:
        if self._urls is None:
            self.open()
        return [InputShard(url, url, recorded=True) for url in self._urls or []]

    def read(self, shard: InputShard, ctx: ReadContext) -> Iterator[SourceItem]:
        stream = _open_shard(shard.ref)
        try:
            yield from self._samples(stream, shard, ctx)
        finally:
            stream.close()

    def _samples(self, stream: IO[bytes], shard: InputShard, ctx: ReadContext) -> Iterator[SourceItem]:
        key: str | None = None
        fields: dict[str, bytes | tuple[str, str] | None] = {}
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for info in tar:
                tar.members = []  # stream mode: do not keep every member's header
                if info.isdir():
                    continue
                name = info.name[2:] if info.name.startswith("./") else info.name
                base = name.rpartition("/")[2]
                if base.startswith("__") and base.endswith("__") and "." not in base:
                    continue  # WebDataset's metadata members
                problem = _member_problem(info)
                if problem is not None:
                    ref = f"{shard.ref}#{info.name}"
                    digest = hashlib.sha1(ref.encode("utf-8", "surrogatepass")).hexdigest()[:12]
                    shown = ref.encode("utf-8", "backslashreplace").decode("utf-8")
                    yield SourceItem(ctx.ids.claim(f"rejected-{digest}"), shown,
                                     failure=(problem[0], f"{shard.ref}: {problem[1]}"))
                    continue
                k, ext = _split_member(name)
                if key is not None and (k != key or ext in fields):
                    yield self._sample(shard, key, fields, ctx)
                    fields = {}
                key = k
                if ext in IMAGE_FIELDS or ext == self.image_field:
                    if info.size > MAX_FETCH_BYTES:
                        fields[ext] = ("too_large", f"member {name!r} is larger than {MAX_FETCH_BYTES // 2**20} MiB")
                    else:
                        member = tar.extractfile(info)
                        fields[ext] = member.read() if member is not None else b""
                else:
                    fields[ext] = None  # another field (json, txt, cls, ...): not read
        if key is not None:
            yield self._sample(shard, key, fields, ctx)

    def _sample(self, shard: InputShard, key: str, fields: dict[str, Any], ctx: ReadContext) -> SourceItem:
        image_id = ctx.ids.claim(key)
        wanted = (self.image_field,) if self.image_field else IMAGE_FIELDS
        chosen = next((f for f in wanted if f in fields), None)
        if chosen is None:
            source = f"{shard.ref}#{key}"
            what = f"no {self.image_field!r} member" if self.image_field else "no image member (jpg, png, ...)"
            return SourceItem(image_id, source, failure=(
                "no_image", f"{source}: sample {key!r} has {what}; its fields: {', '.join(sorted(fields)) or 'none'}"))
        source = f"{shard.ref}#{key}.{chosen}"
        value = fields[chosen]
        if isinstance(value, tuple):
            return SourceItem(image_id, source, failure=(value[0], f"{source}: {value[1]}"))
        return SourceItem(image_id, source, data=value)

    def inputs(self) -> list[Path]:
        out: list[Path] = []
        for spec in self.specs:
            for name in expand_shards(spec):
                local = _local_path(name)
                if local is not None:
                    out.append(local)
        return out

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "shards": list(self.specs), "image_field": self.image_field}


# ----------------------------------------------------------------------------- Parquet
class ParquetSource(Source):
    """Parquet tables (a file, or every ``*.parquet`` under a folder, sorted) whose ``image_column`` holds image
    bytes, a ``{"bytes", "path"}`` struct (the Hugging Face Image feature), or a path / URL.

    Ids: the ``id_column`` value when named (null or empty: the content hash), else
    ``<table>-<row>`` (the table's path below the folder given, without ``.parquet``; the row within
    the table, zero-padded to at least 5 digits). Paths: relative to the table's folder, and only
    inside ``path_root`` (default: the table's folder) and not inside the output folder. Each row
    group of each table is an input shard. ``optional``: a table without the image column is left
    out with a note instead of refused (a photo folder's own ``metadata.parquet``).
    """

    kind = "parquet"
    batch_rows = 64  # rows decoded from Arrow at a time (bounded memory with large image cells)

    def __init__(self, tables: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                 image_column: str = "image", id_column: str | None = None, focal_column: str | None = None,
                 path_root: str | os.PathLike[str] | None = None, optional: bool = False) -> None:
        super().__init__()
        self.specs = (Path(tables),) if isinstance(tables, (str, os.PathLike)) else tuple(Path(t) for t in tables)
        self.image_column, self.id_column, self.focal_column = image_column, id_column, focal_column
        self.path_root = None if path_root is None else Path(path_root)
        self.optional = optional
        self._tables: list[tuple[Path, str]] | None = None  # (file, id prefix)

    def open(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.path_root is not None and not self.path_root.is_dir():
            raise ConfigError(f"--path-root {self.path_root}: no such folder")
        found: list[tuple[Path, str]] = []
        for spec in self.specs:
            if spec.is_dir():
                files = sorted(p for p in spec.rglob("*.parquet") if p.is_file()
                               and not any(part.startswith(".") for part in p.relative_to(spec).parts))
                if not files:
                    raise ConfigError(f"{spec}: no Parquet tables (*.parquet)")
                found += [(p, p.relative_to(spec).with_suffix("").as_posix()) for p in files]
            elif spec.is_file():
                found.append((spec, spec.stem))
            else:
                raise ConfigError(f"{spec}: no such Parquet table or folder")
        tables = []
        for path, prefix in found:
            try:
                names = pq.read_schema(path).names
            except (pa.ArrowException, OSError) as exc:
                raise ConfigError(f"{path}: not a readable Parquet table ({exc})") from None
            if self.image_column not in names:
                if self.optional:
                    self.notes.append(f"{path}: no column {self.image_column!r}: not read as a table of photos")
                    continue
                raise ConfigError(f"{path}: no column {self.image_column!r} (columns: {', '.join(names)}); "
                                  f"name the image column with --image-column")
            for flag, column in (("--id-column", self.id_column), ("--focal-column", self.focal_column)):
                if column is not None and column not in names:
                    raise ConfigError(f"{flag} {column}: {path} has no such column (columns: {', '.join(names)})")
            tables.append((path, prefix))
        self._tables = tables

    def shards(self) -> list[InputShard]:
        import pyarrow.parquet as pq

        if self._tables is None:
            self.open()
        out = []
        for path, prefix in self._tables or []:
            meta = pq.read_metadata(path)
            width = max(5, len(str(meta.num_rows)))
            offset = 0
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                out.append(InputShard(f"{path}#rowgroup{g}", str(path), size=n, key=(path, prefix, g, offset, width),
                                      recorded=True))
                offset += n
        return out

    def read(self, shard: InputShard, ctx: ReadContext) -> Iterator[SourceItem]:
        import pyarrow.parquet as pq

        path, prefix, group, offset, width = shard.key
        columns = list(dict.fromkeys(c for c in (self.image_column, self.id_column, self.focal_column) if c))
        base = path.parent
        root = self.path_root if self.path_root is not None else base
        row = offset
        with pq.ParquetFile(path) as pf:
            for batch in pf.iter_batches(batch_size=self.batch_rows, row_groups=[group], columns=columns):
                for values in batch.to_pylist():
                    source = f"{path}[{row}]"
                    item = cell_item("", source, values[self.image_column], base=base, root=root,
                                     out_dir=ctx.out_dir, focal=values.get(self.focal_column) if self.focal_column
                                     else None, focal_column=self.focal_column)
                    key = values.get(self.id_column) if self.id_column else f"{prefix}-{row:0{width}d}"
                    item.image_id = ctx.ids.claim(str(key)) if key is not None and str(key).strip() \
                        else content_id(item, ctx.ids)
                    yield item
                    row += 1

    def inputs(self) -> list[Path]:
        return list(self.specs)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "tables": [str(s) for s in self.specs], "image_column": self.image_column,
                "id_column": self.id_column, "focal_column": self.focal_column,
                "path_root": None if self.path_root is None else str(self.path_root)}


# ----------------------------------------------------------------------------- Hugging Face datasets
class HFDatasetSource(Source):
    """A Hugging Face dataset: a local ``save_to_disk`` folder, a local data folder, or a hub name; with
    ``streaming`` a hub or data-folder dataset is read row by row without being downloaded or
    converted first (a ``save_to_disk`` folder is always read lazily from its Arrow files).

    The image column is read undecoded (``Image(decode=False)``): bytes and paths, decoded only for
    photos without a final record. Ids: the ``id_column`` value when named (null or empty: the
    content hash), else ``<split>-<index>`` zero-padded to the dataset's size (at least 5 digits;
    a streamed dataset of unknown size: 5), the same streamed or not. A streamed dataset's data
    files are its input shards (recorded; a rerun skips the complete ones unread); one that cannot
    be read stops the run (its rows' indexes are the ids of what follows), and a rerun resumes.
    String cells are paths or URLs (:func:`path_item`; a local dataset's folder is their base and
    default root; a hub dataset reads local paths only under ``path_root``).
    """

    kind = "hf"

    def __init__(self, spec: str, *, split: str = "train", image_column: str = "image", id_column: str | None = None,
                 focal_column: str | None = None, streaming: bool = False,
                 path_root: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.spec, self.split, self.image_column = spec, split, image_column
        self.id_column, self.focal_column, self.streaming = id_column, focal_column, streaming
        self.path_root = None if path_root is None else Path(path_root)
        self._ds: Any = None
        self._iterable = False
        self._width = 5
        self._trusted = False

    def open(self) -> None:
        if self._ds is not None:
            return
        datasets = require("datasets", extra="hf", feature="reading Hugging Face datasets")
        path = Path(self.spec)
        saved = ("dataset_info.json", "state.json", "dataset_dict.json")
        if path.is_dir() and any((path / name).exists() for name in saved):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if self.split not in ds:
                    raise SpatialForgeError(f"{self.spec}: no split {self.split!r} (has {', '.join(ds)})")
                ds = ds[self.split]
        else:
            try:
                ds = datasets.load_dataset(self.spec, split=self.split, streaming=self.streaming)
            except (FileNotFoundError, ValueError, ConnectionError) as exc:
                raise SpatialForgeError(f"{self.spec}: cannot load dataset ({exc})") from exc
        columns = ds.column_names
        if columns is not None:
            if self.image_column not in columns:
                raise SpatialForgeError(f"{self.spec}: no column {self.image_column!r} (columns: {', '.join(columns)})")
            for flag, column in (("--id-column", self.id_column), ("--focal-column", self.focal_column)):
                if column is not None and column not in columns:
                    raise SpatialForgeError(f"{flag} {column}: {self.spec} has no such column "
                                            f"(columns: {', '.join(columns)})")
        features = ds.features or {}
        if isinstance(features.get(self.image_column), datasets.Image):
            ds = ds.cast_column(self.image_column, datasets.Image(decode=False))  # bytes and paths, not decoded
            self._trusted = True
        self._iterable = isinstance(ds, datasets.IterableDataset)
        size = None
        if not self._iterable:
            size = len(ds)
        elif ds.info.splits and self.split in ds.info.splits:
            size = ds.info.splits[self.split].num_examples or None
        self._width = max(5, len(str(size))) if size else 5  # from the dataset's size: ids do not depend on --limit
        self._ds = ds

    def _root(self) -> tuple[Path | None, Path | None]:
        local = Path(self.spec)
        base = local if local.is_dir() else None
        return base, self.path_root if self.path_root is not None else base

    def shards(self) -> list[InputShard]:
        self.open()
        if not self._iterable:
            return [InputShard(f"{self.spec}[{self.split}]", self.spec, size=len(self._ds))]
        n = max(1, int(getattr(self._ds, "n_shards", 1) or 1))
        return [InputShard(f"{self.spec}[{self.split}]#shard{i}of{n}",
                           f"{self.spec}[{self.split}] data file {i + 1}/{n}", key=(i, n), recorded=True, fatal=True)
                for i in range(n)]

    def _item(self, index: int, row: dict[str, Any], ctx: ReadContext) -> SourceItem:
        base, root = self._root()
        source = f"{self.spec}[{self.split}][{index}]"
        if self.image_column not in row:
            return SourceItem("", source, failure=("not_an_image", f"{source}: no column {self.image_column!r}"))
        return cell_item("", source, row[self.image_column], base=base, root=root, out_dir=ctx.out_dir,
                         focal=row.get(self.focal_column) if self.focal_column else None,
                         focal_column=self.focal_column, trusted_paths=self._trusted)

    def _claim(self, item: SourceItem, index: int, key: Any, ctx: ReadContext) -> SourceItem:
        if self.id_column is None:
            item.image_id = ctx.ids.claim(f"{safe_id(self.split)}-{index:0{self._width}d}")
        elif key is not None and str(key).strip():
            item.image_id = ctx.ids.claim(str(key))
        else:
            item.image_id = content_id(item, ctx.ids)
        return item

    def read(self, shard: InputShard, ctx: ReadContext) -> Iterator[SourceItem]:
        ds = self._ds
        if not self._iterable:
            keys = ds[self.id_column] if self.id_column else None
            for i in range(len(ds)):
                source = f"{self.spec}[{self.split}][{i}]"
                key = keys[i] if keys is not None else None
                if self.id_column is not None and (key is None or not str(key).strip()):
                    yield self._claim(self._row(i, ctx), i, key, ctx)  # the content hash: read now
                    continue
                item = SourceItem("", source, resolve=lambda i=i: self._row(i, ctx))  # read only when needed
                yield self._claim(item, i, key, ctx)
            return
        i, n = shard.key
        part = ds.shard(num_shards=n, index=i) if n > 1 else ds
        for k, row in enumerate(part):
            index = ctx.start + k
            key = row.get(self.id_column) if self.id_column else None
            yield self._claim(self._item(index, row, ctx), index, key, ctx)

    def _row(self, i: int, ctx: ReadContext) -> SourceItem:
        source = f"{self.spec}[{self.split}][{i}]"
        try:
            row = self._ds[i]
        except (OSError, ValueError, SyntaxError) as exc:
            return SourceItem("", source, failure=("unreadable", f"{source}: cannot read the row ({exc})"))
        return self._item(i, row, ctx)

    def inputs(self) -> list[Path]:
        local = Path(self.spec)
        return [local] if local.exists() else []

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "dataset": self.spec, "split": self.split, "image_column": self.image_column,
                "id_column": self.id_column, "focal_column": self.focal_column, "streaming": self.streaming}


# ----------------------------------------------------------------------------- a folder of inputs
class FolderSource(Source):
    """A folder as the command line's positional argument: its image files, then its WebDataset shards
    (``*.tar``, ``*.tar.gz``, ``*.tgz``), then its Parquet tables (``*.parquet``; one without the image
    column is left out with a note), not recursive, each kind in sorted order. The photos' ids are
    those of a folder of photos alone; a shard key or table row whose id is taken gets a suffix."""

    kind = "folder"

    def __init__(self, folder: str | os.PathLike[str], *, image_column: str = "image", id_column: str | None = None,
                 focal_column: str | None = None, path_root: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.options = {"image_column": image_column, "id_column": id_column, "focal_column": focal_column,
                        "path_root": path_root}
        self.parts: list[Source] | None = None
        self._shards: list[InputShard] | None = None

    @staticmethod
    def kinds(folder: Path) -> dict[str, list[Path]]:
        """The inputs in ``folder``: ``images``, ``shards``, ``tables`` (each sorted)."""
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        return {"images": [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES],
                "shards": [p for p in files if p.name.lower().endswith(SHARD_SUFFIXES)],
                "tables": [p for p in files if p.suffix.lower() == ".parquet"]}

    def open(self) -> None:
        if self.parts is not None:
            return
        if not self.folder.is_dir():
            raise ConfigError(f"{self.folder}: no such folder")
        found = self.kinds(self.folder)
        parts: list[Source] = []
        if found["images"]:
            parts.append(ImageFolderSource(self.folder))
        if found["shards"]:
            field_ = self.options["image_column"]
            parts.append(WebDatasetSource([str(p) for p in found["shards"]],
                                          image_field=None if field_ == "image" else field_))
        if found["tables"]:
            parts.append(ParquetSource(found["tables"], optional=True, **self.options))
        for part in parts:
            part.open()
            self.notes += part.notes
        parts = [p for p in parts if not isinstance(p, ParquetSource) or p._tables]
        if not parts:
            raise ConfigError(f"{self.folder}: no image files (jpg, png, webp, ...), WebDataset shards (*.tar) or "
                              f"Parquet tables of photos (*.parquet)")
        self.parts = parts

    def shards(self) -> list[InputShard]:
        self.open()
        if self._shards is None:
            self._shards = [InputShard(s.name, s.ref, s.size, (k, s), s.recorded, s.fatal)
                            for k, part in enumerate(self.parts or []) for s in part.shards()]
        return self._shards

    def read(self, shard: InputShard, ctx: ReadContext) -> Iterator[SourceItem]:
        k, inner = shard.key
        yield from (self.parts or [])[k].read(inner, ctx)

    def inputs(self) -> list[Path]:
        return [self.folder]

    def describe(self) -> dict[str, Any]:
        self.open()
        return {"kind": self.kind, "folder": str(self.folder), "parts": [p.describe() for p in self.parts or []]}


# ----------------------------------------------------------------------------- what the user names
@dataclass(frozen=True)
class PhotoSource:
    """Where photos come from, as the user names it: exactly one of a ``folder`` (photos, WebDataset shards and
    Parquet tables in it: :class:`FolderSource`), a Hugging Face dataset (``hf_dataset``, name or local
    path; ``streaming``), WebDataset shards (``webdataset``: paths, brace patterns, URLs) or Parquet
    tables (``parquet``: a file or a folder). ``image_column`` names the image column (for WebDataset:
    the member field; the default ``image`` takes the first image field), ``id_column`` the id column,
    ``focal_column`` a per-photo focal length in pixels, ``path_root`` the folder a table's paths may
    point into (default: the table's folder). ``limit``: the first N items only."""

    folder: Path | None = None
    hf_dataset: str | None = None
    split: str = "train"
    image_column: str = "image"
    limit: int | None = None
    webdataset: str | tuple[str, ...] | None = None
    parquet: str | os.PathLike[str] | None = None
    streaming: bool = False
    id_column: str | None = None
    focal_column: str | None = None
    path_root: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        given = [n for n in ("folder", "hf_dataset", "webdataset", "parquet") if getattr(self, n) is not None]
        if len(given) != 1:
            raise SpatialForgeError("give exactly one source of photos: a folder, a Hugging Face dataset, WebDataset "
                                    "shards or Parquet tables" + (f" (got {', '.join(given)})" if given else ""))
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1, got {self.limit}")
        if self.streaming and self.hf_dataset is None:
            raise ConfigError("--streaming reads a Hugging Face dataset (--hf-dataset) row by row; the other sources "
                              "are always read as streams")
        if self.hf_dataset is None and self.folder is None and self.webdataset is not None and (
                self.id_column is not None or self.focal_column is not None or self.path_root is not None):
            raise ConfigError("--id-column, --focal-column and --path-root are for tables (Parquet, Hugging Face "
                              "datasets): a WebDataset sample's id is its key")

    def build(self) -> Source:
        if self.folder is not None:
            return FolderSource(self.folder, image_column=self.image_column, id_column=self.id_column,
                                focal_column=self.focal_column, path_root=self.path_root)
        if self.hf_dataset is not None:
            return HFDatasetSource(self.hf_dataset, split=self.split, image_column=self.image_column,
                                   id_column=self.id_column, focal_column=self.focal_column, streaming=self.streaming,
                                   path_root=self.path_root)
        if self.webdataset is not None:
            return WebDatasetSource(self.webdataset, image_field=None if self.image_column == "image"
                                    else self.image_column)
        return ParquetSource(self.parquet, image_column=self.image_column, id_column=self.id_column,  # type: ignore
                             focal_column=self.focal_column, path_root=self.path_root)

    def inputs(self) -> list[Path]:
        """The local paths the source reads (pass them to ``prepare_output_dir``)."""
        return self.build().inputs()


# ----------------------------------------------------------------------------- reading with resume
def _record_name(shard: InputShard) -> str:
    digest = hashlib.sha1(shard.name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{safe_id(shard.name.rpartition('/')[2])[:60]}-{digest}.json"


class SourceReader:
    """Reads a source shard by shard for the photo runner, with the shard records of ``OUT/perception/shards/``.

    :meth:`items` yields every item in order. A recorded shard read completely is recorded with its
    ids; on a rerun, a recorded shard whose every id has a final record is not opened: its ids are
    yielded as items that are never read (the runner finds their records). A shard that cannot be
    read is recorded as failed and skipped (or stops the run when ``fatal``). :meth:`summary` says
    what happened; :meth:`finish` also writes it to ``OUT/perception/source.json``.
    """

    def __init__(self, source: Source, out_dir: str | os.PathLike[str] | None = None, *, limit: int | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.source = source
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.limit = limit
        self.log = log or (lambda msg: None)
        self.counts = {"shards": 0, "shards_read": 0, "shards_resumed": 0, "shards_failed": 0, "items": 0}
        self.shard_failures: list[dict[str, Any]] = []

    @property
    def total(self) -> int | None:
        n = self.source.total
        return n if self.limit is None or n is None else min(n, self.limit)

    def _complete_ids(self, path: Path | None, shard: InputShard) -> list[str] | None:
        """The ids of a shard recorded complete whose every item has a final record, else None."""
        from spatialforge.perception.pipeline import done_record

        if path is None or self.out_dir is None:
            return None
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if not isinstance(rec, dict) or rec.get("status") != "complete" or rec.get("shard") != shard.name:
            return None
        ids = rec.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return None
        items = self.out_dir / "perception" / "items"
        return ids if all(done_record(items / f"{i}.json") is not None for i in ids) else None

    def items(self) -> Iterator[SourceItem]:
        ctx = ReadContext(out_dir=self.out_dir)
        shard_dir = None if self.out_dir is None else self.out_dir / "perception" / "shards"
        shards = self.source.shards()
        self.counts["shards"] = len(shards)
        for shard in shards:
            if self.limit is not None and self.counts["items"] >= self.limit:
                return
            record = shard_dir / _record_name(shard) if shard_dir is not None and shard.recorded else None
            done = self._complete_ids(record, shard)
            if done is not None:  # every photo of it is recorded: not opened again
                ctx.ids.reserve(done)
                self.counts["shards_resumed"] += 1
                for image_id in done:
                    if self.limit is not None and self.counts["items"] >= self.limit:
                        return
                    self.counts["items"] += 1
                    yield SourceItem(image_id, f"{shard.ref} (complete in an earlier run)", failure=(
                        "not_read", f"{shard.ref}: recorded as complete, but the record of {image_id} vanished; rerun"))
                ctx.start += len(done)
                continue
            ids: list[str] = []
            complete = False
            ctx_start = ctx.start
            try:
                for item in self.source.read(shard, ReadContext(ctx.ids, ctx_start, ctx.out_dir)):
                    if self.limit is not None and self.counts["items"] >= self.limit:
                        break
                    ids.append(item.image_id)
                    self.counts["items"] += 1
                    yield item
                else:
                    complete = True
            except SpatialForgeError:
                raise
            except _SHARD_ERRORS as exc:
                message = (f"{shard.ref}: cannot read this input shard after {len(ids)} items "
                           f"({type(exc).__name__}: {exc})")
                if shard.fatal:
                    raise SpatialForgeError(f"{message}; rerun the same command to resume") from exc
                self.log(f"failed: {message}")
                self.counts["shards_failed"] += 1
                failure = {"shard": shard.name, "reason": "shard_unreadable", "message": message,
                           "items_read": len(ids)}
                self.shard_failures.append(failure)
                if record is not None:
                    record.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_json(record, {"format": "spatialforge-input-shard/1", "status": "failed", **failure})
            ctx.start = ctx_start + len(ids)
            if complete:
                self.counts["shards_read"] += 1
                if record is not None:
                    record.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_json(record, {"format": "spatialforge-input-shard/1", "status": "complete",
                                               "shard": shard.name, "ref": shard.ref, "items": len(ids), "ids": ids})

    def summary(self) -> dict[str, Any]:
        return {**self.source.describe(), **self.counts, "shard_failures": list(self.shard_failures),
                "notes": list(self.source.notes)}

    def finish(self) -> dict[str, Any]:
        """The summary, also written to ``OUT/perception/source.json``."""
        summary = self.summary()
        if self.out_dir is not None:
            (self.out_dir / "perception").mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.out_dir / "perception" / "source.json", summary)
        return summary
