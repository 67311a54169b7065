"""Florence-2 region captioner: a short, specific name for every detected box ("red mug", "wooden chair").

Uses the native transformers implementation (``Florence2ForConditionalGeneration`` and
``Florence2Processor``, no remote code). The native classes load the converted checkpoints
published under ``florence-community/`` (default ``florence-community/Florence-2-large``); the
original ``microsoft/Florence-2-*`` repositories ship remote code whose config and weight names the
native classes cannot read, so those ids are translated to their ``florence-community``
conversions (same weights, see :data:`NATIVE_CHECKPOINTS`) and ``model_id`` records the repository
actually loaded.

Two modes:

``mode="region"`` (default)
    Florence-2's region tasks: the box is written into the prompt as four location tokens
    (:func:`box_to_loc_tokens`) and the model describes that region of the whole image, so the
    caption can use context. ``task`` picks ``<REGION_TO_DESCRIPTION>`` (default: a short
    description) or ``<REGION_TO_CATEGORY>`` (a category name).
``mode="crop"``
    For checkpoints without region training: the box is cropped with a margin of ``crop_margin``
    times its width / height on each side and the crop is captioned with ``<CAPTION>``.

All regions of all images of a call are batched into ``generate()`` calls of at most
``batch_size`` regions (greedy decoding, ``max_new_tokens`` new tokens). In region mode each image
is preprocessed once per batch and its pixels are shared by its regions. Every output is cleaned
by :func:`clean_caption` (``max_words`` words at most); an empty result falls back to the
detection's label, and ``fallbacks`` counts how many captions of the last call did.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from spatialforge.errors import ConfigError
from spatialforge.perception.backends.base import HFStage, as_rgb
from spatialforge.perception.checks import check_number, count, positive_int
from spatialforge.perception.types import Detections

__all__ = ["ARTICLES", "MODES", "NATIVE_CHECKPOINTS", "REGION_TASKS", "Florence2Captioner", "box_to_loc_tokens",
           "clean_caption", "crop_box"]

DEFAULT_MODEL_ID = "florence-community/Florence-2-large"

#: Original Microsoft repositories (remote code) -> their conversions for the native transformers classes.
NATIVE_CHECKPOINTS: dict[str, str] = {
    "microsoft/Florence-2-base": "florence-community/Florence-2-base",
    "microsoft/Florence-2-large": "florence-community/Florence-2-large",
    "microsoft/Florence-2-base-ft": "florence-community/Florence-2-base-ft",
    "microsoft/Florence-2-large-ft": "florence-community/Florence-2-large-ft",
}

REGION_TASKS = ("<REGION_TO_DESCRIPTION>", "<REGION_TO_CATEGORY>")
MODES = ("region", "crop")
CROP_TASK = "<CAPTION>"
ARTICLES = frozenset({"a", "an", "the"})
LOC_BINS = 1000  # Florence-2 quantises each coordinate into 1000 bins: <loc_0> .. <loc_999>

_TAG = re.compile(r"<\s*/?\s*[A-Za-z_][\w-]*\s*>")  # markup / special tokens: <s>, </s>, <pad>, <loc_12>, <od>
_NOT_WORD = re.compile(r"[^\w\s'-]|_")  # anything but letters, digits, whitespace, apostrophes and hyphens


# ----------------------------------------------------------------------------- pure helpers
def clean_caption(text: str, max_words: int) -> str:
    """A raw generated caption made short and plain; ``""`` when nothing usable is left.

    Steps, in order: every markup tag (special and location tokens such as ``<s>``, ``</s>``,
    ``<pad>``, ``<loc_12>``, ``<od>``) becomes a space; every character other than a letter, a digit,
    whitespace, an apostrophe or a hyphen becomes a space (so no ``<`` or ``>`` and no punctuation
    survive); the text is lower-cased; apostrophes and hyphens at the ends of words are dropped;
    whitespace is collapsed; leading articles (``a``, ``an``, ``the``) are dropped; at most
    ``max_words`` words are kept.

    >>> clean_caption("</s><s>A Red  mug.<loc_12><loc_40></s><pad>", 6)
    'red mug'
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    max_words = positive_int(max_words, "max_words", error=ValueError)
    text = _NOT_WORD.sub(" ", _TAG.sub(" ", text)).lower()
    words = [w.strip("'-") for w in text.split()]
    words = [w for w in words if w]
    while words and words[0] in ARTICLES:
        words.pop(0)
    return " ".join(words[:int(max_words)])


def _quantize(value: float, size: float) -> int:
    return min(max(math.floor(LOC_BINS * value / size), 0), LOC_BINS - 1)


def box_to_loc_tokens(box: Sequence[float] | np.ndarray, width: float, height: float) -> str:
    """The pixel xyxy ``box`` of a ``width`` x ``height`` image as Florence-2 location tokens.

    Each coordinate ``v`` (x against ``width``, y against ``height``) goes to the bin
    ``floor(1000 * v / size)`` clamped to ``0 .. 999``: the quantiser Florence-2 was trained with (and
    that ``Florence2PostProcessor.quantize`` implements, floor of the coordinate over the bin width
    ``size / 1000``), written as ``1000 * v / size`` so that a coordinate exactly on a bin edge lands
    in the bin it starts. The image's corners map to 0 and 999 (``v = size`` would be bin 1000 and is
    clamped), so ``(0, 0, width, height)`` gives ``<loc_0><loc_0><loc_999><loc_999>``; coordinates
    outside the image are clamped too. Returns ``"<loc_x0><loc_y0><loc_x1><loc_y1>"``.
    """
    for name, size in (("width", width), ("height", height)):
        check_number(size, name, low=0.0, strict_low=True, error=ValueError)
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.all(np.isfinite(b)):
        raise ValueError(f"box must be 4 finite numbers x0, y0, x1, y1, got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in b)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"box must be x0 <= x1 and y0 <= y1 (pixel xyxy), got {box!r}")
    bins = (_quantize(x0, width), _quantize(y0, height), _quantize(x1, width), _quantize(y1, height))
    return "".join(f"<loc_{q}>" for q in bins)


def crop_box(box: Sequence[float] | np.ndarray, width: int, height: int, margin: float) -> tuple[int, int, int, int]:
    """Integer pixel window ``(c0, r0, c1, r1)`` (end-exclusive) around ``box`` widened by ``margin``.

    The box grows by ``margin`` times its width (height) on the left and right (top and bottom), is
    rounded outwards, clipped to the image and kept at least one pixel wide and high.
    """
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.all(np.isfinite(b)) or b[2] < b[0] or b[3] < b[1]:
        raise ValueError(f"box must be 4 finite numbers x0 <= x1, y0 <= y1 (pixel xyxy), got {box!r}")
    if min(width, height) < 1 or not margin >= 0:
        raise ValueError(f"need width, height >= 1 and margin >= 0, got {width}, {height}, {margin}")
    x0, y0, x1, y1 = (float(v) for v in b)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)

    def span(lo: float, hi: float, size: int) -> tuple[int, int]:
        a = min(max(math.floor(lo), 0), size - 1)
        b = min(max(math.ceil(hi), a + 1), size)
        return a, b

    c0, c1 = span(x0 - mx, x1 + mx, width)
    r0, r1 = span(y0 - my, y1 + my, height)
    return c0, r0, c1, r1


# ----------------------------------------------------------------------------- validation helpers
# ----------------------------------------------------------------------------- the stage
class Florence2Captioner(HFStage):
    """Region captions with Florence-2 (see the module docstring for the modes and the cleaning).

    Options (keyword only): ``mode`` (``"region"`` or ``"crop"``), ``task`` (region mode:
    ``<REGION_TO_DESCRIPTION>`` or ``<REGION_TO_CATEGORY>``), ``batch_size`` (regions per
    ``generate()`` call, default 16), ``max_new_tokens`` (default 20), ``max_words`` (default 6),
    ``crop_margin`` (crop mode: the margin as a fraction of the box size, default 0.1). Unknown
    options raise :class:`ConfigError` naming the known ones.

    After each call ``fallbacks`` holds how many of its captions fell back to the detection label
    and ``generate_calls`` how many ``generate()`` calls it made. ``requested_model_id`` keeps the id
    given; ``model_id`` is the repository loaded (a ``microsoft/Florence-2-*`` id is translated
    through :data:`NATIVE_CHECKPOINTS`).
    """

    name = "florence2"
    kind = "captioner"
    default_model_id = DEFAULT_MODEL_ID

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32", *,
                 mode: str = "region", task: str = "<REGION_TO_DESCRIPTION>", batch_size: int = 16,
                 max_new_tokens: int = 20, max_words: int = 6, crop_margin: float = 0.1,
                 **options: Any) -> None:
        super().__init__(model_id=model_id, device=device, dtype=dtype, **options)
        self.requested_model_id = self.model_id
        self.model_id = NATIVE_CHECKPOINTS.get(self.model_id, self.model_id)
        if mode not in MODES:
            raise ConfigError(f"florence2: mode must be one of {', '.join(MODES)}, got {mode!r}")
        if task not in REGION_TASKS:
            raise ConfigError(f"florence2: task must be one of {', '.join(REGION_TASKS)}, got {task!r}")
        self.mode = mode
        self.task = task
        self.batch_size = positive_int(batch_size, "batch_size")
        self.max_new_tokens = positive_int(max_new_tokens, "max_new_tokens")
        self.max_words = positive_int(max_words, "max_words")
        self.crop_margin = check_number(crop_margin, "florence2: crop_margin", low=0.0)
        self.fallbacks = 0
        self.generate_calls = 0

    # -- lifecycle
    def _load(self) -> tuple[Any, Any]:
        tf = self.transformers
        model = self._from_pretrained(tf.Florence2ForConditionalGeneration)
        processor = tf.Florence2Processor.from_pretrained(self.model_id)
        prompts = {**processor.task_prompts_without_inputs, **processor.task_prompts_with_input}
        needed = self.task if self.mode == "region" else CROP_TASK
        if needed not in prompts:
            raise ConfigError(f"florence2: the processor of {self.model_id!r} has no prompt for {needed}")
        return model, processor

    # -- the port
    def __call__(self, images: Sequence[np.ndarray], detections: Sequence[Detections]) -> list[tuple[str, ...]]:
        """One tuple of captions per image, one caption per box, in the detections' order."""
        if isinstance(images, np.ndarray) and images.ndim < 4:
            raise ValueError(f"images must be a sequence of (H, W, 3) arrays, got one array of shape {images.shape}")
        imgs = [as_rgb(img, i) for i, img in enumerate(images)]
        dets = list(detections)
        if len(dets) != len(imgs):
            raise ValueError(f"got {count(len(imgs), 'image')} but {count(len(dets), 'detection set')}")
        for i, d in enumerate(dets):
            if not isinstance(d, Detections):
                raise ValueError(f"detections {i}: expected a Detections, got {type(d).__name__}")
        self.fallbacks = 0
        self.generate_calls = 0
        regions = [(i, k) for i, d in enumerate(dets) for k in range(len(d))]
        if not regions:
            return [() for _ in imgs]
        self.load()
        raw: list[str] = []
        for start in range(0, len(regions), self.batch_size):
            chunk = regions[start:start + self.batch_size]
            if self.mode == "region":
                inputs = self._region_inputs(imgs, dets, chunk)
            else:
                inputs = self._crop_inputs(imgs, dets, chunk)
            raw.extend(self._generate(inputs))
        captions: list[list[str]] = [[] for _ in imgs]
        for (i, k), text in zip(regions, raw, strict=True):
            caption = clean_caption(text, self.max_words)
            if not caption:
                caption = dets[i].labels[k]
                self.fallbacks += 1
            captions[i].append(caption)
        return [tuple(c) for c in captions]

    # -- batches
    def _texts(self, prompts: list[str]) -> Any:
        """Token ids of prompts laid out as ``Florence2Processor`` does: image tokens, ``<s>``, prompt, ``</s>``."""
        tok = self.processor.tokenizer
        head = tok.image_token * int(self.processor.num_image_tokens) + tok.bos_token
        return tok([head + p + tok.eos_token for p in prompts], add_special_tokens=False, padding=True,
                   return_tensors="pt")

    def _pixels(self, images: list[np.ndarray]) -> Any:
        enc = self.processor.image_processor(images=images, return_tensors="pt", input_data_format="channels_last")
        return enc["pixel_values"]

    def _region_inputs(self, imgs: list[np.ndarray], dets: list[Detections],
                       chunk: list[tuple[int, int]]) -> dict[str, Any]:
        order = list(dict.fromkeys(i for i, _ in chunk))  # each image of the batch preprocessed once
        pixels = self._pixels([imgs[i] for i in order])
        row = {i: n for n, i in enumerate(order)}
        template = self.processor.task_prompts_with_input[self.task]
        prompts = []
        for i, k in chunk:
            h, w = imgs[i].shape[:2]
            prompts.append(template.format(input=box_to_loc_tokens(dets[i].boxes[k], w, h)))
        enc = self._texts(prompts)
        index = self.torch.tensor([row[i] for i, _ in chunk], dtype=self.torch.long)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "pixel_values": pixels.index_select(0, index)}

    def _crop_inputs(self, imgs: list[np.ndarray], dets: list[Detections],
                     chunk: list[tuple[int, int]]) -> dict[str, Any]:
        crops = []
        for i, k in chunk:
            h, w = imgs[i].shape[:2]
            c0, r0, c1, r1 = crop_box(dets[i].boxes[k], w, h, self.crop_margin)
            crops.append(np.ascontiguousarray(imgs[i][r0:r1, c0:c1]))
        enc = self._texts([self.processor.task_prompts_without_inputs[CROP_TASK]] * len(chunk))
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "pixel_values": self._pixels(crops)}

    def _generate(self, inputs: dict[str, Any]) -> list[str]:
        """Greedy ``generate()`` on one batch; the decoded texts with their special tokens (cleaned later)."""
        torch = self.torch
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=inputs["input_ids"].to(self.device),
                attention_mask=inputs["attention_mask"].to(self.device),
                pixel_values=inputs["pixel_values"].to(self.device, dtype=self.dtype),
                max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1)
        self.generate_calls += 1
        return list(self.processor.batch_decode(out.cpu(), skip_special_tokens=False))
