"""im2col / col2im kernels (2-D and N-D) against slow, obvious NumPy references."""

import itertools

import numba
import numpy as np
import pytest

from protonet.kernels import im2col as kernels

from tests.helpers.tolerances import KERNEL_ATOL, KERNEL_RTOL


def output_shape(im_shape, ksize, pad, stride, dilation):
    return tuple((i + 2 * p - (d * (k - 1) + 1)) // s + 1
                 for i, k, p, s, d in zip(im_shape, ksize, pad, stride, dilation))


def _window(offset, dilation, stride, count):
    return slice(offset * dilation, offset * dilation + stride * (count - 1) + 1, stride)


def im2col_reference(x, ksize, pad, stride, dilation):
    """x (n, c, *im) → (n, c · prod(k), *out): zero-pad, then one strided slice per offset."""
    n, c = x.shape[:2]
    out = output_shape(x.shape[2:], ksize, pad, stride, dilation)
    padded = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    col = np.zeros((n, c) + tuple(ksize) + out, dtype=x.dtype)
    for offset in itertools.product(*(range(k) for k in ksize)):
        window = tuple(_window(o, d, s, m) for o, d, s, m in zip(offset, dilation, stride, out))
        col[(slice(None), slice(None)) + offset] = padded[(slice(None), slice(None)) + window]
    return col.reshape((n, c * int(np.prod(ksize))) + out)


def col2im_reference(col, im_shape, ksize, pad, stride, dilation):
    """Adjoint of im2col_reference, adding offset by offset (Caffe's order for every element)."""
    n = col.shape[0]
    c = col.shape[1] // int(np.prod(ksize))
    out = tuple(col.shape[2:])
    padded = np.zeros((n, c) + tuple(i + 2 * p for i, p in zip(im_shape, pad)), dtype=col.dtype)
    col = col.reshape((n, c) + tuple(ksize) + out)
    for offset in itertools.product(*(range(k) for k in ksize)):
        window = tuple(_window(o, d, s, m) for o, d, s, m in zip(offset, dilation, stride, out))
        padded[(slice(None), slice(None)) + window] += col[(slice(None), slice(None)) + offset]
    crop = tuple(slice(p, p + i) for p, i in zip(pad, im_shape))
    return padded[(slice(None), slice(None)) + crop]


# (image shape, kernel, pad, stride, dilation): odd sizes, padding, strides, dilation, rectangles
CASES_2D = [
    ((7, 9), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((7, 9), (3, 2), (2, 0), (2, 3), (1, 2)),
    ((5, 5), (1, 1), (0, 0), (1, 1), (1, 1)),
    ((11, 10), (4, 4), (0, 0), (3, 3), (1, 1)),
    ((6, 7), (5, 3), (3, 1), (2, 1), (1, 3)),
    ((9, 9), (3, 3), (2, 2), (1, 1), (2, 2)),
    ((1, 1), (3, 3), (1, 1), (1, 1), (1, 1)),
]
CASES_ND = [
    ((8,), (3,), (1,), (2,), (1,)),
    ((5, 6, 5), (3, 3, 3), (1, 1, 1), (2, 2, 2), (1, 1, 1)),
    ((4, 5, 3), (2, 3, 1), (0, 2, 1), (1, 2, 1), (2, 1, 1)),
    ((2, 3, 2, 3), (2, 2, 1, 2), (1, 0, 0, 1), (1, 1, 2, 1), (1, 1, 1, 2)),
]


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _random(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("batch,channels", [(2, 3), (1, 1)])
@pytest.mark.parametrize("im_shape,ksize,pad,stride,dilation", CASES_2D)
def test_im2col_2d_matches_reference(rng, batch, channels, im_shape, ksize, pad, stride,
                                     dilation):
    x = _random(rng, (batch, channels) + im_shape)
    expected = im2col_reference(x, ksize, pad, stride, dilation)
    col = np.full(expected.shape, np.nan, dtype=np.float32)
    kernels.im2col_2d(x, ksize, pad, stride, dilation, col)
    np.testing.assert_array_equal(col, expected)


@pytest.mark.parametrize("im_shape,ksize,pad,stride,dilation", CASES_2D)
def test_col2im_2d_matches_reference_exactly(rng, im_shape, ksize, pad, stride, dilation):
    out = output_shape(im_shape, ksize, pad, stride, dilation)
    col = _random(rng, (2, 3 * int(np.prod(ksize))) + out)
    expected = col2im_reference(col, im_shape, ksize, pad, stride, dilation)
    x = np.full((2, 3) + im_shape, np.nan, dtype=np.float32)
    kernels.col2im_2d(col, ksize, pad, stride, dilation, x)
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("im_shape,ksize,pad,stride,dilation", CASES_ND + CASES_2D)
def test_im2col_nd_matches_reference(rng, im_shape, ksize, pad, stride, dilation):
    x = _random(rng, (2, 3) + im_shape)
    expected = im2col_reference(x, ksize, pad, stride, dilation)
    col = np.full(expected.shape, np.nan, dtype=np.float32)
    out = tuple(expected.shape[2:])
    kernels.im2col_nd(x.reshape(2, 3, -1), im_shape, out, ksize, pad, stride, dilation,
                      col.reshape(2, expected.shape[1], -1))
    np.testing.assert_array_equal(col, expected)


@pytest.mark.parametrize("im_shape,ksize,pad,stride,dilation", CASES_ND + CASES_2D)
def test_col2im_nd_matches_reference_exactly(rng, im_shape, ksize, pad, stride, dilation):
    out = output_shape(im_shape, ksize, pad, stride, dilation)
    col = _random(rng, (2, 3 * int(np.prod(ksize))) + out)
    expected = col2im_reference(col, im_shape, ksize, pad, stride, dilation)
    x = np.full((2, 3) + im_shape, np.nan, dtype=np.float32)
    kernels.col2im_nd(col.reshape(2, col.shape[1], -1), im_shape, out, ksize, pad, stride,
                      dilation, x.reshape(2, 3, -1))
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("im_shape,ksize,pad,stride,dilation", CASES_2D[:3])
def test_col2im_is_the_adjoint_of_im2col(rng, im_shape, ksize, pad, stride, dilation):
    x = _random(rng, (2, 3) + im_shape)
    out = output_shape(im_shape, ksize, pad, stride, dilation)
    grad = _random(rng, (2, 3 * int(np.prod(ksize))) + out)
    col = np.empty_like(grad)
    kernels.im2col_2d(x, ksize, pad, stride, dilation, col)
    folded = np.empty_like(x)
    kernels.col2im_2d(grad, ksize, pad, stride, dilation, folded)
    lhs = np.sum(col.astype(np.float64) * grad)
    rhs = np.sum(x.astype(np.float64) * folded)
    np.testing.assert_allclose(lhs, rhs, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


def test_kernels_give_identical_results_with_one_thread_and_all_threads(rng):
    im_shape, ksize, pad, stride, dilation = CASES_2D[4]
    out = output_shape(im_shape, ksize, pad, stride, dilation)
    x = _random(rng, (3, 4) + im_shape)
    grad = _random(rng, (3, 4 * int(np.prod(ksize))) + out)

    def run():
        col = np.empty_like(grad)
        kernels.im2col_2d(x, ksize, pad, stride, dilation, col)
        folded = np.empty_like(x)
        kernels.col2im_2d(grad, ksize, pad, stride, dilation, folded)
        folded_nd = np.empty_like(x)
        kernels.col2im_nd(grad.reshape(3, grad.shape[1], -1), im_shape, out, ksize, pad,
                          stride, dilation, folded_nd.reshape(3, 4, -1))
        return col, folded, folded_nd

    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        single = run()
    finally:
        numba.set_num_threads(threads)
    for one, many in zip(single, run()):
        np.testing.assert_array_equal(one, many)
