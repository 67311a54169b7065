"""Shared fixtures. Tests run offline: the Hugging Face offline variables are set here."""

from __future__ import annotations

import os

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synthetic dataset (exact depth), shared by the tests that only read it."""
    from spatialforge.synth import SynthConfig, write_synthetic_dataset

    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(out, n=6, seed=7, config=SynthConfig(width=320, height=240), progress=False)
    return out
