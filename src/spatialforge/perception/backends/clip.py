"""CLIP backends: the zero-shot photo filter, image tagging, and text embeddings for caption comparison.

``ClipFilter`` decides whether a photo suits spatial question answering (a real scene rather than a
drawing, a screenshot or a lone product shot) by a zero-shot softmax over two prompt sets, and
ranks a vocabulary of object names per image (``tags``: the detection prompts). ``ClipTextEmbedder``
turns captions into unit vectors; :func:`near_duplicate_groups` groups captions whose vectors
nearly coincide ("sofa" and "couch"), so the integrator can treat them as ambiguous.

Both stages load ``transformers.CLIPModel`` and ``CLIPProcessor`` from ``model_id`` (default
``openai/clip-vit-large-patch14``) lazily, on first use. ``ClipFilter`` also implements
``embed_text``, so one loaded model can serve as both the filter and the text embedder.
"""

from __future__ import annotations

import hashlib
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
    "DEFAULT_KEEP_LABELS",
    "ClipFilter",
    "ClipTextEmbedder",
    "near_duplicate_groups",
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

    Options: ``keep_labels``, ``drop_labels`` (non-empty, disjoint, no duplicates),
    ``threshold`` (default 0.5), ``tag_template`` (default ``"a photo of a {tag}"``),
    ``batch_size`` (images per forward, default 16), ``text_batch_size`` (texts per forward, default 256).
    """

    kind = "filter"

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32", *,
                 keep_labels: Sequence[str] = DEFAULT_KEEP_LABELS, drop_labels: Sequence[str] = DEFAULT_DROP_LABELS,
                 threshold: float = 0.5, tag_template: str = DEFAULT_TAG_TEMPLATE, batch_size: int = 16,
                 **options: Any) -> None:
        super().__init__(model_id=model_id, device=device, dtype=dtype, **options)
        self.batch_size = positive_int(batch_size, "batch_size")
        self.keep_labels = _label_set(keep_labels, "keep_labels")
        self.drop_labels = _label_set(drop_labels, "drop_labels")
        both = sorted(set(self.keep_labels) & set(self.drop_labels))
        if both:
            raise ConfigError(f"labels in both keep_labels and drop_labels: {both}")
        self.threshold = check_number(threshold, "threshold", low=0.0, note=" (the keep labels' probability mass)")
        if not isinstance(tag_template, str) or "{tag}" not in tag_template:
            raise ConfigError(f"tag_template must be a string containing '{{tag}}', got {tag_template!r}")
        try:
            tag_template.format(tag="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"tag_template {tag_template!r} is not a valid format string: {exc}") from None
        self.tag_template = tag_template

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
        out = []
        for p in probs:
            scores = {lab: float(v) for lab, v in zip(labels, p, strict=True)}
            keep_mass = sum(scores[lab] for lab in self.keep_labels)
            out.append(FilterDecision(keep=bool(keep_mass >= self.threshold), label=labels[int(np.argmax(p))],
                                      scores=scores, model=self.model_id))
        return out

    def tags(self, images: Sequence[np.ndarray], vocabulary: Sequence[str], top_k: int) -> list[list[str]]:
        """The ``top_k`` vocabulary entries most similar to each image, most similar first.

        Each entry is scored by the cosine similarity of the image and ``tag_template`` filled with
        it; ties keep vocabulary order. Repeated entries count once; ``top_k`` larger than the
        vocabulary returns all of it. The vocabulary's embeddings are cached per vocabulary.
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
        sims = self._encode_images(imgs) @ text.T
        k = min(top_k, len(vocab))
        out = []
        for row in sims:
            order = np.argsort(-row, kind="stable")[:k]
            out.append([vocab[int(i)] for i in order])
        return out


class ClipTextEmbedder(_ClipStage):
    """CLIP text embeddings (unit norm) for comparing captions; see :func:`near_duplicate_groups`.

    Options: ``text_batch_size`` (texts per forward, default 256).
    """

    kind = "embedder"


# ----------------------------------------------------------------------------- caption grouping
