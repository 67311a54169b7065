"""Box-prompted segmentation with SAM (``SamSegmenter``) and SAM 2 (``Sam2Segmenter``).

Both stages take RGB images and, per image, the pixel-xyxy boxes of its detections, and return one
:class:`~spatialforge.perception.types.MaskSet` per image: one boolean mask per box at the image's
original size and, as its score, the model's predicted IoU for that mask.

How a call runs:

* all boxes of an image go into the model as one prompt batch (``input_boxes``), with
  ``multimask_output=False`` (one mask per box); the image embedding is computed once per image
  (``get_image_embeddings``) and reused for every box, in decoder calls of at most
  ``box_batch_size`` boxes per image;
* images are batched (``batch_size`` per image-encoder forward). Images of one batch with fewer
  boxes than the others are **padded** by repeating their last box; the mask decoder treats every
  box independently, so padding changes no real box's mask, and the padded outputs are discarded;
* images without boxes skip the model and get an empty ``MaskSet`` of shape ``(0, H, W)``;
* the low-resolution mask logits are upscaled to the original image size by the processor's own
  ``post_process_masks`` and binarised at ``mask_threshold`` (logits; default 0.0).

Boxes are clipped to the image (``0 <= x <= W``, ``0 <= y <= H``) before prompting. SAM's IoU head
has no sigmoid, so its scores may fall slightly outside [0, 1]; SAM 2's scores are in [0, 1].

``SamSegmenter`` loads ``transformers.SamModel`` + ``SamProcessor`` (default
``facebook/sam-vit-huge``), ``Sam2Segmenter`` loads ``Sam2Model`` + ``Sam2Processor`` (default
``facebook/sam2.1-hiera-large``), lazily, on the first call or ``load()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from spatialforge.perception.backends.base import HFStage, image_list
from spatialforge.perception.boxes import clip_boxes
from spatialforge.perception.checks import check_number, count, positive_int
from spatialforge.perception.types import MaskSet

__all__ = ["Sam2Segmenter", "SamSegmenter"]

_POSTPROCESS_CHUNK = 8  # masks upscaled to the original size at once (bounds the float intermediate)


# ----------------------------------------------------------------------------- validation helpers
def _box_array(boxes: Any, index: int, height: int, width: int) -> np.ndarray:
    """(N, 4) float64 pixel xyxy boxes of image ``index``, validated and clipped to the image."""
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"boxes of image {index}: expected an (N, 4) array of numbers ({exc})") from None
    if arr.size == 0:
        return np.zeros((0, 4), np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes of image {index}: expected an (N, 4) pixel xyxy array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"boxes of image {index}: coordinates must be finite")
    if np.any(arr[:, 2] < arr[:, 0]) or np.any(arr[:, 3] < arr[:, 1]):
        raise ValueError(f"boxes of image {index}: boxes must be x0 <= x1 and y0 <= y1 (pixel xyxy)")
    return clip_boxes(arr, width, height)


# ----------------------------------------------------------------------------- the stages
class _SamFamilySegmenter(HFStage):
    """Shared box-prompted inference of SAM and SAM 2 (subclasses name the classes and post-processing)."""

    kind = "segmenter"
    model_class_name: str = ""
    processor_class_name: str = ""
    TUNING_OPTIONS: ClassVar[frozenset[str]] = frozenset({"batch_size", "box_batch_size"})

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32", *,
                 batch_size: int = 4, box_batch_size: int = 64, mask_threshold: float = 0.0,
                 **options: Any) -> None:
        """Store settings only (nothing is loaded here).

        Args:
            model_id: hub id or local folder (default: the class's ``default_model_id``).
            device: ``auto``, ``cpu``, ``cuda[:N]`` or ``mps``.
            dtype: ``float32``, ``float16`` or ``bfloat16`` (weights and pixel values).
            batch_size: images per image-encoder forward.
            box_batch_size: boxes per image per mask-decoder call (bounds decoder memory).
            mask_threshold: the logit above which a pixel is inside the mask.
        """
        super().__init__(model_id=model_id, device=device, dtype=dtype, **options)
        self.batch_size = positive_int(batch_size, "batch_size")
        self.box_batch_size = positive_int(box_batch_size, "box_batch_size")
        self.mask_threshold = check_number(mask_threshold, "mask_threshold", note=" (a logit)")

    # -- lifecycle
    def _load(self) -> tuple[Any, Any]:
        tf = self.transformers
        model = self._from_pretrained(getattr(tf, self.model_class_name))
        processor = getattr(tf, self.processor_class_name).from_pretrained(self.model_id)
        return model, processor

    # -- model-specific post-processing
    def _upscale(self, logits: Any, encoding: Any, row: int, original_size: tuple[int, int]) -> Any:
        """Boolean (n, H, W) masks at ``original_size`` from (n, 1, h, w) float32 logits of batch row ``row``."""
        raise NotImplementedError  # pragma: no cover - abstract

    # -- Segmenter
    def __call__(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[MaskSet]:
        """One mask per box (pixel xyxy) for every image, at the image's size, with predicted-IoU scores.

        Args:
            images: RGB uint8 images (H, W, 3); gray and RGBA are converted.
            boxes: per image, an (N_i, 4) array of pixel xyxy boxes (N_i may be 0).

        Returns:
            One :class:`MaskSet` per image: masks (N_i, H, W) bool, scores (N_i,) float32.

        Raises:
            ValueError: bad images or boxes, or a different number of box arrays than images.
        """
        imgs = image_list(images)
        if isinstance(boxes, np.ndarray) or not isinstance(boxes, Sequence):
            raise ValueError("boxes must be a sequence with one (N, 4) array per image")
        if len(boxes) != len(imgs):
            raise ValueError(f"{count(len(imgs), 'image')} but {count(len(boxes), 'box array')}")
        box_list = [_box_array(b, i, img.shape[0], img.shape[1]) for i, (img, b) in enumerate(zip(imgs, boxes,
                                                                                                   strict=True))]
        results: list[MaskSet | None] = [None] * len(imgs)
        for i, (img, b) in enumerate(zip(imgs, box_list, strict=True)):
            if len(b) == 0:
                results[i] = MaskSet(np.zeros((0, *img.shape[:2]), dtype=bool), np.zeros(0, np.float32))
        todo = [i for i, b in enumerate(box_list) if len(b)]
        if todo:
            self.load()
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            for i, maskset in zip(chunk, self._segment_batch([imgs[i] for i in chunk], [box_list[i] for i in chunk]),
                                  strict=True):
                results[i] = maskset
        return [r for r in results if r is not None]

    def _segment_batch(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[MaskSet]:
        """One image-encoder forward for ``images`` (each with >= 1 box), decoder calls per box chunk."""
        torch = self.torch
        counts = [len(b) for b in boxes]
        n_max = max(counts)
        # pad every image to n_max boxes by repeating its last box (outputs of padding are dropped)
        padded = [np.concatenate([b, np.repeat(b[-1:], n_max - len(b), axis=0)]).tolist() for b in boxes]
        encoding = self.processor(images=images, input_boxes=padded, return_tensors="pt",
                                  input_data_format="channels_last")
        pixel_values = encoding["pixel_values"].to(self.device, dtype=self.dtype)
        input_boxes = encoding["input_boxes"].to(self.device, dtype=torch.float32)
        masks: list[list[np.ndarray]] = [[] for _ in images]
        scores: list[list[np.ndarray]] = [[] for _ in images]
        with torch.inference_mode():
            embeddings = self.model.get_image_embeddings(pixel_values)
            for c0 in range(0, n_max, self.box_batch_size):
                c1 = min(c0 + self.box_batch_size, n_max)
                out = self.model(image_embeddings=embeddings, input_boxes=input_boxes[:, c0:c1],
                                 multimask_output=False)
                logits = out.pred_masks  # (B, n, 1, h, w)
                iou = out.iou_scores  # (B, n, 1)
                for row, count in enumerate(counts):
                    real = min(c1, count) - c0
                    if real <= 0:
                        continue
                    size = (int(images[row].shape[0]), int(images[row].shape[1]))
                    scores[row].append(iou[row, :real, 0].float().cpu().numpy())
                    for p0 in range(0, real, _POSTPROCESS_CHUNK):
                        part = logits[row, p0:min(p0 + _POSTPROCESS_CHUNK, real)].float()
                        masks[row].append(self._upscale(part, encoding, row, size).cpu().numpy())
        return [MaskSet(np.concatenate(m, axis=0).astype(bool, copy=False), np.concatenate(s).astype(np.float32))
                for m, s in zip(masks, scores, strict=True)]


class SamSegmenter(_SamFamilySegmenter):
    """SAM (ViT image encoder): ``SamModel`` + ``SamProcessor``, default ``facebook/sam-vit-huge``.

    Options: ``batch_size`` (images per forward, default 4), ``box_batch_size`` (boxes per decoder
    call, default 64), ``mask_threshold`` (logit threshold, default 0.0).
    """

    name = "sam"
    default_model_id = "facebook/sam-vit-huge"
    model_class_name = "SamModel"
    processor_class_name = "SamProcessor"

    def _upscale(self, logits: Any, encoding: Any, row: int, original_size: tuple[int, int]) -> Any:
        # SAM pads the resized image to a square: crop the padding (reshaped size), then resize
        reshaped = [int(v) for v in encoding["reshaped_input_sizes"][row].tolist()]
        return self.processor.post_process_masks([logits], [list(original_size)], [reshaped],
                                                 mask_threshold=self.mask_threshold, binarize=True)[0][:, 0]


class Sam2Segmenter(_SamFamilySegmenter):
    """SAM 2 (Hiera image encoder): ``Sam2Model`` + ``Sam2Processor``, default ``facebook/sam2.1-hiera-large``.

    Options as :class:`SamSegmenter`.
    """

    name = "sam2"
    default_model_id = "facebook/sam2.1-hiera-large"
    model_class_name = "Sam2Model"
    processor_class_name = "Sam2Processor"

    def _upscale(self, logits: Any, encoding: Any, row: int, original_size: tuple[int, int]) -> Any:
        # SAM 2 resizes without padding: the logits map straight onto the original image
        return self.processor.post_process_masks([logits], [list(original_size)],
                                                 mask_threshold=self.mask_threshold, binarize=True)[0][:, 0]
