"""``spatialforge reason INPUT "question" --llm SPEC``: an LLM answers a spatial question by calling tools.

INPUT is an RGB-D scene folder (its 3D scene graph is built with
:func:`~spatialforge.geometry.scene_graph.build_scene_graph`, its objects named as the QA engine names them,
:func:`~spatialforge.qa.refer.resolve_references`) or a photo (only the VLM tools). The readable trace and the
answer go to stdout; ``--trace FILE.json`` writes the trace (docs/reasoning.md). Exit status: 0 answered,
1 no answer (step or token limit, the LLM failed), 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

from spatialforge.cli.options import DEVICE_HELP, DTYPES, device, int_at_least, number_at_least
from spatialforge.errors import ConfigError

__all__ = ["add_reason_parser", "cmd_reason"]

LLM_HELP = ("openai:MODEL[@BASE_URL] (an OpenAI-compatible endpoint with tool calling; key from --api-key-env), "
            "react+openai:MODEL[@BASE_URL] (the same endpoint, plain-text ReAct protocol, for models without tool "
            "calling), hf:MODEL_ID_OR_FOLDER (a local transformers chat model, ReAct protocol)")
VLM_HELP = ("the VLM that ask_vlm asks, as in `spatialforge eval run --model`: openai:MODEL[@BASE_URL], "
            "hf:MODEL_ID_OR_FOLDER, prior (needed by --tools vlm and both)")


def _question(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a non-empty question")
    return " ".join(text.split())


def add_reason_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``reason`` to the subparsers ``sub`` (of a :class:`spatialforge.cli.options.Parser`)."""
    from spatialforge.reason.agent import DEFAULT_MAX_STEPS, DEFAULT_MAX_TOKENS, DEFAULT_REPLY_TOKENS, TOOL_MODES

    p = sub.add_parser(
        "reason", help="answer a hard spatial question with an LLM that calls measuring tools",
        description="An LLM breaks a spatial question into simple ones, calls tools (exact measurements from the "
                    "3D scene graph, a VLM, arithmetic and geometry helpers) and answers. Every step is printed "
                    "and can be saved as JSON (--trace).")
    p.add_argument("input", type=Path, metavar="IMAGE_OR_SCENE",
                   help="an RGB-D scene folder (image, depth, instances.png, camera.json, objects.json) or a photo")
    p.add_argument("question", type=_question, help="the question, in quotes")
    p.add_argument("--llm", required=True, help=LLM_HELP)
    p.add_argument("--tools", choices=TOOL_MODES, default=None,
                   help="graph: exact scene-graph tools; vlm: ask_vlm (the VLM about the image); both "
                        "(default: graph for a scene folder, vlm for a photo)")
    p.add_argument("--vlm", default=None, help=VLM_HELP + " (default: none)")
    p.add_argument("--max-steps", type=int_at_least(1), default=DEFAULT_MAX_STEPS,
                   help="LLM replies at most; without an answer by then the run ends with status step_limit")
    p.add_argument("--max-tokens", type=int_at_least(16), default=DEFAULT_MAX_TOKENS,
                   help="tokens of the whole run at most (prompt + completion of every reply)")
    p.add_argument("--reply-tokens", type=int_at_least(1), default=DEFAULT_REPLY_TOKENS,
                   help="new tokens of one LLM reply at most")
    p.add_argument("--trace", type=Path, default=None, metavar="FILE.json",
                   help="write the trace as JSON there (default: only printed)")
    p.add_argument("--quiet", action="store_true", help="print only the answer, not the trace")
    g = p.add_argument_group("LLM and VLM options")
    g.add_argument("--api-key-env", default=None,
                   help="openai: environment variable holding the API key (default: OPENAI_API_KEY)")
    g.add_argument("--timeout", type=number_at_least(0.0, strict=True), default=None,
                   help="openai: seconds per request (default: the backend's, 60)")
    g.add_argument("--max-retries", type=int_at_least(0), default=None,
                   help="openai: retries of a request that failed on 429, 5xx or the network (default: the "
                        "backend's, 4)")
    g.add_argument("--temperature", type=number_at_least(0.0), default=None,
                   help="openai: the LLM's sampling temperature (default: 0)")
    g.add_argument("--device", type=device, default=None, help=f"hf: {DEVICE_HELP} (default: auto)")
    g.add_argument("--dtype", choices=("auto", *DTYPES), default=None,
                   help="hf: weights dtype (default: auto: float32 on the CPU, bfloat16 or float16 on a GPU)")
    p.set_defaults(func=cmd_reason)
    return p


def _local_folder(spec: str | None) -> Path | None:
    """The local model folder an ``hf:`` spec names, to keep --trace out of it."""
    if not spec:
        return None
    rest = spec[len("react+"):] if spec.lower().startswith("react+") else spec
    prefix, _, path = rest.partition(":")
    if prefix.strip().lower() == "hf" and Path(path.strip()).exists():
        return Path(path.strip())
    return None


def _load_scene(folder: Path) -> tuple[Any, dict[int, str], bytes]:
    """The scene graph, the references (as the QA engine names objects) and the image as PNG bytes."""
    from PIL import Image

    from spatialforge.geometry.scene_graph import build_scene_graph
    from spatialforge.io.scene_folder import load_scene
    from spatialforge.qa.generator import QAConfig, scene_rng
    from spatialforge.qa.refer import resolve_references

    scene = load_scene(folder)
    graph = build_scene_graph(scene)
    cfg = QAConfig()
    refs = resolve_references(graph.objects, margin=cfg.margin_m, vertical_ok=graph.gravity.reliable,
                              rng=scene_rng(cfg.seed, graph.scene_id, "references"))
    buf = io.BytesIO()
    Image.fromarray(scene.image).save(buf, format="PNG")
    return graph, {k: r.text for k, r in refs.items()}, buf.getvalue()


def _check_photo(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.verify()
    except (OSError, UnidentifiedImageError) as exc:
        raise ConfigError(f"{path}: not a scene folder and not a readable image ({type(exc).__name__})") from None


def _build_vlm(spec: str, args: argparse.Namespace) -> Any:
    from spatialforge.eval.models import build_vlm

    return build_vlm(spec, api_key_env=args.api_key_env, timeout_s=args.timeout, max_retries=args.max_retries,
                     device=args.device, dtype=args.dtype)


def cmd_reason(args: argparse.Namespace) -> int:
    """Run ``spatialforge reason``; 0 answered, 1 no answer. Bad input raises SpatialForgeError (exit 2)."""
    from spatialforge.io.outdir import atomic_path, check_output_file
    from spatialforge.reason.agent import make_tools, run_agent
    from spatialforge.reason.llm import build_planner

    src: Path = args.input
    if not src.exists():
        raise ConfigError(f"{src}: no such scene folder or image")
    is_scene = src.is_dir()
    mode = args.tools or ("graph" if is_scene else "vlm")
    if mode in ("vlm", "both") and not args.vlm:
        raise ConfigError(f"--tools {mode}: needs --vlm SPEC (the VLM that ask_vlm asks)")
    if mode == "graph" and args.vlm:
        raise ConfigError("--vlm: only used by --tools vlm or both; add --tools both to use it")
    if not is_scene and mode != "vlm":
        raise ConfigError(f"--tools {mode}: {src} is a photo, which has no 3D scene graph; use --tools vlm "
                          "(building the scene graph of a photo with the perception stages is not supported by "
                          "reason yet: run `spatialforge photos` first and pass a scene folder it wrote)")
    if args.trace is not None:
        check_output_file(args.trace, [src, _local_folder(args.llm), _local_folder(args.vlm)], flag="--trace",
                          suffixes=(".json",))
    # everything cheap is checked; now the models and the scene
    planner = build_planner(args.llm, api_key_env=args.api_key_env, timeout_s=args.timeout,
                            max_retries=args.max_retries, temperature=args.temperature, device=args.device,
                            dtype=args.dtype)
    vlm = _build_vlm(args.vlm, args) if args.vlm else None
    if is_scene:
        graph, refs, image = _load_scene(src)
        tools = make_tools(mode, graph=graph, references=refs, vlm=vlm, image=image)
    else:
        _check_photo(src)
        tools = make_tools(mode, vlm=vlm, image=str(src))
    trace = run_agent(args.question, planner, tools, tools_mode=mode, max_steps=args.max_steps,
                      max_tokens=args.max_tokens, reply_tokens=args.reply_tokens)
    if args.trace is not None:
        with atomic_path(args.trace) as tmp:
            tmp.write_text(trace.to_json() + "\n", encoding="utf-8")
    if args.quiet:
        print(trace.answer if trace.answer is not None else "")
    else:
        print(trace.render())
        if args.trace is not None:
            print(f"Trace: {args.trace}")
    if trace.status != "answered":
        why = trace.error or {"step_limit": f"no answer within --max-steps {args.max_steps}",
                              "token_limit": f"no answer within --max-tokens {args.max_tokens}"}.get(trace.status,
                                                                                                   trace.status)
        print(f"spatialforge reason: no answer ({trace.status}): {why}", file=sys.stderr)
        return 1
    return 0
