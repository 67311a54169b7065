"""Affordance heatmaps for users: images + free-text actions -> probability maps at the image's size.

    predictor = AffordancePredictor.from_checkpoint("runs/refcoco/final", device="auto")
    maps = predictor.predict([image], ["pour", "cut with"])   # maps[0]: (2, H, W) float32 in [0, 1]

Images are letterboxed to the model's square input (aspect kept), normalised with CLIP's mean and
standard deviation, run in batches, and the maps are mapped back to each image's own size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from spatialforge._device import resolve_device as _resolve_device
from spatialforge._optional import require
from spatialforge.afford.prompts import expand_prompts
from spatialforge.afford.transforms import Letterbox, letterbox, unletterbox

__all__ = ["CLIP_MEAN", "CLIP_STD", "AffordancePredictor", "preprocess", "resolve_device"]

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def resolve_device(device: str) -> str:
    """``auto`` -> cuda, else mps, else cpu (see :func:`spatialforge._device.resolve_device`)."""
    return _resolve_device(device, extra="afford")


def to_rgb_array(image: Any, index: int = 0) -> np.ndarray:
    """PIL image or array -> (H, W, 3) uint8 (gray and RGBA converted)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"image {index}: expected uint8 pixels, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 1:
        raise ValueError(f"image {index}: expected an (H, W, 3) RGB array, got shape {arr.shape}")
    return arr


def preprocess(images: Sequence[np.ndarray], size: int) -> tuple[np.ndarray, list[Letterbox]]:
    """Letterbox and normalise: (N, 3, size, size) float32 and the letterbox of each image."""
    out = np.empty((len(images), 3, size, size), np.float32)
    boxes = []
    for i, img in enumerate(images):
        square, box = letterbox(to_rgb_array(img, i), size)
        out[i] = ((square.astype(np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)
        boxes.append(box)
    return out, boxes


class AffordancePredictor:
    """Wraps a trained :class:`~spatialforge.afford.model.AffordanceCLIP` for batched inference."""

    def __init__(self, model: Any, device: str = "cpu", batch_size: int = 8) -> None:
        self.model = model.eval()
        self.device = device
        self.batch_size = batch_size
        self._text_cache: dict[tuple[str, ...], Any] = {}

    @classmethod
    def from_checkpoint(cls, checkpoint: str, device: str = "auto", batch_size: int = 8, **clip_override: Any
                        ) -> AffordancePredictor:
        from spatialforge.afford.checkpoint import load_checkpoint

        dev = resolve_device(device)
        return cls(load_checkpoint(checkpoint, device=dev, **clip_override), dev, batch_size)

    def prompt_embeddings(self, actions: Sequence[str], templates: str | Sequence[str] | None = None) -> Any:
        """(P, D) embeddings of the actions through the templates (an ensemble when several)."""
        texts = expand_prompts(actions, templates if templates is not None else self.model.config.templates)
        key = tuple("\x1f".join(t) for t in texts)
        if key not in self._text_cache:
            self._text_cache[key] = self.model.clip.prompt_features(texts)
        return self._text_cache[key]

    def predict(self, images: Sequence[Any], actions: Sequence[str], templates: str | Sequence[str] | None = None,
                *, logits: bool = False) -> list[np.ndarray]:
        """For every image, a (P, H, W) float32 map per action: probabilities (or raw logits)."""
        if isinstance(actions, str):
            actions = [actions]
        if not actions:
            from spatialforge.errors import ConfigError

            raise ConfigError("no prompt given")
        text = self.prompt_embeddings(actions, templates)
        return self._run(images, lambda n, start: text[None].expand(n, -1, -1), logits)

    def predict_each(self, images: Sequence[Any], actions: Sequence[str], templates: str | Sequence[str] | None = None,
                     *, logits: bool = False) -> list[np.ndarray]:
        """One action per image (e.g. an AGD20K test item's affordance): a (H, W) map per image."""
        if len(images) != len(actions):
            raise ValueError(f"{len(images)} images but {len(actions)} actions (one per image)")
        unique = sorted(set(actions))
        text = self.prompt_embeddings(unique, templates)
        index = [unique.index(a) for a in actions]
        torch = require("torch", extra="afford")
        maps = self._run(images, lambda n, start: text[torch.tensor(index[start:start + n])][:, None, :], logits)
        return [m[0] for m in maps]

    def _run(self, images: Sequence[Any], text_for: Any, logits: bool) -> list[np.ndarray]:
        torch = require("torch", extra="afford")
        size = self.model.config.image_size
        out: list[np.ndarray] = []
        for s in range(0, len(images), self.batch_size):
            batch, boxes = preprocess(images[s:s + self.batch_size], size)
            x = torch.from_numpy(batch).to(self.device)
            with torch.no_grad():
                pix = self.model.pixel_embeddings(x)
                y = self.model.logits_from_embeddings(pix, text_for(len(x), s), size=(size, size))
                if not logits:
                    y = torch.sigmoid(y)
            y = y.float().cpu().numpy()
            for i, box in enumerate(boxes):
                out.append(np.stack([unletterbox(y[i, p], box) for p in range(y.shape[1])]).astype(np.float32))
        return out
