"""``spatialforge train``: LoRA fine-tuning of an open VLM on a spatialforge dataset (docs/training.md).

The run folder (``--out``, else the config's ``train.output_dir``) is claimed before anything is
loaded (:func:`spatialforge.io.outdir.prepare_output_dir`, kind
:data:`~spatialforge.vlmtrain.config.TRAIN_OUTPUT`): it may not be an input (the dataset, the
general data, a local base model, the config file, the evaluation benchmark), lie inside one or
contain one; rerunning the same command resumes from the last checkpoint; ``--overwrite`` starts
again, deleting only what a training run writes. Errors about a value given by a flag name that
flag; values from ``--config`` or ``--set`` are named ``section.key``.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from spatialforge.cli.options import DEVICE_HELP, device, fraction, int_at_least, number_at_least
from spatialforge.errors import ConfigError

__all__ = ["add_train", "run_train"]

# option dest -> how a message names it (the flag the user types)
_FLAG_NAMES = {"dataset": "the DATASET argument"}
_SWITCHES = ("export_merged", "resume")  # on/off flags: "train.resume is off" cannot be said of --no-resume


def _flag(dest: str) -> str:
    return _FLAG_NAMES.get(dest, "--" + dest.replace("_", "-"))


def _nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def add_train(sub: Any) -> None:
    from spatialforge.vlmtrain.config import DataSettings, LoraSettings, ModelSettings, RunSettings

    def cfg(key: str, value: Any) -> str:
        return f"default: the config's {key}, {value}"

    p = sub.add_parser("train", help="fine-tune a VLM with LoRA on a spatialforge dataset (needs [train])",
                       description="LoRA fine-tuning (TRL SFTTrainer + PEFT) of an open VLM (default "
                                   "Qwen/Qwen2.5-VL-3B-Instruct) on a `spatialforge generate` output, optionally "
                                   "mixed with a general VQA dataset. Rerunning the same command resumes from the "
                                   "last checkpoint in --out; --overwrite starts again. Options override the "
                                   "--config file; --set overrides both.")
    p.add_argument("dataset", nargs="?", default=None, type=_nonempty,
                   help="a `spatialforge generate` output folder (default: the config's data.dataset)")
    p.add_argument("--out", default=None, type=_nonempty,
                   help="run folder: checkpoints, adapter/, merged/, train_summary.json "
                        f"({cfg('train.output_dir', RunSettings.output_dir)})")
    p.add_argument("--config", type=Path, default=None,
                   help="a .toml/.json config ([model] [lora] [data] [train]) (default: none, the built-in defaults "
                        "of docs/training.md)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config field, e.g. --set lora.alpha=64; repeatable, applied last "
                        "(default: none)")
    p.add_argument("--overwrite", action="store_true",
                   help="start again: delete what an earlier training run wrote in --out (nothing else) instead of "
                        "resuming")
    p.add_argument("--base-model", default=None, type=_nonempty,
                   help="hub id or local folder of the model to fine-tune "
                        f"({cfg('model.base_model', ModelSettings.base_model)})")
    p.add_argument("--general-data", default=None, type=_nonempty,
                   help="a general VQA dataset to mix in, HF name or folder (default: the config's data.general_data, "
                        "none)")
    p.add_argument("--general-split", default=None, type=_nonempty,
                   help=f"split of the general dataset ({cfg('data.general_split', DataSettings.general_split)})")
    p.add_argument("--spatial-share", type=fraction, default=None,
                   help="share of spatial examples in the mix, from 0 to 1 "
                        f"({cfg('data.spatial_share', DataSettings.spatial_share)})")
    p.add_argument("--max-qa-per-example", type=int_at_least(1), default=None,
                   help="QA pairs per spatial example "
                        f"({cfg('data.max_qa_per_example', DataSettings.max_qa_per_example)})")
    p.add_argument("--epochs", type=number_at_least(0.0, strict=True), default=None,
                   help=f"passes over the spatial data ({cfg('train.epochs', RunSettings.epochs)})")
    p.add_argument("--max-steps", type=int_at_least(1), default=None,
                   help="optimizer steps; overrides --epochs (default: the config's train.max_steps, none)")
    p.add_argument("--batch-size", type=int_at_least(1), default=None,
                   help=f"examples per device and micro-batch ({cfg('train.batch_size', RunSettings.batch_size)})")
    p.add_argument("--grad-accum", type=int_at_least(1), default=None,
                   help=f"gradient accumulation steps ({cfg('train.grad_accum', RunSettings.grad_accum)})")
    p.add_argument("--lr", type=number_at_least(0.0, strict=True), default=None,
                   help=f"learning rate ({cfg('train.lr', RunSettings.lr)})")
    p.add_argument("--lora-r", type=int_at_least(1), default=None,
                   help=f"LoRA rank ({cfg('lora.r', LoraSettings.r)})")
    p.add_argument("--train-vision", choices=("off", "lora", "full"), default=None,
                   help="freeze the vision tower (off), add LoRA to it, or train it fully "
                        f"({cfg('lora.train_vision', LoraSettings.train_vision)})")
    p.add_argument("--precision", choices=("auto", "no", "bf16", "fp16"), default=None,
                   help=f"mixed precision ({cfg('train.precision', RunSettings.precision)}: bf16 on CUDA when "
                        "supported, else fp16; none on the CPU)")
    p.add_argument("--device", type=device, default=None,
                   help=f"{DEVICE_HELP}; cuda uses every visible GPU ({cfg('train.device', RunSettings.device)})")
    p.add_argument("--seed", type=int_at_least(0), default=None,
                   help=f"LoRA initialisation, data mix and dropout seed ({cfg('train.seed', RunSettings.seed)})")
    p.add_argument("--save-steps", type=int_at_least(1), default=None,
                   help=f"optimizer steps between checkpoints ({cfg('train.save_steps', RunSettings.save_steps)})")
    p.add_argument("--export-merged", action="store_true", help="also save the LoRA-merged model to OUT/merged")
    p.add_argument("--no-resume", action="store_true",
                   help="refuse to continue a run found in --out (use --overwrite to start again)")
    g = p.add_argument_group("periodic evaluation")
    g.add_argument("--eval-benchmark", default=None,
                   help="a benchmark (as for `spatialforge eval run`) scored every --eval-every steps and at the end "
                        "(default: none, no evaluation)")
    g.add_argument("--eval-limit", type=int_at_least(1), default=200, help="questions per evaluation")
    g.add_argument("--eval-every", type=int_at_least(1), default=None,
                   help="optimizer steps between evaluations (default: only at the end)")
    g.add_argument("--image-root", default=None,
                   help="where the evaluation benchmark's images are (default: beside the benchmark's files)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _eval_fn(spec: str, limit: int, out_dir: Path, image_root: str | None = None) -> Any:
    """Score the model being trained on a fixed sample of the benchmark; returns headline metrics."""
    from spatialforge.eval.benchmarks import load_benchmark
    from spatialforge.eval.models.hf_vlm import HFVisionLanguageModel
    from spatialforge.eval.runner import FINGERPRINT, RECORDS, run_eval

    bench = load_benchmark(spec, image_root=image_root)
    if len(bench) > limit:
        bench = bench.subset(limit=limit, seed=0)

    def evaluate(model: Any, processor: Any, step: int) -> dict[str, Any]:
        tokenizer = getattr(processor, "tokenizer", None)
        side = getattr(tokenizer, "padding_side", None)
        step_dir = out_dir / f"step-{step:06d}"
        for name in (RECORDS, FINGERPRINT):  # always the model as it is now, never earlier answers
            (step_dir / name).unlink(missing_ok=True)
        try:
            wrapped = HFVisionLanguageModel.from_loaded(model, processor, name=f"step-{step}", max_new_tokens=48)
            summary = run_eval(bench, wrapped, step_dir, progress=False, n_boot=200)
        finally:
            if tokenizer is not None and side is not None:
                tokenizer.padding_side = side  # training pads on its own side
        o = summary["overall"]
        return {"accuracy": o["qualitative"]["accuracy"]["value"],
                "within_2x": o["quantitative"]["within_2x"]["value"], "mra": o["quantitative"]["mra"]["value"],
                "answered": o["answered"]["value"], "questions": o["n"]}

    return evaluate


class _Names:
    """Rewrites the config field names in a message to the flags that set them.

    A field set by ``--set`` (which has the last word) is named ``section.key``; otherwise by its flag
    when the flag was given, or when the config file does not set it either (the flag is how it
    would be changed); a field only the config file sets is named ``section.key``.
    """

    def __init__(self, given: set[str], file_keys: set[str], set_keys: set[str]) -> None:
        from spatialforge.vlmtrain.config import CLI_FIELDS

        self.flags = {key: _flag(dest) for dest, key in CLI_FIELDS.items()
                      if dest not in _SWITCHES and key not in set_keys and (dest in given or key not in file_keys)}

    def flag_for(self, key: str) -> str:
        return self.flags.get(key, key)

    def __call__(self, message: str) -> str:
        for key in sorted(self.flags, key=len, reverse=True):
            message = re.sub(rf"(?<![\w.]){re.escape(key)}(?![\w])", self.flags[key], message)
        return message


def _file_keys(path: Path | None) -> set[str]:
    """The ``section.key`` names a config file sets."""
    from spatialforge.io.config_file import read_config_file

    if path is None:
        return set()
    data = read_config_file(path, "training config")
    return {f"{section}.{k}" for section, table in data.items() if isinstance(table, dict) for k in table}


def _config(args: argparse.Namespace) -> tuple[Any, _Names]:
    """Defaults, then the config file, then the flags given (errors name the flag), then ``--set``."""
    from spatialforge.vlmtrain.config import CLI_FIELDS, VLMTrainConfig, apply_overrides, load_vlm_train_config

    opts = {dest: getattr(args, dest) for dest in CLI_FIELDS if dest not in ("export_merged", "resume")}
    opts["export_merged"] = True if args.export_merged else None
    opts["resume"] = False if args.no_resume else None
    if args.eval_every is not None:
        opts["eval_every"] = args.eval_every
    given = {dest for dest, value in opts.items() if value is not None}
    names = _Names(given, _file_keys(args.config), {item.partition("=")[0].strip() for item in args.overrides})
    config = load_vlm_train_config(args.config)
    fields = dict(CLI_FIELDS, eval_every="train.eval_every")
    for dest in sorted(given):
        section, _, name = fields[dest].partition(".")
        try:
            parts = {s: getattr(config, s) for s in ("model", "lora", "data", "train")}
            parts[section] = replace(parts[section], **{name: opts[dest]})
            config = VLMTrainConfig(**parts)
        except ConfigError as exc:
            raise ConfigError(names(str(exc))) from None
    return apply_overrides(config, list(args.overrides)), names


def run_train(args: argparse.Namespace) -> int:
    from spatialforge.cli.eval import claimed_output
    from spatialforge.eval.benchmarks import benchmark_path
    from spatialforge.vlmtrain import train_vlm
    from spatialforge.vlmtrain.config import TRAIN_OUTPUT

    if args.eval_every is not None and not args.eval_benchmark:
        raise ConfigError("--eval-every needs --eval-benchmark (the benchmark to score)")
    config, names = _config(args)
    try:
        config.data.check_sources()
    except ConfigError as exc:
        raise ConfigError(names(str(exc))) from None

    def local(value: str | None) -> Path | None:
        return Path(value) if value and Path(value).exists() else None

    out = Path(config.train.output_dir)
    inputs = [local(config.data.dataset), local(config.data.general_data), local(config.model.base_model),
              args.config, benchmark_path(args.eval_benchmark) if args.eval_benchmark else None, args.image_root]
    flag = names.flag_for("train.output_dir")
    with claimed_output(out, TRAIN_OUTPUT, inputs, args.overwrite, flag=flag) as prepared:
        if prepared.resumed and not config.train.resume and any(out.glob("checkpoint-*")):
            raise ConfigError(f"{flag} {out}: holds the checkpoints of an earlier run and resuming is off "
                              "(--no-resume, train.resume = false); use --overwrite to start again, or a new folder")
        eval_fn = None
        if args.eval_benchmark:
            eval_fn = _eval_fn(args.eval_benchmark, args.eval_limit, out / "eval", args.image_root)
        try:
            summary = train_vlm(config, eval_fn=eval_fn, progress=not args.no_progress)
        except ConfigError as exc:
            raise ConfigError(names(str(exc))) from None
    from spatialforge.vlmtrain.trainer import describe_loss

    print(f"steps: {summary.get('steps')}, {describe_loss(summary)}")
    if summary.get("evals"):
        print(f"last evaluation: {summary['evals'][-1]}")
    print(f"written to {out}")
    if summary.get("adapter_dir"):  # the adapter names its base model by an absolute path: usable from anywhere
        print(f"evaluate it with: spatialforge eval run --benchmark BENCHMARK --model "
              f"hf:{Path(summary['adapter_dir']).resolve()} --out FOLDER")
    return 0
