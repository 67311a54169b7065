"""Affordance questions scored through the real path: the figures of docs/affordance.md ("Questions about parts").

Run: ``python benchmarks/bench_afford_qa.py [--scenes 50] [--work DIR] [--json benchmarks/results/afford_qa.json]``.

1. Synthetic scenes with part labels: the first ``--scenes`` scenes of seed 0 (640 x 480, no depth noise,
   ``depth.npy`` in float32 metres) whose ground truth lists parts, written as scene folders
   (``SynthConfig(parts=True)``, what ``spatialforge synth --parts`` writes).
2. ``spatialforge generate SCENES --out DATASET --afford`` (the affordance questions and their truth column).
3. For three heatmaps, an answers file written as text, one line per affordance question of the dataset:

   * point questions ("Where would you hold the red mug to pour?"): the heatmap is lifted inside the named
     object's mask with :func:`spatialforge.qa.afford_types.point_answer_from_heatmap` and the answer is
     "At pixel (u, v), the 3D point (x, y, z) m." (or "I cannot find it." when the object has no region);
   * choice questions ("Which object affords cutting: ...?"): the candidate whose mask holds the hottest
     pixel of the heatmap of that action (the first listed on a tie), named as the question names it.

   Heatmaps: ``oracle`` (the part's mask; for a choice, the masks of every part with that action),
   ``blurred`` (the oracle blurred with a Gaussian of sigma 4 px, then shifted 8 px to the right) and
   ``uniform`` (all ones).
4. ``spatialforge eval score --benchmark DATASET --answers FILE`` and the metrics of its ``summary.json``
   (type ``afford_hold_point``: point in mask, median / mean 3D error, within 5 cm; type
   ``afford_which_object``: choice accuracy).

The scene truths (masks, depth) are read from the scene folders only to build the heatmaps; the scores come
from the dataset alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

ACTIONS = {"cutting": "cut with", "pouring": "pour"}  # the noun of "Which object affords ...?" -> the action


def _scenes(folder: Path, n: int, seed: int) -> tuple[int, int]:
    """Write the first ``n`` scenes of ``seed`` that have parts; returns (scenes written, scenes generated)."""
    from spatialforge.synth import SynthConfig, generate_scene, write_scene

    cfg = SynthConfig(parts=True, width=640, height=480, depth_format="npy")
    folder.mkdir(parents=True, exist_ok=True)
    written = index = 0
    while written < n:
        scene = generate_scene(index, seed=seed, config=cfg)
        index += 1
        if scene.ground_truth.get("parts"):
            write_scene(scene, folder, depth_format="npy")
            written += 1
    return written, index


def _heatmaps(mask: np.ndarray) -> dict[str, np.ndarray]:
    from scipy.ndimage import gaussian_filter, shift

    oracle = mask.astype(np.float64)
    blurred = shift(gaussian_filter(oracle, sigma=4.0), (0, 8), order=0, mode="constant", cval=0.0)
    return {"oracle": oracle, "blurred": blurred, "uniform": np.ones_like(oracle)}


def _answers(bench, scenes: Path) -> dict[str, list[dict[str, str]]]:
    from spatialforge.qa.afford_types import AffordTruth, point_answer_from_heatmap

    truths: dict[str, AffordTruth] = {}
    out: dict[str, list[dict[str, str]]] = {"oracle": [], "blurred": [], "uniform": []}
    for item in bench.items:
        if not item.type.startswith("afford_"):
            continue
        sid = item.meta["scene_id"]
        truth = truths.setdefault(sid, AffordTruth.load(scenes / sid))
        if item.kind == "point":
            heat = _heatmaps(truth.part_mask == int(item.meta["part_id"]))
            for name, h in heat.items():
                ans = point_answer_from_heatmap(h, truth, int(item.meta["subjects"][0]))
                if ans is None:
                    text = "I cannot find it."
                else:
                    (u, v), (x, y, z) = ans["pixel"], ans["point_3d"]
                    text = f"At pixel ({u}, {v}), the 3D point ({x:.4f}, {y:.4f}, {z:.4f}) m."
                out[name].append({"id": item.id, "answer": text})
        else:
            noun = item.question.split(":")[0].split()[-1]
            action = ACTIONS[noun]
            mask = np.isin(truth.part_mask, [pid for pid, p in truth.parts.items() if p["action"] == action])
            for name, h in _heatmaps(mask).items():
                hottest = [float(h[truth.instances == oid].max(initial=-np.inf)) for oid in item.meta["subjects"]]
                pick = int(np.argmax(hottest))  # the first candidate on a tie
                out[name].append({"id": item.id, "answer": item.options[pick]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=50, help="scenes with parts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "afford_qa.json")
    args = ap.parse_args()

    from spatialforge import __version__
    from spatialforge.cli.main import main as cli
    from spatialforge.eval.benchmarks import load_spatialforge

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        scenes, dataset = work / "scenes", work / "dataset"
        n_written, n_generated = _scenes(scenes, args.scenes, args.seed)
        if cli(["generate", str(scenes), "--out", str(dataset), "--afford", "--qa-per-image", "1",
                "--seed", str(args.seed), "--no-progress"]) != 0:
            raise SystemExit("generate failed")
        bench = load_spatialforge(dataset)
        answers = _answers(bench, scenes)
        rows = []
        for name, lines in answers.items():
            path = work / f"answers-{name}.jsonl"
            path.write_text("".join(json.dumps(line) + "\n" for line in lines))
            out = work / f"score-{name}"
            if cli(["eval", "score", "--benchmark", str(dataset), "--answers", str(path), "--out", str(out),
                    "--name", name]) != 0:
                raise SystemExit("eval score failed")
            s = json.loads((out / "summary.json").read_text())
            point = s["by_type"]["afford_hold_point"]["point"]
            choice = s["by_type"]["afford_which_object"]["qualitative"]
            rows.append({"heatmap": name, "points": point["n"], "choices": choice["n"],
                         "in_mask": point["in_mask"]["value"], "answered": point["answered"]["value"],
                         "median_error_m": point["error_m_median"]["value"],
                         "mean_error_m": point["error_m_mean"]["value"],
                         "within_5cm": point["within_5cm"]["value"], "choice_accuracy": choice["accuracy"]["value"]})
    result = {"spatialforge": __version__, "python": platform.python_version(), "seed": args.seed,
              "scenes_with_parts": n_written, "scenes_generated": n_generated, "image": [640, 480],
              "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{n_written} scenes with parts (of the first {n_generated} of seed {args.seed}); "
          f"{rows[0]['points']} point questions, {rows[0]['choices']} choice questions")
    print("| heatmap | point in mask | median 3D error | mean 3D error | within 5 cm | choice accuracy |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['heatmap']} | {100 * r['in_mask']:.0f} % | {100 * r['median_error_m']:.1f} cm | "
              f"{100 * r['mean_error_m']:.1f} cm | {100 * r['within_5cm']:.0f} % | "
              f"{100 * r['choice_accuracy']:.0f} % |")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
