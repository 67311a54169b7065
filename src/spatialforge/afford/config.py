"""AffordanceCLIP configuration: the model and the training run (torch-free).

A config file is TOML or JSON with a ``[model]`` and a ``[train]`` table; command-line overrides
are ``section.key=value`` strings (``train.lr=3e-4``, ``model.fpn_dim=128``), parsed with the type
of the field they set. Unknown keys are errors that name the file (or override) and the key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spatialforge.errors import ConfigError
from spatialforge.io.config_file import read_config_file
from spatialforge.io.sectioned_config import apply_section_overrides, sections_from_dict

__all__ = ["DEFAULT_DATASETS", "FLAGS", "RESUMABLE_CHANGES", "AffordConfig", "ModelConfig", "TrainConfig",
           "apply_overrides", "config_changes", "describe_change", "load_afford_config"]

DEFAULT_DATASETS = ("refcoco/unc", "refcoco+/unc", "refcocog/umd")
"""RefCOCO, RefCOCO+ and RefCOCOg (their usual splits): what AffordanceCLIP trains on."""

FLAGS = {"train.data_root": "--data-root", "train.datasets": "--datasets", "train.image_dir": "--image-dir",
         "train.steps": "--steps", "train.batch_size": "--batch-size", "train.lr": "--lr",
         "train.device": "--device"}
"""The ``afford train`` flag that sets a config key (error messages name both)."""

RESUMABLE_CHANGES = frozenset({"train.device", "train.workers", "train.data_root", "train.image_dir"})
"""Keys a resumed run may change: where it runs and where the same data lives (the number of training
refs is checked on resume), nothing that changes what is trained. A longer ``train.steps`` needs
``extend`` (``--extend``)."""


@dataclass(frozen=True)
class ModelConfig:
    """The frozen CLIP (any open_clip ModifiedResNet CLIP) and the trainable FPN + head."""

    clip_model: str = "RN101-quickgelu"  # open_clip name, or "local-dir:/path" / "hf-hub:org/repo"
    clip_pretrained: str | None = "openai"  # open_clip tag or weights file; None = random init
    image_size: int = 224  # square input; the attention pool's position embedding is interpolated if not 224
    fpn_dim: int = 256  # C': channels inside the FPN
    normalize_pixels: bool = False  # False: dot product with the raw pixel embedding (as the paper); True: cosine
    logit_scale_init: float = 1.0
    logit_bias_init: float = -3.0
    templates: str | tuple[str, ...] = "ensemble"  # inference prompt templates (prompts.TEMPLATE_SETS or a list)

    def __post_init__(self) -> None:
        if self.image_size < 32 or self.image_size % 32:
            raise ConfigError(f"model.image_size must be a multiple of 32 and >= 32, got {self.image_size}")
        if self.fpn_dim < 1:
            raise ConfigError(f"model.fpn_dim must be >= 1, got {self.fpn_dim}")
        if self.logit_scale_init <= 0:
            raise ConfigError(f"model.logit_scale_init must be > 0, got {self.logit_scale_init}")
        from spatialforge.afford.prompts import expand_prompts

        expand_prompts(["x"], self.templates)  # raises a ConfigError naming a bad template set


@dataclass(frozen=True)
class TrainConfig:
    """A referring-segmentation training run (RefCOCO family, or the synthetic shapes task)."""

    data_root: str | None = None  # the refer distribution's data folder
    # any of refcoco[/unc|google], refcoco+[/unc|google], refcocog[/umd|google], or "shapes" (synthetic);
    # the default is the method's setting: the three datasets together
    datasets: tuple[str, ...] = DEFAULT_DATASETS
    split: str = "train"
    # validation: RefCOCO (UNC) val, the usual referring-segmentation benchmark split; training refs on its
    # images are dropped (exclude_val_images), since the three datasets share COCO images
    val_datasets: tuple[str, ...] = ("refcoco/unc",)
    val_split: str = "val"
    exclude_val_images: bool = True  # drop training refs whose COCO image is in the validation split
    image_dir: str | None = None  # COCO train2014 images (default: the refer layout under data_root)
    steps: int = 20000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 500
    schedule: str = "cosine"  # cosine | linear | constant (after warm-up)
    min_lr_ratio: float = 0.05
    loss: str = "bce"  # bce: mean over all pixels | balanced: mean of the positive and the negative pixels' means
    amp: str = "auto"  # auto (bf16 on CUDA when supported, else fp16; off on CPU) | off | bf16 | fp16
    device: str = "auto"
    seed: int = 0
    workers: int = 2
    log_every: int = 50
    val_every: int = 1000
    val_max_refs: int | None = 1000  # None: the whole validation split
    save_every: int = 1000
    grad_clip: float | None = 1.0

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "grad_accum", "log_every", "val_every", "save_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0 or self.workers < 0:
            raise ConfigError("train.lr must be > 0 and weight_decay, warmup_steps, workers >= 0")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(f"train.schedule must be cosine, linear or constant, got {self.schedule!r}")
        if self.loss not in ("bce", "balanced"):
            raise ConfigError(f"train.loss must be bce or balanced, got {self.loss!r}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ConfigError(f"train.amp must be auto, off, bf16 or fp16, got {self.amp!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.val_max_refs is not None and self.val_max_refs < 1:
            raise ConfigError(f"train.val_max_refs must be >= 1 or none, got {self.val_max_refs}")


@dataclass(frozen=True)
class AffordConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> AffordConfig:
        return cls(**sections_from_dict(data, {"model": ModelConfig, "train": TrainConfig}, source))


def apply_overrides(config: AffordConfig, overrides: list[str] | tuple[str, ...]) -> AffordConfig:
    """Apply ``section.key=value`` strings, e.g. ``["train.lr=3e-4", "model.clip_pretrained=none"]``."""
    return AffordConfig(**apply_section_overrides({"model": config.model, "train": config.train}, overrides,
                                                  example="train.lr=3e-4"))


def load_afford_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> AffordConfig:
    """The defaults, or a ``.toml`` / ``.json`` file, then the overrides."""
    config = AffordConfig()
    if path is not None:
        config = AffordConfig.from_dict(read_config_file(path, "config"), source=str(path))
    return apply_overrides(config, overrides)


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def config_changes(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, before, after)`` for every key of two ``AffordConfig.to_dict()`` dicts that differs."""
    a, b = _flat(before), _flat(after)
    return [(k, a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def describe_change(key: str, before: Any, after: Any) -> str:
    """``"train.lr (--lr) 0.001 -> 0.002"``."""
    flag = f" ({FLAGS[key]})" if key in FLAGS else ""
    return f"{key}{flag} {before!r} -> {after!r}"
