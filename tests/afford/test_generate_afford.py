"""Affordance questions through the real path: synth --parts -> generate --afford -> load -> eval score / run."""

from __future__ import annotations

import hashlib
import json
import re
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


def test_eval_run_prior_openai_and_hf_handle_the_items(afford_out, tmp_path, capsys, monkeypatch):
    import math

    from spatialforge.eval.models.base import POINT_INSTRUCTION
    from spatialforge.eval.runner import read_records

    from ..eval.fake_openai_server import FakeOpenAIServer

    statuses = {"ok", "range", "refusal", "no_answer", "ambiguous"}  # what the answer parser returns
    instruction = POINT_INSTRUCTION.format(size=" of the 320 x 240 image")
    _, items = _afford_items(afford_out)
    by_id = {it.id: it for it in items}
    types = ["--types", "afford_hold_point,afford_which_object"]
    prior = tmp_path / "prior"
    assert main(["eval", "run", "--benchmark", str(afford_out), "--model", "prior", "--out", str(prior),
                 "--no-progress", *types]) == 0
    recs = read_records(prior / "records.jsonl")
    assert sorted(recs) == sorted(by_id)
    for r in recs.values():  # the prior answers the image centre and the first option, scored as such
        it = by_id[r["id"]]
        assert r["status"] == "ok" and "error" not in r
        if r["kind"] == "point":
            assert r["answer"] == "(160, 120)" and r["value"] == {"pixel": [160.0, 120.0], "point_3d": None}
            assert r["in_mask"] is bool(decode_mask_rle(it.meta["mask"])[120, 160]) and r["error_m"] is None
            assert r["pixel_error"] == pytest.approx(math.dist((160, 120), it.truth["pixel"]))
        else:
            assert r["answer"] == it.options[0] and r["correct"] is (it.truth == 0)
    assert any(r["kind"] == "point" for r in recs.values()) and any(r["kind"] == "choice" for r in recs.values())

    by_question = {it.question: it.reference_answer for it in items}
    with FakeOpenAIServer(oracle=lambda text: next(a for q, a in by_question.items() if q in text)) as server:
        out = tmp_path / "api"
        assert main(["eval", "run", "--benchmark", str(afford_out), "--model", f"openai:oracle@{server.base_url}",
                     "--out", str(out), "--no-progress", *types]) == 0
        sent = [r.user_text for r in server.requests]
    points = [t for t in sent if "Where would you hold" in t]
    assert points and all(instruction in t for t in points)  # the point instruction, with the image's size
    assert all("Answer directly with one of: " in t for t in sent if "Which object affords" in t)
    # the oracle knows the question only: where two scenes ask the same question it may give the other's answer
    unique = {q for q in by_question if sum(1 for it in items if it.question == q) == 1}
    api = [r for r in read_records(out / "records.jsonl").values() if r["question"] in unique]
    assert any(r["kind"] == "point" for r in api)
    for r in api:
        it = by_id[r["id"]]
        assert r["status"] == "ok" and r["correct"] is True
        if r["kind"] == "point":  # the reference answer read back: the truth pixel and 3D point exactly
            assert r["value"]["pixel"] == [float(x) for x in it.truth["pixel"]] and r["in_mask"] is True
            assert r["value"]["point_3d"] == pytest.approx(list(it.truth["point_3d"])) and r["error_m"] < 1e-9

    pytest.importorskip("torch")
    from spatialforge.eval.models.hf_vlm import HFVisionLanguageModel

    from ..eval.tiny_vlms import build_tiny_vlm

    rendered: list[str] = []
    for name in ("_render", "_plain_text"):  # the text the model is given, chat template or plain format
        original = getattr(HFVisionLanguageModel, name)
        monkeypatch.setattr(HFVisionLanguageModel, name,
                            lambda self, *a, _f=original: rendered.append(_f(self, *a)) or rendered[-1])
    folder = build_tiny_vlm("qwen2_5_vl", tmp_path / "qwen")
    hf = tmp_path / "hf"
    assert main(["eval", "run", "--benchmark", str(afford_out), "--model", f"hf:{folder}", "--out", str(hf),
                 "--kinds", "point", "--limit", "2", "--device", "cpu", "--max-new-tokens", "8",
                 "--no-progress"]) == 0
    recs = read_records(hf / "records.jsonl")
    assert len(recs) == 2 and len([t for t in rendered if "Where would you hold" in t]) == 2
    for r in recs.values():
        it = by_id[r["id"]]
        assert r["kind"] == "point" and "error" not in r and r["status"] in statuses
        assert any(it.question in t and instruction in t for t in rendered)  # its question with the instruction
        assert isinstance(r["in_mask"], bool) and r["answered"] is (r["status"] in ("ok", "range"))
        if not r["answered"]:  # a random tiny model: unanswered, scored as a miss
            assert r["in_mask"] is False and r["error_m"] is None and r["value"] is None


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


def _edited(afford_out, folder, edit):
    """A copy of the dataset whose first row with a point question is changed by ``edit(row)``; returns its
    point question ids."""
    import pyarrow as pa

    (folder / "data").mkdir(parents=True)
    ids: list[str] = []
    for f in sorted((afford_out / "data").glob("*.parquet")):
        rows = pq.read_table(f).to_pylist()
        for row in rows:
            if row["afford"] and not ids:
                edit(row)
                ids = [a["qa_id"] for a in row["afford"]]
        pq.write_table(pa.Table.from_pylist(rows, schema=AFFORD_ROW_SCHEMA), folder / "data" / f.name)
    assert ids
    return ids


def _no_pixel(row):
    row.update(width=0, height=0)
    for a in row["afford"]:
        a["mask"] = {"size": [0, 0], "counts": []}


def _empty_mask(row):
    for a in row["afford"]:
        h, w = a["mask"]["size"]
        a["mask"] = {"size": [h, w], "counts": [h * w]}


def _pixel_off_the_mask(row):
    for a in row["afford"]:
        mask = decode_mask_rle(a["mask"])
        v, u = (int(x[0]) for x in np.nonzero(~mask))
        a["pixel"] = [u, v]


@pytest.mark.parametrize(("edit", "expect"), [
    (_no_pixel, "the row's width x height 0 x 0 is not a positive image size"),
    (lambda row: row.update(width=0, height=0), "the row's width x height 0 x 0 is not a positive image size"),
    (_empty_mask, "afford mask: the mask has no pixel"),
    (_pixel_off_the_mask, "is not in the part's mask"),
], ids=["0x0-row-and-mask", "0x0-row", "empty-mask", "pixel-off-the-mask"])
def test_point_questions_with_a_bad_truth_are_skipped_with_a_reason(afford_out, tmp_path, capsys, edit, expect):
    bad = tmp_path / "bad"
    ids = _edited(afford_out, bad, edit)
    bench = load_spatialforge(bad)
    assert sorted(s["id"] for s in bench.skipped) == sorted(ids)
    assert all(s["reason"] == "bad_truth" and expect in s["message"] and "\n" not in s["message"]
               for s in bench.skipped)
    assert not {i.id for i in bench.items} & set(ids)
    # eval score counts them and scores the rest (answers to them are answers to no item of the benchmark)
    _, good = _afford_items(afford_out)
    answers = _write_answers(tmp_path / "a.jsonl", good, lambda it: it.reference_answer)
    capsys.readouterr()
    assert main(["eval", "score", "--benchmark", str(bad), "--answers", str(answers), "--out",
                 str(tmp_path / "score")]) == 0
    out = capsys.readouterr().out
    assert f"{len(ids)} record{'s' if len(ids) > 1 else ''} skipped {{'bad_truth': {len(ids)}}}" in out
    assert _summary(tmp_path / "score")["by_kind"]["point"]["point"]["in_mask"]["value"] == 1.0


def test_rle_problem_with_foreground_needs_a_mask_pixel():
    from spatialforge.io.dataset import encode_mask_rle, rle_problem

    assert rle_problem({"size": [0, 0], "counts": []}) is None  # a valid encoding of an empty array ...
    assert rle_problem({"size": [0, 0], "counts": []}, foreground=True) == "size [0, 0] holds no pixel"
    assert rle_problem({"size": [3, 0], "counts": []}, foreground=True) == "size [3, 0] holds no pixel"
    assert rle_problem({"size": [2, 2], "counts": [4]}, foreground=True).startswith("the mask has no pixel")
    assert rle_problem({"size": [2, 2], "counts": [4, 0]}, foreground=True).startswith("the mask has no pixel")
    one = np.zeros((3, 4), bool)
    one[2, 3] = True
    assert rle_problem(encode_mask_rle(one), foreground=True) is None
    assert rle_problem(encode_mask_rle(np.ones((2, 2), bool)), foreground=True) is None


def _one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_afford_on_photos_is_refused_up_front(parts_dir, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for d in sorted(d for d in parts_dir.iterdir() if d.is_dir())[:2]:
        shutil.copy(d / "image.png", photos / f"{d.name}.png")
    for source, named in (([str(photos)], f"the photos of the folder {photos} have none"),
                          (["--hf-dataset", "someone/photos"], "the photos of --hf-dataset someone/photos have none"),
                          (["--parquet", str(tmp_path / "t.parquet")], f"--parquet {tmp_path / 't.parquet'} have none"),
                          (["--webdataset", str(tmp_path / "s.tar")], f"--webdataset {tmp_path / 's.tar'} have none")):
        out = tmp_path / "out"
        capsys.readouterr()
        assert main(["generate", *source, "--out", str(out), "--afford", "--no-progress"]) == 2
        line = _one_line(capsys.readouterr().err)
        assert line.startswith("spatialforge: error: --afford: the affordance questions need synthetic scenes with "
                               "part labels") and named in line and "leave out --afford" in line
        assert not out.exists()  # refused before anything was written or loaded


def test_affordance_types_are_selected_and_excluded_by_name(parts_dir, afford_out, tmp_path, capsys):
    full = {q["id"]: q for r in _rows(afford_out) for q in r["qa"] if q["type"].startswith("afford_")}
    base = ["generate", str(parts_dir), "--afford", "--qa-per-image", "2", "--no-progress"]
    catalogue = sorted({q["type"] for r in _rows(afford_out) for q in r["qa"] if not q["type"].startswith("afford_")})
    runs = {"no-choice": ["--exclude-types", "afford_which_object"],
            "choice-only": ["--types", ",".join(["afford_which_object", *catalogue])]}
    for name, flags in runs.items():
        out = tmp_path / name
        assert main([*base, "--out", str(out), *flags]) == 0
        rows = _rows(out)
        asked = [q for r in rows for q in r["qa"] if q["type"].startswith("afford_")]
        kept = "afford_hold_point" if name == "no-choice" else "afford_which_object"
        assert asked and {q["type"] for q in asked} == {kept}
        # the questions of the type kept are those of a run asking both, and keep their truth
        same = [q for q in full.values() if q["type"] == kept]
        assert sorted((q["question"], q["answer"]) for q in asked) == sorted((q["question"], q["answer"]) for q in same)
        assert sum(len(r["afford"]) for r in rows) == (len(asked) if kept == "afford_hold_point" else 0)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["counts"]["afford"]["per_type"] == {kept: len(asked)}
        assert manifest["config"]["afford_types"] == [kept]
    # the selection is part of the fingerprint: resuming with another one is refused, naming it
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "no-choice")]) == 2
    assert "afford_types" in _one_line(capsys.readouterr().err)
    # a run asking both keeps the fingerprint of earlier versions
    assert "afford_types" not in json.loads((afford_out / "manifest.json").read_text())["config"]


@pytest.mark.parametrize(("flags", "expect"), [
    (["--afford", "--types", "afford_hold_point"],
     "--types afford_hold_point: names only affordance types, which --afford asks on top of the catalogue's"),
    (["--types", "height,afford_hold_point"],
     "--types afford_hold_point: the affordance question types are asked only with --afford"),
    (["--exclude-types", "afford_which_object"],
     "--exclude-types afford_which_object: the affordance question types are asked only with --afford"),
    (["--afford", "--exclude-types", "afford_which_object,afford_hold_point"],
     "leaves no affordance type to ask: leave out --afford instead"),
], ids=["only-affordance-types", "types-without-afford", "exclude-without-afford", "nothing-left"])
def test_affordance_type_selections_that_cannot_work_are_one_line(parts_dir, tmp_path, capsys, flags, expect):
    out = tmp_path / "out"
    assert main(["generate", str(parts_dir), "--out", str(out), "--no-progress", *flags]) == 2
    line = _one_line(capsys.readouterr().err)
    assert expect in line and "unknown question type" not in line and not out.exists()


def test_an_error_while_asking_is_the_scenes_internal_error(parts_dir, tmp_path, monkeypatch):
    """A bug in the questions is recorded as an internal error of the scene, not as an unreadable truth."""
    from spatialforge.pipeline.generate import run_generate
    from spatialforge.qa import afford_types

    def buggy(truth, seed=0, types=afford_types.AFFORD_TYPES):
        raise KeyError("a bug in the questions")

    monkeypatch.setattr(afford_types, "generate_afford_qa", buggy)
    manifest = run_generate(parts_dir, tmp_path / "out", GenerateConfig(afford=True), progress=False)
    c = manifest["counts"]
    with_parts = sum(1 for d in parts_dir.iterdir()
                     if d.is_dir() and json.loads((d / "ground_truth.json").read_text()).get("parts"))
    assert with_parts and c["scenes_failed"] == len(manifest["failed"]) == with_parts
    assert all(e["reason"] == "internal_error" and "a bug in the questions" in e["error"] for e in manifest["failed"])
    assert c["afford"]["scenes_with_parts"] == 0 and "unreadable_truth" not in c["afford"]["without_parts_by_reason"]


def test_generate_config_checks_its_affordance_types():
    from spatialforge.errors import ConfigError

    assert GenerateConfig(afford=True, afford_types=["afford_which_object", "afford_hold_point"]).afford_types == \
        ("afford_hold_point", "afford_which_object")  # in their order, so equal selections fingerprint alike
    one = GenerateConfig(afford=True, afford_types=("afford_hold_point",))
    assert one.to_dict()["afford_types"] == ["afford_hold_point"] and one.fingerprint() != \
        GenerateConfig(afford=True).fingerprint()
    for bad, expect in (({"afford_types": ("afford_hold_point",)}, "only afford=True"),
                        ({"afford": True, "afford_types": ("afford_nope",)}, "unknown afford_nope"),
                        ({"afford": True, "afford_types": ()}, "(none)"),
                        ({"afford": True, "afford_types": "afford_hold_point"}, "must be a list")):
        with pytest.raises(ConfigError, match=re.escape(expect)):
            GenerateConfig(**bad)


def test_run_photos_from_python_refuses_afford_before_reading_anything(tmp_path):
    from spatialforge.errors import ConfigError
    from spatialforge.pipeline.photos import run_photos

    class _Untouched:
        def build(self):
            raise AssertionError("the source was opened")

    with pytest.raises(ConfigError, match="photos have no part labels"):
        run_photos(_Untouched(), tmp_path / "out", pipeline=None, generate=GenerateConfig(afford=True))
    assert not (tmp_path / "out").exists()
