"""Composite spatial questions (spatialforge.qa.composite): exact truth, plans, traces, scoring."""

from __future__ import annotations

import ast
import dataclasses
import itertools
import math
import operator

import numpy as np
import pytest

from spatialforge.core.types import CameraIntrinsics, ObjectAnnotation, RGBDScene, SceneGraph
from spatialforge.errors import ConfigError
from spatialforge.eval.answers import parse_answer, parse_quantity
from spatialforge.eval.benchmarks import composite_benchmark
from spatialforge.eval.metrics import score_item, summarize
from spatialforge.geometry import build_scene_graph
from spatialforge.qa.catalog import EvalContext, Skip
from spatialforge.qa.composite import (
    COMPOSITE_TYPES,
    CompositeConfig,
    generate_composite,
    reasoning_trace,
    say_parameter,
)
from spatialforge.synth import generate_scene
from tests.test_qa_generator import graph as hand_graph
from tests.test_qa_generator import obj

CTX = EvalContext()


@pytest.fixture(scope="module")
def graphs() -> list[SceneGraph]:
    out = []
    for i in range(8):
        s = generate_scene(i, seed=3)
        scene = RGBDScene(s.scene_id, s.image, s.depth, s.instances, CameraIntrinsics(**s.camera),
                          tuple(ObjectAnnotation(o["id"], o["caption"]) for o in s.objects))
        out.append(build_scene_graph(scene))
    return out


@pytest.fixture(scope="module")
def questions(graphs):
    cfg = CompositeConfig(per_scene=40, seed=5)
    return [(g, q) for g in graphs for q in generate_composite(g, None, cfg)]


# ------------------------------------------------------------------ an independent tool implementation

def _centre(g, i):
    return np.array(g.object(int(i)).center, dtype=float)


def _calc(expr: str) -> float:
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}

    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant):
            return float(n.value)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)
        if isinstance(n, ast.BinOp) and type(n.op) in ops:
            return ops[type(n.op)](ev(n.left), ev(n.right))
        raise ValueError(expr)
    return ev(ast.parse(expr, mode="eval"))


def tool(g: SceneGraph, name: str, args: dict) -> dict:
    """The tools of reason_interface.md, written from the interface text only."""
    if name == "list_objects":
        return {"objects": [{"id": o.id, "caption": o.caption, "reference": None, "center": list(map(float, o.center)),
                             "width": o.width, "depth": o.depth, "height": o.height} for o in g.objects]}
    if name == "measure":
        a = g.object(int(args["a"]))
        q = args["quantity"]
        if q in ("width", "depth", "height"):
            v = getattr(a, q)
        else:
            d = _centre(g, args["b"]) - _centre(g, args["a"])
            v = {"distance": np.linalg.norm(d), "horizontal_distance": math.hypot(d[0], d[1]),
                 "vertical_distance": abs(d[2])}[q]
        return {"quantity": q, "value": float(v), "unit": "m"}
    if name == "point_segment_distance":
        p, a, b = (_centre(g, args[k]) for k in ("point", "a", "b"))
        # sample the segment densely, then refine: a different method from the module's projection
        ts = np.linspace(0, 1, 20001)
        return {"value": float(np.min(np.linalg.norm(a + ts[:, None] * (b - a) - p, axis=1))), "unit": "m"}
    if name == "triangle":
        ab, bc, ca = args["ab"], args["bc"], args["ca"]
        ang = [math.degrees(math.acos((ab ** 2 + ca ** 2 - bc ** 2) / (2 * ab * ca))),
               math.degrees(math.acos((ab ** 2 + bc ** 2 - ca ** 2) / (2 * ab * bc)))]
        ang.append(180.0 - sum(ang))
        sides = [ab, bc, ca]
        pairs = [(i, j) for i, j in itertools.combinations(range(3), 2)
                 if abs(sides[i] - sides[j]) <= 0.05 * max(sides[i], sides[j])]
        return {"sides": sides, "angles_deg": ang, "isosceles": bool(pairs),
                "right": any(abs(x - 90) <= 5 for x in ang), "equal_pair": list(pairs[0]) if pairs else None}
    if name == "fits_between":
        return {"fits": args["width"] < args["gap"], "clearance": args["gap"] - args["width"]}
    if name == "calculate":
        return {"value": _calc(args["expression"])}
    raise AssertionError(name)


# ------------------------------------------------------------------ brute-force truth

def brute(tid: str, g: SceneGraph, s: tuple[int, ...]):
    c = {o.id: np.array(o.center, float) for o in g.objects}
    o = {x.id: x for x in g.objects}
    d = lambda i, j: float(np.linalg.norm(c[i] - c[j]))  # noqa: E731
    if tid in ("isosceles_triangle", "right_triangle"):
        A, B, C = (c[i] for i in s[:3])
        sides = [d(s[0], s[1]), d(s[1], s[2]), d(s[2], s[0])]
        if tid == "isosceles_triangle":
            return any(abs(x - y) <= 0.05 * max(x, y) for x, y in itertools.combinations(sides, 2))
        angles = []
        for p, q, r in ((A, B, C), (B, C, A), (C, A, B)):
            u, v = q - p, r - p
            angles.append(math.degrees(math.acos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1))))
        return any(abs(x - 90) <= 5 for x in angles)
    if tid == "closest_of":
        return min(s[:3], key=lambda i: d(i, s[3]))
    if tid == "fits_between":
        a, b, cc = s
        gap = math.hypot(*(c[b] - c[cc])[:2]) - o[b].width / 2 - o[cc].width / 2
        return o[a].width < gap
    if tid == "closer_pair":
        return d(s[0], s[1]) < d(s[2], s[3])
    if tid == "closer_pair_difference":
        return d(s[2], s[3]) - d(s[0], s[1])
    if tid == "midpoint_nearest":
        m = (c[s[0]] + c[s[1]]) / 2
        return min((i for i in c if i not in s[:2]), key=lambda i: float(np.linalg.norm(c[i] - m)))
    if tid == "count_within":
        return sum(1 for i in c if i != s[0] and d(i, s[0]) <= 1.0)
    if tid == "path_passes_near":
        pts = c[s[0]] + np.linspace(0, 1, 20001)[:, None] * (c[s[1]] - c[s[0]])
        return float(np.min(np.linalg.norm(pts - c[s[2]], axis=1))) <= 0.5
    if tid == "tallest_of":
        return max(s[:4], key=lambda i: o[i].height)
    if tid == "widest_of":
        return max(s[:4], key=lambda i: o[i].width)
    if tid == "stacked_height":
        return o[s[0]].height + o[s[1]].height
    if tid == "route_length":
        return d(s[0], s[1]) + d(s[1], s[2])
    if tid == "clock_after_turning":
        f, v = (c[s[1]] - c[s[0]])[:2], (c[s[2]] - c[s[0]])[:2]
        ang = math.degrees(math.atan2(f[0] * v[1] - f[1] * v[0], f @ v))  # counter-clockwise from facing
        hour = round((-ang % 360) / 30) % 12
        return 12 if hour == 0 else hour
    raise AssertionError(tid)


def _named(q):
    return tuple(s for s, r in zip(q.subjects, q.roles, strict=True) if r != "X")


def test_at_least_ten_types_and_each_is_generated(questions):
    assert len(COMPOSITE_TYPES) >= 10
    seen = {q.type for _, q in questions}
    assert seen == set(COMPOSITE_TYPES), set(COMPOSITE_TYPES) - seen
    assert all(q.kind == "composite" for _, q in questions)


def test_truth_matches_brute_force(questions):
    for g, q in questions:
        want = brute(q.type, g, _named(q))
        if isinstance(want, float):
            assert q.value == pytest.approx(want, rel=1e-9), q
        else:
            assert q.value == want, q


def test_plans_and_conclude_reproduce_the_truth(questions):
    allowed = {"list_objects", "measure", "point_segment_distance", "triangle", "fits_between", "calculate"}
    for g, q in questions:
        t = COMPOSITE_TYPES[q.type]
        calls = t.plan(_named(q), g)
        assert calls and {name for name, _ in calls} <= allowed
        results = [tool(g, name, args) for name, args in calls]
        got = t.conclude(_named(q), results)
        assert got == pytest.approx(q.value, rel=1e-6) if t.unit == "m" else got == q.value, (q, got)


def test_conclude_fails_when_a_measurement_is_wrong(questions):
    g, q = next((g, q) for g, q in questions if q.type == "isosceles_triangle")
    t = COMPOSITE_TYPES[q.type]
    calls = t.plan(_named(q), g)
    results = [tool(g, n, a) for n, a in calls]
    results[0] = dict(results[0], value=results[0]["value"] * 1.3)  # a measuring tool that is off
    assert t.conclude(_named(q), results) is None


def _near_tie_objects(dx: float):
    # A at the origin-ish; B at 1 m, C at 1 m + dx from D
    return [obj(1, "mug", 0.0, 2.0, 0.5, 0.1, 0.1, 0.1), obj(2, "lamp", 1.0, 2.0, 0.5, 0.3, 0.3, 0.3),
            obj(3, "chair", -1.0 - dx, 2.0, 0.5, 0.5, 0.4, 0.9), obj(4, "box", 0.0, 3.5, 0.5, 0.3, 0.3, 0.3)]


def test_near_ties_are_skipped():
    g = hand_graph(objs=_near_tie_objects(0.05))
    o = {x.id: x for x in g.objects}
    # lamp 1.0 m and chair 1.05 m from the mug: which is closest is a tie
    assert isinstance(COMPOSITE_TYPES["closest_of"].evaluate((o[2], o[3], o[4], o[1]), g, CTX), Skip)
    g2 = hand_graph(objs=_near_tie_objects(0.3))
    o2 = {x.id: x for x in g2.objects}
    assert COMPOSITE_TYPES["closest_of"].evaluate((o2[2], o2[3], o2[4], o2[1]), g2, CTX) == 2
    # count within 1 m of the mug: the lamp at exactly 1 m is a tie
    assert isinstance(COMPOSITE_TYPES["count_within"].evaluate((o[1],), g, CTX), Skip)
    # isosceles: lamp-mug 1.0 vs chair-mug 1.05 -> 4.8 % apart, inside the band around 5 %
    assert isinstance(COMPOSITE_TYPES["isosceles_triangle"].evaluate((o[1], o[2], o[3]), g, CTX), Skip)
    # the path from the lamp to the chair passes 0.0 m from the mug; 0.5 m from a point 0.5 m off the line
    near = hand_graph(objs=[*_near_tie_objects(0.3)[:3], obj(4, "box", 0.0, 2.52, 0.5, 0.3, 0.3, 0.3)])
    n = {x.id: x for x in near.objects}
    assert isinstance(COMPOSITE_TYPES["path_passes_near"].evaluate((n[2], n[3], n[4]), near, CTX), Skip)
    assert COMPOSITE_TYPES["path_passes_near"].evaluate((n[2], n[3], n[1]), near, CTX) is True


def test_deterministic_per_seed(graphs):
    a = generate_composite(graphs[0], None, CompositeConfig(per_scene=8, seed=1))
    b = generate_composite(graphs[0], None, CompositeConfig(per_scene=8, seed=1))
    c = generate_composite(graphs[0], None, CompositeConfig(per_scene=8, seed=2))
    assert [q.to_dict() for q in a] == [q.to_dict() for q in b]
    assert [q.to_dict() for q in a] != [q.to_dict() for q in c]


def test_unit_systems_in_parameters_and_answers(graphs):
    assert say_parameter(1.0, "metric") == ("1 metre", 1.0)
    assert say_parameter(0.5, "metric") == ("50 centimetres", 0.5)
    words, metres = say_parameter(1.0, "imperial")
    assert words == "3.3 feet" and abs(metres - 1.0) < 0.01
    words, metres = say_parameter(0.5, "imperial")
    assert words == "20 inches" and abs(metres - 0.5) < 0.01
    types = ("count_within", "path_passes_near", "route_length")
    for units, present, absent in (("metric", ("metre", "centimetre"), ("feet", "inch")),
                                   ("imperial", ("feet", "inch"), ("metre", "centimetre"))):
        qs = [q for g in graphs for q in generate_composite(g, None, CompositeConfig(per_scene=30, seed=4, units=units,
                                                                                     types=types))]
        assert qs
        for q in qs:
            text = (q.question + " " + q.answer).lower()
            if q.type != "count_within" or "within" in text:
                assert any(w in text for w in present), text
            assert not any(w in text for w in absent), text


def test_reasoning_trace_states_measured_values_and_answer(questions):
    for g, q in questions[:40]:
        msgs = reasoning_trace(q, g)
        assert [m["role"] for m in msgs] == ["user", "assistant"]
        assert msgs[0]["content"][0] == {"type": "image", "text": None}
        assert msgs[0]["content"][1]["text"] == q.question
        text = msgs[1]["content"][0]["text"]
        assert text.startswith("<think>\n") and text.endswith("</think>\n" + q.answer)
        t = COMPOSITE_TYPES[q.type]
        for (name, args), _ in zip(t.plan(_named(q), g), range(1), strict=False):
            if name == "measure":
                assert f"{tool(g, name, args)['value']:.2f} m" in text
    wrong = dataclasses.replace(questions[0][1], value=not questions[0][1].value
                                if isinstance(questions[0][1].value, bool) else -1)
    with pytest.raises(ConfigError):
        reasoning_trace(wrong, questions[0][0])


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown composite type"):
        CompositeConfig(types=("nope",))
    with pytest.raises(ConfigError, match="--composite"):
        CompositeConfig(per_scene=0)
    with pytest.raises(ConfigError, match="units"):
        CompositeConfig(units="cubits")


# ------------------------------------------------------------------ evaluation

def _right_answer(item) -> str:
    if item.kind == "yes_no":
        return "Yes." if item.truth else "No."
    if item.kind == "choice":
        return f"It is {item.options[item.truth]}."
    if item.unit == "clock":
        return f"At {item.truth} o'clock."
    if item.unit == "count":
        return f"There are {item.truth} objects."
    return f"About {item.truth:.3f} m."


def _wrong_answer(item) -> str:
    if item.kind == "yes_no":
        return "No." if item.truth else "Yes."
    if item.kind == "choice":
        return f"It is {item.options[(item.truth + 1) % len(item.options)]}."
    if item.unit == "clock":
        return f"At {item.truth % 12 + 6 if item.truth <= 6 else item.truth - 6} o'clock."
    if item.unit == "count":
        return f"There are {item.truth + 2} objects."
    return f"About {item.truth * 5:.3f} m."


def _score(item, text):
    parsed = parse_answer(text, item.kind, item.unit, item.options, question=item.question, qtype=item.type)
    return score_item(item, parsed, text)


def test_composite_items_are_scored(graphs):
    bench = composite_benchmark(((g, None) for g in graphs), CompositeConfig(per_scene=40, seed=5))
    items = bench.items
    assert {i.type for i in items} >= set(COMPOSITE_TYPES) - {"count_within"}
    assert any(i.kind == "choice" and len(i.options) > 2 for i in items)
    for item in items:
        assert item.meta["composite"] is True
        good, bad = _score(item, _right_answer(item)), _score(item, _wrong_answer(item))
        if item.kind != "quantitative" or item.unit in ("clock", "count"):
            assert good["correct"] is True and bad["correct"] is False, (item, good, bad)
        else:
            assert good["within_25pct"] is True and bad["within_2x"] is False, (item, good, bad)


def test_choice_options_are_the_candidates(graphs):
    bench = composite_benchmark(((g, None) for g in graphs), CompositeConfig(per_scene=40, seed=5,
                                                                             types=("closest_of", "midpoint_nearest")))
    for item in bench.items:
        names = dict(zip(item.meta["subjects"], item.meta["names"], strict=True))
        roles = dict(zip(item.meta["subjects"], item.meta["roles"], strict=True))
        if item.type == "closest_of":
            assert len(item.options) == 3
            assert [roles[s] for s in item.meta["subjects"] if names[s] in item.options] == ["A", "B", "C"]
        else:
            assert all(roles[s] == "X" for s in item.meta["subjects"] if names[s] in item.options)


def test_count_answers_are_parsed():
    cases = {"There are three objects within 1 metre of the chair.": 3, "2 objects are within 3.3 feet of it.": 2,
             "None.": 0, "No other objects.": 0, "No, there are 5 objects.": 5, "Exactly one: the mug.": 1,
             "The mug is 0.5 m away and the lamp 0.8 m, so 2 objects.": 2}
    for text, want in cases.items():
        got = parse_quantity(text, "count")
        assert got.status == "ok" and got.value == want, (text, got)
    assert parse_quantity("I cannot tell.", "count").status == "refusal"


def test_count_items_score_exactly(graphs):
    bench = composite_benchmark(((g, None) for g in graphs), CompositeConfig(per_scene=30, seed=5,
                                                                             types=("count_within",)))
    assert bench.items and all(i.unit == "count" for i in bench.items)
    recs = []
    for item in bench.items:
        good, bad = _score(item, _right_answer(item)), _score(item, _wrong_answer(item))
        assert good["correct"] is True and bad["correct"] is False
        recs += [good, bad]
    summary = summarize(recs, n_boot=0)
    assert summary["overall"]["count"]["accuracy"]["value"] == pytest.approx(0.5)


def test_generate_writes_composite_questions_and_reasoning_and_fingerprints_them(synth_dir, tmp_path, capsys):
    import json

    import pyarrow.parquet as pq

    from spatialforge.cli.main import main
    from spatialforge.eval.benchmarks import load_spatialforge

    out = tmp_path / "out"
    argv = ["generate", str(synth_dir), "--out", str(out), "--no-progress", "--qa-per-image", "4",
            "--composite", "3", "--with-reasoning"]
    assert main(argv) == 0
    rows = [r for f in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    composite = [(r, k, q) for r in rows for k, q in enumerate(r["qa"]) if q["kind"] == "composite"]
    assert composite and all(q["type"] in COMPOSITE_TYPES for _, _, q in composite)
    for row, k, q in composite:  # the k-th answer turn is the reasoning chain, ending with the answer
        text = row["messages"][2 * k + 1]["content"][0]["text"]
        assert text.startswith("<think>\n1. ") and text.endswith("</think>\n" + q["answer"]), text
    engine = [(r, k, q) for r in rows for k, q in enumerate(r["qa"]) if q["kind"] != "composite"]
    assert all(r["messages"][2 * k + 1]["content"][0]["text"] == q["answer"] for r, k, q in engine)
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["per_kind"]["composite"] == len(composite)
    bench = load_spatialforge(out)  # eval reads the composite rows, scored by their answer kinds
    assert sum(1 for i in bench.items if i.meta.get("composite")) == len(composite)
    capsys.readouterr()
    assert main([*argv[:7], "--composite", "2"]) == 2  # another composite setting: refused, named
    assert "composite" in capsys.readouterr().err
    assert main(["generate", str(synth_dir), "--out", str(tmp_path / "o2"), "--with-reasoning"]) == 2


def test_a_reasoning_block_is_not_read_as_the_answer():
    from spatialforge.eval.answers import parse_answer, strip_reasoning

    chain = "<think>\n1. The mug is 2.40 m from the lamp.\n2. The chair is 0.80 m from it.\n</think>\n"
    got = parse_answer(chain + "The difference is about 1.6 m.", "quantitative", "m",
                       question="By how much is the mug farther from the lamp than the chair?")
    assert got.value == pytest.approx(1.6)
    assert parse_answer(chain + "No.", "yes_no", "bool", question="Do they form a right triangle?").value is False
    # a chain that never closes gave no answer: nothing in it counts
    assert parse_answer("<think>1. The mug is 2.40 m away", "quantitative", "m").value is None
    assert strip_reasoning("<THINK>x</THINK> Yes") == "Yes" and strip_reasoning("plain") == "plain"


def test_training_on_a_dataset_with_reasoning_learns_the_chains(synth_dir, tmp_path):
    from spatialforge.cli.main import main
    from spatialforge.vlmtrain.data import SpatialExamples

    out = tmp_path / "out"
    assert main(["generate", str(synth_dir), "--out", str(out), "--no-progress", "--qa-per-image", "2",
                 "--composite", "2", "--with-reasoning"]) == 0
    answers = [m["content"][0]["text"] for i in range(len(SpatialExamples(out, 8)))
               for m in SpatialExamples(out, 8).messages(i) if m["role"] == "assistant"]
    chains = [a for a in answers if a.startswith("<think>")]
    assert chains and len(chains) < len(answers)  # composite answers carry their chain, the engine's do not
    plain = tmp_path / "plain"
    assert main(["generate", str(synth_dir), "--out", str(plain), "--no-progress", "--qa-per-image", "2",
                 "--composite", "2"]) == 0
    assert not any(m["content"][0]["text"].startswith("<think>") for i in range(len(SpatialExamples(plain, 8)))
                   for m in SpatialExamples(plain, 8).messages(i) if m["role"] == "assistant")
