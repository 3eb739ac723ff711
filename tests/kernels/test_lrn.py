"""LRN kernels against float64 NumPy references of the formulas (Caffe's lrn_layer.cpp)."""

import numpy as np
import pytest

from protonet.kernels import lrn
from tests.helpers.tolerances import KERNEL_ATOL, KERNEL_RTOL
from tests.helpers.threads import on_one_thread

# (local_size, alpha, beta, k)
ACROSS_PARAMS = [(5, 1.0, 0.75, 1.0), (3, 0.1, 0.75, 1.0), (5, 0.5, 0.75, 2.0),
                 (1, 2.0, 0.5, 1.5), (7, 1e-4, 0.75, 1.0), (3, 0.3, 1.0, 1.0), (5, 0.2, 0.6, 1.0)]
# (1, 3, 70, 60): the plane spans two CHUNKs of the ACROSS kernels; (2, 2, 5, 1): fewer
# channels than most windows.
SHAPES = [(2, 7, 3, 4), (1, 4, 3, 3), (2, 2, 5, 1), (1, 6, 40, 30), (1, 3, 70, 60)]
# The betas with a sqrt form and one that keeps powf.
BETAS = [0.75, 0.5, 1.0, 0.6]


@pytest.fixture
def rng():
    return np.random.default_rng(777)


def ref_across_scale(x, size, alpha, k):
    x = x.astype(np.float64)
    c = x.shape[1]
    pre_pad = (size - 1) // 2
    scale = np.empty_like(x)
    for j in range(c):
        lo, hi = max(0, j - pre_pad), min(c, j + pre_pad + 1)
        scale[:, j] = k + alpha / size * np.sum(x[:, lo:hi] ** 2, axis=1)
    return scale


def ref_across_backward(x, top_diff, size, alpha, beta, k):
    """dx_c = dy_c·s_c^−β − 2αβ/n · x_c · Σ_{|c'−c| ≤ (n−1)/2} dy_c'·y_c'/s_c'."""
    x64, dy = x.astype(np.float64), top_diff.astype(np.float64)
    scale = ref_across_scale(x, size, alpha, k)
    y = x64 * scale ** -beta
    ratio = dy * y / scale
    pre_pad = (size - 1) // 2
    dx = dy * scale ** -beta
    for j in range(x.shape[1]):
        lo, hi = max(0, j - pre_pad), min(x.shape[1], j + pre_pad + 1)
        dx[:, j] -= 2 * alpha * beta / size * x64[:, j] * ratio[:, lo:hi].sum(axis=1)
    return dx


def _across(x, top_diff, size, alpha, beta, k):
    """Run both ACROSS kernels with the scalars cast as the LRN layer casts them."""
    out, bottom_diff = np.empty_like(x), np.empty_like(x)
    scalars = (size, np.float32(np.float32(alpha) / np.float32(size)), np.float32(k),
               np.float32(beta))
    lrn.lrn_across_forward(x, *scalars, out)
    lrn.lrn_across_backward(x, out, top_diff, *scalars, np.float32(2.0 * alpha * beta / size),
                            bottom_diff)
    return out, bottom_diff


def caffe_running_scale(x, size, alpha, k):
    """Caffe's float32 running-window scale (lrn_layer.cpp), zero-padded squares included."""
    n, c = x.shape[:2]
    pre_pad = (size - 1) // 2
    aos = np.float32(np.float32(alpha) / np.float32(size))
    padded = np.zeros((n, c + size - 1) + x.shape[2:], np.float32)
    padded[:, pre_pad:pre_pad + c] = x * x
    scale = np.empty_like(x)
    s = np.full((n,) + x.shape[2:], np.float32(k), np.float32)
    for j in range(size):
        s = s + aos * padded[:, j]
    scale[:, 0] = s
    for j in range(1, c):
        s = s + aos * padded[:, j + size - 1]
        s = s + -aos * padded[:, j - 1]
        scale[:, j] = s
    return scale


def ulps(got, exact):
    """|got − exact| in units of the float32 spacing at exact (float64 arrays)."""
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / spacing


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("size, alpha, beta, k", ACROSS_PARAMS, ids=str)
def test_lrn_across_matches_formula(rng, shape, size, alpha, beta, k):
    x = rng.standard_normal(shape).astype(np.float32)
    top_diff = rng.standard_normal(shape).astype(np.float32)
    out, bottom_diff = _across(x, top_diff, size, alpha, beta, k)
    ref_scale = ref_across_scale(x, size, alpha, k)
    np.testing.assert_allclose(out, x * ref_scale ** -beta, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    np.testing.assert_allclose(bottom_diff, ref_across_backward(x, top_diff, size, alpha, beta, k),
                               rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


def test_lrn_across_keeps_caffe_running_sum_rounding():
    """A large square leaving the window must leave float32 round-off behind, as in Caffe."""
    x = np.zeros((1, 4, 1, 1), dtype=np.float32)
    x[0, 0] = 1000.0
    x[0, 2] = 1e-3
    out, _ = _across(x, np.zeros_like(x), 3, 1.0, 1.0, 1.0)
    # Channel 2 sees channels 1..3 only, but Caffe's running sum carried 1000²/3 in and out.
    third = np.float32(np.float32(1.0) / np.float32(3))
    s = np.float32(1.0) + third * np.float32(1e6)
    s = np.float32(s + third * np.float32(np.float32(1e-3) * np.float32(1e-3)))
    s = np.float32(s - third * np.float32(1e6))
    assert s != np.float32(1.0) + third * np.float32(1e-6)      # the round-off is visible
    assert out[0, 2, 0, 0] == np.float32(1e-3) * (np.float32(1.0) / s)   # β = 1: exact


def caffe_backward(x, y, dy, scale, size, cache_ratio, power):
    """Caffe's CrossChannelBackward_cpu in float32, op for op, with ``power`` = scale^−β."""
    c = x.shape[1]
    pre_pad = (size - 1) // 2
    padded = np.zeros((x.shape[0], c + size - 1) + x.shape[2:], np.float32)
    padded[:, pre_pad:pre_pad + c] = (dy * y) / scale
    dx = dy * power
    acc = np.zeros((x.shape[0],) + x.shape[2:], np.float32)
    for j in range(size - 1):
        acc = acc + padded[:, j]
    for j in range(c):
        acc = acc + padded[:, j + size - 1]
        dx[:, j] = dx[:, j] + -cache_ratio * (x[:, j] * acc)
        acc = acc + np.float32(-1.0) * padded[:, j]
    return dx


@pytest.mark.parametrize("beta", BETAS, ids=str)
@pytest.mark.parametrize("shape, size", [((2, 9, 5, 7), 5), ((1, 3, 70, 60), 3),
                                         ((1, 2, 4, 4), 5), ((3, 5, 2, 2), 1)], ids=str)
def test_lrn_across_follows_caffe_running_sums(rng, shape, size, beta):
    """Forward is x · s^−β with s Caffe's float32 running sum and backward Caffe's op order
    on that s, rebuilt from x. β = 1 (1/s, correctly rounded) makes both checkable bit for
    bit; the other betas stay within the power's few ulp."""
    x = (rng.standard_normal(shape) * 30).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    out, dx = _across(x, dy, size, 1e-2, beta, 1.0)
    scale = caffe_running_scale(x, size, 1e-2, 1.0)
    if beta == 1.0:
        power = np.float32(1.0) / scale
        np.testing.assert_array_equal(out, x * power)
        cache_ratio = np.float32(2.0 * 1e-2 * beta / size)
        np.testing.assert_array_equal(dx, caffe_backward(x, out, dy, scale, size, cache_ratio,
                                                         power))
    exact = x.astype(np.float64) * scale.astype(np.float64) ** -np.float64(np.float32(beta))
    assert ulps(out, exact).max() <= 3.5


@pytest.mark.parametrize("beta, max_ulps", [(0.75, 2.5), (0.5, 0.9), (1.0, 0.5)], ids=str)
def test_lrn_power_sqrt_forms_stay_within_a_few_ulp(rng, beta, max_ulps):
    """The within-channel power blob (1 + pooled)^−β over s = 1..2 (k = 1 plus small sums),
    1..101 and 1e3..1e30, against float64."""
    pooled = np.concatenate([rng.uniform(0, 1, 30000), rng.uniform(0, 100, 30000),
                             10 ** rng.uniform(3, 30, 30000)]).astype(np.float32)
    pooled = pooled.reshape(1, 1, 1, -1)
    s = pooled + np.float32(1.0)                       # what the kernel raises: α = 1
    power, out = np.empty_like(s), np.empty_like(s)
    lrn.lrn_within_forward(np.ones_like(s), pooled, np.float32(1.0), np.float32(beta), power,
                           out)
    assert ulps(power, s.astype(np.float64) ** -beta).max() <= max_ulps
    np.testing.assert_array_equal(out, power)


@pytest.mark.parametrize("beta", BETAS, ids=str)
def test_lrn_across_power_over_the_whole_scale_range(beta):
    """size 1, k tiny: s = k + α·x² spans 1e-30..1e30; compare with float64 s^−β."""
    x = np.logspace(-15, 15, 3001).astype(np.float32).reshape(1, 1, 1, -1)
    out, _ = _across(x, np.zeros_like(x), 1, 1.0, beta, 1e-30)
    s = np.float32(1e-30) + np.float32(1.0) * (x * x)
    exact = x.astype(np.float64) * s.astype(np.float64) ** -np.float64(np.float32(beta))
    assert ulps(out, exact).max() <= 3.5


@pytest.mark.parametrize("beta", BETAS, ids=str)
def test_lrn_across_zero_and_negative_scales_follow_powf(beta):
    """s = 0 → s^−β = inf (x = 0: 0·inf = NaN); s < 0 → NaN except β = 1, as powf does."""
    x = np.array([0.0, 2.0], np.float32).reshape(1, 1, 1, 2)
    zero_k, _ = _across(x, np.zeros_like(x), 1, 1.0, beta, 0.0)
    assert np.isnan(zero_k[0, 0, 0, 0])
    np.testing.assert_allclose(zero_k[0, 0, 0, 1], 2.0 * 4.0 ** -beta, rtol=KERNEL_RTOL)
    negative_k, _ = _across(x, np.zeros_like(x), 1, 1.0, beta, -10.0)
    with np.errstate(invalid="ignore"):
        ref = x * (np.float32(-10.0) + x * x) ** np.float32(-beta)
    np.testing.assert_array_equal(np.isnan(negative_k), np.isnan(ref))


@pytest.mark.parametrize("alpha, beta", [(0.5, 0.75), (1.0, 0.5), (0.0, 0.75)], ids=str)
def test_lrn_within_elementwise_kernels_match_formula(rng, alpha, beta):
    shape = (2, 3, 4, 5)
    x = rng.standard_normal(shape).astype(np.float32)
    pooled = rng.random(shape).astype(np.float32)
    top_diff = rng.standard_normal(shape).astype(np.float32)
    power, out, pooled_diff = (np.empty_like(x) for _ in range(3))
    lrn.lrn_within_forward(x, pooled, np.float32(alpha), np.float32(beta), power, out)
    ref_power = (1 + alpha * pooled.astype(np.float64)) ** -beta
    np.testing.assert_allclose(power, ref_power, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    np.testing.assert_allclose(out, x * ref_power, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)

    lrn.lrn_within_backward_pooled(x, top_diff, pooled, power, np.float32(alpha),
                                   np.float32(beta), pooled_diff)
    ref_pooled_diff = top_diff * x * (-alpha * beta) * ref_power / (1 + alpha * pooled)
    np.testing.assert_allclose(pooled_diff, ref_pooled_diff, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)

    square_diff = rng.standard_normal(shape).astype(np.float32)
    bottom_diff = square_diff.copy()
    lrn.lrn_within_backward_data(x, top_diff, power, bottom_diff)
    np.testing.assert_allclose(bottom_diff, power * top_diff + square_diff * 2 * x,
                               rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


def test_lrn_kernels_are_bit_identical_for_any_thread_count(rng):
    shape = (2, 9, 70, 60)                    # above PARALLEL_MIN, two chunks per plane
    x = rng.standard_normal(shape).astype(np.float32)
    top_diff = rng.standard_normal(shape).astype(np.float32)
    pooled = rng.random(shape).astype(np.float32)

    def run():
        results = list(_across(x, top_diff, 5, 1.0, 0.75, 2.0))
        results += list(_across(x, top_diff, 3, 1.0, 0.6, 2.0))
        power, out, pooled_diff = (np.empty_like(x) for _ in range(3))
        lrn.lrn_within_forward(x, pooled, np.float32(0.5), np.float32(0.75), power, out)
        lrn.lrn_within_backward_pooled(x, top_diff, pooled, power, np.float32(0.5),
                                       np.float32(0.75), pooled_diff)
        lrn.lrn_within_backward_data(x, top_diff, power, pooled_diff)
        return results + [power, out, pooled_diff]

    single = on_one_thread(run)
    for a, b in zip(single, run()):
        np.testing.assert_array_equal(a, b)
