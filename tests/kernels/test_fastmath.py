"""The vectorisable float32 functions of protonet.kernels.fastmath against NumPy in float64."""

import numpy as np
import pytest
from numba import njit
from numba import uint64 as _u

from protonet.kernels import fastmath

LN_FLT_MIN = float(np.log(np.float64(np.finfo(np.float32).tiny)))


@njit
def exp_all(x, out):
    for i in range(x.shape[0]):
        out[i] = fastmath.exp_nonpositive(x[i])


def exp32(values):
    x = np.asarray(values, np.float32).ravel()
    out = np.empty_like(x)
    exp_all(x, out)
    return out


def ulps(got, exact):
    """|got − exact| in units of the float32 spacing at exact (float64)."""
    spacing = np.spacing(exact.astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / spacing


@pytest.fixture
def rng():
    return np.random.default_rng(4242)


# ---- exp_nonpositive -------------------------------------------------------------------------

def test_exp_is_within_one_ulp_over_the_normal_range():
    """Every 97th float32 from −0 down to ln(FLT_MIN), plus the binade edges: ≤ 1.02 ulp
    (an exhaustive run over all 1.1e9 of them gave 1.0154 at most)."""
    lo = int(np.float32(fastmath._EXP_LO).view(np.uint32))
    start = int(np.float32(-0.0).view(np.uint32))
    x = np.arange(start, lo + 1, 97, dtype=np.uint32).view(np.float32)
    x = np.concatenate([x, -np.ldexp(np.float32(1), np.arange(-30, 7)).astype(np.float32)])
    assert ulps(exp32(x), np.exp(x.astype(np.float64))).max() <= 1.02


def test_exp_matches_numpy_at_random_points(rng):
    x = (-rng.exponential(5.0, 200000)).astype(np.float32)
    x = x[x >= fastmath._EXP_LO]
    np.testing.assert_allclose(exp32(x), np.exp(x.astype(np.float64)), rtol=2.5e-7, atol=0)


@pytest.mark.parametrize("x, expected", [(0.0, 1.0), (-0.0, 1.0), (-1e-8, 1.0), (-1e-45, 1.0),
                                         (-np.inf, 0.0), (-104.0, 0.0), (-88.0, 0.0),
                                         (-87.34, 0.0)], ids=str)
def test_exp_special_values(x, expected):
    """e^0 = 1 exactly; below ln(FLT_MIN) the result flushes to 0 (see the module NOTE)."""
    assert exp32([x])[0] == np.float32(expected)


def test_exp_just_above_the_flush_threshold_is_normal():
    x = np.float32(LN_FLT_MIN + 1e-4)
    got = exp32([x])[0]
    assert got >= np.finfo(np.float32).tiny
    assert ulps(np.array([got]), np.exp(np.array([x], np.float64))).max() <= 1.02
    np.testing.assert_allclose(exp32([-87.0]), np.exp(-87.0), rtol=2.5e-7)


def test_exp_propagates_nan():
    assert np.isnan(exp32([np.nan])[0])


def test_exp_vectorised_loop_matches_element_by_element(rng):
    """The loop (vector body and scalar remainder) gives the values one call at a time does."""
    x = (-rng.exponential(10.0, 1003)).astype(np.float32)
    x[[0, 17, 500]] = [np.nan, -np.inf, 0.0]
    whole = exp32(x)
    single = np.array([exp32([v])[0] for v in x[:40]])
    np.testing.assert_array_equal(whole[:40], single)


# ---- reductions ------------------------------------------------------------------------------

@njit
def reduce_range(kind, a, b, lo, hi):
    if kind == 0:
        return fastmath.range_max(a, _u(lo), _u(hi))
    if kind == 1:
        return fastmath.range_sum(a, _u(lo), _u(hi))
    return fastmath.range_dot(a, b, _u(lo), _u(hi))


@pytest.mark.parametrize("lo, hi", [(0, 1), (0, 1000), (3, 20), (5, 6), (1, 1003)], ids=str)
def test_range_max_is_exact(rng, lo, hi):
    a = rng.standard_normal(1003).astype(np.float32)
    assert reduce_range(0, a, a, lo, hi) == a[lo:hi].max()


def test_range_max_orders_signed_zeros_and_infinities():
    a = np.array([-np.inf, -0.0, -5.0], np.float32)
    assert reduce_range(0, a, a, 0, 3) == 0.0
    a = np.array([-np.inf, -np.inf], np.float32)
    assert reduce_range(0, a, a, 0, 2) == -np.inf
    a = np.array([-1.0, np.inf, 3.0], np.float32)
    assert reduce_range(0, a, a, 0, 3) == np.inf
    a = np.array([-3.0, -2.0, -7.0], np.float32)
    assert reduce_range(0, a, a, 0, 3) == -2.0


@pytest.mark.parametrize("lo, hi", [(0, 1), (0, 1000), (3, 20), (7, 7)], ids=str)
def test_range_sum_and_dot_match_float64(rng, lo, hi):
    a = rng.standard_normal(1003).astype(np.float32)
    b = rng.standard_normal(1003).astype(np.float32)
    a64, b64 = a[lo:hi].astype(np.float64), b[lo:hi].astype(np.float64)
    scale = max(1.0, np.abs(a64).sum())
    assert abs(reduce_range(1, a, a, lo, hi) - a64.sum()) <= 1e-6 * scale
    assert abs(reduce_range(2, a, b, lo, hi) - (a64 * b64).sum()) <= 1e-6 * scale


def test_range_sum_propagates_nan_and_inf():
    a = np.array([1.0, np.nan, 2.0] * 10, np.float32)
    assert np.isnan(reduce_range(1, a, a, 0, 30))
    a = np.array([1.0, np.inf] * 20, np.float32)
    assert reduce_range(1, a, a, 0, 40) == np.inf
