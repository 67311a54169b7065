"""The exception hierarchy of spatialforge.

Every error a user can cause derives from :class:`SpatialForgeError`; the CLI prints such an error
as one line and exits non-zero. Per-item problems (one bad scene in a dataset) are raised as
:class:`SceneError` subclasses, caught by the runner, recorded with their reason and counted.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DatasetError",
    "MissingExtraError",
    "RunFailedError",
    "SceneError",
    "SceneFormatError",
    "SpatialForgeError",
]


class SpatialForgeError(Exception):
    """Base class of all spatialforge errors that a user can cause."""


class ConfigError(SpatialForgeError, ValueError):
    """A configuration value is invalid."""


class RunFailedError(SpatialForgeError):
    """A command ran but its result is not a success: nothing was produced, or a failure gate was exceeded.

    The CLI prints it as one line and exits with status 1 (usage and input errors exit with 2).
    """


class DatasetError(SpatialForgeError):
    """A dataset on disk is missing files or holds malformed ones; the message names the file and field."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class MissingExtraError(SpatialForgeError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class SceneError(SpatialForgeError):
    """A scene cannot be processed. ``reason`` is a short machine-readable key for counting."""

    reason: str = "scene_error"

    def __init__(self, message: str, *, reason: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        self.path = path


class SceneFormatError(SceneError):
    """A scene folder violates the input format (missing file, bad size, bad value ...)."""

    reason = "bad_format"
