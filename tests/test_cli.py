"""The command line, driven through ``main(argv)`` (returns the exit code) and as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import spatialforge
from spatialforge.cli.main import main
from spatialforge.qa import CATALOG


def _no_progress(*args: str) -> list[str]:
    return [*args, "--no-progress"]


@pytest.fixture(scope="module")
def pipeline_dirs(tmp_path_factory):
    """`synth` then `generate` through the CLI, shared by the tests that only read the results."""
    root = tmp_path_factory.mktemp("cli")
    scenes, out = root / "D", root / "O"
    rc_synth = main(_no_progress("synth", "--n", "3", "--out", str(scenes), "--seed", "1",
                                 "--width", "160", "--height", "120"))
    rc_gen = main(_no_progress("generate", str(scenes), "--out", str(out)))
    return scenes, out, rc_synth, rc_gen


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("spatialforge") and ": error: " in lines[0], err
    return lines[0]


# ----------------------------------------------------------------------------- synth / generate / export


def test_synth_writes_scene_folders(pipeline_dirs):
    scenes, _, rc, _ = pipeline_dirs
    assert rc == 0
    folders = sorted(p for p in scenes.iterdir() if p.is_dir())
    assert [p.name for p in folders] == ["synth_000000", "synth_000001", "synth_000002"]
    for f in folders:
        for name in ("image.png", "depth.png", "instances.png", "camera.json", "objects.json",
                     "ground_truth.json"):
            assert (f / name).is_file(), f / name
        assert Image.open(f / "image.png").size == (160, 120)
        cam = json.loads((f / "camera.json").read_text())
        assert (cam["width"], cam["height"]) == (160, 120)
        json.loads((f / "ground_truth.json").read_text())


def test_synth_output_message_and_npy(tmp_path, capsys):
    rc = main(_no_progress("synth", "--n", "1", "--out", str(tmp_path / "S"), "--width", "160",
                           "--height", "120", "--depth-format", "npy"))
    assert rc == 0
    assert f"wrote 1 scene to {tmp_path / 'S'}" in capsys.readouterr().out
    assert (tmp_path / "S" / "synth_000000" / "depth.npy").is_file()
    assert not (tmp_path / "S" / "synth_000000" / "depth.png").exists()


def test_synth_bad_n(tmp_path, capsys):
    assert main(_no_progress("synth", "--n", "0", "--out", str(tmp_path / "S"))) == 2
    assert "--n" in _one_error_line(capsys.readouterr().err)


def test_generate_writes_dataset(pipeline_dirs):
    _, out, _, rc = pipeline_dirs
    assert rc == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["scenes_found"] == 3
    assert m["counts"]["scenes_ok"] + m["counts"]["scenes_rejected"] == 3
    assert m["counts"]["qa_pairs"] > 0
    assert list((out / "data").glob("*.parquet"))
    # CLI defaults reach the configuration
    assert m["config"]["qa"]["qa_per_image"] == 10
    assert m["config"]["qa"]["quantitative_share"] == 0.5
    assert m["config"]["shard_size"] == 256


def test_generate_prints_summary(pipeline_dirs, tmp_path, capsys):
    scenes = pipeline_dirs[0]
    out = tmp_path / "O2"
    rc = main(_no_progress("generate", str(scenes), "--out", str(out), "--seed", "4", "--qa-per-image", "3",
                           "--mix", "1.0", "--units", "imperial", "--shard-size", "2"))
    assert rc == 0
    text = capsys.readouterr().out
    m = json.loads((out / "manifest.json").read_text())
    qa_lines = [line for line in text.splitlines() if line.startswith("QA pairs")]
    assert len(qa_lines) == 1
    assert qa_lines[0].startswith(f"QA pairs: {m['counts']['qa_pairs']} ")
    assert "scenes: 3 found" in text
    assert str(out) in text
    cfg = m["config"]
    assert cfg["qa"]["seed"] == 4 and cfg["qa"]["qa_per_image"] == 3
    assert cfg["qa"]["quantitative_share"] == 1.0 and cfg["qa"]["units"] == "imperial"
    assert cfg["shard_size"] == 2 and len(m["shards"]) == 2


def test_generate_types_and_overwrite(pipeline_dirs, tmp_path, capsys):
    scenes = pipeline_dirs[0]
    out = tmp_path / "O3"
    assert main(_no_progress("generate", str(scenes), "--out", str(out))) == 0
    # a different config into the same OUT is refused ...
    args = _no_progress("generate", str(scenes), "--out", str(out), "--types", "distance,height")
    capsys.readouterr()
    assert main(args) == 2
    assert "configuration changed (qa.types None -> [" in _one_error_line(capsys.readouterr().err)
    # ... unless --overwrite
    assert main([*args, "--overwrite"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["qa_pairs"] > 0
    assert set(m["counts"]["per_type"]) <= {"distance", "height"}


def test_export_llava(pipeline_dirs, capsys):
    _, out, _, _ = pipeline_dirs
    assert main(["export", str(out), "--format", "llava"]) == 0
    dest = out.parent / f"{out.name}-llava"  # beside the dataset, never inside it
    assert not (out / "export-llava").exists()
    records = json.loads((dest / "llava.json").read_text())
    assert records
    for rec in records:
        assert (dest / rec["image"]).is_file()
        assert rec["conversations"][0]["value"].startswith("<image>\n")
    assert f"exported {len(records)} records" in capsys.readouterr().out


def test_export_not_a_dataset(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(tmp_path) in line and "no data/ folder" in line


# ----------------------------------------------------------------------------- user errors -> exit 2


def test_generate_missing_folder(tmp_path, capsys):
    missing = tmp_path / "no_such_scenes"
    rc = main(_no_progress("generate", str(missing), "--out", str(tmp_path / "O")))
    assert rc == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert str(missing) in line
    assert not (tmp_path / "O").exists()


def test_generate_bad_mix(pipeline_dirs, tmp_path, capsys):
    rc = main(_no_progress("generate", str(pipeline_dirs[0]), "--out", str(tmp_path / "O"), "--mix", "1.5"))
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--mix" in line and "1.5" in line


def test_generate_unknown_type(pipeline_dirs, tmp_path, capsys):
    rc = main(_no_progress("generate", str(pipeline_dirs[0]), "--out", str(tmp_path / "O"),
                           "--types", "distance,not_a_type"))
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "unknown question type(s): not_a_type " in line  # only the unknown one is named


def test_generate_exclude_everything(pipeline_dirs, tmp_path, capsys):
    rc = main(_no_progress("generate", str(pipeline_dirs[0]), "--out", str(tmp_path / "O"),
                           "--types", "distance", "--exclude-types", "distance"))
    assert rc == 2
    assert "no question type left" in _one_error_line(capsys.readouterr().err)


def test_show_bad_scene(tmp_path, capsys):
    (tmp_path / "scene").mkdir()
    (tmp_path / "scene" / "camera.json").write_text("{}")
    assert main(["show", str(tmp_path / "scene")]) == 2
    assert "missing image" in _one_error_line(capsys.readouterr().err)


def test_unknown_command_is_a_one_line_usage_error(capsys):
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'frobnicate'" in err


def test_no_arguments_prints_the_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: spatialforge") and "generate" in out and "quickstart" in out


# ----------------------------------------------------------------------------- catalog


def test_catalog_json(capsys):
    assert main(["catalog", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list) and len(rows) >= 38
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))
    assert set(ids) == set(CATALOG)
    for r in rows:
        for key in ("id", "kind", "meaning", "question_templates", "answer_templates"):
            assert key in r, (key, r)
        assert r["kind"] in ("quantitative", "yes_no", "choice")
        assert r["meaning"].strip()
        assert r["question_templates"] >= 1
        if r["kind"] == "yes_no":
            assert r["answer_templates"]["yes"] >= 1 and r["answer_templates"]["no"] >= 1
        else:
            assert r["answer_templates"] >= 1


def test_catalog_text(capsys):
    assert main(["catalog"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == f"{len(CATALOG)} question types"
    body, _, extra = text.partition("\n\n")
    listed = {line.split()[0] for line in body.splitlines()[1:] if line.strip()}
    assert listed == set(CATALOG)
    from spatialforge.qa.afford_types import AFFORD_TYPES
    from spatialforge.qa.composite import COMPOSITE_TYPES

    assert all(t in extra for t in (*AFFORD_TYPES, *COMPOSITE_TYPES)) and "generate --afford" in extra


# ----------------------------------------------------------------------------- show / demo / version


def test_show_writes_png(pipeline_dirs, tmp_path, capsys):
    scene = pipeline_dirs[0] / "synth_000000"
    pic = tmp_path / "pic.png"
    assert main(["show", str(scene), "--out", str(pic)]) == 0
    assert f"wrote {pic}" in capsys.readouterr().out
    with Image.open(pic) as img:
        assert img.format == "PNG"
        w, h = Image.open(scene / "image.png").size
        assert img.width > w
        assert img.height >= h


def test_demo(tmp_path, capsys):
    out = tmp_path / "X"
    assert main(["demo", "--out", str(out), "--n", "3", "--samples", "2", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "2 sample QA pairs" in text
    assert text.count(" Q: ") == 2 and text.count(" A: ") == 2
    assert "QA pairs:" in text
    assert (out / "dataset" / "manifest.json").is_file()
    assert len([p for p in (out / "scenes").iterdir() if p.is_dir()]) == 3


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"spatialforge {spatialforge.__version__}"


# ----------------------------------------------------------------------------- as a real process


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def test_module_entry_point_subprocess():
    proc = subprocess.run([sys.executable, "-m", "spatialforge.cli.main", "catalog"], capture_output=True,
                          text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == f"{len(CATALOG)} question types"


def test_console_script_subprocess(tmp_path):
    script = Path(sys.executable).parent / "spatialforge"
    if not script.exists():
        found = shutil.which("spatialforge")
        if found is None:
            pytest.skip("spatialforge console script not installed")
        script = Path(found)
    proc = subprocess.run([str(script), "generate", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"),
                           "--no-progress"], capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("spatialforge: error:") and "nothing" in proc.stderr
