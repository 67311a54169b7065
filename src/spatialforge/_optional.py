"""Optional dependencies: import a heavy package only when a feature needs it.

``require("torch", extra="models")`` returns the imported module or raises
:class:`~spatialforge.errors.MissingExtraError` naming the extra that provides it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from spatialforge.errors import MissingExtraError

__all__ = ["require"]


def require(module: str, *, extra: str, feature: str | None = None) -> ModuleType:
    """Import ``module`` or raise an error that says which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f" for {feature}" if feature else ""
        raise MissingExtraError(
            f"'{module}' is required{what} but is not installed: "
            f"pip install 'spatialforge[{extra}]'"
        ) from exc
