"""A fake OpenAI-compatible LLM with tool calling, on loopback: the eval tests' fake server with a scripted reply."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.eval.fake_openai_server import FakeOpenAIServer


def tool_call(call_id: str, name: str, args: dict[str, Any] | str) -> dict[str, Any]:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}


class ToolCallingServer(FakeOpenAIServer):
    """``script(body) -> message`` (a dict with ``content`` and/or ``tool_calls``) or ``(status, payload)``."""

    def __init__(self, script: Callable[[dict[str, Any]], Any], *, usage: bool = True, **kw: Any) -> None:
        super().__init__(**kw)
        self.script = script
        self.usage = usage

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests]

    def _respond(self, h, rec) -> None:
        if self.api_key is not None and h.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._send(h, 401, {"error": {"message": "Incorrect API key provided."}})
        if h.path != "/v1/chat/completions" or not isinstance(rec.body, dict):
            return self._send(h, 404, {"error": {"message": f"no route {h.path}"}})
        reply = self.script(rec.body)
        if isinstance(reply, tuple):
            return self._send(h, reply[0], reply[1])
        body: dict[str, Any] = {
            "id": "chatcmpl-fake", "object": "chat.completion", "model": rec.body.get("model"),
            "choices": [{"index": 0, "finish_reason": "tool_calls" if reply.get("tool_calls") else "stop",
                         "message": {"role": "assistant", "content": None, **reply}}]}
        if self.usage:
            body["usage"] = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
        return self._send(h, 200, body)


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] == "tool"]
