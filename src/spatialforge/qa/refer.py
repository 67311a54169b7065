"""Ambiguity resolution: a unique referring expression for every object, or none.

Two captions *collide* when they are identical (ignoring case and articles), when one's words
contain the other's ("mug" / "red mug"), when they share a category (head noun: "red mug" /
"blue mug"), or when the objects share an ``ambiguity_group`` (set by the perception stage from
CLIP text similarity, e.g. "sofa" / "couch"). Colliding objects form groups (transitively). An
object alone in its group is "the <caption>". In a group, an object is referred to by a spatial
qualifier that is unique within its group beyond the tie margin ("the red box on the left", "the
leftmost red box", "the nearest red box", "the highest red box"); an object with no unique
qualifier is not referable and no question is asked about it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spatialforge.core.types import SceneObject

__all__ = ["Reference", "caption_phrase", "captions_collide", "head_noun", "resolve_references", "singular"]

_ARTICLES = ("a ", "an ", "the ")
_PREPOSITIONS = {"of", "with", "on", "in", "near", "for", "from", "at", "by", "under", "behind", "next"}


@dataclass(frozen=True)
class Reference:
    """How an object is named in questions; ``axis`` is the qualifier's axis (x, dist, z) or None."""

    text: str
    group: int
    axis: str | None = None


def _strip_article(caption: str) -> str:
    low = caption.lower()
    for art in _ARTICLES:
        if low.startswith(art):
            return caption[len(art):].strip()
    return caption.strip()


def _words(caption: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", _strip_article(caption).lower())


def singular(word: str) -> str:
    """A plural noun's singular by the common English endings (mugs -> mug, boxes -> box, batteries -> battery)."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def head_noun(caption: str) -> str:
    """The category of a caption: its last word before any preposition, singularised."""
    words = _words(caption)
    for i, w in enumerate(words):
        if i > 0 and w in _PREPOSITIONS:
            words = words[:i]
            break
    return singular(words[-1]) if words else ""


def _contains(big: list[str], small: list[str]) -> bool:
    n = len(small)
    return n > 0 and any(big[i:i + n] == small for i in range(len(big) - n + 1))


def captions_collide(a: str, b: str) -> bool:
    wa, wb = _words(a), _words(b)
    if wa == wb or _contains(wa, wb) or _contains(wb, wa):
        return True
    return head_noun(a) != "" and head_noun(a) == head_noun(b)


def caption_phrase(caption: str) -> str:
    """``"red mug"`` -> ``"the red mug"`` (an existing article is replaced)."""
    text = _strip_article(caption)
    return f"the {text[0].lower() + text[1:] if text[:1].isupper() and not text[:2].isupper() else text}"


def _groups(objects: Sequence[SceneObject]) -> list[int]:
    parent = list(range(len(objects)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(objects)):
        for j in range(i + 1, len(objects)):
            same_group = objects[i].group is not None and objects[i].group == objects[j].group
            if same_group or captions_collide(objects[i].caption, objects[j].caption):
                parent[find(i)] = find(j)
    return [find(i) for i in range(len(objects))]


def _qualifiers(m: SceneObject, others: list[SceneObject], margin: float, vertical_ok: bool
                ) -> list[tuple[str, str, bool]]:
    """Unique qualifiers of ``m`` within its group: (name, axis, is_max)."""
    out = []
    x, u = m.center[0], m.image_centroid[0]
    if all(x + margin < o.center[0] and u < o.image_centroid[0] for o in others):
        out.append(("left", "x", False))
    if all(x - margin > o.center[0] and u > o.image_centroid[0] for o in others):
        out.append(("right", "x", True))
    d = m.camera_distance
    if all(d + margin < o.camera_distance for o in others):
        out.append(("near", "dist", False))
    if all(d - margin > o.camera_distance for o in others):
        out.append(("far", "dist", True))
    if vertical_ok:
        z = m.center[2]
        if all(z - margin > o.center[2] for o in others):
            out.append(("high", "z", True))
        if all(z + margin < o.center[2] for o in others):
            out.append(("low", "z", False))
    return out


_PAIR_FORMS = {
    "left": "the {c} on the left", "right": "the {c} on the right",
    "near": "the nearer {c}", "far": "the farther {c}",
    "high": "the higher {c}", "low": "the lower {c}",
}
_GROUP_FORMS = {
    "left": "the leftmost {c}", "right": "the rightmost {c}",
    "near": "the nearest {c}", "far": "the farthest {c}",
    "high": "the highest {c}", "low": "the lowest {c}",
}


def resolve_references(
    objects: Sequence[SceneObject],
    *,
    margin: float,
    vertical_ok: bool,
    rng: np.random.Generator,
) -> dict[int, Reference]:
    """Referring expression for every referable object id (unreferable objects are absent)."""
    roots = _groups(objects)
    refs: dict[int, Reference] = {}
    for i, obj in enumerate(objects):
        members = [o for j, o in enumerate(objects) if roots[j] == roots[i] and j != i]
        base = _strip_article(obj.caption)
        if not members:
            refs[obj.id] = Reference(caption_phrase(obj.caption), roots[i])
            continue
        quals = _qualifiers(obj, members, margin, vertical_ok)
        if not quals:
            continue
        name, axis, _ = quals[int(rng.integers(len(quals)))]
        forms = _PAIR_FORMS if len(members) == 1 else _GROUP_FORMS
        text = forms[name].format(c=caption_phrase(base)[4:])
        refs[obj.id] = Reference(text, roots[i], axis)
    return refs
