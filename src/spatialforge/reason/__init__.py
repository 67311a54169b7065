"""Chain-of-thought spatial reasoning: an LLM breaks a hard spatial question into simple measurements.

:mod:`~spatialforge.reason.tools` (the tools: scene-graph measurements, geometry helpers, arithmetic, the VLM),
:mod:`~spatialforge.reason.llm` (planners: native tool calling, ReAct, a local transformers model, a scripted
fake LLM), :mod:`~spatialforge.reason.agent` (the bounded loop) and :mod:`~spatialforge.reason.trace` (every
step, as JSON and for the terminal). ``spatialforge reason`` is :mod:`spatialforge.cli.reason`; docs/reasoning.md.
"""

from spatialforge.reason.agent import DEFAULT_MAX_STEPS, SYSTEM_PROMPT, TOOL_MODES, make_tools, run_agent
from spatialforge.reason.llm import (
    LLMError,
    LLMStep,
    Observation,
    Planner,
    ReActPlanner,
    ScriptedPlanner,
    ToolCall,
    ToolCallingPlanner,
    build_planner,
    parse_react,
)
from spatialforge.reason.tools import QUANTITIES, SceneTools, Toolbox, ToolError, VLMTools
from spatialforge.reason.trace import Trace, TraceStep

__all__ = [
    "DEFAULT_MAX_STEPS",
    "QUANTITIES",
    "SYSTEM_PROMPT",
    "TOOL_MODES",
    "LLMError",
    "LLMStep",
    "Observation",
    "Planner",
    "ReActPlanner",
    "SceneTools",
    "ScriptedPlanner",
    "ToolCall",
    "ToolCallingPlanner",
    "ToolError",
    "Toolbox",
    "Trace",
    "TraceStep",
    "VLMTools",
    "build_planner",
    "make_tools",
    "parse_react",
    "run_agent",
]
