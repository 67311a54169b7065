"""QA synthesis on hand-built scene graphs (spatialforge.qa.generator)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from spatialforge.core.types import Box3D, CameraIntrinsics, Gravity, QAPair, SceneGraph, SceneObject
from spatialforge.errors import ConfigError
from spatialforge.qa.catalog import CATALOG, Skip
from spatialforge.qa.generator import QAConfig, generate_qa, scene_rng

CAM = np.array([0.0, 0.0, 1.5])
FX, CX, CY = 500.0, 320.0, 240.0
INTR = CameraIntrinsics(fx=FX, fy=FX, cx=CX, cy=CY, width=640, height=480)
_YES = ("Yes", "Correct", "Indeed", "That's right", "Yep", "Absolutely")
_NO = ("No", "Nope", "Actually", "Not", "Incorrect")


def obj(oid: int, caption: str, x: float, y: float, z: float, w: float, d: float, h: float, *,
        size_reliable: bool = True, footprint_reliable: bool = True) -> SceneObject:
    c = np.array([x, y, z], dtype=float)
    half = np.array([w, d, h]) / 2
    return SceneObject(
        id=oid, caption=caption, box=Box3D(c, np.array([w, d, h]), 0.0), aabb_min=c - half, aabb_max=c + half,
        width=max(w, d), depth=min(w, d), height=h, camera_distance=float(np.linalg.norm(c - CAM)),
        n_points=500, pixel_count=400, image_centroid=(CX + FX * x / y, CY - FX * (z - 1.5) / y),
        image_bbox=(0, 0, 10, 10), truncated=False, occluded_fraction=0.0, size_reliable=size_reliable,
        footprint_reliable=footprint_reliable,
    )


def objects(flags: dict[int, dict] | None = None) -> list[SceneObject]:
    """Seven objects; three share "red box" and the middle one of those (id 2) is not referable."""
    objs = [
        obj(1, "red box", -1.0, 2.0, 0.3, 0.4, 0.3, 0.3),
        obj(2, "red box", 0.0, 2.7, 0.3, 0.4, 0.3, 0.3),
        obj(3, "red box", 1.0, 3.2, 0.3, 0.4, 0.3, 0.3),
        obj(4, "mug", 0.5, 1.6, 0.8, 0.1, 0.08, 0.12),
        obj(5, "floor lamp", -1.5, 3.5, 0.8, 0.4, 0.4, 1.6),
        obj(6, "potted plant", 1.6, 2.2, 0.5, 0.5, 0.45, 1.0),
        obj(7, "chair", -0.4, 4.0, 0.45, 0.5, 0.5, 0.9),
    ]
    return [dataclasses.replace(o, **(flags or {}).get(o.id, {})) for o in objs]


def graph(scene_id: str = "scene", source: str = "plane",
          objs: list[SceneObject] | None = None) -> SceneGraph:
    grav = Gravity(source=source, R=np.eye(3), t=np.array([0.0, 0.0, 1.5]),
                   camera_height=1.5 if source == "plane" else None)
    return SceneGraph(scene_id=scene_id, intrinsics=INTR, gravity=grav,
                      objects=tuple(objects() if objs is None else objs))


def run(g=None, **cfg):
    cfg.setdefault("qa_per_image", 30)
    return generate_qa(g or graph(), QAConfig(**cfg))


def many(seeds=range(12), g=None, **cfg) -> list[tuple[QAPair, dict[int, str]]]:
    out = []
    for seed in seeds:
        res = run(g, seed=seed, **cfg)
        out.extend((qa, res.references) for qa in res.qa)
    return out


def by_role(qa: QAPair, g: SceneGraph) -> tuple[SceneObject, ...]:
    roles = dict(zip(qa.roles, qa.subjects, strict=True))
    return tuple(g.object(roles[r]) for r in "ABC"[:len(qa.subjects)])


# ---------------------------------------------------------------- basics

def test_count_and_ids():
    for n in (1, 5, 12, 40):
        res = run(qa_per_image=n, seed=1)
        assert 0 < len(res.qa) <= n
        assert [qa.id for qa in res.qa] == [f"scene-{i:03d}" for i in range(len(res.qa))]
        assert len(res.qa) + res.shortfall == n
    res = run(qa_per_image=12, seed=1)
    assert len(res.qa) == 12  # the scene has plenty to ask


def test_deterministic_for_seed_and_scene():
    a = run(seed=3)
    b = run(seed=3)
    assert [q.to_dict() for q in a.qa] == [q.to_dict() for q in b.qa]
    assert a.references == b.references
    assert [q.to_dict() for q in run(seed=4).qa] != [q.to_dict() for q in a.qa]
    other = generate_qa(graph("other"), QAConfig(qa_per_image=30, seed=3))
    assert [(q.question, q.answer) for q in other.qa] != [(q.question, q.answer) for q in a.qa]
    assert all(q.id.startswith("other-") for q in other.qa)


def test_scene_rng_depends_only_on_its_inputs():
    x = scene_rng(1, "s", "qa").random(5)
    assert np.array_equal(x, scene_rng(1, "s", "qa").random(5))
    assert not np.array_equal(x, scene_rng(2, "s", "qa").random(5))
    assert not np.array_equal(x, scene_rng(1, "t", "qa").random(5))
    assert not np.array_equal(x, scene_rng(1, "s", "references").random(5))


@pytest.mark.parametrize(("share", "quant"), [(1.0, True), (0.0, False)])
def test_quantitative_share_extremes(share, quant):
    for seed in range(5):
        res = run(seed=seed, qa_per_image=15, quantitative_share=share)
        assert len(res.qa) == 15
        assert all((qa.kind == "quantitative") == quant for qa in res.qa)


def test_quantitative_share_half():
    res = run(seed=0, qa_per_image=20, quantitative_share=0.5)
    assert sum(qa.kind == "quantitative" for qa in res.qa) == 10


def test_falls_back_to_the_other_category():
    res = run(seed=0, qa_per_image=6, quantitative_share=1.0, types=("left_predicate", "behind_predicate"))
    assert len(res.qa) == 6
    assert {qa.type for qa in res.qa} <= {"left_predicate", "behind_predicate"}


def test_types_and_exclude_types_are_respected():
    res = run(seed=2, types=("distance", "tall_choice", "closer_to_choice"))
    assert {qa.type for qa in res.qa} <= {"distance", "tall_choice", "closer_to_choice"}
    assert res.qa
    pairs = many(exclude_types=("distance", "left_predicate"))
    assert not {qa.type for qa, _ in pairs} & {"distance", "left_predicate"}


# ---------------------------------------------------------------- values, roles and subjects

def test_value_matches_evaluate_on_roles():
    g = graph()
    ctx = QAConfig().context()
    pairs = many(g=g)
    assert len({qa.type for qa, _ in pairs}) >= 25
    for qa, _ in pairs:
        t = CATALOG[qa.type]
        assert qa.kind == t.kind and qa.unit == t.unit
        assert sorted(qa.roles) == list("ABC"[:t.arity])
        assert len(set(qa.subjects)) == t.arity
        expected = t.evaluate(by_role(qa, g), ctx)
        assert not isinstance(expected, Skip)
        if t.kind == "quantitative":
            assert qa.value == pytest.approx(float(expected)), qa
        else:
            assert qa.value == expected, qa
        if t.kind == "choice":
            assert qa.value in qa.subjects[:3]
            assert qa.value in (by_role(qa, g)[0].id, by_role(qa, g)[1].id)


def test_subjects_follow_the_order_of_the_question():
    swapped = 0
    for qa, refs in many():
        text = qa.question.lower()
        positions = []
        for sid in qa.subjects:
            ref = refs[sid].lower()
            assert text.count(ref) >= 1, (qa.question, ref)
            positions.append(text.index(ref))
        assert positions == sorted(positions), (qa.question, qa.subjects, qa.roles)
        swapped += qa.roles[:2] == ("B", "A")
    assert swapped > 0  # some templates name B first, so roles really differ from the order


def test_answer_polarity_and_text():
    n_yes = n_no = 0
    for qa, refs in many():
        assert qa.question.endswith("?") and qa.answer.endswith(".")
        assert qa.question[0].isupper() and qa.answer[0].isupper()
        assert "{" not in qa.question + qa.answer
        if qa.kind == "yes_no":
            assert isinstance(qa.value, bool)
            assert qa.answer.startswith(_YES) == qa.value, qa
            assert qa.answer.startswith(_NO) == (not qa.value), qa
            n_yes += qa.value
            n_no += not qa.value
        elif qa.kind == "choice":
            assert refs[qa.value].lower() in qa.answer.lower()
        else:
            assert any(c.isdigit() for c in qa.answer)
    assert n_yes and n_no


def test_unreferable_objects_are_never_asked_about():
    g = graph()
    pairs = many(g=g)
    res = run(g, seed=0)
    assert res.unreferable == [2]
    assert 2 not in res.references
    assert set(res.references) == {1, 3, 4, 5, 6, 7}
    for qa, refs in pairs:
        assert 2 not in qa.subjects
        # every "red box" mention is one of the qualified references of ids 1 and 3
        text = qa.question.lower()
        mentions = text.count("red box")
        qualified = sum(text.count(refs[i]) for i in (1, 3) if i in qa.subjects)
        assert mentions == qualified, qa.question


def test_camera_prior_gravity_skips_vertical_types():
    g = graph(source="camera_prior")
    pairs = many(g=g)
    assert pairs
    assert not any(CATALOG[qa.type].needs_gravity for qa, _ in pairs)
    for qa, refs in pairs:
        assert "higher" not in refs[qa.subjects[0]] and "lower" not in refs[qa.subjects[0]]
    res = run(g, seed=0)
    assert res.skips["no_gravity"] > 0
    # the same scene with a support plane does ask them
    assert any(CATALOG[qa.type].needs_gravity for qa, _ in many(range(3)))


def test_unreliable_sizes_are_not_used_for_size_types():
    g = graph(objs=objects({6: {"size_reliable": False}}))
    pairs = many(range(20), g=g)
    size_types = {qa.type for qa, _ in pairs if CATALOG[qa.type].needs_size}
    assert size_types
    for qa, _ in pairs:
        if CATALOG[qa.type].needs_size:
            assert 6 not in qa.subjects, qa
    assert any(6 in qa.subjects for qa, _ in pairs)  # still asked about in the other types


def test_footprint_types_need_an_observed_footprint():
    g = graph(objs=objects({5: {"footprint_reliable": False}}))
    pairs = many(range(20), g=g)
    assert any(CATALOG[qa.type].needs_footprint for qa, _ in pairs)
    for qa, _ in pairs:
        if CATALOG[qa.type].needs_footprint:
            assert 5 not in qa.subjects, qa
    assert any(5 in qa.subjects and CATALOG[qa.type].needs_size for qa, _ in pairs)  # height etc. still asked


def test_no_duplicate_questions_per_scene():
    res = run(seed=5, qa_per_image=40)
    keys = [(qa.type, tuple(sorted(zip(qa.roles, qa.subjects, strict=True)))) for qa in res.qa]
    assert len(keys) == len(set(keys))
    assert len({qa.question for qa in res.qa}) == len(res.qa)


def test_answer_not_given_away_by_the_reference():
    # objects 1 and 3 are named by an extreme (left/right or near/far); a relation along that axis
    # between them would be answered by their names
    for qa, refs in many(range(20)):
        if set(qa.subjects) >= {1, 3}:
            t = CATALOG[qa.type]
            if t.axis == "x":
                assert not any(w in refs[1] + refs[3] for w in ("left", "right")), qa
            if t.axis == "dist":
                assert not any(w in refs[1] + refs[3] for w in ("near", "far")), qa


def test_too_few_objects_gives_shortfall():
    g = graph(objs=objects()[3:4])  # a single mug
    res = generate_qa(g, QAConfig(qa_per_image=4, types=("distance", "left_predicate")))
    assert res.qa == [] and res.shortfall == 4


# ---------------------------------------------------------------- config validation

@pytest.mark.parametrize("kwargs", [
    {"qa_per_image": 0}, {"qa_per_image": -3}, {"quantitative_share": 1.5}, {"quantitative_share": -0.1},
    {"units": "furlongs"}, {"types": ("nope",)}, {"exclude_types": ("nope",)}, {"margin_m": -1.0},
    {"types": ("distance",), "exclude_types": ("distance",)},
])
def test_config_validation(kwargs):
    with pytest.raises(ConfigError):
        QAConfig(**kwargs)


def test_config_valid_and_units():
    cfg = QAConfig(units="imperial", types=("distance",), qa_per_image=5)
    assert [t.id for t in cfg.enabled_types()] == ["distance"]
    res = generate_qa(graph(), cfg)
    assert res.qa
    assert all(any(w in qa.answer for w in ("feet", "foot", "inch")) for qa in res.qa)
    assert QAConfig().to_dict()["types"] is None


# ---------------------------------------------------------------- documented defaults

def test_eval_context_defaults_match_config():
    ctx = QAConfig().context()
    assert (ctx.margin_m, ctx.margin_rel, ctx.min_length_m) == (0.10, 0.15, 0.05)
    from spatialforge.qa.catalog import EvalContext
    assert EvalContext() == ctx


def test_documented_tie_margin_matches_qaconfig():
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "conventions.md").read_text()
    m = re.search(r"defaults: (\d+(?:\.\d+)?) m for positions and distances, (\d+(?:\.\d+)?) % for sizes", doc)
    assert m, "the tie margin default is no longer documented in docs/conventions.md"
    cfg = QAConfig()
    assert float(m.group(1)) == pytest.approx(cfg.margin_m)
    assert float(m.group(2)) / 100 == pytest.approx(cfg.margin_rel)


# ---------------------------------------------------------------- more questions than the scene holds

def _askable(g: SceneGraph, cfg: QAConfig) -> set[tuple[str, tuple[int, ...]]]:
    """Every (type, subjects in role order) the generator may ask, by brute force over all permutations."""
    import itertools

    from spatialforge.qa.refer import resolve_references

    refs = resolve_references(g.objects, margin=cfg.margin_m, vertical_ok=g.gravity.reliable,
                              rng=scene_rng(cfg.seed, g.scene_id, "references"))
    objs = [o for o in g.objects if o.id in refs]
    found = set()
    for t in cfg.enabled_types():
        pool = [o for o in objs if (o.size_reliable or not t.needs_size)
                and (o.footprint_reliable or not t.needs_footprint)]
        for subj in itertools.permutations(pool, t.arity):
            if (t.axis is not None and refs[subj[0].id].group == refs[subj[1].id].group
                    and t.axis in (refs[subj[0].id].axis, refs[subj[1].id].axis)):
                continue
            if not isinstance(t.evaluate(subj, cfg.context()), Skip):
                found.add((t.id, tuple(o.id for o in subj)))
    return found


def _key(qa: QAPair) -> tuple[str, tuple[int, ...]]:
    roles = dict(zip(qa.roles, qa.subjects, strict=True))
    return qa.type, tuple(roles[r] for r in "ABC"[:len(qa.subjects)])


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_asking_for_more_than_the_pool_gives_every_question_once_and_counts_the_shortfall(share):
    cfg = QAConfig(qa_per_image=100_000, quantitative_share=share, seed=3)
    res = generate_qa(graph(), cfg)
    keys = [_key(qa) for qa in res.qa]
    assert len(keys) == len(set(keys))  # no question twice
    assert set(keys) == _askable(graph(), cfg)  # and every askable one, whatever the share
    assert res.shortfall == 100_000 - len(keys)
    assert sum(res.skips.values()) < 50 * len(keys)  # it stops at the pool instead of drawing 100,000 times


def test_a_category_running_out_is_filled_from_the_other():
    g = graph(objs=objects()[3:6])  # three objects: few quantitative questions
    cfg = QAConfig(qa_per_image=60, quantitative_share=1.0, seed=1)
    quant = {k for k in _askable(g, cfg) if CATALOG[k[0]].kind == "quantitative"}
    res = generate_qa(g, cfg)
    assert len(quant) < 60 and len(res.qa) == min(60, len(_askable(g, cfg)))
    assert {_key(q) for q in res.qa if q.kind == "quantitative"} == quant
