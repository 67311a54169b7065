"""Spatial question-answer synthesis from 3D scene graphs (torch-free)."""

from spatialforge.qa.catalog import CATALOG, EvalContext, QuestionType, Skip, catalog_summary, get_type
from spatialforge.qa.composite import COMPOSITE_TYPES, CompositeConfig, generate_composite, reasoning_trace
from spatialforge.qa.generator import QAConfig, QAResult, generate_qa
from spatialforge.qa.numbers import say_clock, say_length, say_ratio

__all__ = [
    "CATALOG",
    "COMPOSITE_TYPES",
    "CompositeConfig",
    "EvalContext",
    "QAConfig",
    "QAResult",
    "QuestionType",
    "Skip",
    "catalog_summary",
    "generate_composite",
    "generate_qa",
    "get_type",
    "reasoning_trace",
    "say_clock",
    "say_length",
    "say_ratio",
]
