"""The reasoning loop: scripted planner, native tool calling and ReAct against a fake endpoint, a tiny local model."""

from __future__ import annotations

import json
import math

import pytest

from spatialforge.errors import ConfigError
from spatialforge.reason import (
    ReActPlanner,
    SceneTools,
    ScriptedPlanner,
    build_planner,
    make_tools,
    parse_react,
    run_agent,
)
from spatialforge.reason.llm import OpenAIChat
from tests.reason.fake_llm import ToolCallingServer, tool_call, tool_messages
from tests.reason.scenes import REFS, graph


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("SF_REASON_KEY", raising=False)


@pytest.fixture
def tools() -> SceneTools:
    return SceneTools(graph(), REFS)


ISOSCELES_PLAN = [("measure", {"quantity": "distance", "a": 1, "b": 2}),
                  ("measure", {"quantity": "distance", "a": 2, "b": 3}),
                  ("measure", {"quantity": "distance", "a": 3, "b": 1})]


def _isosceles(results):
    ab, bc, ca = (r["value"] for r in results[:3])
    from spatialforge.reason.tools import triangle
    return triangle(ab, bc, ca)["isosceles"]


# ---------------------------------------------------------------- scripted planner

@pytest.mark.parametrize("batch", [True, False])
def test_scripted_planner_runs_the_plan_and_concludes_from_tool_results(tools, batch):
    planner = ScriptedPlanner(ISOSCELES_PLAN, _isosceles, batch=batch)
    trace = run_agent("Do the mug, the box and the plant form an isosceles triangle?", planner, tools)
    assert trace.status == "answered" and trace.answer == "yes" and trace.value is True
    assert trace.n_tool_calls == 3 and trace.n_steps == (2 if batch else 4)
    assert [r["value"] for r in trace.tool_results()] == pytest.approx([1.0, math.sqrt(2), 1.0])
    # the answer comes from the tools: a scene where the plant moved makes the same plan answer no
    moved = graph()
    from dataclasses import replace

    from tests.reason.scenes import obj
    moved = replace(moved, objects=tuple(obj(3, "green plant", (0.0, 4.0, 0.5)) if o.id == 3 else o
                                         for o in moved.objects))
    trace2 = run_agent("same?", ScriptedPlanner(ISOSCELES_PLAN, _isosceles, batch=batch), SceneTools(moved, REFS))
    assert trace2.answer == "no" and trace2.value is False


def test_scripted_planner_sees_tool_errors_and_the_trace_json(tools):
    plan = [("measure", {"quantity": "distance", "a": "the unicorn", "b": 1}), ("calculate", {"expression": "2*3"})]
    trace = run_agent("q?", ScriptedPlanner(plan, lambda rs: rs), tools)
    assert trace.status == "answered"
    assert "no object named 'the unicorn'" in trace.value[0]["error"] and trace.value[1] == {"value": 6.0}
    data = json.loads(trace.to_json())
    assert data["format"] == "spatialforge-reason-trace/1" and data["status"] == "answered"
    tool_steps = [s for s in data["steps"] if s["role"] == "tool"]
    assert tool_steps[0]["error"].startswith("measure: no object named") and tool_steps[0]["result"] is None
    assert tool_steps[1]["result"] == {"value": 6.0} and tool_steps[1]["args"] == {"expression": "2*3"}
    assert all(isinstance(s["seconds"], float) for s in data["steps"])
    text = trace.render()
    assert "-> measure(quantity=distance, a=the unicorn, b=1) => ERROR measure: no object named" in text
    assert "-> calculate(expression=2*3) => {\"value\": 6.0}" in text and "Status: answered" in text


def test_step_limit_ends_without_answer(tools):
    plan = [("calculate", {"expression": f"{i} + 1"}) for i in range(10)]
    trace = run_agent("q?", ScriptedPlanner(plan, lambda rs: 1, batch=False), tools, max_steps=3)
    assert trace.status == "step_limit" and trace.answer is None and trace.n_steps == 3 and trace.n_tool_calls == 3
    with pytest.raises(ConfigError, match="max_steps must be an integer >= 1"):
        run_agent("q?", ScriptedPlanner(plan, lambda rs: 1), tools, max_steps=0)


# ---------------------------------------------------------------- native tool calling (fake endpoint)

def _planner(srv, spec="openai:fake-llm", **kw):
    return build_planner(f"{spec}@{srv.base_url}", api_key_env="SF_REASON_KEY", max_retries=1, timeout_s=5, **kw)


def test_tool_calling_round_trip(tools, monkeypatch):
    def script(body):
        done = tool_messages(body)
        if not done:
            return {"content": "I will measure.", "tool_calls": [
                tool_call("c1", "measure", {"quantity": "distance", "a": "the red mug", "b": "the blue box"}),
                tool_call("c2", "measure", {"quantity": "width", "a": 2})]}
        d, w = (json.loads(m["content"])["value"] for m in done)
        return {"content": f"The distance is {d:.2f} m and the box is {w:.2f} m wide."}

    monkeypatch.setenv("SF_REASON_KEY", "sk-reason")
    with ToolCallingServer(script, api_key="sk-reason") as srv:
        trace = run_agent("How far is the mug from the box, and how wide is the box?", _planner(srv), tools)
        first, second = srv.bodies
    assert trace.status == "answered" and trace.answer == "The distance is 1.00 m and the box is 0.40 m wide."
    assert trace.tokens == 240 and not trace.tokens_estimated and trace.protocol == "tools"
    assert first["tools"] == tools.specs() and first["tool_choice"] == "auto"
    assert first["messages"][0]["role"] == "system" and first["messages"][1] == {
        "role": "user", "content": "How far is the mug from the box, and how wide is the box?"}
    assistant = second["messages"][2]
    assert assistant["role"] == "assistant" and [c["id"] for c in assistant["tool_calls"]] == ["c1", "c2"]
    assert [m["tool_call_id"] for m in tool_messages(second)] == ["c1", "c2"]
    assert json.loads(tool_messages(second)[0]["content"]) == {"quantity": "distance", "value": 1.0, "unit": "m"}


def test_tool_error_goes_back_as_observation(tools):
    def script(body):
        done = tool_messages(body)
        if not done:
            return {"tool_calls": [tool_call("c1", "measure", {"quantity": "distance", "a": "chair", "b": 1}),
                                   tool_call("c2", "measure", "{not json")]}
        if len(done) == 2:
            return {"tool_calls": [tool_call("c3", "measure", {"quantity": "distance", "a": 5, "b": 1})]}
        return {"content": "about " + str(round(json.loads(done[-1]["content"])["value"], 2))}

    with ToolCallingServer(script) as srv:
        trace = run_agent("How far is the chair from the mug?", _planner(srv), tools)
        bodies = srv.bodies
    assert trace.status == "answered" and trace.answer == "about 1.58"
    errors = [s.error for s in trace.steps if s.role == "tool"]
    assert "'chair' is ambiguous" in errors[0] and "not valid JSON" in errors[1] and errors[2] is None
    fed_back = [json.loads(m["content"]) for m in tool_messages(bodies[1])]
    assert "ambiguous" in fed_back[0]["error"] and "not valid JSON" in fed_back[1]["error"]


def test_tool_calling_step_limit_and_estimated_tokens(tools):
    with ToolCallingServer(lambda body: {"tool_calls": [tool_call(f"c{len(body['messages'])}", "list_objects", {})]},
                           usage=False) as srv:
        trace = run_agent("q?", _planner(srv), tools, max_steps=3)
        n_requests = len(srv.requests)
    assert trace.status == "step_limit" and trace.answer is None
    assert n_requests == 3 and trace.n_steps == 3 and trace.n_tool_calls == 3
    assert trace.tokens_estimated and trace.tokens > 0


def test_token_limit(tools):
    with ToolCallingServer(lambda body: {"tool_calls": [tool_call("c", "list_objects", {})]}) as srv:
        trace = run_agent("q?", _planner(srv), tools, max_steps=8, max_tokens=300)
        sent = [b["max_tokens"] for b in srv.bodies]
    assert trace.status == "token_limit" and trace.answer is None and trace.n_steps == 3  # 120 tokens a reply
    assert sent == [300, 180, 60]  # each reply bounded by what is left


def test_llm_errors(tools, monkeypatch):
    with ToolCallingServer(lambda body: (400, {"error": {"message": "tools are not supported"}})) as srv:
        trace = run_agent("q?", _planner(srv), tools)
    assert trace.status == "llm_error" and "HTTP 400: tools are not supported" in trace.error
    monkeypatch.setenv("SF_REASON_KEY", "sk-wrong")
    with (ToolCallingServer(lambda body: {"content": "x"}, api_key="sk-right") as srv,
          pytest.raises(ConfigError, match="the API key in SF_REASON_KEY was rejected")):
        run_agent("q?", _planner(srv), tools)
    with ToolCallingServer(lambda body: (500, {"error": {"message": "boom"}})) as srv:
        trace = run_agent("q?", _planner(srv), tools)
        assert len(srv.requests) == 2  # one retry
    assert trace.status == "llm_error" and "gave up after 2 attempts" in trace.error


# ---------------------------------------------------------------- ReAct

def test_react_over_an_endpoint(tools):
    def script(body):
        assert "tools" not in body and body["stop"] == ["\nObservation:"]
        turns = [m for m in body["messages"] if m["role"] == "user"]
        if len(turns) == 1:
            return {"content": 'Thought: measure it\nAction: measure {"quantity": "height", "a": "the green plant"}'}
        return {"content": "Thought: done\nFinal Answer: " + turns[-1]["content"]}

    with ToolCallingServer(script) as srv:
        trace = run_agent("How tall is the plant?", _planner(srv, "react+openai:fake-llm"), tools)
        system = srv.bodies[0]["messages"][0]["content"]
    assert trace.status == "answered" and trace.protocol == "react"
    assert trace.answer == 'Observation: {"quantity": "height", "value": 0.9, "unit": "m"}'
    assert "- measure(quantity, a, b?):" in system and "Final Answer:" in system


@pytest.mark.parametrize(("text", "name", "args", "answer", "error"), [
    ('Thought: x\nAction: measure {"quantity": "distance", "a": 1, "b": 2}', "measure",
     {"quantity": "distance", "a": 1, "b": 2}, None, None),
    ('Action: measure\nAction Input: {"quantity": "width", "a": "the mug"}', "measure",
     {"quantity": "width", "a": "the mug"}, None, None),
    ("Thought: list\nAction: list_objects", "list_objects", {}, None, None),
    ('Action: calculate {"expression": "1+1"}\nObservation: {"value": 3}\nFinal Answer: 3', "calculate",
     {"expression": "1+1"}, None, None),  # an invented observation and what follows are dropped
    ("Thought: easy\nFinal Answer: yes, it fits.", None, None, "yes, it fits.", None),
    ("final answer: 2 m", None, None, "2 m", None),
    ('Action: measure {"quantity": "width", "a": 1', "measure", {}, None, "not valid JSON"),
    ("Action: measure quantity=width a=1", "measure", {}, None, "must be a JSON object after the tool name"),
    ('Action: measure ["width", 1]', "measure", {}, None, "must be a JSON object"),
    ("I think the answer is 3.", None, None, None, 'no "Action: <tool> {json arguments}"'),
    ("Final Answer:   ", None, None, None, "the Final Answer is empty"),
    ("Action: {\"a\": 1}", None, None, None, "names no tool"),
])
def test_parse_react(text, name, args, answer, error):
    step = parse_react(text, "r1")
    assert step.answer == answer
    if name is None:
        assert step.tool_calls == ()
        assert (step.error is None) if error is None else (error in step.error)
    else:
        (call,) = step.tool_calls
        assert call.id == "r1" and call.name == name and call.args == args
        assert (call.error is None) if error is None else (error in call.error)


def test_react_malformed_reply_is_an_observation(tools):
    replies = iter(["I am not sure.", 'Action: measure {"quantity": "width", "a": 2}', "Final Answer: 0.4 m"])
    with ToolCallingServer(lambda body: {"content": next(replies)}) as srv:
        trace = run_agent("How wide is the box?", _planner(srv, "react+openai:fake-llm"), tools)
        second = srv.bodies[1]["messages"]
    assert trace.status == "answered" and trace.answer == "0.4 m" and trace.n_steps == 3
    assert second[-1]["role"] == "user" and second[-1]["content"].startswith('Observation: Error: no "Action:')


def test_unknown_llm_spec():
    with pytest.raises(ConfigError, match="--llm 'gpt4': unknown form; use one of: openai:MODEL"):
        build_planner("gpt4")
    assert isinstance(build_planner("react+openai:m@http://127.0.0.1:9/v1"), ReActPlanner)
    assert isinstance(build_planner("openai:m@http://127.0.0.1:9/v1").chat, OpenAIChat)


def test_make_tools_modes(tools):
    with pytest.raises(ConfigError, match="--tools vlm: needs a VLM"):
        make_tools("vlm", graph=graph())
    with pytest.raises(ConfigError, match="--tools graph: needs a scene graph"):
        make_tools("graph")
    assert "ask_vlm" not in make_tools("graph", graph=graph()).names
    vlm_only = make_tools("vlm", graph=graph(), references=REFS, vlm=object(), image=b"x")
    assert "measure" not in vlm_only.names and "ask_vlm" in vlm_only.names
    assert vlm_only.call("list_objects", {})["objects"][0] == {"id": 1, "caption": "red mug",
                                                               "reference": "the red mug"}
    both = make_tools("both", graph=graph(), vlm=object(), image=b"x")
    assert {"measure", "ask_vlm", "triangle"} <= set(both.names)


# ---------------------------------------------------------------- a tiny local transformers chat model

def _tiny_chat_model(folder):
    import torch  # noqa: F401
    import transformers as tf

    from tests.eval.tiny_vlms import QWEN_CHAT_TEMPLATE, _randomize, _tokenizer

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
    tok = _tokenizer(special, bos=None, eos="<|im_end|>", pad="<|endoftext|>", unk="<unk>")
    tok.chat_template = QWEN_CHAT_TEMPLATE
    ids = tok.get_vocab()
    config = tf.Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                            eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                            tie_word_embeddings=False)
    model = tf.Qwen2ForCausalLM(config).eval()
    _randomize(model, 0, tok)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_tiny_local_chat_model_runs_the_react_loop(tools, tmp_path):
    pytest.importorskip("transformers")
    folder = _tiny_chat_model(tmp_path / "tiny-chat")
    planner = build_planner(f"hf:{folder}", device="cpu")
    assert planner.protocol == "react" and planner.name == f"hf:{folder}"
    trace = run_agent("How far is the mug from the box?", planner, tools, max_steps=2, reply_tokens=6)
    assert trace.status in ("answered", "step_limit")  # random weights: only the loop is checked
    llm_steps = [s for s in trace.steps if s.role == "llm"]
    assert 1 <= len(llm_steps) <= 2 and all(s.tokens and s.tokens > 6 for s in llm_steps)
    assert trace.tokens == sum(s.tokens for s in llm_steps) and not trace.tokens_estimated
    if trace.status == "step_limit":
        assert trace.answer is None and all(s.error or s.tool_calls for s in llm_steps)
    json.loads(trace.to_json())
    with pytest.raises(ConfigError, match="cannot load"):
        run_agent("q?", build_planner(f"hf:{tmp_path / 'missing'}", device="cpu"), tools)
