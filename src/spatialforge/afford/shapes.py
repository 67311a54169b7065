"""A synthetic referring-segmentation task with exact masks: coloured shapes named by colour and shape.

Each image (gray background) holds 2-4 shapes of distinct colours; every shape is a ref whose
sentences name it ("the red square", "red square", "red"). It has the same interface as the RefCOCO
loader (``samples``, ``image``, ``mask``, ``sentence``), so training, validation and the CLI run on it
unchanged. Deterministic given the seed; torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["COLOURS", "SHAPES", "ShapeRef", "ShapesRefDataset"]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (235, 215, 40),
    "purple": (150, 50, 190), "orange": (245, 140, 30),
}
SHAPES = ("square", "circle", "triangle")


@dataclass(frozen=True)
class ShapeRef:
    ref_id: int
    image_id: int
    shape_index: int
    sentences: tuple[str, ...]
    split: str = "train"


class ShapesRefDataset:
    """``n_images`` images of ``size`` x ``size`` pixels; one ref per shape."""

    def __init__(self, n_images: int, size: int = 64, seed: int = 0, split: str = "train",
                 shapes: tuple[str, ...] = SHAPES, naming: str = "full") -> None:
        if n_images < 1 or size < 16:
            raise ValueError("need n_images >= 1 and size >= 16")
        if naming not in ("full", "colour"):
            raise ValueError(f"naming must be 'full' or 'colour', got {naming!r}")
        self.size, self.seed, self.split = size, seed, split
        self._layouts = []
        self.samples: list[ShapeRef] = []
        names = list(COLOURS)
        for img_id in range(n_images):
            rng = np.random.default_rng([seed, img_id])
            k = int(rng.integers(2, 5))
            colours = rng.choice(len(names), size=k, replace=False)
            layout = []
            for j, ci in enumerate(colours):
                kind = shapes[int(rng.integers(len(shapes)))]
                r = float(rng.uniform(0.1, 0.18)) * size
                cx, cy = rng.uniform(r, size - r, 2)
                layout.append((names[int(ci)], kind, float(cx), float(cy), r))
                colour = names[int(ci)]
                sentences = ((f"the {colour} {kind}", f"{colour} {kind}", colour) if naming == "full"
                             else (colour,))
                self.samples.append(ShapeRef(len(self.samples), img_id, j, sentences, split))
            self._layouts.append(layout)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> ShapeRef:
        return self.samples[i]

    def _shape_mask(self, kind: str, cx: float, cy: float, r: float) -> np.ndarray:
        yy, xx = np.mgrid[0:self.size, 0:self.size] + 0.5
        if kind == "square":
            return (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
        if kind == "circle":
            return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        # upward triangle inscribed in the square of half-side r
        inside_y = (yy >= cy - r) & (yy <= cy + r)
        half = (yy - (cy - r)) / 2.0
        return inside_y & (np.abs(xx - cx) <= half)

    def _masks(self, image_id: int) -> list[np.ndarray]:
        masks = [self._shape_mask(k, cx, cy, r) for _, k, cx, cy, r in self._layouts[image_id]]
        # later shapes are drawn on top: a shape's mask is what stays visible
        for j in range(len(masks)):
            for later in masks[j + 1:]:
                masks[j] = masks[j] & ~later
        return masks

    def image(self, sample: ShapeRef) -> np.ndarray:
        rng = np.random.default_rng([self.seed, sample.image_id, 1])
        img = np.full((self.size, self.size, 3), 128, np.float64) + rng.normal(0, 6, (self.size, self.size, 3))
        for (colour, *_), m in zip(self._layouts[sample.image_id], self._masks(sample.image_id), strict=True):
            img[m] = COLOURS[colour]
        return np.clip(img, 0, 255).astype(np.uint8)

    def mask(self, sample: ShapeRef) -> np.ndarray:
        return self._masks(sample.image_id)[sample.shape_index]

    def sentence(self, sample: ShapeRef, rng: np.random.Generator) -> str:
        return sample.sentences[int(rng.integers(len(sample.sentences)))]

    def summary(self) -> dict:
        return {"kind": "shapes", "images": len(self._layouts), "refs": len(self.samples), "split": self.split}
