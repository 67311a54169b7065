"""Runners that compose the stages (the only place that wires stages together)."""

from spatialforge.pipeline.generate import GenerateConfig, SceneOutcome, process_scene, process_shard, run_generate
from spatialforge.pipeline.runners import RunnerConfig, StageResources
from spatialforge.pipeline.shards import ShardResult, ShardSpec, plan_shards

__all__ = ["GenerateConfig", "RunnerConfig", "SceneOutcome", "ShardResult", "ShardSpec", "StageResources",
           "plan_shards", "process_scene", "process_shard", "run_generate"]
