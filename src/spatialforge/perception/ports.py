"""The stage ports: what each perception stage must do, whatever model sits behind it.

A stage is a callable object that loads its model once (lazily, on first call or ``load()``),
processes a batch of images, and can ``unload()`` to free memory (low-memory mode). ``name`` is
the backend name and ``model_id`` the checkpoint, both recorded as provenance.

A detector that also segments what it finds (SAM 3) is a :class:`SegmentingDetector`; its
segmenter stage is then a :class:`DetectorMasks` (``from_detector = True``), which the pipeline
calls with the detector's kept :class:`FoundInstances` instead of boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from spatialforge.perception.types import DepthPrediction, Detections, FilterDecision, FocalEstimate, MaskSet

__all__ = ["DepthEstimator", "Detector", "DetectorMasks", "FocalEstimator", "FoundInstances", "ImageFilter",
           "RegionCaptioner", "Segmenter", "SegmentingDetector", "Stage", "TextEmbedder"]


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
class FoundInstances(Protocol):
    """What a segmenting detector found in one image: its detections, each with a mask made on demand."""

    detections: Detections

    def select(self, index: np.ndarray | list[int]) -> FoundInstances:
        """The detections at ``index`` (in that order) with their masks."""
        ...

    def masks(self) -> MaskSet:
        """One mask per detection, at the image's size."""
        ...


@runtime_checkable
class SegmentingDetector(Detector, Protocol):
    def detect_and_segment(self, images: Sequence[np.ndarray],
                           prompts: Sequence[Sequence[str]]) -> list[FoundInstances]:
        """Every instance per image for its prompts, with its mask (raw: before NMS and filters)."""
        ...


@runtime_checkable
class DetectorMasks(Stage, Protocol):
    """The segmenter stage of a segmenting detector: it loads no model and gives the detector's masks."""

    from_detector: bool  # True: the pipeline passes the detector's kept instances, not boxes

    def __call__(self, images: Sequence[np.ndarray], instances: Sequence[FoundInstances]) -> list[MaskSet]: ...


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

        A depth stage that routes photos by scene type (``routes_by_scene = True``: Depth Anything V2's
        indoor and outdoor checkpoints) also has ``scene_types`` and ``select(scene)``; the pipeline
        then calls it once per scene type with that type's photos, after ``select``.
        """
        ...


@runtime_checkable
class FocalEstimator(Stage, Protocol):
    def __call__(self, images: Sequence[np.ndarray]) -> list[FocalEstimate | None]:
        """A focal length estimated from each image alone (None: no estimate), for photos without one."""
        ...
