"""Open-vocabulary box detection with Grounding DINO (``GroundingDinoDetector``).

The stage takes RGB images and, per image, its own list of text prompts (short noun phrases such as
``"chair"`` or ``"remote control"``) and returns one raw :class:`~spatialforge.perception.types.Detections`
per image: pixel ``x0, y0, x1, y1`` boxes in the **original** image, the box score, and the prompt
that found each box (before NMS and size filters; see :func:`spatialforge.perception.boxes.filter_detections`).

How a call runs:

* each image's prompts are normalised for the model (lower case, ``.`` and ``?`` replaced by spaces
  - they are Grounding DINO's phrase delimiters - and whitespace collapsed), duplicates after
  normalisation count once (the first spelling is the label), and joined into one caption
  ``"a cat. a remote control."`` (every phrase ends with a period, as the model was trained);
* the caption may hold at most ``min(config.max_text_len, tokenizer.model_max_length)`` tokens
  (256 for the released checkpoints) including ``[CLS]`` and ``[SEP]``; longer prompt lists are
  split greedily, in prompt order, into chunks that fit, and each chunk is a separate **pass** over
  the images; the detections of all passes are concatenated (so one object may be reported once
  per pass, with different labels: the downstream NMS picks the best);
* the images of a pass are batched (``batch_size`` per forward); the processor pads the captions
  to the longest one (padded tokens are masked out by the model) and pads the images to the
  largest one with a pixel mask. The Swin backbone does see the zero padding, so an image batched
  with a larger one can get slightly different scores than when run alone (same-size images give
  the same results);
* boxes and scores come from the processor's ``post_process_grounded_object_detection`` with
  ``threshold=box_threshold`` and ``target_sizes`` = each image's original ``(height, width)``; a
  box's score is its highest token probability (sigmoid of the token logits); boxes are clipped
  to the image.

Labels: the processor's own ``text_labels`` are the decoded tokens whose probability exceeds
``text_threshold``; they can merge two prompts (``"cat remote"``), cut one (``"remote"``) or
include ``[SEP]``, so they are not used. Instead each prompt's **token span** in the caption is
known (from the tokenizer's offsets), and a box is labelled with the prompt whose span holds the
box's highest token probability (the maximum over the span's tokens; ties go to the earlier
prompt). A box is kept only when that probability is above ``text_threshold`` (so a box that
matches no prompt's tokens - only the periods or special tokens - is dropped). Both thresholds
are strict (``>``), as in the processor.

``model_id`` defaults to ``IDEA-Research/grounding-dino-base``; the model
(``AutoModelForZeroShotObjectDetection``, i.e. ``GroundingDinoForObjectDetection``) and
``AutoProcessor`` (``GroundingDinoProcessor``) load lazily, on the first call or ``load()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from spatialforge.errors import ConfigError
from spatialforge.perception.backends.base import HFStage, image_list, prompt_lists
from spatialforge.perception.boxes import clip_boxes
from spatialforge.perception.checks import check_number, count, positive_int
from spatialforge.perception.types import Detections

__all__ = ["DEFAULT_MODEL_ID", "GroundingDinoDetector"]

DEFAULT_MODEL_ID = "IDEA-Research/grounding-dino-base"

_DELIMITERS = str.maketrans({".": " ", "?": " "})


# ----------------------------------------------------------------------------- validation helpers
_PROBABILITY = " (a probability; > 1 keeps nothing)"


def _model_phrase(prompt: str) -> str:
    """The phrase as Grounding DINO reads it: lower case, no delimiter characters, single spaces."""
    return " ".join(prompt.lower().translate(_DELIMITERS).split())


def _unique_phrases(prompts: list[str], index: int) -> list[tuple[str, str]]:
    """(label, model phrase) pairs; phrases equal after normalisation count once (first label wins)."""
    seen: dict[str, str] = {}
    for p in prompts:
        phrase = _model_phrase(p)
        if not phrase:
            raise ValueError(f"prompts[{index}]: phrase {p!r} has no text (empty after removing '.' and '?')")
        seen.setdefault(phrase, p)
    return [(label, phrase) for phrase, label in seen.items()]


def _caption(phrases: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """``"a. b."`` and the character span of every phrase in it."""
    spans, pos = [], 0
    for ph in phrases:
        spans.append((pos, pos + len(ph)))
        pos += len(ph) + 2  # ". "
    return ". ".join(phrases) + ".", spans


def _concat(parts: list[Detections]) -> Detections:
    parts = [p for p in parts if len(p)]
    if not parts:
        return Detections.empty()
    if len(parts) == 1:
        return parts[0]
    return Detections(np.concatenate([p.boxes for p in parts]), np.concatenate([p.scores for p in parts]),
                      tuple(lab for p in parts for lab in p.labels))


# ----------------------------------------------------------------------------- the stage
class GroundingDinoDetector(HFStage):
    """Grounding DINO open-vocabulary detector (see the module docstring for the details).

    Options: ``box_threshold`` (default 0.3: keep boxes whose best token probability is above it),
    ``text_threshold`` (default 0.25: the matched prompt's token probability must be above it),
    ``batch_size`` (images per forward, default 4), ``max_text_tokens`` (a lower cap on the caption
    length in tokens, default: the model's limit).
    """

    name = "grounding-dino"
    kind = "detector"
    default_model_id = DEFAULT_MODEL_ID

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32", *,
                 box_threshold: float = 0.3, text_threshold: float = 0.25, batch_size: int = 4,
                 max_text_tokens: int | None = None, **options: Any) -> None:
        super().__init__(model_id=model_id, device=device, dtype=dtype, **options)
        self.box_threshold = check_number(box_threshold, "box_threshold", low=0.0, note=_PROBABILITY)
        self.text_threshold = check_number(text_threshold, "text_threshold", low=0.0, note=_PROBABILITY)
        self.batch_size = positive_int(batch_size, "batch_size")
        if max_text_tokens is not None:
            max_text_tokens = positive_int(max_text_tokens, "max_text_tokens")
            if max_text_tokens < 3:
                raise ConfigError(f"max_text_tokens must be >= 3 ([CLS] phrase . [SEP]), got {max_text_tokens}")
        self.max_text_tokens = max_text_tokens

    # -- lifecycle
    def _load(self) -> tuple[Any, Any]:
        tf = self.transformers
        model = self._from_pretrained(tf.AutoModelForZeroShotObjectDetection)
        processor = tf.AutoProcessor.from_pretrained(self.model_id)
        if not isinstance(getattr(model.config, "max_text_len", None), int) \
                or not hasattr(processor, "post_process_grounded_object_detection") \
                or getattr(processor, "tokenizer", None) is None:
            raise ConfigError(f"{self.model_id}: not a Grounding DINO checkpoint (loaded {type(model).__name__} "
                              f"and {type(processor).__name__})")
        return model, processor

    def text_limit(self) -> int:
        """The most tokens one caption may hold, ``[CLS]`` and ``[SEP]`` included (loads the model)."""
        self.load()
        limit = int(self.model.config.max_text_len)
        tok_max = getattr(self.processor.tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < limit:
            limit = tok_max
        if self.max_text_tokens is not None:
            limit = min(limit, self.max_text_tokens)
        return limit

    # -- planning
    def _chunks(self, pairs: list[tuple[str, str]], limit: int, index: int) -> list[list[tuple[str, str]]]:
        """Split (label, phrase) pairs, in order, into captions of at most ``limit`` tokens."""
        if not pairs:
            return []
        lengths = [len(ids) for ids in
                   self.processor.tokenizer([ph for _, ph in pairs], add_special_tokens=False)["input_ids"]]
        chunks: list[list[tuple[str, str]]] = []
        current: list[tuple[str, str]] = []
        used = 2  # [CLS] ... [SEP]
        for pair, n in zip(pairs, lengths, strict=True):
            if n + 3 > limit:
                raise ValueError(f"prompts[{index}]: phrase {pair[0]!r} is {count(n, 'token')}; a Grounding DINO "
                                 f"caption holds at most {limit} tokens, so a phrase may have at most {limit - 3}")
            if current and used + n + 1 > limit:
                chunks.append(current)
                current, used = [], 2
            current.append(pair)
            used += n + 1  # the phrase and its period
        chunks.append(current)
        return chunks

    # -- inference
    def __call__(self, images: Sequence[np.ndarray], prompts: Sequence[Sequence[str]]) -> list[Detections]:
        """One raw :class:`Detections` per image, for that image's prompts (labels are prompts)."""
        imgs = image_list(images)
        pairs = [_unique_phrases(p, i) for i, p in enumerate(prompt_lists(prompts, len(imgs)))]
        if not any(pairs):
            return [Detections.empty() for _ in imgs]
        self.load()
        limit = self.text_limit()
        chunks = [self._chunks(p, limit, i) for i, p in enumerate(pairs)]
        parts: list[list[Detections]] = [[] for _ in imgs]
        for pass_index in range(max(len(c) for c in chunks)):
            todo = [i for i, c in enumerate(chunks) if len(c) > pass_index]
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start:start + self.batch_size]
                found = self._detect([imgs[i] for i in batch], [chunks[i][pass_index] for i in batch], limit)
                for i, det in zip(batch, found, strict=True):
                    parts[i].append(det)
        return [_concat(p) for p in parts]

    def _detect(self, images: list[np.ndarray], chunks: list[list[tuple[str, str]]], limit: int) -> list[Detections]:
        """One forward over ``images``, each with its own caption (a chunk of its prompts)."""
        torch = self.torch
        captions, spans = zip(*(_caption([ph for _, ph in chunk]) for chunk in chunks), strict=True)
        enc = self.processor(images=images, text=list(captions), padding=True, return_tensors="pt",
                             input_data_format="channels_last")
        offsets = self.processor.tokenizer(list(captions), padding=True, return_offsets_mapping=True)
        input_ids = enc["input_ids"]
        if input_ids.tolist() != offsets["input_ids"]:
            raise RuntimeError("Grounding DINO: the processor and its tokenizer tokenized the captions differently")
        if input_ids.shape[1] > limit:
            raise RuntimeError(f"Grounding DINO: a caption of {input_ids.shape[1]} tokens exceeds the {limit}-token "
                               f"limit (phrase token counts differ inside the caption)")

        inputs = {k: v.to(self.device) for k, v in enc.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            out = self.model(**inputs)
        logits = out.logits.float().cpu()  # (B, Q, max_text_len), -inf beyond each caption
        pred_boxes = out.pred_boxes.float().cpu()  # (B, Q, 4) normalised cx, cy, w, h
        sizes = [(int(img.shape[0]), int(img.shape[1])) for img in images]
        results = self.processor.post_process_grounded_object_detection(
            SimpleNamespace(logits=logits, pred_boxes=pred_boxes), input_ids=input_ids,
            threshold=self.box_threshold, text_threshold=self.text_threshold, target_sizes=sizes)

        probs_all = torch.sigmoid(logits).numpy()
        seq_len = input_ids.shape[1]
        dets = []
        for b, (chunk, span, res, (h, w)) in enumerate(zip(chunks, spans, results, sizes, strict=True)):
            probs = probs_all[b]  # (Q, T)
            keep = probs.max(axis=1) > self.box_threshold  # the processor's box selection, in query order
            scores = res["scores"].float().numpy()
            boxes = res["boxes"].float().numpy().reshape(-1, 4)
            if int(keep.sum()) != len(scores) or not np.allclose(probs.max(axis=1)[keep], scores, atol=1e-5):
                raise RuntimeError("Grounding DINO: post-processing kept other boxes than expected")
            # token -> prompt membership from the tokenizer's character offsets
            member = np.zeros((len(chunk), seq_len), dtype=bool)
            for t, (c0, c1) in enumerate(offsets["offset_mapping"][b]):
                if c1 <= c0:
                    continue  # special or padding token
                for k, (s0, s1) in enumerate(span):
                    if c0 >= s0 and c1 <= s1:
                        member[k, t] = True
                        break
            phrase_probs = np.where(member[None], probs[keep][:, None, :seq_len], 0.0).max(axis=2)  # (n, K)
            best = phrase_probs.argmax(axis=1) if len(chunk) else np.zeros(0, int)
            matched = phrase_probs[np.arange(len(best)), best] > self.text_threshold
            boxes = clip_boxes(boxes, w, h)
            labels = tuple(chunk[int(k)][0] for k in best[matched])
            dets.append(Detections(boxes[matched].astype(np.float32), scores[matched].astype(np.float32), labels))
        return dets
