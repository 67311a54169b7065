"""Configuration of the perception path (backends, model ids, thresholds)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from spatialforge.errors import ConfigError
from spatialforge.perception.image_io import ImageLimits
from spatialforge.perception.vocabulary import DEFAULT_VOCABULARY

__all__ = ["PerceptionConfig", "StageSpec"]


@dataclass(frozen=True)
class StageSpec:
    """Which backend runs a stage: a registered name, a model id (None = the backend's default) and options."""

    backend: str
    model_id: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PerceptionConfig:
    filter: StageSpec = StageSpec("clip")
    embedder: StageSpec = StageSpec("clip")
    detector: StageSpec = StageSpec("grounding-dino")
    captioner: StageSpec = StageSpec("florence2")
    segmenter: StageSpec = StageSpec("sam2")
    depth: StageSpec = StageSpec("depth-anything-v2")
    device: str = "auto"
    dtype: str = "float32"
    low_memory: bool = False
    batch_size: int = 8
    vocabulary: tuple[str, ...] = DEFAULT_VOCABULARY
    tags_per_image: int = 24
    score_threshold: float = 0.3
    iou_threshold: float = 0.5
    min_area_frac: float = 0.0005
    max_area_frac: float = 0.9
    max_objects: int = 20
    min_mask_pixels: int = 64
    caption_similarity: float = 0.92
    ambiguity: str = "group"  # "group": hand near-duplicates to the QA disambiguation; "drop": drop them
    focal_length_px: float | None = None
    assumed_hfov_deg: float | None = 60.0
    limits: ImageLimits = field(default_factory=ImageLimits)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.tags_per_image < 1:
            raise ConfigError(f"tags_per_image must be >= 1, got {self.tags_per_image}")
        for name in ("score_threshold", "iou_threshold", "caption_similarity"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.min_area_frac < self.max_area_frac <= 1.0:
            raise ConfigError("need 0 <= min_area_frac < max_area_frac <= 1")
        if self.ambiguity not in ("group", "drop"):
            raise ConfigError(f"ambiguity must be 'group' or 'drop', got {self.ambiguity!r}")
        if self.focal_length_px is not None and self.focal_length_px <= 0:
            raise ConfigError(f"focal length must be > 0 pixels, got {self.focal_length_px}")
        if self.assumed_hfov_deg is not None and not 10.0 <= self.assumed_hfov_deg <= 150.0:
            raise ConfigError(f"assumed_hfov_deg must be within 10..150 degrees, got {self.assumed_hfov_deg}")
        if not self.vocabulary:
            raise ConfigError("the tag vocabulary is empty")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["vocabulary"] = f"{len(self.vocabulary)} tags"
        return d
