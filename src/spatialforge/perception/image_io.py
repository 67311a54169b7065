"""Reading photos for the perception path: folders of images and Hugging Face datasets.

Every problem with one image becomes an :class:`ItemFailure` with a reason key (counted in the
manifest); the run goes on. Odd but valid images are converted: grayscale, palette, CMYK, alpha
(composited on white) and 16-bit images become 8-bit RGB; EXIF orientation is applied; images
larger than ``max_side`` are downscaled (recorded in ``ImageItem.meta``).
"""

from __future__ import annotations

import os
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from spatialforge._optional import require
from spatialforge.errors import SpatialForgeError
from spatialforge.perception.types import ImageItem

__all__ = ["IMAGE_SUFFIXES", "ImageLimits", "ItemFailure", "decode_image", "iter_hf_images", "list_image_files",
           "load_image_file"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


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


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "image"


def list_image_files(folder: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """(image_id, path) for every image file in ``folder`` (sorted, not recursive); ids are unique.

    The id is the file stem made filesystem-safe; when two files would share an id (``a b.jpg`` /
    ``a_b.jpg``, ``x.jpg`` / ``x.png`` / ``x.JPG``), each of them gets its suffix and, if still
    needed, a counter.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith("."))
    stems = Counter(_safe_id(p.stem) for p in files)
    out: list[tuple[str, Path]] = []
    used: set[str] = set()
    for p in files:
        sid = _safe_id(p.stem)
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
        img = _to_rgb(oriented)
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return ItemFailure(image_id, source, "load", "unreadable", f"{source}: cannot decode image ({exc})")
    w, h = img.size
    if min(w, h) < limits.min_side:
        return ItemFailure(image_id, source, "load", "too_small",
                           f"{source}: {w}x{h} is smaller than {limits.min_side} px on a side")
    meta: dict[str, Any] = {"original_size": [w, h], "mode": img.mode}
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


def load_image_file(path: Path, image_id: str, limits: ImageLimits = ImageLimits(),
                    focal_length_px: float | None = None) -> ImageItem | ItemFailure:
    """Open, verify and decode one image file."""
    source = str(path)
    # No PIL globals are touched: our own pixel limit is checked before decoding; PIL's bomb guard
    # (twice Image.MAX_IMAGE_PIXELS) still fires first for giant files and is reported the same way.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as probe:
                probe.verify()  # catches truncated and corrupt files without decoding twice
            img = Image.open(path)
            if img.size[0] * img.size[1] > limits.max_pixels:
                return ItemFailure(image_id, source, "load", "too_large",
                                   f"{source}: {img.size[0]}x{img.size[1]} exceeds the {limits.max_pixels} pixel limit")
            img.load()
    except Image.DecompressionBombError as exc:
        return ItemFailure(image_id, source, "load", "too_large", f"{source}: {exc}")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return ItemFailure(image_id, source, "load", "unreadable", f"{source}: cannot decode image ({exc})")
    return decode_image(img, image_id, source, limits, focal_length_px)


def iter_hf_images(spec: str, *, split: str = "train", image_column: str = "image", limit: int | None = None,
                   limits: ImageLimits = ImageLimits(), focal_length_px: float | None = None
                   ) -> Iterator[ImageItem | ItemFailure]:
    """Images of a Hugging Face dataset: a local ``save_to_disk`` folder, a local data folder, or a hub name."""
    datasets = require("datasets", extra="hf", feature="reading Hugging Face datasets")
    path = Path(spec)
    saved = ("dataset_info.json", "state.json", "dataset_dict.json")
    if path.is_dir() and any((path / name).exists() for name in saved):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise SpatialForgeError(f"{spec}: no split {split!r} (has {', '.join(ds)})")
            ds = ds[split]
    else:
        try:
            ds = datasets.load_dataset(spec, split=split)
        except (FileNotFoundError, ValueError, ConnectionError) as exc:
            raise SpatialForgeError(f"{spec}: cannot load dataset ({exc})") from exc
    if image_column not in ds.column_names:
        raise SpatialForgeError(f"{spec}: no column {image_column!r} (columns: {', '.join(ds.column_names)})")
    n = len(ds) if limit is None else min(limit, len(ds))
    width = max(5, len(str(len(ds))))  # from the dataset's size, so ids do not depend on --limit
    for i in range(n):
        image_id = f"{_safe_id(split)}-{i:0{width}d}"
        source = f"{spec}[{split}][{i}]"
        try:
            value = ds[i][image_column]
        except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as exc:
            yield ItemFailure(image_id, source, "load", "unreadable", f"{source}: cannot decode image ({exc})")
            continue
        if isinstance(value, dict) and value.get("bytes") is not None:
            import io

            try:
                value = Image.open(io.BytesIO(value["bytes"]))
            except (UnidentifiedImageError, OSError) as exc:
                yield ItemFailure(image_id, source, "load", "unreadable", f"{source}: cannot decode image ({exc})")
                continue
        if not isinstance(value, Image.Image):
            yield ItemFailure(image_id, source, "load", "not_an_image",
                              f"{source}: column {image_column!r} holds {type(value).__name__}, not an image")
            continue
        yield decode_image(value, image_id, source, limits, focal_length_px)
