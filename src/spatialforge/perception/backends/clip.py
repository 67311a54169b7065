"""CLIP backends: the zero-shot photo filter, image tagging, and text embeddings for caption comparison.

``ClipFilter`` decides whether a photo suits spatial question answering (a real scene rather than a
drawing, a screenshot or a lone product shot) by a zero-shot softmax over two prompt sets, and
ranks a vocabulary of object names per image (``tags``: the detection prompts of a prompted
detector), scored on the whole photo: CLIP's image processor resizes the shortest edge and crops
the centre square, which loses the sides of a wide photo (a third of a 16:9 photo), so the tags
look at square tiles that cover the photo (or the photo padded to a square) and take each name's
best tile. The filter's decision keeps CLIP's standard centre-crop view (the input zero-shot CLIP
is evaluated with, which its prompts and threshold were chosen for); for a square photo one
embedding serves both, otherwise the tiles cost one more image-tower pass each. ``ClipTextEmbedder``
turns captions into unit vectors; :func:`near_duplicate_groups` groups captions whose vectors
nearly coincide ("sofa" and "couch"), so the integrator can treat them as ambiguous.

Both stages load ``transformers.CLIPModel`` and ``CLIPProcessor`` from ``model_id`` (default
``openai/clip-vit-large-patch14``) lazily, on first use. ``ClipFilter`` also implements
``embed_text``, so one loaded model can serve as both the filter and the text embedder.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from spatialforge.errors import ConfigError
from spatialforge.perception.ambiguity import near_duplicate_groups  # re-exported
from spatialforge.perception.backends.base import HFStage, image_list
from spatialforge.perception.checks import check_number, positive_int
from spatialforge.perception.types import FilterDecision

__all__ = [
    "DEFAULT_DROP_LABELS",
    "DEFAULT_INDOOR_LABELS",
    "DEFAULT_KEEP_LABELS",
    "DEFAULT_OUTDOOR_LABELS",
    "TAG_VIEWS",
    "ClipFilter",
    "ClipTextEmbedder",
    "near_duplicate_groups",
    "pad_to_square",
    "square_tiles",
]

DEFAULT_MODEL_ID = "openai/clip-vit-large-patch14"

#: Prompts of photos worth keeping: real scenes with several objects laid out in 3D.
DEFAULT_KEEP_LABELS: tuple[str, ...] = (
    "a photo of a room",
    "a photo of an indoor scene",
    "a photo of a living room",
    "a photo of a kitchen",
    "a photo of a bedroom",
    "a photo of an office",
    "a photo of objects on a table",
    "a photo of a street",
    "a photo of a garden",
    "a photo of a shop interior",
)

#: Prompts of images to drop: no metric 3D layout to ask about, or not a camera photo at all.
DEFAULT_DROP_LABELS: tuple[str, ...] = (
    "a close-up photo of a single object",
    "a product photo on a white background",
    "a close-up portrait of a person",
    "a drawing",
    "a cartoon",
    "a logo",
    "a screenshot",
    "a diagram",
    "a page of text",
    "an aerial photo",
    "a satellite image",
)

DEFAULT_TAG_TEMPLATE = "a photo of a {tag}"

#: How ``ClipFilter.tags`` sees a photo: square tiles covering it (best tile per name), the photo
#: padded to a square, or CLIP's centre crop (the filter's view; the sides of a wide photo are lost).
TAG_VIEWS = ("tiles", "pad", "center")

#: Prompts of each scene type (the decision the depth stage routes by): the default keep labels,
#: split by scene type (their text embeddings are computed for the keep decision anyway). Each set
#: is averaged into one CLIP text embedding (a prompt ensemble, so the sets' sizes do not bias the
#: decision), and a photo is outdoor when the outdoor one is more probable.
DEFAULT_INDOOR_LABELS: tuple[str, ...] = tuple(lab for lab in DEFAULT_KEEP_LABELS
                                               if lab not in ("a photo of a street", "a photo of a garden"))
DEFAULT_OUTDOOR_LABELS: tuple[str, ...] = ("a photo of a street", "a photo of a garden")

_MAX_CACHED_TEXT_SETS = 32  # label sets / vocabularies whose text embeddings are kept per load


# ----------------------------------------------------------------------------- validation helpers
def _label_set(labels: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise ConfigError(f"{what} must be a sequence of strings, got {type(labels).__name__}")
    out = tuple(labels)
    if not out:
        raise ConfigError(f"{what} must not be empty")
    for lab in out:
        if not isinstance(lab, str) or not lab.strip():
            raise ConfigError(f"{what}: every label must be a non-empty string, got {lab!r}")
    dup = sorted({lab for lab in out if out.count(lab) > 1})
    if dup:
        raise ConfigError(f"{what}: duplicate labels {dup}")
    return out


def _text_list(texts: Sequence[str], what: str) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise ValueError(f"{what} must be a sequence of strings, got {type(texts).__name__}")
    out = list(texts)
    for t in out:
        if not isinstance(t, str):
            raise ValueError(f"{what}: every entry must be a string, got {type(t).__name__} {t!r}")
    return out


def square_tiles(image: np.ndarray) -> list[np.ndarray]:
    """Square tiles of side ``min(H, W)`` that together cover the whole ``image``.

    ``ceil(long side / short side)`` tiles along the long side, the first at one end, the last at the
    other and the rest evenly between (so they overlap unless the sides divide exactly); a square
    image is its own single tile (the same array).
    """
    h, w = image.shape[:2]
    side, long = min(h, w), max(h, w)
    n = math.ceil(long / side)
    if n == 1:
        return [image]
    starts = [round(k * (long - side) / (n - 1)) for k in range(n)]
    if w >= h:
        return [np.ascontiguousarray(image[:, s:s + side]) for s in starts]
    return [np.ascontiguousarray(image[s:s + side, :]) for s in starts]


def pad_to_square(image: np.ndarray, fill: Sequence[int]) -> np.ndarray:
    """``image`` centred on a square of side ``max(H, W)`` filled with the RGB colour ``fill`` (itself if square)."""
    h, w = image.shape[:2]
    if h == w:
        return image
    side = max(h, w)
    out = np.empty((side, side, 3), np.uint8)
    out[:] = np.asarray(fill, np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    out[top:top + h, left:left + w] = image
    return out


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def _features(output: Any) -> Any:
    """The projected embedding tensor of ``get_text_features`` / ``get_image_features``.

    transformers >= 5 returns a model output whose ``pooler_output`` holds the projection; older
    versions return the tensor itself.
    """
    pooled = getattr(output, "pooler_output", None)
    return output if pooled is None else pooled


# ----------------------------------------------------------------------------- the stages
class _ClipStage(HFStage):
    """CLIP loading and batched, unit-norm image and text encoding shared by the CLIP stages."""

    name = "clip"
    default_model_id = DEFAULT_MODEL_ID
    TUNING_OPTIONS: ClassVar[frozenset[str]] = frozenset({"batch_size", "text_batch_size"})
    batch_size = 16  # images per forward (an option of the filter; the embedder encodes no images)

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32", *,
                 text_batch_size: int = 256, **options: Any) -> None:
        super().__init__(model_id=model_id, device=device, dtype=dtype, **options)
        self.text_batch_size = positive_int(text_batch_size, "text_batch_size")
        self._text_cache: OrderedDict[tuple[str, ...], np.ndarray] = OrderedDict()
        self._text_cache_model: Any = None
        # the filter's decision and its tags read the same photos: their embeddings are computed once
        self._image_cache: OrderedDict[bytes, np.ndarray] = OrderedDict()

    # -- lifecycle
    def _load(self) -> tuple[Any, Any]:
        tf = self.transformers
        model = self._from_pretrained(tf.CLIPModel)
        processor = tf.CLIPProcessor.from_pretrained(self.model_id)
        return model, processor

    def unload(self) -> None:
        self._text_cache.clear()
        self._text_cache_model = None
        self._image_cache.clear()
        super().unload()

    # -- encoders
    @property
    def embedding_dim(self) -> int:
        """D, the size of the joint image-text embedding (loads the model)."""
        self.load()
        return int(self.model.config.projection_dim)

    def _max_text_length(self) -> int:
        limit = int(self.model.config.text_config.max_position_embeddings)
        tok_max = getattr(self.processor.tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < limit:
            limit = tok_max
        return limit

    def _encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm float32 (N, D) embeddings; one forward per ``text_batch_size`` texts."""
        self.load()
        torch = self.torch
        dim = int(self.model.config.projection_dim)
        if not texts:
            return np.zeros((0, dim), np.float32)
        max_len = self._max_text_length()
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.text_batch_size):
                batch = list(texts[start:start + self.text_batch_size])
                enc = self.processor(text=batch, padding=True, truncation=True, max_length=max_len,
                                     return_tensors="pt")
                feats = _features(self.model.get_text_features(input_ids=enc["input_ids"].to(self.device),
                                                               attention_mask=enc["attention_mask"].to(self.device)))
                chunks.append(feats.float().cpu().numpy())
        return _unit_rows(np.concatenate(chunks, axis=0))

    def _encode_images(self, images: list[np.ndarray]) -> np.ndarray:
        """Unit-norm float32 (N, D) embeddings of RGB uint8 images; one forward per ``batch_size`` images.

        Embeddings of the last few hundred images are kept (keyed by a digest of the pixels), so
        the filter and the tagger, which see the same photos, run the image tower once.
        """
        self.load()
        torch = self.torch
        keys = [hashlib.blake2b(np.ascontiguousarray(img).tobytes() + str(img.shape).encode(), digest_size=16).digest()
                for img in images]
        todo = [i for i, k in enumerate(keys) if k not in self._image_cache]
        with torch.inference_mode():
            for start in range(0, len(todo), self.batch_size):
                idx = todo[start:start + self.batch_size]
                enc = self.processor(images=[images[i] for i in idx], return_tensors="pt",
                                     input_data_format="channels_last")
                pixels = enc["pixel_values"].to(self.device, dtype=self.dtype)
                feats = _unit_rows(_features(self.model.get_image_features(pixel_values=pixels)).float().cpu().numpy())
                for i, f in zip(idx, feats, strict=True):
                    self._image_cache[keys[i]] = f
                    while len(self._image_cache) > 512:
                        self._image_cache.popitem(last=False)
        return np.stack([self._image_cache[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)

    def _cached_texts(self, texts: tuple[str, ...]) -> np.ndarray:
        """``_encode_texts`` cached per text tuple for the currently loaded model (bounded LRU)."""
        self.load()
        if self._text_cache_model is not self.model:
            self._text_cache.clear()
            self._text_cache_model = self.model
        cached = self._text_cache.get(texts)
        if cached is None:
            cached = self._encode_texts(texts)
            self._text_cache[texts] = cached
            while len(self._text_cache) > _MAX_CACHED_TEXT_SETS:
                self._text_cache.popitem(last=False)
        else:
            self._text_cache.move_to_end(texts)
        return cached

    def _logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().float().exp().item())

    # -- TextEmbedder
    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm float32 CLIP text embeddings, shape (len(texts), D), batched.

        Repeated strings are encoded once, so identical texts get bit-identical vectors. An empty
        list gives shape (0, D) (this loads the model to learn D).
        """
        items = _text_list(texts, "texts")
        unique = list(dict.fromkeys(items))
        emb = self._encode_texts(unique)
        row = {t: i for i, t in enumerate(unique)}
        return np.ascontiguousarray(emb[[row[t] for t in items]], dtype=np.float32).reshape(len(items), emb.shape[1])


class ClipFilter(_ClipStage):
    """Zero-shot CLIP photo filter and image tagger.

    Each image gets a softmax over the CLIP logits (``logit_scale * cos``, as ``logits_per_image``)
    of all ``keep_labels`` and ``drop_labels`` prompts; it is kept when the summed probability of
    the keep prompts is ``>= threshold``. ``threshold`` must be finite and ``>= 0``: 0 keeps every
    image, anything above 1 drops every image.

    Every decision also carries the photo's scene type, ``"indoor"`` or ``"outdoor"``, which the
    depth stage routes by (Depth Anything V2's indoor or outdoor checkpoint, as ZoeDepth's NK model
    routes between its heads): ``indoor_labels`` and ``outdoor_labels`` are each averaged into one
    unit text embedding (a prompt ensemble), and ``scene_scores`` is the softmax of the two
    (``logit_scale * cos``) for the image; the photo is outdoor when its outdoor score is above 0.5
    (a tie is indoor). By default the scene prompts are the default keep labels split by scene type
    (:data:`DEFAULT_INDOOR_LABELS`, :data:`DEFAULT_OUTDOOR_LABELS`), whose embeddings the keep
    decision computes anyway; they are options of their own, so custom keep labels do not change
    the routing.

    Options: ``keep_labels``, ``drop_labels`` (non-empty, disjoint, no duplicates),
    ``threshold`` (default 0.5), ``tag_template`` (default ``"a photo of a {tag}"``),
    ``tag_views`` (how :meth:`tags` sees a photo: ``"tiles"`` (default), ``"pad"`` or ``"center"``),
    ``indoor_labels``, ``outdoor_labels`` (non-empty, disjoint),
    ``batch_size`` (images per forward, default 16), ``text_batch_size`` (texts per forward, default 256).
    """

    kind = "filter"

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32", *,
                 keep_labels: Sequence[str] = DEFAULT_KEEP_LABELS, drop_labels: Sequence[str] = DEFAULT_DROP_LABELS,
                 threshold: float = 0.5, tag_template: str = DEFAULT_TAG_TEMPLATE, tag_views: str = "tiles",
                 batch_size: int = 16,
                 indoor_labels: Sequence[str] = DEFAULT_INDOOR_LABELS,
                 outdoor_labels: Sequence[str] = DEFAULT_OUTDOOR_LABELS, **options: Any) -> None:
        super().__init__(model_id=model_id, device=device, dtype=dtype, **options)
        self.batch_size = positive_int(batch_size, "batch_size")
        self.keep_labels = _label_set(keep_labels, "keep_labels")
        self.drop_labels = _label_set(drop_labels, "drop_labels")
        both = sorted(set(self.keep_labels) & set(self.drop_labels))
        if both:
            raise ConfigError(f"labels in both keep_labels and drop_labels: {both}")
        self.indoor_labels = _label_set(indoor_labels, "indoor_labels")
        self.outdoor_labels = _label_set(outdoor_labels, "outdoor_labels")
        both = sorted(set(self.indoor_labels) & set(self.outdoor_labels))
        if both:
            raise ConfigError(f"labels in both indoor_labels and outdoor_labels: {both}")
        self.threshold = check_number(threshold, "threshold", low=0.0, note=" (the keep labels' probability mass)")
        if not isinstance(tag_template, str) or "{tag}" not in tag_template:
            raise ConfigError(f"tag_template must be a string containing '{{tag}}', got {tag_template!r}")
        try:
            tag_template.format(tag="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"tag_template {tag_template!r} is not a valid format string: {exc}") from None
        self.tag_template = tag_template
        if tag_views not in TAG_VIEWS:
            raise ConfigError(f"tag_views must be one of {', '.join(TAG_VIEWS)}, got {tag_views!r}")
        self.tag_views = tag_views

    @property
    def labels(self) -> tuple[str, ...]:
        """All prompts, keep labels first: the keys of every decision's ``scores``."""
        return self.keep_labels + self.drop_labels

    def __call__(self, images: Sequence[np.ndarray]) -> list[FilterDecision]:
        """One :class:`FilterDecision` per image: ``keep``, the most probable label, all label probabilities."""
        imgs = image_list(images)
        if not imgs:
            return []
        labels = self.labels
        text = self._cached_texts(labels)
        image = self._encode_images(imgs)
        logits = self._logit_scale() * (image.astype(np.float64) @ text.astype(np.float64).T)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        scene_probs = self._scene_probabilities(image, dict(zip(labels, text, strict=True)))
        out = []
        for p, (p_in, p_out) in zip(probs, scene_probs, strict=True):
            scores = {lab: float(v) for lab, v in zip(labels, p, strict=True)}
            keep_mass = sum(scores[lab] for lab in self.keep_labels)
            out.append(FilterDecision(keep=bool(keep_mass >= self.threshold), label=labels[int(np.argmax(p))],
                                      scores=scores, model=self.model_id,
                                      scene="outdoor" if p_out > p_in else "indoor",
                                      scene_scores={"indoor": float(p_in), "outdoor": float(p_out)}))
        return out

    def _scene_probabilities(self, image: np.ndarray, known: dict[str, np.ndarray]) -> np.ndarray:
        """(N, 2) probabilities of indoor and outdoor for unit image embeddings ``image`` (N, D).

        ``known``: text embeddings already computed (the keep and drop labels'); the other scene
        prompts are encoded (and cached) here.
        """
        missing = tuple(lab for lab in self.indoor_labels + self.outdoor_labels if lab not in known)
        if missing:
            known = {**known, **dict(zip(missing, self._cached_texts(missing), strict=True))}
        classes = np.stack([np.mean([known[lab] for lab in labels], axis=0).astype(np.float64)
                            for labels in (self.indoor_labels, self.outdoor_labels)])  # prompt ensembles
        classes /= np.maximum(np.linalg.norm(classes, axis=1, keepdims=True), 1e-12)
        logits = self._logit_scale() * (image.astype(np.float64) @ classes.T)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)

    def tags(self, images: Sequence[np.ndarray], vocabulary: Sequence[str], top_k: int) -> list[list[str]]:
        """The ``top_k`` vocabulary entries most similar to each image, most similar first.

        Each entry is scored by the cosine similarity of the image and ``tag_template`` filled with
        it, the image seen whole as ``tag_views`` says: ``"tiles"`` (:func:`square_tiles`; an entry's
        score is its best tile's, so a thing at the edge of a wide photo counts as much as one in
        the middle), ``"pad"`` (:func:`pad_to_square` with the processor's mean colour) or
        ``"center"`` (CLIP's centre crop, the filter's view). Ties keep vocabulary order. Repeated
        entries count once; ``top_k`` larger than the vocabulary returns all of it. The
        vocabulary's embeddings are cached per vocabulary, the images' per pixels (a square photo's
        tile is the photo, whose embedding the filter made already).
        """
        imgs = image_list(images)
        vocab = list(dict.fromkeys(_text_list(vocabulary, "vocabulary")))
        if any(not v.strip() for v in vocab):
            raise ValueError("vocabulary: entries must be non-empty strings")
        top_k = positive_int(top_k, "top_k", error=ValueError)
        if not imgs:
            return []
        if not vocab:
            return [[] for _ in imgs]
        text = self._cached_texts(tuple(self.tag_template.format(tag=v) for v in vocab))
        views = [self._tag_views(img) for img in imgs]
        sims = self._encode_images([v for vs in views for v in vs]) @ text.T
        k = min(top_k, len(vocab))
        out, start = [], 0
        for vs in views:
            row = sims[start:start + len(vs)].max(axis=0)  # each name's best view
            start += len(vs)
            order = np.argsort(-row, kind="stable")[:k]
            out.append([vocab[int(i)] for i in order])
        return out

    def _tag_views(self, image: np.ndarray) -> list[np.ndarray]:
        """The images :meth:`tags` embeds for one photo (``tag_views``; loads the processor for the pad colour)."""
        if self.tag_views == "tiles":
            return square_tiles(image)
        if self.tag_views == "pad":
            self.load()
            mean = getattr(self.processor.image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
            return [pad_to_square(image, [round(255 * float(m)) for m in mean])]
        return [image]


class ClipTextEmbedder(_ClipStage):
    """CLIP text embeddings (unit norm) for comparing captions; see :func:`near_duplicate_groups`.

    Options: ``text_batch_size`` (texts per forward, default 256).
    """

    kind = "embedder"


# ----------------------------------------------------------------------------- caption grouping
