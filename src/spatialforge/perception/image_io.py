"""Reading photos for the perception path: image files, encoded bytes, and photos not read yet.

Every problem with one image becomes an :class:`ItemFailure` with a reason key (counted in the
manifest); the run goes on. The content decides how a photo is decoded, never its file name (a PNG
named ``.jpg`` loads as a PNG). Odd but valid images are converted: grayscale, palette, CMYK, alpha
(composited on white) and 16-bit images become 8-bit RGB (the original mode is recorded in
``ImageItem.meta["converted_from"]``); EXIF orientation is applied; images larger than
``max_side`` are downscaled (recorded in ``ImageItem.meta``). An image over ``max_pixels`` is
refused from its header, before any pixel is decoded.

A :class:`SourceItem` is one photo of a source (:mod:`spatialforge.pipeline.sources`) that has
not been read: its id, a reference for the records, and where its bytes are. The perception
runner reads it (:meth:`SourceItem.read`: the bytes and their SHA-256, no decoding) only when the
photo has no final record, skips it when its hash was seen before (a duplicate), and only then
decodes it (:meth:`SourceItem.decode`).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from spatialforge.perception.types import ImageItem

__all__ = ["IMAGE_SUFFIXES", "MAX_FETCH_BYTES", "MAX_ID_LENGTH", "ImageLimits", "ItemFailure", "SourceItem",
           "decode_image", "iter_hf_images", "list_image_files", "load_image_bytes", "load_image_file", "safe_id"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
MAX_ID_LENGTH = 100  # longer ids are cut and get a hash of the whole name (a file name holds at most 255 bytes)
MAX_FETCH_BYTES = 512 * 2**20  # a photo fetched from a URL may be at most this large
FETCH_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ImageLimits:
    min_side: int = 32
    max_side: int = 2048
    max_pixels: int = 100_000_000  # refuse to decode larger images (decompression bombs)


@dataclass(frozen=True)
class ItemFailure:
    """One image that could not be processed, and why (a short key plus a one-line message)."""

    image_id: str
    source: str
    stage: str
    reason: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"image_id": self.image_id, "source": self.source, "stage": self.stage, "reason": self.reason,
                "message": self.message}


def safe_id(text: str) -> str:
    """``text`` as a safe folder name: runs of characters other than ``A-Z a-z 0-9 . _ -`` become ``_``
    (so no ``/``, ``\\`` or ``..`` path can come out), leading and trailing dots and underscores go,
    and a name longer than :data:`MAX_ID_LENGTH` is cut and ends with a hash of the whole text (two
    long names that share a beginning stay apart). Empty results are ``image``.
    """
    sid = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "image"
    if len(sid) > MAX_ID_LENGTH:
        digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        sid = f"{sid[:MAX_ID_LENGTH - 13].rstrip('._')}-{digest}"
    return sid



def list_image_files(folder: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """(image_id, path) for every image file in ``folder`` (sorted, not recursive); ids are unique.

    The id is the file stem made filesystem-safe; when two files would share an id (``a b.jpg`` /
    ``a_b.jpg``, ``x.jpg`` / ``x.png`` / ``x.JPG``), each of them gets its suffix and, if still
    needed, a counter.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith("."))
    stems = Counter(safe_id(p.stem) for p in files)
    out: list[tuple[str, Path]] = []
    used: set[str] = set()
    for p in files:
        sid = safe_id(p.stem)
        if stems[sid] > 1:
            sid = f"{sid}_{p.suffix.lower().lstrip('.')}"
        candidate, k = sid, 2
        while candidate in used:
            candidate, k = f"{sid}_{k}", k + 1
        used.add(candidate)
        out.append((candidate, p))
    return out


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.float64)
        hi = arr.max() if arr.size else 1.0
        arr8 = np.clip(arr / (hi if hi > 255 else 255.0) * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        span = float(arr.max() - arr.min()) or 1.0
        return Image.fromarray(((arr - arr.min()) / span * 255).astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


def decode_image(img: Image.Image, image_id: str, source: str, limits: ImageLimits = ImageLimits(),
                 focal_length_px: float | None = None) -> ImageItem | ItemFailure:
    """Convert an opened PIL image into an :class:`ImageItem` (or a failure with its reason)."""
    try:
        w0, h0 = img.size
        if w0 * h0 > limits.max_pixels:
            return ItemFailure(image_id, source, "load", "too_large",
                               f"{source}: {w0}x{h0} exceeds the {limits.max_pixels} pixel limit")
        from spatialforge.perception.intrinsics import exif_focal_length_px

        oriented = ImageOps.exif_transpose(img)
        exif_focal = exif_focal_length_px(img, oriented_size=oriented.size)
        source_format, source_mode = img.format, oriented.mode
        img = _to_rgb(oriented)
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return ItemFailure(image_id, source, "load", "unreadable", f"{source}: cannot decode image ({exc})")
    w, h = img.size
    if min(w, h) < limits.min_side:
        return ItemFailure(image_id, source, "load", "too_small",
                           f"{source}: {w}x{h} is smaller than {limits.min_side} px on a side")
    meta: dict[str, Any] = {"original_size": [w, h], "mode": img.mode}
    if source_format:
        meta["format"] = source_format  # what the content is, whatever the file name says
    if source_mode != "RGB":
        meta["converted_from"] = source_mode  # e.g. CMYK, I;16 (16-bit), L, P, RGBA
    scale = 1.0
    if max(w, h) > limits.max_side:
        scale = limits.max_side / max(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
        meta["resized_to"] = list(img.size)
    focal, focal_source = None, None
    if focal_length_px is not None:
        focal, focal_source = focal_length_px * scale, "user"
    elif exif_focal is not None:
        focal, focal_source = exif_focal * scale, "exif"
    return ImageItem(image_id=image_id, image=np.asarray(img, dtype=np.uint8).copy(), source=source,
                     focal_length_px=focal, focal_source=focal_source, meta=meta)


def _open_checked(open_fp: Callable[[], IO[bytes]], image_id: str, source: str,
                  limits: ImageLimits) -> Image.Image | ItemFailure:
    """Open an image, check its size from the header (nothing decoded yet), verify it, then decode it."""
    # No PIL globals are touched: our own pixel limit is checked before decoding; PIL's bomb guard
    # (twice Image.MAX_IMAGE_PIXELS) still fires first for giant images and is reported the same way.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(open_fp()) as probe:
                w, h = probe.size
                if w * h > limits.max_pixels:
                    return ItemFailure(image_id, source, "load", "too_large",
                                       f"{source}: {w}x{h} exceeds the {limits.max_pixels} pixel limit")
                probe.verify()  # catches corrupt PNGs without decoding twice
            img = Image.open(open_fp())
            img.load()  # a truncated JPEG fails here
    except Image.DecompressionBombError as exc:
        return ItemFailure(image_id, source, "load", "too_large", f"{source}: {exc}")
    except UnidentifiedImageError:  # PIL's message names a memory address for bytes: not deterministic
        return ItemFailure(image_id, source, "load", "unreadable",
                           f"{source}: cannot decode image (not a known image format)")
    except (OSError, SyntaxError, ValueError) as exc:
        return ItemFailure(image_id, source, "load", "unreadable", f"{source}: cannot decode image ({exc})")
    return img


def load_image_file(path: Path, image_id: str, limits: ImageLimits = ImageLimits(),
                    focal_length_px: float | None = None, *, source: str | None = None) -> ImageItem | ItemFailure:
    """Open, verify and decode one image file (``source``: its reference in records, default the path)."""
    source = str(path) if source is None else source
    try:
        empty = os.path.getsize(path) == 0
    except OSError as exc:
        return ItemFailure(image_id, source, "load", "unreadable", f"{source}: cannot read ({exc.strerror or exc})")
    if empty:
        return ItemFailure(image_id, source, "load", "empty", f"{source}: the file is empty (0 bytes)")
    img = _open_checked(lambda: open(path, "rb"), image_id, source, limits)  # noqa: SIM115 - PIL closes it
    return img if isinstance(img, ItemFailure) else decode_image(img, image_id, source, limits, focal_length_px)


def load_image_bytes(data: bytes, image_id: str, source: str, limits: ImageLimits = ImageLimits(),
                     focal_length_px: float | None = None) -> ImageItem | ItemFailure:
    """Open, verify and decode one encoded image held in memory (a tar member, a table cell, a download)."""
    if not data:
        return ItemFailure(image_id, source, "load", "empty", f"{source}: the image is empty (0 bytes)")
    img = _open_checked(lambda: io.BytesIO(data), image_id, source, limits)
    return img if isinstance(img, ItemFailure) else decode_image(img, image_id, source, limits, focal_length_px)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, source: str) -> bytes | tuple[str, str]:
    """The bytes at an http(s) URL, or (reason, message)."""
    import http.client
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:
            data = response.read(MAX_FETCH_BYTES + 1)
    except urllib.error.HTTPError as exc:
        return "fetch_failed", f"{source}: cannot fetch {url} (HTTP {exc.code} {exc.reason})"
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        return "fetch_failed", f"{source}: cannot fetch {url} ({getattr(exc, 'reason', None) or exc})"
    if len(data) > MAX_FETCH_BYTES:
        return "too_large", f"{source}: {url} is larger than {MAX_FETCH_BYTES // 2**20} MiB"
    return data


class SourceItem:
    """One photo of a source, not read yet: a stable id, a reference for the records, and its bytes' place.

    At most one of ``path`` (a local file), ``data`` (the encoded bytes), ``url`` (an http(s) URL,
    fetched when read), ``failure`` (``(reason, message)``: known to be bad without reading it) or
    ``resolve`` (a callable returning a :class:`SourceItem` with one of those, e.g. a dataset row
    that is read only when needed). ``focal_length_px`` is the photo's own focal length in pixels
    when the source gives one (a table column), used unless the run sets one for every photo.

    :meth:`read` gets the bytes (fetching a URL, resolving a row) and their SHA-256 in
    :attr:`digest`, and returns the problem, if any, as an :class:`ItemFailure`; it never decodes.
    :meth:`decode` decodes (reading first if needed).
    """

    def __init__(self, image_id: str, source: str, *, path: str | os.PathLike[str] | None = None,
                 data: bytes | None = None, url: str | None = None, failure: tuple[str, str] | None = None,
                 resolve: Callable[[], SourceItem] | None = None, focal_length_px: float | None = None) -> None:
        given = [k for k, v in (("path", path), ("data", data), ("url", url), ("failure", failure),
                                ("resolve", resolve)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"{source}: a SourceItem takes one of path, data, url, failure, resolve; got "
                             f"{', '.join(given)}")
        self.image_id = image_id
        self.source = source
        self.path = None if path is None else Path(path)
        self.data = data
        self.url = url
        self.failure = failure
        self.resolve = resolve
        self.focal_length_px = focal_length_px
        self.digest: str | None = None
        self._read = False

    def __repr__(self) -> str:
        return f"SourceItem({self.image_id!r}, {self.source!r})"

    def _resolved(self) -> None:
        if self.resolve is None:
            return
        other, self.resolve = self.resolve(), None
        self.path, self.data, self.url, self.failure = other.path, other.data, other.url, other.failure
        self.source = other.source
        if other.focal_length_px is not None:
            self.focal_length_px = other.focal_length_px

    def _failure(self, reason: str, message: str) -> ItemFailure:
        self.failure = (reason, message)
        return ItemFailure(self.image_id, self.source, "load", reason, message)

    def read(self) -> ItemFailure | None:
        """Get the bytes' SHA-256 (:attr:`digest`; fetching a URL once); the problem if any. Never decodes."""
        if self._read:
            return None if self.failure is None else ItemFailure(self.image_id, self.source, "load", *self.failure)
        self._read = True
        self._resolved()
        if self.failure is not None:
            return ItemFailure(self.image_id, self.source, "load", *self.failure)
        if self.url is not None:
            fetched = _fetch(self.url, self.source)
            if isinstance(fetched, tuple):
                return self._failure(*fetched)
            self.data, self.url = fetched, None
        if self.path is not None:
            try:
                if not self.path.is_file():
                    return self._failure("missing_file", f"{self.source}: no such file {self.path}")
                if self.path.stat().st_size == 0:
                    return self._failure("empty", f"{self.source}: the file is empty (0 bytes)")
                self.digest = _file_digest(self.path)
            except OSError as exc:
                return self._failure("unreadable", f"{self.source}: cannot read {self.path} ({exc.strerror or exc})")
            return None
        if not self.data:
            return self._failure("empty", f"{self.source}: the image is empty (0 bytes)")
        self.digest = hashlib.sha256(self.data).hexdigest()
        return None

    def decode(self, limits: ImageLimits = ImageLimits(), focal_length_px: float | None = None
               ) -> ImageItem | ItemFailure:
        """The decoded photo (or why not); ``focal_length_px`` (the run's, for every photo) wins over the item's."""
        problem = self.read()
        if problem is not None:
            return problem
        focal = focal_length_px if focal_length_px is not None else self.focal_length_px
        if self.path is not None:
            return load_image_file(self.path, self.image_id, limits, focal, source=self.source)
        return load_image_bytes(self.data or b"", self.image_id, self.source, limits, focal)


def iter_hf_images(spec: str, *, split: str = "train", image_column: str = "image", limit: int | None = None,
                   limits: ImageLimits = ImageLimits(), focal_length_px: float | None = None
                   ) -> Iterator[ImageItem | ItemFailure]:
    """Decoded images of a Hugging Face dataset: a local ``save_to_disk`` folder, a local data folder, or a hub name.

    Ids and references are those of :class:`spatialforge.pipeline.sources.HFDatasetSource` (which
    the photo runner reads lazily); this eager form decodes every photo.
    """
    from spatialforge.pipeline.sources import HFDatasetSource, SourceReader

    src = HFDatasetSource(spec, split=split, image_column=image_column)
    src.open()
    for item in SourceReader(src, limit=limit).items():
        yield item.decode(limits, focal_length_px)
