"""The composite benchmark answered by a chain: a scripted planner (a deterministic fake LLM that follows
each type's plan) calls the real scene-graph tools, concludes from their results only, and its answer text
goes through the evaluation's parser and scorer. With exact tools the chain scores 100 %; with one tool
that measures 30 % long, it does not (the check can fail)."""

from __future__ import annotations

import pytest

from spatialforge.eval.answers import parse_answer
from spatialforge.eval.benchmarks import composite_benchmark
from spatialforge.eval.metrics import score_item
from spatialforge.qa.composite import COMPOSITE_TYPES, CompositeConfig, generate_composite
from spatialforge.reason.agent import run_agent
from spatialforge.reason.llm import ScriptedPlanner
from spatialforge.reason.tools import SceneTools
from tests.test_composite import graphs  # noqa: F401  (the module fixture: 8 synthetic scene graphs)

CFG = CompositeConfig(per_scene=40, seed=5)


def _answer_text(item):
    def render(value) -> str:
        if value is None:
            return "I cannot tell."
        if item.kind == "yes_no":
            return "Yes." if value else "No."
        if item.kind == "choice":
            return f"It is {item.options[item.meta['cand_ids'].index(value)]}."
        if item.unit == "clock":
            return f"At {value} o'clock."
        if item.unit == "count":
            return f"There are {value} objects."
        return f"About {value:.3f} m."

    return render


def _chain_scores(graphs, tools_for, cfg: CompositeConfig = CFG) -> list[dict]:  # noqa: F811
    records = []
    for g in graphs:
        pairs = {q.id: q for q in generate_composite(g, None, cfg)}
        for item in composite_benchmark([(g, None)], cfg).items:
            q = pairs[item.id]
            t = COMPOSITE_TYPES[q.type]
            named = tuple(s for s, r in zip(q.subjects, q.roles, strict=True) if r != "X")
            if item.kind == "choice":  # the candidates in the item's option order
                subj = dict(zip(item.meta["names"], item.meta["subjects"], strict=True))
                item.meta["cand_ids"] = [subj[name] for name in item.options]
            planner = ScriptedPlanner(t.plan(named, g), lambda rs, t=t, named=named: t.conclude(named, rs),
                                      answer_text=_answer_text(item))
            trace = run_agent(item.question, planner, tools_for(g))
            assert trace.status == "answered", trace.to_json()
            parsed = parse_answer(trace.answer, item.kind, item.unit, item.options, question=item.question,
                                  qtype=item.type)
            rec = score_item(item, parsed, trace.answer)
            records.append(rec | {"steps": len(trace.steps)})
    return records


def _right(rec) -> bool:
    if rec["kind"] == "quantitative" and rec["unit"] == "m":
        return bool(rec["within_25pct"]) and abs(rec["value"] - rec["truth"]) <= 0.0005 + 1e-9
    return rec["correct"] is True


@pytest.fixture(scope="module")
def many_graphs(graphs):  # noqa: F811
    """40 scenes: enough that every case of every type comes up (e.g. B and C overlapping in fits_between)."""
    from spatialforge.core.types import CameraIntrinsics, ObjectAnnotation, RGBDScene
    from spatialforge.geometry.scene_graph import build_scene_graph
    from spatialforge.synth import generate_scene

    out = list(graphs)
    for i in range(32):
        s = generate_scene(i, seed=11)
        out.append(build_scene_graph(RGBDScene(s.scene_id, s.image, s.depth, s.instances,
                                               CameraIntrinsics(**s.camera),
                                               tuple(ObjectAnnotation(o["id"], o["caption"]) for o in s.objects))))
    return out


def test_the_scripted_chain_with_scene_graph_tools_scores_100_percent(many_graphs):
    records = _chain_scores(many_graphs, lambda g: SceneTools(g))
    assert len(records) >= 500 and {r["type"] for r in records} == set(COMPOSITE_TYPES)
    fits = [r for r in records if r["type"] == "fits_between"]
    assert any(r["truth"] is True for r in fits) and any(r["truth"] is False for r in fits)
    wrong = [r for r in records if not _right(r)]
    assert not wrong, wrong[:3]
    assert max(r["steps"] for r in records) <= 8  # within the default step limit


class _LongTape(SceneTools):
    """A measuring tool that reads 3D distances 30 % long."""

    def call(self, name, args):
        out = super().call(name, args)
        if name == "measure" and args.get("quantity") == "distance":
            out = dict(out, value=out["value"] * 1.3)
        return out


def test_the_chain_fails_where_a_tool_is_wrong(graphs):  # noqa: F811
    records = _chain_scores(graphs, lambda g: _LongTape(g))
    by_type = {}
    for r in records:
        by_type.setdefault(r["type"], []).append(_right(r))
    assert not all(by_type["isosceles_triangle"] + by_type["route_length"])  # they use 3D distances
    assert all(by_type["tallest_of"])  # heights are not affected


def test_imperial_questions_are_answered_right_too(graphs):  # noqa: F811
    # the questions say "within 3.3 feet" / "0.5 metres" in feet and inches: the tools still measure metres
    records = _chain_scores(graphs[:4], lambda g: SceneTools(g), CompositeConfig(per_scene=20, seed=1,
                                                                                 units="imperial"))
    assert records and all(_right(r) for r in records)
