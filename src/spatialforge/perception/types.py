"""Typed containers exchanged by the perception stages (numpy only; no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spatialforge.perception.checks import count

__all__ = ["SCENE_TYPES", "DepthPrediction", "Detections", "FilterDecision", "FocalEstimate", "ImageItem", "MaskSet"]

#: The scene types a filter may decide and a depth stage may route by.
SCENE_TYPES = ("indoor", "outdoor")


@dataclass(frozen=True, eq=False)
class ImageItem:
    """A decoded RGB photo and what is known about its camera."""

    image_id: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    source: str
    focal_length_px: float | None = None  # from the user or EXIF, already in pixels of this image
    focal_source: str | None = None  # "user" | "exif"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        img = np.asarray(self.image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"{self.image_id}: image must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
        if self.focal_length_px is not None and not self.focal_length_px > 0:
            raise ValueError(f"{self.image_id}: focal_length_px must be > 0, got {self.focal_length_px}")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass(frozen=True)
class FilterDecision:
    """Whether an image is kept for spatial QA, with the zero-shot scores behind the decision.

    ``scene`` is the photo's scene type (``"indoor"`` or ``"outdoor"``) when the filter decides it
    (the CLIP filter does; ``None`` otherwise), with the probabilities behind it in ``scene_scores``:
    the depth stage routes by it (Depth Anything V2's indoor and outdoor checkpoints).
    """

    keep: bool
    label: str
    scores: dict[str, float]
    model: str
    scene: str | None = None
    scene_scores: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.scene not in (None, *SCENE_TYPES):
            raise ValueError(f"FilterDecision: scene must be one of {', '.join(SCENE_TYPES)} or None, "
                             f"got {self.scene!r}")

    def to_dict(self) -> dict[str, Any]:
        out = {"keep": self.keep, "label": self.label, "model": self.model,
               "scores": {k: round(float(v), 5) for k, v in self.scores.items()}}
        if self.scene is not None:
            out["scene"] = self.scene
            out["scene_scores"] = {k: round(float(v), 5) for k, v in (self.scene_scores or {}).items()}
        return out


@dataclass(frozen=True, eq=False)
class Detections:
    """Boxes in pixel xyxy of one image, their scores, the prompt label that found each, and captions."""

    boxes: np.ndarray  # (N, 4) float32 x0, y0, x1, y1
    scores: np.ndarray  # (N,) float32
    labels: tuple[str, ...]
    captions: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        n = len(boxes)
        if len(scores) != n or len(self.labels) != n:
            raise ValueError(f"Detections: {count(n, 'box', 'boxes')} but {count(len(scores), 'score')} and "
                             f"{count(len(self.labels), 'label')}")
        if self.captions is not None and len(self.captions) != n:
            raise ValueError(f"Detections: {count(n, 'box', 'boxes')} but {count(len(self.captions), 'caption')}")
        if n and (np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1])):
            raise ValueError("Detections: boxes must be x0 <= x1 and y0 <= y1 (pixel xyxy)")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", tuple(self.labels))

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), ())

    def select(self, index: np.ndarray | list[int]) -> Detections:
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.nonzero(idx)[0]
        idx = idx.astype(int)
        return Detections(self.boxes[idx], self.scores[idx], tuple(self.labels[i] for i in idx),
                          None if self.captions is None else tuple(self.captions[i] for i in idx))

    def with_captions(self, captions: tuple[str, ...] | list[str]) -> Detections:
        return Detections(self.boxes, self.scores, self.labels, tuple(captions))

    def to_list(self) -> list[dict[str, Any]]:
        caps = self.captions or (None,) * len(self)
        return [{"box_xyxy": [round(float(v), 2) for v in b], "score": round(float(s), 5), "label": lab,
                 "caption": c} for b, s, lab, c in zip(self.boxes, self.scores, self.labels, caps, strict=True)]


@dataclass(frozen=True, eq=False)
class MaskSet:
    """One boolean mask per detection (masks may overlap) and the model's quality score for each."""

    masks: np.ndarray  # (N, H, W) bool
    scores: np.ndarray  # (N,) float32

    def __post_init__(self) -> None:
        masks = np.asarray(self.masks)
        if masks.ndim != 3 or masks.dtype != bool:
            raise ValueError(f"MaskSet: masks must be (N, H, W) bool, got {masks.shape} {masks.dtype}")
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(scores) != len(masks):
            raise ValueError(f"MaskSet: {count(len(masks), 'mask')} but {count(len(scores), 'score')}")
        object.__setattr__(self, "scores", scores)

    def __len__(self) -> int:
        return len(self.masks)


@dataclass(frozen=True, eq=False)
class DepthPrediction:
    """Metric z-depth (metres, at the input image's size) and, when the model predicts it, the FOV.

    ``max_range_m``: the model's maximum range, at and near which depth was made invalid (sky, far
    background; None: no cap applied). ``info``: what else the backend records per photo (plain JSON
    values: the scene type or head it used, the fraction of pixels beyond range), copied into the
    photo's provenance.
    """

    depth: np.ndarray  # (H, W) float32 metres, 0 = invalid
    model: str
    hfov_deg: float | None = None  # horizontal field of view predicted by the model (Depth Pro)
    focal_length_px: float | None = None  # focal length predicted by the model, in pixels of the input
    max_range_m: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        d = np.asarray(self.depth, dtype=np.float32)
        if d.ndim != 2:
            raise ValueError(f"DepthPrediction: depth must be (H, W), got {d.shape}")
        object.__setattr__(self, "depth", np.where(np.isfinite(d) & (d > 0), d, np.float32(0)).astype(np.float32))


@dataclass(frozen=True)
class FocalEstimate:
    """A focal length estimated from the image alone (no EXIF, no user value): its horizontal FOV and focal.

    ``method`` names how (``"depth-pro"``: Depth Pro's field-of-view head), recorded as the photo's
    ``intrinsics_source`` ``"estimated:<method>"``; ``model`` is the checkpoint.
    """

    hfov_deg: float
    focal_length_px: float
    method: str
    model: str

    def __post_init__(self) -> None:
        for name in ("hfov_deg", "focal_length_px"):
            value = float(getattr(self, name))
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"FocalEstimate: {name} must be a finite number > 0, got {value}")
        if not self.hfov_deg < 180.0:
            raise ValueError(f"FocalEstimate: hfov_deg must be below 180 degrees, got {self.hfov_deg}")
