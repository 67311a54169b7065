"""Speed of the geometry + QA path on 640x480 synthetic scenes, one CPU core, split by stage.

Run: ``python benchmarks/bench_geometry_qa.py [--n 60] [--qa-per-image 10] [--json out.json]``.
Thread pools are pinned to one thread before numpy is imported. Scenes are written to a temp
folder first (rendering is not timed); then every stage is timed separately per scene.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from spatialforge import __version__  # noqa: E402
from spatialforge.geometry import GeometryConfig, build_scene_graph, estimate_depth_noise  # noqa: E402
from spatialforge.geometry.scene_graph import scene_gravity  # noqa: E402
from spatialforge.io.dataset import make_row, write_shard  # noqa: E402
from spatialforge.io.scene_folder import find_scene_dirs, load_scene  # noqa: E402
from spatialforge.qa import QAConfig, generate_qa  # noqa: E402
from spatialforge.synth import SynthConfig, write_synthetic_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--qa-per-image", type=int, default=10)
    ap.add_argument("--noise", type=float, default=0.0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    with tempfile.TemporaryDirectory() as tmp:
        scenes_dir = Path(tmp) / "scenes"
        write_synthetic_dataset(scenes_dir, n=args.n, seed=123, config=SynthConfig(depth_noise=args.noise),
                                progress=False)
        folders = find_scene_dirs(scenes_dir)
        gcfg, qcfg = GeometryConfig(), QAConfig(qa_per_image=args.qa_per_image)
        t = {k: [] for k in ("load", "noise", "gravity", "scene_graph", "qa", "row")}
        n_qa, rows = 0, []
        for f in folders:  # warm-up on the first scene (imports, caches)
            build_scene_graph(load_scene(f), gcfg)
            break
        for f in folders:
            t0 = time.perf_counter()
            scene = load_scene(f)
            t1 = time.perf_counter()
            noise = estimate_depth_noise(scene.depth)
            t2 = time.perf_counter()
            scene_gravity(scene, gcfg, noise, np.random.default_rng(0))
            t3 = time.perf_counter()
            graph = build_scene_graph(scene, gcfg)  # noise + gravity + objects
            t4 = time.perf_counter()
            qa = generate_qa(graph, qcfg)
            t5 = time.perf_counter()
            rows.append(make_row(scene.scene_id, (f / "image.png").read_bytes(), "image.png", 640, 480,
                                 qa.qa, graph.gravity.source))
            t6 = time.perf_counter()
            n_qa += len(qa.qa)
            for k, v in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5), strict=True):
                t[k].append(v)
        t0 = time.perf_counter()
        write_shard(Path(tmp) / "shard.parquet", rows)
        write_s = time.perf_counter() - t0

    n = len(folders)
    mean = {k: statistics.fmean(v) * 1000 for k, v in t.items()}
    objects_ms = mean["scene_graph"] - mean["noise"] - mean["gravity"]
    geom_qa = mean["scene_graph"] + mean["qa"]
    result = {
        "spatialforge": __version__, "python": platform.python_version(), "numpy": np.__version__,
        "cpu": platform.processor() or platform.machine(), "threads": 1, "scenes": n,
        "image": "640x480", "depth_noise": args.noise, "qa_per_image": args.qa_per_image,
        "ms_per_scene": {"load (PNG decode + validation)": round(mean["load"], 2),
                         "depth noise estimate": round(mean["noise"], 2),
                         "gravity (normals + RANSAC)": round(mean["gravity"], 2),
                         "objects (denoise + boxes)": round(objects_ms, 2),
                         "scene graph total": round(mean["scene_graph"], 2),
                         "qa generation": round(mean["qa"], 2),
                         "row assembly": round(mean["row"], 2),
                         "parquet write (per scene)": round(write_s / n * 1000, 2)},
        "geometry_plus_qa_scenes_per_s": round(1000 / geom_qa, 1),
        "end_to_end_scenes_per_s": round(1000 / (mean["load"] + geom_qa + mean["row"] + write_s / n * 1000), 1),
        "qa_pairs_per_s_geometry_plus_qa": round(n_qa / n * 1000 / geom_qa, 1),
        "qa_per_scene": round(n_qa / n, 2),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
