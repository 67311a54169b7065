"""Data safety of the core commands: output folders, --overwrite, inputs, permissions, exit codes, resume.

Each test reproduces a way the tool lost or mixed a user's data, or reported success when it had
produced nothing (issue "Never lose a user's data, never fail silently").
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from spatialforge.cli.main import main
from spatialforge.errors import ConfigError
from spatialforge.io.outdir import (
    MARKER,
    OutputKind,
    atomic_path,
    check_output_file,
    make_temp_dir,
    prepare_output_dir,
    read_marker,
)
from spatialforge.pipeline.generate import DATASET_OUTPUT

KIND = OutputKind("things", ("data", "*.json"))


def _np(*args: str) -> list[str]:
    return [*args, "--no-progress"]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("safety") / "scenes"
    assert main(_np("synth", "--n", "4", "--out", str(d), "--width", "160", "--height", "120")) == 0
    return d


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------- the shared helper
def test_prepare_claims_a_new_folder_and_resumes_it(tmp_path):
    p = prepare_output_dir(tmp_path / "o", KIND)
    assert not p.resumed and read_marker(tmp_path / "o")["kind"] == "things"
    assert prepare_output_dir(tmp_path / "o", KIND).resumed is False  # only the marker: still empty of work
    (tmp_path / "o" / "data").mkdir()
    assert prepare_output_dir(tmp_path / "o", KIND).resumed is True


def test_unmarked_folder_is_never_written_into(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="not written by spatialforge"):
            prepare_output_dir(tmp_path / "mine", KIND, overwrite=overwrite)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"
    assert not (tmp_path / "mine" / MARKER).exists()


def test_overwrite_deletes_only_what_the_kind_owns(tmp_path):
    out = tmp_path / "o"
    prepare_output_dir(out, KIND)
    (out / "data").mkdir()
    (out / "data" / "x.bin").write_bytes(b"1")
    (out / "run.json").write_text("{}")
    (out / ".run.json.abc.tmp").write_text("torn")  # an interrupted atomic write
    (out / "notes.txt").write_text("the user's own notes")
    p = prepare_output_dir(out, KIND, overwrite=True)
    assert sorted(p.removed) == [".run.json.abc.tmp", MARKER, "data", "run.json"]
    assert p.kept == ("notes.txt",)
    assert sorted(x.name for x in out.iterdir()) == [MARKER, "notes.txt"]


def test_other_kind_is_refused(tmp_path):
    prepare_output_dir(tmp_path / "o", KIND)
    (tmp_path / "o" / "data").mkdir()
    with pytest.raises(ConfigError, match="holds spatialforge 'things' output, not 'dataset'"):
        prepare_output_dir(tmp_path / "o", DATASET_OUTPUT, overwrite=True)
    assert (tmp_path / "o" / "data").is_dir()


def test_protected_places_and_inputs(tmp_path, monkeypatch):
    work = tmp_path / "project"
    (work / "inputs").mkdir(parents=True)
    monkeypatch.chdir(work)
    cases = {".": "the working directory", str(tmp_path): "contains the working directory",
             "/": "the filesystem root", str(Path.home()): "the home directory"}
    for out, why in cases.items():
        with pytest.raises(ConfigError, match=why):
            prepare_output_dir(out, KIND, overwrite=True)
    inp = work / "inputs"
    for out, why in ((inp, "is the input"), (inp / "sub", "inside the input"), (work, "working directory"),
                     (work / "inputs" / "..", "working directory")):
        with pytest.raises(ConfigError, match=why):
            prepare_output_dir(out, KIND, inputs=[inp])
    with pytest.raises(ConfigError, match="contains the input"):
        prepare_output_dir(tmp_path / "elsewhere", KIND, inputs=[tmp_path / "elsewhere" / "scenes"])
    link = tmp_path / "link"
    link.symlink_to(inp)
    with pytest.raises(ConfigError, match="is the input"):  # through a symlink too
        prepare_output_dir(link, KIND, inputs=[inp])
    with pytest.raises(ConfigError, match="inside the input"):
        check_output_file(inp / "x.png", [inp])


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_written_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "f.json") as tmp:
            tmp.write_text("{}")
        d = make_temp_dir(tmp_path, prefix=".x.")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(d.stat().st_mode) == 0o777 & ~umask


def test_generated_dataset_is_readable_by_others_under_umask_022(scenes, tmp_path):
    old = os.umask(0o022)
    try:
        assert main(_np("generate", str(scenes), "--out", str(tmp_path / "o"))) == 0
        assert main(_np("synth", "--n", "1", "--out", str(tmp_path / "s"), "--width", "64", "--height", "48")) == 0
    finally:
        os.umask(old)
    for root in (tmp_path / "o", tmp_path / "s"):
        for p in [root, *root.rglob("*")]:
            want = 0o755 if p.is_dir() else 0o644
            assert stat.S_IMODE(p.stat().st_mode) == want, p


# ----------------------------------------------------------------------------- generate
def test_generate_into_its_own_input_is_refused(scenes, tmp_path, capsys):
    mine = _copy(scenes, tmp_path / "myscenes")
    before = _tree(mine)
    assert main(_np("generate", str(mine), "--out", str(mine), "--overwrite")) == 2
    assert "is the input" in _error(capsys)
    assert main(_np("generate", str(mine), "--out", str(mine / "out"))) == 2
    assert "inside the input" in _error(capsys)
    assert main(_np("generate", str(mine), "--out", str(tmp_path), "--overwrite")) == 2
    assert "contains the input" in _error(capsys)
    assert _tree(mine) == before


def test_generate_out_dot_is_refused(scenes, tmp_path, monkeypatch, capsys):
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("mine")
    monkeypatch.chdir(project)
    assert main(_np("generate", str(scenes), "--out", ".", "--overwrite")) == 2
    assert "working directory" in _error(capsys)
    assert (project / "README.md").read_text() == "mine"


def test_generate_into_a_foreign_folder_is_refused(scenes, tmp_path, capsys):
    out = tmp_path / "docs"
    out.mkdir()
    (out / "paper.pdf").write_bytes(b"%PDF")
    for extra in ([], ["--overwrite"]):
        assert main(_np("generate", str(scenes), "--out", str(out), *extra)) == 2
        assert "not written by spatialforge" in _error(capsys)
    assert [p.name for p in out.iterdir()] == ["paper.pdf"]


def test_generate_owns_every_entry_and_overwrite_keeps_foreign_files(scenes, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(_np("generate", str(scenes), "--out", str(out))) == 0
    assert all(DATASET_OUTPUT.owned(p.name) for p in out.iterdir()), sorted(p.name for p in out.iterdir())
    (out / "my_notes.txt").write_text("keep me")
    assert main(_np("generate", str(scenes), "--out", str(out), "--seed", "3", "--overwrite")) == 0
    assert (out / "my_notes.txt").read_text() == "keep me"
    assert "kept what spatialforge did not write" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["config"]["qa"]["seed"] == 3


def test_generate_rerun_redoes_edited_scenes_and_says_it_resumed(scenes, tmp_path, capsys):
    mine = _copy(scenes, tmp_path / "scenes")
    out = tmp_path / "o"
    args = _np("generate", str(mine), "--out", str(out), "--shard-size", "2")
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0
    assert "resumed 2 of 2 shards" in capsys.readouterr().out
    # edit one scene: its caption changes, so its shard must be redone
    objects = mine / "synth_000003" / "objects.json"
    objs = json.loads(objects.read_text())
    objs[0]["caption"] = "zebra-striped teapot"
    objects.write_text(json.dumps(objs))
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "redoing train-00001-of-00002.parquet: 1 scene changed since it was written (synth_000003)" in captured.err
    assert "resumed 1 of 2 shards; redid 1 whose scenes changed" in captured.out
    fresh = tmp_path / "fresh"
    assert main(_np("generate", str(mine), "--out", str(fresh), "--shard-size", "2")) == 0
    for name in ("train-00000-of-00002.parquet", "train-00001-of-00002.parquet"):
        import pyarrow.parquet as pq

        assert pq.read_table(out / "data" / name).to_pylist() == pq.read_table(fresh / "data" / name).to_pylist()
    text = (out / "data" / "train-00001-of-00002.parquet").read_bytes()
    assert b"zebra-striped teapot" in text or "zebra" in json.dumps(
        json.loads((out / "scene_graphs" / "synth_000003.json").read_text()))


def test_generate_refusal_names_added_and_removed_scenes(scenes, tmp_path, capsys):
    mine = _copy(scenes, tmp_path / "scenes")
    out = tmp_path / "o"
    assert main(_np("generate", str(mine), "--out", str(out))) == 0
    shutil.copytree(mine / "synth_000000", mine / "extra_scene")
    shutil.rmtree(mine / "synth_000002")
    assert main(_np("generate", str(mine), "--out", str(out))) == 2
    line = _error(capsys)
    assert "1 scene added (extra_scene)" in line and "1 scene removed (synth_000002)" in line


def test_inspect_never_writes_into_the_input_and_generate_still_resumes(scenes, tmp_path, capsys):
    mine = _copy(scenes, tmp_path / "scenes")
    out = tmp_path / "o"
    assert main(_np("generate", str(mine), "--out", str(out))) == 0
    before = _tree(mine)
    assert main(["inspect", str(mine), "synth_000001"]) == 0
    assert _tree(mine) == before and not (mine / "inspect").exists()
    dest = tmp_path / "scenes-inspect"
    assert sorted(p.name for p in dest.iterdir()) == [MARKER, "synth_000001_depth.png", "synth_000001_overlay.png"]
    assert main(["inspect", str(mine), "synth_000002"]) == 0  # more scenes join the same folder
    capsys.readouterr()
    assert main(_np("generate", str(mine), "--out", str(out))) == 0
    assert "resumed 1 of 1 shard" in capsys.readouterr().out
    assert main(["inspect", str(mine), "synth_000001", "--dest", str(mine / "pics")]) == 2
    assert "inside the input" in _error(capsys)


def test_show_writes_beside_not_into_the_scene(scenes, tmp_path, monkeypatch, capsys):
    mine = _copy(scenes / "synth_000000", tmp_path / "one")
    before = _tree(mine)
    monkeypatch.chdir(tmp_path)
    assert main(["show", str(mine)]) == 0
    assert (tmp_path / "one_scene_graph.png").is_file() and _tree(mine) == before
    assert main(["show", str(mine), "--out", str(mine / "g.png")]) == 2
    assert "inside the input" in _error(capsys)


def test_export_goes_beside_the_dataset_and_never_mixes_two_exports(scenes, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(_np("generate", str(scenes), "--out", str(out))) == 0
    assert main(["export", str(out)]) == 0
    dest = tmp_path / "o-llava"
    assert sorted(p.name for p in dest.iterdir()) == [MARKER, "images", "llava.json"]
    assert main(["export", str(out)]) == 2
    assert "use --overwrite" in _error(capsys)
    assert main(["export", str(out), "--overwrite"]) == 0
    assert main(["export", str(out), "--dest", str(out / "x")]) == 2
    assert "inside the input" in _error(capsys)


def test_demo_refuses_a_foreign_folder_and_replaces_its_own(tmp_path, capsys):
    foreign = tmp_path / "d"
    foreign.mkdir()
    (foreign / "scenes").mkdir()  # a user's folder that happens to hold "scenes"
    (foreign / "scenes" / "keep.txt").write_text("x")
    assert main(_np("demo", "--out", str(foreign), "--n", "2")) == 2
    assert "not written by spatialforge" in _error(capsys)
    assert (foreign / "scenes" / "keep.txt").exists()
    out = tmp_path / "demo"
    assert main(_np("demo", "--out", str(out), "--n", "2", "--samples", "1")) == 0
    assert main(_np("demo", "--out", str(out), "--n", "1", "--samples", "1")) == 0
    assert sorted(p.name for p in (out / "scenes").iterdir() if p.is_dir()) == ["synth_000000"]


# ----------------------------------------------------------------------------- synth
def test_synth_resumes_the_same_settings_and_refuses_others(tmp_path, capsys):
    out = tmp_path / "s"
    base = ["synth", "--out", str(out), "--width", "64", "--height", "48", "--no-progress", "--seed", "5"]
    assert main([*base, "--n", "2"]) == 0
    first = _tree(out)
    capsys.readouterr()
    assert main([*base, "--n", "3"]) == 0  # same settings, more scenes: the first two are kept as they are
    assert "wrote 1 scene to" in capsys.readouterr().out
    assert {k: v for k, v in _tree(out).items() if not k.startswith(("synth.json", "synth_000002"))} == {
        k: v for k, v in first.items() if k != "synth.json"}
    assert main([*base, "--n", "3", "--noise", "0.02"]) == 2
    assert "other settings (--noise)" in _error(capsys)
    assert main([*base[:-2], "--seed", "6", "--n", "3"]) == 2
    assert "other settings (seed)" in _error(capsys)
    assert main([*base, "--n", "1"]) == 2
    assert "already holds 3 scenes" in _error(capsys)
    assert main([*base, "--n", "1", "--noise", "0.02", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["synth_000000"]


def test_synth_into_a_non_empty_folder_is_refused(tmp_path, capsys):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "synth_000000").mkdir()  # looks like ours, but has no marker
    assert main(_np("synth", "--n", "1", "--out", str(tmp_path / "s"), "--overwrite")) == 2
    assert "not written by spatialforge" in _error(capsys)


# ----------------------------------------------------------------------------- honest results
def test_nothing_produced_exits_1_with_the_counts(tmp_path, capsys):
    bad = tmp_path / "bad"
    for i in range(2):
        (bad / f"s{i}").mkdir(parents=True)
        (bad / f"s{i}" / "objects.json").write_text("[]")  # no image, depth, camera...
    assert main(_np("generate", str(bad), "--out", str(tmp_path / "o"))) == 1
    captured = capsys.readouterr()
    assert "scenes: 2 found, 0 ok, 2 rejected" in captured.out
    assert captured.err.strip().splitlines()[-1].startswith("spatialforge: failed: no row was produced")


def test_max_failure_rate(scenes, tmp_path, capsys):
    mixed = _copy(scenes, tmp_path / "mixed")
    (mixed / "broken").mkdir()
    (mixed / "broken" / "objects.json").write_text("[]")
    args = _np("generate", str(mixed), "--out", str(tmp_path / "o"))
    assert main([*args, "--max-failure-rate", "0.1"]) == 1
    assert "1 of 5 inputs were rejected or failed (20.0%), more than --max-failure-rate 0.1" in capsys.readouterr().err
    assert main([*args, "--max-failure-rate", "0.2"]) == 0  # the same folder resumes; 20 % is within the gate
    assert main([*args, "--max-failure-rate", "2"]) == 2


@pytest.mark.parametrize(("argv", "flag"), [
    (["generate", "SCENES", "--out", "OUT", "--seed", "-1"], "--seed"),
    (["synth", "--n", "2", "--out", "OUT", "--seed", "-1"], "--seed"),
    (["demo", "--out", "OUT", "--seed", "-1"], "--seed"),
    (["synth", "--n", "2", "--out", "OUT", "--noise", "0.9"], "--noise"),
    (["synth", "--n", "2", "--out", "OUT", "--width", "8"], "--width"),
    (["generate", "SCENES", "--out", "OUT", "--qa-per-image", "0"], "--qa-per-image"),
    (["generate", "SCENES", "--out", "OUT", "--shard-size", "0"], "--shard-size"),
    (["generate", "SCENES", "--out", "OUT", "--margin", "-0.1"], "--margin"),
    (["generate", "SCENES", "--out", "OUT", "--types", "distance,,height"], "--types"),
])
def test_bad_values_fail_before_any_work_naming_the_flag(argv, flag, scenes, tmp_path, capsys):
    argv = [str(scenes) if a == "SCENES" else str(tmp_path / "o") if a == "OUT" else a for a in argv]
    assert main(_np(*argv)) == 2
    line = _error(capsys)
    assert f"error: argument {flag}: must be" in line
    assert not (tmp_path / "o").exists()


def test_closed_pipe_exits_quietly():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "spatialforge.cli.main", "catalog"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader goes away before the first line, as `| head -0` does
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141
