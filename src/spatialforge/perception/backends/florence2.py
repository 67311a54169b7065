"""Florence-2 stages: region captions (the ``florence2`` captioner) and regions (the ``florence2-regions`` detector).

Both use the native transformers implementation (``Florence2ForConditionalGeneration`` and
``Florence2Processor``, no remote code). The native classes load the converted checkpoints
published under ``florence-community/`` (default ``florence-community/Florence-2-large``); the
original ``microsoft/Florence-2-*`` repositories ship remote code whose config and weight names the
native classes cannot read, so those ids are translated to their ``florence-community``
conversions (same weights, see :data:`NATIVE_CHECKPOINTS`) and ``model_id`` records the repository
actually loaded.

The vision tower runs once per image
    Florence-2 writes its image into the text encoder's input as ``num_image_tokens`` feature
    vectors (577 at 768 px). Both stages compute those features once per image
    (``get_image_features``), keep them (bounded, keyed by a digest of the pixels) and hand them
    to ``generate()`` as ``mm_encoder_outputs``, the pre-encoded image input of transformers'
    generation; the region rows of one image share its features instead of each row running the
    vision tower on a copy of the image's pixels. The outputs are the same as with per-row pixels.
    When the detector and the captioner name the same checkpoint, :func:`share_model` makes the
    captioner use the detector's loaded model and its features, so a photo's image is encoded once
    for its regions *and* their captions (and the model loads once).

Captioner (:class:`Florence2Captioner`), two modes:

``mode="region"`` (default)
    Florence-2's region tasks: the box is written into the prompt as four location tokens
    (:func:`box_to_loc_tokens`) and the model describes that region of the whole image, so the
    caption can use context. ``task`` picks ``<REGION_TO_DESCRIPTION>`` (default: a short
    description) or ``<REGION_TO_CATEGORY>`` (a category name).
``mode="crop"``
    For checkpoints without region training: the box is cropped with a margin of ``crop_margin``
    times its width / height on each side and the crop is captioned with ``<CAPTION>`` (each crop
    is its own image, so its own vision pass).

All regions of all images of a call are batched into ``generate()`` calls of at most
``batch_size`` regions (greedy decoding, ``max_new_tokens`` new tokens). Every output is cleaned
by :func:`clean_caption` (``max_words`` words at most); an empty result falls back to the
detection's label, and ``fallbacks`` counts how many captions of the last call did.

Detector (:class:`Florence2RegionDetector`, SpatialVLM's class-agnostic region proposals)
    One ``generate()`` per batch of ``batch_size`` images with the task ``task`` (no input text):
    ``<DENSE_REGION_CAPTION>`` (default: boxes, each with a short description),
    ``<OD>`` (boxes with a category name) or ``<REGION_PROPOSAL>`` (boxes only). The output is parsed
    by the processor's own ``post_process_generation`` (location bins back to pixels of the original
    image); each box's corners are put in order (``x0 <= x1``, ``y0 <= y1``) and clipped to the image.
    The label is the region's text cleaned by :func:`clean_caption` (``max_words``), or
    :data:`UNNAMED_LABEL` when the task gives none. The detector takes no prompts (the photo
    pipeline skips the CLIP tagging pass for it) and gives no scores: Florence-2 writes boxes, not
    confidences, so every box's ``score`` is 1.0 (:data:`REGION_SCORE`), the boxes keep the order the
    model wrote them in through NMS and the ``max_objects`` cap, and a score threshold is refused.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from spatialforge.errors import ConfigError
from spatialforge.perception.backends.base import HFStage, as_rgb, image_list, prompt_lists
from spatialforge.perception.boxes import clip_boxes
from spatialforge.perception.checks import check_number, count, positive_int
from spatialforge.perception.types import Detections

__all__ = ["ARTICLES", "MODES", "NATIVE_CHECKPOINTS", "PROPOSAL_TASKS", "REGION_SCORE", "REGION_TASKS",
           "UNNAMED_LABEL", "Florence2Captioner", "Florence2RegionDetector", "box_to_loc_tokens", "clean_caption",
           "crop_box", "share_model"]

DEFAULT_MODEL_ID = "florence-community/Florence-2-large"

#: Original Microsoft repositories (remote code) -> their conversions for the native transformers classes.
NATIVE_CHECKPOINTS: dict[str, str] = {
    "microsoft/Florence-2-base": "florence-community/Florence-2-base",
    "microsoft/Florence-2-large": "florence-community/Florence-2-large",
    "microsoft/Florence-2-base-ft": "florence-community/Florence-2-base-ft",
    "microsoft/Florence-2-large-ft": "florence-community/Florence-2-large-ft",
}

REGION_TASKS = ("<REGION_TO_DESCRIPTION>", "<REGION_TO_CATEGORY>")
#: The detector's tasks and the parse rule of the processor's post-processor each needs.
PROPOSAL_TASKS: dict[str, str] = {"<DENSE_REGION_CAPTION>": "description_with_bboxes",
                                  "<OD>": "description_with_bboxes",
                                  "<REGION_PROPOSAL>": "bboxes"}
MODES = ("region", "crop")
CROP_TASK = "<CAPTION>"
ARTICLES = frozenset({"a", "an", "the"})
LOC_BINS = 1000  # Florence-2 quantises each coordinate into 1000 bins: <loc_0> .. <loc_999>
REGION_SCORE = 1.0  # the score of every florence2-regions box: Florence-2 gives no confidence
UNNAMED_LABEL = "object"  # the label of a region the task gives no text for (<REGION_PROPOSAL>)
_MAX_CACHED_IMAGES = 64  # image features kept per loaded model (a pipeline chunk's photos, several times over)

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


# ----------------------------------------------------------------------------- the shared base
def _digest(img: np.ndarray) -> bytes:
    """A key for an image's pixels (and shape): equal keys, equal Florence-2 image features (SHA-256, ~0.5 ms
    for a 640x480 photo)."""
    key = hashlib.sha256(str(img.shape).encode())
    key.update(memoryview(np.ascontiguousarray(img)).cast("B"))
    return key.digest()


class _Florence2Stage(HFStage):
    """Loading, the prompt layout and the per-image features shared by the Florence-2 stages.

    ``requested_model_id`` keeps the id given; ``model_id`` is the repository loaded (a
    ``microsoft/Florence-2-*`` id is translated through :data:`NATIVE_CHECKPOINTS`).
    """

    default_model_id = DEFAULT_MODEL_ID

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32",
                 **options: Any) -> None:
        super().__init__(model_id=model_id, device=device, dtype=dtype, **options)
        self.requested_model_id = self.model_id
        self.model_id = NATIVE_CHECKPOINTS.get(self.model_id, self.model_id)
        self._features: OrderedDict[bytes, Any] = OrderedDict()  # image digest -> (T, D) features
        self._model_source: _Florence2Stage | None = None  # set by share_model: the stage whose model this uses

    # -- lifecycle
    def _needed_tasks(self) -> tuple[str, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_processor(self, processor: Any) -> None:
        """``ConfigError`` when the checkpoint's processor lacks a task this stage runs."""
        prompts = {**processor.task_prompts_without_inputs, **processor.task_prompts_with_input}
        for task in self._needed_tasks():
            if task not in prompts:
                raise ConfigError(f"{self.name}: the processor of {self.model_id!r} has no prompt for {task}")

    def _load(self) -> tuple[Any, Any]:
        tf = self.transformers
        model = self._from_pretrained(tf.Florence2ForConditionalGeneration)
        processor = tf.Florence2Processor.from_pretrained(self.model_id)
        self._check_processor(processor)
        return model, processor

    def load(self) -> None:
        """Load the model, or take the loaded model of the stage this one shares with (:func:`share_model`)."""
        source = self._model_source
        if source is None:
            super().load()
            return
        source.load()
        if self.model is not source.model:
            self._check_processor(source.processor)
        self.model, self.processor, self.device = source.model, source.processor, source.device

    def unload(self) -> None:
        """Drop the model and the kept image features (a shared model is released by its owner too)."""
        self._features.clear()
        source = self._model_source
        if source is None:
            super().unload()
            return
        self.model = None
        self.processor = None
        source.unload()

    # -- inputs
    def _texts(self, prompts: list[str]) -> Any:
        """Token ids of prompts laid out as ``Florence2Processor`` does: image tokens, ``<s>``, prompt, ``</s>``."""
        tok = self.processor.tokenizer
        head = tok.image_token * int(self.processor.num_image_tokens) + tok.bos_token
        return tok([head + p + tok.eos_token for p in prompts], add_special_tokens=False, padding=True,
                   return_tensors="pt")

    def _pixels(self, images: list[np.ndarray]) -> Any:
        enc = self.processor.image_processor(images=images, return_tensors="pt", input_data_format="channels_last")
        return enc["pixel_values"]

    def _image_features(self, images: list[np.ndarray], keys: list[bytes] | None = None) -> Any:
        """The projected image features of each image, shape ``(len(images), num_image_tokens, D)``.

        The vision tower runs once, batched, on the images whose features are not kept yet; features
        are kept per loaded model (keyed by a digest of the pixels, the last few dozen images), so
        the regions and the captions of a photo reuse them. A stage that shares another's model
        (:func:`share_model`) uses that stage's features. ``keys``: the images' digests, when known.
        """
        store = (self._model_source or self)._features
        keys = [_digest(img) for img in images] if keys is None else keys
        todo = {k: img for k, img in zip(keys, images, strict=True) if k not in store}
        if todo:
            torch = self.torch
            pixels = self._pixels(list(todo.values())).to(self.device, dtype=self.dtype)
            with torch.inference_mode():
                feats = self.model.get_image_features(pixel_values=pixels).pooler_output
            for k, f in zip(todo, feats, strict=True):
                store[k] = f
        out = self.torch.stack([store[k] for k in keys])
        for k in keys:
            store.move_to_end(k)
        while len(store) > _MAX_CACHED_IMAGES:
            store.popitem(last=False)
        return out

    def _generate(self, text: Any, *, features: Any = None, pixel_values: Any = None, max_new_tokens: int,
                  num_beams: int = 1) -> list[str]:
        """``generate()`` (no sampling) on one batch: one image per row, either as its precomputed
        ``features`` (``mm_encoder_outputs``, the vision tower already ran) or as ``pixel_values``.
        Returns the decoded texts with their special and location tokens."""
        torch = self.torch
        inputs: dict[str, Any] = {"input_ids": text["input_ids"].to(self.device),
                                  "attention_mask": text["attention_mask"].to(self.device)}
        if features is not None:
            output_cls = importlib.import_module("transformers.modeling_outputs").BaseModelOutputWithPooling
            inputs["mm_encoder_outputs"] = {"image": output_cls(pooler_output=features)}
        else:
            inputs["pixel_values"] = pixel_values.to(self.device, dtype=self.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=num_beams)
        return list(self.processor.batch_decode(out.cpu(), skip_special_tokens=False))


def share_model(detector: Any, captioner: Any) -> bool:
    """Let a ``florence2`` captioner use a ``florence2-regions`` detector's model when both name the same
    checkpoint, device and dtype: the model loads once and each photo's image features, computed for
    its regions, serve their captions too. Returns whether they now share.

    Releasing either stage releases the model (the low-memory mode still holds one model at a time);
    the captioner loads it again, through the detector, when it runs.
    """
    if not (isinstance(detector, Florence2RegionDetector) and isinstance(captioner, Florence2Captioner)):
        return False
    if (detector.model_id, detector.device_name, detector.dtype_name) != \
            (captioner.model_id, captioner.device_name, captioner.dtype_name):
        return False
    if captioner._model_source is not detector:
        captioner.unload()
        captioner._model_source = detector
    return True


# ----------------------------------------------------------------------------- the captioner
class Florence2Captioner(_Florence2Stage):
    """Region captions with Florence-2 (see the module docstring for the modes and the cleaning).

    Options (keyword only): ``mode`` (``"region"`` or ``"crop"``), ``task`` (region mode:
    ``<REGION_TO_DESCRIPTION>`` or ``<REGION_TO_CATEGORY>``), ``batch_size`` (regions per
    ``generate()`` call, default 16), ``max_new_tokens`` (default 20), ``max_words`` (default 6),
    ``crop_margin`` (crop mode: the margin as a fraction of the box size, default 0.1). Unknown
    options raise :class:`ConfigError` naming the known ones.

    After each call ``fallbacks`` holds how many of its captions fell back to the detection label
    and ``generate_calls`` how many ``generate()`` calls it made.
    """

    name = "florence2"
    kind = "captioner"

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32", *,
                 mode: str = "region", task: str = "<REGION_TO_DESCRIPTION>", batch_size: int = 16,
                 max_new_tokens: int = 20, max_words: int = 6, crop_margin: float = 0.1,
                 **options: Any) -> None:
        super().__init__(model_id=model_id, device=device, dtype=dtype, **options)
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

    def _needed_tasks(self) -> tuple[str, ...]:
        return (self.task,) if self.mode == "region" else (CROP_TASK,)

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
        keys = {i: _digest(imgs[i]) for i, _ in regions} if self.mode == "region" else {}  # once per photo
        raw: list[str] = []
        for start in range(0, len(regions), self.batch_size):
            chunk = regions[start:start + self.batch_size]
            if self.mode == "region":
                inputs = self._region_inputs(imgs, dets, chunk)
                order = inputs.pop("images")
                features = self._image_features([imgs[i] for i in order], [keys[i] for i in order])
                features = features.index_select(0, inputs.pop("rows"))
                raw.extend(self._generate(inputs, features=features, max_new_tokens=self.max_new_tokens))
            else:
                inputs = self._crop_inputs(imgs, dets, chunk)
                raw.extend(self._generate(inputs, pixel_values=inputs["pixel_values"],
                                          max_new_tokens=self.max_new_tokens))
            self.generate_calls += 1
        captions: list[list[str]] = [[] for _ in imgs]
        for (i, k), text in zip(regions, raw, strict=True):
            caption = clean_caption(text, self.max_words)
            if not caption:
                caption = dets[i].labels[k]
                self.fallbacks += 1
            captions[i].append(caption)
        return [tuple(c) for c in captions]

    # -- batches
    def _region_inputs(self, imgs: list[np.ndarray], dets: list[Detections],
                       chunk: list[tuple[int, int]]) -> dict[str, Any]:
        """The batch of region prompts: ``input_ids`` and ``attention_mask`` (one row per region),
        ``images`` (the distinct images of the batch, in order of first use) and ``rows`` (per region,
        the index of its image in ``images``)."""
        order = list(dict.fromkeys(i for i, _ in chunk))  # each image of the batch encoded once
        row = {i: n for n, i in enumerate(order)}
        template = self.processor.task_prompts_with_input[self.task]
        prompts = []
        for i, k in chunk:
            h, w = imgs[i].shape[:2]
            prompts.append(template.format(input=box_to_loc_tokens(dets[i].boxes[k], w, h)))
        enc = self._texts(prompts)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "images": order,
                "rows": self.torch.tensor([row[i] for i, _ in chunk], dtype=self.torch.long, device=self.device)}

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


# ----------------------------------------------------------------------------- the detector
class Florence2RegionDetector(_Florence2Stage):
    """Class-agnostic regions with Florence-2: boxes and their text, no prompts, no scores (module docstring).

    Options (keyword only): ``task`` (``<DENSE_REGION_CAPTION>`` (default), ``<OD>`` or
    ``<REGION_PROPOSAL>``), ``max_new_tokens`` (the longest region list written, default 1024 as in
    Florence-2's own examples), ``num_beams`` (beam search width, default 3 as in those examples;
    1 is greedy and faster), ``max_words`` (words kept of each region's text, default 6),
    ``batch_size`` (images per ``generate()`` call, default 4).

    ``takes_prompts`` and ``gives_scores`` are False: the photo pipeline sends it no tags, and a
    perception config refuses a score threshold for it (every ``score`` is :data:`REGION_SCORE`).
    """

    name = "florence2-regions"
    kind = "detector"
    takes_prompts: ClassVar[bool] = False
    gives_scores: ClassVar[bool] = False

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32", *,
                 task: str = "<DENSE_REGION_CAPTION>", max_new_tokens: int = 1024, num_beams: int = 3,
                 max_words: int = 6, batch_size: int = 4, **options: Any) -> None:
        super().__init__(model_id=model_id, device=device, dtype=dtype, **options)
        if task not in PROPOSAL_TASKS:
            raise ConfigError(f"{self.name}: task must be one of {', '.join(PROPOSAL_TASKS)}, got {task!r}")
        self.task = task
        self.max_new_tokens = positive_int(max_new_tokens, "max_new_tokens")
        self.num_beams = positive_int(num_beams, "num_beams")
        self.max_words = positive_int(max_words, "max_words")
        self.batch_size = positive_int(batch_size, "batch_size")

    def _needed_tasks(self) -> tuple[str, ...]:
        return (self.task,)

    def _check_processor(self, processor: Any) -> None:
        super()._check_processor(processor)
        rule = PROPOSAL_TASKS[self.task]
        post = getattr(processor, "post_processor", None)
        if rule not in getattr(post, "parse_task_config", {}):
            raise ConfigError(f"{self.name}: the processor of {self.model_id!r} cannot parse {self.task} outputs "
                              f"(its post-processor config has no {rule!r} rule)")

    # -- the port
    def __call__(self, images: Sequence[np.ndarray],
                 prompts: Sequence[Sequence[str]] | None = None) -> list[Detections]:
        """One raw :class:`Detections` per image (before NMS and size filters). ``prompts``, when given,
        must be one list per image; they are not used (the regions are class-agnostic)."""
        imgs = image_list(images)
        if prompts is not None:
            prompt_lists(prompts, len(imgs))
        if not imgs:
            return []
        self.load()
        out: list[Detections] = []
        prompt = self.processor.task_prompts_without_inputs[self.task]
        for start in range(0, len(imgs), self.batch_size):
            batch = imgs[start:start + self.batch_size]
            texts = self._generate(self._texts([prompt] * len(batch)), features=self._image_features(batch),
                                   max_new_tokens=self.max_new_tokens, num_beams=self.num_beams)
            out.extend(self.parse(text, img.shape[1], img.shape[0]) for text, img in zip(texts, batch, strict=True))
        return out

    def parse(self, text: str, width: int, height: int) -> Detections:
        """The regions of one generated ``text`` for a ``width`` x ``height`` image (loads the processor).

        The processor's ``post_process_generation`` turns each run of four location tokens into a
        pixel box (the centre of each bin); corners are put in order and clipped to the image; the
        label is the text before the box, cleaned (:func:`clean_caption`), or :data:`UNNAMED_LABEL`.
        """
        if self.processor is None:
            self.load()
        parsed = self.processor.post_process_generation(text, task=self.task, image_size=(width, height))[self.task]
        boxes = np.asarray(parsed["bboxes"], dtype=np.float64).reshape(-1, 4)
        boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], axis=1)
        boxes = clip_boxes(boxes, width, height)
        labels = tuple(clean_caption(str(lab), self.max_words) or UNNAMED_LABEL for lab in parsed["labels"])
        return Detections(boxes.astype(np.float32), np.full(len(boxes), REGION_SCORE, np.float32), labels)
