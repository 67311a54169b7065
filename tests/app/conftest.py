"""Helpers of the web-app tests: scene zips, good and bad."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def zip_folder(folder: Path, archive: Path, *, drop: tuple[str, ...] = (), replace: dict[str, bytes] | None = None,
               extra: dict[str, bytes] | None = None) -> Path:
    """Zip ``folder`` as ``<folder name>/<file>`` entries, leaving out ``drop`` and replacing file contents."""
    replace = replace or {}
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.iterdir()):
            if f.name in drop:
                continue
            zf.writestr(f"{folder.name}/{f.name}", replace.get(f.name, f.read_bytes()))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return archive


@pytest.fixture(scope="session")
def scene_folder(tmp_path_factory) -> Path:
    """Synthetic scene 0 of seed 0 written as a scene folder (what the app's built-in scene 0 is)."""
    from spatialforge.synth import generate_scene, write_scene

    return write_scene(generate_scene(0, 0), tmp_path_factory.mktemp("scene"))
