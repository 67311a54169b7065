"""`eval run | score --regions draw|none`: the flag reaches the SpatialRGPT loader, and runs with and
without the drawn regions never share a folder."""

from __future__ import annotations

import json

from spatialforge.cli.main import main

from . import bench_fixtures as fx


def _summary(out) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_regions_flag_chooses_the_image_a_model_is_shown(tmp_path, capsys):
    bench = fx.write_spatialrgpt_regions(tmp_path / "srgpt")
    spec = f"spatialrgpt:{bench.parent}"
    base = ["eval", "run", "--benchmark", spec, "--model", "prior", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "drawn")]) == 0
    assert _summary(tmp_path / "drawn")["benchmark"] == "spatialrgpt+regions"
    assert main([*base, "--out", str(tmp_path / "plain"), "--regions", "none"]) == 0
    assert _summary(tmp_path / "plain")["benchmark"] == "spatialrgpt"
    capsys.readouterr()
    # the folder answered on marked images does not take answers on plain ones
    assert main([*base, "--out", str(tmp_path / "drawn"), "--regions", "none"]) == 2
    assert "resume" in capsys.readouterr().err


def test_regions_flag_is_refused_where_there_are_no_regions(tmp_path, capsys):
    qs = fx.write_qspatial_parquet(tmp_path / "qs")
    assert main(["eval", "run", "--benchmark", f"qspatial:{qs}", "--model", "prior", "--out", str(tmp_path / "o"),
                 "--regions", "draw", "--no-progress"]) == 2
    assert "only SpatialRGPT-Bench" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_another_drawing_of_the_regions_is_not_resumed(tmp_path, capsys, monkeypatch):
    import spatialforge.eval.benchmarks as benchmarks

    bench = fx.write_spatialrgpt_regions(tmp_path / "srgpt")
    args = ["eval", "run", "--benchmark", f"spatialrgpt:{bench.parent}", "--model", "prior", "--no-progress",
            "--out", str(tmp_path / "o")]
    assert main(args) == 0
    monkeypatch.setattr(benchmarks, "MARKS_VERSION", benchmarks.MARKS_VERSION + 1)  # the marks are drawn anew
    capsys.readouterr()
    assert main(args) == 2
    assert "the regions drawn on its images" in capsys.readouterr().err


def test_an_adapters_base_model_folder_is_an_input(tmp_path, capsys):
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    base.mkdir()
    (base / "config.json").write_text("{}")
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    assert main(["eval", "run", "--benchmark", f"spatialrgpt:{fx.write_spatialrgpt_regions(tmp_path / 's').parent}",
                 "--model", f"hf:{adapter}", "--out", str(base / "run"), "--no-progress"]) == 2
    assert "inside the input" in capsys.readouterr().err
    assert sorted(p.name for p in base.iterdir()) == ["config.json"]
