"""How far a wrong focal length moves the answers: synthetic scenes through the photo path, scored against exact truth.

Run: ``python benchmarks/focal_error.py [--n 100] [--seed 2024] [--factors 0.5,0.7,0.85,1,1.2,1.5,2]
[--json benchmarks/results/focal_error.json] [--md benchmarks/results/focal_error.md]``.

Each synthetic scene (``spatialforge.synth``, 640 x 480, exact z-depth, masks and 3D truth) is fed to
the perception pipeline as a photo: the oracle stages return its exact boxes and masks and the depth
stage returns its exact z-depth "as if a model predicted it", while the focal length handed to the
pipeline (as the user's, principal point at the image centre as for any photo) is the true ``fx``
times a factor. The geometry + QA engine then runs unchanged and every answer is scored against
the scene's exact truth (:mod:`spatialforge.synth.truth`).

Two depth models are simulated:

``metric-z`` (Depth Anything V2, ZoeDepth)
    The model predicts metric z-depth from the pixels alone, so its output does not change with the
    focal length we assume: only the back-projection ``X = (u - cx) Z / f`` does. A focal length
    ``k`` times the truth shrinks every lateral coordinate by ``1 / k`` and leaves depth as it is.
``depth-pro`` (Depth Pro given a focal length, or its own FOV estimate, ``k`` times off)
    Depth Pro's metric depth is ``f / (W * canonical inverse depth)``: proportional to the focal
    length it uses. Depth scales by ``k`` and lateral coordinates stay put (``X = (u - cx) k Z / (k f)``).

Per factor: qualitative accuracy (predicates and choices; ties within the QA margins excluded),
clock directions within one hour, and per measurement family the median and p90 relative error
and the median ratio estimate / truth of the quantitative answers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from spatialforge.geometry import GeometryConfig
from spatialforge.io.scene_folder import load_scene
from spatialforge.perception.backends.stub import GivenDepth, KeepAllFilter, LabelCaptioner, NoTextEmbedder
from spatialforge.perception.config import PerceptionConfig, StageSpec
from spatialforge.perception.pipeline import PerceptionPipeline
from spatialforge.perception.types import Detections, ImageItem, MaskSet
from spatialforge.pipeline import GenerateConfig, run_generate
from spatialforge.qa import QAConfig
from spatialforge.synth import SynthConfig, generate_scene
from spatialforge.synth.truth import score_dataset

MODELS = ("metric-z", "depth-pro")
#: measurement families: question types whose answers are lengths of one kind
FAMILIES: dict[str, tuple[str, ...]] = {
    "distances": ("distance", "horizontal_distance"),
    "camera distances": ("camera_distance",),
    "widths": ("width", "depth"),
    "heights": ("height",),
    "vertical offsets": ("vertical_distance", "above_offset"),
    "left/right offsets": ("left_offset", "right_offset"),
    "front/behind offsets": ("front_offset", "behind_offset"),
}
QUALITATIVE: dict[str, tuple[str, ...]] = {
    "left/right": ("left", "right"), "above/below": ("above", "below"),
    "front/behind": ("front", "behind", "close", "far", "closer_to"),
    "sizes": ("tall", "short", "wide", "thin", "big", "small"),
}


def _key(img: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(img).tobytes(), digest_size=16).hexdigest()


class _Truth:
    """The oracle detector, segmenter and depth of the synthetic photos (keyed by pixels)."""

    name = "oracle"
    model_id = "synthetic-truth"

    def __init__(self) -> None:
        self.scenes: dict[str, Any] = {}

    def add(self, scene: Any) -> None:
        self.scenes[_key(scene.image)] = scene

    def load(self) -> None:
        return None

    def unload(self) -> None:
        return None

    def _objects(self, img: np.ndarray) -> list[tuple[int, str]]:
        scene = self.scenes[_key(img)]
        present = set(np.unique(scene.instances).tolist()) - {0}
        return [(int(o["id"]), o["caption"]) for o in sorted(scene.objects, key=lambda o: int(o["id"]))
                if int(o["id"]) in present]

    def __call__(self, images: list[np.ndarray], prompts: list[list[str]]) -> list[Detections]:  # the detector
        out = []
        for img in images:
            inst = self.scenes[_key(img)].instances
            boxes, labels = [], []
            for oid, caption in self._objects(img):
                rr, cc = np.nonzero(inst == oid)
                boxes.append([cc.min(), rr.min(), cc.max() + 1, rr.max() + 1])
                labels.append(caption)
            out.append(Detections(np.array(boxes, np.float32).reshape(-1, 4), np.ones(len(boxes), np.float32),
                                  tuple(labels)))
        return out

    def masks(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[MaskSet]:  # the segmenter
        out = []
        for img, b in zip(images, boxes, strict=True):
            inst = self.scenes[_key(img)].instances
            ids = [oid for oid, _ in self._objects(img)]
            by_box = {}
            for oid in ids:  # each box back to its object
                rr, cc = np.nonzero(inst == oid)
                by_box[(float(cc.min()), float(rr.min()), float(cc.max() + 1), float(rr.max() + 1))] = oid
            masks = np.stack([inst == by_box[tuple(float(v) for v in box)] for box in b])
            out.append(MaskSet(masks, np.ones(len(b), np.float32)))
        return out


class _Segmenter:
    name = "oracle"
    model_id = "synthetic-truth"

    def __init__(self, truth: _Truth) -> None:
        self.truth = truth

    def load(self) -> None:
        return None

    def unload(self) -> None:
        return None

    def __call__(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[MaskSet]:
        return self.truth.masks(images, boxes)


def _pipeline(truth: _Truth, depth_scale: float) -> PerceptionPipeline:
    config = PerceptionConfig(filter=StageSpec("none"), embedder=StageSpec("none"), detector=StageSpec("oracle"),
                              captioner=StageSpec("label"), segmenter=StageSpec("oracle"),
                              depth=StageSpec("oracle"), focal_estimator=StageSpec("none"), vocabulary=("object",),
                              score_threshold=0.0, iou_threshold=1.0, min_area_frac=0.0, max_objects=64,
                              min_mask_pixels=1, batch_size=32, device="cpu")
    depth = GivenDepth(lambda img: (truth.scenes[_key(img)].depth * np.float32(depth_scale), None),
                       model_id="synthetic-z-depth")
    return PerceptionPipeline(config, {"filter": KeepAllFilter(), "detector": truth, "captioner": LabelCaptioner(),
                                       "segmenter": _Segmenter(truth), "depth": depth, "embedder": NoTextEmbedder()})


def _ground_truth_for(out: Path, scenes: dict[str, Any], gt_dir: Path) -> None:
    """Ground-truth files with the perception path's object ids (each mask's synthetic object by majority)."""
    for sid, scene in scenes.items():
        folder = out / "scenes" / sid
        if not folder.is_dir():
            continue
        perceived = load_scene(folder).instances
        by_id = {int(o["id"]): o for o in scene.ground_truth["objects"]}
        objects = []
        for k in sorted(set(np.unique(perceived).tolist()) - {0}):
            syn = Counter(scene.instances[perceived == k].tolist()).most_common(1)[0][0]
            if syn in by_id:
                objects.append(dict(by_id[syn], id=k))
        (gt_dir / sid).mkdir(parents=True, exist_ok=True)
        (gt_dir / sid / "ground_truth.json").write_text(json.dumps(dict(scene.ground_truth, objects=objects)))


def _summary(scores: list[Any]) -> dict[str, Any]:
    qual = [s for s in scores if s.kind != "quantitative" and s.excluded is None]
    out: dict[str, Any] = {"qa": len(scores), "qualitative_n": len(qual),
                           "qualitative_accuracy": float(np.mean([s.correct for s in qual])) if qual else None}
    clock = [s.correct for s in scores if s.type == "clock_direction"]
    out["clock_within_1h"] = float(np.mean(clock)) if clock else None
    quals: dict[str, Any] = {}
    for fam, stems in QUALITATIVE.items():
        ss = [s for s in qual if s.type.rsplit("_", 1)[0] in stems]
        quals[fam] = {"n": len(ss), "accuracy": float(np.mean([s.correct for s in ss])) if ss else None}
    out["qualitative"] = quals
    fams: dict[str, Any] = {}
    for fam, types in FAMILIES.items():
        ss = [s for s in scores if s.type in types and s.rel_error is not None and s.truth]
        if not ss:
            fams[fam] = {"n": 0}
            continue
        rel = np.array([s.rel_error for s in ss])
        ratio = np.array([s.estimate / s.truth for s in ss])
        fams[fam] = {"n": len(ss), "median_rel_error": float(np.median(rel)),
                     "p90_rel_error": float(np.quantile(rel, 0.9)), "median_ratio": float(np.median(ratio))}
    out["families"] = fams
    return out


def run(n: int, seed: int, factors: list[float], qa_per_image: int) -> dict[str, Any]:
    synth = [generate_scene(i, seed=seed, config=SynthConfig()) for i in range(n)]
    scenes = {f"s{i:04d}": s for i, s in enumerate(synth)}
    truth = _Truth()
    for s in synth:
        truth.add(s)
    gen = GenerateConfig(qa=QAConfig(qa_per_image=qa_per_image, seed=seed), geometry=GeometryConfig(seed=seed))
    results: dict[str, Any] = {model: {} for model in MODELS}
    with tempfile.TemporaryDirectory() as tmp:
        for model in MODELS:
            for k in factors:
                t0 = time.perf_counter()
                out = Path(tmp) / f"{model}_{k:g}"
                items = [ImageItem(sid, s.image, f"synthetic[{sid}]", focal_length_px=float(s.camera["fx"]) * k,
                                   focal_source="user") for sid, s in scenes.items()]
                report = _pipeline(truth, k if model == "depth-pro" else 1.0).run(items, out, progress=False)
                manifest = run_generate(out / "scenes", out, gen, progress=False)
                gt_dir = Path(tmp) / f"gt_{model}_{k:g}"
                _ground_truth_for(out, scenes, gt_dir)
                entry = _summary(score_dataset(gt_dir, out))
                entry["scenes"] = report["ok"]
                entry["floor_found"] = manifest["counts"]["gravity"].get("plane", 0)
                entry["seconds"] = round(time.perf_counter() - t0, 1)
                results[model][f"{k:g}"] = entry
                print(f"{model} x{k:g}: {entry['scenes']} scenes, qualitative {entry['qualitative_accuracy']:.3f}, "
                      f"{entry['seconds']} s", file=sys.stderr, flush=True)
    return results


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def markdown(results: dict[str, Any], n: int, seed: int) -> str:
    lines = [f"Wrong focal length vs exact truth: {n} synthetic scenes (seed {seed}, 640 x 480) through the photo "
             "path with exact depth and masks; the focal length given is the true one times the factor. "
             "Quantitative cells: median relative error (p90) and median ratio estimate / truth.", ""]
    titles = {"metric-z": "metric z-depth model (Depth Anything V2, ZoeDepth): depth unchanged, "
                          "back-projection with the wrong focal length",
              "depth-pro": "Depth Pro given the wrong focal length (or estimating it wrong): depth scaled by the "
                           "factor"}
    shown = ("distances", "widths", "heights", "vertical offsets", "camera distances")
    for model, rows in results.items():
        lines += [f"### {titles[model]}", "",
                  "| focal factor | floor found | qualitative acc | left/right | above/below | front/behind | sizes | "
                  + " | ".join(shown) + " |",
                  "|---|---|---|---|---|---|---|" + "---|" * len(shown)]
        for k, e in rows.items():
            cells = [f"x{k}", f"{e['floor_found']}/{e['scenes']}", _pct(e["qualitative_accuracy"])]
            cells += [_pct(e["qualitative"][f]["accuracy"]) for f in QUALITATIVE]
            for fam in shown:
                f = e["families"][fam]
                cells.append("-" if not f.get("n") else
                             f"{_pct(f['median_rel_error'])} ({_pct(f['p90_rel_error'])}), x{f['median_ratio']:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="synthetic scenes (default 100)")
    ap.add_argument("--seed", type=int, default=2024, help="scene and QA seed (default 2024)")
    ap.add_argument("--factors", default="0.5,0.7,0.85,1,1.2,1.5,2",
                    help="focal length factors, comma-separated (default 0.5,0.7,0.85,1,1.2,1.5,2)")
    ap.add_argument("--qa-per-image", type=int, default=20, help="questions per scene (default 20)")
    ap.add_argument("--json", type=Path, default=None, help="write the results as JSON here (default: none)")
    ap.add_argument("--md", type=Path, default=None, help="write the markdown tables here (default: none)")
    args = ap.parse_args()
    factors = [float(f) for f in args.factors.split(",") if f.strip()]
    t0 = time.perf_counter()
    results = run(args.n, args.seed, factors, args.qa_per_image)
    text = markdown(results, args.n, args.seed)
    print(text)
    meta = {"scenes": args.n, "seed": args.seed, "factors": factors, "qa_per_image": args.qa_per_image,
            "wall_s": round(time.perf_counter() - t0, 1), "models": {
                "metric-z": "depth predicted from pixels (unchanged by the focal length); back-projected with f * k",
                "depth-pro": "depth scaled by k (Depth Pro's depth is proportional to its focal length); f * k"}}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text + "\n")


if __name__ == "__main__":
    main()
