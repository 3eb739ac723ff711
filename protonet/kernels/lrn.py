"""Local response normalization kernels, in Caffe's arithmetic order (lrn_layer.cpp).

Notation: ``n c h w`` bottom (= top) shape; ``size`` the local size (odd), ``pre_pad`` =
(size − 1) / 2. Scalars arrive as float32 (``np.float32``) so that every product is a float32
product, as in Caffe.

ACROSS_CHANNELS: scale = k + α/size · Σ_{|c'−c| ≤ pre_pad} x_{c'}², y = x · scale^−β. Caffe
builds the channel sums with a running window (add the head, subtract the tail) and we do the
same, so the rounding matches. The kernels run ``prange`` over the ``n·h`` rows: each iteration
owns every channel of its row, and the order of arithmetic per element is fixed, so results do
not depend on the thread count.

WITHIN_CHANNEL is composed by the LRN layer from the AVE pooling kernels and the two
element-wise kernels here (Caffe's internal Power → Pooling → Power → Eltwise chain).

``error_model="numpy"``: a division by zero gives inf/NaN as in C++, never an exception.
"""

import numpy as np
from numba import njit, prange


# ---- ACROSS_CHANNELS ----------------------------------------------------------------------

@njit(cache=True, parallel=True, error_model="numpy")
def lrn_across_forward(x, size, alpha_over_size, k, beta, scale, out):
    """x (n, c, h, w) → scale (n, c, h, w) = k + α/size·Σx², out (n, c, h, w) = x·scale^−β.

    ``alpha_over_size``, ``k``, ``beta``: float32 scalars. ``scale`` is kept for backward.
    Neither output may alias ``x``.
    """
    n, c, h, w = x.shape
    pre_pad = (size - 1) // 2
    neg_alpha = -alpha_over_size
    neg_beta = -beta
    for nr in prange(n * h):
        i = nr // h
        r = nr % h
        for col in range(w):
            s = k
            for j in range(min(pre_pad + 1, c)):
                v = x[i, j, r, col]
                s += alpha_over_size * (v * v)
            scale[i, 0, r, col] = s
            for j in range(1, c):
                head = j + pre_pad
                if head < c:
                    v = x[i, head, r, col]
                    s += alpha_over_size * (v * v)
                tail = j - 1 - pre_pad
                if tail >= 0:
                    v = x[i, tail, r, col]
                    s += neg_alpha * (v * v)
                scale[i, j, r, col] = s
            for j in range(c):
                out[i, j, r, col] = x[i, j, r, col] * scale[i, j, r, col] ** neg_beta


@njit(cache=True, parallel=True, error_model="numpy")
def lrn_across_backward(x, top_data, top_diff, scale, size, cache_ratio, beta, bottom_diff):
    """dx = dy·scale^−β − cache_ratio · x · Σ_{|c'−c| ≤ pre_pad} dy_{c'}·y_{c'}/scale_{c'}.

    x, top_data, top_diff, scale: (n, c, h, w); ``cache_ratio`` = float32(2αβ/size), ``beta``
    float32. Overwrites bottom_diff (n, c, h, w), which must not alias the inputs.
    """
    n, c, h, w = x.shape
    pre_pad = (size - 1) // 2
    neg_beta = -beta
    neg_cache_ratio = -cache_ratio
    for nr in prange(n * h):
        i = nr // h
        r = nr % h
        for col in range(w):
            accum = np.float32(0.0)
            for j in range(min(pre_pad, c)):
                accum += top_diff[i, j, r, col] * top_data[i, j, r, col] / scale[i, j, r, col]
            for j in range(c):
                head = j + pre_pad
                if head < c:
                    accum += (top_diff[i, head, r, col] * top_data[i, head, r, col]
                              / scale[i, head, r, col])
                direct = top_diff[i, j, r, col] * scale[i, j, r, col] ** neg_beta
                bottom_diff[i, j, r, col] = direct + neg_cache_ratio * (x[i, j, r, col] * accum)
                tail = j - pre_pad
                if tail >= 0:
                    accum -= (top_diff[i, tail, r, col] * top_data[i, tail, r, col]
                              / scale[i, tail, r, col])


# ---- WITHIN_CHANNEL -----------------------------------------------------------------------

@njit(cache=True, parallel=True, error_model="numpy")
def lrn_within_forward(x, pooled, alpha, beta, power, out):
    """power = (1 + α·pooled)^−β, out = x·power; all (n, c, h, w), α and β float32.

    ``pooled`` is the AVE pooling of x² (size × size window, pad pre_pad, stride 1).
    Caffe quirk: the shift is 1, so lrn_param.k is ignored, and α multiplies the window *mean*
    (α/size² · Σx²), because Caffe builds this region from Power(scale α, shift 1) over an AVE
    pooling (lrn_layer.cpp). When α·β = 0 Power writes the constant 1 (power_layer.cpp).
    ``out`` and ``power`` must not alias ``x``.
    """
    n, c, h, w = x.shape
    neg_beta = -beta
    constant = alpha * neg_beta == 0
    for nc in prange(n * c):
        i = nc // c
        j = nc % c
        for y in range(h):
            for xx in range(w):
                if constant:
                    p = np.float32(1.0)
                else:
                    p = (pooled[i, j, y, xx] * alpha + np.float32(1.0)) ** neg_beta
                power[i, j, y, xx] = p
                out[i, j, y, xx] = x[i, j, y, xx] * p


@njit(cache=True, parallel=True, error_model="numpy")
def lrn_within_backward_pooled(x, top_diff, pooled, power, alpha, beta, pooled_diff):
    """Gradient reaching the pooled squares: dy·x · (−αβ)·power / (1 + α·pooled).

    All arrays (n, c, h, w); writes ``pooled_diff``. Follows Caffe's Eltwise PROD then Power
    backward order: (dy·x) · ((power / (α·pooled + 1)) · (−β·α)); 0 when α·β = 0.
    """
    n, c, h, w = x.shape
    diff_scale = -beta * alpha
    for nc in prange(n * c):
        i = nc // c
        j = nc % c
        for y in range(h):
            for xx in range(w):
                if diff_scale == 0:
                    pooled_diff[i, j, y, xx] = np.float32(0.0)
                else:
                    d = power[i, j, y, xx] / (pooled[i, j, y, xx] * alpha + np.float32(1.0))
                    if diff_scale != 1:
                        d = d * diff_scale
                    pooled_diff[i, j, y, xx] = (x[i, j, y, xx] * top_diff[i, j, y, xx]) * d


@njit(cache=True, parallel=True, error_model="numpy")
def lrn_within_backward_data(x, top_diff, power, bottom_diff):
    """bottom_diff = power·dy + bottom_diff·2x, all (n, c, h, w).

    On entry ``bottom_diff`` holds the gradient reaching the squares (the AVE pooling
    backward of ``lrn_within_backward_pooled``'s result); it is updated in place. This is
    Caffe's Power(2) backward followed by the Split that adds the direct path.
    """
    n, c, h, w = x.shape
    for nc in prange(n * c):
        i = nc // c
        j = nc % c
        for y in range(h):
            for xx in range(w):
                square_path = bottom_diff[i, j, y, xx] * (np.float32(2.0) * x[i, j, y, xx])
                bottom_diff[i, j, y, xx] = power[i, j, y, xx] * top_diff[i, j, y, xx] + square_path
