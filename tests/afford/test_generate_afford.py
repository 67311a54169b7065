"""Affordance questions through the real path: synth --parts -> generate --afford -> load -> eval score / run."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from spatialforge import __version__
from spatialforge.cli.main import main
from spatialforge.eval.benchmarks import load_spatialforge
from spatialforge.io.dataset import AFFORD_ROW_SCHEMA, ROW_SCHEMA, decode_mask_rle
from spatialforge.pipeline.generate import DATASET_OUTPUT, GenerateConfig

N_SCENES = 14


@pytest.fixture(scope="module")
def parts_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("parts") / "scenes"
    assert main(["synth", "--n", str(N_SCENES), "--parts", "--out", str(out), "--width", "320", "--height", "240",
                 "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def afford_out(parts_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("afford") / "dataset"
    assert main(["generate", str(parts_dir), "--out", str(out), "--afford", "--qa-per-image", "2",
                 "--no-progress"]) == 0
    return out


def _rows(out):
    return [r for f in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def _same_schema(path, schema):
    """The file's columns and Hugging Face features (its types, in full) are ``schema``'s."""
    read = pq.read_schema(path)
    return read.names == schema.names and read.metadata == schema.metadata


def _afford_items(out):
    bench = load_spatialforge(out)
    return bench, [i for i in bench.items if i.type.startswith("afford_")]


def _summary(folder):
    return json.loads((folder / "summary.json").read_text())


def test_generate_afford_writes_questions_truth_and_counts(afford_out, parts_dir):
    rows = _rows(afford_out)
    assert _same_schema(next((afford_out / "data").glob("*.parquet")), AFFORD_ROW_SCHEMA)
    points = [q for r in rows for q in r["qa"] if q["type"] == "afford_hold_point"]
    choices = [q for r in rows for q in r["qa"] if q["type"] == "afford_which_object"]
    assert len(points) >= 5 and len(choices) >= 2
    for row in rows:
        truth = {a["qa_id"]: a for a in row["afford"]}
        point_ids = [q["id"] for q in row["qa"] if q["kind"] == "point"]
        assert sorted(truth) == sorted(point_ids)  # exactly one afford entry per point question
        for q in row["qa"]:
            if q["kind"] != "point":
                continue
            a = truth[q["id"]]
            assert q["unit"] == "point" and q["value"] == a["part_id"] and a["action"] == "hold"
            parts = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(
                parts_dir / row["scene_id"] / "parts.png"))
            assert np.array_equal(decode_mask_rle(a["mask"]), parts == a["part_id"])  # the part's exact mask
            u, v = a["pixel"]
            assert parts[v, u] == a["part_id"] and f"({u}, {v})" in q["answer"]
        # the chat turns carry every question, the affordance ones too, in the order of qa
        asked = [m["content"][-1]["text"] for m in row["messages"] if m["role"] == "user"]
        assert asked == [q["question"] for q in row["qa"]]
    manifest = json.loads((afford_out / "manifest.json").read_text())
    c = manifest["counts"]
    with_parts = sum(1 for d in parts_dir.iterdir()
                     if d.is_dir() and json.loads((d / "ground_truth.json").read_text()).get("parts"))
    assert c["afford"] == {"scenes_with_parts": with_parts, "scenes_without_parts": N_SCENES - with_parts,
                           "without_parts_by_reason": {"no_parts": N_SCENES - with_parts} if with_parts < N_SCENES
                           else {},
                           "per_type": {"afford_hold_point": len(points), "afford_which_object": len(choices)}}
    assert c["per_kind"]["point"] == len(points) and manifest["config"]["afford"] is True
    # every top-level entry is one `generate` owns, so --overwrite can clean the folder
    assert all(DATASET_OUTPUT.owned(p.name) for p in afford_out.iterdir())


def test_without_afford_nothing_changes(parts_dir, afford_out, tmp_path):
    plain = tmp_path / "plain"
    assert main(["generate", str(parts_dir), "--out", str(plain), "--qa-per-image", "2", "--no-progress"]) == 0
    shard = next((plain / "data").glob("*.parquet"))
    assert _same_schema(shard, ROW_SCHEMA)  # the schema of earlier versions
    config = json.loads((plain / "config.json").read_text())
    assert "afford" not in config and "afford" not in json.loads((plain / "manifest.json").read_text())["counts"]
    run = json.loads((plain / "_state" / "run.json").read_text())
    # the fingerprint is computed as before this option existed, so earlier run folders still resume
    blob = json.dumps({"config": {k: config[k] for k in ("qa", "geometry", "shard_size")}, "version": __version__},
                      sort_keys=True)
    assert run["fingerprint"] == hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert "afford" not in GenerateConfig().to_dict()
    index = json.loads(next((plain / "_state").glob("shard-*.json")).read_text())
    assert not any(k.startswith("afford") for k in index)
    # the other questions are the same with --afford: it only appends its questions and its column
    with_afford = {r["scene_id"]: r for r in _rows(afford_out)}
    for row in _rows(plain):
        other = with_afford[row["scene_id"]]
        assert other["qa"][:len(row["qa"])] == row["qa"]
        assert other["messages"][:len(row["messages"])] == row["messages"]
        assert all(q["type"].startswith("afford_") for q in other["qa"][len(row["qa"]):])
        assert other["image"] == row["image"]
    for graph in (plain / "scene_graphs").iterdir():
        assert graph.read_bytes() == (afford_out / "scene_graphs" / graph.name).read_bytes()
    again = tmp_path / "again"
    assert main(["generate", str(parts_dir), "--out", str(again), "--qa-per-image", "2", "--no-progress"]) == 0
    assert next((again / "data").glob("*.parquet")).read_bytes() == shard.read_bytes()


def test_afford_is_part_of_the_fingerprint(parts_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["generate", str(parts_dir), "--out", str(out), "--qa-per-image", "2", "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "--afford"]) == 2  # resuming under the other setting is refused, naming it
    err = capsys.readouterr().err
    assert "cannot resume" in err and "afford" in err and err.count("\n") == 1
    assert main([*argv, "--afford", "--overwrite"]) == 0
    assert "afford" in _rows(out)[0]
    capsys.readouterr()
    assert main(argv) == 2 and "afford True -> None" in capsys.readouterr().err


def test_scenes_without_part_labels_are_counted_not_fatal(synth_dir, parts_dir, tmp_path, capsys):
    scenes = tmp_path / "scenes"
    shutil.copytree(synth_dir, scenes)  # synthetic scenes without parts
    no_truth = sorted(d for d in scenes.iterdir() if d.is_dir())[0]
    (no_truth / "ground_truth.json").unlink()  # as a real RGB-D scan: no ground truth at all
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["generate", str(scenes), "--out", str(out), "--afford", "--no-progress"]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "spatialforge synth --parts" in line]
    assert len(lines) == 1 and "none of the 6 accepted scenes has part labels" in lines[0]
    afford = json.loads((out / "manifest.json").read_text())["counts"]["afford"]
    assert afford["scenes_with_parts"] == 0
    assert afford["without_parts_by_reason"] == {"no_ground_truth": 1, "no_parts": 5}
    assert "0 scenes with part labels, 6 without (no_ground_truth 1, no_parts 5)" in captured.out
    assert all(r["afford"] == [] for r in _rows(out))
    # a scene whose parts cannot be read keeps its other questions; the reason is one line, the run goes on
    broken = tmp_path / "broken"
    shutil.copytree(parts_dir, broken)
    victim = next(d for d in sorted(broken.iterdir())
                  if d.is_dir() and json.loads((d / "ground_truth.json").read_text()).get("parts"))
    (victim / "parts.png").unlink()
    out2 = tmp_path / "out2"
    capsys.readouterr()
    assert main(["generate", str(broken), "--out", str(out2), "--afford", "--qa-per-image", "2",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"no affordance questions: {victim}: ground_truth.json lists parts but parts.png is missing" in err
    c = json.loads((out2 / "manifest.json").read_text())["counts"]
    assert c["afford"]["without_parts_by_reason"]["unreadable_truth"] == 1 and c["scenes_ok"] == N_SCENES


def test_eval_reads_both_types_with_every_choice_as_a_candidate(afford_out):
    bench, items = _afford_items(afford_out)
    assert not bench.skipped
    rows = {q["id"]: q for r in _rows(afford_out) for q in r["qa"]}
    points = [i for i in items if i.kind == "point"]
    choices = [i for i in items if i.kind == "choice"]
    assert points and choices and any(len(i.options) > 2 for i in choices)
    for item in choices:  # the candidates are all of A-D, not only A and B
        q = rows[item.id]
        assert list(item.options) == q["names"] and q["subjects"][item.truth] == int(q["value"])
    for item in points:
        assert item.unit == "point" and item.meta["image_size"] == (320, 240)
        assert decode_mask_rle(item.meta["mask"])[item.truth["pixel"][1], item.truth["pixel"][0]]


def _write_answers(path, items, answer):
    path.write_text("".join(json.dumps({"id": it.id, "answer": answer(it)}) + "\n" for it in items))
    return path


def _outside(item):
    """A pixel 40+ px away from the truth and off the part's mask."""
    mask = decode_mask_rle(item.meta["mask"])
    u, v = item.truth["pixel"]
    for du in range(40, 320):
        for uu in (u + du, u - du):
            if 0 <= uu < mask.shape[1] and not mask[v, uu]:
                return uu, v
    raise AssertionError("no pixel off the mask")


def test_eval_score_oracle_shifted_refusals_and_model_formats(afford_out, tmp_path, capsys):
    _, items = _afford_items(afford_out)
    points = [i for i in items if i.kind == "point"]

    def shifted(it):
        if it.kind == "choice":
            return it.options[(it.truth + 1) % len(it.options)]  # a wrong object
        u, v = _outside(it)
        x, y, z = it.truth["point_3d"]
        return f"At pixel ({u}, {v}); the 3D point ({x + 0.3:.3f}, {y:.3f}, {z:.3f}) m."

    def molmo(it):
        u, v = it.truth["pixel"]
        w, h = it.meta["image_size"]
        return f'<point x="{100 * u / w:.3f}" y="{100 * v / h:.3f}" alt="the handle">the handle</point>'

    def qwen(it):
        u, v = it.truth["pixel"]
        return f'```json\n[\n\t{{"point_2d": [{u}, {v}], "label": "handle"}}\n]\n```'

    answers = {
        "oracle": (items, lambda it: it.reference_answer),
        "shifted": (items, shifted),
        "refusals": (items, lambda it: "I cannot tell from this image."),
        "molmo": (points, molmo),
        "qwen": (points, qwen),
    }
    summaries = {}
    for name, (subset, answer) in answers.items():
        path = _write_answers(tmp_path / f"{name}.jsonl", subset, answer)
        out = tmp_path / f"score-{name}"
        assert main(["eval", "score", "--benchmark", str(afford_out), "--answers", str(path), "--out", str(out)]) == 0
        summaries[name] = _summary(out)
        assert "in mask" in (out / "summary.md").read_text()
    capsys.readouterr()

    def point(name, key):
        return summaries[name]["by_kind"]["point"]["point"][key]["value"]

    def choice(name):
        return summaries[name]["by_type"]["afford_which_object"]["qualitative"]["accuracy"]["value"]

    assert point("oracle", "in_mask") == 1.0 and point("oracle", "within_5cm") == 1.0
    assert point("oracle", "error_m_median") == pytest.approx(0.0, abs=1e-9) and choice("oracle") == 1.0
    assert point("shifted", "in_mask") == 0.0 and point("shifted", "within_5cm") == 0.0
    assert point("shifted", "error_m_median") == pytest.approx(0.3) and choice("shifted") == 0.0
    assert point("refusals", "answered") == 0.0 and point("refusals", "in_mask") == 0.0
    assert summaries["refusals"]["by_kind"]["point"]["refusal_rate"]["value"] == 1.0
    for fmt in ("molmo", "qwen"):  # the image point alone: in the mask, no 3D point
        assert point(fmt, "in_mask") == 1.0 and point(fmt, "answered_3d") == 0.0
        assert point(fmt, "error_m_median") is None and point(fmt, "within_5cm") == 0.0


def test_a_point_question_without_its_afford_entry_is_skipped_with_a_reason(afford_out, tmp_path):
    stripped = tmp_path / "stripped"
    (stripped / "data").mkdir(parents=True)
    for f in sorted((afford_out / "data").glob("*.parquet")):
        pq.write_table(pq.read_table(f).drop_columns(["afford"]), stripped / "data" / f.name)
    bench = load_spatialforge(stripped)
    n_points = sum(1 for r in _rows(afford_out) for q in r["qa"] if q["kind"] == "point")
    skipped = [s for s in bench.skipped if s["reason"] == "missing_afford"]
    assert len(skipped) == n_points == len(bench.skipped)
    assert "generate --afford" in skipped[0]["message"] and skipped[0]["id"].split("-")[-1].startswith("a")
    assert any(i.type == "afford_which_object" for i in bench.items)  # the choices need no afford entry

    from spatialforge.vlmtrain.data import SpatialExamples

    examples = SpatialExamples(stripped, 8)  # training leaves them out, counted, and trains on the rest
    assert examples.skipped_questions == {"missing_afford": n_points} and len(examples) > 0


def test_training_examples_hold_the_affordance_questions(afford_out):
    from spatialforge.vlmtrain.data import SpatialExamples

    examples = SpatialExamples(afford_out, 50)
    assert examples.skipped_questions == {}
    turns = [(m["role"], m["content"][-1]["text"]) for i in range(len(examples)) for m in examples.messages(i)]
    prompts = [t for role, t in turns if role == "user" and "Where would you hold" in t]
    answers = [t for role, t in turns if role == "assistant" and t.startswith("By its handle: at pixel")]
    assert prompts and len(prompts) == len(answers)
    assert all("pixel coordinates (x, y)" in p and "320 x 240" in p for p in prompts)


def test_eval_run_prior_openai_and_hf_handle_the_items(afford_out, tmp_path, capsys):
    from spatialforge.eval.runner import read_records

    from ..eval.fake_openai_server import FakeOpenAIServer

    types = ["--types", "afford_hold_point,afford_which_object"]
    prior = tmp_path / "prior"
    assert main(["eval", "run", "--benchmark", str(afford_out), "--model", "prior", "--out", str(prior),
                 "--no-progress", *types]) == 0
    recs = read_records(prior / "records.jsonl")
    point_recs = [r for r in recs.values() if r["kind"] == "point"]
    assert point_recs and all(r["status"] == "ok" and r["value"]["pixel"] == [160.0, 120.0] for r in point_recs)
    assert all(r["in_mask"] is not None for r in point_recs)

    _, items = _afford_items(afford_out)
    by_question = {it.question: it.reference_answer for it in items}
    with FakeOpenAIServer(oracle=lambda text: next(a for q, a in by_question.items() if q in text)) as server:
        out = tmp_path / "api"
        assert main(["eval", "run", "--benchmark", str(afford_out), "--model", f"openai:oracle@{server.base_url}",
                     "--out", str(out), "--no-progress", *types]) == 0
        sent = [r.user_text for r in server.requests if "Where would you hold" in r.user_text]
    assert sent and all("of the 320 x 240 image" in t for t in sent)
    # the oracle knows the question only: where two scenes ask the same question it may give the other's answer
    unique = {q for q in by_question if sum(1 for it in items if it.question == q) == 1}
    api = [r for r in read_records(out / "records.jsonl").values() if r["question"] in unique]
    assert any(r["kind"] == "point" for r in api) and all(r["correct"] for r in api)

    pytest.importorskip("torch")
    from ..eval.tiny_vlms import build_tiny_vlm

    folder = build_tiny_vlm("qwen2_5_vl", tmp_path / "qwen")
    hf = tmp_path / "hf"
    assert main(["eval", "run", "--benchmark", str(afford_out), "--model", f"hf:{folder}", "--out", str(hf),
                 "--kinds", "point", "--limit", "2", "--device", "cpu", "--max-new-tokens", "8",
                 "--no-progress"]) == 0
    recs = read_records(hf / "records.jsonl")
    assert len(recs) == 2 and all(r["kind"] == "point" and r["in_mask"] is not None for r in recs.values())


def test_train_trains_on_them_and_counts_what_it_leaves_out(afford_out, tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    pytest.importorskip("trl")
    from ..vlmtrain.tiny_qwen import build_tiny_qwen

    model = str(build_tiny_qwen(tmp_path / "tiny"))
    stripped = tmp_path / "stripped"
    (stripped / "data").mkdir(parents=True)
    for f in sorted((afford_out / "data").glob("*.parquet")):
        pq.write_table(pq.read_table(f).drop_columns(["afford"]), stripped / "data" / f.name)
    n_points = sum(1 for r in _rows(afford_out) for q in r["qa"] if q["kind"] == "point")
    for data, left_out in ((afford_out, None), (stripped, f"left out {n_points} questions")):
        out = tmp_path / f"run-{data.name}"
        capsys.readouterr()
        assert main(["train", str(data), "--out", str(out), "--base-model", model, "--device", "cpu",
                     "--max-steps", "2", "--batch-size", "2", "--grad-accum", "1", "--max-qa-per-example", "3",
                     "--eval-benchmark", str(afford_out), "--eval-limit", "4", "--set", "train.workers=0",
                     "--set", "train.gradient_checkpointing=false", "--no-progress"]) == 0
        err = capsys.readouterr().err
        assert (left_out in err and "missing_afford" in err) if left_out else "left out" not in err
        assert json.loads((out / "train_summary.json").read_text())["steps"] == 2


def test_eval_score_types_and_kinds_score_a_selection_and_count_the_other_answers(afford_out, tmp_path, capsys):
    bench, items = _afford_items(afford_out)
    points = [i for i in items if i.kind == "point"]
    answers = _write_answers(tmp_path / "all.jsonl", bench.items, lambda it: it.reference_answer)
    only_points = _write_answers(tmp_path / "points.jsonl", points, lambda it: it.reference_answer)

    # the points-only answers scored against everything: the other questions count as missing
    everything = tmp_path / "everything"
    assert main(["eval", "score", "--benchmark", str(afford_out), "--answers", str(only_points),
                 "--out", str(everything)]) == 0
    whole = _summary(everything)
    assert whole["answers_file"]["missing"] == len(bench.items) - len(points) > 0
    assert whole["answers_file"]["selection"] is None

    # --kinds point: only the point questions, all answered, all in the mask
    sel = tmp_path / "points"
    assert main(["eval", "score", "--benchmark", str(afford_out), "--answers", str(only_points), "--out", str(sel),
                 "--kinds", "point"]) == 0
    s = _summary(sel)
    assert s["overall"]["n"] == len(points) and s["answers_file"]["missing"] == 0
    assert s["overall"]["point"]["in_mask"]["value"] == 1.0
    assert s["answers_file"]["selection"] == {"types": None, "kinds": ["point"]}

    # --types: answers to the other questions are outside the selection, not unknown ids
    typed = tmp_path / "typed"
    assert main(["eval", "score", "--benchmark", str(afford_out), "--answers", str(answers), "--out", str(typed),
                 "--types", "afford_hold_point"]) == 0
    t = _summary(typed)["answers_file"]
    assert t["outside_selection"] == len(bench.items) - len(points) and t["unknown_ids"] == 0
    assert "outside --types/--kinds" in capsys.readouterr().out

    # the same folder with another selection is refused (its scores would be mixed up), the same one is redone
    assert main(["eval", "score", "--benchmark", str(afford_out), "--answers", str(only_points), "--out", str(sel),
                 "--kinds", "choice"]) == 2
    assert "another --types/--kinds selection" in capsys.readouterr().err
    assert main(["eval", "score", "--benchmark", str(afford_out), "--answers", str(only_points), "--out", str(sel),
                 "--kinds", "point", "--seed", "3"]) == 0
    # an unknown type names the benchmark's types
    assert main(["eval", "score", "--benchmark", str(afford_out), "--answers", str(only_points),
                 "--out", str(tmp_path / "bad"), "--types", "afford_nope"]) == 2
    assert "afford_hold_point" in capsys.readouterr().err
