"""Open-vocabulary box detection with OWLv2 (``Owlv2Detector``).

The stage takes RGB images and, per image, its own list of text prompts and returns one raw
:class:`~spatialforge.perception.types.Detections` per image: pixel ``x0, y0, x1, y1`` boxes in the
**original** image, the box score and the prompt that found each box (before NMS and size filters).

How a call runs:

* every prompt becomes a text query ``query_template.format(phrase=prompt)`` (default
  ``"a photo of a {phrase}"``, the prompt form OWL was evaluated with); prompts that are equal
  after lower-casing and collapsing whitespace count once (the first spelling is the label);
  queries longer than the tokenizer's limit (16 tokens for the released checkpoints) are truncated;
* images are batched (``batch_size`` per forward); ``Owlv2Processor`` pads every image's query
  list to the longest one with ``" "`` queries. The model does **not** mask those (its query mask
  only tests ``input_ids[..., 0] > 0``, and the padding query starts with the BOS token), so the
  stage sets their logits to ``-inf`` before post-processing: a padding query never wins a box and
  a batched image gets exactly the boxes it gets alone;
* each of the model's patch boxes is scored by its best query (sigmoid of the class logit, as in
  the processor's ``post_process_grounded_object_detection``) and kept when the score is above
  ``score_threshold`` (strict ``>``, as in the processor); the label is that query's prompt.

The square-padding quirk: ``Owlv2ImageProcessor`` pads every image at the bottom and right to a
square of side ``S = max(height, width)`` **before** resizing it to the model's input size, so the
predicted normalised boxes are relative to that ``S x S`` square, not to the image. The boxes are
therefore scaled with ``target_sizes = (S, S)`` (which transformers 5 also does internally for any
target size, but 4.x's OWL-ViT post-processing did not) and then clipped to the original
``W x H`` image (a box may reach into the padding).

``model_id`` defaults to ``google/owlv2-base-patch16-ensemble``; ``Owlv2ForObjectDetection`` and
``Owlv2Processor`` load lazily, on the first call or ``load()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from spatialforge.errors import ConfigError
from spatialforge.perception.backends.base import HFStage, image_list, prompt_lists
from spatialforge.perception.boxes import clip_boxes
from spatialforge.perception.checks import check_number, positive_int
from spatialforge.perception.types import Detections

__all__ = ["DEFAULT_MODEL_ID", "DEFAULT_QUERY_TEMPLATE", "Owlv2Detector"]

DEFAULT_MODEL_ID = "google/owlv2-base-patch16-ensemble"
DEFAULT_QUERY_TEMPLATE = "a photo of a {phrase}"


# ----------------------------------------------------------------------------- validation helpers
def _unique_prompts(prompts: Sequence[Sequence[str]], n_images: int) -> list[list[str]]:
    """Per image, its prompts validated, with repeats (after lower-casing / whitespace) removed."""
    out = []
    for i, plist in enumerate(prompt_lists(prompts, n_images)):
        seen: dict[str, str] = {}
        for p in plist:
            key = " ".join(p.lower().split())
            if not key:
                raise ValueError(f"prompts[{i}]: empty phrase {p!r}")
            seen.setdefault(key, p)
        out.append(list(seen.values()))
    return out


# ----------------------------------------------------------------------------- the stage
class Owlv2Detector(HFStage):
    """OWLv2 open-vocabulary detector (see the module docstring for the details).

    Options: ``score_threshold`` (default 0.2: keep boxes whose best query probability is above
    it), ``query_template`` (default ``"a photo of a {phrase}"``), ``batch_size`` (images per
    forward, default 4).
    """

    name = "owlv2"
    kind = "detector"
    default_model_id = DEFAULT_MODEL_ID

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32", *,
                 score_threshold: float = 0.2, query_template: str = DEFAULT_QUERY_TEMPLATE, batch_size: int = 4,
                 **options: Any) -> None:
        super().__init__(model_id=model_id, device=device, dtype=dtype, **options)
        self.score_threshold = check_number(score_threshold, "score_threshold", low=0.0,
                                            note=" (a probability; > 1 keeps nothing)")
        if not isinstance(query_template, str) or "{phrase}" not in query_template:
            raise ConfigError(f"query_template must be a string containing '{{phrase}}', got {query_template!r}")
        try:
            query_template.format(phrase="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"query_template {query_template!r} is not a valid format string: {exc}") from None
        self.query_template = query_template
        self.batch_size = positive_int(batch_size, "batch_size")

    # -- lifecycle
    def _load(self) -> tuple[Any, Any]:
        tf = self.transformers
        model = self._from_pretrained(tf.Owlv2ForObjectDetection)
        processor = tf.Owlv2Processor.from_pretrained(self.model_id)
        return model, processor

    # -- inference
    def __call__(self, images: Sequence[np.ndarray], prompts: Sequence[Sequence[str]]) -> list[Detections]:
        """One raw :class:`Detections` per image, for that image's prompts (labels are prompts)."""
        imgs = image_list(images)
        labels = _unique_prompts(prompts, len(imgs))
        out = [Detections.empty() for _ in imgs]
        todo = [i for i, lab in enumerate(labels) if lab]
        if not todo:
            return out
        self.load()
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start:start + self.batch_size]
            found = self._detect([imgs[i] for i in batch], [labels[i] for i in batch])
            for i, det in zip(batch, found, strict=True):
                out[i] = det
        return out

    def _detect(self, images: list[np.ndarray], labels: list[list[str]]) -> list[Detections]:
        """One forward over ``images``, each with its own (non-empty) prompt list."""
        torch = self.torch
        queries = [[self.query_template.format(phrase=p) for p in lab] for lab in labels]
        enc = self.processor(images=images, text=queries, truncation=True, return_tensors="pt",
                             input_data_format="channels_last")
        inputs = {k: v.to(self.device) for k, v in enc.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            out = self.model(**inputs)
        logits = out.logits.float().cpu().clone()  # (B, patches, max queries)
        for b, lab in enumerate(labels):
            logits[b, :, len(lab):] = float("-inf")  # the processor's " " padding queries
        sizes = [(int(img.shape[0]), int(img.shape[1])) for img in images]
        square = [(max(h, w), max(h, w)) for h, w in sizes]
        results = self.processor.post_process_grounded_object_detection(
            SimpleNamespace(logits=logits, pred_boxes=out.pred_boxes.float().cpu()),
            threshold=self.score_threshold, target_sizes=square)
        dets = []
        for res, lab, (h, w) in zip(results, labels, sizes, strict=True):
            boxes = clip_boxes(res["boxes"].float().numpy().reshape(-1, 4), w, h)
            idx = res["labels"].numpy().astype(int)
            dets.append(Detections(boxes.astype(np.float32), res["scores"].float().numpy().astype(np.float32),
                                   tuple(lab[k] for k in idx)))
        return dets
