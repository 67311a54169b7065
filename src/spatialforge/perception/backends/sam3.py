"""Text-prompted detection and segmentation in one model with SAM 3 (``Sam3Detector`` + ``Sam3Masks``).

SAM 3 (``transformers.Sam3Model``, default ``facebook/sam3``; transformers >= 5.0) finds **every
instance** of a noun phrase in an image and gives each one a box, a score and a mask from the
same query. So one backend serves two stages of the photo pipeline:

* the **detector** ``sam3`` (:class:`Sam3Detector`) takes each photo's prompts, as the other
  detectors do, and returns for every instance its pixel-xyxy box, its score and its label (the
  prompt), plus the instance's mask (:meth:`Sam3Detector.detect_and_segment`);
* the **segmenter** ``sam3`` (:class:`Sam3Masks`) loads no model: it hands the pipeline the masks
  the detector found with the boxes that survived the detection filters (NMS, sizes, the object
  cap). A perception config with the ``sam3`` detector must use the ``sam3`` segmenter and the
  other way round (see :class:`~spatialforge.perception.config.PerceptionConfig`), so no second
  segmentation model is ever loaded.

How a call runs:

* each image's prompts are normalised for counting repeats (lower case, whitespace collapsed);
  phrases equal after that count once (the first spelling is the label). A phrase may hold at
  most 32 tokens with the start and end tokens (the processor pads every phrase to 32); a longer
  one is a ``ValueError`` naming it;
* images are batched (``batch_size`` per vision-encoder forward): the image embedding
  (``get_vision_features``) is computed **once per image**, and the text embedding
  (``get_text_features``) once per distinct phrase of the batch;
* SAM 3 reads one phrase per forward, so every (image, phrase) pair is one row of the DETR
  encoder / decoder and mask decoder; rows of any images and phrases are batched together,
  ``prompt_batch_size`` per forward, each reusing its image's embedding. Images are resized to
  the model's square input (1008 px for the released checkpoint) and phrases padded to 32
  tokens, so every row is computed alone: results do not depend on the batching;
* per query, the score is ``sigmoid(logit) * sigmoid(presence logit)`` and a query is kept when
  its score is above ``score_threshold`` (strictly, as the processor's
  ``post_process_instance_segmentation``); boxes are scaled to the original image and clipped
  to it; per image, the ``max_instances`` best scores over all its phrases are kept (best
  first; equal scores keep prompt order, then query order);
* masks stay at the model's mask resolution (288 x 288 for the released checkpoint) as
  probabilities until asked for: :meth:`Sam3Instances.masks` resizes them to the original image
  (bilinear, as the processor does) and keeps the pixels above ``mask_threshold``. The pipeline
  asks only for the detections that survive its filters, so a photo never holds hundreds of
  full-size masks.

The model and ``Sam3Processor`` load lazily, on the first call or ``load()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from spatialforge.errors import ConfigError
from spatialforge.perception.backends.base import HFStage, check_options, image_list, prompt_lists
from spatialforge.perception.boxes import clip_boxes
from spatialforge.perception.checks import check_number, count, positive_int
from spatialforge.perception.types import Detections, MaskSet

__all__ = ["DEFAULT_MODEL_ID", "MIN_TRANSFORMERS", "Sam3Detector", "Sam3Instances", "Sam3Masks"]

DEFAULT_MODEL_ID = "facebook/sam3"
MIN_TRANSFORMERS = "5.0"  # the first release with Sam3Model / Sam3Processor
TEXT_TOKENS = 32  # Sam3Processor pads (and the released text encoder reads) 32 tokens per phrase

_UPSCALE_CHUNK = 8  # masks resized to the original size at once (bounds the float intermediate)
_PROBABILITY = " (a probability)"


def _unique_phrases(prompts: list[str], index: int) -> list[tuple[str, str]]:
    """(label, phrase) pairs; phrases equal up to case and whitespace count once (the first label wins)."""
    seen: dict[str, tuple[str, str]] = {}
    for p in prompts:
        phrase = " ".join(p.split())
        if not phrase:
            raise ValueError(f"prompts[{index}]: phrase {p!r} has no text")
        seen.setdefault(phrase.lower(), (p, phrase))
    return list(seen.values())


@dataclass(frozen=True, eq=False)
class Sam3Instances:
    """What SAM 3 found in one image: the detections and one mask probability map per detection.

    ``probabilities`` holds each instance's mask probabilities at the model's mask resolution;
    :meth:`masks` resizes them to the image (``image_size`` is ``(height, width)``) and keeps the
    pixels above ``mask_threshold``. :meth:`select` keeps some detections with their masks.
    """

    detections: Detections
    probabilities: np.ndarray  # (N, h, w) float32 in [0, 1]
    image_size: tuple[int, int]
    mask_threshold: float

    def __post_init__(self) -> None:
        probs = np.asarray(self.probabilities, dtype=np.float32)
        if probs.ndim != 3 or len(probs) != len(self.detections):
            raise ValueError(f"Sam3Instances: {count(len(self.detections), 'detection')} but mask probabilities of "
                             f"shape {probs.shape}")
        object.__setattr__(self, "probabilities", probs)

    def __len__(self) -> int:
        return len(self.detections)

    def select(self, index: np.ndarray | list[int]) -> Sam3Instances:
        """The detections at ``index`` (in that order) with their masks."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        return Sam3Instances(self.detections.select(idx), self.probabilities[idx], self.image_size,
                             self.mask_threshold)

    def masks(self) -> MaskSet:
        """One boolean mask per detection at the image's size; the mask scores are the detection scores."""
        from spatialforge._optional import require

        torch = require("torch", extra="models", feature="SAM 3 masks")
        height, width = self.image_size
        out = np.zeros((len(self), height, width), dtype=bool)
        for c0 in range(0, len(self), _UPSCALE_CHUNK):
            probs = torch.from_numpy(self.probabilities[c0:c0 + _UPSCALE_CHUNK])
            big = torch.nn.functional.interpolate(probs[None], size=(height, width), mode="bilinear",
                                                  align_corners=False)[0]
            out[c0:c0 + len(probs)] = (big > self.mask_threshold).numpy()
        return MaskSet(out, self.detections.scores)


class _Found:
    """The kept queries of one image while a call runs (best ``limit`` scores; ties: arrival order)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.scores: list[np.ndarray] = []
        self.boxes: list[np.ndarray] = []
        self.labels: list[str] = []
        self.probs: list[np.ndarray] = []

    def add(self, scores: np.ndarray, boxes: np.ndarray, label: str, probs: np.ndarray) -> None:
        self.scores.append(scores)
        self.boxes.append(boxes)
        self.labels += [label] * len(scores)
        self.probs.append(probs)
        if len(self.labels) > 2 * self.limit:  # bound the memory while the image's phrases run
            self._prune()

    def _prune(self) -> None:
        scores = np.concatenate(self.scores) if self.scores else np.zeros(0, np.float32)
        order = np.argsort(-scores, kind="stable")[: self.limit]
        boxes = np.concatenate(self.boxes).reshape(-1, 4) if self.boxes else np.zeros((0, 4), np.float32)
        probs = np.concatenate(self.probs) if self.probs else None
        self.scores, self.boxes = [scores[order]], [boxes[order]]
        self.labels = [self.labels[i] for i in order]
        self.probs = [probs[order]] if probs is not None else []

    def result(self, size: tuple[int, int], mask_shape: tuple[int, int], mask_threshold: float) -> Sam3Instances:
        self._prune()
        if not self.labels:
            return Sam3Instances(Detections.empty(), np.zeros((0, *mask_shape), np.float32), size, mask_threshold)
        det = Detections(self.boxes[0].astype(np.float32), self.scores[0].astype(np.float32), tuple(self.labels))
        return Sam3Instances(det, self.probs[0], size, mask_threshold)


class Sam3Detector(HFStage):
    """SAM 3: every instance of each prompt phrase, with its box, score and mask (see the module docstring).

    Options: ``score_threshold`` (default 0.5: keep instances whose score is above it),
    ``mask_threshold`` (default 0.5: a pixel is inside when its mask probability is above it),
    ``max_instances`` (default 100: the most instances kept per image, best scores first, before
    the pipeline's NMS and object cap), ``batch_size`` (images per vision-encoder forward, default
    4), ``prompt_batch_size`` (image-phrase rows per detector and mask-decoder forward, default 8).
    """

    name = "sam3"
    kind = "detector"
    default_model_id = DEFAULT_MODEL_ID
    TUNING_OPTIONS: ClassVar[frozenset[str]] = frozenset({"batch_size", "prompt_batch_size"})

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32", *,
                 score_threshold: float = 0.5, mask_threshold: float = 0.5, max_instances: int = 100,
                 batch_size: int = 4, prompt_batch_size: int = 8, **options: Any) -> None:
        super().__init__(model_id=model_id, device=device, dtype=dtype, **options)
        self.score_threshold = check_number(score_threshold, "score_threshold", low=0.0, high=1.0, note=_PROBABILITY)
        self.mask_threshold = check_number(mask_threshold, "mask_threshold", low=0.0, high=1.0, note=_PROBABILITY)
        self.max_instances = positive_int(max_instances, "max_instances")
        self.batch_size = positive_int(batch_size, "batch_size")
        self.prompt_batch_size = positive_int(prompt_batch_size, "prompt_batch_size")

    # -- lifecycle
    def _load(self) -> tuple[Any, Any]:
        tf = self.transformers
        model_cls, processor_cls = getattr(tf, "Sam3Model", None), getattr(tf, "Sam3Processor", None)
        if model_cls is None or processor_cls is None:
            raise ConfigError(f"the sam3 detector needs transformers >= {MIN_TRANSFORMERS} (Sam3Model), but "
                              f"transformers {getattr(tf, '__version__', '?')} is installed: "
                              f"pip install -U 'transformers>={MIN_TRANSFORMERS}'")
        model = self._from_pretrained(model_cls)
        processor = processor_cls.from_pretrained(self.model_id)
        return model, processor

    # -- Detector
    def __call__(self, images: Sequence[np.ndarray], prompts: Sequence[Sequence[str]]) -> list[Detections]:
        """One raw :class:`Detections` per image for its prompts (labels are the prompts); masks are dropped."""
        return [found.detections for found in self.detect_and_segment(images, prompts)]

    def detect_and_segment(self, images: Sequence[np.ndarray],
                           prompts: Sequence[Sequence[str]]) -> list[Sam3Instances]:
        """Every instance of every prompt of every image: one :class:`Sam3Instances` per image.

        Raises:
            ValueError: bad images or prompts (an empty phrase, a phrase over 32 tokens, one
                prompt list per image).
        """
        imgs = image_list(images)
        pairs = [_unique_phrases(p, i) for i, p in enumerate(prompt_lists(prompts, len(imgs)))]
        sizes = [(int(img.shape[0]), int(img.shape[1])) for img in imgs]
        found = [_Found(self.max_instances) for _ in imgs]
        todo = [i for i, p in enumerate(pairs) if p]
        if todo:
            self.load()
            self._check_lengths(pairs)
        mask_shape: tuple[int, int] = (0, 0)
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start:start + self.batch_size]
            mask_shape = self._detect([imgs[i] for i in batch], [pairs[i] for i in batch],
                                      [found[i] for i in batch])
        return [f.result(size, mask_shape, self.mask_threshold) for f, size in zip(found, sizes, strict=True)]

    def _check_lengths(self, pairs: list[list[tuple[str, str]]]) -> None:
        limit = min(TEXT_TOKENS, int(getattr(self.model.config.text_config, "max_position_embeddings", TEXT_TOKENS)))
        phrases = list(dict.fromkeys(ph for p in pairs for _, ph in p))
        lengths = [len(ids) for ids in self.processor.tokenizer(phrases)["input_ids"]]
        for phrase, n in zip(phrases, lengths, strict=True):
            if n > limit:
                index = next(i for i, p in enumerate(pairs) if any(ph == phrase for _, ph in p))
                raise ValueError(f"prompts[{index}]: phrase {phrase!r} is {count(n, 'token')} with the start and end "
                                 f"tokens; SAM 3 reads at most {limit}")

    def _detect(self, images: list[np.ndarray], pairs: list[list[tuple[str, str]]],
                found: list[_Found]) -> tuple[int, int]:
        """One vision forward for ``images``, one text forward for their phrases, decoder forwards per row chunk."""
        torch = self.torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling  # how Sam3Model takes text embeddings

        enc = self.processor(images=images, return_tensors="pt", input_data_format="channels_last")
        phrases = list(dict.fromkeys(ph for p in pairs for _, ph in p))
        text = self.processor(text=phrases, return_tensors="pt")
        rows = [(b, label, phrases.index(ph)) for b, p in enumerate(pairs) for label, ph in p]
        mask_shape = (0, 0)
        with torch.inference_mode():
            vision = self.model.get_vision_features(pixel_values=enc["pixel_values"].to(self.device, dtype=self.dtype))
            words = self.model.get_text_features(input_ids=text["input_ids"].to(self.device),
                                                 attention_mask=text["attention_mask"].to(self.device))
            for c0 in range(0, len(rows), self.prompt_batch_size):
                chunk = rows[c0:c0 + self.prompt_batch_size]
                img_idx = torch.tensor([b for b, _, _ in chunk], device=self.device)
                txt_idx = torch.tensor([t for _, _, t in chunk], device=self.device)
                pooled = BaseModelOutputWithPooling(pooler_output=words.pooler_output.index_select(0, txt_idx))
                out = self.model(vision_embeds=_rows(vision, img_idx, len(images)), text_embeds=pooled,
                                 attention_mask=text["attention_mask"].to(self.device)[txt_idx])
                scores = (out.pred_logits.float().sigmoid() * out.presence_logits.float().sigmoid()).cpu().numpy()
                boxes = out.pred_boxes.float().cpu().numpy()  # normalised xyxy
                logits = out.pred_masks  # (rows, queries, h, w) mask logits at the model's mask resolution
                mask_shape = (int(logits.shape[-2]), int(logits.shape[-1]))
                for r, (b, label, _) in enumerate(chunk):
                    keep = np.nonzero(scores[r] > self.score_threshold)[0]
                    h, w = images[b].shape[:2]
                    scaled = boxes[r, keep] * np.array([w, h, w, h], np.float32)
                    probs = logits[r, torch.from_numpy(keep).to(logits.device)].float().sigmoid()  # kept queries only
                    found[b].add(scores[r, keep], clip_boxes(scaled, w, h).astype(np.float32), label,
                                 probs.cpu().numpy())
        return mask_shape


def _rows(output: Any, index: Any, batch: int) -> Any:
    """A copy of a model output whose per-row tensors (first dimension ``batch``) are taken at ``index``."""
    def take(value: Any) -> Any:
        if hasattr(value, "index_select") and value.dim() > 0 and value.shape[0] == batch:
            return value.index_select(0, index)
        if isinstance(value, tuple):
            return tuple(take(v) for v in value)
        return value

    return type(output)(**{k: take(v) for k, v in output.items()})


class Sam3Masks:
    """The ``sam3`` segmenter: the masks the ``sam3`` detector found, for the boxes the pipeline kept.

    It loads no model of its own (``model_id`` is the detector's, recorded as provenance) and
    takes no options; the pipeline calls it with the images and, per image, the
    :class:`Sam3Instances` it kept, and it returns their masks at each image's size.
    """

    name = "sam3"
    kind = "segmenter"
    from_detector = True  # the pipeline hands it the detector's instances instead of boxes

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32",
                 **options: Any) -> None:
        check_options(self.name, self.kind, options, ())
        self.model_id = model_id or DEFAULT_MODEL_ID

    def load(self) -> None:
        return None

    def unload(self) -> None:
        return None

    def __call__(self, images: Sequence[np.ndarray], instances: Sequence[Sam3Instances]) -> list[MaskSet]:
        """One :class:`MaskSet` per image: a mask per kept detection, at the image's size."""
        if len(instances) != len(images):
            raise ValueError(f"{count(len(images), 'image')} but {count(len(instances), 'instance set')}")
        out = []
        for i, (img, found) in enumerate(zip(images, instances, strict=True)):
            if not isinstance(found, Sam3Instances):
                raise ValueError(f"image {i}: the sam3 segmenter takes what the sam3 detector found (Sam3Instances), "
                                 f"not {type(found).__name__}: it cannot segment boxes")
            if tuple(found.image_size) != tuple(np.asarray(img).shape[:2]):
                raise ValueError(f"image {i}: its instances were found on a {found.image_size[1]}x"
                                 f"{found.image_size[0]} image, not this {img.shape[1]}x{img.shape[0]} one")
            out.append(found.masks())
        return out
