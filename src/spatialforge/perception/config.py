"""Configuration of the perception path (backends, model ids, thresholds)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from spatialforge.errors import ConfigError
from spatialforge.io.config_file import read_config_file
from spatialforge.io.sectioned_config import coerce_value
from spatialforge.perception.image_io import ImageLimits
from spatialforge.perception.vocabulary import DEFAULT_VOCABULARY

__all__ = ["STAGES", "PerceptionConfig", "StageSpec", "load_perception_config"]

STAGES = ("filter", "embedder", "detector", "captioner", "segmenter", "depth")


@dataclass(frozen=True)
class StageSpec:
    """Which backend runs a stage: a registered name, a model id (None = the backend's default) and options."""

    backend: str
    model_id: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_value(cls, value: Any, stage: str) -> StageSpec:
        """A backend name (``"owlv2"``) or a table ``{backend, model_id, options}``."""
        if isinstance(value, StageSpec):
            return value
        if isinstance(value, str):
            return cls(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{stage}: expected a backend name or a table with 'backend', got {value!r}")
        unknown = sorted(set(value) - {"backend", "model_id", "options"})
        if unknown:
            raise ConfigError(f"{stage}: unknown key(s) {', '.join(unknown)} (known: backend, model_id, options)")
        if not isinstance(value.get("backend"), str):
            raise ConfigError(f"{stage}: 'backend' (a backend name) is required")
        options = value.get("options", {})
        if not isinstance(options, dict):
            raise ConfigError(f"{stage}: 'options' must be a table, got {options!r}")
        model_id = value.get("model_id")
        if model_id is not None and not isinstance(model_id, str):
            raise ConfigError(f"{stage}: 'model_id' must be a string, got {model_id!r}")
        return cls(value["backend"], model_id, dict(options))


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
    score_threshold: float | None = None  # None: each detector's own default (Grounding DINO 0.3, OWLv2 0.2)
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
            if getattr(self, name) is not None and not 0.0 <= getattr(self, name) <= 1.0:
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
        for name in ("max_objects", "min_mask_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["vocabulary"] = f"{len(self.vocabulary)} tags"
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "perception config") -> PerceptionConfig:
        """Build from a mapping (a parsed TOML/JSON file); unknown keys are an error that names them."""
        types = {f.name: f.type for f in fields(cls)}
        known = set(types)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in STAGES:
                kwargs[key] = StageSpec.from_value(value, f"{source}: [{key}]")
            elif key == "vocabulary":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"{source}: 'vocabulary' must be a list of strings")
                kwargs[key] = tuple(v.strip() for v in value if v.strip())
            elif key == "limits":
                if not isinstance(value, dict):
                    raise ConfigError(f"{source}: 'limits' must be a table")
                try:
                    kwargs[key] = ImageLimits(**value)
                except TypeError as exc:
                    raise ConfigError(f"{source}: limits: {exc}") from None
            else:
                kwargs[key] = coerce_value(value, types[key], key) if isinstance(value, (str, int, float, bool)) \
                    else value
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def with_overrides(self, **changes: Any) -> PerceptionConfig:
        """A copy with the given fields replaced (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def load_perception_config(path: str | Path) -> PerceptionConfig:
    """Read a perception config from a ``.toml`` or ``.json`` file (see docs/photos.md)."""
    data = read_config_file(path, "perception config")
    return PerceptionConfig.from_dict(data, source=str(path))
