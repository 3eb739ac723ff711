"""im2row / row2im and the batched transpose against the im2col references."""

import numpy as np
import pytest

from protonet.kernels import im2row

from tests.kernels.test_im2col import col2im_reference, im2col_reference, output_shape

# (x shape (n, c, h, w), ksize, pad, stride, dilation)
CASES = [
    ((2, 3, 7, 7), (3, 3), (0, 0), (1, 1), (1, 1)),
    ((2, 4, 9, 8), (3, 3), (1, 1), (2, 2), (1, 1)),
    ((1, 5, 6, 7), (5, 5), (2, 2), (1, 1), (1, 1)),
    ((3, 2, 9, 9), (3, 3), (2, 2), (1, 1), (2, 2)),
    ((2, 3, 8, 9), (3, 5), (1, 2), (2, 1), (1, 1)),
    ((2, 1, 11, 10), (4, 4), (0, 0), (3, 3), (1, 1)),
    ((1, 3, 4, 4), (5, 5), (3, 3), (1, 1), (1, 1)),       # windows wider than the image
    ((2, 6, 7, 6), (3, 2), (2, 1), (1, 2), (1, 3)),
]


def _ids():
    return [f"{shape}-k{k}-p{p}-s{s}-d{d}" for shape, k, p, s, d in CASES]


def rows_reference(x, ksize, pad, stride, dilation):
    """The row layout from Caffe's columns: (n·oh·ow, kh·kw·c), window in (kh, kw, c) order."""
    n, c = x.shape[:2]
    out = output_shape(x.shape[2:], ksize, pad, stride, dilation)
    col = im2col_reference(x, ksize, pad, stride, dilation).reshape((n, c) + ksize + out)
    return col.transpose(0, 4, 5, 2, 3, 1).reshape(n * out[0] * out[1], -1)


def channels_last(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("shape,ksize,pad,stride,dilation", CASES, ids=_ids())
def test_im2row_is_caffes_columns_in_window_major_order(shape, ksize, pad, stride, dilation):
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    out = output_shape(shape[2:], ksize, pad, stride, dilation)
    expected = rows_reference(x, ksize, pad, stride, dilation)
    col = np.full(expected.shape, np.nan, dtype=np.float32)     # every entry must be written
    im2row.im2row_2d(channels_last(x), ksize, pad, stride, dilation, out, col)
    np.testing.assert_array_equal(col, expected)


@pytest.mark.parametrize("shape,ksize,pad,stride,dilation", CASES, ids=_ids())
def test_row2im_sums_each_window_entry_into_its_pixel(shape, ksize, pad, stride, dilation):
    n, c, h, w = shape
    out = output_shape(shape[2:], ksize, pad, stride, dilation)
    rows = np.random.default_rng(1).standard_normal(
        (n * out[0] * out[1], c * ksize[0] * ksize[1]), dtype=np.float32)
    # The same numbers in Caffe's column layout, folded by the col2im reference.
    col = rows.reshape((n,) + out + ksize + (c,)).transpose(0, 5, 3, 4, 1, 2).reshape(
        (n, -1) + out)
    expected = col2im_reference(col, (h, w), ksize, pad, stride, dilation)
    image = np.full((n, h, w, c), np.nan, dtype=np.float32)     # overwritten, not added to
    im2row.row2im_2d(rows, ksize, pad, stride, dilation, out, image)
    np.testing.assert_allclose(image.transpose(0, 3, 1, 2), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 3, 5), (3, 130, 7), (2, 64, 64), (1, 5, 200)])
def test_transpose_batched_swaps_the_last_two_axes(shape):
    src = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    dst = np.empty((shape[0], shape[2], shape[1]), dtype=np.float32)
    im2row.transpose_batched(src, dst)
    np.testing.assert_array_equal(dst, src.transpose(0, 2, 1))
