"""Backend registry: stage kind -> backend name -> class, imported only when chosen."""

from __future__ import annotations

import importlib
from typing import Any

from spatialforge.errors import ConfigError

__all__ = ["BACKENDS", "DEFAULT_MODELS", "build_stage"]

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
        "grounding-dino": "spatialforge.perception.backends.grounding_dino:GroundingDinoDetector",
        "owlv2": "spatialforge.perception.backends.owlv2:Owlv2Detector",
    },
    "captioner": {
        "florence2": "spatialforge.perception.backends.florence2:Florence2Captioner",
        "label": "spatialforge.perception.backends.stub:LabelCaptioner",
    },
    "segmenter": {
        "sam": "spatialforge.perception.backends.sam:SamSegmenter",
        "sam2": "spatialforge.perception.backends.sam:Sam2Segmenter",
        "box": "spatialforge.perception.backends.stub:BoxSegmenter",
    },
    "depth": {
        "depth-anything-v2": "spatialforge.perception.backends.depth:DepthAnythingV2Depth",
        "depth-pro": "spatialforge.perception.backends.depth:DepthProDepth",
    },
}

DEFAULT_MODELS: dict[str, str] = {
    "clip": "openai/clip-vit-large-patch14",
    "grounding-dino": "IDEA-Research/grounding-dino-base",
    "owlv2": "google/owlv2-base-patch16-ensemble",
    "florence2": "florence-community/Florence-2-large",  # native conversion of microsoft/Florence-2-large
    "sam": "facebook/sam-vit-huge",
    "sam2": "facebook/sam2.1-hiera-large",
    "depth-anything-v2": "depth-anything/Depth-Anything-V2-Metric-Indoor-Large-hf",
    "depth-pro": "apple/DepthPro-hf",
}


def build_stage(kind: str, name: str, **kwargs: Any) -> Any:
    """Instantiate backend ``name`` for stage ``kind`` (imports its module now, loads nothing)."""
    try:
        target = BACKENDS[kind][name]
    except KeyError:
        known = ", ".join(BACKENDS.get(kind, {})) or "none"
        raise ConfigError(f"unknown {kind} backend {name!r} (known: {known})") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)
