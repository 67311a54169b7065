"""``spatialforge`` command line: the composition root that picks stages and runs them.

Every command is callable from Python as ``main([...])``, which returns the exit code. User errors
print one line (``spatialforge: error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from spatialforge import __version__
from spatialforge._text import count
from spatialforge.cli.options import HelpFormatter, Parser, comma_list, fraction, int_at_least, number_at_least
from spatialforge.cli.photos import add_photo_options, perception_config, photo_source
from spatialforge.errors import RunFailedError, SpatialForgeError
from spatialforge.io.dataset import atomic_write_json
from spatialforge.io.outdir import OutputKind, check_output_file, prepare_output_dir

__all__ = ["build_parser", "main"]


_SCENES = OutputKind("scenes", ("synth_*", "synth.json"))
_EXPORT = OutputKind("export", ("llava.json", "images"))
_INSPECT = OutputKind("inspect", ("*_overlay.png", "*_depth.png"))
_DEMO = OutputKind("demo", ("scenes", "dataset"))
_SEED_HELP = "random seed, an integer >= 0"


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="render synthetic RGB-D scenes with exact ground truth",
                       description="Render N synthetic RGB-D scenes (scene-folder format + ground_truth.json). "
                                   "Rerunning the same command resumes; a larger --n adds scenes.")
    p.add_argument("--n", type=int_at_least(1), default=20, help="number of scenes")
    p.add_argument("--out", required=True, type=Path, help="output folder (one sub-folder per scene)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help=_SEED_HELP)
    p.add_argument("--noise", type=number_at_least(0.0, high=0.5), default=0.0,
                   help="relative per-pixel depth noise sigma, from 0 to 0.5, e.g. 0.02 for 2%%")
    p.add_argument("--width", type=int_at_least(16, 8192), default=640, help="image width in pixels")
    p.add_argument("--height", type=int_at_least(16, 8192), default=480, help="image height in pixels")
    p.add_argument("--depth-format", choices=("png", "npy"), default="png",
                   help="depth.png (uint16 millimetres) or depth.npy (float32 metres)")
    p.add_argument("--parts", action="store_true",
                   help="give mugs, kettles and knives part labels with masks (handle, spout, blade) and the "
                        "actions they afford: truth for affordances in 3D (docs/affordance.md)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the scenes of an earlier `synth` run in --out (only folders synth wrote)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="scene folders -> 3D scene graphs -> spatial QA dataset",
                       description="Generate the spatial VQA dataset from a folder of scene folders (or photos). "
                                   "Rerunning the same command resumes. Exit status 1 when no row was produced "
                                   "or --max-failure-rate is exceeded (docs/safety.md).")
    p.add_argument("scenes_dir", type=Path, nargs="?", default=None,
                   help="a folder of RGB-D scene folders, or a folder of photos (jpg/png/webp); "
                        "default: none, then --hf-dataset is needed")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--seed", type=int_at_least(0), default=0, help=_SEED_HELP)
    p.add_argument("--qa-per-image", type=int_at_least(1), default=10,
                   help="questions per scene (fewer where a scene has fewer askable questions: the shortfall "
                        "is counted)")
    p.add_argument("--mix", type=fraction, default=0.5, help="share of quantitative questions, from 0 to 1")
    p.add_argument("--units", choices=("metric", "imperial", "mixed"), default="metric",
                   help="units of the answers")
    p.add_argument("--margin", type=number_at_least(0.0), default=0.10,
                   help="tie margin in metres for position comparisons")
    p.add_argument("--margin-rel", type=number_at_least(0.0), default=0.15,
                   help="relative tie margin for size comparisons")
    p.add_argument("--types", type=comma_list, default=None,
                   help="comma-separated question type ids to use (default: all; see `spatialforge catalog`); with "
                        "--afford, naming afford_hold_point or afford_which_object asks only the affordance types "
                        "named (with at least one catalogue type)")
    p.add_argument("--exclude-types", type=comma_list, default=(),
                   help="comma-separated question type ids to leave out, the affordance types of --afford "
                        "included (default: none)")
    p.add_argument("--shard-size", type=int_at_least(1), default=256, help="scenes per Parquet shard")
    p.add_argument("--overwrite", action="store_true",
                   help="start again: delete what an earlier `generate` wrote in --out (nothing else) instead of "
                        "resuming")
    p.add_argument("--max-failure-rate", type=fraction, default=None,
                   help="exit with status 1 when more than this share of the inputs was rejected or failed "
                        "(default: no limit; a run that produces no row always exits 1)")
    p.add_argument("--composite", type=int_at_least(0), default=0, metavar="N",
                   help="also ask up to N composite (multi-step) questions per scene: triangles, the closest of "
                        "several, fits between, within a radius, ... (docs/conventions.md; 0: none)")
    p.add_argument("--with-reasoning", action="store_true",
                   help="write each composite answer in the chat messages as <think>the steps, with the exact "
                        "measured values</think> then the answer (training data for chains; needs --composite)")
    p.add_argument("--afford", action="store_true",
                   help="also ask the affordance questions (afford_hold_point: where to hold an object, answered "
                        "with a pixel and a 3D point; afford_which_object: which object affords cutting or pouring) "
                        "on scenes whose ground_truth.json lists part labels (`spatialforge synth --parts`), and "
                        "store their truth in an extra `afford` column; other scenes get none and are counted "
                        "(docs/affordance.md); not on photos, which have no part labels")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first internal error")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_runner_options(p)
    add_photo_options(p)


def _add_runner_options(p) -> None:
    """How `generate` spreads its shards over processes or a Ray cluster (docs/scale.md); never what it writes."""
    from spatialforge.pipeline.runners import RUNNERS, parse_workers

    g = p.add_argument_group("execution (the output is the same, byte for byte, whichever is chosen; docs/scale.md)")
    g.add_argument("--runner", choices=RUNNERS, default=None,
                   help="local: this machine; ray: Ray tasks on a local or remote Ray cluster (needs "
                        "`pip install 'spatialforge[ray]'`) (default: local, or the --runner-config file's)")
    g.add_argument("--workers", type=parse_workers, default=None,
                   help="processes for load, geometry, QA and encoding: an integer >= 1, or auto for every CPU this "
                        "process may use; 1 runs them in this process; with --runner ray, the CPUs of the local "
                        "cluster it starts (default: 1, or the --runner-config file's)")
    g.add_argument("--address", default=None,
                   help="with --runner ray: the cluster to join (auto, HOST:PORT or ray://HOST:10001) (default: "
                        "start a local Ray cluster for this run, or the --runner-config file's)")
    g.add_argument("--runner-config", type=Path, default=None,
                   help="a .toml or .json runner config: runner, workers, address, max_retries, worker_setup and "
                        "[stages.cpu] num_cpus/num_gpus/memory per task (default: none; flags override it)")
    g.add_argument("--worker-setup", action="append", default=None, metavar="MODULE:FUNCTION",
                   help="call this function once in every worker process before its first shard (plugins, logging, "
                        "debugging; repeatable) (default: none)")


class _TopFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="spatialforge",
        description="Metric 3D spatial reasoning data for VLMs and robots.",
        formatter_class=_TopFormatter,
        epilog=textwrap.dedent("""\
            quickstart:  spatialforge demo
            docs:        README.md, docs/formats.md, docs/conventions.md"""),
    )
    parser.add_argument("--version", action="version", version=f"spatialforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_synth(sub)
    _add_generate(sub)
    p = sub.add_parser("catalog", help="list the question catalogue",
                       description="Print every question type with its kind, meaning and template counts.")
    p.add_argument("--json", action="store_true", help="machine-readable JSON")
    p = sub.add_parser("export", help="export a generated dataset (e.g. LLaVA JSON)",
                       description="Export a generated dataset to another training format.")
    p.add_argument("out_dir", type=Path, help="output folder of `spatialforge generate`")
    p.add_argument("--format", choices=("llava",), default="llava", help="the export format")
    p.add_argument("--dest", type=Path, default=None,
                   help="destination folder (default: OUT_DIR-<format>, beside the dataset)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --dest")
    p = sub.add_parser("demo", help="synthesise scenes, generate a dataset, print a summary (offline)",
                       description="The main job on built-in synthetic scenes: synth -> generate -> summary. "
                                   "Each run replaces the previous demo's output in --out.")
    p.add_argument("--out", type=Path, default=Path("spatialforge-demo"), help="work folder")
    p.add_argument("--n", type=int_at_least(1), default=24, help="number of synthetic scenes")
    p.add_argument("--seed", type=int_at_least(0), default=0, help=_SEED_HELP)
    p.add_argument("--samples", type=int_at_least(0), default=8, help="QA samples to print")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p = sub.add_parser("inspect", help="pictures of one processed scene: masks + captions, and depth",
                       description="Render a mask/caption overlay and a depth picture of one scene.")
    p.add_argument("out_dir", type=Path, help="output folder of `generate` on photos, or a folder of scenes")
    p.add_argument("scene_id", help="the scene id (image file stem)")
    p.add_argument("--dest", type=Path, default=None,
                   help="where to write the PNGs (default: OUT_DIR-inspect, beside the input, never inside it)")
    p = sub.add_parser("show", help="draw a picture or an interactive 3D view of a scene's 3D scene graph",
                       description="Render boxes, captions and a top-down map of one scene to a PNG, and/or "
                                   "interactive 3D views in the gravity-aligned frame: a self-contained Plotly "
                                   "page (--html) and a rerun recording (--rerun; needs the viz3d extra). "
                                   "See docs/views.md.")
    p.add_argument("scene_dir", type=Path, help="a scene folder")
    p.add_argument("--out", type=Path, default=None,
                   help="PNG path (default: ./<scene id>_scene_graph.png when neither --html nor --rerun is "
                        "given; never inside the scene folder)")
    p.add_argument("--html", type=Path, default=None,
                   help="write an interactive 3D view as one self-contained .html page that opens offline "
                        "(default: none)")
    p.add_argument("--rerun", type=Path, default=None,
                   help="write a rerun recording (.rrd; open it with `rerun FILE.rrd`) (default: none)")
    p.add_argument("--dataset", type=Path, default=None,
                   help="a `generate` output folder: this scene's QA pairs go into the --html side panel and "
                        "the --rerun text entries (default: no QA)")
    from spatialforge.cli.afford import add_afford
    from spatialforge.cli.app import add_app_parser
    from spatialforge.cli.eval import add_eval
    from spatialforge.cli.reason import add_reason_parser
    from spatialforge.cli.reward import add_reward_parser
    from spatialforge.cli.train import add_train

    add_afford(sub)
    add_eval(sub)
    add_train(sub)
    add_reason_parser(sub)
    add_reward_parser(sub)
    add_app_parser(sub)
    return parser


def _beside(folder: Path, suffix: str) -> Path:
    """A default output folder next to an input folder (never inside it): ``data`` -> ``data-<suffix>``."""
    folder = folder.resolve()
    return folder.with_name(f"{folder.name}-{suffix}")


def _cmd_synth(args) -> int:
    from spatialforge.synth import SynthConfig, write_synthetic_dataset
    from spatialforge.synth.writer import synth_settings

    cfg = SynthConfig(width=args.width, height=args.height, depth_noise=args.noise, depth_format=args.depth_format,
                      parts=args.parts)
    prepared = prepare_output_dir(args.out, _SCENES, overwrite=args.overwrite)
    settings = synth_settings(args.seed, cfg)
    record = args.out / "synth.json"
    n_before = 0
    if prepared.resumed:
        try:
            previous = json.loads(record.read_text())
            same = {k: previous[k] for k in settings} == settings
            n_before = int(previous["n"])
        except (OSError, ValueError, KeyError, TypeError):
            raise SpatialForgeError(f"{record}: missing or unreadable; use --overwrite to start again") from None
        if not same:
            changed = [k for k in ("seed", "spatialforge") if previous.get(k) != settings[k]] + [
                f"--{'noise' if k == 'depth_noise' else k.replace('_', '-')}"
                for k in settings["config"] if previous["config"].get(k) != settings["config"][k]]
            raise SpatialForgeError(f"{args.out}: holds scenes made with other settings ({', '.join(changed)}); "
                                    "use a new --out or --overwrite")
        if args.n < n_before:
            raise SpatialForgeError(f"{args.out}: already holds {n_before} scenes, more than --n {args.n}; "
                                    "use a new --out or --overwrite")
    atomic_write_json(record, dict(settings, n=args.n))
    paths = write_synthetic_dataset(args.out, n=args.n, seed=args.seed, config=cfg, progress=not args.no_progress,
                                    skip_existing=prepared.resumed)
    print(f"wrote {count(len(paths) - n_before, 'scene')} to {args.out}"
          + (f" (resumed: {n_before} already there)" if prepared.resumed else ""))
    return 0


def _generate_config(args):
    from spatialforge.geometry import GeometryConfig
    from spatialforge.pipeline import GenerateConfig
    from spatialforge.pipeline.generate import select_types
    from spatialforge.qa import QAConfig

    types, exclude_types, afford_types = select_types(args.types, args.exclude_types, afford=args.afford)
    qa = QAConfig(qa_per_image=args.qa_per_image, quantitative_share=args.mix, units=args.units,
                  margin_m=args.margin, margin_rel=args.margin_rel, types=types,
                  exclude_types=exclude_types, seed=args.seed)
    composite = None
    if args.composite:
        from spatialforge.qa.composite import CompositeConfig

        composite = CompositeConfig(per_scene=args.composite, units=args.units, margin_m=args.margin,
                                    margin_rel=args.margin_rel, seed=args.seed)
    return GenerateConfig(qa=qa, geometry=GeometryConfig(seed=args.seed), shard_size=args.shard_size,
                          fail_fast=args.fail_fast, composite=composite, with_reasoning=args.with_reasoning,
                          afford=args.afford, afford_types=afford_types)


def _print_summary(manifest: dict, out: Path) -> None:
    c = manifest["counts"]
    t = manifest["timings_s"]
    n_shards = len(manifest["shards"])
    redone = manifest.get("shards_redone") or []
    print(f"scenes: {c['scenes_found']} found, {c['scenes_ok']} ok, {c['scenes_rejected']} rejected, "
          f"{c['scenes_failed']} failed, {c['scenes_without_qa']} without questions")
    print(f"QA pairs: {c['qa_pairs']} ({c['qa_per_scene']} per scene) "
          + ", ".join(f"{k} {v}" for k, v in c["per_kind"].items()))
    if c.get("qa_shortfall"):
        print(f"shortfall: {count(c['qa_shortfall'], 'question')} fewer than --qa-per-image asked for "
              "(those scenes hold fewer askable questions)")
    print(f"gravity: {c['gravity']}; objects measured {c['objects_measured']}, "
          f"skipped {sum(c['objects_skipped'].values())}, unreferable {c['objects_unreferable']}")
    afford = c.get("afford")
    if afford is not None:
        why = ", ".join(f"{k} {v}" for k, v in afford["without_parts_by_reason"].items())
        print("affordance questions: " + ", ".join(f"{k} {v}" for k, v in afford["per_type"].items())
              + f"; {count(afford['scenes_with_parts'], 'scene')} with part labels, {afford['scenes_without_parts']} "
                f"without" + (f" ({why})" if why else ""))
    for r in manifest["rejected"][:10]:
        print(f"  rejected {r['scene_id']}: {r['message']}")
    if len(manifest["rejected"]) > 10:
        print(f"  ... and {len(manifest['rejected']) - 10} more rejected (see {out / 'manifest.json'})")
    if manifest.get("shards_resumed") or redone:
        print(f"resumed {manifest['shards_resumed']} of {count(n_shards, 'shard')}"
              + (f"; redid {len(redone)} whose scenes changed" if redone else ""))
    print(f"time: {t['wall']:.2f} s wall; written to {out}")


def _gate(manifest: dict, max_failure_rate: float | None) -> None:
    """Exit status 1 (after the summary) when nothing was produced or too much failed."""
    c = manifest["counts"]
    p = manifest.get("perception") or {}
    inputs = p.get("images", c["scenes_found"])
    failures = c["scenes_rejected"] + c["scenes_failed"] + p.get("failed", 0)
    if c["rows"] == 0:
        raise RunFailedError(f"no row was produced: {c['scenes_found']} scenes found, {c['scenes_rejected']} "
                             f"rejected, {c['scenes_failed']} failed (see the manifest)")
    if max_failure_rate is not None and inputs and failures / inputs > max_failure_rate:
        raise RunFailedError(f"{failures} of {inputs} inputs were rejected or failed ({failures / inputs:.1%}), "
                             f"more than --max-failure-rate {max_failure_rate:g}")


def _cmd_generate(args) -> int:
    from spatialforge.pipeline import run_generate
    from spatialforge.pipeline.generate import DATASET_OUTPUT
    from spatialforge.pipeline.runners import Interrupted, check_setup, load_runner_config

    cfg = _generate_config(args)
    source = photo_source(args)  # None: a folder of RGB-D scenes; a bad combination of sources is one line
    runner = load_runner_config(args.runner_config, runner=args.runner, workers=args.workers, address=args.address,
                                setup=args.worker_setup)
    if runner.name == "ray":
        from spatialforge._optional import require

        require("ray", extra="ray", feature="--runner ray")
    check_setup(runner.setup)
    photos = source is not None
    if photos and args.afford:  # photos have no part labels: no affordance question could ever be asked
        from spatialforge.errors import ConfigError

        given = [f"{flag} {' '.join(map(str, v)) if isinstance(v, list | tuple) else v}"
                 for flag in ("--hf-dataset", "--webdataset", "--parquet")
                 if (v := getattr(args, flag[2:].replace("-", "_"))) is not None]
        raise ConfigError(f"--afford: the affordance questions need synthetic scenes with part labels (`spatialforge "
                          f"synth --parts`); the photos of {given[0] if given else f'the folder {args.scenes_dir}'} "
                          "have none: leave out --afford")
    perception = perception_config(args) if photos else None  # every option checked before anything is written
    inputs = [*(source.inputs() if photos else [args.scenes_dir]), args.runner_config]
    try:
        prepared = prepare_output_dir(args.out, DATASET_OUTPUT, inputs=inputs, overwrite=args.overwrite)
    except OSError as exc:
        raise SpatialForgeError(f"--out {args.out}: cannot write there ({exc.strerror or exc})") from None
    if prepared.kept:
        print(f"--overwrite kept what spatialforge did not write in {args.out}: {', '.join(prepared.kept)}")
    try:
        if photos:
            from spatialforge.perception.pipeline import PerceptionPipeline
            from spatialforge.pipeline.photos import run_photos

            pipeline = PerceptionPipeline.from_config(perception)
            manifest = run_photos(source, args.out, pipeline, cfg, progress=not args.no_progress, runner=runner)
            p = manifest["perception"]
            print(f"perception: {count(p['images'], 'image')}, {count(p['ok'], 'scene')}, {p['filtered']} filtered, "
                  f"{p['failed']} failed {p['failed_by_reason']}; intrinsics {p['intrinsics_sources']}")
        else:
            manifest = run_generate(args.scenes_dir, args.out, cfg, progress=not args.no_progress, runner=runner)
    except Interrupted as exc:  # SIGINT / SIGTERM: complete shards are kept, the rerun resumes
        print(f"spatialforge: {exc}", file=sys.stderr)
        return exc.exit_code
    _print_summary(manifest, args.out)
    faults = manifest.get("worker_faults") or {}
    if runner.name != "local" or runner.workers > 1 or faults.get("worker_deaths"):
        where = f"ray ({runner.address or 'a local cluster'})" if runner.name == "ray" else \
            f"local, {count(runner.workers, 'worker')}"
        print(f"runner: {where}; {manifest['throughput']['scenes_per_s']} scenes/s; "
              f"{count(faults.get('worker_deaths', 0), 'worker death')}"
              + (f", {len(faults['scenes_died'])} scenes recorded as worker_died" if faults.get("scenes_died") else ""))
    _gate(manifest, args.max_failure_rate)
    return 0


def _cmd_catalog(args) -> int:
    from spatialforge.qa import catalog_summary

    rows = catalog_summary()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{len(rows)} question types")
    for r in rows:
        a = r["answer_templates"]
        a_text = f"{a['yes']}+{a['no']}" if isinstance(a, dict) else str(a)
        print(f"  {r['id']:<20} {r['kind']:<12} q={r['question_templates']:<3} a={a_text:<6} {r['meaning']}")
    from spatialforge.qa.afford_types import AFFORD_TYPES
    from spatialforge.qa.composite import COMPOSITE_TYPES

    print(f"\nwith `generate --afford` (synthetic scenes with part labels): {', '.join(AFFORD_TYPES)}")
    print(f"with `generate --composite N`: {len(COMPOSITE_TYPES)} multi-step types ({', '.join(COMPOSITE_TYPES)})")
    return 0


def _cmd_export(args) -> int:
    from spatialforge.io.export import export_llava

    if not (args.out_dir / "data").is_dir():
        raise SpatialForgeError(f"{args.out_dir}: no data/ folder (is this a `spatialforge generate` output?)")
    dest = args.dest or _beside(args.out_dir, args.format)
    prepared = prepare_output_dir(dest, _EXPORT, inputs=[args.out_dir], overwrite=args.overwrite, flag="--dest")
    if prepared.resumed:
        raise SpatialForgeError(f"--dest {dest}: holds an earlier export; use --overwrite to replace it")
    info = export_llava(args.out_dir, dest)
    skipped = f"; {count(info['skipped'], 'image')} without questions left out" if info["skipped"] else ""
    print(f"exported {count(info['records'], 'record')} ({info['qa_pairs']} QA pairs) to {info['path']}{skipped}")
    if info["records"] == 0:
        raise RunFailedError(f"{args.out_dir}: no image with questions to export")
    return 0


def _cmd_demo(args) -> int:
    from spatialforge.geometry import GeometryConfig
    from spatialforge.io.dataset import iter_rows
    from spatialforge.pipeline import GenerateConfig, run_generate
    from spatialforge.qa import QAConfig
    from spatialforge.synth import SynthConfig, write_synthetic_dataset

    prepare_output_dir(args.out, _DEMO, overwrite=True)  # the demo always starts again, in its own folder only
    scenes = args.out / "scenes"
    dataset = args.out / "dataset"
    print(f"[1/3] rendering {args.n} synthetic RGB-D scenes -> {scenes}")
    write_synthetic_dataset(scenes, n=args.n, seed=args.seed, config=SynthConfig(), progress=not args.no_progress)
    print(f"[2/3] generating the spatial QA dataset -> {dataset}")
    cfg = GenerateConfig(qa=QAConfig(seed=args.seed), geometry=GeometryConfig(seed=args.seed))
    manifest = run_generate(scenes, dataset, cfg, progress=not args.no_progress)
    print("[3/3] summary")
    _print_summary(manifest, dataset)
    _gate(manifest, None)
    print(f"\n{args.samples} sample QA pairs:")
    by_kind: dict[str, list[tuple[str, dict]]] = {}
    for row in iter_rows(dataset, columns=["scene_id", "qa"]):
        for qa in row["qa"]:
            by_kind.setdefault(qa["kind"], []).append((row["scene_id"], qa))
    picked = []
    while len(picked) < args.samples and any(by_kind.values()):
        for items in by_kind.values():  # round-robin over kinds, one scene after another
            if items and len(picked) < args.samples:
                picked.append(items.pop(0 if len(picked) % 2 else len(items) // 2))
    for scene_id, qa in picked:
        value = qa["value"] if qa["kind"] != "yes_no" else bool(qa["value"])
        print(f"  [{scene_id} | {qa['type']}] Q: {qa['question']}\n      A: {qa['answer']}  "
              f"(value={value:.4g} {qa['unit']}, subjects={qa['subjects']})")
    return 0


def _cmd_inspect(args) -> int:
    from spatialforge.io.scene_folder import load_scene
    from spatialforge.viz import render_depth, render_overlay

    folder = args.out_dir / "scenes" / args.scene_id
    if not folder.is_dir():
        folder = args.out_dir / args.scene_id
    if not folder.is_dir():
        raise SpatialForgeError(f"{args.out_dir}: no scene {args.scene_id!r} (looked in scenes/ and the folder itself)")
    dest = args.dest or _beside(args.out_dir, "inspect")
    prepare_output_dir(dest, _INSPECT, inputs=[args.out_dir], flag="--dest")  # more scenes may join later
    scene = load_scene(folder)
    overlay, depth = dest / f"{args.scene_id}_overlay.png", dest / f"{args.scene_id}_depth.png"
    render_overlay(scene).save(overlay)
    model = scene.provenance.get("depth_model", scene.provenance.get("depth_file", ""))
    render_depth(scene.depth, title=f"depth: {model}").save(depth)
    print(f"wrote {overlay}\nwrote {depth}")
    return 0


def _cmd_show(args) -> int:
    from spatialforge import viz3d
    from spatialforge.errors import ConfigError
    from spatialforge.geometry import build_scene_graph
    from spatialforge.io.outdir import atomic_path
    from spatialforge.io.scene_folder import load_scene
    from spatialforge.viz import render_scene_graph

    if args.dataset is not None and args.html is None and args.rerun is None:
        raise ConfigError("--dataset: the QA pairs go into --html or --rerun; give one of them")
    inputs = [args.scene_dir, args.dataset]
    png = args.out
    if png is None and args.html is None and args.rerun is None:
        png = Path(f"{args.scene_dir.resolve().name}_scene_graph.png")
    if png is not None:
        check_output_file(png, inputs, suffixes=(".png",))
    if args.html is not None:
        check_output_file(args.html, inputs, flag="--html", suffixes=(".html", ".htm"))
    if args.rerun is not None:
        check_output_file(args.rerun, inputs, flag="--rerun", suffixes=(".rrd",))
    if args.html is not None:  # a missing extra fails before any work
        viz3d.require_plotly()
    if args.rerun is not None:
        viz3d.require_rerun()
    scene = load_scene(args.scene_dir)
    qa = None if args.dataset is None else viz3d.qa_for_scene(args.dataset, scene.scene_id)
    graph = build_scene_graph(scene)
    if png is not None:
        with atomic_path(png) as tmp:
            render_scene_graph(scene, graph).save(tmp, format="PNG")
        print(f"wrote {png}")
    if args.html is not None:
        viz3d.write_html(viz3d.scene_figure(scene, graph), args.html, graph=graph, qa=qa,
                         qa_source=None if args.dataset is None else str(args.dataset))
        print(f"wrote {args.html}")
    if args.rerun is not None:
        viz3d.write_rerun(scene, graph, args.rerun, qa=qa)
        print(f"wrote {args.rerun}")
    return 0


def _cmd_train(args) -> int:
    from spatialforge.cli.train import run_train

    return run_train(args)


def _cmd_eval(args) -> int:
    from spatialforge.cli.eval import run_eval_command

    return run_eval_command(args)


def _cmd_reason(args) -> int:
    from spatialforge.cli.reason import cmd_reason

    return cmd_reason(args)


def _cmd_app(args) -> int:
    from spatialforge.cli.app import cmd_app

    return cmd_app(args)


def _cmd_reward(args) -> int:
    from spatialforge.cli.reward import cmd_reward

    return cmd_reward(args)


def _cmd_afford(args) -> int:
    from spatialforge.cli.afford import run_afford

    return run_afford(args)


_COMMANDS = {"synth": _cmd_synth, "generate": _cmd_generate, "catalog": _cmd_catalog,
             "export": _cmd_export, "demo": _cmd_demo, "show": _cmd_show, "inspect": _cmd_inspect,
             "afford": _cmd_afford, "eval": _cmd_eval, "train": _cmd_train, "reason": _cmd_reason,
             "reward": _cmd_reward, "app": _cmd_app}


def _quiet_broken_pipe() -> int:
    """The reader of our output went away (``spatialforge demo | head``): stop without a traceback."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's final flush of stdout must not raise again
    except (OSError, ValueError):  # stdout is not a real file (e.g. captured in tests)
        pass
    return 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (docs/safety.md: 0 ok, 1 nothing produced or too many
    failures, 2 bad usage or input, 130 interrupted, 141 output pipe closed)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        parser.print_help()
        return 0
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed as one line
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return _COMMANDS[args.command](args)
    except RunFailedError as exc:  # the command ran, but its result does not count as a success
        print(f"spatialforge: failed: {exc}", file=sys.stderr)
        return 1
    except SpatialForgeError as exc:
        print(f"spatialforge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spatialforge: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _quiet_broken_pipe()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
