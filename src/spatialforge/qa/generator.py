"""Sample and render spatial QA pairs for one scene graph, deterministically for a seed."""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from spatialforge.core.types import QAPair, SceneGraph, SceneObject
from spatialforge.errors import ConfigError
from spatialforge.qa.catalog import CATALOG, EvalContext, QuestionType, Skip
from spatialforge.qa.numbers import UNIT_SYSTEMS, say_clock, say_length, say_ratio
from spatialforge.qa.refer import Reference, resolve_references

__all__ = ["QAConfig", "QAResult", "TypeSelection", "generate_qa", "scene_rng"]

_PLACEHOLDER = re.compile(r"\{([A-Z])\}")


class TypeSelection:
    """What the QA and composite configs share: units, the near-tie margins and a selection of types.

    A subclass names its catalogue (``_catalog()``: id -> type) and a word for errors (``_WHAT``); it has
    the fields ``units``, ``margin_m``, ``margin_rel``, ``min_length_m``, ``types`` and ``exclude_types``.
    """

    _WHAT = "question"

    @classmethod
    def _catalog(cls) -> dict[str, Any]:
        raise NotImplementedError

    def _check_selection(self) -> None:
        if self.units not in UNIT_SYSTEMS:
            raise ConfigError(f"units must be one of {', '.join(UNIT_SYSTEMS)}, got {self.units!r}")
        for name in ("margin_m", "margin_rel", "min_length_m"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}")
        known = self._catalog()
        unknown = [t for t in (self.types or ()) + tuple(self.exclude_types) if t not in known]
        if unknown:
            raise ConfigError(f"unknown {self._WHAT} type(s): {', '.join(unknown)} ({self._known_hint()})")
        if not self.enabled_types():
            raise ConfigError(f"no {self._WHAT} type left after the types / exclude-types selection")

    def _known_hint(self) -> str:
        return "known: " + ", ".join(self._catalog())

    def enabled_types(self) -> list[Any]:
        known = self._catalog()
        ids = self.types if self.types else tuple(known)
        return [known[t] for t in ids if t not in self.exclude_types]

    def context(self) -> EvalContext:
        return EvalContext(margin_m=self.margin_m, margin_rel=self.margin_rel, min_length_m=self.min_length_m)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["types"] = list(self.types) if self.types else None
        d["exclude_types"] = list(self.exclude_types)
        return d


@dataclass(frozen=True)
class QAConfig(TypeSelection):
    """QA synthesis settings. ``quantitative_share`` is the target share of quantitative questions."""

    qa_per_image: int = 10
    quantitative_share: float = 0.5
    units: str = "metric"
    margin_m: float = 0.10
    margin_rel: float = 0.15
    min_length_m: float = 0.05
    types: tuple[str, ...] | None = None
    exclude_types: tuple[str, ...] = ()
    attempts_per_question: int = 40
    seed: int = 0

    def __post_init__(self) -> None:
        if self.qa_per_image < 1:
            raise ConfigError(f"qa_per_image must be >= 1, got {self.qa_per_image}")
        if not 0.0 <= self.quantitative_share <= 1.0:
            raise ConfigError(f"quantitative_share (--mix) must be in [0, 1], got {self.quantitative_share}")
        self._check_selection()

    @classmethod
    def _catalog(cls) -> dict[str, QuestionType]:
        return CATALOG

    def _known_hint(self) -> str:
        return "see `spatialforge catalog`"


@dataclass
class QAResult:
    """The QA pairs of one scene and the bookkeeping of what was not asked, and why."""

    qa: list[QAPair]
    references: dict[int, str]
    unreferable: list[int] = field(default_factory=list)
    skips: Counter = field(default_factory=Counter)
    shortfall: int = 0


def scene_rng(seed: int, scene_id: str, stream: str) -> np.random.Generator:
    """A generator that depends only on (seed, scene id, stream): order- and worker-independent."""
    digest = hashlib.sha256(f"{seed}\x00{scene_id}\x00{stream}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _say(t: QuestionType, value: Any, cfg: QAConfig, rng: np.random.Generator) -> str:
    if t.unit == "m":
        return say_length(float(value), cfg.units, rng)
    if t.unit == "ratio":
        return say_ratio(float(value), rng)
    if t.unit == "clock":
        return say_clock(int(value))
    raise AssertionError(f"no phrasing for unit {t.unit}")  # unreachable: catalogue invariant


def _render(t: QuestionType, roles: dict[str, SceneObject], refs: dict[int, Reference], value: Any,
            cfg: QAConfig, rng: np.random.Generator) -> tuple[str, str, list[str]]:
    q_tpl = t.questions[int(rng.integers(len(t.questions)))]
    names = {k: refs[o.id].text for k, o in roles.items()}
    if t.kind == "yes_no":
        pool = t.yes if value else t.no
        a_tpl = pool[int(rng.integers(len(pool)))]
        fields = dict(names)
    elif t.kind == "choice":
        a_tpl = t.answers[int(rng.integers(len(t.answers)))]
        chosen = roles["A"] if roles["A"].id == value else roles["B"]
        other = roles["B"] if chosen is roles["A"] else roles["A"]
        fields = dict(names, X=refs[chosen.id].text, Y=refs[other.id].text)
    else:
        a_tpl = t.answers[int(rng.integers(len(t.answers)))]
        fields = dict(names, value=_say(t, value, cfg, rng))
    order = [m for m in _PLACEHOLDER.findall(q_tpl) if m in roles]
    seen: list[str] = []
    for m in order:
        if m not in seen:
            seen.append(m)
    return _capitalise(q_tpl.format(**names)), _capitalise(a_tpl.format(**fields)), seen


def _eligible(t: QuestionType, graph: SceneGraph, objs: list[SceneObject]) -> list[SceneObject]:
    if t.needs_gravity and not graph.gravity.reliable:
        return []
    if t.needs_size:
        objs = [o for o in objs if o.size_reliable]
    if t.needs_footprint:
        objs = [o for o in objs if o.footprint_reliable]
    return objs if len(objs) >= t.arity else []


def generate_qa(graph: SceneGraph, config: QAConfig | None = None) -> QAResult:
    """QA pairs for ``graph``: up to ``config.qa_per_image``, with the configured quantitative share.

    Only unambiguous, clear-cut questions about well-measured objects are asked; everything not
    asked is counted by reason in ``QAResult.skips``. Deterministic for (seed, scene id).
    """
    cfg = config or QAConfig()
    ctx = cfg.context()
    ref_rng = scene_rng(cfg.seed, graph.scene_id, "references")
    refs = resolve_references(graph.objects, margin=cfg.margin_m, vertical_ok=graph.gravity.reliable,
                              rng=ref_rng)
    result = QAResult(qa=[], references={k: r.text for k, r in refs.items()},
                      unreferable=[o.id for o in graph.objects if o.id not in refs])
    objs = [o for o in graph.objects if o.id in refs]
    rng = scene_rng(cfg.seed, graph.scene_id, "qa")

    by_cat: dict[bool, list[tuple[QuestionType, list[SceneObject]]]] = {True: [], False: []}
    for t in cfg.enabled_types():
        pool = _eligible(t, graph, objs)
        if pool:
            by_cat[t.kind == "quantitative"].append((t, pool))
        elif t.needs_gravity and not graph.gravity.reliable:
            result.skips["no_gravity"] += 1

    # every question is a distinct (type, ordered subjects) pair: at most this many exist in the scene
    capacity = {cat: sum(math.perm(len(pool), t.arity) for t, pool in by_cat[cat]) for cat in (True, False)}
    wanted = min(cfg.qa_per_image, capacity[True] + capacity[False])
    result.shortfall += cfg.qa_per_image - wanted
    n_quant = int(round(wanted * cfg.quantitative_share))
    plan = [True] * n_quant + [False] * (wanted - n_quant)
    asked: set[tuple[str, tuple[int, ...]]] = set()
    dead: set[tuple[str, tuple[int, ...]]] = set()  # pairs that cannot be asked (skips are deterministic)
    tried = {True: 0, False: 0}  # distinct pairs asked or dead, per category
    rest: dict[bool, list] = {}  # per category, once sampling stalls: the untried pairs in a seeded order

    def attempt(cat: bool, t: QuestionType, subjects: tuple[SceneObject, ...]) -> bool:
        key = (t.id, tuple(o.id for o in subjects))
        if key in asked or key in dead:
            result.skips["duplicate" if key in asked else "repeat_of_skipped"] += 1
            return False
        tried[cat] += 1
        if (t.axis is not None and refs[subjects[0].id].group == refs[subjects[1].id].group
                and t.axis in (refs[subjects[0].id].axis, refs[subjects[1].id].axis)):
            result.skips["answer_in_reference"] += 1
            dead.add(key)
            return False
        value = t.evaluate(subjects, ctx)
        if isinstance(value, Skip):
            result.skips[value.reason] += 1
            dead.add(key)
            return False
        asked.add(key)
        roles = dict(zip("ABC", subjects, strict=False))
        question, answer, order = _render(t, roles, refs, value, cfg, rng)
        result.qa.append(QAPair(
            id=f"{graph.scene_id}-{len(result.qa):03d}",
            type=t.id,
            kind=t.kind,
            question=question,
            answer=answer,
            value=value if t.kind != "quantitative" else float(value),
            unit=t.unit,
            subjects=tuple(roles[r].id for r in order),
            roles=tuple(order),
            names=tuple(refs[roles[r].id].text for r in order),
        ))
        return True

    for is_quant in plan:
        # the other category stands in when this one has nothing (left) to ask, as when it has no type at all
        cat = is_quant if tried[is_quant] < capacity[is_quant] else not is_quant
        cands = by_cat[cat]
        if tried[cat] >= capacity[cat]:  # nothing left to ask at all
            result.shortfall += 1
            continue
        made = False
        if cat not in rest:
            for _ in range(cfg.attempts_per_question):
                t, pool = cands[int(rng.integers(len(cands)))]
                pick = rng.choice(len(pool), size=t.arity, replace=False)
                if attempt(cat, t, tuple(pool[int(i)] for i in pick)):
                    made = True
                    break
            if not made:  # random draws stall near exhaustion: go through the untried pairs instead
                rest[cat] = [(t, subj) for t, pool in cands for subj in itertools.permutations(pool, t.arity)
                             if (t.id, tuple(o.id for o in subj)) not in asked | dead]
                order = rng.permutation(len(rest[cat]))
                rest[cat] = [rest[cat][int(i)] for i in order[::-1]]  # popped from the end
        while not made and rest.get(cat):
            t, subjects = rest[cat].pop()
            made = attempt(cat, t, subjects)
        if not made:
            result.shortfall += 1
    return result
