"""The AGD20K affordance-grounding test set and the scoring of heatmap predictions on it (torch-free).

Layout (the published archive)::

    ROOT/{Seen,Unseen}/testset/egocentric/<affordance>/<object>/<stem>.jpg
    ROOT/{Seen,Unseen}/testset/GT/<affordance>/<object>/<stem>.png      # uint8 heatmap, same stem

``ROOT`` may also be a split folder itself (the one holding ``testset/``). Images may be ``.jpg``,
``.jpeg`` or ``.png``. The text prompt of an affordance is its folder name with ``_`` replaced by a
space (``cut_with`` -> ``cut with``).

Ground truth is read the way the reference code reads it, ``cv2.imread(path, cv2.IMREAD_GRAYSCALE)``,
replicated without OpenCV: 8-bit grey as is; colour (RGB / RGBA / palette) through libpng's
``png_set_rgb_to_gray(0.299, 0.587)`` that OpenCV's PNG decoder uses, i.e.
``(9797 R + 19234 G + 3737 B) >> 15`` with alpha ignored; 16-bit grey is shifted to 8 bits
(``>> 8``). The 8-bit map is then divided by 255 (see :mod:`spatialforge.afford.metrics` for the rest
of the protocol).

Test images are read in stored-pixel order (:func:`read_test_image`): an EXIF Orientation tag is
ignored, because the GT maps are stored in that order too (rotating the photo would transpose the
prediction against its GT).

Every test image with a readable GT is an item; images without GT, GT without an image, unreadable
GT files and stray files are listed in :attr:`AGD20KTestSet.skipped` with a reason. Scoring never
drops an item silently: a missing or malformed prediction is recorded in the report's ``skipped``
list and counted in ``skipped_by_reason``. A prediction must have the GT's aspect ratio (any
resolution, up to one pixel of rounding per side) or be square (made on the image resized to the
protocol's square, as the reference methods write them); any other shape, e.g. a transposed
``(W, H)`` map, is a ``bad_prediction`` whose message names the file and both shapes.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from spatialforge.afford.metrics import EPS as METRIC_EPS
from spatialforge.afford.metrics import MINMAX_EPS, NSS_THRESHOLD, SIZE, kld, nss, prepare, sim
from spatialforge.errors import ConfigError, DatasetError
from spatialforge.io.dataset import atomic_write_bytes, atomic_write_json

__all__ = [
    "IMAGE_SUFFIXES",
    "METRICS",
    "SEEN_AFFORDANCES",
    "SPLITS",
    "UNSEEN_AFFORDANCES",
    "AGD20KTestSet",
    "AGDItem",
    "affordance_prompt",
    "aspect_problem",
    "read_gt",
    "read_prediction",
    "read_test_image",
    "score",
    "write_report",
]

SPLITS = ("Seen", "Unseen")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
METRICS = ("KLD", "SIM", "NSS")

SEEN_AFFORDANCES = (
    "beat", "boxing", "brush_with", "carry", "catch", "cut", "cut_with", "drag", "drink_with", "eat", "hit",
    "hold", "jump", "kick", "lie_on", "lift", "look_out", "open", "pack", "peel", "pick_up", "pour", "push",
    "ride", "sip", "sit_on", "stick", "stir", "swing", "take_photo", "talk_on", "text_on", "throw", "type_on",
    "wash", "write",
)  # fmt: skip
"""The 36 affordance classes of the Seen split."""
UNSEEN_AFFORDANCES = (
    "carry", "catch", "cut", "cut_with", "drink_with", "eat", "hit", "hold", "jump", "kick", "lie_on", "open",
    "peel", "pick_up", "pour", "push", "ride", "sip", "sit_on", "stick", "swing", "take_photo", "throw",
    "type_on", "wash",
)  # fmt: skip
"""The 25 affordance classes of the Unseen split."""

_OFFICIAL = {"Seen": SEEN_AFFORDANCES, "Unseen": UNSEEN_AFFORDANCES}

# libpng's png_set_rgb_to_gray(png_ptr, 1, 0.299, 0.587) as 15-bit fixed point (what cv2.imread's
# IMREAD_GRAYSCALE does for colour PNGs); the weights sum to 32768, so grey pixels stay exact.
_GRAY_WEIGHTS = (9797, 19234, 3737)


def affordance_prompt(affordance: str) -> str:
    """The text prompt of an AGD20K affordance folder name: ``"cut_with"`` -> ``"cut with"``."""
    return affordance.replace("_", " ")


@dataclass(frozen=True)
class AGDItem:
    """One AGD20K test image and its GT heatmap."""

    affordance: str
    object: str
    stem: str
    image_path: Path
    gt_path: Path

    @property
    def prompt(self) -> str:
        return affordance_prompt(self.affordance)

    @property
    def key(self) -> str:
        return f"{self.affordance}/{self.object}/{self.stem}"


def _skip(key: str, path: Path, reason: str, message: str) -> dict[str, str]:
    return {"key": key, "path": str(path), "reason": reason, "message": message}


def _canonical_split(split: str) -> str:
    if isinstance(split, str):
        for name in SPLITS:
            if split.lower() == name.lower():
                return name
    raise ConfigError(f"split must be one of {', '.join(SPLITS)} (case-insensitive), got {split!r}")


def _find_child_dir(parent: Path, name: str) -> Path | None:
    """``parent/name`` as a folder, matching the name case-insensitively (an exact match wins)."""
    exact = parent / name
    if exact.is_dir():
        return exact
    matches = sorted(c for c in parent.iterdir() if c.is_dir() and c.name.lower() == name.lower())
    return matches[0] if matches else None


def _resolve_split_root(root: Path, split: str) -> Path:
    if not root.is_dir():
        raise DatasetError(f"AGD20K root is not a folder: {root}", path=str(root))
    found = _find_child_dir(root, split)
    if found is not None:
        return found
    if root.name.lower() == split.lower():  # ROOT is the split folder itself (its content is checked next)
        return root
    if (root / "testset").is_dir():  # ROOT is a split folder under another name
        other = next(s for s in SPLITS if s != split)
        if root.name.lower() == other.lower():
            raise ConfigError(f"AGD20K root {root} is the {other} split folder but split={split!r} was asked for")
        return root
    missing = root / split
    raise DatasetError(
        f"AGD20K split folder not found: {missing} (ROOT must hold Seen/ and Unseen/, or be a split folder "
        "holding testset/)",
        path=str(missing),
    )


def _required_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"AGD20K {what} folder not found: {path}", path=str(path))
    return path


def _visible(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if not p.name.startswith("."))


def _scan(base: Path, suffixes: tuple[str, ...], kind: str) -> tuple[dict[str, Path], list[dict[str, str]]]:
    """``{affordance/object/stem: file}`` of a two-level tree, and the stray files found in it."""
    found: dict[str, Path] = {}
    skipped: list[dict[str, str]] = []
    for aff_dir in _visible(base):
        if not aff_dir.is_dir():
            skipped.append(_skip(aff_dir.name, aff_dir, "unexpected_file", f"{kind}: not an affordance folder"))
            continue
        for obj_dir in _visible(aff_dir):
            rel = f"{aff_dir.name}/{obj_dir.name}"
            if not obj_dir.is_dir():
                skipped.append(_skip(rel, obj_dir, "unexpected_file", f"{kind}: not an object folder"))
                continue
            for f in _visible(obj_dir):
                key = f"{rel}/{f.stem}"
                if not f.is_file() or f.suffix.lower() not in suffixes:
                    skipped.append(_skip(key, f, "unexpected_file", f"{kind}: not a {'/'.join(suffixes)} file"))
                elif key in found:
                    skipped.append(_skip(key, f, f"duplicate_{kind}", f"{kind}: same stem as {found[key].name}"))
                else:
                    found[key] = f
    return found, skipped


def _check_gt_file(path: Path) -> str | None:
    """Why the GT file cannot be read (header, chunk checksums, mode), or None when it looks fine."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            im.verify()
    except (OSError, SyntaxError, ValueError) as e:
        return f"cannot decode the image ({e})"
    if not _gt_mode_supported(mode):
        return f"unsupported image mode {mode!r}"
    return None


def _gt_mode_supported(mode: str) -> bool:
    return mode in ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "I") or mode.startswith("I;16")


def _decode_gt(im: Image.Image) -> np.ndarray:
    """The uint8 map cv2.imread(IMREAD_GRAYSCALE) gives for this image."""
    mode = im.mode
    if mode == "L":
        return np.asarray(im, dtype=np.uint8)
    if mode == "1":
        return np.asarray(im.convert("L"), dtype=np.uint8)
    if mode in ("LA", "La"):
        return np.asarray(im.getchannel(0), dtype=np.uint8)
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im).astype(np.int64)
        if a.min() < 0 or a.max() > 65535:
            raise ValueError(f"32-bit values outside 0..65535 (mode {mode})")
        return (a >> 8).astype(np.uint8)
    if mode in ("P", "PA", "RGB", "RGBA", "RGBX", "RGBa"):
        rgb = np.asarray(im.convert("RGB"), dtype=np.int64)
        wr, wg, wb = _GRAY_WEIGHTS
        return ((wr * rgb[..., 0] + wg * rgb[..., 1] + wb * rgb[..., 2]) >> 15).astype(np.uint8)
    raise ValueError(f"unsupported image mode {mode!r}")


class AGD20KTestSet:
    """The egocentric test images of one AGD20K split with their GT heatmaps.

    ``root``: the folder holding ``Seen/`` and ``Unseen/``, or a split folder. ``split``: ``"Seen"``
    or ``"Unseen"`` (case-insensitive). ``check_gt``: verify every GT file at construction (cheap:
    header and chunk checksums, no decoding) so unreadable ones are skipped up front.
    """

    def __init__(self, root: str | os.PathLike[str], split: str, *, check_gt: bool = True) -> None:
        self.split = _canonical_split(split)
        self.split_root = _resolve_split_root(Path(root), self.split)
        testset = _required_dir(self.split_root / "testset", "testset")
        self.image_root = _required_dir(testset / "egocentric", "test image")
        self.gt_root = _required_dir(testset / "GT", "test GT")

        images, skipped = _scan(self.image_root, IMAGE_SUFFIXES, "image")
        gts, gt_skipped = _scan(self.gt_root, (".png",), "gt")
        skipped += gt_skipped
        items: list[AGDItem] = []
        for key in sorted(images.keys() | gts.keys()):
            image, gt = images.get(key), gts.get(key)
            if gt is None:
                skipped.append(_skip(key, image, "missing_gt", f"no GT file {self.gt_root / key}.png"))
                continue
            if image is None:
                skipped.append(_skip(key, gt, "missing_image", f"no test image {self.image_root / key}.(jpg|jpeg|png)"))
                continue
            problem = _check_gt_file(gt) if check_gt else None
            if problem is not None:
                skipped.append(_skip(key, gt, "unreadable_gt", problem))
                continue
            aff, obj, stem = key.split("/")
            items.append(AGDItem(aff, obj, stem, image, gt))
        self.items: list[AGDItem] = items
        self.skipped: list[dict[str, str]] = skipped
        if not items:
            raise DatasetError(
                f"no scorable AGD20K test images under {self.image_root} ({len(skipped)} skipped)",
                path=str(self.image_root),
            )

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[AGDItem]:
        return iter(self.items)

    def __repr__(self) -> str:
        return f"AGD20KTestSet({self.split!r}, {len(self)} images, {len(self.skipped)} skipped, {self.split_root})"

    @property
    def affordances(self) -> list[str]:
        return sorted({it.affordance for it in self.items})

    @property
    def objects(self) -> list[str]:
        return sorted({it.object for it in self.items})

    @property
    def official_affordances(self) -> tuple[str, ...]:
        return _OFFICIAL[self.split]

    def load_gt(self, item: AGDItem) -> np.ndarray:
        """The GT heatmap of ``item`` as float64 in [0, 1] (see :func:`read_gt`)."""
        return read_gt(item.gt_path)


def read_gt(path: str | os.PathLike[str]) -> np.ndarray:
    """A GT heatmap PNG as float64 in [0, 1] at its stored resolution: what
    ``cv2.imread(path, cv2.IMREAD_GRAYSCALE) / 255.0`` gives (see the module docstring).
    Raises DatasetError naming the file when it cannot be decoded."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            gray = _decode_gt(im)
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"{path}: unreadable GT heatmap ({e})", path=str(path)) from e
    if gray.ndim != 2 or gray.size == 0:
        raise DatasetError(f"{path}: GT heatmap has shape {gray.shape}, expected (H, W)", path=str(path))
    return gray.astype(np.float64) / 255.0


def read_test_image(path: str | os.PathLike[str], max_pixels: int = 100_000_000) -> np.ndarray:
    """A test image as (H, W, 3) uint8 RGB in stored-pixel order: no EXIF rotation (the GT maps are
    stored that way); alpha is composited on white, 16-bit grey scaled to 8 bits. Raises DatasetError
    naming the file when it cannot be decoded or has more than ``max_pixels`` pixels."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.size[0] * im.size[1] > max_pixels:
                    raise DatasetError(f"{path}: {im.size[0]}x{im.size[1]} exceeds the {max_pixels} pixel limit",
                                       path=str(path))
                im.load()
                rgb = _to_rgb(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{path}: cannot decode the test image ({e})", path=str(path)) from e
    return rgb


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        hi = float(a.max()) if a.size else 0.0
        a = np.clip(a / (hi if hi > 255 else 255.0) * 255.0, 0, 255).astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "La", "PA", "RGBa") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        return np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
                          .convert("RGB"), dtype=np.uint8)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def aspect_problem(pred_shape: tuple[int, int], gt_shape: tuple[int, int]) -> str | None:
    """Why a ``(h, w)`` prediction cannot be a map of a ``(H, W)`` GT, or None when it can.

    Accepted: the GT's aspect ratio at any resolution (each side within one pixel of the
    GT's size times one scale), or a square map (the image resized to a square, as the reference methods predict).
    """
    (h, w), (gh, gw) = pred_shape, gt_shape
    if h == w or abs(h * gw - w * gh) <= gh + gw:  # h = s H + e1, w = s W + e2, |e| <= 1
        return None
    hint = " (height and width swapped: was the image rotated, e.g. by its EXIF orientation?)" if (
        abs(h * gh - w * gw) <= gh + gw) else ""
    return (f"prediction is {h}x{w} (HxW) but the GT is {gh}x{gw}: another aspect ratio{hint}; predict at the "
            "image's stored size (any scale) or on the protocol's square")


def read_prediction(pred_dir: str | os.PathLike[str], item: AGDItem) -> np.ndarray | None:
    """The stored prediction of ``item``: ``pred_dir/<affordance>/<object>/<stem>.npy`` (preferred) or
    ``.png``; None when neither exists.

    Values come back as stored (their scale is irrelevant: the protocol min-max normalises the
    prediction): an NPY array as saved, a PNG as float64. A PNG must be single-channel (8 or 16 bit,
    or float); an RGB(A) PNG whose colour channels are equal is read as one channel, any other colour
    PNG comes back 3-D so that scoring reports it as a bad prediction. Raises DatasetError naming the
    file when it is unreadable.
    """
    base = Path(pred_dir) / item.affordance / item.object
    npy, png = base / f"{item.stem}.npy", base / f"{item.stem}.png"
    if npy.is_file():
        try:
            a = np.load(npy, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise DatasetError(f"{npy}: unreadable prediction ({e})", path=str(npy)) from e
        if not isinstance(a, np.ndarray):
            a.close()  # an .npz archive saved under a .npy name
            raise DatasetError(f"{npy}: expected one array, got an .npz archive", path=str(npy))
        return a
    if png.is_file():
        try:
            with Image.open(png) as im:
                mode = im.mode
                if mode in ("P", "PA"):
                    im = im.convert("RGBA")
                    mode = "RGBA"
                a = np.asarray(im)
        except (OSError, SyntaxError, ValueError) as e:
            raise DatasetError(f"{png}: unreadable prediction ({e})", path=str(png)) from e
        if mode in ("LA", "La"):
            a = a[..., 0]
        elif a.ndim == 3 and a.shape[-1] >= 3:
            rgb = a[..., :3]
            if (rgb == rgb[..., :1]).all():
                a = rgb[..., 0]
        return a.astype(np.float64)
    return None


def _check_prediction(raw: Any) -> tuple[np.ndarray | None, str]:
    a = np.asarray(raw)
    if not (a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        return None, f"prediction has dtype {a.dtype}; expected a real-valued map"
    while a.ndim > 2 and a.shape[0] == 1:  # (1, H, W) or (1, 1, H, W) network outputs
        a = a[0]
    while a.ndim > 2 and a.shape[-1] == 1:  # (H, W, 1)
        a = a[..., 0]
    if a.ndim != 2:
        return None, f"prediction has shape {a.shape}; expected a 2-D map (H, W)"
    if a.size == 0:
        return None, f"prediction is empty (shape {a.shape})"
    a = a.astype(np.float64)
    bad = int(np.count_nonzero(~np.isfinite(a)))
    if bad:
        return None, f"prediction has {bad} NaN or infinite values"
    return a, ""


def _means(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Plain means of the metrics over ``rows``; None (JSON null, never NaN) when there are none."""
    return {m: (float(np.mean([r[m] for r in rows])) if rows else None) for m in METRICS}


def _group(rows: list[dict[str, Any]], items: list[AGDItem], field: str) -> dict[str, dict[str, Any]]:
    totals = Counter(getattr(it, field) for it in items)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(totals):
        sel = [r for r in rows if r[field] == name]
        out[name] = {"n": len(sel), "n_images": totals[name], **_means(sel)}
    return out


def score(
    testset: AGD20KTestSet,
    predict: Callable[[AGDItem], Any] | str | os.PathLike[str],
    *,
    size: int = SIZE,
    progress: bool = True,
) -> dict[str, Any]:
    """Score predictions on an AGD20K test split with the reference protocol; returns the report.

    ``predict``: a folder laid out as ``<affordance>/<object>/<stem>.(npy|png)`` (see
    :func:`read_prediction`), or a callable ``item -> 2-D map | None`` (None: no prediction; it may
    raise DatasetError for an unreadable one). Predictions may have any resolution.

    Report: ``split``, ``n_images`` (test items), ``n_scored``, ``KLD`` / ``SIM`` / ``NSS`` (plain
    means over scored images; None if none), ``per_affordance`` and ``per_object``
    (``{name: {"n", "n_images", "KLD", "SIM", "NSS"}}``), ``per_image``, ``n_empty_gt``, ``skipped``
    (dataset and scoring skips, ``{"key", "path", "reason", "message"}``), ``skipped_by_reason``,
    ``missing_affordances`` (official classes absent from the tree) and ``protocol``.
    """
    if isinstance(predict, str | os.PathLike):
        pred_dir = Path(predict)
        if not pred_dir.is_dir():
            raise DatasetError(f"prediction folder not found: {pred_dir}", path=str(pred_dir))

        def fetch(item: AGDItem) -> Any:
            return read_prediction(pred_dir, item)

        def where(item: AGDItem) -> Path:
            base = pred_dir / item.affordance / item.object / item.stem
            npy = base.with_name(f"{item.stem}.npy")
            return npy if npy.is_file() else base.with_name(f"{item.stem}.png")

        source = str(pred_dir)
        missing_msg = f"no prediction file <affordance>/<object>/<stem>.npy or .png under {pred_dir}"
    elif callable(predict):
        fetch = predict

        def where(item: AGDItem) -> Path:
            return item.image_path

        source = getattr(predict, "__qualname__", type(predict).__name__)
        missing_msg = "the predictor returned None"
    else:
        raise ConfigError(f"predict must be a prediction folder or a callable, got {type(predict).__name__}")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ConfigError(f"size must be a positive integer, got {size!r}")

    rows: list[dict[str, Any]] = []
    skipped = [dict(s) for s in testset.skipped]
    n_empty = 0
    for item in tqdm(testset.items, desc=f"AGD20K {testset.split}", unit="img", disable=not progress):
        try:
            raw = fetch(item)
        except DatasetError as e:
            skipped.append(_skip(item.key, Path(e.path or item.image_path), "bad_prediction", str(e)))
            continue
        if raw is None:
            skipped.append(_skip(item.key, item.image_path, "missing_prediction", missing_msg))
            continue
        pred, problem = _check_prediction(raw)
        if pred is None:
            skipped.append(_skip(item.key, where(item), "bad_prediction", f"{where(item)}: {problem}"))
            continue
        try:
            gt = testset.load_gt(item)
        except DatasetError as e:
            skipped.append(_skip(item.key, item.gt_path, "unreadable_gt", str(e)))
            continue
        problem = aspect_problem(pred.shape, gt.shape)
        if problem is not None:
            skipped.append(_skip(item.key, where(item), "bad_prediction", f"{where(item)}: {problem}"))
            continue
        p, g = prepare(pred, gt, size)
        empty = not bool(gt.max() > 0)
        n_empty += empty
        rows.append({"key": item.key, "affordance": item.affordance, "object": item.object,
                     "KLD": kld(p, g), "SIM": sim(p, g), "NSS": nss(p, g), "empty_gt": empty})

    present = {it.affordance for it in testset.items}
    return {
        "split": testset.split,
        "root": str(testset.split_root),
        "predictions": source,
        "n_images": len(testset),
        "n_scored": len(rows),
        **_means(rows),
        "n_empty_gt": n_empty,
        "per_affordance": _group(rows, testset.items, "affordance"),
        "per_object": _group(rows, testset.items, "object"),
        "missing_affordances": sorted(set(testset.official_affordances) - present),
        "skipped": skipped,
        "skipped_by_reason": dict(sorted(Counter(s["reason"] for s in skipped).items())),
        "per_image": rows,
        "protocol": {
            "size": size,
            "resize": "bilinear, OpenCV INTER_LINEAR semantics (half-pixel centres, no antialiasing)",
            "prediction": f"resized, then min-max normalised (eps {MINMAX_EPS:g})",
            "gt": "8-bit grey / 255, then resized",
            "eps": METRIC_EPS,
            "nss_threshold": NSS_THRESHOLD,
            "mean": "plain mean over scored images",
        },
    }


def _fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    text = f"{v:.3f}"
    return "0.000" if text == "-0.000" else text  # KLD of near-identical maps is about -1e-8 (eps terms)


def write_report(report: dict[str, Any], out_dir: str | os.PathLike[str], name: str = "agd20k") -> tuple[Path, Path]:
    """Write ``<name>.json`` (the full report) and ``<name>.md`` (overall and per-affordance table)."""
    needed = ("split", "n_images", "n_scored", *METRICS, "per_affordance", "skipped_by_reason")
    missing = [k for k in needed if k not in report]
    if missing:
        raise ConfigError(f"report lacks the field(s) {', '.join(missing)}; pass the dict that score() returns")
    if not name or "/" in name or "\\" in name:
        raise ConfigError(f"report name must be a plain file stem, got {name!r}")
    out = Path(out_dir)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    atomic_write_json(json_path, report)

    lines = [
        f"# AGD20K {report['split']}: KLD / SIM / NSS",
        "",
        f"Scored {report['n_scored']} of {report['n_images']} test images "
        "(plain mean over images; lower KLD, higher SIM and NSS are better).",
    ]
    if report["skipped_by_reason"]:
        counts = ", ".join(f"{k} {v}" for k, v in report["skipped_by_reason"].items())
        lines.append(f"Skipped: {counts}.")
    if report.get("missing_affordances"):
        lines.append(f"Affordances absent from the test tree: {', '.join(report['missing_affordances'])}.")
    lines += ["", "| affordance | n | KLD ↓ | SIM ↑ | NSS ↑ |", "| --- | ---: | ---: | ---: | ---: |"]
    lines.append(f"| **all** | {report['n_scored']} | " + " | ".join(_fmt(report[m]) for m in METRICS) + " |")
    for aff, row in report["per_affordance"].items():
        lines.append(f"| {aff} | {row['n']} | " + " | ".join(_fmt(row[m]) for m in METRICS) + " |")
    atomic_write_bytes(md_path, ("\n".join(lines) + "\n").encode("utf-8"))
    return json_path, md_path
