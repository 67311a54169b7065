"""Configuration of the perception path (backends, model ids, thresholds).

A :class:`PerceptionConfig` is checked when it is made: values, and the option names of every
registered backend (an option a backend does not declare is a :class:`ConfigError` naming it,
the stage, the backend and the known options). :meth:`PerceptionConfig.check_backends` also
refuses backend names that are not registered (a config file or the command line may only name
registered ones; from Python, any object can be injected as a stage). The default detector,
``florence2-regions``, takes no prompts and gives no scores: a ``score_threshold`` is refused for it,
and ``filter = "none"`` needs no small vocabulary then. SAM 3 detects and segments
in one model: the ``sam3`` detector needs the ``sam3`` segmenter (its own masks) and the other way
round, else a :class:`ConfigError`; a config file that names the ``sam3`` detector and no
segmenter gets the ``sam3`` segmenter.

:meth:`PerceptionConfig.check` also refuses a depth stage that routes by scene type (Depth Anything
V2's default) behind filter ``none``, which decides no scene type. ``assumed_hfov_deg`` is None by
default: no field of view is assumed unless asked for (the ``focal_estimator`` stage estimates it).

:meth:`PerceptionConfig.stage_spec` gives what each stage really runs with: the caption embedder
inherits the filter's CLIP model id unless it names its own, and ``score_threshold`` reaches the
detector's own threshold options (Grounding DINO: box and text threshold) unless those are set.
:meth:`PerceptionConfig.output_settings` holds everything that changes the outputs (not the
device, batch sizes or the low-memory mode); its :meth:`~PerceptionConfig.fingerprint` is stored
in the output folder so that a rerun with other settings is refused instead of mixing models.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from spatialforge._text import shown
from spatialforge.errors import ConfigError
from spatialforge.io.config_file import read_config_file
from spatialforge.io.sectioned_config import coerce_value
from spatialforge.perception.backends import (
    BACKENDS,
    DEFAULT_MODELS,
    NO_MODEL_BACKENDS,
    backend_flag,
    backend_options,
    check_stage,
    tuning_options,
)
from spatialforge.perception.checks import check_number, count
from spatialforge.perception.image_io import ImageLimits
from spatialforge.perception.vocabulary import DEFAULT_VOCABULARY

__all__ = ["DETECTOR_THRESHOLD", "STAGES", "PerceptionConfig", "StageSpec", "describe_changes",
           "load_perception_config"]

STAGES = ("filter", "embedder", "detector", "captioner", "segmenter", "depth", "focal_estimator")

#: The options through which ``PerceptionConfig.score_threshold`` reaches each detector (its own options win).
DETECTOR_THRESHOLD: dict[str, tuple[str, ...]] = {"grounding-dino": ("box_threshold", "text_threshold"),
                                                  "owlv2": ("score_threshold",), "sam3": ("score_threshold",)}


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
    detector: StageSpec = StageSpec("florence2-regions")  # the captioner's Florence-2: see stage_spec
    captioner: StageSpec = StageSpec("florence2")
    segmenter: StageSpec = StageSpec("sam2")
    depth: StageSpec = StageSpec("depth-anything-v2")
    focal_estimator: StageSpec = StageSpec("depth-pro")  # photos without a focal length: Depth Pro's FOV head
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
    assumed_hfov_deg: float | None = None  # None: never assume a field of view (estimate it, or fail the photo)
    limits: ImageLimits = field(default_factory=ImageLimits)

    def __post_init__(self) -> None:
        for name in ("batch_size", "tags_per_image", "max_objects", "min_mask_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("score_threshold", "iou_threshold", "caption_similarity"):
            if getattr(self, name) is not None:
                check_number(getattr(self, name), name, low=0.0, high=1.0)
        check_number(self.min_area_frac, "min_area_frac", low=0.0, high=1.0)
        check_number(self.max_area_frac, "max_area_frac", low=0.0, high=1.0)
        if not self.min_area_frac < self.max_area_frac:
            raise ConfigError(f"min_area_frac ({self.min_area_frac}) must be below max_area_frac "
                              f"({self.max_area_frac})")
        if self.ambiguity not in ("group", "drop"):
            raise ConfigError(f"ambiguity must be 'group' or 'drop', got {self.ambiguity!r}")
        if self.focal_length_px is not None:
            check_number(self.focal_length_px, "focal_length_px", low=0.0, strict_low=True, note=" (pixels)")
        if self.assumed_hfov_deg is not None:
            check_number(self.assumed_hfov_deg, "assumed_hfov_deg", low=10.0, high=150.0, note=" (degrees)")
        for kind in STAGES:  # option names of registered backends, before anything is built
            spec = getattr(self, kind)
            if spec.backend in BACKENDS[kind]:
                try:
                    check_stage(kind, spec.backend, spec.options, spec.model_id)
                except ConfigError as exc:
                    raise ConfigError(f"[{kind}]: {exc}") from None
        self._check_sam3()
        object.__setattr__(self, "vocabulary", tuple(dict.fromkeys(self.vocabulary)))  # repeats count once
        if not self.vocabulary:
            raise ConfigError("the tag vocabulary is empty")
        self._check_detector()
        if (self.filter.backend == "none" and len(self.vocabulary) > self.tags_per_image
                and backend_flag("detector", self.detector.backend, "takes_prompts")):
            raise ConfigError(
                f"filter 'none' has no tagger, so every photo would be sent to the detector with the whole "
                f"vocabulary ({count(len(self.vocabulary), 'tag')}, more than tags_per_image {self.tags_per_image}): "
                f"give a vocabulary of at most {self.tags_per_image} tags, or keep every photo with the CLIP "
                f"filter and threshold 0, which still picks each photo's tags")

    def _check_detector(self) -> None:
        """A detector that gives no scores (``florence2-regions``: every box scores 1.0) takes no score
        threshold; one whose boxes have no names (its ``<REGION_PROPOSAL>`` task) needs a captioner that
        names them (not ``label``, which would call every object "object")."""
        name = self.detector.backend
        if self.score_threshold is not None and not backend_flag("detector", name, "gives_scores"):
            raise ConfigError(f"score_threshold: the {name} detector gives no scores (every box scores 1.0), so a "
                              f"score threshold would keep every box or none; leave it unset, or choose a detector "
                              f"that scores its boxes (grounding-dino, owlv2, sam3)")
        if (name == "florence2-regions" and self.detector.options.get("task") == "<REGION_PROPOSAL>"
                and self.captioner.backend == "label"):
            raise ConfigError("[captioner]: the florence2-regions detector's <REGION_PROPOSAL> boxes have no names, "
                              "so the label captioner would call every object 'object': use the florence2 captioner, "
                              "or the <DENSE_REGION_CAPTION> or <OD> task")

    def _check_sam3(self) -> None:
        """SAM 3 detects and segments in one model: the ``sam3`` detector goes with the ``sam3`` segmenter
        (its masks; no second segmentation model), and that segmenter with that detector only."""
        detector, segmenter = self.detector.backend, self.segmenter.backend
        if detector == "sam3" and segmenter != "sam3":
            raise ConfigError(f"[segmenter]: the sam3 detector segments what it finds, so the segmenter must be "
                              f"'sam3' (its masks; no second segmentation model loads), got {segmenter!r}")
        if segmenter == "sam3" and detector != "sam3":
            raise ConfigError(f"[segmenter]: the sam3 segmenter uses the sam3 detector's masks, but the detector is "
                              f"{detector!r}: make the detector 'sam3' too, or choose another segmenter")
        if segmenter == "sam3" and self.segmenter.model_id is not None:
            raise ConfigError(f"[segmenter]: the sam3 segmenter loads no model of its own (its masks come from the "
                              f"sam3 detector's model): give the model id {self.segmenter.model_id!r} to the detector")

    def check_backends(self) -> None:
        """``ConfigError`` unless every stage names a registered backend (option names are checked already)."""
        for kind in STAGES:
            backend = getattr(self, kind).backend
            if backend not in BACKENDS[kind]:
                raise ConfigError(f"[{kind}]: unknown {kind} backend {backend!r} "
                                  f"(known: {', '.join(BACKENDS[kind])})")

    def stage_kwargs(self, kind: str) -> dict[str, Any]:
        """The keyword arguments backend ``stage_spec(kind).backend`` is built with."""
        spec = self.stage_spec(kind)
        kwargs = dict(spec.options)
        if spec.backend not in NO_MODEL_BACKENDS:
            kwargs.update(model_id=spec.model_id, device=self.device, dtype=self.dtype)
        return kwargs

    def check(self) -> None:
        """Check everything without loading a model: every backend is registered and every option value
        is accepted by its backend (each stage is built, which only stores settings, and dropped).
        ``ConfigError`` starting with ``[stage]:`` otherwise."""
        from spatialforge.perception.backends import build_stage

        self.check_backends()
        built = {}
        for kind in STAGES:
            try:
                built[kind] = build_stage(kind, self.stage_spec(kind).backend, **self.stage_kwargs(kind))
            except ConfigError as exc:
                raise ConfigError(f"[{kind}]: {exc}") from None
        if self.filter.backend == "none" and getattr(built["depth"], "routes_by_scene", False):
            raise ConfigError(f"[filter]: filter 'none' decides no scene type, but the {self.depth.backend} depth "
                              f"routes each photo to its indoor or outdoor checkpoint by the filter's decision: "
                              f"choose one for every photo (depth option scene = 'indoor' or 'outdoor', "
                              f"--depth-scene), or give one --depth-model, or keep the CLIP filter")

    # ------------------------------------------------------------------ what runs
    def stage_spec(self, kind: str) -> StageSpec:
        """The spec stage ``kind`` runs with.

        * ``embedder``: a CLIP embedder without a model id of its own uses the CLIP filter's model
          (one model then serves both; ``--filter-model X`` alone loads no second CLIP);
        * ``detector``: ``score_threshold``, when set, becomes the detector's threshold options
          (:data:`DETECTOR_THRESHOLD`: Grounding DINO's box *and* text threshold, so a low score
          threshold is not cut at the text threshold's default 0.25), unless the detector's own
          options set them; a ``florence2-regions`` detector without a model id of its own uses the
          ``florence2`` captioner's model (one model then serves both and loads once; ``--captioner-model
          X`` alone is used for both);
        * ``segmenter``: the ``sam3`` segmenter (the ``sam3`` detector's masks) carries the
          detector's model id, which is the model its masks come from.
        """
        if kind not in STAGES:
            raise ConfigError(f"unknown stage {kind!r} (known: {', '.join(STAGES)})")
        spec = getattr(self, kind)
        if (kind == "embedder" and spec.backend == "clip" and spec.model_id is None
                and self.filter.backend == "clip"):
            return StageSpec(spec.backend, self.filter.model_id, dict(spec.options))
        if kind == "segmenter" and spec.backend == "sam3":  # the sam3 detector's masks: its model (provenance)
            return StageSpec(spec.backend, self.detector.model_id, dict(spec.options))
        if (kind == "detector" and spec.backend == "florence2-regions" and spec.model_id is None
                and self.captioner.backend == "florence2"):
            return StageSpec(spec.backend, self.captioner.model_id, dict(spec.options))
        if kind == "detector" and self.score_threshold is not None and spec.backend in DETECTOR_THRESHOLD:
            defaults = {name: self.score_threshold for name in DETECTOR_THRESHOLD[spec.backend]}
            return StageSpec(spec.backend, spec.model_id, {**defaults, **spec.options})
        return StageSpec(spec.backend, spec.model_id, dict(spec.options))

    def output_settings(self) -> dict[str, Any]:
        """Everything that changes what the perception stages write, as plain JSON values.

        Per stage: the backend, the model id (the backend's default when none is given) and every
        option the backend declares (its default when not given), except the options that change
        speed or memory only (batch sizes). Not included: ``device``, ``batch_size`` and
        ``low_memory``, nor the tag ``vocabulary`` and ``tags_per_image`` when the detector takes no
        prompts (``florence2-regions``: no photo is tagged).
        """
        stages: dict[str, Any] = {}
        for kind in STAGES:
            spec = self.stage_spec(kind)
            if spec.backend in BACKENDS[kind]:
                skip = tuning_options(kind, spec.backend)
                options = {k: spec.options.get(k, default) for k, default in backend_options(kind, spec.backend).items()
                           if k not in skip}
                model = None if spec.backend in NO_MODEL_BACKENDS else spec.model_id or DEFAULT_MODELS.get(spec.backend)
            else:  # an injected stage: what the config says about it
                options, model = dict(spec.options), spec.model_id
            stages[kind] = {"backend": spec.backend, "model_id": model, "options": options}
        settings = {"stages": stages, "dtype": self.dtype, "vocabulary": list(self.vocabulary),
                    "limits": asdict(self.limits)}
        for f in fields(self):
            if f.name not in settings and f.name not in STAGES and f.name not in ("device", "batch_size",
                                                                                   "low_memory"):
                settings[f.name] = getattr(self, f.name)
        if not backend_flag("detector", self.detector.backend, "takes_prompts"):
            del settings["vocabulary"], settings["tags_per_image"]
        return json.loads(json.dumps(settings, sort_keys=True, default=list))  # tuples -> lists

    def fingerprint(self) -> str:
        """A short hash of :meth:`output_settings`: equal fingerprints write the same outputs."""
        blob = json.dumps(self.output_settings(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["embedder"] = asdict(self.stage_spec("embedder"))
        d["detector"] = asdict(self.stage_spec("detector"))
        d["vocabulary"] = count(len(self.vocabulary), "tag")
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
        if "segmenter" not in kwargs and "detector" in kwargs and kwargs["detector"].backend == "sam3":
            kwargs["segmenter"] = StageSpec("sam3")  # SAM 3 segments what it detects
        try:
            config = cls(**kwargs)
            config.check()
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        return config

    def with_overrides(self, **changes: Any) -> PerceptionConfig:
        """A copy with the given fields replaced (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def load_perception_config(path: str | Path) -> PerceptionConfig:
    """Read a perception config from a ``.toml`` or ``.json`` file (see docs/photos.md)."""
    data = read_config_file(path, "perception config")
    return PerceptionConfig.from_dict(data, source=str(path))


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}." if isinstance(v, dict) and v else f"{prefix}{k}"))
    return out


def describe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two :meth:`PerceptionConfig.output_settings`, one short phrase per setting.

    >>> describe_changes({"iou_threshold": 0.5}, {"iou_threshold": 0.4})
    ['iou_threshold 0.5 -> 0.4']
    """
    a, b = _flat(old), _flat(new)
    # a stage with another backend: its model id and options follow, only the backend is named
    swapped = {key[: -len("backend")] for key in set(a) | set(b)
               if key.startswith("stages.") and key.endswith(".backend") and a.get(key) != b.get(key)}
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if x == y or any(key.startswith(p) and not key.endswith(".backend") for p in swapped):
            continue
        if isinstance(x, list) and isinstance(y, list):
            added = [v for v in y if v not in x]
            removed = [v for v in x if v not in y]
            parts = ([f"{count(len(added), 'entry', 'entries')} added ({shown(added)})"] if added else []) + \
                    ([f"{count(len(removed), 'entry', 'entries')} removed ({shown(removed)})"] if removed else [])
            out.append(f"{key}: {', '.join(parts) or 'reordered'}")
        else:
            out.append(f"{key} {x!r} -> {y!r}")
    return out
