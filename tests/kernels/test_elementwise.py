"""Element-wise kernels against slow, obvious NumPy references (float64)."""

import numpy as np
import pytest

from protonet.kernels import elementwise as ew
from tests.helpers.tolerances import KERNEL_ATOL, KERNEL_RTOL
from tests.helpers.threads import on_one_thread


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


# name → (op, params, input range, forward reference, derivative reference)
CASES = {
    "relu": (ew.RELU, (0.0,), (-3, 3), lambda x: np.maximum(x, 0), lambda x: (x > 0) * 1.0),
    "relu_leaky": (ew.RELU, (0.1,), (-3, 3), lambda x: np.where(x > 0, x, 0.1 * x),
                   lambda x: np.where(x > 0, 1.0, 0.1)),
    "elu": (ew.ELU, (0.5,), (-3, 3), lambda x: np.where(x > 0, x, 0.5 * np.expm1(x)),
            lambda x: np.where(x > 0, 1.0, 0.5 * np.exp(x))),
    "sigmoid": (ew.SIGMOID, (), (-6, 6), _sig, lambda x: _sig(x) * (1 - _sig(x))),
    "tanh": (ew.TANH, (), (-3, 3), np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "absval": (ew.ABSVAL, (), (-3, 3), np.abs, np.sign),
    "power_cube": (ew.POWER, (3.0, 1.5, 0.2, 4.5), (-2, 2), lambda x: (0.2 + 1.5 * x) ** 3,
                   lambda x: 4.5 * (0.2 + 1.5 * x) ** 2),
    "power_square": (ew.POWER, (2.0, 0.5, 1.0, 1.0), (-2, 2), lambda x: (1 + 0.5 * x) ** 2,
                     lambda x: (1 + 0.5 * x)),
    "power_sqrt_noshift": (ew.POWER, (0.5, 2.0, 0.0, 1.0), (0.5, 2), lambda x: np.sqrt(2 * x),
                           lambda x: 1.0 / np.sqrt(2 * x)),
    "power_linear": (ew.POWER, (1.0, 2.0, 3.0, 2.0), (-2, 2), lambda x: 2 * x + 3,
                     lambda x: np.full_like(x, 2.0)),
    "power_constant": (ew.POWER, (2.0, 0.0, 3.0, 0.0), (-2, 2), lambda x: np.full_like(x, 9.0),
                       lambda x: np.zeros_like(x)),
    "power_zero": (ew.POWER, (0.0, 2.0, 3.0, 0.0), (-2, 2), lambda x: np.ones_like(x),
                   lambda x: np.zeros_like(x)),
    "exp": (ew.EXP, (1.0, 1.0), (-3, 3), np.exp, np.exp),
    "exp_scaled": (ew.EXP, (0.5, 2.0), (-3, 3), lambda x: 2 * np.exp(0.5 * x),
                   lambda x: np.exp(0.5 * x)),
    "log": (ew.LOG, (1.0, 0.0, 1.0, 1.0), (0.5, 3), np.log, lambda x: 1 / x),
    "log_scaled": (ew.LOG, (2.0, 0.5, 0.25, 0.5), (0.5, 3), lambda x: 0.25 * np.log(2 * x + 0.5),
                   lambda x: 0.5 / (2 * x + 0.5)),
    "bnll": (ew.BNLL, (), (-60, 60), lambda x: np.logaddexp(0, x), _sig),
    "threshold": (ew.THRESHOLD, (0.2,), (-3, 3), lambda x: (x > 0.2) * 1.0,
                  lambda x: np.zeros_like(x)),
    "swish": (ew.SWISH, (1.5,), (-4, 4), lambda x: x * _sig(1.5 * x),
              lambda x: _sig(1.5 * x) + 1.5 * x * _sig(1.5 * x) * (1 - _sig(1.5 * x))),
    "clip": (ew.CLIP, (-0.5, 0.7), (-2, 2), lambda x: np.clip(x, -0.5, 0.7),
             lambda x: ((x >= -0.5) & (x <= 0.7)) * 1.0),
}


def test_every_op_has_a_reference_case():
    assert {case[0] for case in CASES.values()} == set(ew.OPS.values())


def _inputs(lo, hi, seed=0, n=1001):
    x = np.random.default_rng(seed).uniform(lo, hi, n).astype(np.float32)
    # Keep away from the kinks of ReLU/AbsVal/Clip/Threshold, where the derivative jumps.
    for kink in (0.0, 0.2, -0.5, 0.7):
        x[np.abs(x - kink) < 1e-3] += np.float32(3e-3)
    return x


@pytest.mark.parametrize("name", sorted(CASES))
def test_unary_forward_matches_reference(name):
    op, p, (lo, hi), forward, _ = CASES[name]
    x = _inputs(lo, hi)
    y = np.empty_like(x)
    ew.unary_forward(op, ew.params(*p), x, y)
    np.testing.assert_allclose(y, forward(x.astype(np.float64)), rtol=KERNEL_RTOL,
                               atol=KERNEL_ATOL, err_msg=name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_unary_backward_matches_reference(name):
    op, p, (lo, hi), _, derivative = CASES[name]
    x = _inputs(lo, hi)
    p = ew.params(*p)
    y = np.empty_like(x)
    ew.unary_forward(op, p, x, y)
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    dx = np.empty_like(x)
    ew.unary_backward(op, p, x, y, dy, dx)
    expected = dy * derivative(x.astype(np.float64))
    np.testing.assert_allclose(dx, expected, rtol=KERNEL_RTOL, atol=KERNEL_ATOL, err_msg=name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_unary_kernels_allow_output_over_input(name):
    op, p, (lo, hi), _, _ = CASES[name]
    p = ew.params(*p)
    x = _inputs(lo, hi)
    y = np.empty_like(x)
    ew.unary_forward(op, p, x, y)
    dy = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    dx = np.empty_like(x)
    ew.unary_backward(op, p, x, y, dy, dx)
    aliased = x.copy()
    ew.unary_forward(op, p, aliased, aliased)
    np.testing.assert_array_equal(aliased, y)
    ew.unary_backward(op, p, x, y, dy, dy)
    np.testing.assert_array_equal(dy, dx)


def test_power_backward_without_shift_is_nan_at_zero_like_caffe():
    p = ew.params(3.0, 1.0, 0.0, 3.0)
    x = np.array([0.0, 1.0], np.float32)
    y = np.empty_like(x)
    ew.unary_forward(ew.POWER, p, x, y)
    dx = np.empty_like(x)
    ew.unary_backward(ew.POWER, p, x, y, np.ones_like(x), dx)
    assert np.isnan(dx[0]) and dx[1] == 3.0


def test_clip_and_relu_follow_std_min_max_with_nan():
    x = np.array([np.nan], np.float32)
    y = np.empty_like(x)
    ew.unary_forward(ew.CLIP, ew.params(-1.0, 1.0), x, y)
    assert y[0] == -1.0  # std::max(min, std::min(NaN, max)) is min
    ew.unary_forward(ew.RELU, ew.params(0.0), x, y)
    assert np.isnan(y[0])


def test_dropout_mask_keeps_where_uniform_reaches_ratio():
    u = np.array([0.0, 0.29, 0.3, 0.31, 0.99], np.float32)
    ew.dropout_mask(np.float32(0.3), np.float32(2.0), u)
    np.testing.assert_array_equal(u, [0, 0, 2, 2, 2])


def test_multiply_matches_numpy_and_allows_aliasing():
    rng = np.random.default_rng(3)
    a = rng.standard_normal(77).astype(np.float32)
    b = rng.standard_normal(77).astype(np.float32)
    out = np.empty_like(a)
    ew.multiply(a, b, out)
    np.testing.assert_array_equal(out, a * b)
    ew.multiply(a, b, a)
    np.testing.assert_array_equal(a, out)


# ---- per-axis kernels ------------------------------------------------------------------------

SHAPES = [(1, 1, 1), (2, 3, 5), (3, 1, 7), (1, 4, 1), (4, 5, 6)]


def _arrays(shape, seed=4):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape).astype(np.float32)
    b = rng.standard_normal(shape).astype(np.float32)
    v = rng.standard_normal(shape[1]).astype(np.float32)
    return a, b, v


@pytest.mark.parametrize("shape", SHAPES)
def test_axis_scale_and_bias_match_broadcasting(shape):
    x, _, v = _arrays(shape)
    y = np.empty_like(x)
    ew.axis_scale(x, v, y)
    np.testing.assert_array_equal(y, x * v[None, :, None])
    ew.axis_bias(x, v, y)
    np.testing.assert_array_equal(y, x + v[None, :, None])
    expected = x + v[None, :, None]
    ew.axis_bias(x, v, x)
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("accumulate", [False, True])
def test_axis_sum_and_dot_match_numpy(shape, accumulate):
    a, b, v = _arrays(shape)
    base = v.astype(np.float64) if accumulate else 0.0
    out = v.copy()
    ew.axis_sum(a, accumulate, out)
    np.testing.assert_allclose(out, base + a.sum(axis=(0, 2), dtype=np.float64),
                               rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    out = v.copy()
    ew.axis_dot(a, b, accumulate, out)
    expected = base + (a.astype(np.float64) * b).sum(axis=(0, 2))
    np.testing.assert_allclose(out, expected, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


@pytest.mark.parametrize("shape", SHAPES)
def test_prelu_kernels_match_reference(shape):
    x, dy, slope = _arrays(shape)
    s = slope[None, :, None].astype(np.float64)
    y = np.empty_like(x)
    ew.prelu_forward(x, slope, y)
    np.testing.assert_allclose(y, np.where(x > 0, x, s * x), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    dx = np.empty_like(x)
    ew.prelu_backward(x, dy, slope, dx)
    np.testing.assert_allclose(dx, dy * np.where(x > 0, 1.0, s), rtol=KERNEL_RTOL,
                               atol=KERNEL_ATOL)
    grad = slope.copy()
    ew.prelu_slope_grad(x, dy, grad)
    expected = slope + (dy.astype(np.float64) * np.minimum(x, 0)).sum(axis=(0, 2))
    np.testing.assert_allclose(grad, expected, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


def _run_all_kernels(a, b, v):
    flat = a.reshape(-1)
    p = ew.params(1.5)
    outs = [np.empty_like(flat), np.empty_like(flat), v.copy(), v.copy(), v.copy(),
            np.empty_like(a), np.empty_like(a)]
    ew.unary_forward(ew.SWISH, p, flat, outs[0])
    ew.unary_backward(ew.SWISH, p, flat, outs[0], b.reshape(-1), outs[1])
    ew.axis_sum(a, True, outs[2])
    ew.axis_dot(a, b, True, outs[3])
    ew.prelu_slope_grad(a, b, outs[4])
    ew.axis_scale(a, v, outs[5])
    ew.prelu_backward(a, b, v, outs[6])
    return outs


def test_parallel_path_is_used_and_results_do_not_depend_on_thread_count():
    a, b, v = _arrays((7, 5, 1001))
    assert a.size >= ew.PARALLEL_MIN
    single = on_one_thread(lambda: _run_all_kernels(a, b, v))
    for one, many in zip(single, _run_all_kernels(a, b, v)):
        np.testing.assert_array_equal(one, many)


def test_parallel_and_serial_paths_agree():
    a, b, v = _arrays((7, 5, 1001))
    large = _run_all_kernels(a, b, v)
    small_a, small_b = a[:1].copy(), b[:1].copy()
    assert small_a.size < ew.PARALLEL_MIN
    small = _run_all_kernels(small_a, small_b, v)
    n = small_a.size
    for i in (0, 1):
        np.testing.assert_array_equal(small[i], large[i][:n])
    for i in (5, 6):
        np.testing.assert_array_equal(small[i], large[i][:1])


# ---- ReLU's vectorised block path --------------------------------------------------------------

def _caffe_relu(x, slope):
    """relu_layer.cpp in float32: max(x, 0) + slope · min(x, 0) with std::max/min (so −0 stays
    −0 and NaN stays NaN); dx = dy · ((x > 0) + slope · (x ≤ 0))."""
    zero = np.float32(0.0)
    with np.errstate(invalid="ignore"):     # 0 · (−inf) is NaN, in Caffe too
        y = np.where(x < zero, zero, x) + slope * np.where(zero < x, zero, x)
    grad = (x > 0).astype(np.float32) + slope * (x <= 0).astype(np.float32)
    return y, grad


# Sizes below, at and above the serial threshold, not multiples of the block or vector width.
RELU_SIZES = [1, 7, 1001, ew.PARALLEL_MIN - 1, ew.PARALLEL_MIN, 3 * ew.BLOCK + 5]


@pytest.mark.parametrize("n", RELU_SIZES)
@pytest.mark.parametrize("slope", [0.0, 0.1, -0.3])
@pytest.mark.parametrize("in_place", [False, True])
def test_relu_block_path_is_caffes_formula_to_the_bit(n, slope, in_place):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(np.float32)
    x[: min(n, 6)] = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -1.0], np.float32)[: min(n, 6)]
    dy = rng.standard_normal(n).astype(np.float32)
    p = ew.params(slope)
    expected_y, grad = _caffe_relu(x, np.float32(slope))
    y = x.copy() if in_place else np.empty_like(x)
    ew.unary_forward(ew.RELU, p, y if in_place else x, y)
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(np.signbit(y), np.signbit(expected_y))
    dx = dy.copy() if in_place else np.empty_like(dy)
    ew.unary_backward(ew.RELU, p, x, y, dx if in_place else dy, dx)
    np.testing.assert_array_equal(dx, dy * grad)


@pytest.mark.parametrize("in_place", [False, True])
def test_relu_block_path_does_not_depend_on_thread_count(in_place):
    x = np.random.default_rng(5).standard_normal(4 * ew.BLOCK + 3).astype(np.float32)
    p = ew.params(0.2)

    def run():
        y = x.copy() if in_place else np.empty_like(x)
        ew.unary_forward(ew.RELU, p, y if in_place else x, y)
        dx = x.copy()
        ew.unary_backward(ew.RELU, p, x, y, dx, dx if in_place else np.empty_like(x))
        return y

    single = on_one_thread(run)
    np.testing.assert_array_equal(single, run())


@pytest.mark.parametrize("shape", [(2, 3, 5), (3, 4, 3001)])
def test_axis_scale_keeps_signed_zero_and_runs_in_place(shape):
    x, _, v = _arrays(shape)
    x.reshape(-1)[:4] = [0.0, -0.0, np.nan, np.inf]
    v[0] = -1.0
    expected = x * v[None, :, None]
    ew.axis_scale(x, v, x)
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(np.signbit(x), np.signbit(expected))
