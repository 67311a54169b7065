"""Small wording helpers for messages people read: counts with the right plural, short lists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["count", "shown"]


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``count(1, "image") == "1 image"``, ``count(2, "box", "boxes") == "2 boxes"``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def shown(items: Sequence[Any], k: int = 5) -> str:
    """The first ``k`` items, comma-separated, and how many more there are."""
    return ", ".join(str(i) for i in items[:k]) + (f" and {len(items) - k} more" if len(items) > k else "")
