"""Reading configuration files: TOML or JSON, a table at the top level, one clear error otherwise."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from spatialforge.errors import ConfigError

__all__ = ["read_config_file"]


def read_config_file(path: str | Path, what: str = "config") -> dict[str, Any]:
    """The parsed ``.toml`` / ``.json`` file; ``ConfigError`` naming the file for any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise ConfigError(f"{path}: a {what} must be a .toml or .json file")
    try:
        data = json.loads(text) if suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {suffix.lstrip('.').upper()} ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the {what} must be a table/object at the top level")
    return data
