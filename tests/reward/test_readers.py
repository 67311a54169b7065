"""read_trajectory on tiny fixtures written in the real on-disk formats: video, frames, RGB-D, LeRobot v2.1 / v3.0."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spatialforge.errors import ConfigError, SpatialForgeError
from spatialforge.reward.readers import read_trajectory, trajectory_kind

av = pytest.importorskip("av")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

W, H = 64, 48
SQUARE = 8


def square_frame(k: int, w: int = W, h: int = H) -> np.ndarray:
    """A dark frame with a white square whose left edge is at x = 2k: the frame number can be read back."""
    img = np.full((h, w, 3), 20, np.uint8)
    x = (2 * k) % (w - SQUARE)
    img[16:16 + SQUARE, x:x + SQUARE] = 255
    return img


def square_x(image: np.ndarray) -> float:
    """The left edge of the white square, in the frame's own pixels."""
    cols = np.nonzero((image.mean(axis=2) > 140).any(axis=0))[0]
    return float(cols.min())


def frame_number(image: np.ndarray) -> int:
    return round(square_x(image) / 2)


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = 24) -> Path:
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "0", "g": "5"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def mp4(tmp_path: Path) -> Path:
    return write_mp4(tmp_path / "clip.mp4", [square_frame(k) for k in range(24)], fps=24)


# ----------------------------------------------------------------------------- video
def test_video_reads_every_frame_with_its_time(mp4: Path) -> None:
    traj = read_trajectory(mp4)
    assert trajectory_kind(mp4) == "video"
    assert len(traj.frames) == 24
    assert traj.fps == pytest.approx(24.0)
    assert traj.episode_id == "clip"
    assert traj.intrinsics is None and traj.instruction is None
    assert [f.index for f in traj.frames] == list(range(24))
    assert [f.time_s for f in traj.frames] == pytest.approx([k / 24 for k in range(24)], abs=1e-6)
    assert all(f.image.shape == (H, W, 3) and f.image.dtype == np.uint8 and f.depth is None for f in traj.frames)
    assert [frame_number(f.image) for f in traj.frames] == list(range(24))


def test_video_stride_max_frames_and_max_side(mp4: Path) -> None:
    traj = read_trajectory(mp4, stride=3, max_frames=5, max_side=32)
    assert [f.index for f in traj.frames] == [0, 3, 6, 9, 12]
    assert [f.time_s for f in traj.frames] == pytest.approx([0, 3 / 24, 6 / 24, 9 / 24, 12 / 24], abs=1e-6)
    assert all(f.image.shape == (24, 32, 3) for f in traj.frames)
    # the square moves 2 px per frame at full size, 1 px at half size
    assert [round(square_x(f.image)) for f in traj.frames] == [0, 3, 6, 9, 12]


def test_video_memory_limit_refuses_before_decoding_everything(mp4: Path) -> None:
    with pytest.raises(SpatialForgeError, match=r"clip\.mp4: 24 frames of 64x48 .*limit; give a --stride above 1"):
        read_trajectory(mp4, memory_limit_bytes=10 * W * H * 3)
    # asking for fewer frames fits
    assert len(read_trajectory(mp4, stride=3, memory_limit_bytes=10 * W * H * 3).frames) == 8


def test_undecodable_video_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 50)
    with pytest.raises(SpatialForgeError, match=r"broken\.mp4: cannot (open|decode) the video"):
        read_trajectory(bad)


def test_paths_that_are_no_trajectory(tmp_path: Path) -> None:
    with pytest.raises(SpatialForgeError, match=r"nothing\.mp4: no such file or folder"):
        read_trajectory(tmp_path / "nothing.mp4")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(SpatialForgeError, match=r"notes\.txt: not a trajectory"):
        read_trajectory(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpatialForgeError, match=r"empty: not a trajectory folder"):
        read_trajectory(tmp_path / "empty")


def test_arguments_that_do_not_fit_the_input(mp4: Path) -> None:
    with pytest.raises(ConfigError, match=r"--episode: applies to LeRobot datasets only; .*clip\.mp4 is a video"):
        read_trajectory(mp4, episode=1)
    with pytest.raises(ConfigError, match=r"--camera: applies to LeRobot datasets only"):
        read_trajectory(mp4, camera="top")
    with pytest.raises(ConfigError, match=r"--fps: .*clip\.mp4 is a video file"):
        read_trajectory(mp4, fps=10.0)
    with pytest.raises(ConfigError, match="stride must be an integer >= 1"):
        read_trajectory(mp4, stride=0)


# ----------------------------------------------------------------------------- frame folders
def write_frames(folder: Path, n: int, *, sub: str = "", suffix: str = ".png") -> Path:
    (folder / sub).mkdir(parents=True, exist_ok=True)
    for k in range(n):
        Image.fromarray(square_frame(k)).save(folder / sub / f"{k:06d}{suffix}")
    return folder


def test_frame_folder_with_fps_argument_and_frames_json(tmp_path: Path) -> None:
    folder = write_frames(tmp_path / "ep", 12)
    with pytest.raises(SpatialForgeError, match=r"ep: frame rate unknown: give --fps"):
        read_trajectory(folder)
    traj = read_trajectory(folder, fps=4.0, stride=5)
    assert trajectory_kind(folder) == "frames"
    assert [f.index for f in traj.frames] == [0, 5, 10]
    assert [f.time_s for f in traj.frames] == [0.0, 1.25, 2.5]
    assert [frame_number(f.image) for f in traj.frames] == [0, 5, 10]
    assert traj.episode_id == "ep" and traj.fps == 4.0 and traj.truth is None

    (folder / "frames.json").write_text(json.dumps({"fps": 2, "instruction": "move the gripper to the cube"}))
    (folder / "truth.json").write_text(json.dumps({"distance_m": [1.0] * 12, "success": True}))
    traj = read_trajectory(folder, max_frames=2)
    assert [f.time_s for f in traj.frames] == [0.0, 0.5]
    assert traj.instruction == "move the gripper to the cube"
    assert traj.truth == {"distance_m": [1.0] * 12, "success": True}
    assert read_trajectory(folder, fps=8.0).frames[1].time_s == 0.125  # the argument wins over frames.json

    times = [0.0, 0.1, 0.3, 0.35] + [0.4 + 0.1 * k for k in range(8)]
    (folder / "frames.json").write_text(json.dumps({"fps": 10, "time_s": times}))
    assert [f.time_s for f in read_trajectory(folder).frames] == pytest.approx(times)
    (folder / "frames.json").write_text(json.dumps({"time_s": times[:5]}))
    with pytest.raises(SpatialForgeError, match=r"frames\.json: time_s has 5 entries but the folder holds 12"):
        read_trajectory(folder)
    (folder / "frames.json").write_text(json.dumps({"fps": -1}))
    with pytest.raises(SpatialForgeError, match=r"frames\.json: fps must be a positive number"):
        read_trajectory(folder)
    (folder / "frames.json").write_text("{not json")
    with pytest.raises(SpatialForgeError, match=r"frames\.json: invalid JSON at line 1"):
        read_trajectory(folder)


def test_frame_folder_natural_order_and_size_mismatch(tmp_path: Path) -> None:
    folder = tmp_path / "named"
    folder.mkdir()
    for k in (1, 2, 10):  # frame_10 must come after frame_2
        Image.fromarray(square_frame(k)).save(folder / f"frame_{k}.jpg", quality=100)
    assert [frame_number(f.image) for f in read_trajectory(folder, fps=1).frames] == [1, 2, 10]
    Image.fromarray(square_frame(3, w=32)).save(folder / "frame_11.png")
    with pytest.raises(SpatialForgeError, match=r"frame_11\.png: size 32x48 differs from frame_1\.jpg 64x48"):
        read_trajectory(folder, fps=1)


def test_frame_folder_camera_json_follows_max_side(tmp_path: Path) -> None:
    folder = write_frames(tmp_path / "ep", 3)
    (folder / "camera.json").write_text(json.dumps({"fx": 50.0, "fy": 50.0, "cx": 31.5, "cy": 23.5}))
    traj = read_trajectory(folder, fps=1, max_side=32)
    k = traj.intrinsics
    assert (k.width, k.height) == (32, 24)
    assert (k.fx, k.fy, k.cx, k.cy) == pytest.approx((25.0, 25.0, 15.5, 11.5))
    (folder / "camera.json").write_text(json.dumps({"fx": 50.0, "fy": 50.0, "cx": 31.5}))
    with pytest.raises(SpatialForgeError, match=r"camera\.json: missing key\(s\) cy"):
        read_trajectory(folder, fps=1)


# ----------------------------------------------------------------------------- RGB-D folders
def write_rgbd(folder: Path, n: int, depth_format: str = "npy") -> Path:
    write_frames(folder, n, sub="rgb")
    (folder / "depth").mkdir()
    for k in range(n):
        depth = np.full((H, W), 1.0 + 0.1 * k, np.float32)
        if depth_format == "npy":
            np.save(folder / "depth" / f"{k:06d}.npy", depth)
        else:
            Image.fromarray(np.round(depth * 1000).astype(np.uint16)).save(folder / "depth" / f"{k:06d}.png")
    (folder / "camera.json").write_text(json.dumps({"fx": 60.0, "fy": 60.0, "cx": 32.0, "cy": 24.0,
                                                    "width": W, "height": H}))
    (folder / "frames.json").write_text(json.dumps({"fps": 5}))
    return folder


@pytest.mark.parametrize("depth_format", ["npy", "png"])
def test_rgbd_folder_reads_metric_depth(tmp_path: Path, depth_format: str) -> None:
    folder = write_rgbd(tmp_path / "rgbd", 6, depth_format)
    traj = read_trajectory(folder, stride=2)
    assert trajectory_kind(folder) == "rgbd"
    assert [f.index for f in traj.frames] == [0, 2, 4]
    assert [f.time_s for f in traj.frames] == pytest.approx([0.0, 0.4, 0.8])
    for f in traj.frames:
        assert f.depth is not None and f.depth.shape == (H, W) and f.depth.dtype == np.float32
        assert np.allclose(f.depth, 1.0 + 0.1 * f.index, atol=1e-3)
        assert frame_number(f.image) == f.index
    assert traj.intrinsics is not None and traj.intrinsics.fx == 60.0
    small = read_trajectory(folder, max_side=32, max_frames=1).frames[0]
    assert small.image.shape == (24, 32, 3) and small.depth.shape == (24, 32)
    assert np.allclose(small.depth, 1.0, atol=1e-3)


def test_rgbd_folder_bad_inputs_name_the_file(tmp_path: Path) -> None:
    folder = write_rgbd(tmp_path / "rgbd", 3)
    np.save(folder / "depth" / "000001.npy", np.ones((24, 32), np.float32))
    with pytest.raises(SpatialForgeError, match=r"depth/000001\.npy: size 32x24 differs from the image 000001\.png"):
        read_trajectory(folder)
    (folder / "depth" / "000001.npy").unlink()
    with pytest.raises(SpatialForgeError, match=r"depth/000001\.npy: missing depth for rgb/000001\.png"):
        read_trajectory(folder)
    np.save(folder / "depth" / "000001.npy", np.ones((H, W), np.float32))
    (folder / "camera.json").unlink()
    with pytest.raises(SpatialForgeError, match=r"camera\.json: missing file"):
        read_trajectory(folder)
    (folder / "camera.json").write_text(json.dumps({"fx": 60.0, "fy": 60.0, "cx": 32.0, "cy": 24.0, "width": 99}))
    with pytest.raises(SpatialForgeError, match=r"camera\.json: width = 99 but image"):
        read_trajectory(folder)


# ----------------------------------------------------------------------------- LeRobot
CAM = "observation.images.top"
WRIST = "observation.images.wrist"
FPS = 10


def _features() -> dict:
    video = {"dtype": "video", "shape": [H, W, 3], "names": ["height", "width", "channels"]}
    return {CAM: video, WRIST: video,
            "observation.state": {"dtype": "float32", "shape": [2], "names": None},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None}}


def _rows(episode: int, length: int, task: int, first_index: int) -> dict[str, list]:
    return {"observation.state": [[0.0, 0.0]] * length, "timestamp": [k / FPS for k in range(length)],
            "frame_index": list(range(length)), "episode_index": [episode] * length,
            "index": list(range(first_index, first_index + length)), "task_index": [task] * length}


TASKS = ["move the gripper to the orange cube", "push the blue can"]
LENGTHS = [10, 14]  # episode 0 shows squares 0..9, episode 1 squares 10..23


def write_lerobot_v21(root: Path) -> Path:
    info = {"codebase_version": "v2.1", "robot_type": "so100", "total_episodes": 2, "total_frames": sum(LENGTHS),
            "total_tasks": 2, "chunks_size": 1000, "fps": FPS, "splits": {"train": "0:2"},
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
            "features": _features()}
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    (root / "meta" / "tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n"
                                                       for i, t in enumerate(TASKS)))
    (root / "meta" / "episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": e, "tasks": [TASKS[e]], "length": n}) + "\n" for e, n in enumerate(LENGTHS)))
    start = 0
    for e, n in enumerate(LENGTHS):
        data = root / "data" / "chunk-000" / f"episode_{e:06d}.parquet"
        data.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(_rows(e, n, e, start)), data)
        for cam, shift in ((CAM, 0), (WRIST, 1)):
            write_mp4(root / "videos" / "chunk-000" / cam / f"episode_{e:06d}.mp4",
                      [square_frame(start + k + shift) for k in range(n)], fps=FPS)
        start += n
    return root


def write_lerobot_v30(root: Path) -> Path:
    info = {"codebase_version": "v3.0", "robot_type": "so100", "total_episodes": 2, "total_frames": sum(LENGTHS),
            "total_tasks": 2, "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 500,
            "fps": FPS, "splits": {"train": "0:2"},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": _features()}
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    # tasks.parquet as pandas writes it: the task text is the index
    pq.write_table(pa.table({"task_index": [0, 1], "__index_level_0__": TASKS}), root / "meta" / "tasks.parquet")
    rows = {k: [] for k in _rows(0, 0, 0, 0)}
    ep_rows: dict[str, list] = {"episode_index": [], "tasks": [], "length": [], "data/chunk_index": [],
                                "data/file_index": [], "dataset_from_index": [], "dataset_to_index": []}
    for cam in (CAM, WRIST):
        for key in ("chunk_index", "file_index", "from_timestamp", "to_timestamp"):
            ep_rows[f"videos/{cam}/{key}"] = []
    start = 0
    for e, n in enumerate(LENGTHS):
        for k, v in _rows(e, n, e, start).items():
            rows[k] += v
        for k, v in (("episode_index", e), ("tasks", [TASKS[e]]), ("length", n), ("data/chunk_index", 0),
                     ("data/file_index", 0), ("dataset_from_index", start), ("dataset_to_index", start + n)):
            ep_rows[k].append(v)
        for cam in (CAM, WRIST):
            for k, v in (("chunk_index", 0), ("file_index", 0), ("from_timestamp", start / FPS),
                         ("to_timestamp", (start + n) / FPS)):
                ep_rows[f"videos/{cam}/{k}"].append(v)
        start += n
    (root / "data" / "chunk-000").mkdir(parents=True)
    pq.write_table(pa.table(rows), root / "data" / "chunk-000" / "file-000.parquet")
    pq.write_table(pa.table(ep_rows), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    for cam, shift in ((CAM, 0), (WRIST, 1)):
        write_mp4(root / "videos" / cam / "chunk-000" / "file-000.mp4",
                  [square_frame(k + shift) for k in range(sum(LENGTHS))], fps=FPS)
    return root


@pytest.fixture(params=["v2.1", "v3.0"])
def lerobot(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    writer = write_lerobot_v21 if request.param == "v2.1" else write_lerobot_v30
    return writer(tmp_path / f"lerobot-{request.param}")


def test_lerobot_episode_frames_times_and_task(lerobot: Path) -> None:
    assert trajectory_kind(lerobot) == "lerobot"
    for episode, first in ((0, 0), (1, LENGTHS[0])):
        traj = read_trajectory(lerobot, episode=episode)
        n = LENGTHS[episode]
        assert traj.episode_id == f"episode_{episode:06d}"
        assert traj.instruction == TASKS[episode]
        assert traj.fps == FPS and traj.intrinsics is None
        assert [f.index for f in traj.frames] == list(range(n))
        assert [f.time_s for f in traj.frames] == pytest.approx([k / FPS for k in range(n)])
        assert all(f.image.shape == (H, W, 3) for f in traj.frames)
        # the right part of the video: episode 1 of a v3.0 file starts at its 11th frame
        assert [frame_number(f.image) for f in traj.frames] == list(range(first, first + n))
        assert CAM in traj.source and f"episode {episode}" in traj.source


def test_lerobot_camera_stride_and_max_frames(lerobot: Path) -> None:
    traj = read_trajectory(lerobot, episode=1, camera=WRIST, stride=4, max_frames=3)
    assert [f.index for f in traj.frames] == [0, 4, 8]
    assert [f.time_s for f in traj.frames] == pytest.approx([0.0, 0.4, 0.8])
    assert [frame_number(f.image) for f in traj.frames] == [11, 15, 19]  # the wrist video is one square ahead


def test_lerobot_choice_errors(lerobot: Path) -> None:
    with pytest.raises(ConfigError, match=r"holds 2 episodes \(0 to 1\); choose one with --episode N"):
        read_trajectory(lerobot)
    with pytest.raises(ConfigError, match=r"--episode 7: .*meta/episodes.* has no episode 7"):
        read_trajectory(lerobot, episode=7)
    with pytest.raises(ConfigError, match=rf"--camera side: not a camera of .*\(its cameras: {CAM}, {WRIST}\)"):
        read_trajectory(lerobot, episode=0, camera="side")


def test_lerobot_v21_bad_files_name_the_file(tmp_path: Path) -> None:
    root = write_lerobot_v21(tmp_path / "ds")
    video = root / "videos" / "chunk-000" / CAM / "episode_000001.mp4"
    video.unlink()
    with pytest.raises(SpatialForgeError, match=r"episode_000001\.mp4: missing video file"):
        read_trajectory(root, episode=1)
    # a video shorter than its episode's data
    write_mp4(video, [square_frame(k) for k in range(5)], fps=FPS)
    with pytest.raises(SpatialForgeError, match=r"episode_000001\.mp4: no frame at 0\.5000 s"):
        read_trajectory(root, episode=1)
    (root / "data" / "chunk-000" / "episode_000000.parquet").write_bytes(b"not parquet")
    with pytest.raises(SpatialForgeError, match=r"episode_000000\.parquet: cannot read the Parquet table"):
        read_trajectory(root, episode=0)
    info = json.loads((root / "meta" / "info.json").read_text())
    (root / "meta" / "info.json").write_text(json.dumps({**info, "codebase_version": "v1.6"}))
    with pytest.raises(SpatialForgeError, match=r"info\.json: codebase_version 'v1.6' is not supported"):
        read_trajectory(root, episode=0)
    (root / "meta" / "info.json").write_text(json.dumps({**info, "fps": 0}))
    with pytest.raises(SpatialForgeError, match=r"info\.json: fps must be a positive number"):
        read_trajectory(root, episode=0)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    (root / "meta" / "episodes.jsonl").unlink()
    with pytest.raises(SpatialForgeError, match=r"episodes\.jsonl: missing file"):
        read_trajectory(root, episode=0)


def test_lerobot_v21_length_mismatch_and_task_from_tasks_file(tmp_path: Path) -> None:
    root = write_lerobot_v21(tmp_path / "ds")
    # no tasks in episodes.jsonl: the data's task_index is looked up in tasks.jsonl
    (root / "meta" / "episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": e, "length": n}) + "\n" for e, n in enumerate(LENGTHS)))
    assert read_trajectory(root, episode=1).instruction == TASKS[1]
    (root / "meta" / "episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": e, "length": n + 1}) + "\n" for e, n in enumerate(LENGTHS)))
    with pytest.raises(SpatialForgeError, match=r"episode_000000\.parquet: episode 0 has 10 rows but episodes\.jsonl "
                                                r"says length 11"):
        read_trajectory(root, episode=0)


def test_lerobot_v30_task_from_tasks_parquet_and_bad_rows(tmp_path: Path) -> None:
    root = write_lerobot_v30(tmp_path / "ds")
    table = pq.read_table(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    pq.write_table(table.drop_columns(["tasks"]), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    assert read_trajectory(root, episode=1).instruction == TASKS[1]
    pq.write_table(table.drop_columns([f"videos/{CAM}/from_timestamp"]),
                   root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    with pytest.raises(SpatialForgeError, match=rf"episodes: episode 0: videos/{CAM}/from_timestamp must be a number"):
        read_trajectory(root, episode=0)
    pq.write_table(table, root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    data = pq.read_table(root / "data" / "chunk-000" / "file-000.parquet")
    pq.write_table(data.filter(pa.compute.equal(data["episode_index"], 0)),
                   root / "data" / "chunk-000" / "file-000.parquet")
    with pytest.raises(SpatialForgeError, match=r"file-000\.parquet: holds no rows of episode 1"):
        read_trajectory(root, episode=1)


def test_lerobot_images_stored_in_the_parquet_table(tmp_path: Path) -> None:
    import io

    root = write_lerobot_v21(tmp_path / "ds")
    info = json.loads((root / "meta" / "info.json").read_text())
    info["features"] = {"observation.image": {"dtype": "image", "shape": [H, W, 3],
                                              "names": ["height", "width", "channels"]},
                        **{k: v for k, v in info["features"].items() if v["dtype"] != "video"}}
    (root / "meta" / "info.json").write_text(json.dumps(info))
    path = root / "data" / "chunk-000" / "episode_000000.parquet"
    table = pq.read_table(path)
    cells = []
    for k in range(table.num_rows):
        buf = io.BytesIO()
        Image.fromarray(square_frame(k + 3)).save(buf, format="PNG")
        cells.append({"bytes": buf.getvalue(), "path": f"frame_{k:06d}.png"})
    pq.write_table(table.append_column("observation.image", pa.array(cells)), path)
    traj = read_trajectory(root, episode=0, stride=3)
    assert [f.index for f in traj.frames] == [0, 3, 6, 9]
    assert [frame_number(f.image) for f in traj.frames] == [3, 6, 9, 12]
    assert "observation.image" in traj.source and traj.instruction == TASKS[0]
    cells[3] = {"bytes": b"garbage", "path": None}
    pq.write_table(table.append_column("observation.image", pa.array(cells)), path)
    with pytest.raises(SpatialForgeError, match=r"episode_000000\.parquet: episode 0 frame 3: cannot read the "
                                                r"observation\.image image"):
        read_trajectory(root, episode=0, stride=3)
