"""LRN kernels against float64 NumPy references of the formulas (Caffe's lrn_layer.cpp)."""

import numpy as np
import pytest

from protonet.kernels import lrn
from tests.helpers.tolerances import KERNEL_ATOL, KERNEL_RTOL
from tests.helpers.threads import on_one_thread

# (local_size, alpha, beta, k)
ACROSS_PARAMS = [(5, 1.0, 0.75, 1.0), (3, 0.1, 0.75, 1.0), (5, 0.5, 0.75, 2.0),
                 (1, 2.0, 0.5, 1.5), (7, 1e-4, 0.75, 1.0)]
# The last shape's plane spans two CHUNKs of the ACROSS kernels.
SHAPES = [(2, 7, 3, 4), (1, 4, 3, 3), (2, 2, 5, 1), (1, 6, 40, 30)]


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
    scale, power, out, bottom_diff = (np.empty_like(x) for _ in range(4))
    accum = np.empty((x.shape[0],) + x.shape[2:], dtype=np.float32)
    lrn.lrn_across_forward(x, size, np.float32(np.float32(alpha) / np.float32(size)),
                           np.float32(k), np.float32(beta), scale, power, out)
    lrn.lrn_across_backward(x, out, top_diff, scale, power, size,
                            np.float32(2.0 * alpha * beta / size), accum, bottom_diff)
    return scale, out, bottom_diff


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("size, alpha, beta, k", ACROSS_PARAMS, ids=str)
def test_lrn_across_matches_formula(rng, shape, size, alpha, beta, k):
    x = rng.standard_normal(shape).astype(np.float32)
    top_diff = rng.standard_normal(shape).astype(np.float32)
    scale, out, bottom_diff = _across(x, top_diff, size, alpha, beta, k)
    ref_scale = ref_across_scale(x, size, alpha, k)
    np.testing.assert_allclose(scale, ref_scale, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    np.testing.assert_allclose(out, x * ref_scale ** -beta, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    np.testing.assert_allclose(bottom_diff, ref_across_backward(x, top_diff, size, alpha, beta, k),
                               rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


def test_lrn_across_keeps_caffe_running_sum_rounding():
    """A large square leaving the window must leave float32 round-off behind, as in Caffe."""
    x = np.zeros((1, 4, 1, 1), dtype=np.float32)
    x[0, 0] = 1000.0
    x[0, 2] = 1e-3
    scale, _, _ = _across(x, np.zeros_like(x), 3, 1.0, 0.75, 1.0)
    # Channel 2 sees channels 1..3 only, but Caffe's running sum carried 1000²/3 in and out.
    third = np.float32(np.float32(1.0) / np.float32(3))
    s = np.float32(1.0) + third * np.float32(1e6)
    s = np.float32(s + third * np.float32(np.float32(1e-3) * np.float32(1e-3)))
    s = np.float32(s - third * np.float32(1e6))
    assert scale[0, 2, 0, 0] == s


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
    shape = (2, 9, 50, 40)                    # above PARALLEL_MIN, two chunks per plane
    x = rng.standard_normal(shape).astype(np.float32)
    top_diff = rng.standard_normal(shape).astype(np.float32)
    pooled = rng.random(shape).astype(np.float32)

    def run():
        results = list(_across(x, top_diff, 5, 1.0, 0.75, 2.0))
        power, out, pooled_diff = (np.empty_like(x) for _ in range(3))
        lrn.lrn_within_forward(x, pooled, np.float32(0.5), np.float32(0.75), power, out)
        lrn.lrn_within_backward_pooled(x, top_diff, pooled, power, np.float32(0.5),
                                       np.float32(0.75), pooled_diff)
        lrn.lrn_within_backward_data(x, top_diff, power, pooled_diff)
        return results + [power, out, pooled_diff]

    single = on_one_thread(run)
    for a, b in zip(single, run()):
        np.testing.assert_array_equal(a, b)
