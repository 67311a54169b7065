"""The trace of one reasoning run: every LLM reply and every tool call, in order, with timings.

JSON layout (:meth:`Trace.to_dict`, format ``spatialforge-reason-trace/1``)::

    {"format": "spatialforge-reason-trace/1", "question": ..., "llm": "openai:gpt-4o", "protocol": "tools",
     "tools": "graph", "status": "answered", "answer": "yes", "value": true, "error": null,
     "n_steps": 2, "n_tool_calls": 3, "tokens": 812, "tokens_estimated": false, "seconds": 1.93,
     "steps": [
       {"index": 1, "role": "llm", "text": "...", "tool_calls": [{"id": "call_0", "name": "measure",
        "args": {...}}], "answer": null, "error": null, "tokens": 402, "seconds": 0.91},
       {"index": 1, "role": "tool", "call_id": "call_0", "tool": "measure", "args": {...},
        "result": {"quantity": "distance", "value": 1.23, "unit": "m"}, "error": null, "seconds": 0.0001},
       ...]}

``index`` is the LLM step a record belongs to (tool records share their LLM step's index).
``status``: ``answered``; ``step_limit`` (``--max-steps`` LLM replies without an answer; no answer);
``token_limit`` (the token budget ran out; no answer); ``llm_error`` (the LLM could not be reached or
answered garbage that is not a chat reply; ``error`` says why). A tool error is not a status: it is
the tool record's ``error`` and goes back to the LLM as its observation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["STATUSES", "Trace", "TraceStep"]

TRACE_FORMAT = "spatialforge-reason-trace/1"
STATUSES = ("answered", "step_limit", "token_limit", "llm_error")
_SHOWN_CHARS = 400


@dataclass
class TraceStep:
    """One record: an LLM reply (``role == "llm"``) or one tool call and its result (``role == "tool"``)."""

    index: int
    role: Literal["llm", "tool"]
    text: str | None = None  # llm: the reply's text (thoughts, ReAct lines)
    tool_calls: list[dict[str, Any]] | None = None  # llm: [{"id", "name", "args"}]
    answer: str | None = None  # llm: the final answer
    call_id: str | None = None  # tool
    tool: str | None = None  # tool: its name
    args: dict[str, Any] | None = None  # tool
    result: dict[str, Any] | None = None  # tool
    error: str | None = None  # llm: unparseable reply; tool: the ToolError message
    tokens: int | None = None  # llm: tokens of this reply (prompt + completion, as the backend counts them)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        keep = (("text", "tool_calls", "answer", "error", "tokens") if self.role == "llm"
                else ("call_id", "tool", "args", "result", "error"))
        return {k: v for k, v in out.items() if k in ("index", "role", "seconds") or k in keep}


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _number(value: Any) -> Any:
    """``value`` with floats shortened for the terminal (the JSON keeps them exact)."""
    if isinstance(value, float):
        return float(f"{value:.4g}") if abs(value) < 1e4 else round(value, 2)
    if isinstance(value, dict):
        return {k: _number(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_number(v) for v in value]
    return value


@dataclass
class Trace:
    """A reasoning run (see the module doc)."""

    question: str
    llm: str
    protocol: str
    tools: str
    steps: list[TraceStep] = field(default_factory=list)
    status: str = "running"
    answer: str | None = None
    value: Any = None  # a structured answer when the planner gives one (the scripted planner)
    error: str | None = None
    tokens: int = 0
    tokens_estimated: bool = False
    seconds: float = 0.0

    @property
    def n_steps(self) -> int:
        return sum(1 for s in self.steps if s.role == "llm")

    @property
    def n_tool_calls(self) -> int:
        return sum(1 for s in self.steps if s.role == "tool")

    def tool_results(self) -> list[dict[str, Any]]:
        """The result of every tool call in order (``{"error": message}`` for a failed one)."""
        return [s.result if s.error is None else {"error": s.error} for s in self.steps if s.role == "tool"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TRACE_FORMAT,
            "question": self.question,
            "llm": self.llm,
            "protocol": self.protocol,
            "tools": self.tools,
            "status": self.status,
            "answer": self.answer,
            "value": self.value,
            "error": self.error,
            "n_steps": self.n_steps,
            "n_tool_calls": self.n_tool_calls,
            "tokens": self.tokens,
            "tokens_estimated": self.tokens_estimated,
            "seconds": round(self.seconds, 4),
            "steps": [s.to_dict() for s in self.steps],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)

    def render(self) -> str:
        """A readable view for the terminal: one block per LLM step, one line per tool call."""
        lines = [f"Question: {self.question}", f"LLM: {self.llm} ({self.protocol}), tools: {self.tools}"]
        for s in self.steps:
            if s.role == "llm":
                head = f"[{s.index}] llm"
                if s.tokens is not None:
                    head += f" ({s.tokens} tokens, {s.seconds:.2f} s)"
                lines.append(head)
                if s.text and s.text.strip():
                    for line in s.text.strip().splitlines()[:12]:
                        lines.append(f"    | {_short(line)}")
                if s.error:
                    lines.append(f"    ! {s.error}")
                if s.answer is not None:
                    lines.append(f"    = answer: {_short(s.answer)}")
            else:
                args = ", ".join(f"{k}={_short(_number(v))}" for k, v in (s.args or {}).items())
                outcome = f"ERROR {s.error}" if s.error else _short(_number(s.result))
                lines.append(f"    -> {s.tool}({args}) => {outcome}")
        lines.append(f"Status: {self.status} after {self.n_steps} step(s), {self.n_tool_calls} tool call(s), "
                     f"{'~' if self.tokens_estimated else ''}{self.tokens} tokens, {self.seconds:.2f} s")
        if self.error:
            lines.append(f"Error: {self.error}")
        lines.append(f"Answer: {self.answer if self.answer is not None else '(none)'}")
        return "\n".join(lines)
