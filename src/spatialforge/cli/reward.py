"""``spatialforge reward INPUT --out DIR``: a dense reward curve for a robot trajectory from per-frame 3D distances.

INPUT is a video, a frame folder, an RGB-D frame folder or a LeRobot dataset (docs/reward_inputs.md,
:func:`spatialforge.reward.readers.read_trajectory`). The two things to measure come from ``--object`` and
``--target``, or from an instruction (``--instruction``, else the input's own task text) by the rule of
:func:`parse_instruction`. Every value is checked when the command line is parsed, the input's kind and the
flags that depend on it before the output folder is claimed, and the folder is claimed
(:func:`spatialforge.io.outdir.prepare_output_dir`, kind ``reward``) before any frame is decoded or model
loaded. DIR gets ``reward.csv``, ``reward.json`` (rows, summary, provenance), ``reward.png`` (the curve with
thumbnails) and with ``--overlay`` ``overlay.mp4`` (the frames with the two boxes and the distance).
Exit status: 0 written, 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path
from typing import Any

from spatialforge.cli.options import DEVICE_HELP, DTYPES, device, int_at_least, number_at_least
from spatialforge.errors import ConfigError, SpatialForgeError
from spatialforge.io.outdir import OutputKind, atomic_path, prepare_output_dir

__all__ = ["REWARD_OUTPUT", "add_reward_parser", "cmd_reward", "parse_instruction"]

#: The output folder of ``spatialforge reward``: everything it writes at the top level.
REWARD_OUTPUT = OutputKind("reward", owns=("reward.csv", "reward.json", "reward.png", "overlay.mp4"))

# prompted detectors (florence2-regions takes no prompts); SAM 3 is left out: its masks come with its detections,
# while the reward engine segments the boxes it chose
DETECTORS = ("owlv2", "grounding-dino")
SEGMENTERS = ("sam2", "sam", "box")
DEPTHS = ("depth-anything-v2", "depth-pro", "zoedepth")
CSV_COLUMNS = ("frame", "time_s", "distance_m", "reward", "progress", "confidence", "interpolated", "success",
               "tracked", "redetected")

_VERBS = (r"move|bring|put|place|push|slide|carry|take|drag|lift|hand|drop|lower|guide|get|pick up|pick")
_PREPOSITIONS = (r"next to|close to|closer to|up to|on top of|in front of|towards|toward|onto|into|near|"
                 r"beside|by|to|on|in|at|over|above|against")
_MOVE = re.compile(rf"^(?:please\s+)?(?:{_VERBS})\s+(?P<object>.+?)\s+(?:{_PREPOSITIONS})\s+(?P<target>.+?)$", re.I)
_REACH = re.compile(r"^(?:please\s+)?(?:reach(?:\s+for)?|grab|grasp|pick\s+up|pick|touch|approach|go\s+to)\s+"
                    r"(?P<target>.+?)$", re.I)
_ARTICLE = re.compile(r"^(?:the|a|an)\s+", re.I)


def _name(text: str) -> str:
    return _ARTICLE.sub("", text.strip()).strip()


def parse_instruction(text: str) -> tuple[str, str] | None:
    """(object, target) from an instruction, or None when it does not follow the rule.

    The rule: ``<verb> [the] OBJECT <preposition> [the] TARGET`` (verbs: move, bring, put, place, push, slide,
    carry, take, drag, lift, ...; prepositions: to, toward(s), onto, into, on, in, near, next to, ...) gives
    OBJECT and TARGET, e.g. "move the gripper to the orange cube" -> ("gripper", "orange cube"); ``reach
    [for] / grab / grasp / pick up / touch / approach [the] THING`` gives ("gripper", THING). A trailing full
    stop and leading/trailing spaces are ignored; the first preposition splits the two names.
    """
    clean = " ".join(text.split()).rstrip(".!")
    m = _MOVE.match(clean)
    if m:
        obj, target = _name(m.group("object")), _name(m.group("target"))
        if obj and target and obj.casefold() != target.casefold():
            return obj, target
    m = _REACH.match(clean)
    if m and _name(m.group("target")):
        return "gripper", _name(m.group("target"))
    return None


def _nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a non-empty name")
    return " ".join(text.split())


def add_reward_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``reward`` to the subparsers ``sub`` (of a :class:`spatialforge.cli.options.Parser`)."""
    from spatialforge.reward.engine import DISTANCE_KINDS, REWARD_KINDS, RewardConfig
    from spatialforge.reward.tracker import TRACKERS

    defaults = RewardConfig()
    p = sub.add_parser(
        "reward", help="dense reward for a robot trajectory from per-frame 3D distances",
        description="Measure, in every frame of a robot trajectory (a video, a frame folder, an RGB-D frame "
                    "folder or a LeRobot episode), the metric 3D distance between two named things, in one "
                    "consistent frame for the whole episode, and turn it into a reward curve (CSV, JSON, PNG, "
                    "optionally an overlay video). See docs/reward.md.")
    p.add_argument("input", type=Path, metavar="INPUT",
                   help="a video (.mp4, .webm, .mov, .mkv, .avi), a frame folder (000000.png ...), an RGB-D frame "
                        "folder (rgb/, depth/, camera.json) or a LeRobot dataset folder (meta/info.json)")
    p.add_argument("--out", type=Path, required=True,
                   help="output folder (new or empty, or an earlier reward output with --overwrite): reward.csv, "
                        "reward.json, reward.png, overlay.mp4")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the result an earlier `spatialforge reward` wrote in --out (only what it wrote)")
    g = p.add_argument_group("what to measure")
    g.add_argument("--instruction", type=_nonempty, default=None,
                   help="an instruction such as 'move the gripper to the orange cube' that names the object and the "
                        "target (default: --object/--target, else the input's task text, e.g. LeRobot's)")
    g.add_argument("--object", type=_nonempty, default=None,
                   help="the thing that moves, e.g. 'gripper' (with --target; default: from the instruction)")
    g.add_argument("--target", type=_nonempty, default=None,
                   help="the thing it moves to, e.g. 'orange cube' (with --object; default: from the instruction)")
    g = p.add_argument_group("reading the trajectory")
    g.add_argument("--episode", type=int_at_least(0), default=None,
                   help="LeRobot: the episode index (default: the only episode; required when there are several)")
    g.add_argument("--camera", default=None,
                   help="LeRobot: the camera's feature key, e.g. observation.images.top (default: the first video "
                        "feature of meta/info.json, else the first image feature)")
    g.add_argument("--fps", type=number_at_least(0.0, strict=True), default=None,
                   help="frame folders: frames per second (default: frames.json's fps; required without it)")
    g.add_argument("--stride", type=int_at_least(1), default=1, help="keep every N-th frame")
    g.add_argument("--max-frames", type=int_at_least(1), default=None,
                   help="keep at most N frames, the first ones (default: all, up to a 2 GiB memory limit for the "
                        "decoded frames; a longer episode asks for --stride, --max-frames or --max-side)")
    g.add_argument("--max-side", type=int_at_least(16), default=None,
                   help="scale frames down so that their longer side is at most this many pixels (default: the "
                        "input's size)")
    g = p.add_argument_group("reward")
    g.add_argument("--reward", choices=REWARD_KINDS, default=defaults.reward,
                   help="the reward column: negative_distance (-d in metres), progress (1 - d/d0, clipped), "
                        "success (1 below --success-threshold)")
    g.add_argument("--success-threshold", type=number_at_least(0.0, strict=True), default=defaults.success_threshold_m,
                   help="a frame succeeds when its distance in metres is below this")
    g.add_argument("--distance", choices=DISTANCE_KINDS, default=defaults.distance,
                   help="center: between the centres of the two things' 3D boxes; closest: the smallest gap "
                        "between their 3D points")
    g.add_argument("--reference-frames", type=int_at_least(1), default=defaults.reference_frames,
                   help="the first frames that fix the support plane (gravity) and the depth scale for the episode")
    g.add_argument("--camera-height", type=number_at_least(0.0, strict=True), default=None,
                   help="the camera's height in metres above the support plane, which fixes the metric scale of "
                        "estimated depth (default: none, the depth model's metric scale)")
    g.add_argument("--hfov", type=number_at_least(1.0, high=179.0), default=defaults.hfov_deg,
                   help="horizontal field of view in degrees assumed when neither the input nor the depth model "
                        "gives the intrinsics")
    g = p.add_argument_group("perception (need `pip install 'spatialforge[models]'`)")
    g.add_argument("--detector", choices=DETECTORS, default="owlv2", help="open-vocabulary detector backend")
    g.add_argument("--detector-model", default=None,
                   help="model id or local folder for the detector (default: the backend's own)")
    g.add_argument("--segmenter", choices=SEGMENTERS, default="sam2",
                   help="segmenter backend; box uses the boxes as masks (no model)")
    g.add_argument("--segmenter-model", default=None,
                   help="model id or local folder for the segmenter (default: the backend's own)")
    g.add_argument("--depth", choices=DEPTHS, default="depth-anything-v2",
                   help="metric depth backend for frames without sensor depth")
    g.add_argument("--depth-model", default=None,
                   help="model id or local folder for the depth stage (default: the backend's own; "
                        "depth-anything-v2: the --depth-scene checkpoint)")
    g.add_argument("--depth-scene", choices=("indoor", "outdoor"), default="indoor",
                   help="depth-anything-v2: the indoor (max 20 m) or outdoor (max 80 m) checkpoint")
    g.add_argument("--tracker", choices=TRACKERS, default="none",
                   help="none (the default, which downloads no extra model): detect and segment every frame, "
                        "identity by overlap; sam2: detect until both things are found, then follow them with SAM 2 "
                        "video (re-detecting a thing where the tracker loses it); see docs/reward.md, Tracking")
    g.add_argument("--tracker-model", default=None,
                   help="model id or local folder for --tracker sam2 (default: facebook/sam2.1-hiera-large)")
    g.add_argument("--score-threshold", type=number_at_least(0.0, high=1.0), default=defaults.min_score,
                   help="detections scoring lower are ignored, from 0 to 1")
    g.add_argument("--batch-size", type=int_at_least(1), default=defaults.batch_size, help="frames per model call")
    g.add_argument("--device", type=device, default="auto", help=DEVICE_HELP)
    g.add_argument("--dtype", choices=DTYPES, default="float32", help="model precision")
    g = p.add_argument_group("output")
    g.add_argument("--overlay", action="store_true",
                   help="also write overlay.mp4: the frames with both boxes and the distance drawn on them")
    p.set_defaults(func=cmd_reward)
    return p


# ----------------------------------------------------------------------------- checks before any work
def _names_from_flags(args: argparse.Namespace) -> tuple[str, str] | None:
    """(object, target) from --object/--target or --instruction; None: take the input's instruction later."""
    if (args.object is None) != (args.target is None):
        given, missing = ("--object", "--target") if args.object is not None else ("--target", "--object")
        raise ConfigError(f"{given} needs {missing} too (or give --instruction instead)")
    if args.object is not None:
        if args.instruction is not None:
            raise ConfigError("give --instruction or --object/--target, not both")
        if args.object.casefold() == args.target.casefold():
            raise ConfigError(f"--object and --target must name different things, both are {args.object!r}")
        return args.object, args.target
    if args.instruction is not None:
        return _from_instruction(args.instruction, "--instruction")
    return None


def _from_instruction(text: str, where: str) -> tuple[str, str]:
    names = parse_instruction(text)
    if names is None:
        raise ConfigError(f"{where} {text!r}: cannot tell the object and the target (the rule: 'move the OBJECT to "
                          "the TARGET', 'reach the TARGET'; see docs/reward.md); give --object NAME --target NAME")
    return names


def _reward_config(args: argparse.Namespace) -> Any:
    from spatialforge.reward.engine import RewardConfig

    return RewardConfig(reward=args.reward, success_threshold_m=args.success_threshold, min_score=args.score_threshold,
                        reference_frames=args.reference_frames, camera_height_m=args.camera_height,
                        hfov_deg=args.hfov, distance=args.distance, batch_size=args.batch_size)


def _stage_specs(args: argparse.Namespace) -> dict[str, Any]:
    """The detector, segmenter and depth specs (:class:`spatialforge.perception.config.StageSpec`)."""
    from spatialforge.perception.config import StageSpec

    segmenter = args.segmenter
    if args.segmenter_model is not None and segmenter == "box":
        raise ConfigError("--segmenter-model: the box segmenter loads no model (give another --segmenter)")
    # a --depth-model is one checkpoint for every frame: --depth-scene only picks between the built-in two
    depth_options = {"scene": args.depth_scene} if args.depth == "depth-anything-v2" and not args.depth_model else {}
    return {"detector": StageSpec(args.detector, args.detector_model),
            "segmenter": StageSpec(segmenter, args.segmenter_model),
            "depth": StageSpec(args.depth, args.depth_model, depth_options)}


def _build_stages(args: argparse.Namespace, specs: dict[str, Any]) -> dict[str, Any]:
    """Build (not load) the detector, segmenter and depth stages: checks their options, loads nothing."""
    from spatialforge.perception.backends import NO_MODEL_BACKENDS, build_stage

    stages = {}
    for kind, spec in specs.items():
        kwargs = dict(spec.options)
        if spec.backend not in NO_MODEL_BACKENDS:
            kwargs.update(model_id=spec.model_id, device=args.device, dtype=args.dtype)
        try:
            stages[kind] = build_stage(kind, spec.backend, **kwargs)
        except ConfigError as exc:
            raise ConfigError(f"--{kind} {spec.backend}: {exc}") from None
    return stages


def _build_tracker(args: argparse.Namespace) -> Any:
    """The --tracker stage (None for ``none``), built, not loaded; --tracker-model without a tracker is an error."""
    from spatialforge.reward.tracker import build_tracker

    return build_tracker(args.tracker, args.tracker_model, device=args.device, dtype=args.dtype)


def _local_inputs(args: argparse.Namespace) -> list[Path]:
    """The input and every model given as a local folder: --out may be none of them, nor inside them."""
    out = [args.input]
    for flag in (args.detector_model, args.segmenter_model, args.depth_model, args.tracker_model):
        if flag is not None and Path(flag).exists():
            out.append(Path(flag))
    return out


# ----------------------------------------------------------------------------- outputs
def _write_csv(result: Any, path: Path) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for row in result.rows:
            d = row.to_dict()
            writer.writerow([d["frame"], d["time_s"], d["distance_m"], d["reward"], d["progress"], d["confidence"],
                             int(bool(d["interpolated"])), int(bool(d["success"])), int(bool(d["tracked"])),
                             int(bool(d["redetected"]))])


def _write_json(result: Any, traj: Any, provenance: dict[str, Any], path: Path) -> None:
    data = {"summary": result.summary, "provenance": provenance, "rows": [r.to_dict() for r in result.rows]}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")


def _plot(result: Any, traj: Any, path: Path) -> None:
    """``plot_reward(result, traj, path)`` from spatialforge.reward.plot (or the engine module)."""
    import importlib

    fn = None
    for module in ("spatialforge.reward.plot", "spatialforge.reward.engine"):
        try:
            fn = getattr(importlib.import_module(module), "plot_reward", None)
        except ModuleNotFoundError:
            continue
        if fn is not None:
            break
    if fn is None:
        raise SpatialForgeError("this spatialforge has no reward plot (spatialforge.reward.plot.plot_reward)")
    with atomic_path(path) as tmp:
        fn(result, traj, tmp)


def _even(image: Any) -> Any:
    h, w = image.shape[:2]
    return image[: h - h % 2, : w - w % 2]


def draw_overlay_frame(image: Any, row: Any, names: tuple[str, str]) -> Any:
    """The frame with the object's box (orange), the target's (cyan) and the distance written on it."""
    import numpy as np
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.ascontiguousarray(image), "RGB")
    draw = ImageDraw.Draw(img)
    for box, colour, name in ((row.object_box, (255, 140, 0), names[0]), (row.target_box, (0, 220, 255), names[1])):
        if box is None:
            continue
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=max(1, round(img.width / 320)))
        draw.text((x0 + 2, max(0.0, y0 - 11)), name, fill=colour)
    text = f"t {row.time_s:.2f} s  d {row.distance_m:.3f} m  r {row.reward:.3f}"
    if row.interpolated:
        text += "  (interpolated)"
    draw.rectangle((0, 0, img.width, 12), fill=(0, 0, 0))
    draw.text((2, 0), text, fill=(255, 255, 255))
    return np.asarray(img)


def _write_overlay(result: Any, traj: Any, names: tuple[str, str], path: Path) -> None:
    from fractions import Fraction

    from spatialforge._optional import require

    av = require("av", extra="video", feature="the overlay video")
    frames = {f.index: f for f in traj.frames}
    span = traj.frames[-1].time_s - traj.frames[0].time_s
    rate = (len(traj.frames) - 1) / span if len(traj.frames) > 1 and span > 0 else traj.fps
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    first = _even(traj.frames[0].image)
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=Fraction(rate).limit_denominator(1000))
        stream.width, stream.height = first.shape[1], first.shape[0]
        stream.pix_fmt = "yuv420p"
        for row in result.rows:
            image = _even(draw_overlay_frame(frames[row.frame].image, row, names))
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# ----------------------------------------------------------------------------- the command
def cmd_reward(args: argparse.Namespace) -> int:
    """Run ``spatialforge reward``; returns the exit status (errors raise SpatialForgeError: exit 2)."""
    from spatialforge.reward.readers import check_read_arguments, read_trajectory

    # 1. everything that can be checked without reading the input or loading a model
    names = _names_from_flags(args)
    kind = check_read_arguments(args.input, episode=args.episode, fps=args.fps, camera=args.camera,
                                max_frames=args.max_frames, stride=args.stride, max_side=args.max_side)
    config = _reward_config(args)
    specs = _stage_specs(args)
    stages = _build_stages(args, specs)
    tracker = _build_tracker(args)
    # 2. claim the output folder
    prepared = prepare_output_dir(args.out, REWARD_OUTPUT, inputs=_local_inputs(args), overwrite=args.overwrite)
    if prepared.resumed and any(REWARD_OUTPUT.owned(e.name) and e.name != ".spatialforge-output.json"
                                for e in prepared.path.iterdir()):
        raise ConfigError(f"--out {args.out}: holds an earlier `spatialforge reward` result; use --overwrite to "
                          "replace it, or give a new folder")
    # 3. the work
    traj = read_trajectory(args.input, episode=args.episode, fps=args.fps, camera=args.camera,
                           max_frames=args.max_frames, stride=args.stride, max_side=args.max_side)
    if names is None:
        if not traj.instruction:
            raise ConfigError(f"{args.input}: holds no instruction; give --object NAME --target NAME or "
                              "--instruction TEXT")
        names = _from_instruction(traj.instruction, f"{args.input}: the task text")
    h, w = traj.frames[0].image.shape[:2]
    print(f"reward: {traj.episode_id}: {len(traj.frames)} frames of {w}x{h} at {traj.fps:g} fps from {traj.source}; "
          f"object {names[0]!r}, target {names[1]!r}")
    from spatialforge.reward.engine import RewardStages, annotate_reward

    need_depth = any(f.depth is None for f in traj.frames)
    used = {k: s for k, s in stages.items() if k != "depth" or need_depth}
    for stage in [*used.values(), *([tracker] if tracker is not None else [])]:
        stage.load()
    result = annotate_reward(traj, names[0], names[1], config=config,
                             perception=RewardStages(used["detector"], used["segmenter"], used.get("depth"), tracker))
    provenance = {
        "input": str(args.input), "input_kind": kind, "source": traj.source, "episode_id": traj.episode_id,
        "instruction": traj.instruction if args.instruction is None else args.instruction,
        "object": names[0], "target": names[1], "frames": len(traj.frames), "fps": traj.fps,
        "stride": args.stride, "max_frames": args.max_frames, "max_side": args.max_side,
        "frame_size": [w, h], "config": config.to_dict(),
        "stages": {k: {"backend": specs[k].backend, "model_id": getattr(s, "model_id", None)}
                   for k, s in used.items()},
        "tracker": None if tracker is None else {"backend": args.tracker, "model_id": tracker.model_id},
    }
    out = prepared.path
    _write_csv(result, out / "reward.csv")
    _write_json(result, traj, provenance, out / "reward.json")
    _plot(result, traj, out / "reward.png")
    written = ["reward.csv", "reward.json", "reward.png"]
    if args.overlay:
        _write_overlay(result, traj, names, out / "overlay.mp4")
        written.append("overlay.mp4")
    n_interp = sum(1 for r in result.rows if r.interpolated)
    last = result.rows[-1]
    print(f"reward: final distance {last.distance_m:.3f} m, progress {last.progress:.2f}, "
          f"{n_interp} of {len(result.rows)} frames interpolated; wrote {', '.join(written)} to {out}")
    return 0
