"""``spatialforge eval``: build a benchmark, ask a model, score answers, compare models.

Every command that writes a folder claims it first (:func:`spatialforge.io.outdir.prepare_output_dir`,
docs/safety.md): ``--out`` may not be an input (the benchmark, the answers file, a local model
folder), lie inside one or contain one; a folder an earlier run of the same command wrote is resumed
(``eval run``) or refused (``eval build``); ``--overwrite`` deletes only what the command writes.
A run that fails before its first answer leaves nothing behind.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spatialforge._text import count
from spatialforge.cli.options import DEVICE_HELP, DTYPES, comma_list, device, int_at_least, number_at_least
from spatialforge.errors import ConfigError, SpatialForgeError
from spatialforge.eval.types import KINDS

__all__ = ["add_eval", "claimed_output", "run_eval_command"]

BENCHMARK_HELP = ("a spatialforge dataset or benchmark folder, 'qspatial:PATH_OR_HUB_NAME[:split]' or "
                  "'spatialrgpt:PATH[:regions=none]' (its regions are drawn on the image unless regions=none)")
MODEL_HELP = ("openai:MODEL[@BASE_URL] (any OpenAI-compatible endpoint; key from --api-key-env), "
              "hf:MODEL_ID_OR_FOLDER (local transformers VLM), blind:SPEC (the model without the image), prior")
# model flag -> (backend keyword, the backends that take it)
_MODEL_FLAGS = {
    "--api-key-env": ("api_key_env", ("openai",)),
    "--concurrency": ("concurrency", ("openai",)),
    "--timeout": ("timeout_s", ("openai",)),
    "--max-retries": ("max_retries", ("openai",)),
    "--device": ("device", ("hf",)),
    "--dtype": ("dtype", ("hf",)),
    "--batch-size": ("batch_size", ("hf",)),
    "--max-new-tokens": ("max_new_tokens", ("openai", "hf")),
}


def _kinds(text: str) -> tuple[str, ...]:
    """An argparse type: a comma-separated list of question kinds."""
    items = comma_list(text)
    unknown = [k for k in items if k not in KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown kind{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                                         f"the kinds are {', '.join(KINDS)}")
    return items


def _default(target: str, name: str) -> Any:
    """A backend constructor's default (shown in the help, so it cannot drift from the code)."""
    if target == "openai":
        from spatialforge.eval.models.openai_api import OpenAICompatibleModel as cls
    else:
        from spatialforge.eval.models.hf_vlm import HFVisionLanguageModel as cls
    return inspect.signature(cls).parameters[name].default


def add_eval(sub: Any) -> None:
    from spatialforge.eval.benchmarks import SYNTHETIC_BENCHMARK_SEED

    p = sub.add_parser("eval", help="spatial VQA evaluation: benchmarks, models, metrics",
                       description="Evaluate any VLM on spatial questions with exact truth: within-2x rate, "
                                   "MRA, accuracy, with bootstrap confidence intervals.")
    esub = p.add_subparsers(dest="eval_command", metavar="ACTION")
    esub.required = True

    b = esub.add_parser("build", help="build a held-out benchmark from synthetic scenes with exact truth",
                        description="Render synthetic scenes and generate their questions into a benchmark folder. "
                                    "An interrupted build is started again by the same command.")
    b.add_argument("--out", type=Path, required=True, help="benchmark folder (new or empty)")
    b.add_argument("--n", type=int_at_least(1), default=200, help="number of scenes")
    b.add_argument("--seed", type=int_at_least(0), default=None,
                   help=f"scene seed (default: {SYNTHETIC_BENCHMARK_SEED}, disjoint from the seeds used for training "
                        "data)")
    b.add_argument("--qa-per-image", type=int_at_least(1), default=10, help="questions per scene")
    b.add_argument("--units", choices=("metric", "imperial", "mixed"), default="metric", help="units of the answers")
    b.add_argument("--noise", type=number_at_least(0.0, high=0.5), default=0.0,
                   help="relative depth noise sigma of the scenes, from 0 to 0.5")
    b.add_argument("--overwrite", action="store_true",
                   help="replace the benchmark an earlier `eval build` wrote in --out (only what it wrote)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")

    r = esub.add_parser("run", help="ask a model every question and score it (resumable)",
                        description="Ask a model every question of a benchmark and score the answers. Rerunning "
                                    "the same command resumes: only questions without an answer are asked.")
    r.add_argument("--benchmark", required=True, help=BENCHMARK_HELP)
    r.add_argument("--regions", choices=("draw", "none"), default=None,
                   help="SpatialRGPT-Bench: draw the regions its questions name (\"Region [k]\") on the image, or "
                        "send the plain image (default: draw; only SpatialRGPT-Bench has regions)")
    r.add_argument("--model", required=True, help=MODEL_HELP)
    r.add_argument("--out", type=Path, required=True,
                   help="run folder (records.jsonl, summary.json/.md, run.json, fingerprint.json)")
    r.add_argument("--limit", type=int_at_least(1), default=None,
                   help="a deterministic sample of N questions (default: every question)")
    r.add_argument("--types", type=comma_list, default=None,
                   help="comma-separated question types to keep (default: all; an unknown type lists the "
                        "benchmark's types)")
    r.add_argument("--kinds", type=_kinds, default=None,
                   help=f"comma-separated kinds to keep: {', '.join(KINDS)} (default: all)")
    r.add_argument("--seed", type=int_at_least(0), default=0, help="sampling and bootstrap seed")
    r.add_argument("--no-image", action="store_true", help="ask without the image (a blind baseline)")
    r.add_argument("--chunk-size", type=int_at_least(1), default=32, help="questions per model call / per flush")
    r.add_argument("--overwrite", action="store_true",
                   help="start again: delete what an earlier `eval run` wrote in --out (nothing else) instead of "
                        "resuming")
    r.add_argument("--image-root", default=None,
                   help="where the benchmark's images are (Q-Spatial ScanNet frames, SpatialRGPT's Omni3D images; "
                        "default: beside the benchmark's files)")
    g = r.add_argument_group("model options (each applies to the backends named)")
    g.add_argument("--api-key-env", default=None,
                   help="openai: environment variable holding the API key "
                        f"(default: {_default('openai', 'api_key_env')})")
    g.add_argument("--concurrency", type=int_at_least(1), default=None,
                   help=f"openai: requests in flight at once (default: {_default('openai', 'concurrency')})")
    g.add_argument("--timeout", type=number_at_least(0.0, strict=True), default=None,
                   help=f"openai: seconds per request (default: {_default('openai', 'timeout_s')})")
    g.add_argument("--max-retries", type=int_at_least(0), default=None,
                   help=f"openai: retries of a request that failed on 429, 5xx or the network "
                        f"(default: {_default('openai', 'max_retries')})")
    g.add_argument("--device", type=device, default=None,
                   help=f"hf: {DEVICE_HELP} (default: {_default('hf', 'device')})")
    g.add_argument("--dtype", choices=("auto", *DTYPES), default=None,
                   help="hf: weights dtype (default: auto: bfloat16 on a GPU that supports it, float16 on other GPUs, "
                        "float32 on the CPU)")
    g.add_argument("--batch-size", type=int_at_least(1), default=None,
                   help=f"hf: questions per generate() call (default: {_default('hf', 'batch_size')})")
    g.add_argument("--max-new-tokens", type=int_at_least(1), default=None,
                   help=f"openai, hf: answer length limit in tokens (default: {_default('openai', 'max_tokens')} for "
                        f"openai, {_default('hf', 'max_new_tokens')} for hf)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = esub.add_parser("score", help="score answers produced elsewhere (JSONL: {\"id\": ..., \"answer\": ...})",
                        description="Score a JSONL file of answers (one {\"id\": ..., \"answer\": ...} per line) "
                                    "against a benchmark.")
    s.add_argument("--benchmark", required=True, help=BENCHMARK_HELP)
    s.add_argument("--regions", choices=("draw", "none"), default=None,
                   help="SpatialRGPT-Bench: draw the regions its questions name (\"Region [k]\") on the image, or "
                        "send the plain image (default: draw; only SpatialRGPT-Bench has regions)")
    s.add_argument("--answers", type=Path, required=True, help="the answers file (JSONL)")
    s.add_argument("--out", type=Path, required=True, help="folder for records.jsonl and summary.json/.md")
    s.add_argument("--name", default=None, help="the model's name in the summary (default: the answers file's name)")
    s.add_argument("--image-root", default=None,
                   help="where the benchmark's images are (default: beside the benchmark's files)")
    s.add_argument("--types", type=comma_list, default=None,
                   help="comma-separated question types to score (default: all; answers to other questions are "
                        "counted as outside the selection, not as unknown)")
    s.add_argument("--kinds", type=_kinds, default=None,
                   help=f"comma-separated kinds to score: {', '.join(KINDS)} (default: all)")
    s.add_argument("--seed", type=int_at_least(0), default=0, help="bootstrap seed")
    s.add_argument("--overwrite", action="store_true",
                   help="replace the scores an earlier `eval score` wrote in --out for other answers (only what it "
                        "wrote)")

    c = esub.add_parser("compare", help="several summaries side by side",
                        description="Print the models' overall metrics side by side (and per kind, type or "
                                    "benchmark with --by).")
    c.add_argument("summaries", nargs="+", type=Path, help="summary.json files or run folders")
    c.add_argument("--by", action="append", choices=("kind", "type", "benchmark"), default=None,
                   help="also a table per question kind, per question type or per benchmark (repeatable; "
                        "default: the overall table only)")
    c.add_argument("--out", type=Path, default=None,
                   help="also write the tables to this .md file (default: print only)")


# ----------------------------------------------------------------------------- shared steps
def _model_path(spec: str) -> Path | None:
    """The local folder an ``hf:`` model spec (also inside ``blind:``) loads, if it exists."""
    spec = spec.strip()
    while spec.lower().startswith("blind:"):
        spec = spec[len("blind:"):].strip()
    if spec.lower().startswith("hf:"):
        folder = Path(spec[3:].strip())
        return folder if str(folder) and folder.exists() else None
    return None


def _model_inputs(spec: str) -> list[Path | None]:
    """The local folders an ``hf:`` model reads: the model folder, and an adapter's base model folder."""
    folder = _model_path(spec)
    config = folder / "adapter_config.json" if folder is not None and folder.is_dir() else None
    if config is None or not config.is_file():
        return [folder]
    try:
        base = Path(str(json.loads(config.read_text(encoding="utf-8"))["base_model_name_or_path"])).expanduser()
    except (OSError, ValueError, KeyError, TypeError):
        return [folder]  # the backend reports a broken adapter config in one line when it loads
    return [folder, base if base.is_dir() else None]


def _backend(spec: str) -> str:
    spec = spec.strip()
    while spec.lower().startswith("blind:"):
        spec = spec[len("blind:"):].strip()
    return spec.partition(":")[0].strip().lower()


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The backend keywords of the model flags given; a flag the model's backend does not take is an error."""
    backend = _backend(args.model)
    options = {}
    for flag, (name, backends) in _MODEL_FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is None:
            continue
        if backend in ("openai", "hf", "prior") and backend not in backends:
            takes = [f for f, (_, b) in _MODEL_FLAGS.items() if backend in b]
            raise ConfigError(f"{flag} does not apply to {backend} models (they take "
                              f"{', '.join(takes) if takes else 'no model option'})")
        options[name] = value
    return options


@contextlib.contextmanager
def claimed_output(out: Path, kind: Any, inputs: list[Any], overwrite: bool, flag: str = "--out") -> Iterator[Any]:
    """Claim ``out`` (:func:`~spatialforge.io.outdir.prepare_output_dir`) for the ``with`` block.

    If the block fails before writing anything into a folder it claimed anew, the claim is undone (the
    marker removed, and the folder too if this command created it): a failed first run leaves nothing
    behind, and the same command can simply be run again.
    """
    from spatialforge.io.outdir import MARKER, prepare_output_dir

    existed = out.exists()
    prepared = prepare_output_dir(out, kind, inputs=inputs, overwrite=overwrite, flag=flag)
    if prepared.kept:
        print(f"--overwrite kept what spatialforge did not write in {out}: {', '.join(prepared.kept)}")
    try:
        yield prepared
    except BaseException:
        if not prepared.resumed and out.is_dir() and [e.name for e in out.iterdir()] == [MARKER]:
            (out / MARKER).unlink()
            if not existed:
                out.rmdir()
        raise


def _benchmark(args: argparse.Namespace) -> Any:
    """The benchmark of ``--benchmark``, cut to ``--types`` / ``--kinds`` / ``--limit`` when given."""
    return _benchmarks(args)[1]


def _benchmarks(args: argparse.Namespace) -> tuple[Any, Any]:
    """The whole benchmark of ``--benchmark`` and its selection (the same object without a selection)."""
    from spatialforge.eval.benchmarks import load_benchmark

    bench = load_benchmark(args.benchmark, image_root=getattr(args, "image_root", None),
                           regions=getattr(args, "regions", None))
    if bench.skipped:
        print(f"{args.benchmark}: {count(len(bench.skipped), 'record')} skipped "
              f"{bench.counts()['skipped_by_reason']}")
    types, kinds = getattr(args, "types", None), getattr(args, "kinds", None)
    counts = bench.counts()
    if types:
        known = sorted(counts["per_type"])
        unknown = [t for t in types if t not in counts["per_type"]]
        if unknown:
            raise ConfigError(f"--types: {bench.name} has no question type{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(unknown)}; its types are: {', '.join(known) or 'none'}")
    if kinds:
        absent = [k for k in kinds if k not in counts["per_kind"]]
        if absent:
            raise ConfigError(f"--kinds: {bench.name} has no {' or '.join(absent)} questions; its kinds are: "
                              f"{', '.join(counts['per_kind']) or 'none'}")
    limit = getattr(args, "limit", None)
    whole = bench
    if types or kinds or limit:
        bench = bench.subset(types=types, kinds=kinds, limit=limit, seed=getattr(args, "seed", 0))
    if len(bench) == 0:
        raise SpatialForgeError(f"{args.benchmark}: no questions (after --types/--kinds/--limit)")
    return whole, bench


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    from spatialforge.eval.metrics import summary_markdown

    print(summary_markdown(summary, title=f"{summary.get('model', '?')} on {summary.get('benchmark', '?')}"))
    print(f"written to {out}")


# ----------------------------------------------------------------------------- commands
def _build(args: argparse.Namespace) -> int:
    from spatialforge.eval.benchmarks import BENCHMARK_OUTPUT, build_synthetic_benchmark, load_benchmark

    kw = {} if args.seed is None else {"seed": args.seed}
    path = build_synthetic_benchmark(args.out, n_scenes=args.n, qa_per_image=args.qa_per_image, units=args.units,
                                     noise=args.noise, progress=not args.no_progress, overwrite=args.overwrite,
                                     flag="--out", **kw)
    kept = sorted(e.name for e in path.iterdir() if not BENCHMARK_OUTPUT.owned(e.name))
    if kept:
        print(f"left in {path} (not written by spatialforge): {', '.join(kept)}")
    bench = load_benchmark(str(path))
    print(f"benchmark {bench.name}: {count(len(bench), 'question')} {bench.counts()['per_kind']} in {path}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from spatialforge.eval.benchmarks import benchmark_path
    from spatialforge.eval.models import build_model
    from spatialforge.eval.runner import RUN_OUTPUT, run_eval

    options = _model_options(args)
    inputs = [benchmark_path(args.benchmark), *_model_inputs(args.model), args.image_root]
    with claimed_output(args.out, RUN_OUTPUT, inputs, args.overwrite) as prepared:
        model = build_model(args.model, **options)
        bench = _benchmark(args)
        summary = run_eval(bench, model, args.out, chunk_size=args.chunk_size, use_image=not args.no_image,
                           progress=not args.no_progress, seed=args.seed)
    run = json.loads((args.out / "run.json").read_text())
    if prepared.resumed:
        print(f"resumed {args.out}: {count(run['resumed'], 'question')} already answered, {run['asked']} asked now")
    _print_summary(summary, args.out)
    return 0


def _score(args: argparse.Namespace) -> int:
    from spatialforge.eval.benchmarks import benchmark_path
    from spatialforge.eval.runner import SCORE_OUTPUT, score_answers

    inputs = [benchmark_path(args.benchmark), args.answers, args.image_root]
    with claimed_output(args.out, SCORE_OUTPUT, inputs, args.overwrite) as prepared:
        whole, bench = _benchmarks(args)
        from spatialforge.eval.runner import selection_of

        selection = selection_of(bench)
        if prepared.resumed:
            _check_same_scores(args, bench.name, selection)
        known = {it.id for it in whole.items} if selection is not None else None  # left-out answers: not "unknown"
        summary = score_answers(bench, args.answers, args.out, seed=args.seed, name=args.name, known_ids=known)
    info = summary["answers_file"]
    outside = f", {count(info['outside_selection'], 'answer')} outside --types/--kinds" if selection else ""
    print(f"{count(info['answers'], 'answer')} for {count(len(bench), 'question')}: {info['missing']} missing, "
          f"{count(info['unknown_ids'], 'unknown id')}, {count(len(info['malformed_lines']), 'malformed line')}"
          f"{outside}")
    _print_summary(summary, args.out)
    return 0


def _check_same_scores(args: argparse.Namespace, benchmark: str, selection: Any = None) -> None:
    """A folder of earlier scores is rewritten only for the same answers file, benchmark and --types/--kinds
    selection (else --overwrite)."""
    if not (args.out / "summary.json").is_file():  # an earlier scoring stopped before its summary: nothing to keep
        return
    try:
        previous = json.loads((args.out / "summary.json").read_text())
        before = (Path(previous["answers_file"]["path"]).resolve(), previous["benchmark"],
                  previous["answers_file"].get("selection"))
    except (OSError, ValueError, KeyError, TypeError):
        before = None
    if before != (args.answers.resolve(), benchmark, selection):
        raise ConfigError(f"--out {args.out}: holds the scores of other answers, another benchmark or another "
                          "--types/--kinds selection; use a new --out, or --overwrite to replace them")


def _compare(args: argparse.Namespace) -> int:
    from spatialforge.eval.metrics import compare_markdown
    from spatialforge.io.outdir import atomic_path, check_output_file

    if args.out is not None:
        check_output_file(args.out, args.summaries, suffixes=(".md", ".markdown"))
    summaries: dict[str, dict] = {}
    for p in args.summaries:
        path = p / "summary.json" if p.is_dir() else p
        try:
            summary = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SpatialForgeError(f"{path}: cannot read the summary ({exc})") from None
        if not isinstance(summary, dict) or not isinstance(summary.get("overall"), dict):
            raise SpatialForgeError(f"{path}: not a spatialforge evaluation summary (no 'overall' section)")
        name = str(summary.get("model") or path.parent.name)
        while name in summaries:
            name += "'"
        summaries[name] = summary
    table = compare_markdown(summaries, breakdowns=tuple(dict.fromkeys(args.by or ())))
    print(table)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(table + "\n", encoding="utf-8")
        print(f"written to {args.out}")
    return 0


def run_eval_command(args: argparse.Namespace) -> int:
    return {"build": _build, "run": _run, "score": _score, "compare": _compare}[args.eval_command](args)
