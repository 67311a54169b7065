"""Read a robot trajectory from disk: a video, a frame folder, an RGB-D frame folder or a LeRobot dataset episode.

:func:`read_trajectory` looks at the path and returns a :class:`~spatialforge.reward.types.Trajectory`
(docs/reward_inputs.md):

* **a video file** (``.mp4``, ``.webm``, ``.mov``, ``.mkv``, ``.avi``), decoded with PyAV (the ``video`` extra).
  Frame times come from the stream's presentation timestamps, counted from the first frame.
* **a frame folder**: image files ``000000.png`` / ``.jpg`` ... in natural name order, at ``fps`` (the argument,
  or ``frames.json``: ``{"fps": 30}``, optionally ``"time_s": [...]`` one per image and ``"instruction"``);
  an optional ``camera.json`` gives the intrinsics.
* **an RGB-D frame folder**: ``rgb/000000.png|jpg`` with ``depth/000000.npy`` (float metres) or
  ``depth/000000.png`` (uint16 millimetres) of the same name, and ``camera.json`` as in the RGB-D scene format
  (docs/formats.md); ``frames.json`` as for a frame folder.
* **a LeRobot dataset** (a folder with ``meta/info.json``), read directly from its documented on-disk layout
  (no ``lerobot`` package): codebase v2.0/v2.1 (``meta/episodes.jsonl``, ``meta/tasks.jsonl``, one Parquet file
  and one video per camera per episode) and v3.0 (``meta/episodes/chunk-*/file-*.parquet``,
  ``meta/tasks.parquet``, several episodes per Parquet and per video, each episode a
  ``[from_timestamp, to_timestamp)`` span of its camera's video). ``episode`` picks the episode (required when
  there are several), ``camera`` the video key (default: the first video feature of ``meta/info.json``); the
  episode's task text is the instruction. Frame times are the data's ``timestamp`` column; each frame is the
  video frame nearest that time (within half a frame period).

A folder may also hold ``truth.json`` (a JSON object: exact distances of a synthetic episode), returned as
``Trajectory.truth``.

Only the frames asked for are kept: every ``stride``-th frame from the first, then at most ``max_frames`` of
them, each scaled down so that its longer side is at most ``max_side`` pixels (the intrinsics follow). A video
is decoded frame by frame and the frames not kept are dropped at once, so memory holds only the kept ones;
when those would need more than ``memory_limit_bytes`` (default :data:`MEMORY_LIMIT_BYTES`, 2 GiB: about 340
frames of 1080p, 10 minutes of 1080p at 30 fps is 112 GB) the read stops before decoding with an error that
says which of ``stride`` / ``max_frames`` / ``max_side`` to give. Every bad input is one
:class:`~spatialforge.errors.SpatialForgeError` line naming the file.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spatialforge.core.types import CameraIntrinsics
from spatialforge.errors import ConfigError, SpatialForgeError
from spatialforge.reward.types import Frame, Trajectory

__all__ = [
    "IMAGE_SUFFIXES",
    "MEMORY_LIMIT_BYTES",
    "VIDEO_SUFFIXES",
    "check_read_arguments",
    "read_trajectory",
    "trajectory_kind",
]

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MEMORY_LIMIT_BYTES = 2 * 1024**3
_TRUTH = "truth.json"
_FRAMES_JSON = "frames.json"


def _err(path: Path | str, problem: str) -> SpatialForgeError:
    return SpatialForgeError(f"{path}: {problem}")


# ----------------------------------------------------------------------------- what the path is
def trajectory_kind(path: str | os.PathLike[str]) -> str:
    """``video``, ``frames``, ``rgbd`` or ``lerobot`` for ``path``; a :class:`SpatialForgeError` if it is none."""
    p = Path(path)
    if not p.exists():
        raise _err(p, "no such file or folder")
    if p.is_file():
        if p.suffix.lower() in VIDEO_SUFFIXES:
            return "video"
        raise _err(p, f"not a trajectory: expected a video ({', '.join(VIDEO_SUFFIXES)}), a frame folder, an "
                      "RGB-D frame folder (rgb/, depth/, camera.json) or a LeRobot dataset folder (meta/info.json)")
    if (p / "meta" / "info.json").is_file():
        return "lerobot"
    if (p / "rgb").is_dir() or (p / "depth").is_dir():
        return "rgbd"
    if _image_files(p):
        return "frames"
    raise _err(p, "not a trajectory folder: no image files (000000.png ...), no rgb/ and depth/ folders, no "
                  "meta/info.json (LeRobot)")


def _natural_key(name: str) -> tuple[Any, ...]:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _image_files(folder: Path) -> list[Path]:
    files = [f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
             and not f.name.startswith(".")]
    return sorted(files, key=lambda f: _natural_key(f.name))


# ----------------------------------------------------------------------------- selection and sizes
@dataclass(frozen=True)
class _Select:
    stride: int
    max_frames: int | None
    max_side: int | None
    memory_limit: int

    def picks(self, n: int) -> list[int]:
        """The positions kept out of ``n`` frames."""
        kept = list(range(0, n, self.stride))
        return kept if self.max_frames is None else kept[: self.max_frames]

    def count(self, n: int) -> int:
        kept = -(-n // self.stride)
        return kept if self.max_frames is None else min(kept, self.max_frames)

    def size(self, width: int, height: int) -> tuple[int, int]:
        """The kept frames' (width, height)."""
        if self.max_side is None or max(width, height) <= self.max_side:
            return width, height
        scale = self.max_side / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))

    def check_memory(self, path: Path, n: int, width: int, height: int, *, depth: bool = False,
                     at_least: bool = False) -> None:
        """Refuse to keep ``n`` frames of ``width`` x ``height`` (before scaling) beyond the memory limit."""
        w, h = self.size(width, height)
        need = n * w * h * (3 + (4 if depth else 0))
        if need > self.memory_limit:
            hints = [f"a --stride above {self.stride}", "--max-frames N"]
            if self.max_side is None or self.max_side > 64:
                hints.append("--max-side PIXELS")
            raise _err(path, f"{n}{' or more' if at_least else ''} frames of {w}x{h} would need "
                             f"{need / 1024**3:.1f} GiB, more than the "
                             f"{self.memory_limit / 1024**3:.1f} GiB limit; give {', '.join(hints)}")


def _resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == size:
        return image
    return np.asarray(Image.fromarray(image, "RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)


def _resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (depth.shape[1], depth.shape[0]) == size:
        return depth
    # nearest: averaging across an object's edge would invent depths that lie on neither surface
    return np.asarray(Image.fromarray(depth.astype(np.float32), "F").resize(size, Image.Resampling.NEAREST),
                      dtype=np.float32)


def _scale_intrinsics(k: CameraIntrinsics | None, size: tuple[int, int]) -> CameraIntrinsics | None:
    if k is None or (k.width, k.height) == size:
        return k
    sx, sy = size[0] / k.width, size[1] / k.height
    # pixel centres at integer coordinates: x' = (x + 0.5) * s - 0.5
    return CameraIntrinsics(fx=k.fx * sx, fy=k.fy * sy, cx=(k.cx + 0.5) * sx - 0.5, cy=(k.cy + 0.5) * sy - 0.5,
                            width=size[0], height=size[1])


# ----------------------------------------------------------------------------- small files
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise _err(path, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _err(path, f"cannot read file ({exc})") from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise _err(path, f"cannot read file ({exc})") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _err(path, f"line {i}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise _err(path, f"line {i}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _truth(folder: Path) -> dict | None:
    path = folder / _TRUTH
    if not path.is_file():
        return None
    data = _read_json(path)
    if not isinstance(data, dict):
        raise _err(path, f"expected a JSON object, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class _FramesMeta:
    fps: float | None
    times: list[float] | None
    instruction: str | None


def _frames_meta(folder: Path) -> _FramesMeta:
    path = folder / _FRAMES_JSON
    if not path.is_file():
        return _FramesMeta(None, None, None)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise _err(path, f"expected a JSON object such as {{\"fps\": 30}}, got {type(data).__name__}")
    fps = data.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, int | float) or not math.isfinite(fps)
                            or fps <= 0):
        raise _err(path, f"fps must be a positive number, got {fps!r}")
    times = data.get("time_s")
    if times is not None:
        if not isinstance(times, list) or not all(isinstance(t, int | float) and not isinstance(t, bool)
                                                  and math.isfinite(t) for t in times):
            raise _err(path, "time_s must be a list of numbers (seconds, one per frame)")
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise _err(path, "time_s must increase from frame to frame")
    instruction = data.get("instruction")
    if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
        raise _err(path, f"instruction must be a non-empty string, got {instruction!r}")
    return _FramesMeta(None if fps is None else float(fps), times, instruction)


def _frame_times(folder: Path, meta: _FramesMeta, fps: float | None, n: int) -> tuple[list[float], float]:
    """Every frame's time and the fps, from ``fps`` (the argument wins), else ``frames.json``."""
    if meta.times is not None and fps is None:
        if len(meta.times) != n:
            raise _err(folder / _FRAMES_JSON, f"time_s has {len(meta.times)} entries but the folder holds {n} frames")
        t0 = float(meta.times[0])
        times = [float(t) - t0 for t in meta.times]
        rate = meta.fps or ((n - 1) / times[-1] if n > 1 and times[-1] > 0 else 1.0)
        return times, rate
    rate = fps if fps is not None else meta.fps
    if rate is None:
        raise _err(folder, "frame rate unknown: give --fps F or write frames.json with {\"fps\": F}")
    return [i / rate for i in range(n)], rate


# ----------------------------------------------------------------------------- frame folders
def load_rgb(path: Path) -> np.ndarray:
    from spatialforge.io.scene_folder import load_rgb as load

    return load(path)


def _read_frames(folder: Path, sel: _Select, fps: float | None) -> Trajectory:
    files = _image_files(folder)
    if not files:
        raise _err(folder, "no image files (000000.png, 000001.png ...)")
    meta = _frames_meta(folder)
    times, rate = _frame_times(folder, meta, fps, len(files))
    intrinsics = None
    first = load_rgb(files[0])
    h, w = first.shape[:2]
    if (folder / "camera.json").is_file():
        from spatialforge.io.scene_folder import load_camera

        intrinsics = load_camera(folder / "camera.json", w, h)
    picks = sel.picks(len(files))
    sel.check_memory(folder, len(picks), w, h)
    size = sel.size(w, h)
    frames = _frames_of(files, None, picks, first, times, size)
    return Trajectory(episode_id=folder.name, frames=tuple(frames), fps=rate,
                      intrinsics=_scale_intrinsics(intrinsics, size), instruction=meta.instruction,
                      source=str(folder), truth=_truth(folder))


def _frames_of(files: list[Path], depth_files: list[Path] | None, picks: Any, first: np.ndarray,
               times: Any, size: Any) -> list[Frame]:
    """The picked frames of a frame folder (``depth_files``: an RGB-D folder's, else None), all of one size."""
    from spatialforge.io.scene_folder import load_depth

    h, w = first.shape[:2]
    frames = []
    for i in picks:
        image = first if i == 0 else load_rgb(files[i])
        if image.shape[:2] != (h, w):
            raise _err(files[i], f"size {image.shape[1]}x{image.shape[0]} differs from {files[0].name} {w}x{h}")
        depth = None
        if depth_files is not None:
            depth = load_depth(depth_files[i])
            if depth.shape != (h, w):
                raise _err(depth_files[i], f"size {depth.shape[1]}x{depth.shape[0]} differs from the image "
                                           f"{files[i].name} {w}x{h}")
            depth = _resize_depth(depth, size)
        frames.append(Frame(index=i, time_s=times[i], image=_resize_rgb(image, size), depth=depth))
    return frames


def _read_rgbd(folder: Path, sel: _Select, fps: float | None) -> Trajectory:
    from spatialforge.io.scene_folder import load_camera

    rgb_dir, depth_dir, camera = folder / "rgb", folder / "depth", folder / "camera.json"
    for need in (rgb_dir, depth_dir):
        if not need.is_dir():
            raise _err(need, "missing folder (an RGB-D frame folder holds rgb/, depth/ and camera.json)")
    if not camera.is_file():
        raise _err(camera, "missing file (the camera intrinsics fx, fy, cx, cy in pixels)")
    files = _image_files(rgb_dir)
    if not files:
        raise _err(rgb_dir, "no image files (000000.png, 000001.png ...)")
    depth_files = []
    for f in files:
        found = [depth_dir / f"{f.stem}{s}" for s in (".npy", ".png") if (depth_dir / f"{f.stem}{s}").is_file()]
        if not found:
            raise _err(depth_dir / f"{f.stem}.npy", f"missing depth for {f.relative_to(folder)} (expected "
                                                     f"depth/{f.stem}.npy in metres or depth/{f.stem}.png in mm)")
        if len(found) > 1:
            raise _err(depth_dir, f"ambiguous depth for {f.name}: both {found[0].name} and {found[1].name} exist")
        depth_files.append(found[0])
    meta = _frames_meta(folder)
    times, rate = _frame_times(folder, meta, fps, len(files))
    first = load_rgb(files[0])
    h, w = first.shape[:2]
    intrinsics = load_camera(camera, w, h)
    picks = sel.picks(len(files))
    sel.check_memory(folder, len(picks), w, h, depth=True)
    size = sel.size(w, h)
    frames = _frames_of(files, depth_files, picks, first, times, size)
    return Trajectory(episode_id=folder.name, frames=tuple(frames), fps=rate,
                      intrinsics=_scale_intrinsics(intrinsics, size), instruction=meta.instruction,
                      source=str(folder), truth=_truth(folder))


# ----------------------------------------------------------------------------- video
def _av() -> Any:
    from spatialforge._optional import require

    return require("av", extra="video", feature="reading videos")


@dataclass
class _Video:
    """An open video file: its first video stream and what it says about itself."""

    path: Path
    container: Any
    stream: Any

    @property
    def fps(self) -> float | None:
        rate = self.stream.average_rate or self.stream.guessed_rate
        return float(rate) if rate else None

    def frame_count(self) -> int | None:
        """The number of frames the container reports, else duration x rate; None when neither is known."""
        if self.stream.frames:
            return int(self.stream.frames)
        if self.stream.duration is not None and self.stream.time_base is not None and self.fps:
            return max(1, round(float(self.stream.duration * self.stream.time_base) * self.fps))
        return None

    def frames(self, start_s: float = 0.0) -> Iterator[tuple[float | None, Any]]:
        """(presentation time in seconds or None, av.VideoFrame) in order, from about ``start_s`` on."""
        av = _av()
        try:
            if start_s > 0:
                # seek lands on the key frame at or before start_s; the caller skips up to its span
                self.container.seek(int(start_s / self.stream.time_base), stream=self.stream, backward=True)
            for frame in self.container.decode(self.stream):
                yield (None if frame.pts is None else float(frame.pts * self.stream.time_base)), frame
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise _err(self.path, f"cannot decode the video ({exc})") from None

    def close(self) -> None:
        self.container.close()


def _open_video(path: Path) -> _Video:
    av = _av()
    if not path.is_file():
        raise _err(path, "missing video file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise _err(path, f"cannot open the video ({exc})") from None
    if not container.streams.video:
        container.close()
        raise _err(path, "holds no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return _Video(path, container, stream)


def _to_rgb(frame: Any, size: tuple[int, int]) -> np.ndarray:
    if (frame.width, frame.height) != size:
        frame = frame.reformat(width=size[0], height=size[1])
    return frame.to_ndarray(format="rgb24")


def _read_video(path: Path, sel: _Select) -> Trajectory:
    video = _open_video(path)
    try:
        w, h = video.stream.codec_context.width, video.stream.codec_context.height
        n_est = video.frame_count()
        if n_est is not None and w and h:
            sel.check_memory(path, sel.count(n_est), w, h)
        size = sel.size(w, h) if w and h else None
        frames: list[Frame] = []
        origin = None
        rate = video.fps
        for k, (t, frame) in enumerate(video.frames()):
            if sel.max_frames is not None and len(frames) >= sel.max_frames:
                break
            if origin is None:
                origin = t if t is not None else 0.0
            if k % sel.stride:
                continue
            if size is None:
                w, h = frame.width, frame.height
                size = sel.size(w, h)
            elif (frame.width, frame.height) != (w, h):
                raise _err(path, f"frame {k} is {frame.width}x{frame.height}, the first was {w}x{h}")
            # the container may not know its length: check as the frames come
            sel.check_memory(path, len(frames) + 1, w, h, at_least=True)
            time_s = (t - origin) if t is not None else k / (rate or 1.0)
            frames.append(Frame(index=k, time_s=time_s, image=_to_rgb(frame, size), depth=None))
    finally:
        video.close()
    if not frames:
        raise _err(path, "holds no decodable frames")
    if rate is None:
        span = frames[-1].time_s - frames[0].time_s
        rate = (frames[-1].index - frames[0].index) / span if span > 0 else 1.0
    return Trajectory(episode_id=path.stem, frames=tuple(frames), fps=rate, intrinsics=None, source=str(path))


def _frames_at(video: _Video, targets: Sequence[float], tolerance: float, span: tuple[float, float | None],
               sel: _Select) -> Iterator[tuple[int, np.ndarray]]:
    """For each target time (seconds in the file, increasing) the decoded frame nearest to it, within
    ``tolerance``. Only frames in ``span`` = [start, end) count (a LeRobot v3 episode's part of a shared video);
    only the frames picked are converted to arrays."""
    start, end = span
    size: tuple[int, int] | None = None
    prev: tuple[float, Any] | None = None
    j = 0

    def pick(cand: tuple[float, Any] | None) -> np.ndarray:
        nonlocal size
        if cand is None or abs(cand[0] - targets[j]) > tolerance:
            near = "none" if cand is None else f"{cand[0]:.4f} s"
            raise _err(video.path, f"no frame at {targets[j]:.4f} s (the nearest: {near}); the video is shorter "
                                   "than its episode's data, or its timestamps do not match them")
        if size is None:
            size = sel.size(cand[1].width, cand[1].height)
        return _to_rgb(cand[1], size)

    for t, frame in video.frames(max(0.0, min(targets[0], start) - tolerance)):
        if t is None:
            raise _err(video.path, "video frames carry no timestamps, so an episode's frames cannot be found")
        if t < start - tolerance:
            continue
        if end is not None and t >= end - 1e-6:
            break
        while j < len(targets) and t >= targets[j]:
            nearer = prev is None or abs(t - targets[j]) < abs(prev[0] - targets[j])
            yield j, pick((t, frame) if nearer else prev)
            j += 1
        if j == len(targets):
            return
        prev = (t, frame)
    while j < len(targets):
        yield j, pick(prev)
        j += 1


# ----------------------------------------------------------------------------- LeRobot
def _lerobot_info(root: Path) -> dict[str, Any]:
    path = root / "meta" / "info.json"
    info = _read_json(path)
    if not isinstance(info, dict):
        raise _err(path, f"expected a JSON object, got {type(info).__name__}")
    version = info.get("codebase_version")
    if not isinstance(version, str) or not re.fullmatch(r"v[23]\.\d+", version):
        raise _err(path, f"codebase_version {version!r} is not supported (v2.0, v2.1 and v3.0 are)")
    fps = info.get("fps")
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not math.isfinite(fps) or fps <= 0:
        raise _err(path, f"fps must be a positive number, got {fps!r}")
    if not isinstance(info.get("features"), dict):
        raise _err(path, "missing 'features' (an object of feature name -> {dtype, shape, ...})")
    if not isinstance(info.get("data_path"), str):
        raise _err(path, "missing 'data_path' (the template of the data Parquet files)")
    return info


def _format(root: Path, template: str, what: str, **values: Any) -> Path:
    try:
        return root / template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise _err(root / "meta" / "info.json", f"{what} template {template!r} cannot be filled ({exc!r})") from None


def _parquet(path: Path, columns: list[str] | None = None, filters: Any = None,
             only: Sequence[str] | None = None) -> Any:
    """The table at ``path`` (``only``: just those of its columns, to leave e.g. other cameras' images unread);
    ``columns`` must be present."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise _err(path, "missing file")
    try:
        wanted = None if only is None else [c for c in pq.read_schema(path).names if c in only]
        table = pq.read_table(path, columns=wanted, filters=filters)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _err(path, f"cannot read the Parquet table ({exc})") from None
    missing = [c for c in columns or () if c not in table.column_names]
    if missing:
        raise _err(path, f"missing column(s) {', '.join(missing)}")
    return table


def _check_int(path: Path, row: dict[str, Any], key: str) -> int:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _err(path, f"{key} must be an integer, got {value!r}")
    return value


@dataclass(frozen=True)
class _Episode:
    index: int
    length: int | None
    tasks: list[str]
    row: dict[str, Any]  # v3: the episodes table's row (data and video locations)


def _lerobot_episodes(root: Path, v3: bool) -> tuple[Path, list[_Episode]]:
    meta = root / "meta"
    if not v3:
        path = meta / "episodes.jsonl"
        if not path.is_file():
            raise _err(path, "missing file (a LeRobot v2 dataset lists its episodes there)")
        rows = _read_jsonl(path)
    else:
        folder = meta / "episodes"
        files = sorted(folder.glob("chunk-*/file-*.parquet"), key=lambda f: _natural_key(str(f.relative_to(folder))))
        if not files:
            raise _err(folder, "no chunk-*/file-*.parquet files (a LeRobot v3 dataset lists its episodes there)")
        rows = []
        for f in files:
            rows += _parquet(f, ["episode_index"]).to_pylist()
        path = folder
    episodes = []
    for row in rows:
        index = _check_int(path, row, "episode_index")
        tasks = row.get("tasks") or []
        if isinstance(tasks, str):
            tasks = [tasks]
        length = row.get("length")
        episodes.append(_Episode(index, length if isinstance(length, int) and not isinstance(length, bool) else None,
                                 [str(t) for t in tasks], row))
    if not episodes:
        raise _err(path, "lists no episodes")
    return path, sorted(episodes, key=lambda e: e.index)


def _lerobot_task(root: Path, v3: bool, task_index: int | None) -> str | None:
    """The task text of ``task_index`` from ``meta/tasks.jsonl`` (v2) or ``meta/tasks.parquet`` (v3)."""
    if task_index is None:
        return None
    if not v3:
        path = root / "meta" / "tasks.jsonl"
        if not path.is_file():
            return None
        mapping = {r.get("task_index"): r.get("task") for r in _read_jsonl(path)}
    else:
        path = root / "meta" / "tasks.parquet"
        if not path.is_file():
            return None
        table = _parquet(path, ["task_index"])
        # the task text is a column "task", or the table's (pandas) index
        text_col = next((c for c in ("task", "__index_level_0__") if c in table.column_names), None)
        if text_col is None:
            raise _err(path, "no task text column ('task' or the table's index)")
        mapping = dict(zip(table.column("task_index").to_pylist(), table.column(text_col).to_pylist(), strict=True))
    text = mapping.get(task_index)
    return text if isinstance(text, str) and text.strip() else None


def _video_keys(info: dict[str, Any]) -> list[str]:
    return [k for k, f in info["features"].items() if isinstance(f, dict) and f.get("dtype") == "video"]


def _image_keys(info: dict[str, Any]) -> list[str]:
    return [k for k, f in info["features"].items() if isinstance(f, dict) and f.get("dtype") == "image"]


def _read_lerobot(root: Path, sel: _Select, episode: int | None, camera: str | None) -> Trajectory:
    info = _lerobot_info(root)
    info_path = root / "meta" / "info.json"
    v3 = info["codebase_version"].startswith("v3")
    fps = float(info["fps"])
    videos, images = _video_keys(info), _image_keys(info)
    if not videos and not images:
        raise _err(info_path, "no camera: no feature has dtype 'video' or 'image'")
    if camera is None:
        camera = (videos or images)[0]
    elif camera not in videos + images:
        raise ConfigError(f"--camera {camera}: not a camera of {root} (its cameras: {', '.join(videos + images)})")
    where, episodes = _lerobot_episodes(root, v3)
    if episode is None:
        if len(episodes) > 1:
            raise ConfigError(f"{root}: holds {len(episodes)} episodes ({episodes[0].index} to {episodes[-1].index}); "
                              "choose one with --episode N")
        ep = episodes[0]
    else:
        ep = next((e for e in episodes if e.index == episode), None)
        if ep is None:
            raise ConfigError(f"--episode {episode}: {where} has no episode {episode} (it lists "
                              f"{len(episodes)}: {episodes[0].index} to {episodes[-1].index})")

    # the episode's data rows: their timestamps (and frame and task indices)
    if v3:
        chunk = _check_int(where, ep.row, "data/chunk_index")
        file = _check_int(where, ep.row, "data/file_index")
        data_path = _format(root, info["data_path"], "data_path", chunk_index=chunk, file_index=file)
    else:
        chunk = ep.index // int(info.get("chunks_size") or 1000)
        data_path = _format(root, info["data_path"], "data_path", episode_chunk=chunk, episode_index=ep.index)
    table = _parquet(data_path, ["episode_index", "timestamp"], filters=[("episode_index", "=", ep.index)],
                     only=("episode_index", "timestamp", "frame_index", "task_index", camera))
    if table.num_rows == 0:
        raise _err(data_path, f"holds no rows of episode {ep.index}")
    data = {c: table.column(c).to_pylist() for c in table.column_names if c != "episode_index"}
    if "frame_index" in data:
        order = sorted(range(table.num_rows), key=lambda i: data["frame_index"][i])
        data = {c: [v[i] for i in order] for c, v in data.items()}
    times = data["timestamp"]
    if any(not isinstance(t, int | float) or not math.isfinite(t) for t in times):
        raise _err(data_path, f"episode {ep.index}: the timestamp column holds non-numbers")
    if any(b <= a for a, b in itertools.pairwise(times)):
        raise _err(data_path, f"episode {ep.index}: timestamps do not increase with frame_index")
    if ep.length is not None and ep.length != len(times):
        raise _err(data_path, f"episode {ep.index} has {len(times)} rows but {where.name} says length {ep.length}")
    frame_ids = data.get("frame_index") or list(range(len(times)))
    picks = sel.picks(len(times))
    t0 = float(times[0])

    instruction = "; ".join(t for t in ep.tasks if t.strip()) or None
    if instruction is None and data.get("task_index"):
        instruction = _lerobot_task(root, v3, data["task_index"][0])

    cam_feature = info["features"][camera]
    shape = cam_feature.get("shape") if isinstance(cam_feature.get("shape"), list) else None
    names = cam_feature.get("names") if isinstance(cam_feature.get("names"), list) else None
    if shape and names and len(shape) == 3 and "height" in names and "width" in names:
        h, w = int(shape[names.index("height")]), int(shape[names.index("width")])
        sel.check_memory(root, len(picks), w, h)

    images_out: dict[int, np.ndarray] = {}
    source_file: Path
    if camera in videos:
        if not isinstance(info.get("video_path"), str):
            raise _err(info_path, "missing 'video_path' (the template of the video files)")
        if v3:
            vchunk = _check_int(where, ep.row, f"videos/{camera}/chunk_index")
            vfile = _check_int(where, ep.row, f"videos/{camera}/file_index")
            start = ep.row.get(f"videos/{camera}/from_timestamp")
            end = ep.row.get(f"videos/{camera}/to_timestamp")
            for key, value in (("from_timestamp", start), ("to_timestamp", end)):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise _err(where, f"episode {ep.index}: videos/{camera}/{key} must be a number, got {value!r}")
            source_file = _format(root, info["video_path"], "video_path", video_key=camera, chunk_index=vchunk,
                                  file_index=vfile)
        else:
            start, end = 0.0, None
            source_file = _format(root, info["video_path"], "video_path", video_key=camera, episode_chunk=chunk,
                                  episode_index=ep.index)
        video = _open_video(source_file)
        try:
            targets = [float(start) + float(times[i]) - t0 for i in picks]
            tolerance = 0.5 / fps + 1e-4
            span = (float(start), None if end is None else float(end))
            for j, image in _frames_at(video, targets, tolerance, span, sel):
                images_out[picks[j]] = image
        finally:
            video.close()
    else:  # images stored in the Parquet table ({"bytes": ..., "path": ...} per row)
        import io

        from PIL import UnidentifiedImageError

        source_file = data_path
        if camera not in data:
            raise _err(data_path, f"missing column {camera}")
        for i in picks:
            cell = data[camera][i]
            raw = cell.get("bytes") if isinstance(cell, dict) else None
            try:
                if raw is None:
                    raise ValueError("no image bytes")
                img = Image.open(io.BytesIO(raw))
                img.load()
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise _err(data_path, f"episode {ep.index} frame {frame_ids[i]}: cannot read the {camera} image "
                                      f"({exc})") from None
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
            images_out[i] = _resize_rgb(rgb, sel.size(rgb.shape[1], rgb.shape[0]))
    frames = []
    for i in picks:
        image = images_out[i]
        if frames and image.shape != frames[0].image.shape:
            raise _err(source_file, f"episode {ep.index} frame {frame_ids[i]} is {image.shape[1]}x{image.shape[0]}, "
                                    f"the first was {frames[0].image.shape[1]}x{frames[0].image.shape[0]}")
        frames.append(Frame(index=int(frame_ids[i]), time_s=float(times[i]) - t0, image=image, depth=None))
    return Trajectory(episode_id=f"episode_{ep.index:06d}", frames=tuple(frames), fps=fps, intrinsics=None,
                      instruction=instruction, source=f"{root} (LeRobot {info['codebase_version']}, episode "
                                                      f"{ep.index}, camera {camera}: {source_file})")


# ----------------------------------------------------------------------------- entry point
def check_read_arguments(path: str | os.PathLike[str], *, episode: int | None = None, fps: float | None = None,
                         camera: str | None = None, max_frames: int | None = None, stride: int = 1,
                         max_side: int | None = None) -> str:
    """Check the arguments of :func:`read_trajectory` against the kind of input at ``path`` without reading it
    (a command calls this before it claims its output folder); returns the kind (:func:`trajectory_kind`)."""
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ConfigError(f"stride must be an integer >= 1, got {stride!r}")
    for name, value in (("max_frames", max_frames), ("max_side", max_side)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name} must be an integer >= 1 or None, got {value!r}")
    if fps is not None and (not math.isfinite(fps) or fps <= 0):
        raise ConfigError(f"fps must be a positive number, got {fps!r}")
    p = Path(path)
    kind = trajectory_kind(p)
    if kind != "lerobot":
        for flag, value in (("--episode", episode), ("--camera", camera)):
            if value is not None:
                raise ConfigError(f"{flag}: applies to LeRobot datasets only; {p} is a {_KIND_NAMES[kind]}")
    if fps is not None and kind in ("video", "lerobot"):
        raise ConfigError(f"--fps: {p} is a {_KIND_NAMES[kind]}, whose frame times come from its timestamps; "
                          "--fps applies to frame folders")
    return kind


def read_trajectory(path: str | os.PathLike[str], *, episode: int | None = None, fps: float | None = None,
                    camera: str | None = None, max_frames: int | None = None, stride: int = 1,
                    max_side: int | None = None, memory_limit_bytes: int = MEMORY_LIMIT_BYTES) -> Trajectory:
    """Read the trajectory at ``path`` (a video, a frame folder, an RGB-D frame folder, a LeRobot dataset).

    ``episode`` and ``camera`` apply to LeRobot datasets, ``fps`` to frame folders (it overrides
    ``frames.json``). Every ``stride``-th frame is kept, at most ``max_frames`` of them (the first ones), each
    scaled to at most ``max_side`` pixels on its longer side. ``Frame.index`` is the frame's position in the
    whole episode (LeRobot: its ``frame_index``), so it counts in steps of ``stride``. Raises
    :class:`~spatialforge.errors.SpatialForgeError` (one line naming the file) for any bad input and
    :class:`~spatialforge.errors.ConfigError` for an argument that does not fit the input.
    """
    p = Path(path)
    kind = check_read_arguments(p, episode=episode, fps=fps, camera=camera, max_frames=max_frames, stride=stride,
                                max_side=max_side)
    sel = _Select(stride, max_frames, max_side, memory_limit_bytes)
    readers: dict[str, Callable[[], Trajectory]] = {
        "video": lambda: _read_video(p, sel),
        "frames": lambda: _read_frames(p, sel, fps),
        "rgbd": lambda: _read_rgbd(p, sel, fps),
        "lerobot": lambda: _read_lerobot(p, sel, episode, camera),
    }
    return readers[kind]()


_KIND_NAMES = {"video": "video file", "frames": "frame folder", "rgbd": "RGB-D frame folder",
               "lerobot": "LeRobot dataset"}
