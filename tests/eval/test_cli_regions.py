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
