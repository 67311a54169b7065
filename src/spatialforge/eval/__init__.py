"""Spatial VQA evaluation: benchmarks, answer understanding, metrics, model backends, runs.

Torch-free: ``types``, ``answers``, ``metrics``, ``benchmarks``, ``runner``, the HTTP and baseline
backends. The local Hugging Face VLM backend needs ``spatialforge[models]``.
"""
