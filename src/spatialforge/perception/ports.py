"""The stage ports: what each perception stage must do, whatever model sits behind it.

A stage is a callable object that loads its model once (lazily, on first call or ``load()``),
processes a batch of images, and can ``unload()`` to free memory (low-memory mode). ``name`` is
the backend name and ``model_id`` the checkpoint, both recorded as provenance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from spatialforge.perception.types import DepthPrediction, Detections, FilterDecision, MaskSet

__all__ = ["DepthEstimator", "Detector", "ImageFilter", "RegionCaptioner", "Segmenter", "Stage",
           "TextEmbedder"]


@runtime_checkable
class Stage(Protocol):
    name: str
    model_id: str

    def load(self) -> None: ...

    def unload(self) -> None: ...


@runtime_checkable
class ImageFilter(Stage, Protocol):
    def __call__(self, images: Sequence[np.ndarray]) -> list[FilterDecision]: ...

    def tags(self, images: Sequence[np.ndarray], vocabulary: Sequence[str], top_k: int) -> list[list[str]]:
        """The ``top_k`` vocabulary entries most similar to each image (detection prompts)."""
        ...


@runtime_checkable
class TextEmbedder(Stage, Protocol):
    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings, shape (len(texts), D)."""
        ...


@runtime_checkable
class Detector(Stage, Protocol):
    def __call__(self, images: Sequence[np.ndarray], prompts: Sequence[Sequence[str]]) -> list[Detections]:
        """Open-vocabulary boxes per image for that image's text prompts (raw: before NMS and filters)."""
        ...


@runtime_checkable
class RegionCaptioner(Stage, Protocol):
    def __call__(self, images: Sequence[np.ndarray], detections: Sequence[Detections]) -> list[tuple[str, ...]]:
        """A short specific caption for every box of every image."""
        ...


@runtime_checkable
class Segmenter(Stage, Protocol):
    def __call__(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[MaskSet]:
        """One mask per box (pixel xyxy), at the image's size."""
        ...


@runtime_checkable
class DepthEstimator(Stage, Protocol):
    def __call__(self, images: Sequence[np.ndarray],
                 focal_lengths_px: Sequence[float | None] | None = None) -> list[DepthPrediction]:
        """Metric z-depth per image, resized to the image's size.

        ``focal_lengths_px``: a known focal length (pixels of the image, from the user or EXIF) or
        None per image; a backend whose depth scale depends on the focal length uses it.
        """
        ...
