"""Configs made of sections (``[model]``, ``[train]`` ...), each a frozen dataclass (torch-free).

Shared by the AffordanceCLIP and the VLM-training configs: a TOML/JSON table per section, and
``section.key=value`` overrides from the command line, both converted to the type each field is
annotated with (``int``, ``float``, ``str``, ``bool``, ``tuple[str, ...]``, ``X | None``). Unknown
sections and keys are errors that name the source and list what is known.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

from spatialforge.errors import ConfigError

__all__ = ["apply_section_overrides", "coerce_value", "sections_from_dict"]

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")

# a field-specific conversion: (value, where) -> converted value, or NotImplemented to use the type
Special = Callable[[Any, str], Any]


def coerce_value(value: Any, annotation: Any, where: str) -> Any:
    """Check / convert ``value`` to a field's annotated type (annotations are strings here)."""
    options = str(annotation).replace(" ", "").split("|")
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and "None" in options):
        if "None" in options:
            return None
        raise ConfigError(f"{where} cannot be none")
    if isinstance(value, str) and "str" in options:  # "str | tuple[str, ...]": a string stays one string
        return value
    for opt in options:
        if opt.startswith("tuple["):
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                return tuple(value)
    for opt in options:
        kind = _TYPES.get(opt)
        if kind is None:
            continue
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
                return value.lower() in _TRUE
            continue
        if isinstance(value, bool):
            continue
        if kind is float and isinstance(value, (int, float)):
            return float(value)
        if kind is int and isinstance(value, int):
            return value
        if kind is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if kind is str and isinstance(value, str):
            return value
        if isinstance(value, str) and kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                continue
    raise ConfigError(f"{where}: expected {annotation}, got {value!r}")


def _convert(value: Any, field_type: Any, where: str, special: Special | None) -> Any:
    if special is not None:
        out = special(value, where)
        if out is not NotImplemented:
            return out
    return coerce_value(value, field_type, where)


def sections_from_dict(data: Mapping[str, Any], classes: Mapping[str, type], source: str,
                       special: Special | None = None) -> dict[str, Any]:
    """One dataclass instance per section from a parsed file (missing sections get the defaults)."""
    unknown = sorted(set(data) - set(classes))
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {', '.join(unknown)} (known: {', '.join(classes)})")
    parts = {}
    for name, klass in classes.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        known = {f.name: f for f in fields(klass)}
        bad = sorted(set(table) - set(known))
        if bad:
            raise ConfigError(f"{source}: unknown key(s) in [{name}]: {', '.join(bad)} "
                              f"(known: {', '.join(sorted(known))})")
        try:
            parts[name] = klass(**{k: _convert(v, known[k].type, f"{name}.{k}", special) for k, v in table.items()})
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return parts


def apply_section_overrides(sections: Mapping[str, Any], overrides: Sequence[str], *, example: str = "train.lr=1e-4",
                            special: Special | None = None) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to the section instances; returns the new sections."""
    out = dict(sections)
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise ConfigError(f"override {item!r}: expected section.key=value (e.g. {example})")
        if section not in out:
            raise ConfigError(f"override {item!r}: unknown section {section!r} (known: {', '.join(out)})")
        known = {f.name: f for f in fields(type(out[section]))}
        if name not in known:
            raise ConfigError(f"override {item!r}: unknown key {name!r} in [{section}] "
                              f"(known: {', '.join(sorted(known))})")
        coerced = _convert(value.strip(), known[name].type, key.strip(), special)
        try:
            out[section] = replace(out[section], **{name: coerced})
        except ConfigError as exc:
            raise ConfigError(f"override {item!r}: {exc}") from None
    return out
