"""Spearman / Value-Order Correlation with tie-averaged ranks, and distance errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from spatialforge.errors import SpatialForgeError
from spatialforge.reward.engine import RewardResult, RewardRow
from spatialforge.reward.metrics import (
    distance_errors,
    rank_average,
    shuffled_voc,
    spearman,
    value_order_correlation,
)


def test_ranks_average_ties():
    assert rank_average([10, 20, 20, 30]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert rank_average([3, 1, 3, 3]).tolist() == [3.0, 1.0, 3.0, 3.0]


def test_spearman_agrees_with_scipy_on_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.integers(0, 6, size=30).astype(float)
        y = x + rng.integers(0, 4, size=30)
        assert math.isclose(spearman(x, y), stats.spearmanr(x, y).statistic, abs_tol=1e-12)


def test_voc_order_reverse_constant_and_shuffled():
    t = np.arange(40) / 10
    p = np.linspace(0, 1, 40) ** 2
    assert value_order_correlation(p, t) == pytest.approx(1.0)
    assert value_order_correlation(p[::-1], t) == pytest.approx(-1.0)
    assert math.isnan(value_order_correlation(np.zeros(40), t))
    assert abs(shuffled_voc(p, t, seed=1)) < 0.15
    with pytest.raises(SpatialForgeError):
        spearman([1.0, 2.0], [1.0])


def test_distance_errors_per_frame():
    rows = tuple(RewardRow(i, i * 0.1, d, -d, 0.0, 1.0, i == 1, False) for i, d in enumerate([1.0, 0.5, 0.2]))
    err = distance_errors(RewardResult(rows), {"distance_m": [0.9, 0.5, 0.5]})
    assert err["per_frame"] == pytest.approx([0.1, 0.0, 0.3])
    assert err["mean_abs"] == pytest.approx(0.4 / 3) and err["median_abs"] == pytest.approx(0.1)
    assert err["mean_abs_measured"] == pytest.approx(0.2)
    with pytest.raises(SpatialForgeError, match="frames"):
        distance_errors(RewardResult(rows), {"distance_m": [1.0]})
