"""Writes tiny AGD20K test trees in the exact published layout, for the tests.

``ROOT/<split>/testset/egocentric/<affordance>/<object>/<object>_<i:06d>.jpg`` (random RGB JPEGs) and
``ROOT/<split>/testset/GT/<affordance>/<object>/<object>_<i:06d>.png`` (uint8 grey PNG Gaussian blobs
with an exactly-zero background, so that a GT copied as a prediction scores SIM == 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_AFFORDANCES: dict[str, list[str]] = {
    "cut_with": ["knife"],
    "pour": ["cup", "bottle"],
    "sit_on": ["chair"],
}

ORPHAN_IMAGE = "orphan_000900"
ORPHAN_GT = "orphan_000901"
BROKEN_GT = "broken_000902"


def gaussian_blob(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A uint8 heatmap: one Gaussian blob, peak 255, zero beyond 2.5 sigma."""
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    sigma = rng.uniform(0.08, 0.15) * min(height, width)
    yy, xx = np.mgrid[0:height, 0:width]
    d2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / sigma**2
    blob = np.where(d2 <= 2.5**2, np.exp(-0.5 * d2), 0.0)
    return np.round(255.0 * blob / blob.max()).astype(np.uint8)


def write_agd20k(
    root: Path,
    split: str = "Seen",
    affordances: dict[str, list[str]] | None = None,
    per_object: int = 2,
    size: tuple[int, int] = (48, 64),
    seed: int = 0,
    *,
    image_without_gt: bool = False,
    gt_without_image: bool = False,
    unreadable_gt: bool = False,
) -> Path:
    """Write a tiny AGD20K test split under ``root``; returns the split folder ``root/split``.

    ``size`` is (height, width). The broken cases go into the first affordance / object:
    ``image_without_gt`` adds the image ``ORPHAN_IMAGE`` with no GT, ``gt_without_image`` the GT
    ``ORPHAN_GT`` with no image, ``unreadable_gt`` an image ``BROKEN_GT`` whose GT PNG is garbage.
    """
    affordances = DEFAULT_AFFORDANCES if affordances is None else affordances
    rng = np.random.default_rng(seed)
    height, width = size
    split_root = Path(root) / split
    ego, gt = split_root / "testset" / "egocentric", split_root / "testset" / "GT"

    def write_image(aff: str, obj: str, stem: str) -> None:
        d = ego / aff / obj
        d.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(d / f"{stem}.jpg", quality=80)

    def write_gt(aff: str, obj: str, stem: str) -> None:
        d = gt / aff / obj
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gaussian_blob(rng, height, width)).save(d / f"{stem}.png")

    for aff in sorted(affordances):
        for obj in sorted(affordances[aff]):
            for i in range(per_object):
                stem = f"{obj}_{i:06d}"
                write_image(aff, obj, stem)
                write_gt(aff, obj, stem)

    aff0 = sorted(affordances)[0]
    obj0 = sorted(affordances[aff0])[0]
    if image_without_gt:
        write_image(aff0, obj0, ORPHAN_IMAGE)
    if gt_without_image:
        write_gt(aff0, obj0, ORPHAN_GT)
    if unreadable_gt:
        write_image(aff0, obj0, BROKEN_GT)
        (gt / aff0 / obj0 / f"{BROKEN_GT}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    # the train split exists in the real archive; the loader must ignore it
    (split_root / "trainset" / "egocentric").mkdir(parents=True, exist_ok=True)
    return split_root
