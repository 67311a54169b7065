"""``spatialforge reward``: parse-time checks, instruction rule, output-folder safety, written files.

The perception stages and the engine are replaced by fakes here (no models); the engine has its own tests and
the end-to-end run is tested with the synthetic trajectories.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from spatialforge.cli import reward as cli
from spatialforge.cli.options import Parser
from spatialforge.errors import SpatialForgeError
from spatialforge.io.outdir import MARKER
from tests.reward.test_readers import square_frame, write_lerobot_v21, write_mp4, write_rgbd

av = pytest.importorskip("av")
engine = pytest.importorskip("spatialforge.reward.engine")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Parse and run like ``spatialforge reward``; (exit status, stderr)."""
    parser = Parser(prog="spatialforge")
    sub = parser.add_subparsers(dest="command")
    cli.add_reward_parser(sub)
    try:
        args = parser.parse_args(["reward", *argv])
        code = args.func(args)
    except SystemExit as exc:
        code = exc.code
    except SpatialForgeError as exc:
        print(f"spatialforge: error: {exc}", file=__import__("sys").stderr)
        code = 2
    return code, capsys.readouterr().err


class FakeStage:
    def __init__(self, kind: str, loaded: list[str]) -> None:
        self.kind, self.loaded, self.model_id = kind, loaded, f"fake-{kind}"

    def load(self) -> None:
        self.loaded.append(self.kind)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Fake stages and a fake engine: the distance falls by 2 cm per frame, boxes around the moving square."""
    seen: dict = {"loaded": [], "calls": []}

    def build(args, specs):
        seen["specs"] = specs
        return {k: FakeStage(k, seen["loaded"]) for k in ("detector", "segmenter", "depth")}

    def annotate(traj, obj, target, *, perception, config):
        seen["calls"].append((traj, obj, target, perception, config))
        rows = []
        for f in traj.frames:
            d = 0.5 - 0.02 * f.index
            x = float(np.nonzero((f.image.mean(axis=2) > 140).any(axis=0))[0].min())
            rows.append(engine.RewardRow(frame=f.index, time_s=f.time_s, distance_m=d, reward=1 - d / 0.5,
                                         progress=1 - d / 0.5, confidence=0.9, interpolated=f.index == 2,
                                         success=d < config.success_threshold_m,
                                         object_box=(x, 16.0, x + 8, 24.0), target_box=(50.0, 30.0, 60.0, 40.0)))
        return engine.RewardResult(rows=tuple(rows), summary={"frames": len(rows)})

    def plot(result, traj, path):
        from PIL import Image

        Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(path, format="PNG")

    monkeypatch.setattr(cli, "_build_stages", build)
    monkeypatch.setattr(engine, "annotate_reward", annotate)
    monkeypatch.setattr(cli, "_plot", plot)
    return seen


@pytest.fixture
def mp4(tmp_path: Path) -> Path:
    return write_mp4(tmp_path / "in" / "clip.mp4", [square_frame(k) for k in range(12)], fps=12)


# ----------------------------------------------------------------------------- the instruction rule
@pytest.mark.parametrize(("text", "names"), [
    ("move the gripper to the orange cube", ("gripper", "orange cube")),
    ("Move the red block onto the blue plate.", ("red block", "blue plate")),
    ("put a sponge next to the sink", ("sponge", "sink")),
    ("push the can towards the wall", ("can", "wall")),
    ("pick up the banana", ("gripper", "banana")),
    ("reach for the mug", ("gripper", "mug")),
    ("fold the towel", None),
    ("move the cube to the cube", None),
])
def test_parse_instruction(text: str, names: tuple[str, str] | None) -> None:
    assert cli.parse_instruction(text) == names


# ----------------------------------------------------------------------------- checks before any work
@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--stride", "0", "argument --stride: must be an integer >= 1, got '0'"),
    ("--success-threshold", "0", "argument --success-threshold: must be a number > 0, got '0'"),
    ("--max-side", "8", "argument --max-side: must be an integer >= 16, got '8'"),
    ("--episode", "-1", "argument --episode: must be an integer >= 0, got '-1'"),
    ("--device", "gpu", "argument --device: must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    ("--reward", "dense", "argument --reward: invalid choice: 'dense'"),
    ("--object", " ", "argument --object: must be a non-empty name"),
])
def test_bad_values_fail_at_parse_time(tmp_path: Path, capsys: pytest.CaptureFixture[str], mp4: Path, flag: str,
                                       value: str, message: str) -> None:
    code, err = run([str(mp4), "--out", str(tmp_path / "o"), flag, value], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--object", "gripper"], "--object needs --target too"),
    (["--instruction", "move the gripper to the cube", "--object", "a", "--target", "b"],
     "give --instruction or --object/--target, not both"),
    (["--instruction", "fold the towel"], "--instruction 'fold the towel': cannot tell the object and the target"),
    (["--object", "cube", "--target", "Cube"], "--object and --target must name different things"),
    (["--object", "a", "--target", "b", "--episode", "1"], "--episode: applies to LeRobot datasets only"),
    (["--object", "a", "--target", "b", "--fps", "5"], "--fps: "),
    (["--object", "a", "--target", "b", "--segmenter", "box", "--segmenter-model", "x"],
     "--segmenter-model: the box segmenter loads no model"),
])
def test_bad_combinations_fail_before_the_folder_is_claimed(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            mp4: Path, fakes: dict, extra: list[str],
                                                            message: str) -> None:
    code, err = run([str(mp4), "--out", str(tmp_path / "o"), *extra], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() and not fakes["loaded"]


def test_missing_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], fakes: dict) -> None:
    code, err = run([str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o"), "--object", "a", "--target", "b"],
                    capsys)
    assert code == 2 and "nope.mp4: no such file or folder" in err and not (tmp_path / "o").exists()


def test_stage_specs_and_real_builder(tmp_path: Path, mp4: Path) -> None:
    args = cli_args(mp4, tmp_path, ["--detector", "grounding-dino", "--segmenter", "box", "--dtype", "float16",
                                    "--device", "cpu"])
    specs = cli._stage_specs(args)
    assert specs["depth"].options == {"scene": "indoor"} and specs["detector"].backend == "grounding-dino"
    stages = cli._build_stages(args, specs)  # builds, loads nothing
    assert type(stages["detector"]).__name__ == "GroundingDinoDetector" and stages["detector"].model is None
    assert stages["detector"].dtype_name == "float16" and stages["detector"].device_name == "cpu"
    assert type(stages["segmenter"]).__name__ == "BoxSegmenter"
    assert type(stages["depth"]).__name__ == "DepthAnythingV2Depth" and stages["depth"].scene == "indoor"
    # a --depth-model is one checkpoint: no scene routing option goes with it
    specs = cli._stage_specs(cli_args(mp4, tmp_path, ["--depth-model", "some/model"]))
    assert specs["depth"].options == {} and specs["depth"].model_id == "some/model"
    assert cli._build_stages(args, specs)["depth"].model_id == "some/model"


def cli_args(mp4: Path, tmp_path: Path, extra: list[str]):
    parser = Parser(prog="spatialforge")
    cli.add_reward_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["reward", str(mp4), "--out", str(tmp_path / "o"), *extra])


# ----------------------------------------------------------------------------- a run
def test_video_run_writes_every_output(tmp_path: Path, capsys: pytest.CaptureFixture[str], mp4: Path,
                                       fakes: dict) -> None:
    out = tmp_path / "out"
    code, err = run([str(mp4), "--out", str(out), "--instruction", "move the gripper to the orange cube",
                     "--stride", "2", "--overlay", "--reward", "progress", "--success-threshold", "0.35"], capsys)
    assert code == 0, err
    traj, obj, target, perception, config = fakes["calls"][0]
    assert (obj, target) == ("gripper", "orange cube")
    assert [f.index for f in traj.frames] == [0, 2, 4, 6, 8, 10]
    assert config.reward == "progress" and config.success_threshold_m == 0.35
    assert perception.depth is not None and sorted(fakes["loaded"]) == ["depth", "detector", "segmenter"]

    with (out / "reward.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(cli.CSV_COLUMNS)
    assert [int(r["frame"]) for r in rows] == [0, 2, 4, 6, 8, 10]
    assert [float(r["time_s"]) for r in rows] == pytest.approx([k / 12 for k in (0, 2, 4, 6, 8, 10)], abs=1e-5)
    assert [float(r["distance_m"]) for r in rows] == pytest.approx([0.5 - 0.02 * k for k in (0, 2, 4, 6, 8, 10)])
    assert [r["interpolated"] for r in rows] == ["0", "1", "0", "0", "0", "0"]
    assert [r["success"] for r in rows] == ["0", "0", "0", "0", "1", "1"]  # 0.34 and 0.30 m < 0.35

    data = json.loads((out / "reward.json").read_text())
    assert len(data["rows"]) == 6 and data["summary"] == {"frames": 6}
    prov = data["provenance"]
    assert prov["object"] == "gripper" and prov["target"] == "orange cube" and prov["input_kind"] == "video"
    assert prov["stride"] == 2 and prov["frames"] == 6 and prov["config"]["reward"] == "progress"
    assert prov["instruction"] == "move the gripper to the orange cube"
    assert (out / "reward.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with av.open(str(out / "overlay.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (48, 64, 3)
    # the target's cyan box is drawn where the engine put it
    assert frames[0][35, 50, 2] > 150 and frames[0][35, 50, 0] < 120
    # every top-level entry is one the kind owns, so --overwrite can clean it
    assert all(cli.REWARD_OUTPUT.owned(e.name) for e in out.iterdir())
    assert sorted(e.name for e in out.iterdir()) == sorted([MARKER, "reward.csv", "reward.json", "reward.png",
                                                            "overlay.mp4"])


def test_lerobot_task_text_names_the_things(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            fakes: dict) -> None:
    root = write_lerobot_v21(tmp_path / "ds")
    code, err = run([str(root), "--out", str(tmp_path / "out"), "--episode", "0"], capsys)
    assert code == 0, err
    _, obj, target, _, _ = fakes["calls"][0]
    assert (obj, target) == ("gripper", "orange cube")
    prov = json.loads((tmp_path / "out" / "reward.json").read_text())["provenance"]
    assert prov["instruction"] == "move the gripper to the orange cube" and prov["input_kind"] == "lerobot"
    # episode 1's task ("push the blue can") names no target: asks for the flags
    code, err = run([str(root), "--out", str(tmp_path / "out2"), "--episode", "1"], capsys)
    assert code == 2 and "the task text 'push the blue can': cannot tell the object and the target" in err


def test_rgbd_run_loads_no_depth_model(tmp_path: Path, capsys: pytest.CaptureFixture[str], fakes: dict) -> None:
    folder = write_rgbd(tmp_path / "rgbd", 4)
    code, err = run([str(folder), "--out", str(tmp_path / "out"), "--object", "gripper", "--target", "cube"], capsys)
    assert code == 0, err
    perception = fakes["calls"][0][3]
    assert perception.depth is None and sorted(fakes["loaded"]) == ["detector", "segmenter"]
    assert fakes["calls"][0][0].frames[0].depth is not None


# ----------------------------------------------------------------------------- output-folder safety
def test_unmarked_folder_is_refused_with_and_without_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               mp4: Path, fakes: dict) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.txt").write_text("precious")
    for extra in ([], ["--overwrite"]):
        code, err = run([str(mp4), "--out", str(out), "--object", "a", "--target", "b", *extra], capsys)
        assert code == 2 and "is not empty (thesis.txt) and was not written by spatialforge" in err
    assert (out / "thesis.txt").read_text() == "precious" and sorted(p.name for p in out.iterdir()) == ["thesis.txt"]
    assert not fakes["calls"]


def test_out_may_not_be_or_hold_the_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], fakes: dict) -> None:
    folder = write_rgbd(tmp_path / "rgbd", 2)
    for out, message in ((folder, "is the input"), (folder / "result", "lies inside the input"),
                         (tmp_path, "contains the input")):
        code, err = run([str(folder), "--out", str(out), "--object", "a", "--target", "b"], capsys)
        assert code == 2 and message in err, err
    assert not (folder / "result").exists() and not fakes["calls"]


def test_rerun_needs_overwrite_which_keeps_foreign_files(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         mp4: Path, fakes: dict) -> None:
    out = tmp_path / "out"
    argv = [str(mp4), "--out", str(out), "--object", "gripper", "--target", "cube", "--overlay"]
    assert run(argv, capsys)[0] == 0
    (out / "notes.md").write_text("mine")
    code, err = run(argv, capsys)
    assert code == 2 and "holds an earlier `spatialforge reward` result; use --overwrite" in err
    code, err = run([*argv[:-1], "--overwrite"], capsys)  # no --overlay this time: the old overlay goes
    assert code == 0, err
    assert (out / "notes.md").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "notes.md", "reward.csv", "reward.json",
                                                            "reward.png"])
