"""How long the web app's actions take, without the browser and the network (the server-side work).

Run: ``python benchmarks/bench_app.py [--scenes 10] [--device cpu] [--json out.json]``.

For built-in synthetic scenes (640 x 480, seed 0) it times, per scene:

* ``load``: generating and reading back the scene (``load_synthetic``);
* ``analyse``: the 3D scene graph and the generated questions (``analyse_scene``);
* ``render``: the page's outputs: mask overlay, depth picture, the Plotly 3D view, both tables;
* ``ask``: one scene-graph answer (``answer_question``), over five kinds of question;
* ``afford``: the Affordance tab with the full-size AffordanceCLIP (RN101, random init: no download) on
  ``--device``: heatmap, lifting into 3D per object, marked picture, region table, and its 3D figure;

and the size of the 3D views' JSON (what the browser downloads for the plot). Medians over the scenes; the
first scene is a warm-up and is not timed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clip-model", default="RN101-quickgelu")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from spatialforge import __version__
    from spatialforge.afford.config import ModelConfig
    from spatialforge.afford.model import AffordanceCLIP
    from spatialforge.afford.predict import AffordancePredictor
    from spatialforge.app.handlers import affordance, analyse_scene, answer_question, load_synthetic
    from spatialforge.app.ui import _afford_plot, _scene_outputs

    torch.manual_seed(0)
    predictor = AffordancePredictor(AffordanceCLIP.from_config(
        ModelConfig(clip_model=args.clip_model, clip_pretrained=None), device=args.device).eval(), device=args.device)
    times: dict[str, list[float]] = {k: [] for k in ("load", "analyse", "render", "ask", "afford")}
    plot_bytes: list[int] = []
    for i in range(args.scenes + 1):
        t0 = time.perf_counter()
        scene = load_synthetic(i, 0)
        t1 = time.perf_counter()
        view = analyse_scene(scene, "synthetic, seed 0")
        t2 = time.perf_counter()
        outputs = _scene_outputs(view)
        t3 = time.perf_counter()
        objs = view.graph.objects
        asked = 0
        if len(objs) >= 2:
            a, b = objs[0].id, objs[1].id
            questions = [f"How far is #{a} from #{b}?", f"How tall is #{a}?", f"Is #{a} taller than #{b}?",
                         f"At what clock direction is #{b} from #{a}?", f"How far is #{a} from the camera?"]
            t_ask = time.perf_counter()
            for q in questions:
                answer_question(view, q)
            asked = len(questions)
            ask_s = (time.perf_counter() - t_ask) / asked
        t4 = time.perf_counter()
        result = affordance(view, "pour", predictor)
        _afford_plot(view, result)
        t5 = time.perf_counter()
        if i == 0:
            continue  # warm-up
        times["load"].append(t1 - t0)
        times["analyse"].append(t2 - t1)
        times["render"].append(t3 - t2)
        if asked:
            times["ask"].append(ask_s)
        times["afford"].append(t5 - t4)
        plot_bytes.append(len(outputs[3].to_json()))
    rows = {k: round(1000 * statistics.median(v), 1) for k, v in times.items() if v}
    result = {
        "spatialforge": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "device": args.device, "threads": torch.get_num_threads(), "scenes": args.scenes, "image": [640, 480],
        "clip_model": args.clip_model, "median_ms": rows,
        "scene_tab_ms": round(rows["load"] + rows["analyse"] + rows["render"], 1),
        "plot_json_kib_median": round(statistics.median(plot_bytes) / 1024, 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
