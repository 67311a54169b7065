"""KLD / SIM / NSS and the cv2-equivalent bilinear resize of the AGD20K protocol (torch-free).

Golden values are computed by hand in the comments; ``eps`` terms (1e-12) change them by less than
1e-9 relative unless said otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from spatialforge.afford.metrics import kld, minmax, nss, prepare, resize_bilinear, score_map, sim
from spatialforge.errors import ConfigError

REL = 1e-9


# ---------------------------------------------------------------------------------------------- golden values


def test_golden_2x2():
    pred = np.array([[0.0, 1.0], [0.5, 0.5]])
    gt = np.array([[0.0, 0.5], [0.5, 0.0]])
    # p = pred / 2 = [0, .5, .25, .25]; g = gt / 1 = [0, .5, .5, 0]
    # KLD = 0*log(eps) + .5*log(.5/.5) + .5*log(.5/.25) + 0 = 0.5 * ln 2
    assert kld(pred, gt) == pytest.approx(0.5 * math.log(2.0), rel=REL)
    # SIM = min(0,0) + min(.5,.5) + min(.25,.5) + min(.25,0) = 0.75
    assert sim(pred, gt) == pytest.approx(0.75, rel=REL)
    # NSS: mean 0.5, std = sqrt((.25 + .25 + 0 + 0) / 4) = sqrt(.125); Z = [-sqrt2, sqrt2, 0, 0]
    # minmax(gt) = [0, 1, 1, 0] -> F = [0, 1, 1, 0]; NSS = (sqrt2 + 0) / 2 = 1 / sqrt2
    assert nss(pred, gt) == pytest.approx(1.0 / math.sqrt(2.0), rel=REL)


def test_golden_3x3_with_zero_prediction_pixels_and_gt_offset():
    pred = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    gt = np.array([[0.2, 0.2, 0.25], [0.6, 1.0, 0.3], [0.2, 0.2, 0.2]])
    # sum pred = 4 -> p = [.25, 0, 0, 0, .5, 0, 0, 0, .25]; sum gt = 3.15 -> g = gt / 3.15
    s = 3.15
    # KLD: where p > 0: g * ln(g / p); where p == 0: g * ln(g / 1e-12 + 1e-12) = g * ln(g * 1e12)
    expected_kld = (
        (0.2 / s) * math.log((0.2 / s) / 0.25)
        + (1.0 / s) * math.log((1.0 / s) / 0.5)
        + (0.2 / s) * math.log((0.2 / s) / 0.25)
        + sum((v / s) * math.log(v / s * 1e12) for v in (0.2, 0.25, 0.6, 0.3, 0.2, 0.2))
    )
    assert expected_kld == pytest.approx(13.766328708943856, rel=1e-12)
    assert kld(pred, gt) == pytest.approx(expected_kld, rel=REL)
    # SIM: only the three p > 0 pixels count: (0.2 + 1.0 + 0.2) / 3.15 = 4/9
    assert sim(pred, gt) == pytest.approx(4.0 / 9.0, rel=REL)
    # NSS: mean = 4/9, var = 6/9 - 16/81 = 38/81 -> std = sqrt(38)/9
    # minmax(gt) = (gt - .2)/.8 = [[0, 0, .0625], [.5, 1, .125], [0, 0, 0]] -> F = the middle row
    # sum Z*F = ((0 - 4/9) + (2 - 4/9) + (0 - 4/9)) / std = (2/3) / (sqrt(38)/9) = 6 / sqrt(38); / 3 pixels
    assert nss(pred, gt) == pytest.approx(2.0 / math.sqrt(38.0), rel=REL)


def test_nss_threshold_is_strict_and_uses_minmax_of_gt():
    pred = np.array([[0.0, 1.0], [2.0, 3.0]])
    gt = np.array([[0.0, 0.1], [0.5, 1.0]])
    # minmax(gt) = [0, .1 (times 1 - 2.6e-10: not > .1), .5, 1] -> F = [0, 0, 1, 1]
    # mean 1.5, std = sqrt((2.25 + .25 + .25 + 2.25) / 4) = sqrt(1.25); Z(2) = .5/sqrt1.25, Z(3) = 1.5/sqrt1.25
    assert nss(pred, gt) == pytest.approx((2.0 / math.sqrt(1.25)) / 2.0, rel=REL)


def test_constant_prediction():
    # max == min: P = 0 / (0 + 1e-10) = 0 everywhere -> p = 0
    gt = np.array([[0, 255], [0, 0]], dtype=np.uint8)  # G = [0, 1, 0, 0] -> g = [0, 1, 0, 0]
    out = score_map(np.full((2, 2), 3.0), gt, size=2)
    # KLD = 1 * ln(1 / (0 + 1e-12) + 1e-12) = ln(1e12); SIM = 0; NSS: std 0 -> defined as 0 (reference: NaN)
    assert out["KLD"] == pytest.approx(math.log(1e12), rel=REL)
    assert out["SIM"] == 0.0
    assert out["NSS"] == 0.0
    p, _ = prepare(np.full((5, 7), -2.5), gt, size=4)
    assert p.shape == (4, 4) and np.all(p == 0.0)


def test_empty_gt():
    rng = np.random.default_rng(3)
    # g = 0 / (0 + eps) = 0 -> every KLD term is 0 * log(...) = 0, SIM = 0; minmax(G) = 0 -> F empty -> NSS = 0
    out = score_map(rng.random((6, 5)), np.zeros((3, 4), dtype=np.uint8), size=8)
    assert out == {"KLD": 0.0, "SIM": 0.0, "NSS": 0.0}
    # empty GT and constant prediction together
    assert score_map(np.ones((3, 3)), np.zeros((3, 3), dtype=np.uint8), size=3) == {"KLD": 0.0, "SIM": 0.0, "NSS": 0.0}


def test_uniform_gt_gives_nss_zero_and_finite_values():
    rng = np.random.default_rng(4)
    # minmax of a constant GT is 0 everywhere -> no fixation -> NSS = 0 / (n * 1e-12) = 0
    out = score_map(rng.random((4, 4)), np.full((4, 4), 200, dtype=np.uint8), size=4)
    assert out["NSS"] == 0.0
    assert all(math.isfinite(v) for v in out.values())


def test_no_nan_anywhere_on_degenerate_inputs():
    cases = [
        (np.zeros((3, 3)), np.zeros((3, 3), dtype=np.uint8)),
        (np.zeros((3, 3)), np.full((3, 3), 255, dtype=np.uint8)),
        (np.eye(3), np.zeros((3, 3), dtype=np.uint8)),
        (np.eye(3) * 1e-300, np.eye(3, dtype=np.uint8) * 255),
    ]
    for pred, gt in cases:
        assert all(math.isfinite(v) for v in score_map(pred, gt, size=5).values())


# ---------------------------------------------------------------------------------------------- properties


def _random_pairs(n=8, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        h, w = rng.integers(2, 12, size=2)
        pred = rng.random((h, w)) * rng.integers(0, 2, (h, w))
        gt = rng.random((h, w)) ** 3
        yield pred, gt


def test_identical_maps():
    for _, gt in _random_pairs():
        assert sim(gt, gt) == pytest.approx(1.0, abs=1e-9)
        assert kld(gt, gt) == pytest.approx(0.0, abs=1e-9)


def test_kld_non_negative_and_sim_in_unit_interval():
    for pred, gt in _random_pairs(n=20, seed=1):
        assert kld(pred, gt) >= -1e-9  # Gibbs; the eps terms can make it about -1e-12 * n
        assert 0.0 <= sim(pred, gt) <= 1.0 + 1e-12


def test_scores_invariant_to_affine_rescaling_of_prediction():
    rng = np.random.default_rng(2)
    for pred, gt in _random_pairs(n=6, seed=2):
        gt8 = np.round(gt * 255).astype(np.uint8)
        base = score_map(pred, gt8, size=16)
        a, b = rng.uniform(0.5, 100.0), rng.uniform(-50.0, 50.0)
        scaled = score_map(a * pred + b, gt8, size=16)
        for m in ("KLD", "SIM", "NSS"):
            assert scaled[m] == pytest.approx(base[m], rel=1e-7, abs=1e-9)


def test_minmax():
    np.testing.assert_allclose(minmax(np.array([2.0, 4.0, 3.0])), [0.0, 1.0, 0.5], rtol=1e-9)
    assert np.all(minmax(np.full((2, 2), 7.0)) == 0.0)


def test_prepare_resizes_prediction_before_minmax_and_divides_gt_by_255():
    # resize-then-minmax: the 2x2 block means of this map are [[1, 0], [0, 0]] -> P[0, 0] = 1
    # (minmax-then-resize would give 0.25)
    pred = np.zeros((4, 4))
    pred[1, 1] = 4.0
    gt = np.array([[0, 255, 51, 0]] * 4, dtype=np.uint8)
    p, g = prepare(pred, gt, size=2)
    np.testing.assert_allclose(p, [[1.0, 0.0], [0.0, 0.0]], atol=1e-9)
    # GT: /255 -> [0, 1, .2, 0]; column pairs average -> [.5, .1]
    np.testing.assert_allclose(g, [[0.5, 0.1], [0.5, 0.1]], rtol=1e-12)
    _, g_float = prepare(pred, gt / 255.0, size=2)
    np.testing.assert_array_equal(g, g_float)


# ---------------------------------------------------------------------------------------------- resize


def test_resize_upsample_2x2_to_4x4_by_hand():
    x = np.array([[0.0, 1.0], [2.0, 3.0]])
    # src = (d + .5) * .5 - .5 = [-.25, .25, .75, 1.25] -> clamped [0, .25, .75, 1]
    # one row [a, b] -> [a, .75a + .25b, .25a + .75b, b]
    expected = np.array(
        [
            [0.0, 0.25, 0.75, 1.0],
            [0.5, 0.75, 1.25, 1.5],  # .75 * row0 + .25 * row3
            [1.5, 1.75, 2.25, 2.5],  # .25 * row0 + .75 * row3
            [2.0, 2.25, 2.75, 3.0],
        ]
    )
    np.testing.assert_allclose(resize_bilinear(x, (4, 4)), expected, rtol=0, atol=1e-15)


def test_resize_downsample_4x4_to_2x2_by_hand():
    x = np.arange(16, dtype=np.float64).reshape(4, 4)
    # src = (d + .5) * 2 - .5 = [.5, 2.5] -> the mean of each 2x2 block
    expected = np.array([[(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4], [(8 + 9 + 12 + 13) / 4, (10 + 11 + 14 + 15) / 4]])
    np.testing.assert_allclose(resize_bilinear(x, (2, 2)), expected, rtol=0, atol=1e-15)


def test_resize_downsample_has_no_antialiasing():
    x = np.arange(36, dtype=np.float64).reshape(6, 6) ** 2
    # 6 -> 2: src = (d + .5) * 3 - .5 = [1, 4]: exactly pixels 1 and 4, the others are ignored
    np.testing.assert_allclose(resize_bilinear(x, (2, 2)), x[np.ix_([1, 4], [1, 4])], rtol=1e-15)


def test_resize_non_square_and_identity():
    rng = np.random.default_rng(5)
    x = rng.random((3, 7))
    out = resize_bilinear(x, (5, 2))  # size is (height, width)
    assert out.shape == (5, 2)
    np.testing.assert_array_equal(resize_bilinear(x, (3, 7)), x)
    one = resize_bilinear(np.array([[4.0]]), (3, 2))
    np.testing.assert_array_equal(one, np.full((3, 2), 4.0))


def test_resize_constant_stays_constant():
    for shape, size in [((2, 2), (224, 224)), ((480, 640), (224, 224)), ((7, 3), (5, 11)), ((1, 9), (4, 1))]:
        out = resize_bilinear(np.full(shape, 0.37), size)
        assert out.shape == size
        np.testing.assert_allclose(out, 0.37, rtol=1e-15)


def test_resize_matches_opencv():
    import cv2  # in [dev]: these parity checks must run, never skip
    rng = np.random.default_rng(6)
    for (h, w), (oh, ow) in [((2, 2), (4, 4)), ((4, 4), (2, 2)), ((7, 13), (224, 224)), ((480, 640), (224, 224)),
                             ((300, 301), (224, 224)), ((1, 5), (3, 9)), ((14, 14), (224, 224)), ((5, 3), (1, 1))]:
        x = rng.random((h, w))
        ref = cv2.resize(x, (ow, oh))  # cv2 dsize is (width, height)
        np.testing.assert_allclose(resize_bilinear(x, (oh, ow)), ref, rtol=0, atol=1e-7)


def test_score_map_matches_reference_pipeline_with_opencv():
    import cv2  # in [dev]: these parity checks must run, never skip
    rng = np.random.default_rng(7)
    eps = 1e-12
    for _ in range(3):
        pred = rng.random((28, 28)).astype(np.float32) ** 4
        gt = (rng.random((60, 80)) ** 6 * 255).astype(np.uint8)
        # the reference protocol, written out with OpenCV
        p = cv2.resize(pred, (224, 224)).astype(np.float64)
        p = (p - p.min()) / (p.max() - p.min() + 1e-10)
        g = cv2.resize(gt / 255.0, (224, 224))
        pn, gn = p / (p.sum() + eps), g / (g.sum() + eps)
        ref_kld = np.sum(gn * np.log(gn / (pn + eps) + eps))
        ref_sim = np.sum(np.minimum(pn, gn))
        z = (p / 255 - np.mean(p / 255)) / np.std(p / 255)
        f = (g / 255 - (g / 255).min()) / ((g / 255).max() - (g / 255).min() + 1e-12) > 0.1
        ref_nss = np.sum(z * f) / np.sum(f + 1e-12)
        out = score_map(pred, gt)
        assert out["KLD"] == pytest.approx(ref_kld, rel=1e-5)
        assert out["SIM"] == pytest.approx(ref_sim, rel=1e-5)
        assert out["NSS"] == pytest.approx(ref_nss, rel=1e-5)


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: kld(np.ones((2, 2)), np.ones((3, 2))), "shapes differ"),
        (lambda: sim(np.array([[np.nan, 1.0]]), np.ones((1, 2))), "NaN"),
        (lambda: kld(np.array([[-1.0, 1.0]]), np.ones((1, 2))), "negative"),
        (lambda: nss(np.ones((2, 2, 2)), np.ones((2, 2, 2))), "2-D"),
        (lambda: prepare(np.ones((2, 2)), np.ones((2, 2)), size=0), "size"),
        (lambda: prepare(np.ones((2, 2)), np.ones((2, 2), dtype=np.int32)), "dtype"),
        (lambda: prepare(np.ones((2, 2)), -np.ones((2, 2))), "negative"),
        (lambda: resize_bilinear(np.ones((2, 2)), (0, 3)), "size"),
        (lambda: resize_bilinear(np.ones((0, 2)), (2, 2)), "empty"),
        (lambda: score_map(np.array([["a"]]), np.ones((1, 1))), "dtype"),
    ],
)
def test_bad_arguments_raise_one_line_config_errors(call, needle):
    with pytest.raises(ConfigError) as e:
        call()
    assert needle in str(e.value)
    assert "\n" not in str(e.value)
