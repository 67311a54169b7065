"""LoRA fine-tuning of an open vision-language model on spatialforge data (``spatialforge train``).

Needs the ``train`` extra (torch, transformers, peft, trl, datasets); importing this package does
not import them. Guide: docs/training.md.

    from spatialforge.vlmtrain import load_vlm_train_config, train_vlm
    config = load_vlm_train_config("train.toml", ["data.dataset=OUT", "train.max_steps=1000"])
    summary = train_vlm(config)
"""

from spatialforge.vlmtrain.config import (
    CLI_FIELDS,
    DEFAULT_BASE_MODEL,
    DataSettings,
    LoraSettings,
    ModelSettings,
    RunSettings,
    VLMTrainConfig,
    apply_overrides,
    cli_overrides,
    load_vlm_train_config,
)

__all__ = [
    "CLI_FIELDS",
    "DEFAULT_BASE_MODEL",
    "DataSettings",
    "LoraSettings",
    "ModelSettings",
    "RunSettings",
    "VLMTrainConfig",
    "apply_overrides",
    "cli_overrides",
    "load_vlm_train_config",
    "train_vlm",
]


def train_vlm(config, *, eval_fn=None, progress=True, log=None):
    """See :func:`spatialforge.vlmtrain.trainer.train_vlm` (imported lazily: it needs torch)."""
    from spatialforge.vlmtrain.trainer import train_vlm as _train_vlm

    return _train_vlm(config, eval_fn=eval_fn, progress=progress, log=log)
