"""Region marks: the regions a question names, drawn on the image for models without region input.

SpatialRGPT-Bench asks about ``Region [k]``: ``k`` indexes the record's ``bbox`` (``[x1, y1, x2, y2]``
in pixels of the original image) and ``rle`` (COCO run-length masks) lists. A model that takes
region prompts (SpatialRGPT itself) gets the masks as an input; every other model sees only the
image, so the regions have to be shown on it, as the benchmark's authors do for such models
(labelled masks, Set-of-Marks style: ``dataset_pipeline/osdsynth/visualizer/som.py`` of
github.com/AnjieCheng/SpatialRGPT draws each mask with its number). Here:

* a region with a mask is tinted lightly and outlined (solid, in its colour); a region with only a
  box (or whose mask cannot be decoded) gets its box outlined;
* each region gets a tag in its colour, ``"Region [k]"`` (or ``"[k]"`` when the long tags would
  cover too much of a small image), at the top-left corner of its box or mask, just above it when
  there is room; tags never overlap one another;
* colours are fixed per index (:data:`REGION_COLOURS`: region 0 red, 1 blue, 2 green ...), line
  width and text size scale with the image (:func:`mark_sizes`), so the marks stay readable after
  a model's processor shrinks the picture.

RLE masks are decoded with ``pycocotools`` when it is installed (the ``afford`` extra declares it);
without it, with the built-in decoder of the same format (:func:`decode_rle`), which gives the same
masks. The drawing depends only on the image, the regions and :data:`MARKS_VERSION`.

:class:`RegionMarkedItem` is a :class:`~spatialforge.eval.types.BenchmarkItem` whose
``load_image()`` returns the image with its regions drawn, so every model backend sends the marked
image without knowing about regions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spatialforge.eval.types import BenchmarkItem

__all__ = ["MARKS_VERSION", "REGION_COLOURS", "REGION_MODES", "Mark", "Region", "RegionMarkedItem", "decode_rle",
           "draw_regions", "mark_layout", "mark_sizes", "parse_regions", "rle_runs"]

#: how a benchmark with regions shows them: drawn on the image, or not at all (the plain image)
REGION_MODES = ("draw", "none")
#: bumped whenever the drawing changes, so that runs with other marks are not mixed
MARKS_VERSION = 1
#: region k is drawn in ``REGION_COLOURS[k % len(REGION_COLOURS)]`` (distinct, saturated colours)
REGION_COLOURS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),    # red
    (0, 110, 230),    # blue
    (40, 190, 70),    # green
    (255, 200, 0),    # yellow
    (150, 40, 200),   # purple
    (255, 120, 20),   # orange
    (0, 200, 200),    # cyan
    (240, 50, 200),   # magenta
)
_TINT_ALPHA = 0.25
_SHORT_TAGS_ABOVE = 0.4  # long tags ("Region [k]") only while the widest is at most this share of the width


@dataclass(frozen=True)
class Region:
    """One region: its index, a box and / or an RLE mask (at least one of them).

    ``box``: ``(x1, y1, x2, y2)`` in pixels of ``frame`` (``(width, height)`` of the image the
    annotation refers to; ``None``: the image as loaded). ``mask_size``: ``(height, width)`` of the
    RLE; ``mask_counts``: its counts (a COCO compressed string, or a list of run lengths).
    """

    index: int
    box: tuple[float, float, float, float] | None = None
    frame: tuple[int, int] | None = None
    mask_size: tuple[int, int] | None = None
    mask_counts: str | tuple[int, ...] | None = None

    @property
    def has_mask(self) -> bool:
        return self.mask_counts is not None


# --------------------------------------------------------------------------------------------------
# RLE


def rle_runs(counts: Any) -> list[int]:
    """Run lengths of COCO RLE counts: a list of ints (uncompressed RLE) or the compressed string.

    The compressed form (pycocotools' ``maskApi``) stores each run as a variable-length number, five
    bits per character (offset 48): bit 0x20 says another character follows, bit 0x10 of the last
    character is the sign; from the fourth run on, the number is the difference to the run two
    places before. Raises ``ValueError`` for counts that are not RLE.
    """
    if isinstance(counts, list | tuple):
        runs = []
        for c in counts:
            if isinstance(c, bool) or not isinstance(c, int | np.integer) or c < 0:
                raise ValueError(f"RLE counts must be non-negative integers, got {c!r}")
            runs.append(int(c))
        return runs
    if isinstance(counts, bytes | bytearray):
        try:
            counts = bytes(counts).decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("RLE counts are not ASCII") from None
    if not isinstance(counts, str):
        raise ValueError(f"RLE counts must be a string or a list of integers, got {type(counts).__name__}")
    runs = []
    p, n = 0, len(counts)
    while p < n:
        x, shift, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("RLE counts string ends inside a number")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"RLE counts string holds the character {counts[p]!r}")
            x |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            p += 1
            shift += 5
            if not more and c & 0x10:
                x -= 1 << shift
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            raise ValueError("RLE counts string decodes to a negative run length")
        runs.append(x)
    return runs


def _runs_to_mask(runs: Sequence[int], height: int, width: int) -> np.ndarray:
    values = (np.arange(len(runs)) % 2).astype(bool)
    flat = np.repeat(values, np.asarray(runs, dtype=np.int64))
    return flat.reshape(width, height).T  # RLE runs go down the columns (Fortran order)


def decode_rle(region: Region) -> np.ndarray:
    """The region's mask, ``(height, width)`` bool (``ValueError`` if it has none or it is not RLE)."""
    if region.mask_size is None or region.mask_counts is None:
        raise ValueError(f"region {region.index} has no mask")
    h, w = region.mask_size
    if isinstance(region.mask_counts, str):
        try:
            from pycocotools import mask as mask_util
        except ImportError:
            mask_util = None
        if mask_util is not None:
            decoded = mask_util.decode({"size": [h, w], "counts": region.mask_counts.encode("ascii")})
            return np.ascontiguousarray(decoded.astype(bool))
    runs = rle_runs(region.mask_counts)
    if sum(runs) != h * w:
        raise ValueError(f"region {region.index}: RLE runs add up to {sum(runs)} pixels, not {h} x {w}")
    return _runs_to_mask(runs, h, w)


# --------------------------------------------------------------------------------------------------
# Reading the annotation


def _box(value: Any) -> tuple[float, float, float, float] | None:
    if not isinstance(value, list | tuple) or len(value) != 4:
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if any(isinstance(v, bool) for v in value) or not all(map(math.isfinite, (x1, y1, x2, y2))):
        return None
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def _mask(value: Any, index: int) -> tuple[tuple[int, int], str | tuple[int, ...]]:
    """``(size, counts)`` of a valid, non-empty RLE; ``ValueError`` naming the problem otherwise."""
    if not isinstance(value, Mapping):
        raise ValueError(f"region {index}: the mask is {type(value).__name__}, not an RLE object")
    size, counts = value.get("size"), value.get("counts")
    if (not isinstance(size, list | tuple) or len(size) != 2
            or not all(isinstance(s, int | np.integer) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ValueError(f"region {index}: the mask's size {size!r} is not [height, width]")
    h, w = int(size[0]), int(size[1])
    runs = rle_runs(counts)  # ValueError for counts that are not RLE
    if sum(runs) != h * w:
        raise ValueError(f"region {index}: the mask's runs add up to {sum(runs)} pixels, not {h} x {w}")
    if not any(runs[1::2]):
        raise ValueError(f"region {index}: the mask is empty")
    kept: str | tuple[int, ...]
    if isinstance(counts, bytes | bytearray):
        kept = bytes(counts).decode("ascii")
    elif isinstance(counts, str):
        kept = counts
    else:
        kept = tuple(int(c) for c in counts)
    return (h, w), kept


def parse_regions(bbox: Any, rle: Any, frame: tuple[int, int] | None = None) -> tuple[tuple[Region, ...], list[str]]:
    """The regions of an annotation (``bbox`` / ``rle`` lists, ``k`` = index), and the problems found.

    A region keeps a valid mask and / or a valid box; a mask that cannot be decoded (or is empty)
    is dropped with a note (its box is drawn instead); a region with neither is left out, with a
    note. ``frame``: ``(width, height)`` the boxes refer to (the record's image size).
    """
    boxes = bbox if isinstance(bbox, list | tuple) else []
    masks = rle if isinstance(rle, list | tuple) else []
    regions, problems = [], []
    for k in range(max(len(boxes), len(masks))):
        box = _box(boxes[k]) if k < len(boxes) else None
        if k < len(boxes) and box is None:
            problems.append(f"region {k}: the box {boxes[k]!r} is not [x1, y1, x2, y2] with x1 < x2, y1 < y2")
        size, counts = None, None
        if k < len(masks) and masks[k] is not None:
            try:
                size, counts = _mask(masks[k], k)
            except ValueError as exc:
                problems.append(f"{exc}; its box is drawn instead" if box is not None else str(exc))
        if box is None and counts is None:
            continue
        regions.append(Region(k, box, frame if box is not None else None, size, counts))
    return tuple(regions), problems


# --------------------------------------------------------------------------------------------------
# Drawing


@dataclass(frozen=True)
class Mark:
    """Where one region is drawn: its outline (mask or box, in image pixels), its tag and colour."""

    index: int
    colour: tuple[int, int, int]
    label: str
    mask: np.ndarray | None  # (H, W) bool, at the image's size
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 (inclusive) of the mask's extent or the box
    tag: tuple[int, int, int, int]  # x1, y1, x2, y2 (inclusive) of the tag


def mark_sizes(width: int, height: int) -> tuple[int, int]:
    """``(line width, text height)`` in pixels for an image of this size (both grow with it)."""
    short = max(1, min(width, height))
    return max(3, round(short / 120)), max(11, round(short / 22))


def _font(px: int) -> Any:
    from PIL import ImageFont, features

    if features.check_module("freetype2"):
        return ImageFont.load_default(size=px)
    return None


def _render_text(text: str, px: int, fg: tuple[int, int, int], bg: tuple[int, int, int]) -> Any:
    """``text`` on a ``bg`` rectangle, about ``px`` pixels high with a margin (a PIL image)."""
    from PIL import Image, ImageDraw, ImageFont

    pad = max(2, px // 6)
    font = _font(px)
    if font is not None:
        left, top, right, bottom = font.getbbox(text)
        img = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), bg)
        ImageDraw.Draw(img).text((pad - left, pad - top), text, fill=fg, font=font)
        return img
    # no FreeType: PIL's bitmap font, enlarged by a whole factor (nearest neighbour)
    bitmap = ImageFont.load_default()
    left, top, right, bottom = bitmap.getbbox(text)
    small = Image.new("RGB", (right - left, bottom - top), bg)
    ImageDraw.Draw(small).text((-left, -top), text, fill=fg, font=bitmap)
    k = max(1, round(px / max(1, bottom - top)))
    big = small.resize((small.width * k, small.height * k), Image.Resampling.NEAREST)
    img = Image.new("RGB", (big.width + 2 * pad, big.height + 2 * pad), bg)
    img.paste(big, (pad, pad))
    return img


def _text_colour(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = colour
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _scaled_box(region: Region, width: int, height: int) -> tuple[int, int, int, int] | None:
    if region.box is None:
        return None
    sx = width / region.frame[0] if region.frame else 1.0
    sy = height / region.frame[1] if region.frame else 1.0
    x1, y1, x2, y2 = region.box
    box = (int(math.floor(x1 * sx)), int(math.floor(y1 * sy)), int(math.ceil(x2 * sx)) - 1,
           int(math.ceil(y2 * sy)) - 1)
    box = (max(0, box[0]), max(0, box[1]), min(width - 1, box[2]), min(height - 1, box[3]))
    return box if box[0] <= box[2] and box[1] <= box[3] else None


def _extent(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _region_shape(region: Region, width: int,
                  height: int) -> tuple[np.ndarray | None, tuple[int, int, int, int] | None]:
    """The region's mask at the image's size (or ``None``) and its box in image pixels (inclusive)."""
    if not region.has_mask:
        return None, _scaled_box(region, width, height)
    mask = decode_rle(region)
    if mask.shape != (height, width):  # the image was resized after annotation
        from PIL import Image

        small = np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST))
        if not small.any():  # a sliver lost in the resize: outline where it was
            x1, y1, x2, y2 = _extent(mask)
            sx, sy = width / mask.shape[1], height / mask.shape[0]
            box = (int(x1 * sx), int(y1 * sy), min(width - 1, int(x2 * sx)), min(height - 1, int(y2 * sy)))
            return None, box
        mask = small
    return mask, _extent(mask)


def mark_layout(regions: Sequence[Region], width: int, height: int) -> list[Mark]:
    """Where :func:`draw_regions` puts each region's outline and tag on a ``width`` x ``height`` image."""
    from spatialforge.viz import place_labels

    _, text_px = mark_sizes(width, height)
    shapes = []
    for r in regions:
        mask, box = _region_shape(r, width, height)
        if box is not None:
            shapes.append((r.index, mask, box))
    long_tags = [_render_text(f"Region [{k}]", text_px, (0, 0, 0), (0, 0, 0)).width for k, _, _ in shapes]
    use_long = not long_tags or max(long_tags) <= _SHORT_TAGS_ABOVE * width
    labels = [f"Region [{k}]" if use_long else f"[{k}]" for k, _, _ in shapes]
    sizes = [_render_text(lab, text_px, (0, 0, 0), (0, 0, 0)).size for lab in labels]
    anchors = []
    for (_, _, box), (w, h) in zip(shapes, sizes, strict=True):
        above = box[1] - h >= 0
        anchors.append((box[0] + w / 2, box[1] - h / 2 if above else box[1] + h / 2))
    corners = place_labels(anchors, sizes, width, height)
    marks = []
    for (k, mask, box), label, (w, h), (x, y) in zip(shapes, labels, sizes, corners, strict=True):
        colour = REGION_COLOURS[k % len(REGION_COLOURS)]
        marks.append(Mark(k, colour, label, mask, box, (x, y, x + w - 1, y + h - 1)))
    return marks


def draw_regions(image: Any, regions: Sequence[Region]) -> Any:
    """A copy of the PIL ``image`` (RGB) with ``regions`` drawn (see the module docstring)."""
    from PIL import Image, ImageDraw
    from scipy.ndimage import binary_erosion

    img = image.convert("RGB")
    width, height = img.size
    line, text_px = mark_sizes(width, height)
    marks = mark_layout(regions, width, height)
    out = np.array(img, dtype=np.uint8)
    for m in marks:  # light tint inside the masks
        if m.mask is not None:
            inside = out[m.mask].astype(np.float64) * (1 - _TINT_ALPHA) + np.asarray(m.colour, float) * _TINT_ALPHA
            out[m.mask] = np.clip(np.rint(inside), 0, 255).astype(np.uint8)
    for m in marks:  # solid outlines: the mask's inner border band (worked out inside its extent), or the box's
        if m.mask is not None:
            x1, y1, x2, y2 = m.box
            crop = m.mask[y1:y2 + 1, x1:x2 + 1]
            edge = crop & ~binary_erosion(crop, iterations=line, border_value=0)
            out[y1:y2 + 1, x1:x2 + 1][edge] = m.colour
    drawn = Image.fromarray(out)
    draw = ImageDraw.Draw(drawn)
    for m in marks:
        if m.mask is None:
            draw.rectangle(m.box, outline=m.colour, width=line)
    for m in marks:
        drawn.paste(_render_text(m.label, text_px, _text_colour(m.colour), m.colour), (m.tag[0], m.tag[1]))
    return drawn


# --------------------------------------------------------------------------------------------------
# The item


@dataclass(frozen=True)
class RegionMarkedItem(BenchmarkItem):
    """A benchmark item whose image is sent with its ``regions`` drawn (:func:`draw_regions`)."""

    regions: tuple[Region, ...] = ()

    def load_image(self) -> Any:
        """The image as an RGB PIL image, with the regions drawn on it."""
        image = super().load_image()
        return draw_regions(image, self.regions) if self.regions else image
