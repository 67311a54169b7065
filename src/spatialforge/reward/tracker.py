"""A video tracker for the reward engine: SAM 2 video (``Sam2VideoTracker``) on the frames in memory.

:meth:`Sam2VideoTracker.track` takes the episode's frames (RGB arrays, no files), each thing's box on the
frame where the detector found both things (``start_index``), and returns, per thing, one
:class:`TrackedMask` (a boolean mask at the frame's size and the tracker's object score) or None per frame:
None before ``start_index`` (not tracked there) and where the tracker lost the thing (its object score,
``sigmoid(object_score_logits)``, below ``object_threshold``, or an empty mask).

**Streaming and memory.** The frames go through one ``Sam2VideoInferenceSession`` of transformers one at a time
(the session's streaming mode): each frame is preprocessed when it is reached (one image-encoder forward per
frame, then per thing one memory-attention + mask-decoder pass and the memory encoder), and what the model no
longer reads is dropped from the session as it goes: the preprocessed pixels of past frames and the memories of
frames older than the model's window (``max(num_maskmem, max_object_pointers_in_encoder)`` frames: 16 for the
released checkpoints). So the session's memory is bounded whatever the episode's length; what grows with the
episode is the returned masks, ``H x W`` bytes per thing per frame (about 600 MB for 1,000 frames of 640 x 480
with two things). Time: about one SAM 2 image-encoder forward per frame (hiera-large at 1024 px: tens of
milliseconds on a current GPU, seconds on a CPU).

The model loads lazily (``load()`` or the first ``track``); the constructor only stores settings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spatialforge.errors import ConfigError, SpatialForgeError
from spatialforge.perception.backends.base import HFStage, as_rgb

__all__ = ["TRACKERS", "Sam2VideoTracker", "TrackedMask", "build_tracker"]

#: Tracker backends of ``spatialforge reward --tracker`` (``none``: per-frame detection).
TRACKERS = ("none", "sam2")


@dataclass(frozen=True)
class TrackedMask:
    """One thing in one frame as the tracker sees it: ``mask`` (H, W) bool and ``score`` (object score, 0..1)."""

    mask: np.ndarray
    score: float


class Sam2VideoTracker(HFStage):
    """SAM 2 video tracking (``transformers.Sam2VideoModel`` + ``Sam2VideoProcessor``), box-prompted.

    Options: ``object_threshold`` (a thing whose object score, a probability, is below it counts as lost in that
    frame; default 0.5, SAM 2's own "object present" cut, a logit of 0) and ``mask_threshold`` (the logit above
    which a pixel is inside the mask; default 0.0).
    """

    name = "sam2"
    kind = "tracker"
    default_model_id = "facebook/sam2.1-hiera-large"

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32", *,
                 object_threshold: float = 0.5, mask_threshold: float = 0.0, **options: Any) -> None:
        super().__init__(model_id=model_id, device=device, dtype=dtype, **options)
        for name, value, lo, hi in (("object_threshold", object_threshold, 0.0, 1.0),
                                    ("mask_threshold", mask_threshold, -math.inf, math.inf)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                    or not lo <= value <= hi:
                rng = "from 0 to 1" if hi == 1.0 else "finite"
                raise ConfigError(f"the sam2 tracker: {name} must be a number {rng}, got {value!r}")
        self.object_threshold = float(object_threshold)
        self.mask_threshold = float(mask_threshold)

    def _load(self) -> tuple[Any, Any]:
        tf = self.transformers
        model = self._from_pretrained(tf.Sam2VideoModel)
        processor = tf.Sam2VideoProcessor.from_pretrained(self.model_id)
        return model, processor

    def _window(self) -> int:
        cfg = self.model.config
        return max(int(getattr(cfg, "num_maskmem", 7)), int(getattr(cfg, "max_object_pointers_in_encoder", 16))) + 1

    def track(self, frames: Sequence[np.ndarray], first_boxes: Mapping[str, Any], start_index: int = 0
              ) -> dict[str, list[TrackedMask | None]]:
        """Track each named thing from its box on ``frames[start_index]`` to the episode's end.

        Args:
            frames: the episode's RGB frames (H, W, 3) uint8, all of one size, in time order.
            first_boxes: per thing, its pixel xyxy box on ``frames[start_index]``.
            start_index: the frame the boxes belong to (earlier frames are not tracked: None).

        Returns:
            Per thing (the keys of ``first_boxes``), one entry per frame: a :class:`TrackedMask`, or None before
            ``start_index`` and where the tracker lost the thing.

        Raises:
            ValueError: bad frames, boxes or start index.
        """
        if not frames:
            raise ValueError("track: no frames")
        if isinstance(start_index, bool) or not isinstance(start_index, int) or not 0 <= start_index < len(frames):
            raise ValueError(f"track: start_index must be an integer from 0 to {len(frames) - 1}, got {start_index!r}")
        if not first_boxes:
            raise ValueError("track: first_boxes names no thing")
        names = list(first_boxes)
        h, w = np.asarray(frames[start_index]).shape[:2]
        boxes = []
        for name in names:
            box = np.asarray(first_boxes[name], dtype=np.float64).reshape(-1)
            if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
                raise ValueError(f"track: the box of {name!r} must be a pixel xyxy box with x0 < x1, y0 < y1, "
                                 f"got {first_boxes[name]!r}")
            boxes.append([float(np.clip(box[0], 0, w)), float(np.clip(box[1], 0, h)),
                          float(np.clip(box[2], 0, w)), float(np.clip(box[3], 0, h))])
        self.load()
        torch = self.torch
        out: dict[str, list[TrackedMask | None]] = {name: [None] * len(frames) for name in names}
        session = self.processor.init_video_session(inference_device=self.device, dtype=self.dtype)
        window = self._window()
        obj_ids = list(range(1, len(names) + 1))
        with torch.inference_mode():
            for i in range(start_index, len(frames)):
                image = as_rgb(frames[i], i)
                if not image.flags.writeable:  # torch warns on read-only arrays (the Frame images are)
                    image = image.copy()
                if image.shape[:2] != (h, w):
                    raise ValueError(f"track: frame {i} is {image.shape[1]}x{image.shape[0]}, the others {w}x{h}")
                inputs = self.processor(images=image, return_tensors="pt")
                if i == start_index:
                    self.processor.add_inputs_to_inference_session(
                        session, frame_idx=i, obj_ids=list(obj_ids), input_boxes=[boxes], original_size=(h, w))
                result = self.model(inference_session=session, frame_idx=i,
                                    frame=inputs["pixel_values"][0].to(self.device, dtype=self.dtype))
                masks = self.processor.post_process_masks(
                    [result.pred_masks.float().cpu()], original_sizes=[[h, w]], mask_threshold=self.mask_threshold,
                    binarize=True)[0][:, 0].numpy()
                scores = torch.sigmoid(result.object_score_logits.float().reshape(-1)).cpu().numpy()
                for obj_id, mask, score in zip(result.object_ids, masks, scores, strict=True):
                    name = names[obj_ids.index(obj_id)]
                    if float(score) >= self.object_threshold and mask.any():
                        out[name][i] = TrackedMask(mask.astype(bool, copy=False), float(score))
                self._forget(session, i, window)
        return out

    @staticmethod
    def _forget(session: Any, frame_idx: int, window: int) -> None:
        """Drop what the model reads no more: past frames' pixels, memories older than its window."""
        session.processed_frames.pop(frame_idx, None)
        old = frame_idx - window
        for outputs in session.output_dict_per_obj.values():
            for t in [t for t in outputs["non_cond_frame_outputs"] if t <= old]:
                del outputs["non_cond_frame_outputs"][t]


def build_tracker(name: str, model_id: str | None = None, *, device: str = "cpu", dtype: str = "float32") -> Any:
    """The tracker ``name`` (``none``: None; ``sam2``: :class:`Sam2VideoTracker`), built, not loaded."""
    if name == "none":
        if model_id is not None:
            raise ConfigError("--tracker-model: --tracker none loads no model (give --tracker sam2)")
        return None
    if name == "sam2":
        return Sam2VideoTracker(model_id, device=device, dtype=dtype)
    raise SpatialForgeError(f"unknown tracker {name!r} (known: {', '.join(TRACKERS)})")
