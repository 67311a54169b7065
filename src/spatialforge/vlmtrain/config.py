"""VLM fine-tuning configuration (torch-free): the model, the LoRA adapter, the data mix, the run.

A config file is TOML or JSON with any of the tables ``[model]``, ``[lora]``, ``[data]`` and
``[train]``; command-line overrides are ``section.key=value`` strings (``train.lr=1e-4``,
``data.spatial_share=0.05``, ``lora.target_modules=q_proj,v_proj``), parsed with the type of the
field they set. Unknown sections or keys are errors that name the file (or override) and the key.
See docs/training.md for every field.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spatialforge.errors import ConfigError
from spatialforge.io.config_file import read_config_file
from spatialforge.io.outdir import OutputKind
from spatialforge.io.sectioned_config import apply_section_overrides, sections_from_dict

__all__ = [
    "CLI_FIELDS",
    "DEFAULT_BASE_MODEL",
    "DEFAULT_TARGET_MODULES",
    "TRAIN_OUTPUT",
    "DataSettings",
    "LoraSettings",
    "ModelSettings",
    "RunSettings",
    "VLMTrainConfig",
    "apply_overrides",
    "cli_overrides",
    "load_vlm_train_config",
]

DEFAULT_BASE_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
# The language model's attention and MLP projections (Qwen2 / Llama naming). The vision tower is
# excluded by module path, not by name: Qwen2.5-VL's vision blocks reuse the MLP names.
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

_DTYPES = ("auto", "bfloat16", "float16", "float32")
_VISION_MODES = ("off", "lora", "full")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

#: what a training run writes in ``train.output_dir`` (``spatialforge train --overwrite`` deletes exactly these):
#: checkpoints, the adapter, the merged model, the summary, the resolved config, the periodic evaluations, the
#: model card TRL writes (README.md) and the ``runs/`` logs of ``report_to`` integrations such as tensorboard
TRAIN_OUTPUT = OutputKind("train-run", ("checkpoint-*", "adapter", "merged", "train_summary.json",
                                        "vlm_train_config.json", "evals.jsonl", "eval", "README.md", "runs"))


@dataclass(frozen=True)
class ModelSettings:
    """The base model: any ``AutoModelForImageTextToText`` hub id or local folder."""

    base_model: str = DEFAULT_BASE_MODEL
    revision: str | None = None
    # weights dtype; auto: bfloat16 on a CUDA device that supports it, float16 on other CUDA devices, else float32
    dtype: str = "auto"
    attn_implementation: str | None = None  # e.g. sdpa, flash_attention_2; none: the model's default
    # image pixel budget passed to the processor (Qwen2-VL family: bounds the number of image tokens); none: its own
    min_pixels: int | None = None
    max_pixels: int | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if not self.base_model.strip():
            raise ConfigError("model.base_model must not be empty")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"model.dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        for name in ("min_pixels", "max_pixels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"model.{name} must be >= 1 or none, got {value}")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ConfigError(f"model.min_pixels ({self.min_pixels}) must be <= model.max_pixels ({self.max_pixels})")


@dataclass(frozen=True)
class LoraSettings:
    """What is trained: LoRA adapters on the language model, and optionally the vision tower.

    ``train_vision``: ``off`` freezes the vision tower (the default and the paper's main setting);
    ``lora`` adds LoRA adapters (same r / alpha / dropout) to every linear layer of the vision
    tower, its patch merger included; ``full`` unfreezes the whole vision tower (trained and saved
    as a full copy next to the adapters). ``true`` / ``false`` are read as ``lora`` / ``off``.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    train_vision: str = "off"

    def __post_init__(self) -> None:
        if isinstance(self.train_vision, bool):
            object.__setattr__(self, "train_vision", "lora" if self.train_vision else "off")
        if self.r < 1 or self.alpha <= 0:
            raise ConfigError(f"lora.r must be >= 1 and lora.alpha > 0, got r={self.r}, alpha={self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules or any(not m.strip() for m in self.target_modules):
            raise ConfigError("lora.target_modules must name at least one module (e.g. q_proj,v_proj)")
        if self.train_vision not in _VISION_MODES:
            raise ConfigError(f"lora.train_vision must be one of {', '.join(_VISION_MODES)} (or true/false), "
                              f"got {self.train_vision!r}")


@dataclass(frozen=True)
class DataSettings:
    """The spatial dataset, the optional general VQA dataset, and how they are mixed.

    Mixing is **by examples**: each training example is spatial with probability
    ``spatial_share`` (a deterministic, seeded draw per position), otherwise general. One epoch
    shows every spatial example once (``ceil(n_spatial / spatial_share)`` examples); with
    ``spatial_share = 0`` it shows every general example once. The run summary reports the
    measured share in examples and in tokens.
    """

    dataset: str | None = None  # a `spatialforge generate` output folder (with data/*.parquet)
    general_data: str | None = None  # general VQA: a save_to_disk folder, a data file / folder, or a hub dataset
    general_split: str = "train"
    general_config: str | None = None  # the hub dataset's configuration name (load_dataset's `name`), if it has several
    general_limit: int | None = None  # use only the first N general rows
    spatial_share: float = 1.0
    max_qa_per_example: int = 5  # an image's QA turns are split into chunks of at most this many QA pairs
    max_length: int | None = 2048  # tokens per example (right-truncated; an error if that would cut image tokens)

    def __post_init__(self) -> None:
        if not 0 <= self.spatial_share <= 1:
            raise ConfigError(f"data.spatial_share must be in [0, 1], got {self.spatial_share}")
        if self.max_qa_per_example < 1:
            raise ConfigError(f"data.max_qa_per_example must be >= 1, got {self.max_qa_per_example}")
        if self.general_limit is not None and self.general_limit < 1:
            raise ConfigError(f"data.general_limit must be >= 1 or none, got {self.general_limit}")
        if self.max_length is not None and self.max_length < 16:
            raise ConfigError(f"data.max_length must be >= 16 or none, got {self.max_length}")

    def check_sources(self) -> None:
        """The combination of sources and share is usable (checked when a run starts)."""
        if self.spatial_share > 0 and not self.dataset:
            raise ConfigError("data.dataset (a spatialforge output folder) is required when data.spatial_share "
                              f"is above 0 (it is {self.spatial_share:g})")
        if self.spatial_share < 1 and not self.general_data:
            raise ConfigError(f"data.spatial_share {self.spatial_share:g} (below 1) needs data.general_data "
                              "(a general VQA dataset to mix in)")


@dataclass(frozen=True)
class RunSettings:
    """The optimisation run (TRL ``SFTTrainer`` on top of transformers' ``Trainer``)."""

    output_dir: str = "runs/vlm-lora"
    epochs: float = 1.0
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    batch_size: int = 4  # per device
    grad_accum: int = 4
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    schedule: str = "cosine"  # cosine | linear | constant (after warm-up)
    max_grad_norm: float = 1.0
    precision: str = "auto"  # auto (bf16 on CUDA when supported, else fp16; off on CPU) | no | bf16 | fp16
    gradient_checkpointing: bool = True
    # auto | cpu | cuda | cuda:N | mps (cuda uses every visible GPU; multi-GPU: `accelerate launch` / torchrun)
    device: str = "auto"
    seed: int = 0
    workers: int = 2  # dataloader worker processes (image decoding and the collator run there)
    log_every: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 3
    resume: bool = True  # continue from the last checkpoint-* in output_dir when there is one
    eval_every: int | None = None  # call the Python API's eval_fn every N optimizer steps (and at the end)
    export_merged: bool = False  # merge LoRA into the base and save model + processor to output_dir/merged
    report_to: str = "none"  # transformers reporting integrations, e.g. tensorboard, wandb

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "log_every", "save_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "save_total_limit", "eval_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"train.{name} must be >= 1 or none, got {value}")
        if self.epochs <= 0:
            raise ConfigError(f"train.epochs must be > 0, got {self.epochs}")
        if self.lr <= 0 or self.weight_decay < 0 or self.max_grad_norm <= 0 or self.workers < 0:
            raise ConfigError("train.lr and train.max_grad_norm must be > 0, train.weight_decay and "
                              "train.workers >= 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(f"train.schedule must be cosine, linear or constant, got {self.schedule!r}")
        if self.precision not in ("auto", "no", "bf16", "fp16"):
            raise ConfigError(f"train.precision must be auto, no, bf16 or fp16, got {self.precision!r}")
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise ConfigError(f"train.device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if not self.output_dir.strip():
            raise ConfigError("train.output_dir must not be empty")


_SECTIONS: dict[str, type] = {"model": ModelSettings, "lora": LoraSettings, "data": DataSettings,
                              "train": RunSettings}


@dataclass(frozen=True)
class VLMTrainConfig:
    model: ModelSettings = field(default_factory=ModelSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataSettings = field(default_factory=DataSettings)
    train: RunSettings = field(default_factory=RunSettings)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> VLMTrainConfig:
        return cls(**sections_from_dict(data, _SECTIONS, source, special=_train_vision))


def _train_vision(value: Any, where: str) -> Any:
    """``lora.train_vision``: a mode name, or a bool read as lora / off."""
    if not where.endswith(".train_vision"):
        return NotImplemented
    if isinstance(value, bool):
        return "lora" if value else "off"
    if isinstance(value, str):
        low = value.strip().lower()
        return {"true": "lora", "yes": "lora", "false": "off", "no": "off"}.get(low, low)
    raise ConfigError(f"{where}: expected off, lora, full, true or false, got {value!r}")


def apply_overrides(config: VLMTrainConfig, overrides: list[str] | tuple[str, ...]) -> VLMTrainConfig:
    """Apply ``section.key=value`` strings, e.g. ``["train.lr=1e-4", "data.spatial_share=0.05"]``."""
    sections = {name: getattr(config, name) for name in _SECTIONS}
    return VLMTrainConfig(**apply_section_overrides(sections, overrides, special=_train_vision))


CLI_FIELDS: dict[str, str] = {
    "dataset": "data.dataset",
    "out": "train.output_dir",
    "base_model": "model.base_model",
    "general_data": "data.general_data",
    "general_split": "data.general_split",
    "spatial_share": "data.spatial_share",
    "max_qa_per_example": "data.max_qa_per_example",
    "epochs": "train.epochs",
    "max_steps": "train.max_steps",
    "batch_size": "train.batch_size",
    "grad_accum": "train.grad_accum",
    "lr": "train.lr",
    "lora_r": "lora.r",
    "train_vision": "lora.train_vision",
    "precision": "train.precision",
    "device": "train.device",
    "seed": "train.seed",
    "save_steps": "train.save_steps",
    "export_merged": "train.export_merged",
    "resume": "train.resume",
}


def cli_overrides(options: dict[str, Any]) -> list[str]:
    """``section.key=value`` strings for the command-line options that were given (not None), per :data:`CLI_FIELDS`.

    Apply them after the config file and before ``--set`` overrides, so ``--set`` has the last word.
    """
    out = []
    for name, key in CLI_FIELDS.items():
        value = options.get(name)
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        out.append(f"{key}={value}")
    return out


def load_vlm_train_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> VLMTrainConfig:
    """The defaults, or a ``.toml`` / ``.json`` file, then the overrides."""
    config = VLMTrainConfig()
    if path is not None:
        config = VLMTrainConfig.from_dict(read_config_file(path, "training config"), source=str(path))
    return apply_overrides(config, overrides)
