"""Synthetic indoor RGB-D scenes with exact ground truth (analytic ray casting, numpy only).

See ``docs/synthetic.md``. Typical use::

    from spatialforge.synth import SynthConfig, generate_scene, write_synthetic_dataset

    scene = generate_scene(42, seed=0)                      # in memory
    write_synthetic_dataset("out/", n=100, seed=0, config=SynthConfig(depth_noise=0.02))
"""

from spatialforge.synth.layout import SynthConfig, camera_pose
from spatialforge.synth.render import SyntheticScene, generate_scene
from spatialforge.synth.writer import write_scene, write_synthetic_dataset

__all__ = [
    "SynthConfig",
    "SyntheticScene",
    "camera_pose",
    "generate_scene",
    "write_scene",
    "write_synthetic_dataset",
]
