"""Synthetic part labels (SynthConfig(parts=True)) and the affordance QA types scored on them."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from spatialforge.errors import ConfigError
from spatialforge.qa.afford_types import (
    AffordTruth,
    generate_afford_qa,
    point_answer_from_heatmap,
    score_afford_qa,
    summarise_afford,
)
from spatialforge.synth import SynthConfig, generate_scene, write_scene
from spatialforge.synth.writer import synth_settings

PARTS = SynthConfig(parts=True)


def test_parts_are_off_by_default_and_leave_scenes_unchanged():
    plain = generate_scene(4, seed=2)
    assert plain.parts is None and "parts" not in plain.ground_truth
    assert all("parts" not in o for o in plain.objects)
    assert "parts" not in synth_settings(2, SynthConfig())["config"]
    assert synth_settings(2, PARTS)["config"]["parts"] is True
    with pytest.raises(ConfigError, match=r"SynthConfig\.parts"):
        SynthConfig(parts="yes")


def test_parts_are_deterministic_and_consistent_with_the_masks():
    names = set()
    for index in range(8):
        a, b = generate_scene(index, seed=7, config=PARTS), generate_scene(index, seed=7, config=PARTS)
        assert a.ground_truth == b.ground_truth and np.array_equal(a.parts, b.parts)
        assert np.array_equal(a.image, b.image) and np.array_equal(a.depth, b.depth)
        assert a.parts.dtype == np.uint16 and a.parts.shape == a.instances.shape
        for part in a.ground_truth["parts"]:
            mask = a.parts == part["id"]
            assert int(mask.sum()) == part["visible_pixels"]
            assert np.all(a.instances[mask] == part["object_id"])  # a part's pixels belong to its object
            names.add((part["name"], part["action"]))
        assert set(np.unique(a.parts)) <= {0, *(p["id"] for p in a.ground_truth["parts"])}
    assert {("handle", "hold"), ("blade", "cut with"), ("spout", "pour")} <= names


def test_scene_folder_with_parts_loads_with_the_ordinary_reader(tmp_path):
    from PIL import Image

    from spatialforge.io.scene_folder import load_scene

    scene = next(s for s in (generate_scene(i, 0, PARTS) for i in range(10)) if s.ground_truth["parts"])
    folder = write_scene(scene, tmp_path)
    assert np.array_equal(np.asarray(Image.open(folder / "parts.png")), scene.parts)
    objects = json.loads((folder / "objects.json").read_text())
    assert any("parts" in o for o in objects)
    loaded = load_scene(folder)  # the optional field is ignored by the scene reader
    assert {o.id for o in loaded.objects} == {o["id"] for o in objects}
    truth = AffordTruth.load(folder)
    assert truth.parts and np.array_equal(truth.part_mask, scene.parts)
    (folder / "parts.png").unlink()
    with pytest.raises(ConfigError, match=r"parts\.png is missing"):
        AffordTruth.load(folder)


def _all_qa(n=12, seed=0):
    out = []
    for index in range(n):
        truth = AffordTruth.from_scene(generate_scene(index, seed=0, config=PARTS))
        out += [(truth, q) for q in generate_afford_qa(truth, seed=seed)]
    return out


def test_qa_generation_is_deterministic_and_needs_parts():
    first, again = _all_qa(), _all_qa()
    assert [q.to_dict() for _, q in first] == [q.to_dict() for _, q in again]
    types = {q.type for _, q in first}
    assert types == {"afford_hold_point", "afford_which_object"}
    # a scene without parts gets no affordance question
    plain = AffordTruth.from_scene(generate_scene(0, seed=0))
    assert generate_afford_qa(plain) == []
    for truth, q in first:
        if q.type == "afford_hold_point":
            part = truth.parts[q.part_id]
            assert part["action"] == "hold" and q.subjects == (part["object_id"],)
            assert q.question.startswith(f"Where would you hold the {truth.object(part['object_id'])['caption']} to ")
            u, v = q.value["pixel"]
            assert truth.part_mask[v, u] == q.part_id
            assert f"({u}, {v})" in q.answer and " m." in q.answer
        else:
            assert q.value in q.choices and 2 <= len(q.choices) <= 4
            noun = q.question.split()[3].rstrip(":")
            action = {"cutting": "cut with", "pouring": "pour"}[noun]
            having = {p["object_id"] for p in truth.parts.values() if p["action"] == action}
            assert having & set(q.choices) == {q.value}


def test_scoring_right_and_wrong_answers():
    qa = _all_qa(8)
    point_truth, point = next((t, q) for t, q in qa if q.kind == "point")
    right = score_afford_qa(point, dict(point.value), point_truth)
    assert right.in_mask and right.error_m == 0.0
    u, v = point.value["pixel"]
    rows, cols = np.nonzero(point_truth.part_mask != point.part_id)
    k = int(np.argmax((rows - v) ** 2 + (cols - u) ** 2))  # the farthest pixel off the part
    wrong = score_afford_qa(point, {"pixel": [int(cols[k]), int(rows[k])],
                                    "point_3d": [x + 0.3 for x in point.value["point_3d"]]}, point_truth)
    assert not wrong.in_mask and wrong.error_m == pytest.approx(0.3 * 3 ** 0.5)
    assert score_afford_qa(point.to_dict(), None, point_truth).in_mask is False
    choice_truth, choice = next((t, q) for t, q in qa if q.kind == "choice")
    other = next(c for c in choice.choices if c != choice.value)
    assert score_afford_qa(choice, choice.value, choice_truth).correct
    assert not score_afford_qa(choice, other, choice_truth).correct
    summary = summarise_afford([right, wrong, score_afford_qa(choice, other, choice_truth)])
    assert summary["point"]["in_mask"] == 0.5 and summary["choice"]["accuracy"] == 0.0
    with pytest.raises(ConfigError, match="point answer"):
        score_afford_qa(point, [1, 2], point_truth)
    with pytest.raises(ConfigError, match="unknown affordance question type"):
        score_afford_qa(replace(point, type="afford_nonsense"), None, point_truth)


def test_oracle_heatmap_answers_beat_a_uniform_one():
    qa = [(t, q) for t, q in _all_qa(10) if q.kind == "point"]
    oracle = [score_afford_qa(q, point_answer_from_heatmap((t.part_mask == q.part_id).astype(float), t,
                                                           q.subjects[0]), t) for t, q in qa]
    uniform = [score_afford_qa(q, point_answer_from_heatmap(np.ones(t.depth.shape), t, q.subjects[0]), t)
               for t, q in qa]
    so, su = summarise_afford(oracle), summarise_afford(uniform)
    assert so["point"]["in_mask"] == 1.0 and so["point"]["median_error_m"] < 0.02
    assert su["point"]["in_mask"] < 0.5 and su["point"]["median_error_m"] > 0.04


def test_synth_command_writes_parts_only_when_asked(tmp_path):
    import json

    from spatialforge.cli.main import main

    assert main(["synth", "--n", "6", "--out", str(tmp_path / "p"), "--parts", "--no-progress",
                 "--width", "160", "--height", "120"]) == 0
    truths = [json.loads(p.read_text()) for p in sorted((tmp_path / "p").glob("*/ground_truth.json"))]
    assert any(t.get("parts") for t in truths) and any((d / "parts.png").is_file()
                                                       for d in (tmp_path / "p").iterdir() if d.is_dir())
    assert main(["synth", "--n", "2", "--out", str(tmp_path / "q"), "--no-progress", "--width", "160",
                 "--height", "120"]) == 0
    assert not list((tmp_path / "q").glob("*/parts.png"))
    # resuming with the other setting is refused, naming it
    assert main(["synth", "--n", "6", "--out", str(tmp_path / "q"), "--parts", "--no-progress", "--width", "160",
                 "--height", "120"]) == 2


def test_scene_afford_reasons_and_records(tmp_path):
    from spatialforge.io.dataset import decode_mask_rle
    from spatialforge.qa.afford_types import scene_afford

    scene = next(s for s in (generate_scene(i, 0, PARTS) for i in range(10)) if s.ground_truth["parts"])
    folder = write_scene(scene, tmp_path)
    got = scene_afford(folder, "renamed", seed=0)
    assert got.reason is None and got.qa and all(q.id.startswith("renamed-a") for q in got.qa)
    points = [q for q in got.qa if q.kind == "point"]
    assert [r["qa_id"] for r in got.records] == [q.id for q in points]
    for q, r in zip(points, got.records, strict=True):
        assert np.array_equal(decode_mask_rle(r["mask"]), scene.parts == q.part_id)
        assert r["pixel"] == q.value["pixel"] and r["point_3d"] == q.value["point_3d"]
        record = q.qa_record()
        assert record["value"] == float(q.part_id) and record["unit"] == "point" and "part_id" not in record
    for q in got.qa:
        if q.kind == "choice":
            assert q.qa_record()["value"] == float(q.value) and q.qa_record()["unit"] == "object"
    # the same scene under the same seed and id gives the same questions; the answer states the truth exactly
    assert scene_afford(folder, "renamed", seed=0) == got
    assert all(f"{p.value['point_3d'][0]:.3f}" in p.answer for p in points)
    plain = write_scene(generate_scene(0, seed=0), tmp_path / "plain")
    assert scene_afford(plain, "x").reason == "no_parts" and scene_afford(plain, "x").qa == ()
    (plain / "ground_truth.json").unlink()
    assert scene_afford(plain, "x").reason == "no_ground_truth"
    gt = json.loads((folder / "ground_truth.json").read_text())
    del gt["parts"][0]["id"]
    (folder / "ground_truth.json").write_text(json.dumps(gt))
    broken = scene_afford(folder, "renamed")
    assert broken.reason == "unreadable_truth"
    assert broken.message == f"{folder / 'ground_truth.json'}: parts[0] has no 'id'"


@pytest.mark.parametrize(("edit", "expect"), [
    (lambda gt: gt["parts"][1].update(object_id=999), "parts[1] names object_id 999, which no entry of objects has"),
    (lambda gt: gt["parts"][0].update(center=[0.1, "up", 0.2]), "parts[0] 'center' must be 3 finite numbers, got "
                                                                 "[0.1, 'up', 0.2]"),
    (lambda gt: gt["parts"][0].update(visible_pixels=True), "parts[0] 'visible_pixels' must be an integer >= 0, got "
                                                            "True"),
    (lambda gt: gt["parts"].append(dict(gt["parts"][0])), "repeats the id 1"),
    (lambda gt: gt["parts"].__setitem__(0, "handle"), "parts[0] is str, not an object"),
    (lambda gt: gt["objects"][1].update(caption=7), "objects[1] 'caption' must be a string, got 7"),
    (lambda gt: gt["objects"][0].pop("category"), "objects[0] has no 'category'"),
    (lambda gt: gt["camera"].update(position=[0, 0]), "camera 'position' must be 3 finite numbers, got [0, 0]"),
    (lambda gt: gt.update(parts={"1": {}}), "parts must be a list, got dict"),
], ids=["unknown-object", "bad-center", "bool-pixels", "repeated-id", "not-an-object", "bad-caption",
        "no-category", "bad-camera", "parts-not-a-list"])
def test_malformed_ground_truth_entries_are_one_line_naming_the_file_and_entry(tmp_path, edit, expect):
    from spatialforge.qa.afford_types import scene_afford

    scene = next(s for s in (generate_scene(i, 0, PARTS) for i in range(10)) if len(s.ground_truth["parts"]) >= 2)
    folder = write_scene(scene, tmp_path)
    gt_path = folder / "ground_truth.json"
    gt = json.loads(gt_path.read_text())
    edit(gt)
    gt_path.write_text(json.dumps(gt))
    with pytest.raises(ConfigError) as err:
        AffordTruth.load(folder)
    message = str(err.value)
    assert message.startswith(f"{gt_path}: ") and expect in message and "\n" not in message
    got = scene_afford(folder, "x")
    assert got.reason == "unreadable_truth" and got.message == message and got.qa == ()


def test_an_error_while_asking_the_questions_propagates(tmp_path, monkeypatch):
    """A bug in generating the questions is not passed off as an unreadable truth: it propagates."""
    from spatialforge.qa import afford_types

    scene = next(s for s in (generate_scene(i, 0, PARTS) for i in range(10)) if s.ground_truth["parts"])
    folder = write_scene(scene, tmp_path)

    for exc in (KeyError("a bug"), TypeError("a bug"), AttributeError("a bug"), ValueError("a bug")):
        def buggy(*args, _exc=exc, **kwargs):
            raise _exc

        monkeypatch.setattr(afford_types, "generate_afford_qa", buggy)
        with pytest.raises(type(exc), match="a bug"):
            afford_types.scene_afford(folder, "x")


#: The test's own judgement, category by category, of what affords pouring / cutting in the everyday sense.
#: Every category of the synthetic scenes must be listed here, so a new one forces a decision.
_EVERYDAY = {
    "pour": {"mug", "bottle", "can", "vase", "pot", "bucket", "kettle"},
    "cut with": {"knife"},
}
_NEITHER = {"bin", "stool", "box", "book stack", "crate", "cabinet", "speaker", "suitcase", "monitor", "table"}


def test_no_wrong_choice_of_which_object_affords_the_action():
    from spatialforge.synth.layout import CATEGORY_BY_NAME

    known = set().union(*_EVERYDAY.values(), _NEITHER)
    assert set(CATEGORY_BY_NAME) <= known, f"classify the new categories: {set(CATEGORY_BY_NAME) - known}"
    asked = {"pour": 0, "cut with": 0}
    for seed in (0, 5):
        for index in range(120):
            scene = generate_scene(index, seed=seed, config=SynthConfig(parts=True, width=320, height=240))
            truth = AffordTruth.from_scene(scene)
            for q in generate_afford_qa(truth, seed=seed):
                if q.type != "afford_which_object":
                    continue
                action = {"cutting": "cut with", "pouring": "pour"}[q.question.split(":")[0].split()[-1]]
                asked[action] += 1
                right = truth.parts
                assert any(p["object_id"] == q.value and p["action"] == action and
                           p["visible_pixels"] >= 20 for p in right.values()), q.question
                for wrong in (c for c in q.choices if c != q.value):
                    obj = truth.object(wrong)
                    assert obj["category"] in known and obj["category"] not in _EVERYDAY[action], q.question
                    assert not any(p["object_id"] == wrong and p["action"] == action for p in right.values())
    assert asked["pour"] >= 15 and asked["cut with"] >= 15, asked
