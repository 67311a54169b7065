"""``spatialforge eval``: build a benchmark, ask a model, score answers, compare models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from spatialforge.errors import ConfigError, SpatialForgeError

__all__ = ["add_eval", "run_eval_command"]

BENCHMARK_HELP = ("a spatialforge dataset or benchmark folder, 'qspatial:PATH_OR_HUB_NAME[:split]' or "
                  "'spatialrgpt:PATH'")
MODEL_HELP = ("openai:MODEL[@BASE_URL] (any OpenAI-compatible endpoint; key from --api-key-env), "
              "hf:MODEL_ID_OR_FOLDER (local transformers VLM), blind:SPEC (the model without the image), prior")


def add_eval(sub: Any) -> None:
    p = sub.add_parser("eval", help="spatial VQA evaluation: benchmarks, models, metrics",
                       description="Evaluate any VLM on spatial questions with exact truth: within-2x rate, "
                                   "MRA, accuracy, with bootstrap confidence intervals.")
    esub = p.add_subparsers(dest="eval_command", metavar="ACTION")
    esub.required = True

    b = esub.add_parser("build", help="build a held-out benchmark from synthetic scenes with exact truth")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--n", type=int, default=200, help="scenes (default 200)")
    b.add_argument("--seed", type=int, default=None, help="scene seed (default: one disjoint from training)")
    b.add_argument("--qa-per-image", type=int, default=10)
    b.add_argument("--units", choices=("metric", "imperial", "mixed"), default="metric")
    b.add_argument("--noise", type=float, default=0.0, help="relative depth noise of the scenes")
    b.add_argument("--overwrite", action="store_true", help="replace an existing benchmark in --out")
    b.add_argument("--no-progress", action="store_true")

    r = esub.add_parser("run", help="ask a model every question and score it (resumable)")
    r.add_argument("--benchmark", required=True, help=BENCHMARK_HELP)
    r.add_argument("--model", required=True, help=MODEL_HELP)
    r.add_argument("--out", type=Path, required=True, help="run folder (records.jsonl, summary.json/.md, run.json)")
    r.add_argument("--limit", type=int, default=None, help="a deterministic sample of N questions")
    r.add_argument("--types", default=None, help="comma-separated question types to keep")
    r.add_argument("--kinds", default=None, help="comma-separated kinds: quantitative, yes_no, choice")
    r.add_argument("--seed", type=int, default=0, help="sampling and bootstrap seed")
    r.add_argument("--no-image", action="store_true", help="ask without the image (a blind baseline)")
    r.add_argument("--chunk-size", type=int, default=32, help="questions per model call / per flush")
    r.add_argument("--overwrite", action="store_true", help="delete --out first instead of resuming")
    r.add_argument("--image-root", default=None, help="where the benchmark's images are (Q-Spatial ScanNet "
                                                      "frames, SpatialRGPT's Omni3D images)")
    g = r.add_argument_group("model options")
    g.add_argument("--api-key-env", default=None, help="environment variable holding the API key")
    g.add_argument("--concurrency", type=int, default=None)
    g.add_argument("--timeout", type=float, default=None, help="seconds per request")
    g.add_argument("--max-retries", type=int, default=None)
    g.add_argument("--device", default=None)
    g.add_argument("--dtype", default=None)
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--max-new-tokens", type=int, default=None)
    r.add_argument("--no-progress", action="store_true")

    s = esub.add_parser("score", help="score answers produced elsewhere (JSONL: {\"id\": ..., \"answer\": ...})")
    s.add_argument("--benchmark", required=True, help=BENCHMARK_HELP)
    s.add_argument("--answers", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--name", default=None, help="the model's name in the summary (default: the file name)")
    s.add_argument("--image-root", default=None, help="where the benchmark's images are")
    s.add_argument("--seed", type=int, default=0)

    c = esub.add_parser("compare", help="several summaries side by side")
    c.add_argument("summaries", nargs="+", type=Path, help="summary.json files or run folders")
    c.add_argument("--out", type=Path, default=None, help="write the markdown table here")


def _benchmark(args: argparse.Namespace) -> Any:
    from spatialforge.eval.benchmarks import load_benchmark

    bench = load_benchmark(args.benchmark, image_root=getattr(args, "image_root", None))
    if bench.skipped:
        print(f"{args.benchmark}: {len(bench.skipped)} records skipped {bench.counts()['skipped_by_reason']}")
    types = tuple(t.strip() for t in (getattr(args, "types", None) or "").split(",") if t.strip()) or None
    kinds = tuple(t.strip() for t in (getattr(args, "kinds", None) or "").split(",") if t.strip()) or None
    limit = getattr(args, "limit", None)
    if types or kinds or limit:
        bench = bench.subset(types=types, kinds=kinds, limit=limit, seed=getattr(args, "seed", 0))
    if len(bench) == 0:
        raise SpatialForgeError(f"{args.benchmark}: no questions (after --types/--kinds/--limit)")
    return bench


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    from spatialforge.eval.metrics import summary_markdown

    print(summary_markdown(summary, title=f"{summary.get('model', '?')} on {summary.get('benchmark', '?')}"))
    print(f"written to {out}")


def _build(args: argparse.Namespace) -> int:
    from spatialforge.eval.benchmarks import build_synthetic_benchmark, load_benchmark

    kw = {} if args.seed is None else {"seed": args.seed}
    path = build_synthetic_benchmark(args.out, n_scenes=args.n, qa_per_image=args.qa_per_image, units=args.units,
                                     noise=args.noise, progress=not args.no_progress, overwrite=args.overwrite, **kw)
    bench = load_benchmark(str(path))
    print(f"benchmark {bench.name}: {len(bench)} questions {bench.counts()['per_kind']} in {path}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from spatialforge.eval.models import build_model
    from spatialforge.eval.runner import run_eval

    options = {k: v for k, v in (("api_key_env", args.api_key_env), ("concurrency", args.concurrency),
                                 ("timeout_s", args.timeout), ("max_retries", args.max_retries),
                                 ("device", args.device), ("dtype", args.dtype), ("batch_size", args.batch_size),
                                 ("max_new_tokens", args.max_new_tokens)) if v is not None}
    model = build_model(args.model, **options)
    bench = _benchmark(args)
    if args.chunk_size < 1:
        raise ConfigError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    if args.overwrite and args.out.exists():
        import shutil

        shutil.rmtree(args.out)
    summary = run_eval(bench, model, args.out, chunk_size=args.chunk_size, use_image=not args.no_image,
                       progress=not args.no_progress, seed=args.seed)
    _print_summary(summary, args.out)
    return 0


def _score(args: argparse.Namespace) -> int:
    from spatialforge.eval.runner import score_answers

    bench = _benchmark(args)
    summary = score_answers(bench, args.answers, args.out, seed=args.seed, name=args.name)
    info = summary["answers_file"]
    print(f"{info['answers']} answers for {len(bench)} questions: {info['missing']} missing, "
          f"{info['unknown_ids']} unknown ids, {len(info['malformed_lines'])} malformed lines")
    _print_summary(summary, args.out)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from spatialforge.eval.metrics import compare_markdown

    summaries: dict[str, dict] = {}
    for p in args.summaries:
        path = p / "summary.json" if p.is_dir() else p
        try:
            summary = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SpatialForgeError(f"{path}: cannot read the summary ({exc})") from None
        name = str(summary.get("model") or path.parent.name)
        while name in summaries:
            name += "'"
        summaries[name] = summary
    table = compare_markdown(summaries)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
        print(f"written to {args.out}")
    return 0


def run_eval_command(args: argparse.Namespace) -> int:
    return {"build": _build, "run": _run, "score": _score, "compare": _compare}[args.eval_command](args)
