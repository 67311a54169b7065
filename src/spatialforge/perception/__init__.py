"""Perception: plain photos -> RGBDScene (filter, tag, detect, caption, segment, metric depth).

Every stage is a callable class behind a Protocol in :mod:`spatialforge.perception.ports`,
exchanging the typed containers of :mod:`spatialforge.perception.types`. Backends (transformers
models) live in :mod:`spatialforge.perception.backends` and import torch only when built.
"""
