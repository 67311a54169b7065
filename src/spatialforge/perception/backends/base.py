"""Shared plumbing of the transformers backends: lazy loading, device and dtype, unloading, options.

Constructors only store settings: nothing is downloaded or loaded until ``load()`` (or the first
call). ``model_id`` is a hub id or a local folder, passed to ``from_pretrained`` exactly as a user
would; with ``HF_HUB_OFFLINE=1`` only cached or local models load.

A backend declares its options by its constructor's keyword-only parameters (with their defaults):
:func:`declared_options` reads them (from every class of the backend's MRO), and an option a
backend does not declare is a :class:`ConfigError` naming the option, the backend and its known
options, both when a perception config is checked (before anything is built) and when a backend
is constructed directly. ``TUNING_OPTIONS`` lists the options that change speed or memory only
(batch sizes), which a rerun may change without redoing any photo.
"""

from __future__ import annotations

import gc
import inspect
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from spatialforge._device import resolve_device
from spatialforge._optional import require
from spatialforge.errors import ConfigError
from spatialforge.perception.checks import count, positive_int

__all__ = ["DTYPES", "HFStage", "as_rgb", "check_options", "declared_options", "image_list", "positive_int",
           "prompt_lists", "resolve_device", "torch_dtype"]

DTYPES = ("float32", "float16", "bfloat16")


def torch_dtype(name: str) -> Any:
    torch = require("torch", extra="models", feature="model backends")
    if name not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return getattr(torch, name)


def declared_options(cls: type) -> dict[str, Any]:
    """The options of backend class ``cls``: its constructors' keyword-only parameters and their defaults.

    Read from every ``__init__`` of the class's MRO (a subclass's default wins).
    """
    found: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind is inspect.Parameter.KEYWORD_ONLY:
                found.setdefault(p.name, p.default)
    return dict(sorted(found.items()))


def check_options(backend: str, kind: str, given: Iterable[str], known: Iterable[str]) -> None:
    """``ConfigError`` naming every option in ``given`` that the ``backend`` ``kind`` does not declare."""
    known = sorted(known)
    unknown = sorted(set(given) - set(known))
    if unknown:
        names = ", ".join(repr(u) for u in unknown)
        raise ConfigError(f"the {backend} {kind}: unknown {'option' if len(unknown) == 1 else 'options'} {names} "
                          f"(known options: {', '.join(known) or 'none'})")


class HFStage:
    """Base class of a stage backed by a transformers model (subclasses implement ``_load``).

    Subclasses set ``name`` (the backend name), ``kind`` (the stage it serves) and
    ``default_model_id``, and take their options as keyword-only constructor parameters; any other
    keyword reaching this constructor is an unknown option (:class:`ConfigError`).
    """

    name: str = "hf"
    kind: str = "stage"
    default_model_id: str = ""
    TUNING_OPTIONS: ClassVar[frozenset[str]] = frozenset({"batch_size"})

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32",
                 **unknown: Any) -> None:
        check_options(self.name, self.kind, unknown, declared_options(type(self)))
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.model_id = model_id or self.default_model_id
        if not self.model_id:
            raise ConfigError(f"{self.name}: a model id is required")
        self.device_name = device
        self.dtype_name = dtype
        self.model: Any = None
        self.processor: Any = None
        self.device: str | None = None

    # -- lifecycle
    def load(self) -> None:
        if self.model is None:
            self.device = resolve_device(self.device_name)
            self.model, self.processor = self._load()
            self.model.eval()

    def unload(self) -> None:
        """Drop the model. On an accelerator, collect cycles and return cached memory to the device
        (what the low-memory mode needs); on the CPU dropping the references is enough."""
        was_loaded, device = self.model is not None, self.device or "cpu"
        self.model = None
        self.processor = None
        if not was_loaded or device == "cpu":
            return
        gc.collect()
        torch = require("torch", extra="models")
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        elif device == "mps" and hasattr(torch, "mps"):
            torch.mps.empty_cache()

    def _load(self) -> tuple[Any, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- helpers
    @property
    def torch(self) -> Any:
        return require("torch", extra="models", feature=f"the {self.name} backend")

    @property
    def transformers(self) -> Any:
        return require("transformers", extra="models", feature=f"the {self.name} backend")

    @property
    def dtype(self) -> Any:
        return torch_dtype(self.dtype_name)

    def _from_pretrained(self, cls: Any, **kwargs: Any) -> Any:
        return cls.from_pretrained(self.model_id, dtype=self.dtype, **kwargs).to(self.device)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model_id={self.model_id!r}, device={self.device_name!r}, "
                f"dtype={self.dtype_name!r})")


# -- input validation shared by the backends
def as_rgb(image: Any, index: int) -> np.ndarray:
    """A (H, W, 3) uint8 RGB array; (H, W) / (H, W, 1) gray and (H, W, 4) RGBA are converted."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"image {index}: expected uint8 pixels, got dtype {img.dtype}")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image {index}: expected an (H, W, 3) RGB array, got shape {img.shape}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"image {index}: empty image of shape {img.shape}")
    return np.ascontiguousarray(img)


def image_list(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """A batch of images (a list, or an (N, H, W, 3) array) as a list of RGB arrays."""
    if isinstance(images, np.ndarray) and images.ndim < 4:
        raise ValueError(f"images must be a sequence of (H, W, 3) arrays (a list, or an (N, H, W, 3) array), "
                         f"got one array of shape {images.shape}")
    return [as_rgb(img, i) for i, img in enumerate(images)]


def prompt_lists(prompts: Sequence[Sequence[str]], n_images: int) -> list[list[str]]:
    """Detector prompts validated as one sequence of strings per image (``ValueError`` otherwise)."""
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise ValueError(f"prompts must be a sequence (one list of phrases per image), got {type(prompts).__name__}")
    if len(prompts) != n_images:
        raise ValueError(f"got {count(n_images, 'image')} but {count(len(prompts), 'prompt list')} "
                         f"(one list per image)")
    out = []
    for i, plist in enumerate(prompts):
        if isinstance(plist, str) or not isinstance(plist, Sequence):
            raise ValueError(f"prompts[{i}] must be a list of phrases, got {type(plist).__name__} {plist!r}")
        for p in plist:
            if not isinstance(p, str):
                raise ValueError(f"prompts[{i}]: every phrase must be a string, got {type(p).__name__} {p!r}")
        out.append(list(plist))
    return out
