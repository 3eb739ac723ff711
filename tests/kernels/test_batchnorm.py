"""Normalization kernels (BatchNorm, MVN) against slow, obvious NumPy references."""

import numpy as np
import pytest

from protonet.kernels import batchnorm as bn
from protonet.kernels.elementwise import PARALLEL_MIN, STREAM_MIN
from tests.helpers.tolerances import KERNEL_ATOL, KERNEL_RTOL
from tests.helpers.threads import on_one_thread

# Odd sizes on both sides of the serial threshold.
SHAPES = [(1, 1, 1), (2, 3, 5), (3, 2, 17), (4, 3, PARALLEL_MIN // 8 + 3)]
# From STREAM_MIN elements on the copy takes non-temporal stores; an odd plane length leaves
# ragged ends on both sides of the aligned lines.
LARGE = (2, 3, STREAM_MIN // 6 + 5)
EPS = np.float32(1e-5)


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _reference(x, denom_mode, eps):
    """mean and var in float64 over (outer, inner) (the centred value rounded to float32 first,
    as Caffe's float (X − EX)² is); denom and y in float32."""
    mean = x.astype(np.float64).mean(axis=(0, 2)).astype(np.float32)
    centred = (x - mean[None, :, None]).astype(np.float64)
    var = (centred * centred).mean(axis=(0, 2)).astype(np.float32)
    if denom_mode == bn.EPS_IN_SQRT:
        denom = np.sqrt(var + eps)
    elif denom_mode == bn.EPS_AFTER_SQRT:
        denom = np.sqrt(var) + eps
    else:
        denom = np.ones_like(var)
    return mean, var, denom, (x - mean[None, :, None]) / denom[None, :, None]


def _standardize(x, denom_mode, in_place):
    dim = x.shape[1]
    mean, var, denom = (np.zeros(dim, np.float32), np.zeros(dim, np.float32),
                        np.ones(dim, np.float32))
    y = x.copy() if in_place else np.empty_like(x)
    copy = np.empty_like(x)
    bn.standardize(y if in_place else x, EPS, denom_mode, mean, var, denom, y, copy)
    return mean, var, denom, y, copy


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("denom_mode", [bn.EPS_IN_SQRT, bn.EPS_AFTER_SQRT, bn.NO_VARIANCE])
@pytest.mark.parametrize("in_place", [False, True])
def test_standardize_matches_reference_and_writes_the_copy(shape, denom_mode, in_place):
    x = _rand(shape)
    mean, var, denom, y, copy = _standardize(x, denom_mode, in_place)
    ref_mean, ref_var, ref_denom, ref_y = _reference(x, denom_mode, EPS)
    np.testing.assert_allclose(mean, ref_mean, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    if denom_mode != bn.NO_VARIANCE:
        np.testing.assert_allclose(var, ref_var, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    np.testing.assert_allclose(denom, ref_denom, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    np.testing.assert_allclose(y, ref_y, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    np.testing.assert_array_equal(copy, y)


@pytest.mark.parametrize("shape", SHAPES)
def test_standardize_equals_moments_then_normalize_forward(shape):
    x = _rand(shape, seed=1)
    mean, var, denom, y, _ = _standardize(x, bn.EPS_IN_SQRT, in_place=False)
    mean2, var2 = np.zeros_like(mean), np.zeros_like(var)
    bn.moments(x, True, mean2, var2)
    denom2 = np.sqrt(var2 + EPS)
    y2 = np.empty_like(x)
    bn.normalize_forward(x, mean2, denom2, y2)
    for ours, theirs in ((mean, mean2), (var, var2), (denom, denom2), (y, y2)):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", [bn.SCALE_ONLY, bn.CENTER, bn.FULL])
def test_normalize_backward_matches_reference_and_runs_in_place(shape, mode):
    y, dy = _rand(shape, seed=2), _rand(shape, seed=3)
    denom = np.abs(_rand(shape[1], seed=4)) + np.float32(0.5)
    m = shape[0] * shape[2]
    d64, y64 = dy.astype(np.float64), y.astype(np.float64)
    if mode == bn.CENTER:       # no division: MVN's mean-only gradient
        expected = d64 - d64.mean(axis=(0, 2), keepdims=True)
    elif mode == bn.SCALE_ONLY:
        expected = d64 / denom[None, :, None]
    else:
        expected = (d64 - (y64 * (d64 * y64).sum(axis=(0, 2), keepdims=True)
                           + d64.sum(axis=(0, 2), keepdims=True)) / m) / denom[None, :, None]
    dx = np.empty_like(dy)
    bn.normalize_backward(mode, dy, y, denom, dx)
    np.testing.assert_allclose(dx, expected, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    bn.normalize_backward(mode, dy, y, denom, dy)
    np.testing.assert_array_equal(dy, dx)


def test_standardize_does_not_depend_on_thread_count():
    x = _rand(SHAPES[-1], seed=5)
    single = on_one_thread(lambda: _standardize(x, bn.EPS_IN_SQRT, in_place=True))
    for one, many in zip(single, _standardize(x, bn.EPS_IN_SQRT, in_place=True)):
        np.testing.assert_array_equal(one, many)


def _misaligned_like(x):
    """An empty array shaped like x that starts 4 bytes past a 64-byte boundary."""
    buffer = np.empty(x.size + 32, np.float32)
    start = (-buffer.ctypes.data % 64) // 4 + 1
    return buffer[start:start + x.size].reshape(x.shape)


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("aligned", [True, False])
def test_standardize_streams_a_large_copy_exactly(in_place, aligned):
    x = _rand(LARGE, seed=6) * 3 + 1
    dim = x.shape[1]
    stats = [np.zeros(dim, np.float32) for _ in range(3)]
    y = x.copy() if in_place else np.empty_like(x)
    copy = np.empty_like(x) if aligned else _misaligned_like(x)
    bn.standardize(y if in_place else x, EPS, bn.EPS_IN_SQRT, *stats, y, copy)
    for ours, ref in zip(stats + [y], _reference(x, bn.EPS_IN_SQRT, EPS)):
        np.testing.assert_allclose(ours, ref, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    np.testing.assert_array_equal(copy, y)
    # The same values as without a copy (one loop, ordinary stores).
    alone = np.empty_like(x)
    bn.standardize(x, EPS, bn.EPS_IN_SQRT, *[np.zeros(dim, np.float32) for _ in range(3)],
                   alone, alone)
    np.testing.assert_array_equal(alone, y)


def test_moments_keep_the_two_pass_accuracy_far_from_zero():
    # mean 1e5, std 1: E[x²] − E[x]² would lose the variance to float64 cancellation.
    x = _rand((4, 3, 5000), seed=7) + np.float32(1e5)
    mean, var = np.zeros(3, np.float32), np.zeros(3, np.float32)
    bn.moments(x, True, mean, var)
    ref_mean, ref_var, _, _ = _reference(x, bn.EPS_IN_SQRT, EPS)
    np.testing.assert_allclose(mean, ref_mean, rtol=KERNEL_RTOL)
    np.testing.assert_allclose(var, ref_var, rtol=KERNEL_RTOL)


@pytest.mark.parametrize("shape", SHAPES)
def test_normalize_forward_in_place_equals_out_of_place(shape):
    x = _rand(shape, seed=8)
    mean = _rand(shape[1], seed=9)
    denom = np.abs(_rand(shape[1], seed=10)) + np.float32(0.5)
    y = np.empty_like(x)
    bn.normalize_forward(x, mean, denom, y)
    np.testing.assert_allclose(y, (x - mean[None, :, None]) / denom[None, :, None],
                               rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    bn.normalize_forward(x, mean, denom, x)
    np.testing.assert_array_equal(x, y)


def test_large_standardize_and_backward_do_not_depend_on_thread_count():
    x = _rand(LARGE, seed=11)
    dy = _rand(LARGE, seed=12)

    def run():
        mean, var, denom, y, copy = _standardize(x, bn.EPS_IN_SQRT, in_place=True)
        dx = np.empty_like(x)
        bn.normalize_backward(bn.FULL, dy, copy, denom, dx)
        return mean, var, denom, y, copy, dx

    single = on_one_thread(run)
    for one, many in zip(single, run()):
        np.testing.assert_array_equal(one, many)
