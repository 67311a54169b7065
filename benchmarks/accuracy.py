"""Answer accuracy against exact synthetic ground truth, with and without depth noise.

Run: ``python benchmarks/accuracy.py [--n 100] [--seed 2024] [--noise 0 0.02] [--json out.json]``.
Prints a markdown table (overall and per question type) and optionally writes JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from spatialforge.geometry import GeometryConfig
from spatialforge.pipeline import GenerateConfig, run_generate
from spatialforge.qa import QAConfig
from spatialforge.synth import SynthConfig, write_synthetic_dataset
from spatialforge.synth.truth import score_dataset, summarise


def run(n: int, seed: int, noise: float, qa_per_image: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        scenes, out = Path(tmp) / "scenes", Path(tmp) / "out"
        write_synthetic_dataset(scenes, n=n, seed=seed, config=SynthConfig(depth_noise=noise), progress=False)
        cfg = GenerateConfig(qa=QAConfig(qa_per_image=qa_per_image, seed=seed), geometry=GeometryConfig(seed=seed))
        manifest = run_generate(scenes, out, cfg, progress=False)
        s = summarise(score_dataset(scenes, out))
    s["scenes"] = n
    s["gravity"] = manifest["counts"]["gravity"]
    s["depth_noise"] = noise
    return s


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--qa-per-image", type=int, default=20)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.02])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    results = [run(args.n, args.seed, nz, args.qa_per_image) for nz in args.noise]
    print("| depth noise | scenes | floor found | qualitative n | qualitative acc | quantitative n "
          "| median rel err | p90 rel err | clock within 1 h |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        q, m = r["qualitative"], r["quantitative"]
        print(f"| {r['depth_noise']:.0%} | {r['scenes']} | {r['gravity'].get('plane', 0)}/{r['scenes']} | {q['n']} "
              f"| {q['accuracy']:.1%} | {m['n']} | {m['median_rel_error']:.1%} | {m['p90_rel_error']:.1%} "
              f"| {r['clock_within_1h']:.1%} |")
    types = sorted({t for r in results for t in r["per_type"]})
    print("\n| type | " + " | ".join(f"n / acc or median / p90 ({r['depth_noise']:.0%} noise)" for r in results) + " |")
    print("|---|" + "---|" * len(results))
    for t in types:
        cells = []
        for r in results:
            e = r["per_type"].get(t, {})
            if "median_rel_error" in e:
                cells.append(f"{e['n']} / {_fmt(e['median_rel_error'])} / {_fmt(e['p90_rel_error'])}")
            else:
                cells.append(f"{e.get('n', 0)} / {_fmt(e.get('accuracy'))}")
        print(f"| {t} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
