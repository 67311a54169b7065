"""Scaling of `spatialforge generate` on 640x480 synthetic scenes: scenes/s per runner and worker count.

Run: ``python benchmarks/bench_scaling.py [--n 120] [--shard-size 10] [--workers 1,2] [--ray-cpus 2]
[--repeat 2] [--json out.json]``. Thread pools are pinned to one thread before numpy is imported (each
worker is one single-threaded process). Scenes are rendered to a temp folder first (not timed); each
configuration writes a fresh dataset ``--repeat`` times and the fastest run counts.

Modes (``--modes``, default all):

* ``inprocess``: ``run_generate`` in this process pinned to one CPU: the single-core whole-process
  figure (load + geometry + QA + encode + write), comparable with any earlier version (this mode uses
  only the API ``run_generate(scenes, out, config)`` that every version has).
* ``pool``: ``--runner local --workers N`` for each N of ``--workers`` (N >= 2; wall time includes
  starting the worker processes).
* ``ray``: ``--runner ray`` on a local Ray cluster of ``--ray-cpus`` CPUs started by this script
  (its start-up time is reported separately, not counted).

Scaling efficiency = (scenes/s with N workers) / (N x scenes/s in process). ``geometry_qa_scenes_per_s``
is scenes / (geometry + QA CPU-seconds summed over workers): the speed of those two stages alone.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from spatialforge import __version__  # noqa: E402
from spatialforge.pipeline import GenerateConfig, run_generate  # noqa: E402
from spatialforge.qa import QAConfig  # noqa: E402
from spatialforge.synth import SynthConfig, write_synthetic_dataset  # noqa: E402


def _once(scenes: Path, out: Path, cfg: GenerateConfig, runner) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    kwargs = {} if runner is None else {"runner": runner}
    t0 = time.perf_counter()
    m = run_generate(scenes, out, cfg, progress=False, log=lambda s: None, **kwargs)
    wall = time.perf_counter() - t0
    t = m["timings_s"]
    n = m["counts"]["scenes_found"]
    return {"wall_s": round(wall, 3), "scenes_per_s": round(n / wall, 2),
            "geometry_qa_scenes_per_s": round(n / (t["geometry"] + t["qa"]), 2),
            "stage_cpu_s": {k: v for k, v in t.items() if k != "wall"}, "rows": m["counts"]["rows"]}


def _best(scenes: Path, out: Path, cfg: GenerateConfig, runner, repeat: int) -> dict:
    runs = [_once(scenes, out, cfg, runner) for _ in range(repeat)]
    best = min(runs, key=lambda r: r["wall_s"])
    best["all_walls_s"] = [r["wall_s"] for r in runs]
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=120, help="number of 640x480 scenes")
    ap.add_argument("--shard-size", type=int, default=10, help="scenes per shard (the unit of parallel work)")
    ap.add_argument("--qa-per-image", type=int, default=10)
    ap.add_argument("--workers", default="2", help="comma-separated worker counts for the pool mode")
    ap.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--repeat", type=int, default=2, help="runs per configuration; the fastest counts")
    ap.add_argument("--modes", default="inprocess,pool,ray", help="comma-separated: inprocess, pool, ray")
    ap.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    cfg = GenerateConfig(qa=QAConfig(qa_per_image=args.qa_per_image), shard_size=args.shard_size)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    result: dict = {"spatialforge": __version__, "python": platform.python_version(), "numpy": np.__version__,
                    "cpu": platform.processor() or platform.machine(), "cpus_available": len(cpus or []) or None,
                    "scenes": args.n, "image": "640x480", "shard_size": args.shard_size,
                    "qa_per_image": args.qa_per_image, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        scenes, out = Path(tmp) / "scenes", Path(tmp) / "out"
        write_synthetic_dataset(scenes, n=args.n, seed=123, config=SynthConfig(), progress=False)
        run_generate(scenes, out, GenerateConfig(shard_size=args.n), progress=False, log=lambda s: None)  # warm-up
        if "inprocess" in modes:
            if cpus:
                os.sched_setaffinity(0, {cpus[0]})
            result["runs"]["inprocess"] = _best(scenes, out, cfg, None, args.repeat)
            if cpus:
                os.sched_setaffinity(0, set(cpus))
        if "pool" in modes or "ray" in modes:
            from spatialforge.pipeline.runners import RunnerConfig
        if "pool" in modes:
            for n in (int(w) for w in args.workers.split(",")):
                result["runs"][f"pool_{n}"] = _best(scenes, out, cfg, RunnerConfig(workers=n), args.repeat)
        if "ray" in modes:
            import logging

            import ray

            t0 = time.perf_counter()
            ray.init(num_cpus=args.ray_cpus, include_dashboard=False, object_store_memory=200 * 1024 * 1024,
                     logging_level=logging.WARNING)
            result["ray_start_s"] = round(time.perf_counter() - t0, 2)
            try:
                _once(scenes, out, cfg, RunnerConfig(name="ray"))  # warm the workers (imports)
                result["runs"][f"ray_{args.ray_cpus}cpu"] = _best(scenes, out, cfg, RunnerConfig(name="ray"),
                                                                  args.repeat)
            finally:
                ray.shutdown()
    base = result["runs"].get("inprocess")
    if base:
        for name, r in result["runs"].items():
            n = 1 if name == "inprocess" else int(name.split("_")[1].rstrip("cpu"))
            r["parallelism"] = n
            r["scaling_efficiency"] = round(r["scenes_per_s"] / (n * base["scenes_per_s"]), 3)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
