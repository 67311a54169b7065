"""Runners that compose the stages (the only place that wires stages together)."""

from spatialforge.pipeline.generate import GenerateConfig, SceneOutcome, process_scene, run_generate

__all__ = ["GenerateConfig", "SceneOutcome", "process_scene", "run_generate"]
