"""Caption ambiguity: text embeddings and the QA engine's word rules (numpy only).

Captions whose embeddings are nearly parallel ("sofa" / "couch", "mug" / "coffee mug") name the
same kind of thing even when the QA engine's word rules see no collision: :func:`near_duplicate_groups`
groups them, and the groups are handed to the QA engine's disambiguation (``ObjectAnnotation.group``).
:func:`caption_groups` adds the collisions the QA engine itself sees
(:func:`spatialforge.qa.refer.captions_collide`: the same words, one caption's words inside the
other's - "cup" / "red cup" -, or the same head noun), so that ``--drop-ambiguous`` drops every
object the QA engine could not name alone, with or without a text embedder.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spatialforge.perception.checks import check_number, count
from spatialforge.qa.refer import captions_collide

__all__ = ["caption_groups", "near_duplicate_groups"]


def _components(n: int, links: Sequence[tuple[int, int]]) -> list[int]:
    """Connected components of ``n`` nodes (union-find); a component's id is its smallest member."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in links:
        ri, rj = find(int(i)), find(int(j))
        if ri != rj:  # the smaller index becomes the root, so a root is its group's smallest member
            parent[max(ri, rj)] = min(ri, rj)
    return [find(i) for i in range(n)]


def near_duplicate_groups(embeddings: np.ndarray, threshold: float) -> list[int]:
    """Group rows whose embeddings nearly coincide; return one group id per row.

    Two rows are linked when the cosine similarity of their vectors is ``>= threshold``; groups are
    the connected components of these links (union-find, so the relation is made transitive: if
    "sofa" ~ "couch" and "couch" ~ "settee", all three share a group). A group's id is the index
    of its smallest member, so ids are deterministic and a row that links to nothing is its own
    group (``ids[i] == i``). Rows with a zero (or empty, D = 0) vector link to nothing.

    The integrator uses it on :meth:`ClipTextEmbedder.embed_text` vectors of the object captions of
    one image: objects whose captions fall in the same group ("sofa" vs "couch") cannot be told
    apart by name, so questions naming them are ambiguous.

    Args:
        embeddings: (N, D) array of finite numbers; rows need not be unit norm.
        threshold: cosine-similarity cut, a finite number (CLIP text: about 0.9 for synonyms).

    Returns:
        ``list[int]`` of length N.
    """
    check_number(threshold, "threshold", note=" (cosine similarity)")
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be an (N, D) array, got shape {emb.shape}")
    if not np.all(np.isfinite(emb)):
        raise ValueError("embeddings must be finite")
    n = emb.shape[0]
    if n < 2 or emb.shape[1] == 0:
        return list(range(n))
    norms = np.linalg.norm(emb, axis=1)
    valid = norms > 0
    unit = np.where(valid[:, None], emb / np.where(valid, norms, 1.0)[:, None], 0.0)
    sim = unit @ unit.T
    linked = (sim >= threshold) & valid[:, None] & valid[None, :]
    return _components(n, list(zip(*np.nonzero(np.triu(linked, k=1)), strict=True)))


def caption_groups(captions: Sequence[str], embeddings: np.ndarray, threshold: float) -> list[int]:
    """Groups of the captions of one image that name the same kind of thing; one group id per caption.

    Two captions are linked when their embeddings are near duplicates (:func:`near_duplicate_groups`
    with ``threshold``; an (N, 0) array, as a disabled embedder gives, links nothing) or when they
    collide by the QA engine's rules (:func:`spatialforge.qa.refer.captions_collide`). Groups are
    the connected components; a group's id is the index of its smallest member.

    >>> caption_groups(["cup", "red cup", "chair"], np.zeros((3, 0)), 0.9)
    [0, 0, 2]
    """
    n = len(captions)
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] != n:
        raise ValueError(f"embeddings must be an ({n}, D) array for {count(n, 'caption')}, got shape {emb.shape}")
    by_embedding = near_duplicate_groups(emb, threshold)
    links = [(i, j) for i in range(n) for j in range(i + 1, n)
             if by_embedding[i] == by_embedding[j] or captions_collide(captions[i], captions[j])]
    return _components(n, links)
