"""`spatialforge eval build / run / score / compare` end to end: resume, oracle scores, any model."""

from __future__ import annotations

import json

import pytest

from spatialforge.cli.main import main
from spatialforge.errors import ConfigError
from spatialforge.eval.benchmarks import load_benchmark
from spatialforge.eval.models.base import ModelAnswer
from spatialforge.eval.runner import read_records, run_eval

from .fake_openai_server import FakeOpenAIServer


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "B"
    assert main(["eval", "build", "--out", str(out), "--n", "4", "--qa-per-image", "8", "--no-progress"]) == 0
    return out


def _summary(folder):
    return json.loads((folder / "summary.json").read_text())


def test_reference_answers_score_perfectly(bench_dir, tmp_path, capsys):
    """Our own answers, scored through the JSONL path, are all right: parsing and metrics agree with the truth."""
    bench = load_benchmark(str(bench_dir))
    answers = tmp_path / "answers.jsonl"
    lines = [json.dumps({"id": it.id, "answer": it.reference_answer}) for it in bench.items]
    answers.write_text("\n".join([*lines[:-2], "{not json", json.dumps({"answer": "no id"})]) + "\n")
    out = tmp_path / "ref"
    assert main(["eval", "score", "--benchmark", str(bench_dir), "--answers", str(answers), "--out", str(out),
                 "--name", "reference"]) == 0
    s = _summary(out)
    info = s["answers_file"]
    assert info["missing"] == 2 and len(info["malformed_lines"]) == 2 and info["unknown_ids"] == 0
    n = len(bench)
    overall = s["overall"]
    assert overall["n"] == n
    qual, quant = overall["qualitative"], overall["quantitative"]
    # every answered question is right; the two missing ones count as unanswered
    n_qual, n_quant = qual["n"], quant["n"]
    missing = bench.items[-2:]
    miss_qual = sum(1 for it in missing if it.kind != "quantitative")
    assert qual["accuracy"]["value"] == pytest.approx((n_qual - miss_qual) / n_qual)
    m_quant = sum(1 for it in missing if it.kind == "quantitative" and it.unit in ("m", "ratio"))
    if n_quant:
        assert quant["within_1.25x"]["value"] == pytest.approx((n_quant - m_quant) / n_quant)
    recs = read_records(out / "records.jsonl")
    assert len(recs) == n and sum(1 for r in recs.values() if r["status"] == "no_answer") == 2
    assert "reference" in capsys.readouterr().out


class _Scripted:
    """A model that answers with the reference answer, or a fixed text, and can be made to crash."""

    name = "scripted"

    def __init__(self, text=None, crash_after=None):
        self.text, self.crash_after, self.asked = text, crash_after, []

    def answer(self, items, *, progress=False, use_image=True):
        if self.crash_after is not None and len(self.asked) >= self.crash_after:
            raise KeyboardInterrupt
        self.asked += [it.id for it in items]
        return [ModelAnswer(it.id, self.text if self.text is not None else it.reference_answer) for it in items]

    def describe(self):
        return {"name": self.name}


def test_interrupted_run_resumes_without_reasking(bench_dir, tmp_path):
    bench = load_benchmark(str(bench_dir))
    out = tmp_path / "run"
    first = _Scripted(crash_after=10)
    with pytest.raises(KeyboardInterrupt):
        run_eval(bench, first, out, chunk_size=5, progress=False)
    assert len(first.asked) == 10 and len(read_records(out / "records.jsonl")) == 10
    with (out / "records.jsonl").open("a") as f:
        f.write('{"id": "torn')  # a write cut short by the interruption
    second = _Scripted()
    summary = run_eval(bench, second, out, chunk_size=5, progress=False)
    assert sorted(second.asked) == sorted(it.id for it in bench.items[10:])  # only the rest was asked
    assert summary["overall"]["n"] == len(bench)
    assert summary["overall"]["qualitative"]["accuracy"]["value"] == 1.0
    run = json.loads((out / "run.json").read_text())
    assert run["resumed"] == 10 and run["asked"] == len(bench) - 10
    # a third run asks nothing
    third = _Scripted()
    run_eval(bench, third, out, progress=False)
    assert third.asked == []


def test_failed_calls_count_as_unanswered_and_are_retried(bench_dir, tmp_path):
    bench = load_benchmark(str(bench_dir)).subset(limit=6)

    class Flaky(_Scripted):
        def answer(self, items, *, progress=False, use_image=True):
            self.asked += [it.id for it in items]
            return [ModelAnswer(it.id, None, error="HTTP 503: busy") for it in items]

    out = tmp_path / "flaky"
    s = run_eval(bench, Flaky(), out, progress=False)
    assert s["overall"]["answered"]["value"] == 0.0
    recs = read_records(out / "records.jsonl")
    assert all(r["error"] == "HTTP 503: busy" for r in recs.values())
    retry = _Scripted()
    run_eval(bench, retry, out, progress=False)
    assert sorted(retry.asked) == sorted(it.id for it in bench.items)  # errors are asked again


def test_openai_endpoint_oracle_and_prior_baseline_then_compare(bench_dir, tmp_path, capsys):
    bench = load_benchmark(str(bench_dir))
    by_question = {it.question: it.reference_answer for it in bench.items}

    def oracle(user_text: str) -> str:
        return next(a for q, a in by_question.items() if q in user_text)

    with FakeOpenAIServer(oracle=oracle) as server:
        out = tmp_path / "api"
        rc = main(["eval", "run", "--benchmark", str(bench_dir), "--model", f"openai:oracle@{server.base_url}",
                   "--out", str(out), "--concurrency", "3", "--no-progress"])
        assert rc == 0
        assert len(server.requests) == len(bench)
        assert all(r.image_urls for r in server.requests)  # the image went with every question
    api = _summary(out)
    assert api["overall"]["qualitative"]["accuracy"]["value"] == 1.0
    if api["overall"]["quantitative"]["n"]:
        assert api["overall"]["quantitative"]["within_1.25x"]["value"] == 1.0
    prior = tmp_path / "prior"
    assert main(["eval", "run", "--benchmark", str(bench_dir), "--model", "prior", "--out", str(prior),
                 "--no-progress"]) == 0
    p = _summary(prior)
    assert p["overall"]["qualitative"]["accuracy"]["value"] < 1.0  # a fixed guess is not the truth
    capsys.readouterr()
    table = tmp_path / "cmp.md"
    assert main(["eval", "compare", str(out), str(prior / "summary.json"), "--out", str(table)]) == 0
    text = table.read_text()
    assert "oracle" in text and "prior" in text


def test_limit_types_and_errors(bench_dir, tmp_path, capsys):
    out = tmp_path / "lim"
    assert main(["eval", "run", "--benchmark", str(bench_dir), "--model", "prior", "--out", str(out), "--limit", "5",
                 "--kinds", "yes_no", "--no-progress"]) == 0
    recs = read_records(out / "records.jsonl")
    assert len(recs) <= 5 and all(r["kind"] == "yes_no" for r in recs.values())
    capsys.readouterr()
    assert main(["eval", "run", "--benchmark", "nosuch:thing", "--model", "prior", "--out", str(out)]) == 2
    assert "accepted forms" in capsys.readouterr().err
    assert main(["eval", "run", "--benchmark", str(bench_dir), "--model", "gpt5", "--out", str(out)]) == 2
    assert "openai:" in capsys.readouterr().err
    assert main(["eval", "run", "--benchmark", str(bench_dir), "--model", "prior", "--out", str(out),
                 "--types", "no_such_type"]) == 2
    assert "no question type no_such_type" in capsys.readouterr().err
    assert main(["eval", "score", "--benchmark", str(bench_dir), "--answers", str(tmp_path / "none.jsonl"),
                 "--out", str(tmp_path / "scores")]) == 2
    assert "cannot read the answers" in capsys.readouterr().err
    assert not (tmp_path / "scores").exists()  # a failed first run leaves nothing behind
    assert main(["eval", "score", "--benchmark", str(bench_dir), "--answers", str(tmp_path / "none.jsonl"),
                 "--out", str(out)]) == 2  # the folder of a run is not a scores folder
    assert "holds spatialforge 'eval-run' output" in capsys.readouterr().err


def test_local_hf_vlm_through_the_cli(bench_dir, tmp_path):
    pytest.importorskip("torch")
    from .tiny_vlms import build_tiny_vlm

    folder = build_tiny_vlm("qwen2_5_vl", tmp_path / "qwen")
    out = tmp_path / "hf"
    assert main(["eval", "run", "--benchmark", str(bench_dir), "--model", f"hf:{folder}", "--out", str(out),
                 "--limit", "4", "--device", "cpu", "--batch-size", "2", "--max-new-tokens", "8",
                 "--no-progress"]) == 0
    recs = read_records(out / "records.jsonl")
    assert len(recs) == 4 and all(r["answer"] is not None for r in recs.values())
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["model_id"] == str(folder)
    blind = tmp_path / "blind"
    assert main(["eval", "run", "--benchmark", str(bench_dir), "--model", f"blind:hf:{folder}", "--out", str(blind),
                 "--limit", "4", "--device", "cpu", "--max-new-tokens", "8", "--no-progress"]) == 0
    assert len(read_records(blind / "records.jsonl")) == 4


def test_a_run_folder_belongs_to_one_model_and_benchmark(bench_dir, tmp_path, capsys):
    bench = load_benchmark(str(bench_dir)).subset(limit=6)
    out = tmp_path / "one"
    run_eval(bench, _Scripted(text="yes"), out, progress=False)

    class Other(_Scripted):
        name = "another-model"

    with pytest.raises(ConfigError, match=r"cannot resume: the model changed \(scripted -> another-model\); use a new "
                                          r"--out or --overwrite"):
        run_eval(bench, Other(), out, progress=False)
    with pytest.raises(ConfigError, match=r"cannot resume: the benchmark changed \(6 -> 7 questions\)"):
        run_eval(load_benchmark(str(bench_dir)).subset(limit=7), _Scripted(text="yes"), out, progress=False)
    with pytest.raises(ConfigError, match=r"cannot resume: the image setting changed \(with the image -> without"):
        run_eval(bench, _Scripted(text="yes"), out, progress=False, use_image=False)
    # through the CLI: one line, and --overwrite starts over
    cli_out = tmp_path / "cli"
    args = ["eval", "run", "--benchmark", str(bench_dir), "--limit", "4", "--out", str(cli_out), "--no-progress"]
    assert main([*args, "--model", "prior"]) == 0
    capsys.readouterr()
    assert main([*args, "--model", "blind:prior"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot resume: the model changed (prior -> blind:prior)" in err
    assert main([*args, "--model", "blind:prior", "--overwrite"]) == 0


def test_a_torn_first_write_does_not_break_the_folder(bench_dir, tmp_path):
    bench = load_benchmark(str(bench_dir)).subset(limit=5)
    out = tmp_path / "torn"
    out.mkdir()
    (out / "records.jsonl").write_text('{"id": "scene_0')  # the very first write was cut short
    s = run_eval(bench, _Scripted(), out, progress=False)
    assert s["overall"]["n"] == 5 and len(read_records(out / "records.jsonl")) == 5


def test_null_answers_count_as_missing(bench_dir, tmp_path):
    bench = load_benchmark(str(bench_dir))
    answers = tmp_path / "a.jsonl"
    answers.write_text("".join(json.dumps({"id": it.id, "answer": None}) + "\n" for it in bench.items[:3]))
    from spatialforge.eval.runner import score_answers

    s = score_answers(bench, answers, tmp_path / "o", n_boot=10)
    assert s["answers_file"]["missing"] == len(bench)


def test_another_endpoint_or_other_generation_settings_refuse_the_old_answers(bench_dir, tmp_path, capsys):
    """The model name alone (openai:fake) does not tell two endpoints or two settings apart: the fingerprint does."""
    from spatialforge.eval.models import build_model

    out = tmp_path / "api"
    args = ["eval", "run", "--benchmark", str(bench_dir), "--limit", "4", "--out", str(out), "--no-progress"]
    with FakeOpenAIServer() as first, FakeOpenAIServer() as second:
        assert main([*args, "--model", f"openai:fake@{first.base_url}"]) == 0
        assert len(first.requests) == 4
        assert main([*args, "--model", f"openai:fake@{first.base_url}", "--concurrency", "1"]) == 0  # resumed
        assert len(first.requests) == 4
        capsys.readouterr()
        assert main([*args, "--model", f"openai:fake@{second.base_url}"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and (f"cannot resume: the model changed (base_url {first.base_url} -> "
                                         f"{second.base_url}); use a new --out or --overwrite") in err
        assert main([*args, "--model", f"openai:fake@{first.base_url}", "--max-new-tokens", "64"]) == 2
        assert "cannot resume: the model changed (max_tokens 128 -> 64)" in capsys.readouterr().err
        bench = load_benchmark(str(bench_dir)).subset(limit=4)
        with pytest.raises(ConfigError, match=r"the model changed \(temperature 0.0 -> 0.7\)"):
            run_eval(bench, build_model(f"openai:fake@{first.base_url}", temperature=0.7), out, progress=False)
        assert second.requests == [] and len(first.requests) == 4  # nothing was asked of a refused model
        assert main([*args, "--model", f"openai:fake@{second.base_url}", "--overwrite"]) == 0
        assert len(second.requests) == 4
