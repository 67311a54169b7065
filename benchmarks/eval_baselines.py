"""Baselines on the held-out synthetic benchmark: the fixed-value prior and our own reference answers.

Run: ``python benchmarks/eval_baselines.py [--n 200] [--out /tmp/sf-eval]``; writes
``benchmarks/results/eval_baselines.md``. The reference answers (the text the QA engine wrote) go
through the same answer parser and metrics as any model's, so they must score 1.0 everywhere: a
check of the parser and the metrics on ~2000 questions. The prior shows what a model gets without
looking (fixed typical values, always "yes", always the first option).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from spatialforge.eval.benchmarks import build_synthetic_benchmark, load_benchmark
from spatialforge.eval.metrics import compare_markdown
from spatialforge.eval.models import build_model
from spatialforge.eval.runner import run_eval, score_answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("/tmp/sf-eval"))
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "eval_baselines.md")
    args = ap.parse_args()
    bench_dir = args.out / "bench"
    if not (bench_dir / "benchmark.json").is_file():
        build_synthetic_benchmark(bench_dir, n_scenes=args.n, progress=False)
    bench = load_benchmark(str(bench_dir))
    answers = args.out / "reference.jsonl"
    answers.write_text("".join(json.dumps({"id": it.id, "answer": it.reference_answer}) + "\n" for it in bench.items))
    ref = score_answers(bench, answers, args.out / "reference", name="reference answers")
    prior = run_eval(bench, build_model("prior"), args.out / "prior", progress=False)
    table = compare_markdown({"reference answers": ref, "prior": prior})
    args.results.write_text(f"# Baselines on the held-out synthetic benchmark\n\n{bench.name}: {len(bench)} questions "
                            f"from {args.n} scenes (`spatialforge eval build --n {args.n}`).\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
