"""Local response normalization kernels, in Caffe's arithmetic order (lrn_layer.cpp).

Notation: ``n c h w`` bottom (= top) shape; ``size`` the local size (odd), ``pre_pad`` =
(size − 1) / 2. Scalars arrive as float32 (``np.float32``) so that every product is a float32
product, as in Caffe.

ACROSS_CHANNELS: scale = k + α/size · Σ_{|c'−c| ≤ pre_pad} x_{c'}², y = x · scale^−β. Caffe
builds the channel sums with a running window (copy the previous channel's sum, add the head,
subtract the tail) and we do the same, so the rounding matches. The kernels walk the channels
with a chunk of ``CHUNK`` pixels of the h·w plane as the contiguous (vectorized) inner loop; the
tasks are the (image, chunk) pairs, run with ``prange`` from ``PARALLEL_MIN`` elements on and
serially below. A task owns its pixels in every channel, and the order of arithmetic per element
is fixed, so results do not depend on the thread count. Forward also keeps scale^−β (a powf per
element, the most expensive step) for backward, which then reuses it instead of recomputing it.

WITHIN_CHANNEL is composed by the LRN layer from the AVE pooling kernels and the two
element-wise kernels here (Caffe's internal Power → Pooling → Power → Eltwise chain).

``error_model="numpy"``: a division by zero gives inf/NaN as in C++, never an exception.
"""

import numpy as np
from numba import njit, prange
from numba import uint64 as _u

from .elementwise import PARALLEL_MIN

# Pixels per task: the running sums of one chunk stay in L1/L2 while the channels go by.
CHUNK = 1024


# ---- ACROSS_CHANNELS ----------------------------------------------------------------------

@njit(inline="always")
def _task_span(task, plane):
    """(image, first pixel, pixel count) of one (image, chunk) task."""
    chunks = (plane + CHUNK - 1) // CHUNK
    p0 = (task % chunks) * CHUNK
    return task // chunks, p0, min(CHUNK, plane - p0)


@njit(inline="always", error_model="numpy")
def _add_squares(dst, src, coef, dst_base, src_base, count):
    """dst[i] += coef · src[i]², i over one chunk: Caffe's caffe_axpy of a padded square."""
    for p in range(count):
        v = src[_u(src_base + p)]
        dst[_u(dst_base + p)] += coef * (v * v)


@njit(inline="always", error_model="numpy")
def _across_forward_task(x, size, alpha_over_size, k, beta, scale, power, out, task):
    """Forward of one (image, chunk) task over flat views; see lrn_across_forward."""
    n, c, h, w = x.shape
    src = x.reshape(x.size)
    sc = scale.reshape(scale.size)
    pw = power.reshape(power.size)
    dst = out.reshape(out.size)
    plane = h * w
    i, p0, count = _task_span(task, plane)
    pre_pad = (size - 1) // 2
    neg_beta = -beta
    first = i * c * plane + p0                # flat index of (i, 0, p0)
    for p in range(count):
        sc[_u(first + p)] = k
    for j in range(min(pre_pad + 1, c)):
        _add_squares(sc, src, alpha_over_size, first, first + j * plane, count)
    for j in range(1, c):
        at = first + j * plane
        for p in range(count):
            sc[_u(at + p)] = sc[_u(at - plane + p)]
        if j + pre_pad < c:
            _add_squares(sc, src, alpha_over_size, at, at + pre_pad * plane, count)
        if j - 1 - pre_pad >= 0:
            _add_squares(sc, src, -alpha_over_size, at, at - (pre_pad + 1) * plane, count)
    for j in range(c):
        at = first + j * plane
        for p in range(count):
            q = sc[_u(at + p)] ** neg_beta
            pw[_u(at + p)] = q
            dst[_u(at + p)] = src[_u(at + p)] * q


@njit(cache=True, parallel=True, error_model="numpy")
def lrn_across_forward(x, size, alpha_over_size, k, beta, scale, power, out):
    """x (n, c, h, w) → scale = k + α/size·Σx², power = scale^−β, out = x·power.

    ``alpha_over_size``, ``k``, ``beta``: float32 scalars. ``scale`` and ``power`` (n, c, h, w)
    are kept for backward. No output may alias ``x``.
    """
    n, c, h, w = x.shape
    tasks = n * ((h * w + CHUNK - 1) // CHUNK)
    if x.size < PARALLEL_MIN:
        for task in range(tasks):
            _across_forward_task(x, size, alpha_over_size, k, beta, scale, power, out, task)
    else:
        for task in prange(tasks):
            _across_forward_task(x, size, alpha_over_size, k, beta, scale, power, out, task)


@njit(inline="always", error_model="numpy")
def _add_ratio(acc, dy, y, sc, coef, acc_base, base, count):
    """acc[i] += coef · (dy[i]·y[i] / scale[i]) over one chunk (coef ±1 exactly)."""
    for p in range(count):
        at = _u(base + p)
        acc[_u(acc_base + p)] += coef * (dy[at] * y[at] / sc[at])


@njit(inline="always", error_model="numpy")
def _across_backward_task(arrays, size, cache_ratio, accum, bottom_diff, task):
    """Backward of one (image, chunk) task; see lrn_across_backward."""
    x, top_data, top_diff, scale, power = arrays
    n, c, h, w = x.shape
    src = x.reshape(x.size)
    y = top_data.reshape(top_data.size)
    dy = top_diff.reshape(top_diff.size)
    sc = scale.reshape(scale.size)
    pw = power.reshape(power.size)
    acc = accum.reshape(accum.size)
    dx = bottom_diff.reshape(bottom_diff.size)
    plane = h * w
    i, p0, count = _task_span(task, plane)
    pre_pad = (size - 1) // 2
    neg_cache_ratio = -cache_ratio
    one = np.float32(1.0)
    first = i * c * plane + p0
    acc_base = i * plane + p0
    for p in range(count):
        acc[_u(acc_base + p)] = np.float32(0.0)
    for j in range(min(pre_pad, c)):
        _add_ratio(acc, dy, y, sc, one, acc_base, first + j * plane, count)
    for j in range(c):
        at = first + j * plane
        if j + pre_pad < c:
            _add_ratio(acc, dy, y, sc, one, acc_base, at + pre_pad * plane, count)
        for p in range(count):
            e = _u(at + p)
            direct = dy[e] * pw[e]
            dx[e] = direct + neg_cache_ratio * (src[e] * acc[_u(acc_base + p)])
        if j - pre_pad >= 0:
            _add_ratio(acc, dy, y, sc, -one, acc_base, at - pre_pad * plane, count)


@njit(cache=True, parallel=True, error_model="numpy")
def lrn_across_backward(x, top_data, top_diff, scale, power, size, cache_ratio, accum,
                        bottom_diff):
    """dx = dy·scale^−β − cache_ratio · x · Σ_{|c'−c| ≤ pre_pad} dy_{c'}·y_{c'}/scale_{c'}.

    x, top_data, top_diff, scale, power (= scale^−β): (n, c, h, w), scale and power as forward
    left them; ``cache_ratio`` = float32(2αβ/size). ``accum`` (n, h, w) is scratch for the
    running window sum. Overwrites bottom_diff (n, c, h, w), which must not alias the inputs.
    """
    n, c, h, w = x.shape
    tasks = n * ((h * w + CHUNK - 1) // CHUNK)
    arrays = (x, top_data, top_diff, scale, power)
    if x.size < PARALLEL_MIN:
        for task in range(tasks):
            _across_backward_task(arrays, size, cache_ratio, accum, bottom_diff, task)
    else:
        for task in prange(tasks):
            _across_backward_task(arrays, size, cache_ratio, accum, bottom_diff, task)


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
