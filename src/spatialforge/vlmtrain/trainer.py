"""LoRA fine-tuning of an open VLM on spatialforge data (TRL ``SFTTrainer`` + PEFT).

:func:`train_vlm` loads the base model and processor, wraps the model with LoRA adapters on the
language model's projections (the vision tower frozen, LoRA-adapted or fully trained, see
``lora.train_vision``), builds the deterministic spatial / general mix, trains with its own
assistant-only collator, saves checkpoints (resumable), the final adapter, optionally the merged
model, and a run summary (``train_summary.json``). Recipe and numbers: docs/training.md.

The spatial examples are the conversations ``spatialforge eval run`` sends (the evaluation's
system prompt, the question with its answer-format instruction: see
:mod:`spatialforge.vlmtrain.data`), so the adapter is evaluated on what it was trained on. A local
base model is loaded by its absolute path, which PEFT stores as ``base_model_name_or_path`` in the
adapter's ``adapter_config.json`` (a hub id is stored as it is, with ``model.revision``): the
adapter loads from any working directory (``eval run --model hf:RUN/adapter``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spatialforge._optional import require
from spatialforge._text import count
from spatialforge.errors import ConfigError, SpatialForgeError
from spatialforge.eval.models.base import SYSTEM_PROMPT
from spatialforge.eval.models.hf_vlm import system_turn_supported
from spatialforge.io.dataset import atomic_write_json
from spatialforge.io.outdir import prepare_output_dir
from spatialforge.vlmtrain.config import TRAIN_OUTPUT, LoraSettings, ModelSettings, VLMTrainConfig
from spatialforge.vlmtrain.data import (
    SOURCE_KEY,
    AssistantOnlyCollator,
    GeneralExamples,
    MixedExamples,
    PositionCollator,
    SpatialExamples,
    mix_schedule,
    open_general_dataset,
    plan_length,
)

__all__ = [
    "ADAPTER_DIR",
    "CONFIG_FILE",
    "MERGED_DIR",
    "SUMMARY_FILE",
    "EvalFn",
    "base_model_source",
    "build_lora_model",
    "describe_loss",
    "load_base_model",
    "load_processor",
    "lora_target_modules",
    "train_vlm",
    "vision_tower_prefixes",
]

ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
SUMMARY_FILE = "train_summary.json"
CONFIG_FILE = "vlm_train_config.json"

EvalFn = Callable[[Any, Any, int], Mapping[str, Any]]

# Attribute names under which transformers' VLMs keep their vision encoder (Qwen2/2.5-VL: `visual`).
_VISION_NAMES = ("visual", "vision_tower", "vision_model", "vision_encoder", "image_encoder")
_SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}
# Settings a resumed run must share with the run that wrote the checkpoints (the data order depends on them).
_RESUME_KEYS = {"model": None, "lora": None, "data": None, "train": ("seed", "batch_size", "grad_accum")}


def _log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Model, processor, adapters


def _torch_dtype(torch: Any, name: str, cuda: bool) -> Any:
    if name == "auto":
        if not cuda:
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, name)


def base_model_source(settings: ModelSettings) -> str:
    """What ``from_pretrained`` gets for ``settings.base_model``: a local folder as its absolute path (so that the
    adapter's ``base_model_name_or_path`` works from anywhere), a hub id as it is."""
    path = Path(settings.base_model)
    return str(path.resolve()) if path.is_dir() else settings.base_model


def load_processor(settings: ModelSettings) -> Any:
    """``AutoProcessor`` for ``settings.base_model`` (hub id or folder), with the pixel budget applied."""
    transformers = require("transformers", extra="train", feature="VLM training")
    kwargs: dict[str, Any] = {"revision": settings.revision, "trust_remote_code": settings.trust_remote_code}
    if settings.min_pixels is not None:
        kwargs["min_pixels"] = settings.min_pixels
    if settings.max_pixels is not None:
        kwargs["max_pixels"] = settings.max_pixels
    try:
        processor = transformers.AutoProcessor.from_pretrained(base_model_source(settings), **kwargs)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.base_model {settings.base_model!r}: cannot load the processor ({exc})") from None
    if not hasattr(processor, "tokenizer") or not getattr(processor, "chat_template", None):
        raise ConfigError(f"model.base_model {settings.base_model!r}: needs a multimodal processor with a chat "
                          "template (an image-text-to-text model)")
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return processor


def load_base_model(settings: ModelSettings, *, cuda: bool) -> Any:
    """``AutoModelForImageTextToText`` for ``settings.base_model`` in the configured dtype (on the CPU)."""
    torch = require("torch", extra="train", feature="VLM training")
    transformers = require("transformers", extra="train", feature="VLM training")
    kwargs: dict[str, Any] = {"revision": settings.revision, "trust_remote_code": settings.trust_remote_code,
                              "dtype": _torch_dtype(torch, settings.dtype, cuda)}
    if settings.attn_implementation:
        kwargs["attn_implementation"] = settings.attn_implementation
    try:
        return transformers.AutoModelForImageTextToText.from_pretrained(base_model_source(settings), **kwargs)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.base_model {settings.base_model!r}: cannot load the model ({exc})") from None


def vision_tower_prefixes(model: Any) -> list[str]:
    """Module paths of the vision encoder(s), e.g. ``["model.visual"]`` for Qwen2.5-VL."""
    prefixes: list[str] = []
    for name, _ in model.named_modules():
        if name.rsplit(".", 1)[-1] in _VISION_NAMES and not any(name.startswith(p + ".") for p in prefixes):
            prefixes.append(name)
    return prefixes


def lora_target_modules(model: Any, settings: LoraSettings) -> list[str]:
    """Full paths of the linear layers that get LoRA adapters.

    Outside the vision tower: the linear layers whose last name is in ``settings.target_modules``
    (never the output embedding). Inside it: every linear layer when ``train_vision == "lora"``,
    none otherwise.
    """
    torch = require("torch", extra="train", feature="VLM training")
    vision = vision_tower_prefixes(model)
    if settings.train_vision != "off" and not vision:
        raise ConfigError(f"lora.train_vision={settings.train_vision!r}: no vision tower found in "
                          f"{type(model).__name__} (looked for modules named {', '.join(_VISION_NAMES)})")
    head = model.get_output_embeddings()
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is head:
            continue
        if any(name == p or name.startswith(p + ".") for p in vision):
            if settings.train_vision == "lora":
                names.append(name)
        elif name.rsplit(".", 1)[-1] in settings.target_modules:
            names.append(name)
    if not any(not any(n.startswith(p + ".") for p in vision) for n in names):
        raise ConfigError(f"lora.target_modules ({', '.join(settings.target_modules)}) match no linear layer of "
                          f"the language model of {type(model).__name__}")
    return names


def build_lora_model(model: Any, settings: LoraSettings, revision: str | None = None) -> Any:
    """Wrap ``model`` with LoRA adapters (and a trainable vision copy for ``train_vision = "full"``); ``revision``:
    the hub revision of the base model, stored in the adapter config."""
    peft = require("peft", extra="train", feature="LoRA fine-tuning")
    modules_to_save = vision_tower_prefixes(model) if settings.train_vision == "full" else None
    if settings.train_vision == "full" and not modules_to_save:
        raise ConfigError(f"lora.train_vision='full': no vision tower found in {type(model).__name__}")
    lora = peft.LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, bias="none",
        target_modules=lora_target_modules(model, settings), modules_to_save=modules_to_save,
        task_type="CAUSAL_LM")
    return peft.get_peft_model(model, lora, revision=revision)


def _parameter_counts(model: Any) -> tuple[int, int]:
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


# ----------------------------------------------------------------------------------------------------------------
# Trainer pieces


@dataclass
class _MixCounts:
    """Examples and tokens per source, counted on the batches the trainer actually consumed."""

    examples: list[int]
    tokens: list[int]
    supervised: list[int]

    @classmethod
    def empty(cls) -> _MixCounts:
        return cls([0, 0], [0, 0], [0, 0])

    def add(self, is_spatial: Any, inputs: Mapping[str, Any]) -> None:
        flags = is_spatial.tolist()
        mask = inputs.get("attention_mask")
        lengths = mask.sum(dim=1).tolist() if mask is not None else [inputs["input_ids"].shape[1]] * len(flags)
        supervised = (inputs["labels"] != -100).sum(dim=1).tolist()
        for flag, n_tok, n_sup in zip(flags, lengths, supervised, strict=True):
            k = 1 if flag else 0
            self.examples[k] += 1
            self.tokens[k] += int(n_tok)
            self.supervised[k] += int(n_sup)

    def summary(self) -> dict[str, Any]:
        def share(pair: list[int]) -> float | None:
            return pair[1] / sum(pair) if sum(pair) else None

        return {
            "examples": {"spatial": self.examples[1], "general": self.examples[0]},
            "tokens": {"spatial": self.tokens[1], "general": self.tokens[0]},
            "supervised_tokens": {"spatial": self.supervised[1], "general": self.supervised[0]},
            "spatial_share_examples": share(self.examples),
            "spatial_share_tokens": share(self.tokens),
            "spatial_share_supervised_tokens": share(self.supervised),
        }


def _trainer_class(trl: Any) -> type:
    class SpatialSFTTrainer(trl.SFTTrainer):
        """``SFTTrainer`` that removes the collator's source flags and counts the mix with them."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.mix_counts = _MixCounts.empty()

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            # the mix schedule is already the shuffle: read it in order (also what makes resuming exact)
            import torch

            return torch.utils.data.SequentialSampler(train_dataset if train_dataset is not None else
                                                      self.train_dataset)

        def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
            flags = inputs.pop(SOURCE_KEY, None)
            if flags is not None:
                self.mix_counts.add(flags, inputs)
            return super().training_step(model, inputs, num_items_in_batch)

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            inputs.pop(SOURCE_KEY, None)
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return SpatialSFTTrainer


def _all_evals(path: Path) -> list[dict[str, Any]]:
    """Every evaluation of the run, this process's and those before a resume (last one per step)."""
    by_step: dict[int, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line
            by_step[int(rec["step"])] = rec
    return [by_step[k] for k in sorted(by_step)]


def _eval_callback(transformers: Any, torch: Any, eval_fn: EvalFn, every: int | None, processor: Any,
                   log: Callable[[str], None], record_path: Path | None = None) -> Any:
    class EvalHook(transformers.TrainerCallback):
        """Calls ``eval_fn(model, processor, step)`` every ``every`` steps and after the last step."""

        def __init__(self) -> None:
            self.trainer: Any = None
            self.results: list[dict[str, Any]] = []
            self.last_step = -1

        def run(self, step: int, control: Any = None) -> None:
            model = self.trainer.model
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    result = eval_fn(model, processor, step)
                if not isinstance(result, Mapping):
                    raise SpatialForgeError(f"eval_fn must return a mapping, got {type(result).__name__}")
                numbers = {f"eval/{k}": float(v) for k, v in result.items()
                           if isinstance(v, (int, float)) and not isinstance(v, bool)}
                if numbers:
                    # Trainer.log runs the on_log callbacks, which clear the step's pending log / save flags:
                    # keep them, so the training loss of this step is still logged and the checkpoint saved.
                    flags = (control.should_log, control.should_save) if control is not None else None
                    self.trainer.log(numbers)  # in eval mode: TRL adds no training metrics to this entry
                    if flags is not None:
                        control.should_log, control.should_save = flags
            finally:
                if was_training:
                    model.train()
            self.results.append({"step": step, "metrics": dict(result)})
            self.last_step = step
            if record_path is not None:  # kept across resumes: the run summary lists every evaluation
                with record_path.open("a") as f:
                    f.write(json.dumps(_jsonable(self.results[-1]), default=str) + "\n")
            log(f"eval at step {step}: {json.dumps(dict(result), default=str)}")

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if every and state.global_step % every == 0 and state.is_world_process_zero:
                self.run(state.global_step, control)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step != self.last_step and state.is_world_process_zero:
                self.run(state.global_step)

    return EvalHook()


def _resume_checkpoint(out: Path, config: VLMTrainConfig) -> str | None:
    """The last ``checkpoint-N`` folder to resume from (``None`` for a fresh run); checks the stored config."""
    checkpoints = [p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    if not checkpoints:
        return None
    if not config.train.resume:  # a fresh run would mix its checkpoints with the old ones
        raise ConfigError(f"{out}: already holds checkpoints ({', '.join(sorted(p.name for p in checkpoints))}) "
                          "and train.resume is off: use a new train.output_dir, or start again (--overwrite)")
    stored_path = out / CONFIG_FILE
    if stored_path.is_file():
        stored = json.loads(stored_path.read_text())
        if stored.get("prompt") != _training_prompt():  # the conversation the examples are written in
            raise ConfigError(f"{out}: holds checkpoints trained with another prompt (system prompt or answer "
                              "instructions; an older spatialforge); use a new train.output_dir, or start again "
                              "(--overwrite)")
        current = config.to_dict()
        for section, keys in _RESUME_KEYS.items():
            a, b = stored.get(section, {}), current[section]
            names = keys if keys is not None else sorted(set(a) | set(b))
            changed = [k for k in names if _jsonable(a.get(k)) != _jsonable(b.get(k))]
            if changed:
                raise ConfigError(f"{out}: holds checkpoints of a run with different "
                                  f"{', '.join(f'{section}.{k}' for k in changed)}; resume with the same settings, "
                                  "use a new train.output_dir, or start again (--overwrite)")
    return str(max(checkpoints, key=lambda p: int(p.name.split("-", 1)[1])))


def _training_prompt() -> dict[str, Any]:
    """The prompt the training examples are written in (the `eval run` prompt): stored with the run, so a resume
    never trains the rest of a run on other text."""
    from spatialforge.eval.models.base import SYSTEM_PROMPT, prompt_fingerprint

    return prompt_fingerprint("default", SYSTEM_PROMPT)


def _checkpoint_step(checkpoint: str | None) -> int:
    """The optimizer step a checkpoint was saved at (0 without one)."""
    if checkpoint is None:
        return 0
    state = Path(checkpoint) / "trainer_state.json"
    if state.is_file():
        return int(json.loads(state.read_text()).get("global_step", 0))
    return int(Path(checkpoint).name.split("-", 1)[1])


def _checkpointing_args(trl: Any, enabled: bool) -> dict[str, Any]:
    """Activation (gradient) checkpointing settings, under the name this transformers version uses."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(trl.SFTConfig)}
    prefix = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {prefix: enabled, f"{prefix}_kwargs": {"use_reentrant": False} if enabled else None}


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (anything else as its ``str``)."""
    return json.loads(json.dumps(value, default=str))


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("spatialforge", "torch", "transformers", "peft", "trl", "accelerate", "datasets"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


# ----------------------------------------------------------------------------------------------------------------
# The run


def train_vlm(config: VLMTrainConfig, *, eval_fn: EvalFn | None = None, progress: bool = True,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fine-tune ``config.model.base_model`` with LoRA; returns the run summary (also written to
    ``output_dir/train_summary.json``).

    ``train.output_dir`` is claimed first (:func:`~spatialforge.io.outdir.prepare_output_dir`, kind
    :data:`~spatialforge.vlmtrain.config.TRAIN_OUTPUT`): a non-empty folder that no training run
    wrote, or one that is, contains or lies inside the dataset, the general data or a local base
    model, is refused before anything is loaded; a folder of an earlier run is resumed.

    ``eval_fn(model, processor, step) -> dict`` (optional) is called every ``train.eval_every``
    optimizer steps and after the last one, with the adapted model in eval mode under
    ``torch.no_grad()``; its numeric values are logged as ``eval/<key>`` and every result is kept
    in the summary's ``evals``.
    """
    wall_start = time.perf_counter()
    log = log or _log_stderr
    torch = require("torch", extra="train", feature="VLM training")
    transformers = require("transformers", extra="train", feature="VLM training")
    trl = require("trl", extra="train", feature="VLM training")
    require("peft", extra="train", feature="LoRA fine-tuning")
    run, data = config.train, config.data
    data.check_sources()
    cuda = _check_device(torch, run.device)
    precision = run.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "no"
    if precision == "fp16" and not cuda:
        raise ConfigError("train.precision fp16 needs a CUDA device (use no or bf16 on the CPU)")

    out = Path(run.output_dir)
    # claim the run folder before anything is loaded (a no-op when `spatialforge train` already did)
    local = [Path(p) for p in (data.dataset, data.general_data, config.model.base_model) if p and Path(p).exists()]
    prepare_output_dir(out, TRAIN_OUTPUT, inputs=local, flag="train.output_dir")
    resume_from = _resume_checkpoint(out, config)
    atomic_write_json(out / CONFIG_FILE, dict(config.to_dict(), prompt=_training_prompt()))

    transformers.set_seed(run.seed)
    processor = load_processor(config.model)
    # the conversation layout of `eval run` (hf backend): its system prompt, as a turn if the template takes one
    system_in_user = not system_turn_supported(processor)
    spatial = (SpatialExamples(data.dataset, data.max_qa_per_example, system_in_user=system_in_user)
               if data.spatial_share > 0 else None)
    general = None
    if data.spatial_share < 1:
        general = GeneralExamples(open_general_dataset(data.general_data, data.general_split, data.general_config),
                                  name=str(data.general_data), limit=data.general_limit)
    n_spatial, n_general = len(spatial or ()), len(general or ())
    log(f"examples: {n_spatial} spatial (from {count(len(spatial.scene_ids) if spatial else 0, 'image')}), "
        f"{n_general} general; spatial share {data.spatial_share:g} (by examples)")
    if spatial is not None and spatial.skipped_questions:
        log(f"left out {count(sum(spatial.skipped_questions.values()), 'question')} of {data.dataset}: "
            + ", ".join(f"{k} {v}" for k, v in spatial.skipped_questions.items())
            + " (point questions whose row has no afford entry)")

    model = load_base_model(config.model, cuda=cuda)
    model = build_lora_model(model, config.lora, revision=config.model.revision)
    trainable, total = _parameter_counts(model)
    log(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.3f} %)")

    args = trl.SFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=run.batch_size,
        gradient_accumulation_steps=run.grad_accum,
        learning_rate=run.lr,
        weight_decay=run.weight_decay,
        warmup_steps=run.warmup_ratio,  # < 1: a ratio of the total steps
        lr_scheduler_type=_SCHEDULES[run.schedule],
        max_grad_norm=run.max_grad_norm,
        num_train_epochs=1.0,  # the epochs are laid out in the mix schedule
        max_steps=run.max_steps if run.max_steps is not None else -1,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        **_checkpointing_args(trl, run.gradient_checkpointing),
        logging_steps=run.log_every,
        save_strategy="steps",
        save_steps=run.save_steps,
        save_total_limit=run.save_total_limit,
        seed=run.seed,
        data_seed=run.seed,
        use_cpu=run.device == "cpu",  # cuda, cuda:N (one visible GPU), mps and auto: the Trainer's own choice
        dataloader_num_workers=run.workers,
        report_to=run.report_to,
        disable_tqdm=not progress,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,
        packing=False,
    )
    per_step = run.batch_size * run.grad_accum * args.world_size
    if run.max_steps is not None:
        length = run.max_steps * per_step
    else:
        length = plan_length(n_spatial, n_general, data.spatial_share, run.epochs)
    order = mix_schedule(n_spatial, n_general, data.spatial_share, length, run.seed)
    train_set = MixedExamples(spatial, general, order)
    collator = PositionCollator(train_set, AssistantOnlyCollator(processor, max_length=data.max_length))

    trainer = _trainer_class(trl)(model=model, args=args, train_dataset=train_set.positions_dataset(),
                                  data_collator=collator, processing_class=processor)
    hook = None
    if not resume_from:  # a new run: earlier evaluations in this folder are not this run's
        (out / "evals.jsonl").unlink(missing_ok=True)
    if eval_fn is not None:
        hook = _eval_callback(transformers, torch, eval_fn, run.eval_every, processor, log,
                              record_path=out / "evals.jsonl")
        hook.trainer = trainer
        trainer.add_callback(hook)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    if resume_from:
        log(f"resuming from {resume_from}")
    start_step = _checkpoint_step(resume_from)
    t0 = time.perf_counter()
    train_output = trainer.train(resume_from_checkpoint=resume_from)
    train_time = time.perf_counter() - t0

    adapter_dir = out / ADAPTER_DIR
    trainer.save_model(str(adapter_dir))  # the adapter (and a full vision copy for train_vision=full) + processor
    merged_dir = None
    if run.export_merged and trainer.is_world_process_zero():
        merged_dir = out / MERGED_DIR
        _export_merged(trainer.model, processor, merged_dir)
        log(f"merged model written to {merged_dir}")

    history = trainer.state.log_history
    losses = [{"step": int(e["step"]), "loss": float(e["loss"])} for e in history if "loss" in e]
    steps = trainer.state.global_step
    consumed = min(len(order), steps * per_step)
    summary = {
        "format": "spatialforge-vlm-train-summary/1",
        "base_model": config.model.base_model,
        "base_model_source": base_model_source(config.model),
        # the spatial examples' conversation: what `eval run` sends (see spatialforge.eval.models.base)
        "prompt": {"style": spatial.prompt_style if spatial else "default",
                   "system_prompt": spatial.system_prompt if spatial else SYSTEM_PROMPT,
                   "system_prompt_in_user_turn": system_in_user},
        "steps": steps,
        "resumed_from": resume_from,
        "final_loss": losses[-1]["loss"] if losses else None,
        # the mean training loss over this process's steps (also when none was logged: log_every > steps)
        "mean_loss": _finite_or_none(getattr(train_output, "training_loss", None)),
        "log_every": run.log_every,
        "loss_history": losses,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "train_vision": config.lora.train_vision,
        "examples": {"spatial": n_spatial, "general": n_general, "schedule_length": len(order),
                     "per_step": per_step},
        "mix": {
            "configured_spatial_share": data.spatial_share,
            "scheduled_spatial_share_examples": train_set.spatial_share(consumed),
            # measured on the batches this process trained on (after a resume: from the resumed step on)
            "measured": {"from_step": start_step, **trainer.mix_counts.summary()},
        },
        "precision": precision,
        "device": str(args.device),
        "time_s": round(train_time, 3),  # the training loop (without loading and export)
        "wall_time_s": round(time.perf_counter() - wall_start, 3),
        "peak_gpu_memory_bytes": int(torch.cuda.max_memory_allocated()) if cuda else None,
        "evals": _all_evals(out / "evals.jsonl") if hook is not None else [],
        "output_dir": str(out),
        "adapter_dir": str(adapter_dir),
        "merged_dir": str(merged_dir) if merged_dir else None,
        "versions": _versions(),
        "config": config.to_dict(),
    }
    if trainer.is_world_process_zero():
        atomic_write_json(out / SUMMARY_FILE, summary)
    measured = summary["mix"]["measured"]
    log(f"done: {count(steps, 'step')} in {train_time:.1f} s, {describe_loss(summary)}, spatial share "
        f"{_fmt(measured['spatial_share_examples'])} of examples / {_fmt(measured['spatial_share_tokens'])} "
        "of tokens")
    return summary


def _check_device(torch: Any, device: str) -> bool:
    """Check that ``train.device`` can be used here; True when training runs on CUDA."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device {device}: CUDA is not available")
        if ":" in device:
            index, count = int(device.split(":", 1)[1]), torch.cuda.devicecount()
            if index >= count:
                raise ConfigError(f"train.device {device}: only {count(count, 'CUDA device')} visible")
            if count > 1:  # transformers' Trainer spreads one process over every visible GPU
                raise ConfigError(f"train.device {device}: {count} GPUs are visible and the trainer uses all of "
                                  f"them; make GPU {index} the only one with CUDA_VISIBLE_DEVICES={index}")
        return True
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("train.device mps: the MPS backend is not available")
        return False
    return device == "auto" and torch.cuda.is_available()


def describe_loss(summary: Mapping[str, Any]) -> str:
    """The loss in one phrase: the last logged loss, else why none was logged and the mean loss."""
    losses = summary.get("loss_history") or []
    if summary.get("final_loss") is not None and losses:
        return f"final loss {summary['final_loss']:.4g} (logged at step {losses[-1]['step']})"
    steps = int(summary.get("steps") or 0)
    text = f"no loss logged ({count(steps, 'step')}; a loss is logged every {summary.get('log_every', '?')}: " \
           "train.log_every)"
    mean = summary.get("mean_loss")
    return text + (f", mean training loss {mean:.4g}" if mean is not None else "")


def _finite_or_none(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def _export_merged(peft_model: Any, processor: Any, folder: Path) -> None:
    """Merge the adapters into the base weights and save a plain ``from_pretrained`` folder."""
    merged = peft_model.merge_and_unload()
    for cfg in {id(c): c for c in (merged.config, merged.config.get_text_config())}.values():
        cfg.use_cache = True
    folder.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
