"""Prompts for affordance queries: templates, ensembles, validation (torch-free).

An action ("pour", "cut with") becomes one or more texts through templates; with several
templates the model averages their normalised text embeddings (an ensemble) and renormalises.
Training on referring expressions uses the sentence itself (the ``"{}"`` template).
"""

from __future__ import annotations

from collections.abc import Sequence

from spatialforge.errors import ConfigError

__all__ = ["DEFAULT_TEMPLATES", "TEMPLATE_SETS", "expand_prompts", "normalise_action"]

# Named template sets. "{}" is replaced by the action.
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "plain": ("{}",),
    "something": ("something to {}",),
    "ensemble": ("{}", "something to {}", "the part of an object used to {}", "where to {}"),
}
DEFAULT_TEMPLATES = "ensemble"


def normalise_action(action: str) -> str:
    """``"cut_with"`` -> ``"cut with"``; collapses whitespace; refuses empty prompts."""
    if not isinstance(action, str):
        raise ConfigError(f"a prompt must be a string, got {type(action).__name__} {action!r}")
    text = " ".join(action.replace("_", " ").split())
    if not text:
        raise ConfigError(f"empty prompt {action!r}")
    return text


def _templates(templates: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(templates, str):
        if templates in TEMPLATE_SETS:
            return TEMPLATE_SETS[templates]
        if "{}" in templates:
            return (templates,)
        raise ConfigError(f"unknown template set {templates!r} (known: {', '.join(TEMPLATE_SETS)}, "
                          f"or a template containing '{{}}')")
    out = tuple(templates)
    if not out:
        raise ConfigError("no prompt templates given")
    for t in out:
        if not isinstance(t, str) or "{}" not in t:
            raise ConfigError(f"a prompt template must be a string containing '{{}}', got {t!r}")
    return out


def expand_prompts(actions: Sequence[str], templates: str | Sequence[str] = DEFAULT_TEMPLATES) -> list[list[str]]:
    """For every action, its texts (one per template), e.g. ``[["pour", "something to pour", ...]]``."""
    if isinstance(actions, str):
        actions = [actions]
    ts = _templates(templates)
    return [[t.format(normalise_action(a)) for t in ts] for a in actions]
