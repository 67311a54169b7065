"""``spatialforge reason`` end to end on a synthetic scene folder and a photo, with a fake LLM endpoint."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from spatialforge.cli.options import Parser
from spatialforge.cli.reason import add_reason_parser, cmd_reason
from spatialforge.errors import ConfigError, SpatialForgeError
from tests.eval.fake_openai_server import FakeOpenAIServer
from tests.reason.fake_llm import ToolCallingServer, tool_call, tool_messages


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from spatialforge.synth import generate_scene, write_scene

    return write_scene(generate_scene(0, seed=3), tmp_path_factory.mktemp("scenes"))


def _parser():
    p = Parser(prog="spatialforge")
    sub = p.add_subparsers(dest="command")
    add_reason_parser(sub)
    return p


def _run(argv):
    args = _parser().parse_args(["reason", *map(str, argv)])
    return args.func(args)


def _measure_first_two(body):
    done = tool_messages(body)
    if not done:
        return {"tool_calls": [tool_call("c0", "list_objects", {})]}
    if len(done) == 1:
        objs = json.loads(done[0]["content"])["objects"]
        return {"tool_calls": [tool_call("c1", "measure", {"quantity": "distance", "a": objs[0]["reference"],
                                                           "b": objs[1]["id"]})]}
    return {"content": f"{json.loads(done[1]['content'])['value']:.3f} m"}


def test_reason_on_a_scene_folder(scene, tmp_path, capsys):
    from spatialforge.cli.reason import _load_scene

    graph, refs, _ = _load_scene(scene)
    a, b = graph.objects[:2]
    import numpy as np
    truth = float(np.linalg.norm(a.center - b.center))
    out = tmp_path / "trace.json"
    with ToolCallingServer(_measure_first_two) as srv:
        rc = _run([scene, f"How far is {refs[a.id]} from {refs[b.id]}?", "--llm", f"openai:fake@{srv.base_url}",
                   "--trace", out, "--max-retries", "0"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"Answer: {truth:.3f} m" in printed and "-> list_objects() =>" in printed and f"Trace: {out}" in printed
    data = json.loads(out.read_text())
    assert data["status"] == "answered" and data["tools"] == "graph" and data["n_tool_calls"] == 2
    measured = [s for s in data["steps"] if s["role"] == "tool"][1]["result"]
    assert measured == {"quantity": "distance", "value": pytest.approx(truth, abs=1e-12), "unit": "m"}


def test_reason_step_limit_exits_1_and_keeps_the_trace(scene, tmp_path, capsys):
    out = tmp_path / "t.json"
    with ToolCallingServer(lambda body: {"tool_calls": [tool_call("c", "list_objects", {})]}) as srv:
        rc = _run([scene, "q?", "--llm", f"openai:fake@{srv.base_url}", "--max-steps", "2", "--trace", out])
    assert rc == 1
    captured = capsys.readouterr()
    assert "no answer (step_limit): no answer within --max-steps 2" in captured.err
    assert json.loads(out.read_text())["status"] == "step_limit"


def test_reason_on_a_photo_with_the_vlm(tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(photo)

    def llm(body):
        done = tool_messages(body)
        if not done:
            return {"tool_calls": [tool_call("c0", "ask_vlm", {"question": "How far is the mug from the chair?"})]}
        return {"content": "The VLM says " + json.loads(done[0]["content"])["answer"]}

    with ToolCallingServer(llm) as llm_srv, FakeOpenAIServer(oracle=lambda text: f"1.5 m ({text})") as vlm_srv:
        rc = _run([photo, "Is the mug far from the chair?", "--llm", f"openai:llm@{llm_srv.base_url}",
                   "--vlm", f"openai:vlm@{vlm_srv.base_url}", "--quiet"])
        vlm_request = vlm_srv.requests[0]
    assert rc == 0
    # the sub-question goes to the VLM verbatim (plain prompt), with the photo
    assert capsys.readouterr().out.strip() == "The VLM says 1.5 m (How far is the mug from the chair?)"
    assert vlm_request.user_text == "How far is the mug from the chair?" and len(vlm_request.image_urls) == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["--max-steps", "0"], "argument --max-steps: must be an integer >= 1, got '0'"),
    (["--tools", "magic"], "argument --tools: invalid choice: 'magic'"),
    (["--device", "gpu"], "argument --device: must be auto, cpu, cuda, cuda:N or mps"),
    (["--timeout", "-1"], "argument --timeout: must be a number > 0"),
])
def test_bad_options_fail_at_parse_time(scene, argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["reason", str(scene), "q?", "--llm", "openai:m", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_bad_inputs_are_one_line_errors(scene, tmp_path):
    photo = tmp_path / "p.png"
    Image.new("RGB", (8, 8)).save(photo)
    llm = ["--llm", "openai:m@http://127.0.0.1:9/v1"]
    cases = [
        ([tmp_path / "nope", "q?", *llm], "no such scene folder or image"),
        ([photo, "q?", *llm, "--tools", "graph"], "is a photo, which has no 3D scene graph; use --tools vlm"),
        ([photo, "q?", *llm], "--tools vlm: needs --vlm SPEC"),
        ([scene, "q?", *llm, "--tools", "both"], "--tools both: needs --vlm SPEC"),
        ([scene, "q?", *llm, "--vlm", "prior"], "--vlm: only used by --tools vlm or both"),
        ([scene, "q?", *llm, "--trace", scene / "trace.json"], "--trace"),
        ([scene, "q?", *llm, "--trace", tmp_path / "trace.txt"], "expected a .json file name"),
        ([scene, "q?", "--llm", "claude"], "--llm 'claude': unknown form"),
        ([scene, "q?", *llm, "--tools", "both", "--vlm", "bogus:x"], "--vlm: model spec 'bogus:x'"),
    ]
    for argv, message in cases:
        with pytest.raises(SpatialForgeError) as err:
            _run(argv)
        assert message in str(err.value), (argv, str(err.value))
        assert "\n" not in str(err.value)
    assert not (scene / "trace.json").exists()
    with pytest.raises(ConfigError):
        _run([tmp_path / "p.png", "q?", *llm, "--tools", "both", "--vlm", "prior"])


def test_help_names_every_option(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["reason", "--help"])
    text = capsys.readouterr().out
    for flag in ("--llm", "--tools", "--vlm", "--max-steps", "--max-tokens", "--reply-tokens", "--trace",
                 "--api-key-env", "--device", "--dtype"):
        assert flag in text
    assert "(default: 8)" in text and "react+openai:MODEL" in text
    assert cmd_reason.__doc__
