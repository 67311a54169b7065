"""Helpers of the web-app tests: scene zips, good and bad."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def zip_folder(folder: Path, archive: Path, *, drop: tuple[str, ...] = (), replace: dict[str, bytes] | None = None,
               extra: dict[str, bytes] | None = None) -> Path:
    """Zip ``folder`` as ``<folder name>/<file>`` entries, leaving out ``drop`` and replacing file contents."""
    replace = replace or {}
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.iterdir()):
            if f.name in drop:
                continue
            zf.writestr(f"{folder.name}/{f.name}", replace.get(f.name, f.read_bytes()))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return archive


@pytest.fixture(scope="session")
def scene_folder(tmp_path_factory) -> Path:
    """Synthetic scene 0 of seed 0 written as a scene folder (what the app's built-in scene 0 is)."""
    from spatialforge.synth import generate_scene, write_scene

    return write_scene(generate_scene(0, 0), tmp_path_factory.mktemp("scene"))


@pytest.fixture(scope="session")
def afford_checkpoint(tmp_path_factory) -> Path:
    """A tiny random AffordanceCLIP checkpoint (a tiny ResNet CLIP saved beside it as its local-dir backbone)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("open_clip")
    from spatialforge.afford.checkpoint import save_checkpoint
    from spatialforge.afford.config import ModelConfig
    from spatialforge.afford.model import AffordanceCLIP
    from tests.afford.tiny_clip_rn import build_tiny_rn_clip

    root = tmp_path_factory.mktemp("afford")
    clip = build_tiny_rn_clip(root / "clip")
    torch.manual_seed(0)
    model = AffordanceCLIP.from_config(ModelConfig(clip_model=clip, clip_pretrained=None, image_size=64, fpn_dim=16))
    return save_checkpoint(root / "ckpt", model.eval())


@pytest.fixture(scope="session")
def perception_config(tmp_path_factory) -> Path:
    """A perception config of tiny random models: OWLv2 boxes (every score kept), box masks, Depth Anything V2."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.perception.tiny_depth import build_tiny_depth_anything
    from tests.perception.tiny_detectors import build_tiny_owlv2

    root = tmp_path_factory.mktemp("perception")
    owl, depth = build_tiny_owlv2(root / "owl"), build_tiny_depth_anything(root / "depth")
    config = root / "perception.toml"
    config.write_text(f"""
device = "cpu"
score_threshold = 0.0
assumed_hfov_deg = 60
vocabulary = ["chair", "table", "lamp"]
[filter]
backend = "none"
[embedder]
backend = "none"
[detector]
backend = "owlv2"
model_id = "{owl}"
[captioner]
backend = "label"
[segmenter]
backend = "box"
[depth]
backend = "depth-anything-v2"
model_id = "{depth}"
[focal_estimator]
backend = "none"
""")
    return config


def write_photo(path: Path, index: int = 0, seed: int = 3) -> Path:
    """A synthetic scene's image saved as a photo (160 x 120; JPEG or PNG by the suffix)."""
    from PIL import Image

    from spatialforge.synth import SynthConfig, generate_scene

    Image.fromarray(generate_scene(index, seed, config=SynthConfig(width=160, height=120)).image).save(path)
    return path
