"""Image and map geometry between original images and the square model input (torch-free).

``letterbox`` scales an image so its longer side is ``size`` (aspect kept) and pads it to a
``size`` x ``size`` square, centred; ``unletterbox`` maps a square map back to the original image
size, cropping the padding first. Masks go through the same transform (nearest neighbour), so
an image and its mask stay aligned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["Letterbox", "letterbox", "letterbox_mask", "unletterbox"]


@dataclass(frozen=True)
class Letterbox:
    """Where the scaled image sits in the square: offset (x, y), scaled size (w, h), original size."""

    size: int
    x0: int
    y0: int
    w: int
    h: int
    orig_w: int
    orig_h: int

    @classmethod
    def fit(cls, width: int, height: int, size: int) -> Letterbox:
        if width < 1 or height < 1:
            raise ValueError(f"empty image {width}x{height}")
        s = size / max(width, height)
        w, h = max(1, round(width * s)), max(1, round(height * s))
        return cls(size, (size - w) // 2, (size - h) // 2, w, h, width, height)


def letterbox(image: np.ndarray, size: int,
              fill: tuple[int, int, int] = (123, 117, 104)) -> tuple[np.ndarray, Letterbox]:
    """(H, W, 3) uint8 -> (size, size, 3) uint8 and its :class:`Letterbox` (fill: CLIP's mean colour)."""
    h, w = image.shape[:2]
    box = Letterbox.fit(w, h, size)
    out = np.empty((size, size, 3), np.uint8)
    out[:] = np.asarray(fill, np.uint8)
    scaled = np.asarray(Image.fromarray(image).resize((box.w, box.h), Image.Resampling.BICUBIC))
    out[box.y0:box.y0 + box.h, box.x0:box.x0 + box.w] = scaled
    return out, box


def letterbox_mask(mask: np.ndarray, box: Letterbox) -> np.ndarray:
    """A (H, W) mask through the same letterbox (nearest neighbour); padding is background."""
    out = np.zeros((box.size, box.size), np.float32)
    scaled = Image.fromarray(mask.astype(np.uint8) * 255).resize((box.w, box.h), Image.Resampling.NEAREST)
    out[box.y0:box.y0 + box.h, box.x0:box.x0 + box.w] = np.asarray(scaled, np.float32) / 255.0
    return out


def unletterbox(square: np.ndarray, box: Letterbox) -> np.ndarray:
    """A (size, size) float map -> (orig_h, orig_w): crop the padding, resize bilinearly."""
    if square.shape != (box.size, box.size):
        raise ValueError(f"expected a {box.size}x{box.size} map, got {square.shape}")
    crop = np.ascontiguousarray(square[box.y0:box.y0 + box.h, box.x0:box.x0 + box.w], dtype=np.float32)
    return np.asarray(Image.fromarray(crop, "F").resize((box.orig_w, box.orig_h), Image.Resampling.BILINEAR))
