"""Caption ambiguity from text embeddings (pure numpy).

Captions whose embeddings are nearly parallel ("sofa" / "couch", "mug" / "coffee mug") name the
same kind of thing even when the QA engine's word rules see no collision. They are grouped here
and handed to the QA engine's disambiguation (``ObjectAnnotation.group``), or dropped.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from spatialforge.errors import ConfigError

__all__ = ["near_duplicate_groups"]


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
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not math.isfinite(threshold):
        raise ConfigError(f"threshold must be a finite number (cosine similarity), got {threshold!r}")
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be an (N, D) array, got shape {emb.shape}")
    if not np.all(np.isfinite(emb)):
        raise ValueError("embeddings must be finite")
    n = emb.shape[0]
    parent = list(range(n))
    if n < 2 or emb.shape[1] == 0:
        return parent
    norms = np.linalg.norm(emb, axis=1)
    valid = norms > 0
    unit = np.where(valid[:, None], emb / np.where(valid, norms, 1.0)[:, None], 0.0)
    sim = unit @ unit.T
    linked = (sim >= threshold) & valid[:, None] & valid[None, :]

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(linked, k=1)), strict=True):
        ri, rj = find(int(i)), find(int(j))
        if ri != rj:  # the smaller index becomes the root, so a root is its group's smallest member
            parent[max(ri, rj)] = min(ri, rj)
    return [find(i) for i in range(n)]
