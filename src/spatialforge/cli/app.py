"""``spatialforge app``: the web app (Gradio, the ``demo`` extra) on a local port; see docs/app.md.

Every option is checked before the server starts (the config file is read, the checkpoint's config
is read, the VLM spec is built, the port is tried); models load only when a photo, an action or a
question needs them, once per app. The command prints the URL and serves until Ctrl-C (exit status 0);
bad options exit with 2.
"""

from __future__ import annotations

import argparse
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from spatialforge.cli.options import DEVICE_HELP, DTYPES, device, int_at_least, number_at_least
from spatialforge.errors import ConfigError, SpatialForgeError

__all__ = ["APP_VLM_RETRIES", "add_app_parser", "check_listen", "cmd_app", "make_config"]

#: retries of a failed request to an openai: VLM (the backend's default is 4: too long for a page to wait)
APP_VLM_RETRIES = 1


def add_app_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``app`` to the subparsers ``sub`` (of a :class:`spatialforge.cli.options.Parser`)."""
    p = sub.add_parser(
        "app", help="the web app: scenes, 3D views, scene graphs, questions and affordances in a browser",
        description="Serve the spatialforge web app (needs `pip install 'spatialforge[demo]'`). Without models it "
                    "runs offline on the built-in synthetic scenes and uploaded RGB-D scene folders (.zip); "
                    "--config adds photos, --afford-checkpoint the Affordance tab, --vlm a VLM's answers beside "
                    "the scene graph's. Stop it with Ctrl-C.")
    p.add_argument("--port", type=int_at_least(0, 65535), default=7860,
                   help="TCP port to listen on; 0 picks a free one")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0: every network interface; the app has no login)")
    p.add_argument("--config", type=Path, default=None, metavar="PERCEPTION.toml",
                   help="a perception config (.toml or .json, docs/photos.md) for uploaded photos (default: none; "
                        "photos are then refused with a message, scene folders and synthetic scenes still work)")
    p.add_argument("--afford-checkpoint", type=Path, default=None, metavar="FOLDER",
                   help="an AffordanceCLIP checkpoint folder for the Affordance tab (default: none; the tab then "
                        "says how to add one)")
    p.add_argument("--vlm", default=None, metavar="SPEC",
                   help="a VLM that answers the Ask tab's questions beside the scene graph, as `spatialforge eval run "
                        "--model` takes it: openai:MODEL[@BASE_URL], hf:MODEL_ID_OR_FOLDER or prior (default: none; "
                        "only the scene graph answers)")
    p.add_argument("--vlm-api-key-env", default=None, metavar="VAR",
                   help="openai VLM: environment variable holding the API key (default: OPENAI_API_KEY)")
    p.add_argument("--vlm-timeout", type=number_at_least(0.0, strict=True), default=None, metavar="SECONDS",
                   help="openai VLM: seconds per request (default: the backend's, 60)")
    p.add_argument("--vlm-max-retries", type=int_at_least(0), default=None, metavar="N",
                   help="openai VLM: retries of a request that failed on 429, 5xx or the network (default: 1; a page "
                        "waits for its answer)")
    p.add_argument("--vlm-dtype", choices=("auto", *DTYPES), default=None,
                   help="hf VLM: weights dtype (default: auto: float32 on the CPU, bfloat16 or float16 on a GPU)")
    p.add_argument("--device", type=device, default=None,
                   help=f"where the models run: {DEVICE_HELP} (default: auto for AffordanceCLIP and an hf VLM; the "
                        "perception models run where the --config file's device says unless --device is given)")
    p.add_argument("--seed", type=int_at_least(0), default=0,
                   help="seed of the geometry and the generated questions (as `generate --seed`)")
    p.set_defaults(func=cmd_app)
    return p


def make_config(args: argparse.Namespace) -> Any:
    """The :class:`~spatialforge.app.AppConfig` of the options; every file is read and checked here."""
    from spatialforge.app.handlers import AppConfig

    perception = None
    if args.config is not None:
        from spatialforge.perception.config import load_perception_config

        if not args.config.is_file():
            raise ConfigError(f"--config {args.config}: no such file")
        try:
            perception = load_perception_config(args.config)
        except SpatialForgeError as exc:
            raise ConfigError(f"--config {exc}") from None
        if args.device is not None:  # the flag wins over the file, as in `generate --device`
            perception = replace(perception, device=args.device)
    if args.afford_checkpoint is not None:
        _check_checkpoint(args.afford_checkpoint)
    vlm_options = _vlm_options(args)
    config = AppConfig(perception=perception, perception_source=str(args.config) if args.config else None,
                       afford_checkpoint=args.afford_checkpoint, vlm=args.vlm, vlm_options=vlm_options,
                       device=args.device or "auto", seed=args.seed)
    if args.vlm is not None:
        from spatialforge.app.handlers import build_vlm

        build_vlm(config)  # the spec and its options are checked now; the model is built again at first use
    return config


def _check_checkpoint(folder: Path) -> None:
    """The AffordanceCLIP checkpoint's config, weights file and local CLIP folder exist (nothing is loaded)."""
    from spatialforge.afford.checkpoint import read_checkpoint_config

    try:
        meta = read_checkpoint_config(folder)
    except SpatialForgeError as exc:
        raise ConfigError(f"--afford-checkpoint {exc}") from None
    if not (folder / "model.safetensors").is_file():
        raise ConfigError(f"--afford-checkpoint {folder}: model.safetensors is missing (not a complete checkpoint)")
    clip = str(meta["model"].get("clip_model") or "")
    if clip.startswith("local-dir:") and not Path(clip[len("local-dir:"):]).is_dir():
        raise ConfigError(f"--afford-checkpoint {folder}: its CLIP {clip!r} is not a folder on this machine")


def _vlm_options(args: argparse.Namespace) -> dict[str, Any]:
    """The VLM options given; each is refused (one line) without --vlm or with a backend that does not take it."""
    given = {"--vlm-api-key-env": args.vlm_api_key_env, "--vlm-timeout": args.vlm_timeout,
             "--vlm-max-retries": args.vlm_max_retries, "--vlm-dtype": args.vlm_dtype}
    backend = (args.vlm or "").strip().partition(":")[0].lower()
    for flag, value in given.items():
        if value is None:
            continue
        if args.vlm is None:
            raise ConfigError(f"{flag}: only used with --vlm")
        wanted = "hf" if flag == "--vlm-dtype" else "openai"
        if backend != wanted:
            raise ConfigError(f"{flag}: only used by an {wanted}: VLM, not --vlm {args.vlm}")
    retries = None
    if backend == "openai":
        retries = APP_VLM_RETRIES if args.vlm_max_retries is None else args.vlm_max_retries
    return {"api_key_env": args.vlm_api_key_env, "timeout": args.vlm_timeout, "max_retries": retries,
            "dtype": args.vlm_dtype}


def check_listen(host: str, port: int) -> int:
    """The port the app will listen on (``port`` 0: a free one); a one-line error when it cannot."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"--host {host}: not an address of this machine ({exc})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind(address)
        except OSError as exc:
            what = "--port" if port else "--host"
            raise ConfigError(f"{what} {port if port else host}: cannot listen on {host}:{port} "
                              f"({exc.strerror or exc})") from None
        return int(s.getsockname()[1])


def cmd_app(args: argparse.Namespace) -> int:
    """Run ``spatialforge app``: check the options, start the server, print the URL, serve until Ctrl-C."""
    from spatialforge._optional import require

    require("gradio", extra="demo", feature="spatialforge app")
    config = make_config(args)
    port = check_listen(args.host, args.port)
    from spatialforge.app import build_app

    demo = build_app(config)
    demo.queue(default_concurrency_limit=2)
    demo.launch(server_name=args.host, server_port=port, prevent_thread_lock=True, quiet=True, show_error=False,
                ssr_mode=False, max_file_size=config.limits.max_upload_bytes)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"spatialforge app: serving on http://{shown}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        demo.block_thread()
    finally:
        demo.close()
    print("spatialforge app: stopped", file=sys.stderr)
    return 0
