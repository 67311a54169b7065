"""Numpy-only backends that ship with the library: pass-through choices and test doubles.

``KeepAllFilter`` keeps every image and prompts the detector with the whole vocabulary (which a
perception config allows only when the vocabulary has at most ``tags_per_image`` tags: the tags a
CLIP tagger would pick then too); ``LabelCaptioner`` uses the detector's prompt label as the
caption; ``BoxSegmenter`` fills each box; ``NoTextEmbedder`` disables CLIP caption comparison
(captions that collide by the QA engine's word rules are still grouped). These take no options
and load no model. ``GivenDetector`` and ``GivenDepth`` return what a callable gives them, for
tests and for users who bring their own detections or depth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from spatialforge.perception.backends.base import check_options
from spatialforge.perception.boxes import clip_boxes
from spatialforge.perception.checks import count
from spatialforge.perception.types import DepthPrediction, Detections, FilterDecision, MaskSet

__all__ = ["BoxSegmenter", "GivenDepth", "GivenDetector", "KeepAllFilter", "LabelCaptioner", "NoTextEmbedder"]


class _NoModel:
    name = "none"
    kind = "stage"
    model_id = "none"

    def __init__(self, **options: object) -> None:
        check_options(self.name, self.kind, options, ())

    def load(self) -> None:
        return None

    def unload(self) -> None:
        return None


class KeepAllFilter(_NoModel):
    name = "none"
    kind = "filter"

    def __call__(self, images: Sequence[np.ndarray]) -> list[FilterDecision]:
        return [FilterDecision(True, "unfiltered", {}, "none") for _ in images]

    def tags(self, images: Sequence[np.ndarray], vocabulary: Sequence[str], top_k: int) -> list[list[str]]:
        """The whole vocabulary for every image; ``ValueError`` when it holds more than ``top_k`` tags
        (without a tagger there is no way to pick, and the detector must not get every tag silently)."""
        vocab = list(dict.fromkeys(vocabulary))
        if len(vocab) > top_k:
            raise ValueError(f"no tagger: the vocabulary has {count(len(vocab), 'tag')}, more than the "
                             f"{count(top_k, 'tag')} per image a detector is given")
        return [list(vocab) for _ in images]


class NoTextEmbedder(_NoModel):
    name = "none"
    kind = "embedder"

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        return np.zeros((len(texts), 0), np.float32)


class LabelCaptioner(_NoModel):
    name = "label"
    kind = "captioner"

    def __call__(self, images: Sequence[np.ndarray], detections: Sequence[Detections]) -> list[tuple[str, ...]]:
        return [tuple(d.labels) for d in detections]


class BoxSegmenter(_NoModel):
    name = "box"
    kind = "segmenter"

    def __call__(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[MaskSet]:
        out = []
        for img, b in zip(images, boxes, strict=True):
            h, w = img.shape[:2]
            masks = np.zeros((len(b), h, w), dtype=bool)
            for i, (x0, y0, x1, y1) in enumerate(clip_boxes(np.asarray(b).reshape(-1, 4), w, h)):
                masks[i, int(np.floor(y0)):int(np.ceil(y1)), int(np.floor(x0)):int(np.ceil(x1))] = True
            out.append(MaskSet(masks, np.ones(len(b), np.float32)))
        return out


class GivenDetector(_NoModel):
    """Detections from ``fn(image_index_in_call, image, prompts) -> Detections``."""

    name = "given"
    kind = "detector"

    def __init__(self, fn: Callable[[np.ndarray, Sequence[str]], Detections]) -> None:
        self.fn = fn

    def __call__(self, images: Sequence[np.ndarray], prompts: Sequence[Sequence[str]]) -> list[Detections]:
        return [self.fn(img, p) for img, p in zip(images, prompts, strict=True)]


class GivenDepth(_NoModel):
    """Depth from ``fn(image) -> (depth, hfov_deg | None)``."""

    name = "given"
    kind = "depth"

    def __init__(self, fn: Callable[[np.ndarray], tuple[np.ndarray, float | None]], model_id: str = "given") -> None:
        self.fn = fn
        self.model_id = model_id

    def __call__(self, images: Sequence[np.ndarray],
                 focal_lengths_px: Sequence[float | None] | None = None) -> list[DepthPrediction]:
        out = []
        for img in images:  # the given depth is already metric: a known focal length changes nothing
            depth, hfov = self.fn(img)
            out.append(DepthPrediction(depth=depth, model=self.model_id, hfov_deg=hfov))
        return out
