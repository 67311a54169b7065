"""`spatialforge eval build / run / score / compare`: output folders are safe, failures leave no half
state, and every value is checked at parse time naming the flag (issue 8)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from spatialforge.cli.main import main
from spatialforge.eval.benchmarks import BENCHMARK_OUTPUT, load_benchmark
from spatialforge.eval.models.openai_api import OpenAICompatibleModel
from spatialforge.eval.runner import RUN_OUTPUT, SCORE_OUTPUT, read_records
from spatialforge.io.outdir import MARKER

from .fake_openai_server import FakeOpenAIServer

KEY = "sk-test-eval-0123456789"


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("SF_EVAL_KEY", raising=False)


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "B"
    assert main(["eval", "build", "--out", str(out), "--n", "2", "--qa-per-image", "6", "--no-progress"]) == 0
    return out


def _unmarked(folder):
    folder.mkdir(parents=True)
    (folder / "thesis.txt").write_text("years of work")
    return folder


def _run(bench_dir, out, *extra, model="prior"):
    return main(["eval", "run", "--benchmark", str(bench_dir), "--model", model, "--out", str(out), "--limit", "3",
                 "--no-progress", *extra])


def _err_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line
    return err


# ----------------------------------------------------------------------------- eval build
def test_build_claims_its_folder_and_overwrite_deletes_only_what_it_wrote(bench_dir, tmp_path, capsys, monkeypatch):
    # (c) every top-level entry of a real build is one the kind owns (so --overwrite can clean it)
    assert (bench_dir / MARKER).is_file()
    assert all(BENCHMARK_OUTPUT.owned(e.name) for e in bench_dir.iterdir()), sorted(os.listdir(bench_dir))
    # (a) an unmarked non-empty folder is refused with and without --overwrite; its files survive
    mine = _unmarked(tmp_path / "mine")
    for extra in ([], ["--overwrite"]):
        assert main(["eval", "build", "--out", str(mine), "--n", "1", "--no-progress", *extra]) == 2
        assert "not written by spatialforge" in _err_line(capsys)
    assert sorted(os.listdir(mine)) == ["thesis.txt"]
    # an old benchmark folder (benchmark.json, no marker) is no longer deleted by --overwrite
    legacy = _unmarked(tmp_path / "legacy")
    (legacy / "benchmark.json").write_text("{}")
    assert main(["eval", "build", "--out", str(legacy), "--n", "1", "--overwrite", "--no-progress"]) == 2
    assert sorted(os.listdir(legacy)) == ["benchmark.json", "thesis.txt"]
    capsys.readouterr()
    # (d) a finished benchmark is refused without --overwrite; --overwrite keeps what a user put there
    small = tmp_path / "small"
    args = ["eval", "build", "--out", str(small), "--n", "1", "--qa-per-image", "2", "--no-progress"]
    assert main(args) == 0
    (small / "my_notes.md").write_text("keep me")
    assert main(args) == 2
    assert "already holds a benchmark" in _err_line(capsys)
    assert main([*args, "--overwrite"]) == 0
    assert (small / "my_notes.md").read_text() == "keep me" and (small / "benchmark.json").is_file()
    assert "my_notes.md" in capsys.readouterr().out
    # (b) no protected place: the working directory
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "build", "--out", ".", "--n", "1", "--no-progress"]) == 2
    assert "working directory" in _err_line(capsys)


# ----------------------------------------------------------------------------- eval run
def test_run_refuses_unmarked_folders_and_its_inputs(bench_dir, tmp_path, capsys):
    mine = _unmarked(tmp_path / "mine")
    for extra in ([], ["--overwrite"]):
        assert _run(bench_dir, mine, *extra) == 2
        assert "not written by spatialforge" in _err_line(capsys)
    assert sorted(os.listdir(mine)) == ["thesis.txt"]
    # --out equal to, inside or containing the benchmark
    for out, what in ((bench_dir, "is the input"), (bench_dir / "runs" / "r", "inside the input"),
                      (bench_dir.parent, "contains the input")):
        assert _run(bench_dir, out) == 2
        assert what in _err_line(capsys)
    assert not (bench_dir / "runs").exists()
    # ... or a local model folder (refused before the model is built or loaded)
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    assert _run(bench_dir, model_dir / "run", model=f"blind:hf:{model_dir}") == 2
    assert "inside the input" in _err_line(capsys)
    assert sorted(os.listdir(model_dir)) == []


def test_run_folder_is_owned_resumed_and_overwritten_keeping_foreign_files(bench_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(bench_dir, out) == 0
    assert all(RUN_OUTPUT.owned(e.name) for e in out.iterdir()), sorted(os.listdir(out))
    assert {"records.jsonl", "summary.json", "run.json", "fingerprint.json"} <= set(os.listdir(out))
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert _run(bench_dir, out) == 0  # resumed: nothing asked again
    assert "resumed" in capsys.readouterr().out
    assert json.loads((out / "run.json").read_text())["asked"] == 0
    assert _run(bench_dir, out, "--overwrite") == 0
    assert json.loads((out / "run.json").read_text())["asked"] == 3
    assert (out / "notes.txt").read_text() == "mine"


def test_run_files_have_the_umask_permissions(bench_dir, tmp_path):
    old = os.umask(0o027)
    try:
        out = tmp_path / "perm"
        assert _run(bench_dir, out) == 0
        with (out / "records.jsonl").open("a") as f:
            f.write('{"id": "torn')  # the next run compacts the records through a temporary file
        assert _run(bench_dir, out) == 0
    finally:
        os.umask(old)
    for entry in out.iterdir():
        assert stat.S_IMODE(entry.stat().st_mode) == 0o640, entry.name


def test_a_first_call_that_fails_leaves_nothing_and_the_same_command_then_works(bench_dir, tmp_path, capsys,
                                                                              monkeypatch):
    out = tmp_path / "api"
    with FakeOpenAIServer(api_key=KEY) as server:
        args = ["--model", f"openai:fake@{server.base_url}", "--api-key-env", "SF_EVAL_KEY", "--concurrency", "1",
                "--max-retries", "3"]
        assert main(["eval", "run", "--benchmark", str(bench_dir), "--out", str(out), "--limit", "3",
                     "--no-progress", *args]) == 2
        err = _err_line(capsys)
        assert "API key is missing" in err and "SF_EVAL_KEY" in err
        assert len(server.requests) == 1  # no retry, no other question sent
        assert not out.exists()  # no half-claimed folder (before: one holding fingerprint.json)
        monkeypatch.setenv("SF_EVAL_KEY", KEY)
        assert main(["eval", "run", "--benchmark", str(bench_dir), "--out", str(out), "--limit", "3",
                     "--no-progress", *args]) == 0
    assert len(read_records(out / "records.jsonl")) == 3
    # a benchmark that fails to load after the folder was claimed leaves nothing either; an existing empty folder
    # stays as it was
    for target in (tmp_path / "new", tmp_path / "empty"):
        if target.name == "empty":
            target.mkdir()
        assert main(["eval", "run", "--benchmark", str(tmp_path / "no-such-bench"), "--model", "prior", "--out",
                     str(target), "--no-progress"]) == 2
        assert "accepted forms" in _err_line(capsys)
    assert not (tmp_path / "new").exists() and os.listdir(tmp_path / "empty") == []


def test_the_default_endpoint_without_a_key_fails_at_once(bench_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    sent = []
    monkeypatch.setattr(OpenAICompatibleModel, "_post", lambda self, *a: sent.append(a))
    out = tmp_path / "gpt"
    assert _run(bench_dir, out, model="openai:gpt-4o") == 2
    err = _err_line(capsys)
    assert "API key is missing" in err and "OPENAI_API_KEY" in err
    assert _run(bench_dir, out, "--api-key-env", "SF_EVAL_KEY", model="openai:gpt-4o") == 2
    assert "SF_EVAL_KEY" in _err_line(capsys)
    assert sent == [] and not out.exists()


# ----------------------------------------------------------------------------- eval score
def _answers(bench_dir, path, n=None):
    items = load_benchmark(str(bench_dir)).items[:n]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": it.id, "answer": it.reference_answer}) + "\n" for it in items))
    return path


def test_score_claims_its_folder_and_refuses_its_inputs(bench_dir, tmp_path, capsys):
    answers = _answers(bench_dir, tmp_path / "a" / "answers.jsonl")

    def score(out, *extra, answers=answers):
        return main(["eval", "score", "--benchmark", str(bench_dir), "--answers", str(answers), "--out", str(out),
                     *extra])

    mine = _unmarked(tmp_path / "mine")
    for extra in ([], ["--overwrite"]):
        assert score(mine, *extra) == 2
        assert "not written by spatialforge" in _err_line(capsys)
    assert sorted(os.listdir(mine)) == ["thesis.txt"]
    for out, what in ((answers, "is the input"), (answers.parent, "contains the input"),
                      (bench_dir / "scores", "inside the input")):
        assert score(out) == 2
        assert what in _err_line(capsys)
    assert answers.read_text().count("\n") > 0 and not (bench_dir / "scores").exists()
    out = tmp_path / "scores"
    assert score(out) == 0
    assert all(SCORE_OUTPUT.owned(e.name) for e in out.iterdir()), sorted(os.listdir(out))
    (out / "notes.txt").write_text("mine")
    assert score(out) == 0  # the same answers again: rewritten
    other = _answers(bench_dir, tmp_path / "other.jsonl", n=2)
    capsys.readouterr()
    assert score(out, answers=other) == 2  # other answers do not silently replace these scores
    assert "--overwrite" in _err_line(capsys)
    assert score(out, "--overwrite", answers=other) == 0
    assert json.loads((out / "summary.json").read_text())["answers_file"]["answers"] == 2
    assert (out / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- eval compare
@pytest.fixture(scope="module")
def two_runs(bench_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for model in ("prior", "blind:prior"):
        assert main(["eval", "run", "--benchmark", str(bench_dir), "--model", model, "--out",
                     str(root / model.replace(":", "-")), "--no-progress"]) == 0
    return root / "prior", root / "blind-prior"


def test_compare_prints_the_overall_table_and_breakdowns_on_request(two_runs, capsys):
    a, b = two_runs
    capsys.readouterr()
    assert main(["eval", "compare", str(a), str(b / "summary.json")]) == 0
    out = capsys.readouterr().out
    assert "| overall | accuracy |" in out and "prior" in out and "blind:prior" in out
    assert "type:" not in out and "kind:" not in out
    assert main(["eval", "compare", str(a), str(b), "--by", "type"]) == 0
    out = capsys.readouterr().out
    types = json.loads((a / "summary.json").read_text())["by_type"]
    assert "## Model comparison by type" in out and all(f"| type: {t} | n |" in out for t in types)
    assert "kind:" not in out
    assert main(["eval", "compare", str(a), str(b), "--by", "kind", "--by", "type"]) == 0
    out = capsys.readouterr().out
    assert out.index("| kind: yes_no |") < out.index("| type: ") and "| overall | n |" in out
    assert main(["eval", "compare", str(a), "--by", "scene"]) == 2
    assert "argument --by" in _err_line(capsys)


def test_compare_out_file_is_never_an_input(two_runs, tmp_path, capsys):
    a, b = two_runs
    summary = (a / "summary.json").read_text()
    for inputs, out, what in (([a / "summary.json", b], a / "summary.json", "is the input"),
                              ([a, b], a / "cmp.md", "inside the input"),
                              ([a, b], tmp_path, "is a folder"), ([a, b], tmp_path / "cmp.txt", ".md")):
        assert main(["eval", "compare", *map(str, inputs), "--out", str(out)]) == 2
        assert what in _err_line(capsys)
    assert (a / "summary.json").read_text() == summary and not (a / "cmp.md").exists()
    assert main(["eval", "compare", str(a), str(b), "--out", str(tmp_path / "cmp.md")]) == 0
    assert "| overall | accuracy |" in (tmp_path / "cmp.md").read_text()


# ----------------------------------------------------------------------------- values checked at parse time
@pytest.mark.parametrize(("extra", "flag"), [
    (["--limit", "0"], "--limit"), (["--chunk-size", "0"], "--chunk-size"), (["--concurrency", "0"], "--concurrency"),
    (["--timeout", "0"], "--timeout"), (["--max-retries", "-1"], "--max-retries"), (["--seed", "-1"], "--seed"),
    (["--device", "gpu"], "--device"), (["--dtype", "float8"], "--dtype"), (["--batch-size", "0"], "--batch-size"),
    (["--kinds", "yes_no,maybe"], "--kinds"), (["--types", "a,,b"], "--types"),
])
def test_run_values_fail_at_parse_time_naming_the_flag(bench_dir, tmp_path, capsys, extra, flag):
    assert _run(bench_dir, tmp_path / "r", *extra) == 2
    assert f"argument {flag}:" in _err_line(capsys)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("extra", "flag"), [
    (["--n", "0"], "--n"), (["--qa-per-image", "0"], "--qa-per-image"), (["--noise", "-0.1"], "--noise"),
    (["--seed", "-1"], "--seed"),
])
def test_build_values_fail_at_parse_time_naming_the_flag(tmp_path, capsys, extra, flag):
    assert main(["eval", "build", "--out", str(tmp_path / "b"), *extra]) == 2
    assert f"argument {flag}:" in _err_line(capsys)


def test_unknown_types_and_kinds_are_named_with_the_known_ones(bench_dir, tmp_path, capsys):
    types = sorted(load_benchmark(str(bench_dir)).counts()["per_type"])
    assert _run(bench_dir, tmp_path / "r", "--types", f"{types[0]},foo,bar") == 2
    err = _err_line(capsys)
    assert "--types" in err and "foo, bar" in err and ", ".join(types) in err
    assert _run(bench_dir, tmp_path / "r", "--kinds", "foo") == 2
    err = _err_line(capsys)
    assert "argument --kinds" in err and "foo" in err and "quantitative, yes_no, choice" in err
    assert not (tmp_path / "r").exists()


def test_a_model_flag_the_backend_does_not_take_names_the_flag(bench_dir, tmp_path, capsys):
    assert _run(bench_dir, tmp_path / "r", "--concurrency", "2") == 2
    assert "--concurrency does not apply to prior models" in _err_line(capsys)
    assert _run(bench_dir, tmp_path / "r", "--device", "cpu", model="openai:m@http://127.0.0.1:9/v1") == 2
    err = _err_line(capsys)
    assert "--device does not apply to openai models" in err and "--concurrency" in err
