"""Choosing a torch device: ``auto`` -> cuda, else mps, else cpu; explicit names are validated."""

from __future__ import annotations

from spatialforge._optional import require
from spatialforge.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(device: str, extra: str = "models") -> str:
    """``"auto"`` -> the best available device; ``cpu``, ``cuda[:N]`` and ``mps`` are checked."""
    torch = require("torch", extra=extra, feature="model backends")
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
