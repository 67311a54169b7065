"""Shared plumbing of the transformers backends: lazy loading, device and dtype, unloading.

Constructors only store settings: nothing is downloaded or loaded until ``load()`` (or the first
call). ``model_id`` is a hub id or a local folder, passed to ``from_pretrained`` exactly as a user
would; with ``HF_HUB_OFFLINE=1`` only cached or local models load.
"""

from __future__ import annotations

import gc
from typing import Any

from spatialforge._optional import require
from spatialforge.errors import ConfigError

__all__ = ["DTYPES", "HFStage", "resolve_device", "torch_dtype"]

DTYPES = ("float32", "float16", "bfloat16")


def resolve_device(device: str) -> str:
    """``"auto"`` -> cuda if available, else mps, else cpu; other values are validated."""
    torch = require("torch", extra="models", feature="model backends")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device must be auto, cpu, cuda[:N] or mps, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    return device


def torch_dtype(name: str) -> Any:
    torch = require("torch", extra="models", feature="model backends")
    if name not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return getattr(torch, name)


class HFStage:
    """Base class of a stage backed by a transformers model (subclasses implement ``_load``)."""

    name: str = "hf"
    default_model_id: str = ""

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32",
                 **options: Any) -> None:
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.model_id = model_id or self.default_model_id
        if not self.model_id:
            raise ConfigError(f"{self.name}: a model id is required")
        self.device_name = device
        self.dtype_name = dtype
        self.options = options
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
