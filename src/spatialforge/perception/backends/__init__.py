"""Backend registry: stage kind -> backend name -> class, imported only when chosen.

Importing a backend's module imports numpy only (torch and transformers load with the model), so
:func:`check_stage` can check a stage's backend name and options before anything is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from spatialforge.errors import ConfigError

__all__ = ["BACKENDS", "DEFAULT_MODELS", "NO_MODEL_BACKENDS", "backend_class", "backend_flag", "backend_options",
           "build_stage", "check_stage", "tuning_options"]

# kind -> name -> "module:Class"
BACKENDS: dict[str, dict[str, str]] = {
    "filter": {
        "clip": "spatialforge.perception.backends.clip:ClipFilter",
        "none": "spatialforge.perception.backends.stub:KeepAllFilter",
    },
    "embedder": {
        "clip": "spatialforge.perception.backends.clip:ClipTextEmbedder",
        "none": "spatialforge.perception.backends.stub:NoTextEmbedder",
    },
    "detector": {
        "florence2-regions": "spatialforge.perception.backends.florence2:Florence2RegionDetector",
        "grounding-dino": "spatialforge.perception.backends.grounding_dino:GroundingDinoDetector",
        "owlv2": "spatialforge.perception.backends.owlv2:Owlv2Detector",
        "sam3": "spatialforge.perception.backends.sam3:Sam3Detector",
    },
    "captioner": {
        "florence2": "spatialforge.perception.backends.florence2:Florence2Captioner",
        "label": "spatialforge.perception.backends.stub:LabelCaptioner",
    },
    "segmenter": {
        "sam": "spatialforge.perception.backends.sam:SamSegmenter",
        "sam2": "spatialforge.perception.backends.sam:Sam2Segmenter",
        "box": "spatialforge.perception.backends.stub:BoxSegmenter",
        "sam3": "spatialforge.perception.backends.sam3:Sam3Masks",  # the sam3 detector's own masks
    },
    "depth": {
        "depth-anything-v2": "spatialforge.perception.backends.depth:DepthAnythingV2Depth",
        "depth-pro": "spatialforge.perception.backends.depth:DepthProDepth",
        "zoedepth": "spatialforge.perception.backends.depth:ZoeDepthDepth",
    },
    "focal_estimator": {  # a focal length for photos without one (no --focal-length, no EXIF)
        "depth-pro": "spatialforge.perception.backends.depth:DepthProFocal",
        "none": "spatialforge.perception.backends.depth:NoFocalEstimator",
    },
}

DEFAULT_MODELS: dict[str, str] = {
    "clip": "openai/clip-vit-large-patch14",
    "grounding-dino": "IDEA-Research/grounding-dino-base",
    "owlv2": "google/owlv2-base-patch16-ensemble",
    "florence2": "florence-community/Florence-2-large",  # native conversion of microsoft/Florence-2-large
    "florence2-regions": "florence-community/Florence-2-large",  # the captioner's model: one model, loaded once
    "sam": "facebook/sam-vit-huge",
    "sam2": "facebook/sam2.1-hiera-large",
    "sam3": "facebook/sam3",
    "depth-anything-v2": "depth-anything/Depth-Anything-V2-Metric-Indoor-Large-hf",  # and -Outdoor-, by scene type
    "depth-pro": "apple/DepthPro-hf",  # also the focal estimator's (its field-of-view head)
    "zoedepth": "Intel/zoedepth-nyu-kitti",
}


#: Backends that load no model: they take no model id (nor device / dtype).
NO_MODEL_BACKENDS = frozenset({"none", "label", "box"})


def backend_class(kind: str, name: str) -> type:
    """The class of backend ``name`` for stage ``kind`` (imports its module; loads nothing)."""
    try:
        target = BACKENDS[kind][name]
    except KeyError:
        known = ", ".join(BACKENDS.get(kind, {})) or "none"
        raise ConfigError(f"unknown {kind} backend {name!r} (known: {known})") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def backend_options(kind: str, name: str) -> dict[str, Any]:
    """The options backend ``name`` of stage ``kind`` declares, with their defaults."""
    from spatialforge.perception.backends.base import declared_options

    return declared_options(backend_class(kind, name))


def backend_flag(kind: str, name: str, flag: str, default: bool = True) -> bool:
    """A yes/no class attribute of a registered backend, ``default`` when it has none or is not registered:
    e.g. a detector's ``takes_prompts`` (False: the photo pipeline sends it no tags) and ``gives_scores``
    (False: a score threshold means nothing for it)."""
    if name not in BACKENDS.get(kind, {}):
        return default
    return bool(getattr(backend_class(kind, name), flag, default))


def tuning_options(kind: str, name: str) -> frozenset[str]:
    """The options of the backend that change speed or memory only (batch sizes), not what it outputs."""
    return frozenset(getattr(backend_class(kind, name), "TUNING_OPTIONS", frozenset()))


def check_stage(kind: str, name: str, options: Mapping[str, Any], model_id: str | None = None) -> None:
    """``ConfigError`` for an unknown backend, an option it does not declare, or a model id for a backend
    that loads no model. Only names are checked here; values are checked when the stage is built."""
    from spatialforge.perception.backends.base import check_options

    check_options(name, kind, options, backend_options(kind, name))
    if model_id is not None and name in NO_MODEL_BACKENDS:
        raise ConfigError(f"the {name} {kind} loads no model, so it takes no model id (got {model_id!r})")


def build_stage(kind: str, name: str, **kwargs: Any) -> Any:
    """Instantiate backend ``name`` for stage ``kind`` (imports its module now, loads nothing)."""
    return backend_class(kind, name)(**kwargs)
