"""Pooling kernels against slow NumPy references that follow Caffe's loops step by step.

The references accumulate in float32 in the same order as the kernels, so most comparisons are
exact (``assert_array_equal``), as STYLE 2.7 asks for identical arithmetic.
"""

import numpy as np
import pytest

from protonet.kernels import pooling
from tests.helpers.threads import on_one_thread

# (kernel, stride, pad) as (h, w) pairs: square, rectangular, padded, stride > kernel.
GEOMETRIES = [
    ((2, 2), (2, 2), (0, 0)),
    ((3, 3), (2, 2), (1, 1)),
    ((3, 2), (1, 2), (1, 0)),
    ((2, 3), (3, 1), (0, 2)),
    ((1, 1), (3, 3), (0, 0)),  # stride > kernel without pad: Caffe leaves empty last windows
    ((3, 3), (1, 1), (1, 1)),  # the unrolled kernels (2×2 s2, 3×3 s1/s2): interior + border
    ((3, 3), (2, 1), (0, 0)),
    ((3, 3), (3, 2), (0, 1)),
]
# Odd sizes; the last is wide enough for interior windows on every unrolled kernel.
SHAPES = [(1, 1, 5, 5), (2, 3, 7, 6), (1, 2, 4, 9), (1, 2, 9, 23)]
FLT_MAX = np.finfo(np.float32).max


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


def caffe_pooled_size(size, kernel, stride, pad, any_pad):
    """Caffe's CEIL output size with the clip-into-padding rule (pooling_layer.cpp)."""
    out = int(np.ceil((size + 2 * pad - kernel) / stride)) + 1
    if any_pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def top_shape(shape, kernel, stride, pad):
    any_pad = pad != (0, 0)
    return shape[:2] + tuple(caffe_pooled_size(shape[2 + a], kernel[a], stride[a], pad[a],
                                               any_pad) for a in range(2))


def windows(top_hw, bottom_hw, kernel, stride, pad, clip_to):
    """Yield (oy, ox, y0, y1, x0, x1, pool_size) as Caffe's loops compute them.

    ``clip_to`` is 0 for MAX/STOCHASTIC (no pool size) and ``pad`` for AVE (divisor counts
    padding up to size + pad).
    """
    for oy in range(top_hw[0]):
        for ox in range(top_hw[1]):
            ys = oy * stride[0] - pad[0]
            xs = ox * stride[1] - pad[1]
            ye = min(ys + kernel[0], bottom_hw[0] + clip_to[0])
            xe = min(xs + kernel[1], bottom_hw[1] + clip_to[1])
            size = (ye - ys) * (xe - xs)
            yield (oy, ox, max(ys, 0), min(ye, bottom_hw[0]), max(xs, 0),
                   min(xe, bottom_hw[1]), size)


def ref_max_pool(x, kernel, stride, pad, shape):
    out = np.full(shape, -FLT_MAX, dtype=np.float32)
    mask = np.full(shape, -1, dtype=np.int32)
    for i in range(shape[0]):
        for j in range(shape[1]):
            for oy, ox, y0, y1, x0, x1, _ in windows(shape[2:], x.shape[2:], kernel, stride,
                                                     pad, (0, 0)):
                for y in range(y0, y1):
                    for xx in range(x0, x1):
                        if x[i, j, y, xx] > out[i, j, oy, ox]:
                            out[i, j, oy, ox] = x[i, j, y, xx]
                            mask[i, j, oy, ox] = y * x.shape[3] + xx
    return out, mask


def ref_ave_pool(x, kernel, stride, pad, shape):
    out = np.zeros(shape, dtype=np.float32)
    for i in range(shape[0]):
        for j in range(shape[1]):
            for oy, ox, y0, y1, x0, x1, size in windows(shape[2:], x.shape[2:], kernel, stride,
                                                        pad, pad):
                total = np.float32(0)
                for y in range(y0, y1):
                    for xx in range(x0, x1):
                        total = np.float32(total + x[i, j, y, xx])
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[i, j, oy, ox] = total / np.float32(size)
    return out


def ref_max_backward(top_diff, mask, bottom_shape, start=None):
    bottom_diff = np.zeros(bottom_shape, dtype=np.float32) if start is None else start.copy()
    for i, j, oy, ox in np.ndindex(*top_diff.shape):
        index = mask[i, j, oy, ox]
        if index >= 0:
            bottom_diff[i, j, index // bottom_shape[3], index % bottom_shape[3]] += \
                top_diff[i, j, oy, ox]
    return bottom_diff


def ref_ave_backward(top_diff, kernel, stride, pad, bottom_shape, start=None):
    bottom_diff = np.zeros(bottom_shape, dtype=np.float32) if start is None else start.copy()
    for i in range(bottom_shape[0]):
        for j in range(bottom_shape[1]):
            for oy, ox, y0, y1, x0, x1, size in windows(top_diff.shape[2:], bottom_shape[2:],
                                                        kernel, stride, pad, pad):
                with np.errstate(invalid="ignore", divide="ignore"):  # empty windows
                    share = top_diff[i, j, oy, ox] / np.float32(size)
                bottom_diff[i, j, y0:y1, x0:x1] += share
    return bottom_diff


def ref_stochastic_train(x, kernel, stride, u, shape):
    out = np.zeros(shape, dtype=np.float32)
    index = np.full(shape, -1, dtype=np.int32)
    for i in range(shape[0]):
        for j in range(shape[1]):
            for oy, ox, y0, y1, x0, x1, _ in windows(shape[2:], x.shape[2:], kernel, stride,
                                                     (0, 0), (0, 0)):
                values = x[i, j, y0:y1, x0:x1].reshape(-1)
                positions = [y * x.shape[3] + xx for y in range(y0, y1) for xx in range(x0, x1)]
                total = np.float32(0)
                for v in values:
                    total = np.float32(total + v)
                threshold = np.float32(u[i, j, oy, ox] * total)
                running = np.float32(0)
                for v, position in zip(values, positions):
                    running = np.float32(running + v)
                    if running >= threshold:
                        out[i, j, oy, ox] = v
                        index[i, j, oy, ox] = position
                        break
    return out, index


def ref_stochastic_test(x, kernel, stride, shape):
    out = np.zeros(shape, dtype=np.float32)
    for i in range(shape[0]):
        for j in range(shape[1]):
            for oy, ox, y0, y1, x0, x1, _ in windows(shape[2:], x.shape[2:], kernel, stride,
                                                     (0, 0), (0, 0)):
                total = np.float32(0)
                squares = np.float32(0)
                for v in x[i, j, y0:y1, x0:x1].reshape(-1):
                    total = np.float32(total + v)
                    squares = np.float32(squares + v * v)
                out[i, j, oy, ox] = squares / total if total > 0 else 0
    return out


def check_max_pool(x, kernel, stride, pad, top_diff):
    """Forward values and argmax, and backward (both modes), against Caffe's loops."""
    shape = x.shape
    tshape = top_diff.shape
    out = np.empty(tshape, dtype=np.float32)
    mask = np.empty(tshape, dtype=np.int32)
    pooling.max_pool_forward(x, kernel, stride, pad, out, mask)
    ref_out, ref_mask = ref_max_pool(x, kernel, stride, pad, tshape)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(mask, ref_mask)

    expected = ref_max_backward(top_diff, ref_mask, shape)
    start = np.arange(x.size, dtype=np.float32).reshape(shape)
    bottom_diff = start.copy()
    pooling.max_pool_backward(top_diff, mask, bottom_diff, True)
    np.testing.assert_array_equal(bottom_diff, ref_max_backward(top_diff, ref_mask, shape,
                                                                start=start))
    bottom_diff[...] = np.nan                 # accumulate=False overwrites every element
    pooling.max_pool_backward(top_diff, mask, bottom_diff, False)
    np.testing.assert_array_equal(bottom_diff, expected)
    return mask


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kernel, stride, pad", GEOMETRIES, ids=str)
def test_max_pool_forward_and_backward_match_caffe_loops(rng, shape, kernel, stride, pad):
    x = rng.standard_normal(shape).astype(np.float32)
    tshape = top_shape(shape, kernel, stride, pad)
    check_max_pool(x, kernel, stride, pad, rng.standard_normal(tshape).astype(np.float32))


def check_ave_pool(x, kernel, stride, pad, top_diff):
    """Forward and backward (both modes), bit for bit against Caffe's loops."""
    shape = x.shape
    tshape = top_diff.shape
    out = np.empty(tshape, dtype=np.float32)
    pooling.ave_pool_forward(x, kernel, stride, pad, out)
    np.testing.assert_array_equal(out, ref_ave_pool(x, kernel, stride, pad, tshape))

    expected = ref_ave_backward(top_diff, kernel, stride, pad, shape)
    start = np.arange(x.size, dtype=np.float32).reshape(shape) / 8
    bottom_diff = start.copy()
    pooling.ave_pool_backward(top_diff, kernel, stride, pad, bottom_diff, True)
    np.testing.assert_array_equal(
        bottom_diff, ref_ave_backward(top_diff, kernel, stride, pad, shape, start=start))
    bottom_diff[...] = np.nan                 # accumulate=False overwrites every element
    pooling.ave_pool_backward(top_diff, kernel, stride, pad, bottom_diff, False)
    np.testing.assert_array_equal(bottom_diff, expected)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kernel, stride, pad", GEOMETRIES, ids=str)
def test_ave_pool_forward_and_backward_match_caffe_loops(rng, shape, kernel, stride, pad):
    x = rng.standard_normal(shape).astype(np.float32)
    tshape = top_shape(shape, kernel, stride, pad)
    check_ave_pool(x, kernel, stride, pad, rng.standard_normal(tshape).astype(np.float32))


# The bench's geometries on small planes (the specialised 2×2/s2, 3×3/s2, 3×3/s1 paths), odd
# sizes, planes narrower than a vector, planes the 3×3 path cuts into bands, and a chunk of
# planes above PARALLEL_MIN.
FAST_PATH_CASES = [
    ((3, 5, 8, 8), (2, 2), (2, 2), (0, 0)),
    ((2, 3, 9, 7), (2, 2), (2, 2), (0, 0)),   # odd: the ceil window is clipped
    ((2, 3, 16, 16), (3, 3), (2, 2), (0, 0)),
    ((2, 3, 11, 13), (3, 3), (2, 2), (0, 0)),
    ((2, 3, 12, 9), (3, 3), (2, 2), (1, 1)),
    ((2, 3, 6, 6), (3, 3), (1, 1), (1, 1)),
    ((2, 3, 5, 4), (3, 3), (1, 1), (0, 0)),
    ((2, 2, 7, 10), (3, 3), (1, 1), (2, 2)),
    ((1, 1, 3, 3), (3, 3), (2, 2), (1, 1)),
    ((4, 40, 16, 15), (3, 3), (2, 2), (1, 1)),
    ((1, 2, 70, 69), (3, 3), (2, 2), (1, 1)),   # 3×3 in several bands of output rows
    ((3, 4, 16, 16), (3, 3), (2, 2), (0, 0)),   # AVE 3×3/s2 flat: even height, clipped row
    ((2, 3, 9, 6), (3, 3), (2, 2), (0, 0)),     # odd height: no clipped row
    ((2, 3, 4, 2), (3, 3), (2, 2), (0, 0)),     # one column, clipped
    ((1, 2, 43, 70), (3, 3), (1, 1), (1, 1)),
    ((2, 16, 40, 41), (2, 2), (2, 2), (0, 0)),
    ((2, 3, 9, 9), (5, 5), (1, 1), (2, 2)),   # LRN WITHIN_CHANNEL's AVE geometry
    ((1, 2, 13, 13), (7, 7), (7, 7), (3, 3)),  # an SPP level: stride = kernel, padded
    ((1, 2, 17, 18), (16, 16), (1, 1), (0, 0)),  # a large window on a small plane
    ((2, 3, 7, 7), (7, 7), (1, 1), (0, 0)),   # the window is the plane
    ((1, 2, 20, 20), (20, 20), (1, 1), (0, 0)),
]


def tie_heavy(rng, shape):
    """ReLU-like values on a coarse grid: many zeros and equal maxima in every window."""
    return np.maximum(rng.integers(-3, 3, size=shape), 0).astype(np.float32)


@pytest.mark.parametrize("shape, kernel, stride, pad", FAST_PATH_CASES, ids=str)
@pytest.mark.parametrize("values", ["normal", "ties"])
def test_pooling_fast_paths_match_caffe_loops(rng, shape, kernel, stride, pad, values):
    x = (rng.standard_normal(shape).astype(np.float32) if values == "normal"
         else tie_heavy(rng, shape))
    top_diff = rng.standard_normal(top_shape(shape, kernel, stride, pad)).astype(np.float32)
    check_max_pool(x, kernel, stride, pad, top_diff)
    check_ave_pool(x, kernel, stride, pad, top_diff)


@pytest.mark.parametrize("shape, kernel, stride, pad", FAST_PATH_CASES[:10], ids=str)
def test_max_pool_takes_first_maximum_among_specials(rng, shape, kernel, stride, pad):
    """-inf, NaN and -FLT_MAX never win (Caffe's -FLT_MAX start and strict >), ties keep the
    first in row-major order, and windows holding only such values give -FLT_MAX and -1."""
    specials = np.array([-np.inf, np.nan, -FLT_MAX, 0.0, 1.0, np.inf], dtype=np.float32)
    x = specials[rng.integers(0, 6, size=shape)]
    x[0, 0] = specials[rng.integers(0, 3, size=shape[2:])]   # a plane of losers only
    top_diff = rng.standard_normal(top_shape(shape, kernel, stride, pad)).astype(np.float32)
    mask = check_max_pool(x, kernel, stride, pad, top_diff)
    assert np.all(mask[0, 0] == -1)


@pytest.mark.parametrize("shape, kernel, stride, pad", [
    ((2, 3, 7, 8), (2, 2), (2, 2), (0, 0)),
    ((2, 3, 12, 11), (3, 3), (2, 2), (0, 0)),
    ((2, 3, 10, 9), (3, 3), (3, 3), (1, 1)),
    ((1, 2, 11, 10), (2, 3), (4, 3), (0, 0)),
], ids=str)
def test_pooling_with_floor_rounding_leaves_the_last_rows_and_columns_out(rng, shape, kernel,
                                                                          stride, pad):
    """Round mode FLOOR: no window reaches the last bottom rows/columns (zero gradient)."""
    tshape = shape[:2] + tuple((shape[2 + a] + 2 * pad[a] - kernel[a]) // stride[a] + 1
                               for a in range(2))
    assert tshape != top_shape(shape, kernel, stride, pad)
    x = rng.standard_normal(shape).astype(np.float32)
    top_diff = rng.standard_normal(tshape).astype(np.float32)
    check_max_pool(x, kernel, stride, pad, top_diff)
    check_ave_pool(x, kernel, stride, pad, top_diff)


def test_max_pool_without_mask_gives_the_same_values(rng):
    for shape, kernel, stride, pad in FAST_PATH_CASES:
        x = tie_heavy(rng, shape)
        tshape = top_shape(shape, kernel, stride, pad)
        out = np.empty(tshape, dtype=np.float32)
        pooling.max_pool_forward(x, kernel, stride, pad, out, np.empty(0, np.int32))
        np.testing.assert_array_equal(out, ref_max_pool(x, kernel, stride, pad, tshape)[0])


def test_max_pool_backward_routes_by_a_float_mask_top(rng):
    shape, kernel, stride, pad = (2, 3, 7, 6), (3, 3), (2, 2), (1, 1)
    tshape = top_shape(shape, kernel, stride, pad)
    x = rng.standard_normal(shape).astype(np.float32)
    _, ref_mask = ref_max_pool(x, kernel, stride, pad, tshape)
    ref_mask[0, 0, 0, 0] = -1                 # routes nothing
    top_diff = rng.standard_normal(tshape).astype(np.float32)
    bottom_diff = np.full(shape, np.nan, dtype=np.float32)
    pooling.max_pool_backward(top_diff, ref_mask.astype(np.float32), bottom_diff, False)
    np.testing.assert_array_equal(bottom_diff, ref_max_backward(top_diff, ref_mask, shape))


def test_max_pool_of_all_nan_window_gives_minus_flt_max_and_no_gradient():
    x = np.full((1, 1, 2, 2), np.nan, dtype=np.float32)
    out, mask = np.empty((1, 1, 1, 1), np.float32), np.empty((1, 1, 1, 1), np.int32)
    pooling.max_pool_forward(x, (2, 2), (2, 2), (0, 0), out, mask)
    assert out[0, 0, 0, 0] == -FLT_MAX and mask[0, 0, 0, 0] == -1
    bottom_diff = np.zeros_like(x)
    pooling.max_pool_backward(np.ones_like(out), mask, bottom_diff, False)
    np.testing.assert_array_equal(bottom_diff, np.zeros_like(x))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kernel, stride", [((2, 2), (2, 2)), ((3, 2), (1, 2)),
                                            ((1, 1), (3, 3))], ids=str)
def test_stochastic_pool_kernels_match_caffe_cuda_loops(rng, shape, kernel, stride):
    x = rng.random(shape).astype(np.float32)
    tshape = top_shape(shape, kernel, stride, (0, 0))
    u = (1 - rng.random(tshape)).astype(np.float32)
    out, index = np.empty(tshape, np.float32), np.empty(tshape, np.int32)
    pooling.stochastic_pool_forward_train(x, kernel, stride, u, out, index)
    ref_out, ref_index = ref_stochastic_train(x, kernel, stride, u, tshape)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(index, ref_index)

    pooling.stochastic_pool_forward_test(x, kernel, stride, out)
    np.testing.assert_array_equal(out, ref_stochastic_test(x, kernel, stride, tshape))


def test_stochastic_pool_on_zero_window_takes_the_first_position():
    x = np.zeros((1, 1, 2, 2), dtype=np.float32)
    u = np.full((1, 1, 1, 1), 0.5, dtype=np.float32)
    out, index = np.empty((1, 1, 1, 1), np.float32), np.empty((1, 1, 1, 1), np.int32)
    pooling.stochastic_pool_forward_train(x, (2, 2), (2, 2), u, out, index)
    assert index[0, 0, 0, 0] == 0 and out[0, 0, 0, 0] == 0
    pooling.stochastic_pool_forward_test(x, (2, 2), (2, 2), out)
    assert out[0, 0, 0, 0] == 0


def _run_all(x, u, top_diff, kernel, stride, pad):
    """Every kernel once (STOCHASTIC without pad); copies of all outputs."""
    results = []
    out, mask = np.empty(top_diff.shape, np.float32), np.empty(top_diff.shape, np.int32)
    pooling.max_pool_forward(x, kernel, stride, pad, out, mask)
    bottom_diff = np.ones_like(x)
    pooling.max_pool_backward(top_diff, mask, bottom_diff, True)
    results += [out.copy(), mask.copy(), bottom_diff.copy()]
    pooling.ave_pool_forward(x, kernel, stride, pad, out)
    bottom_diff[...] = 1
    pooling.ave_pool_backward(top_diff, kernel, stride, pad, bottom_diff, True)
    results += [out.copy(), bottom_diff.copy()]
    out, index = np.empty(u.shape, np.float32), np.empty(u.shape, np.int32)
    pooling.stochastic_pool_forward_train(np.abs(x), kernel, stride, u, out, index)
    results += [out.copy(), index.copy()]
    pooling.stochastic_pool_forward_test(np.abs(x), kernel, stride, out)
    results.append(out.copy())
    return results


@pytest.mark.parametrize("shape, kernel, stride, pad", [
    ((4, 40, 16, 15), (3, 3), (2, 2), (1, 1)),    # above PARALLEL_MIN: the prange path runs
    ((2, 12, 40, 41), (2, 2), (2, 2), (0, 0)),    # ... in several chunks of planes
    ((3, 300, 7, 7), (7, 7), (1, 1), (0, 0)),     # ... through the whole-plane path
    # above FORWARD_PARALLEL_MIN: the forward kernels' prange paths
    ((2, 130, 64, 66), (3, 3), (2, 2), (0, 0)),
    ((2, 130, 64, 66), (3, 3), (1, 1), (1, 1)),
    ((2, 130, 64, 66), (2, 2), (2, 2), (0, 0)),
])
def test_pooling_kernels_are_bit_identical_for_any_thread_count(rng, shape, kernel, stride,
                                                                 pad):
    x = rng.standard_normal(shape).astype(np.float32)
    top_diff = rng.standard_normal(top_shape(shape, kernel, stride, pad)).astype(np.float32)
    u = (1 - rng.random(top_shape(shape, kernel, stride, (0, 0)))).astype(np.float32)
    single = on_one_thread(lambda: _run_all(x, u, top_diff, kernel, stride, pad))
    parallel = _run_all(x, u, top_diff, kernel, stride, pad)
    for a, b in zip(single, parallel):
        np.testing.assert_array_equal(a, b)
