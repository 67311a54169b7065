"""The reasoning loop: a planner (an LLM) calls tools until it answers, within a step and a token budget.

:func:`run_agent` runs one question and returns its :class:`~spatialforge.reason.trace.Trace`:

* a *step* is one LLM reply; at most ``max_steps`` replies are asked for. A reply without an answer
  after the last step ends the run with status ``step_limit`` and no answer;
* ``max_tokens`` bounds the tokens of the whole run (prompt + completion of every reply, as the backend
  counts them, or estimated at 4 characters a token when it does not). Each reply may use at most
  ``min(reply_tokens, what is left)`` new tokens; when nothing is left before an answer, the run ends with
  status ``token_limit`` and no answer;
* every tool call runs in order; a :class:`~spatialforge.reason.tools.ToolError` (a bad argument, an
  unknown object) becomes that call's error and goes back to the LLM as its observation, and so does
  an unreadable reply (a malformed ReAct action): the LLM can correct itself in the next step;
* an LLM that cannot be reached or answers something that is not a chat reply ends the run with status
  ``llm_error`` (its message in ``trace.error``); a configuration error (a rejected key, an unknown
  model) is raised as :class:`~spatialforge.errors.ConfigError`.

:func:`make_tools` builds the tools of a mode: ``graph`` (scene-graph tools: exact), ``vlm`` (``ask_vlm``
and the arithmetic helpers, plus the captions when a scene is known), ``both``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from spatialforge.core.types import SceneGraph
from spatialforge.errors import ConfigError
from spatialforge.reason.llm import LLMError, Observation, Planner
from spatialforge.reason.tools import SceneTools, Toolbox, ToolError, ToolSet, VLMTools
from spatialforge.reason.trace import Trace, TraceStep

__all__ = ["DEFAULT_MAX_STEPS", "DEFAULT_MAX_TOKENS", "DEFAULT_REPLY_TOKENS", "SYSTEM_PROMPT", "TOOL_MODES",
           "make_tools", "run_agent"]

DEFAULT_MAX_STEPS = 8
DEFAULT_MAX_TOKENS = 32000
DEFAULT_REPLY_TOKENS = 512
TOOL_MODES = ("graph", "vlm", "both")

SYSTEM_PROMPT = (
    "You answer questions about the 3D spatial layout of a scene: distances, sizes and relative positions of its "
    "objects. Break a hard question into simple measurements, get each one with a tool, use the calculate, "
    "triangle and fits_between tools for arithmetic, then give a short final answer (yes or no, an object's "
    "name, or a value with its unit). Name objects by their id or by the reference list_objects gives."
)


def make_tools(mode: str, *, graph: SceneGraph | None = None, references: Mapping[int, str] | None = None,
               vlm: Any = None, image: str | bytes | None = None) -> ToolSet:
    """The tools of ``mode`` (:data:`TOOL_MODES`); :class:`ConfigError` when what the mode needs is missing."""
    if mode not in TOOL_MODES:
        raise ConfigError(f"--tools: unknown mode {mode!r}; use one of: {', '.join(TOOL_MODES)}")
    if mode in ("graph", "both") and graph is None:
        raise ConfigError(f"--tools {mode}: needs a scene graph (an RGB-D scene folder)")
    if mode in ("vlm", "both") and (vlm is None or image is None):
        raise ConfigError(f"--tools {mode}: needs a VLM (--vlm) and an image")
    if mode == "graph":
        return SceneTools(graph, references)  # type: ignore[arg-type]
    scene = SceneTools(graph, references) if graph is not None and mode == "both" else None
    objects = None
    if graph is not None:
        refs = dict(references or {})
        objects = [{"id": o.id, "caption": o.caption, "reference": refs.get(o.id)} for o in graph.objects]
    vlm_tools = VLMTools(vlm, image, objects)  # type: ignore[arg-type]
    return vlm_tools if scene is None else Toolbox(scene, vlm_tools)


def run_agent(question: str, planner: Planner, tools: ToolSet, *, tools_mode: str = "graph",
              max_steps: int = DEFAULT_MAX_STEPS, max_tokens: int = DEFAULT_MAX_TOKENS,
              reply_tokens: int = DEFAULT_REPLY_TOKENS, system_prompt: str = SYSTEM_PROMPT) -> Trace:
    """Run ``planner`` on ``question`` with ``tools`` (see the module doc); the trace of the run."""
    for name, value in (("max_steps", max_steps), ("max_tokens", max_tokens), ("reply_tokens", reply_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    if not isinstance(question, str) or not question.strip():
        raise ConfigError("the question is empty")
    question = question.strip()
    trace = Trace(question=question, llm=planner.name, protocol=planner.protocol, tools=tools_mode)
    specs = tools.specs()
    messages = planner.start(question, specs, system_prompt)
    started = time.perf_counter()
    trace.status = "step_limit"
    for index in range(1, max_steps + 1):
        left = max_tokens - trace.tokens
        if left <= 0:
            trace.status = "token_limit"
            break
        t0 = time.perf_counter()
        try:
            step = planner.next_step(messages, specs, max_tokens=min(reply_tokens, left))
        except LLMError as exc:
            trace.steps.append(TraceStep(index, "llm", error=str(exc), seconds=time.perf_counter() - t0))
            trace.status, trace.error = "llm_error", str(exc)
            break
        trace.tokens += step.tokens or 0
        trace.tokens_estimated = trace.tokens_estimated or step.tokens_estimated
        trace.steps.append(TraceStep(index, "llm", text=step.text or None,
                                     tool_calls=[c.to_dict() for c in step.tool_calls] or None, answer=step.answer,
                                     error=step.error, tokens=step.tokens, seconds=time.perf_counter() - t0))
        if step.answer is not None:
            trace.status, trace.answer, trace.value = "answered", step.answer, step.value
            break
        observations: list[Observation] = []
        for call in step.tool_calls:
            t1 = time.perf_counter()
            if call.error is not None:
                obs = Observation(call, error=call.error)
            else:
                try:
                    obs = Observation(call, result=tools.call(call.name, call.args))
                except ToolError as exc:
                    obs = Observation(call, error=str(exc))
            observations.append(obs)
            trace.steps.append(TraceStep(index, "tool", call_id=call.id, tool=call.name, args=dict(call.args),
                                         result=obs.result, error=obs.error, seconds=time.perf_counter() - t1))
        planner.observe(messages, step, observations)
        if trace.tokens >= max_tokens and index < max_steps:
            trace.status = "token_limit"
            break
    trace.seconds = time.perf_counter() - started
    return trace

