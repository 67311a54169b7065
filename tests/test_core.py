"""The core runs without torch; optional extras fail with an error naming the extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from spatialforge._optional import require
from spatialforge.core.types import CameraIntrinsics, Gravity, ObjectAnnotation, RGBDScene
from spatialforge.errors import MissingExtraError, SceneFormatError


def test_core_pipeline_runs_with_torch_blocked(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        for mod in ("torch", "torchvision", "transformers", "open_clip", "ray", "datasets"):
            sys.modules[mod] = None  # any import of these now raises ImportError
        from spatialforge.cli.main import main
        assert main(["synth", "--n", "2", "--out", r"{tmp_path}/s", "--width", "160", "--height", "120",
                     "--no-progress"]) == 0
        assert main(["generate", r"{tmp_path}/s", "--out", r"{tmp_path}/o", "--no-progress"]) == 0
        assert main(["export", r"{tmp_path}/o"]) == 0
        heavy = [m for m in ("torch", "transformers", "open_clip") if sys.modules.get(m) is not None]
        assert not heavy, heavy
        print("CORE-OK")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "CORE-OK" in res.stdout


def test_import_has_no_side_effects():
    code = "import spatialforge, sys; print(sorted(m for m in sys.modules if m.startswith('spatialforge')))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    assert res.stdout.strip() == "['spatialforge']"


def test_require_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'spatialforge\[models\]'"):
        require("torch", extra="models", feature="depth estimation")
    assert require("json", extra="models").dumps([1]) == "[1]"


def test_containers_validate_with_expected_vs_actual():
    intr = CameraIntrinsics(fx=100, fy=100, cx=16, cy=12, width=32, height=24)
    img = np.zeros((24, 32, 3), np.uint8)
    with pytest.raises(SceneFormatError, match="depth: size 31x24 does not match the camera's 32x24"):
        RGBDScene("s", img, np.ones((24, 31), np.float32), np.zeros((24, 32), np.int32), intr, ())
    with pytest.raises(SceneFormatError, match=r"image: expected \(H, W, 3\) uint8"):
        RGBDScene("s", img[..., 0], np.ones((24, 32), np.float32), np.zeros((24, 32), np.int32), intr, ())
    with pytest.raises(ValueError, match="fx must be a finite positive number"):
        CameraIntrinsics(fx=-1, fy=100, cx=16, cy=12, width=32, height=24)
    with pytest.raises(ValueError, match="caption must be a non-empty string"):
        ObjectAnnotation(3, "  ")
    with pytest.raises(ValueError, match="proper 3x3 rotation"):
        Gravity(source="plane", R=np.diag([1.0, 1.0, -1.0]), t=np.zeros(3))
    # NaN and negative depth become invalid (0), never silently metric
    depth = np.full((24, 32), np.nan, np.float32)
    depth[0, 0] = -1.0
    depth[1, 1] = 2.0
    scene = RGBDScene("s", img, depth, np.zeros((24, 32), np.int32), intr, ())
    assert scene.depth[0, 0] == 0 and scene.depth[5, 5] == 0 and scene.depth[1, 1] == 2.0


def test_photo_path_imports_models_only_when_used(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(photos / "a.png")
    code = textwrap.dedent(f"""
        import sys
        for mod in ("torch", "torchvision", "transformers", "datasets"):
            sys.modules[mod] = None
        from spatialforge.perception.config import PerceptionConfig
        from spatialforge.perception.pipeline import PerceptionPipeline
        pipe = PerceptionPipeline.from_config(PerceptionConfig())  # builds every default stage, loads nothing
        from spatialforge.cli.main import main
        rc = main(["generate", r"{photos}", "--out", r"{tmp_path}/o", "--no-progress"])
        print("RC", rc)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "RC 2" in res.stdout
    assert "pip install 'spatialforge[models]'" in res.stderr


def test_evaluation_runs_without_torch(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        for mod in ("torch", "torchvision", "transformers", "open_clip", "peft", "trl"):
            sys.modules[mod] = None
        from spatialforge.cli.main import main
        assert main(["eval", "build", "--out", r"{tmp_path}/b", "--n", "2", "--no-progress"]) == 0
        assert main(["eval", "run", "--benchmark", r"{tmp_path}/b", "--model", "prior", "--out", r"{tmp_path}/r",
                     "--no-progress"]) == 0
        assert main(["afford", "score", "--agd20k", r"{tmp_path}/none", "--split", "Seen", "--predictions",
                     r"{tmp_path}/p"]) == 2  # a clear data error, not an ImportError
        print("EVAL-OK")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "EVAL-OK" in res.stdout
