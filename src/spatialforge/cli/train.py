"""``spatialforge train``: LoRA fine-tuning of an open VLM on a spatialforge dataset (docs/training.md)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from spatialforge.errors import ConfigError

__all__ = ["add_train", "run_train"]


def add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="fine-tune a VLM with LoRA on a spatialforge dataset (needs [train])",
                       description="LoRA fine-tuning (TRL SFTTrainer + PEFT) of an open VLM (default "
                                   "Qwen/Qwen2.5-VL-3B-Instruct) on a `spatialforge generate` output, optionally "
                                   "mixed with a general VQA dataset. Resumes from the last checkpoint in --out.")
    p.add_argument("dataset", nargs="?", default=None, help="a `spatialforge generate` output folder")
    p.add_argument("--out", default=None, help="run folder (checkpoints, adapter/, merged/, train_summary.json)")
    p.add_argument("--config", type=Path, default=None, help="a .toml/.json config ([model] [lora] [data] [train])")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config field, e.g. --set lora.alpha=64")
    p.add_argument("--base-model", default=None)
    p.add_argument("--general-data", default=None, help="a general VQA dataset to mix in (HF name or folder)")
    p.add_argument("--general-split", default=None)
    p.add_argument("--spatial-share", type=float, default=None, help="share of spatial examples in the mix")
    p.add_argument("--max-qa-per-example", type=int, default=None)
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--grad-accum", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--lora-r", type=int, default=None)
    p.add_argument("--train-vision", choices=("off", "lora", "full"), default=None,
                   help="freeze the vision tower (off, default), add LoRA to it, or train it fully")
    p.add_argument("--precision", choices=("auto", "no", "bf16", "fp16"), default=None)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--save-steps", type=int, default=None)
    p.add_argument("--export-merged", action="store_true", help="also save the LoRA-merged model to OUT/merged")
    p.add_argument("--no-resume", action="store_true", help="refuse to continue a run found in --out")
    g = p.add_argument_group("periodic evaluation")
    g.add_argument("--eval-benchmark", default=None,
                   help="a benchmark (as for `spatialforge eval run`) scored every --eval-every steps and at the end")
    g.add_argument("--eval-limit", type=int, default=200, help="questions per evaluation (default 200)")
    g.add_argument("--eval-every", type=int, default=None, help="optimizer steps between evaluations")
    g.add_argument("--image-root", default=None, help="where the evaluation benchmark's images are")
    p.add_argument("--no-progress", action="store_true")


def _eval_fn(spec: str, limit: int, out_dir: Path, image_root: str | None = None) -> Any:
    """Score the model being trained on a fixed sample of the benchmark; returns headline metrics."""
    from spatialforge.eval.benchmarks import load_benchmark
    from spatialforge.eval.models.hf_vlm import HFVisionLanguageModel
    from spatialforge.eval.runner import run_eval

    bench = load_benchmark(spec, image_root=image_root)
    if limit and len(bench) > limit:
        bench = bench.subset(limit=limit, seed=0)

    def evaluate(model: Any, processor: Any, step: int) -> dict[str, Any]:
        tokenizer = getattr(processor, "tokenizer", None)
        side = getattr(tokenizer, "padding_side", None)
        step_dir = out_dir / f"step-{step:06d}"
        shutil.rmtree(step_dir, ignore_errors=True)  # always the model as it is now, never earlier answers
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


def run_train(args: argparse.Namespace) -> int:
    from spatialforge.vlmtrain import cli_overrides, load_vlm_train_config, train_vlm

    opts = {k: getattr(args, k) for k in ("dataset", "out", "base_model", "general_data", "general_split",
                                          "spatial_share", "max_qa_per_example", "epochs", "max_steps", "batch_size",
                                          "grad_accum", "lr", "lora_r", "train_vision", "precision", "device",
                                          "seed", "save_steps")}
    opts["export_merged"] = True if args.export_merged else None
    opts["resume"] = False if args.no_resume else None
    overrides = cli_overrides(opts)
    if args.eval_every is not None:
        overrides.append(f"train.eval_every={args.eval_every}")
    config = load_vlm_train_config(args.config, overrides + list(args.overrides))
    if args.eval_every is not None and not args.eval_benchmark:
        raise ConfigError("--eval-every needs --eval-benchmark (the benchmark to score)")
    eval_fn = None
    if args.eval_benchmark:
        eval_fn = _eval_fn(args.eval_benchmark, args.eval_limit, Path(config.train.output_dir) / "eval",
                           args.image_root)
    summary = train_vlm(config, eval_fn=eval_fn, progress=not args.no_progress)
    print(f"steps: {summary.get('steps')}, final loss: {summary.get('final_loss')}")
    if summary.get("evals"):
        print(f"last evaluation: {summary['evals'][-1]}")
    print(f"written to {config.train.output_dir}")
    return 0
