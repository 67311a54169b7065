"""Faults of `spatialforge generate` (issue 10): a killed driver, dying workers, signals, a full disk,
an unwritable output folder and a large mixed batch of bad scene folders. Each ends with the same
dataset an uninterrupted run writes, or with one clear line and nothing that looks complete but is not.

Faults are injected the way a user would install a plugin: the documented worker setup hook
(``RunnerConfig.setup`` / ``--worker-setup tests.test_faults:fault_hook``) patches the geometry stage
in every worker process, as the JSON file named by ``$SF_TEST_FAULTS`` says (read at each scene).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from spatialforge.cli.main import main
from spatialforge.pipeline import GenerateConfig, run_generate
from spatialforge.pipeline.runners import RunnerConfig
from spatialforge.qa import QAConfig

FAULTS_ENV = "SF_TEST_FAULTS"
HOOK = "tests.test_faults:fault_hook"
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the fault hook (runs in workers)
def _take_turn(spec: dict) -> bool:
    """True while the scene has misbehaved fewer than ``times`` times (counted in files: across processes)."""
    if spec.get("times") is None:
        return True
    for n in range(spec["times"]):
        try:
            os.close(os.open(Path(spec["counter_dir"]) / f"{spec['scene']}.{n}", os.O_CREAT | os.O_EXCL))
            return True
        except FileExistsError:
            continue
    return False


def fault_hook() -> None:
    """Worker setup hook: wrap this process's geometry stage with the faults of ``$SF_TEST_FAULTS``."""
    import spatialforge.pipeline.generate as gen

    real = gen.build_scene_graph
    path = os.environ.get(FAULTS_ENV)

    def patched(scene, config):
        spec = json.loads(Path(path).read_text()) if path and Path(path).is_file() else {}
        if spec.get("record_resources"):
            import ray

            res = ray.get_runtime_context().get_assigned_resources()
            Path(spec["record_resources"], f"{os.getpid()}-{scene.scene_id}.json").write_text(json.dumps(res))
        if spec.get("sleep"):
            time.sleep(spec["sleep"])
        if scene.scene_id in spec.get("scenes", [spec.get("scene")]) and _take_turn(dict(spec, scene=scene.scene_id)):
            if spec.get("how") == "raise":
                raise RuntimeError(f"injected fault in {scene.scene_id}")
            if spec.get("how") == "system_exit":
                raise SystemExit(3)
            os._exit(1)
        return real(scene, config)

    gen.build_scene_graph = patched


# ----------------------------------------------------------------------------- helpers
def _cfg(shard_size: int = 2) -> GenerateConfig:
    return GenerateConfig(qa=QAConfig(seed=0), shard_size=shard_size)


def _rows(out: Path) -> list[dict]:
    files = sorted((out / "data").glob("*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def _by_id(rows: list[dict]) -> dict[str, dict]:
    ids = [r["scene_id"] for r in rows]
    assert len(ids) == len(set(ids)), f"duplicate ids: {sorted(ids)}"
    return {r["scene_id"]: r for r in rows}


def _temporaries(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*.tmp"))


def _faults(tmp_path: Path, monkeypatch, **spec) -> Path:
    path = tmp_path / "faults.json"
    (tmp_path / "counters").mkdir(exist_ok=True)
    path.write_text(json.dumps(dict(spec, counter_dir=str(tmp_path / "counters"))))
    monkeypatch.setenv(FAULTS_ENV, str(path))
    return path


def _assert_complete_shards_are_whole(out: Path) -> None:
    """Every shard with an index is a whole Parquet file holding exactly the rows its index names."""
    for index in sorted((out / "_state").glob("shard-*.json")):
        meta = json.loads(index.read_text())
        shard = out / "data" / meta["shard"]
        assert shard.stat().st_size == meta["bytes"], shard
        assert [r["scene_id"] for r in pq.read_table(shard, columns=["scene_id"]).to_pylist()] == meta["row_ids"]


@pytest.fixture(scope="module")
def small_scenes(tmp_path_factory) -> Path:
    """12 small scenes (96x72): 6 shards of 2."""
    d = tmp_path_factory.mktemp("faults") / "scenes"
    assert main(["synth", "--n", "12", "--out", str(d), "--width", "96", "--height", "72", "--seed", "4",
                 "--no-progress"]) == 0
    return d


@pytest.fixture(scope="module")
def clean(small_scenes, tmp_path_factory) -> tuple[Path, dict]:
    """The uninterrupted run everything is compared with."""
    out = tmp_path_factory.mktemp("clean") / "out"
    manifest = run_generate(small_scenes, out, _cfg(), progress=False, log=lambda m: None)
    return out, manifest


def _cli(scenes: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "spatialforge.cli.main", "generate", str(scenes), "--out", str(out),
            "--shard-size", "2", "--no-progress", "--worker-setup", HOOK, *extra]


def _start(argv: list[str], faults: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{FAULTS_ENV: str(faults)})
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)


def _wait_for_first_index(proc: subprocess.Popen, out: Path, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not list((out / "_state").glob("shard-*.json")):
        assert proc.poll() is None, f"finished before the first shard: {proc.communicate()}"
        assert time.monotonic() < end, "no shard index appeared"
        time.sleep(0.02)


# ----------------------------------------------------------------------------- (a) kill -9 of the driver
def test_kill_9_mid_run_then_the_same_command_completes_the_dataset(small_scenes, clean, tmp_path, monkeypatch):
    out = tmp_path / "out"
    faults = _faults(tmp_path, monkeypatch, sleep=0.15)  # slow enough to be killed mid-run
    argv = _cli(small_scenes, out, "--workers", "2")
    proc = _start(argv, faults)
    _wait_for_first_index(proc, out)
    proc.kill()  # SIGKILL: no cleanup of any kind
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done_before = sorted(p.name for p in (out / "_state").glob("shard-*.json"))
    assert 1 <= len(done_before) < 6, done_before
    _assert_complete_shards_are_whole(out)

    again = _start(argv, faults)
    stdout, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    assert "resumed" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shards_resumed"] >= len(done_before)
    rows, want = _by_id(_rows(out)), _by_id(_rows(clean[0]))
    assert sorted(rows) == sorted(want) == sorted(p.name for p in small_scenes.iterdir() if p.is_dir())
    assert rows == want  # the union of the shards of both runs is the uninterrupted dataset
    assert sorted(p.name for p in (out / "data").iterdir()) == clean[1]["shards"]
    assert _temporaries(out) == []
    _assert_complete_shards_are_whole(out)


# ----------------------------------------------------------------------------- (b) a worker that dies
@pytest.mark.parametrize("how", ["os_exit", "system_exit"])
def test_worker_that_dies_once_is_retried(small_scenes, clean, tmp_path, monkeypatch, how):
    _faults(tmp_path, monkeypatch, scene="synth_000005", how=how, times=1)
    out = tmp_path / "out"
    m = run_generate(small_scenes, out, _cfg(), progress=False, log=lambda s: None,
                     runner=RunnerConfig(workers=2, max_retries=1, setup=(HOOK,)))
    assert len(list((tmp_path / "counters").iterdir())) == 1  # it did die once
    assert m["worker_faults"]["worker_deaths"] >= 1
    assert m["counts"]["scenes_failed"] == 0 and m["counts"]["scenes_ok"] == 12
    assert _by_id(_rows(out)) == _by_id(_rows(clean[0]))
    assert [p.read_bytes() for p in sorted((out / "data").iterdir())] == \
        [p.read_bytes() for p in sorted((clean[0] / "data").iterdir())]


@pytest.mark.parametrize("how", ["os_exit", "system_exit"])
def test_scene_that_always_kills_its_worker_is_recorded_and_the_run_goes_on(small_scenes, clean, tmp_path,
                                                                             monkeypatch, how):
    _faults(tmp_path, monkeypatch, scene="synth_000005", how=how, times=None)
    out = tmp_path / "out"
    logged: list[str] = []
    m = run_generate(small_scenes, out, _cfg(), progress=False, log=logged.append,
                     runner=RunnerConfig(workers=2, max_retries=1, setup=(HOOK,)))
    c = m["counts"]
    assert (c["scenes_ok"], c["scenes_failed"], c["failed_by_reason"]) == (11, 1, {"worker_died": 1})
    assert c["failures_by_reason"] == {"worker_died": 1}
    [failed] = m["failed"]
    assert failed["scene_id"] == "synth_000005" and failed["reason"] == "worker_died"
    assert m["worker_faults"]["shards_split"] == ["train-00002-of-00006.parquet"]
    assert m["worker_faults"]["scenes_died"] == ["synth_000005"]
    assert any("synth_000005" in line and "worker_died" in line for line in logged), logged
    want = _by_id(_rows(clean[0]))
    del want["synth_000005"]
    assert _by_id(_rows(out)) == want  # its shard-mate synth_000004 is there too
    index = json.loads((out / "_state" / "shard-00002.json").read_text())
    assert index["failures_by_reason"] == {"worker_died": 1} and index["row_ids"] == ["synth_000004"]


def test_in_process_stage_exit_stops_the_run_and_the_rerun_completes_it(small_scenes, clean, tmp_path):
    """--workers 1 has no separate worker to lose: a stage that exits ends the run; the rerun resumes."""
    out = tmp_path / "out"
    import spatialforge.pipeline.generate as gen

    real, calls = gen.build_scene_graph, []

    def exits_on_the_fifth(scene, config):
        calls.append(scene.scene_id)
        if len(calls) == 5:
            raise SystemExit(3)
        return real(scene, config)

    gen.build_scene_graph = exits_on_the_fifth
    try:
        with pytest.raises(SystemExit):
            run_generate(small_scenes, out, _cfg(), progress=False, log=lambda s: None)
    finally:
        gen.build_scene_graph = real
    assert sorted(p.name for p in (out / "_state").glob("shard-*.json")) == ["shard-00000.json", "shard-00001.json"]
    assert _temporaries(out) == []
    m = run_generate(small_scenes, out, _cfg(), progress=False, log=lambda s: None)
    assert m["shards_resumed"] == 2
    assert _by_id(_rows(out)) == _by_id(_rows(clean[0]))


# ----------------------------------------------------------------------------- (c) SIGINT / SIGTERM
@pytest.mark.parametrize(("signum", "code", "workers"), [(signal.SIGTERM, 143, "1"), (signal.SIGINT, 130, "2")])
def test_signal_abandons_the_shard_in_flight_and_the_rerun_resumes(small_scenes, clean, tmp_path, monkeypatch,
                                                                   signum, code, workers):
    out = tmp_path / "out"
    faults = _faults(tmp_path, monkeypatch, sleep=0.15)
    argv = _cli(small_scenes, out, "--workers", workers)
    proc = _start(argv, faults)
    _wait_for_first_index(proc, out)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    name = signal.Signals(signum).name
    assert lines[0].startswith(f"spatialforge: stopped by {name}: ") and "of 6 shards complete" in lines[0], lines
    assert "rerun the same command to resume" in lines[0]
    assert _temporaries(out) == []
    _assert_complete_shards_are_whole(out)
    indexed = {json.loads(p.read_text())["shard"] for p in (out / "_state").glob("shard-*.json")}
    assert indexed and len(indexed) < 6
    assert {p.name for p in (out / "data").iterdir()} == indexed  # nothing in data/ without its index
    again = _start(argv, faults)
    stdout, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    assert f"resumed {len(indexed)} of 6 shards" in stdout
    assert _by_id(_rows(out)) == _by_id(_rows(clean[0]))


def test_signal_while_a_shard_is_written_finishes_that_shard_first(small_scenes, clean, tmp_path, monkeypatch):
    import spatialforge.io.dataset as ds
    from spatialforge.pipeline.runners import Interrupted

    real = ds._write_all

    def write_then_signal(fh, data):
        real(fh, data)
        if "train-00001-" in fh.name:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives between the Parquet file and its index

    monkeypatch.setattr(ds, "_write_all", write_then_signal)
    out = tmp_path / "out"
    with pytest.raises(Interrupted, match=r"^stopped by SIGTERM: 2 of 6 shards complete") as info:
        run_generate(small_scenes, out, _cfg(), progress=False, log=lambda s: None)
    assert info.value.exit_code == 143
    assert sorted(p.name for p in (out / "_state").glob("shard-*.json")) == ["shard-00000.json", "shard-00001.json"]
    _assert_complete_shards_are_whole(out)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone with the run


# ----------------------------------------------------------------------------- (d) disk full, unwritable --out
def test_disk_full_on_one_shard_is_one_error_and_leaves_no_torn_shard(small_scenes, clean, tmp_path, monkeypatch,
                                                                       capsys):
    import spatialforge.io.dataset as ds

    real = ds._write_all

    def full_disk(fh, data):
        if "train-00001-" in fh.name:
            fh.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fh, data)

    monkeypatch.setattr(ds, "_write_all", full_disk)
    out = tmp_path / "out"
    args = ["generate", str(small_scenes), "--out", str(out), "--shard-size", "2", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"spatialforge: error: {out / 'data' / 'train-00001-of-00006.parquet'}: cannot write "
                             "(No space left on device)"), err
    assert "rerun the same command to resume" in err[0]
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00006.parquet"]
    assert sorted(p.name for p in (out / "_state").iterdir()) == ["run.json", "shard-00000.json"]
    assert _temporaries(out) == []
    assert not (out / "manifest.json").exists()
    monkeypatch.setattr(ds, "_write_all", real)  # space freed
    assert main(args) == 0
    assert "resumed 1 of 6 shards" in capsys.readouterr().out
    assert _by_id(_rows(out)) == _by_id(_rows(clean[0]))


def test_unwritable_out_is_one_error(small_scenes, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["generate", str(small_scenes), "--out", str(blocker / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"spatialforge: error: --out {blocker / 'out'}: cannot write there"), err
    # a dataset folder whose data/ became unwritable while the run went on (here: data is a file)
    out = tmp_path / "out"
    args = ["generate", str(small_scenes), "--out", str(out), "--shard-size", "4", "--no-progress"]
    assert main(args) == 0
    shutil.rmtree(out / "data")
    (out / "data").write_text("oops")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ": cannot write (" in err[0] and str(out / "data") in err[0], err
    assert (out / "data").read_text() == "oops"


# ----------------------------------------------------------------------------- (e) bad inputs in a mixed batch
def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def _mixed_batch(good: Path, root: Path) -> dict[str, str | None]:
    """Copies of good scenes, most of them broken in one way; returns scene id -> expected reason (None: ok)."""
    scenes = root / "mixed"
    shutil.copytree(good, scenes)
    base = scenes / "synth_000000"
    depth_m = np.asarray(Image.open(base / "depth.png")).astype(np.float32) / 1000.0

    def clone(name: str) -> Path:
        shutil.copytree(base, scenes / name)
        return scenes / name

    d = clone("bad_depth_all_nan")
    (d / "depth.png").unlink()
    np.save(d / "depth.npy", np.full_like(depth_m, np.nan))
    d = clone("ok_depth_some_nan_inf")  # a few invalid pixels are not a reason to drop a scene
    (d / "depth.png").unlink()
    partial = depth_m.copy()
    partial[:4] = np.nan
    partial[4:6] = np.inf
    np.save(d / "depth.npy", partial)
    d = clone("bad_depth_size")
    Image.fromarray(np.full((50, 60), 1500, np.uint16)).save(d / "depth.png")
    clone("bad_no_camera").joinpath("camera.json").unlink()
    clone("bad_json").joinpath("objects.json").write_text('[{"id": 1, ')
    d = clone("ok_object_absent_from_mask")
    objects = json.loads((d / "objects.json").read_text())
    (d / "objects.json").write_text(json.dumps([*objects, {"id": 999, "caption": "ghost lamp"}]))
    clone("bad_empty_image").joinpath("image.png").write_bytes(b"")
    d = clone("bad_truncated_image")
    (d / "image.png").write_bytes((base / "image.png").read_bytes()[:300])
    d = clone("ok_png_named_jpg")
    (d / "image.png").rename(d / "image.jpg")
    d = clone("bad_16bit_image")
    Image.fromarray(np.zeros(depth_m.shape, np.uint16)).save(d / "image.png")
    clone("bad_huge_image").joinpath("image.png").write_bytes(_png_header_only(20000, 20000))
    expected: dict[str, str | None] = {p.name: None for p in good.iterdir() if p.is_dir()}
    expected.update({"bad_depth_all_nan": "bad_depth", "ok_depth_some_nan_inf": None,
                     "bad_depth_size": "size_mismatch", "bad_no_camera": "missing_file", "bad_json": "bad_format",
                     "ok_object_absent_from_mask": None, "bad_empty_image": "unreadable_file",
                     "bad_truncated_image": "unreadable_file", "ok_png_named_jpg": None,
                     "bad_16bit_image": "bad_format", "bad_huge_image": "image_too_large"})
    return expected


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")}


def test_mixed_batch_of_bad_scenes_each_gets_a_reason_and_every_good_scene_is_written(small_scenes, tmp_path):
    expected = _mixed_batch(small_scenes, tmp_path / "in")
    work = tmp_path / "work"
    work.mkdir()
    before = _tree(tmp_path)
    out = work / "out"
    m = run_generate(tmp_path / "in" / "mixed", out, _cfg(shard_size=3), progress=False, log=lambda s: None,
                     runner=RunnerConfig(workers=2))
    reasons = {r["scene_id"]: r["reason"] for r in m["rejected"]}
    assert m["failed"] == []
    assert reasons == {k: v for k, v in expected.items() if v is not None}
    for r in m["rejected"]:
        assert r["scene_id"] in r["message"] and "\n" not in r["message"], r
    rows = _by_id(_rows(out))
    assert sorted(rows) == sorted(k for k, v in expected.items() if v is None)
    for row in rows.values():
        assert all(np.isfinite(q["value"]) for q in row["qa"])
    assert m["counts"]["objects_skipped"].get("not_visible") == 1  # the id without pixels, counted
    assert m["counts"]["failures_by_reason"] == dict(sorted(
        {r: list(reasons.values()).count(r) for r in set(reasons.values())}.items()))
    after = _tree(tmp_path)
    assert {k: v for k, v in after.items() if k not in before and not k.startswith("work/out")} == {}
    assert {k: v for k, v in before.items() if after.get(k) != v} == {}  # no input changed


def test_scene_id_that_is_a_parent_reference_is_rejected_and_nothing_escapes(small_scenes, tmp_path):
    scene = tmp_path / "in" / "one"
    shutil.copytree(small_scenes / "synth_000001", scene)
    (scene / "sub").mkdir()
    before = _tree(tmp_path)
    out = tmp_path / "work" / "out"
    m = run_generate(scene / "sub" / "..", out, _cfg(), progress=False, log=lambda s: None)  # the scene id is ".."
    [rej] = m["rejected"]
    assert rej["reason"] == "bad_scene_id" and "'..'" in rej["message"]
    assert m["counts"]["rows"] == 0
    assert not (out / "scene_graphs").exists() or not any((out / "scene_graphs").iterdir())
    after = _tree(tmp_path)
    assert sorted(k for k in after if k not in before and not k.startswith("work")) == []
