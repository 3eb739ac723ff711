"""Local response normalization kernels, in Caffe's arithmetic order (lrn_layer.cpp).

Notation: ``n c h w`` bottom (= top) shape; ``size`` the local size (odd), ``pre_pad`` =
(size − 1) / 2. Scalars arrive as float32 (``np.float32``) so that every product is a float32
product, as in Caffe.

ACROSS_CHANNELS: scale = k + α/size · Σ_{|c'−c| ≤ pre_pad} x_{c'}², y = x · scale^−β. Caffe
builds the channel sums with a running window over zero-padded squares (copy the previous
channel's sum, add the head, subtract the tail) and we do the same operations, zero rows
included, so the rounding matches. The kernels walk the channels with a chunk of ``CHUNK``
pixels of the h·w plane as the contiguous (vectorised) inner loop; the tasks are the (image,
chunk) pairs, run with ``prange`` from ``PARALLEL_MIN`` elements on and serially below. A task
owns its pixels in every channel, and the order of arithmetic per element is fixed, so results
do not depend on the thread count.

NOTE: unlike Caffe, forward keeps no scale (nor scale^−β) for backward: backward rebuilds the
scale from x with the same code, bit for bit, in its own channel walk. The running sum is a few
adds per element, while writing two blobs in forward and reading them back in backward was
most of the memory traffic of the pair. scale^−β is built from 1/s and sqrt for β = 0.75, 0.5
and 1 (``_neg_power``), so no pass calls powf for the usual betas, and the running-sum step,
the power and the product with x (forward) or dy (backward) are one loop per channel. The
per-task functions are plain (not inlined) ``njit`` functions: the serial and the ``prange``
loop share one compiled copy, which halves the cold compile time of these kernels.

WITHIN_CHANNEL is composed by the LRN layer from the AVE pooling kernels and the
element-wise kernels here (Caffe's internal Power → Pooling → Power → Eltwise chain).

``error_model="numpy"``: a division by zero gives inf/NaN as in C++, never an exception.
"""

import numpy as np
from numba import njit, prange
from numba import uint64 as _u

from .elementwise import PARALLEL_MIN

# Pixels per task: the running sums of one chunk (and backward's ratio ring) stay in L2 while
# the channels go by; whole planes up to 64×64, whose rows then stream from memory back to back
# (4096 ran 10-20 % faster than 1024 on GoogLeNet's 56×56 planes).
CHUNK = 4096


# ---- scale^−β ---------------------------------------------------------------------------------

# How s^−β is computed (``_neg_power``): the betas real models use, and powf for the rest.
_BETA_3_4, _BETA_1_2, _BETA_1, _BETA_ANY = 0, 1, 2, 3


@njit(inline="always", error_model="numpy")
def _beta_kind(beta):
    """Which form of s^−β ``_neg_power`` uses for a float32 β."""
    if beta == np.float32(0.75):
        return _BETA_3_4
    if beta == np.float32(0.5):
        return _BETA_1_2
    if beta == np.float32(1.0):
        return _BETA_1
    return _BETA_ANY


@njit(inline="always", error_model="numpy")
def _neg_power(s, beta, kind):
    """s^−β, ``kind`` = _beta_kind(β), a constant where this is inlined (the callers branch
    on it outside their loops and pass each branch its literal kind), so the test folds away.

    NOTE: powf is a scalar libm call that stops vectorisation, so the betas real models use
    are built from 1/s and sqrt (both vectorise): 0.75 → √√s · (1/s), 0.5 → √(1/s), 1 → 1/s.
    Measured against the exact s^−β over s in [1, 2], [1, 100], [1e-38, 1e-3] and
    [1e3, 1e30]: relative error ≤ 1.8e-7 (≤ 2.4 ulp) for 0.75, ≤ 9e-8 (0.85 ulp) for 0.5,
    correctly rounded for 1; powf is within 1 ulp, the conformance tolerance is 1e-4. Any
    other β keeps powf. s = 0 gives inf and s < 0 NaN, as powf does.
    """
    one = np.float32(1.0)
    if kind == _BETA_3_4:
        return np.sqrt(np.sqrt(s)) * (one / s)
    if kind == _BETA_1_2:
        return np.sqrt(one / s)
    if kind == _BETA_1:
        return one / s
    return s ** -beta


# ---- ACROSS_CHANNELS ----------------------------------------------------------------------

@njit(inline="always")
def _task_span(task, plane):
    """(image, first pixel, pixel count) of one (image, chunk) task."""
    chunks = (plane + CHUNK - 1) // CHUNK
    p0 = (task % chunks) * CHUNK
    return task // chunks, p0, min(CHUNK, plane - p0)


@njit(inline="always", error_model="numpy")
def _zero_row(count):
    """A row of zeros (np.zeros inside a parallel kernel would become a parfor of its own)."""
    zeros = np.empty(count, np.float32)
    for p in range(count):
        zeros[p] = np.float32(0.0)
    return zeros


@njit(inline="always", error_model="numpy")
def _channel_row(src, zeros, first, plane, c, j):
    """(array, flat base) of channel j of a chunk: src, or the zero row outside 0..c−1, which
    stands for Caffe's zero-padded squares (adding ±0 leaves a sum unchanged)."""
    if 0 <= j < c:
        return src, first + j * plane
    return zeros, 0


@njit(inline="always", error_model="numpy")
def _start_scale(run, src, zeros, first, plane, c, size, alpha_over_size, k, count):
    """run = k + the squares of channels −pre_pad..pre_pad − 1, one caffe_axpy after the
    other: Caffe's first-channel sum but its last term, which ``_next_scale`` adds for channel
    0 (its tail term, a zero row, adds −0 and changes nothing), so every channel takes the
    same step."""
    pre_pad = (size - 1) // 2
    for p in range(count):
        run[p] = k
    for j in range(-pre_pad, pre_pad):
        row, base = _channel_row(src, zeros, first, plane, c, j)
        for p in range(count):
            v = row[_u(base + p)]
            run[p] += alpha_over_size * (v * v)


@njit(inline="always", error_model="numpy")
def _step(src, zeros, first, plane, c, size, alpha_over_size, j):
    """(head row, head base, tail row, tail base, α/n) of the running-sum step to channel j."""
    pre_pad = (size - 1) // 2
    head, head_base = _channel_row(src, zeros, first, plane, c, j + pre_pad)
    tail, tail_base = _channel_row(src, zeros, first, plane, c, j - 1 - pre_pad)
    return head, head_base, tail, tail_base, alpha_over_size


@njit(inline="always", error_model="numpy")
def _next_scale(run, p, step):
    """run[p]: channel j − 1's scale → channel j's, returned: add the head channel's square,
    then subtract the tail's, as Caffe's running sum does (same operations, same rounding)."""
    head, head_base, tail, tail_base, alpha_over_size = step
    v = head[_u(head_base + p)]
    t = tail[_u(tail_base + p)]
    s = (run[p] + alpha_over_size * (v * v)) + -alpha_over_size * (t * t)
    run[p] = s
    return s


@njit(inline="always", error_model="numpy")
def _forward_row(src, dst, at, run, step, count, beta, kind):
    """One channel of a chunk: running-sum step, power and product in one vectorised loop."""
    for p in range(count):
        s = _next_scale(run, p, step)
        dst[_u(at + p)] = src[_u(at + p)] * _neg_power(s, beta, kind)


@njit(error_model="numpy")
def _across_forward_task(x, scalars, out, task):
    """Forward of one (image, chunk) task over flat views; see lrn_across_forward."""
    size, alpha_over_size, k, beta = scalars
    _, c, h, w = x.shape
    src = x.reshape(x.size)
    dst = out.reshape(out.size)
    plane = h * w
    i, p0, count = _task_span(task, plane)
    first = i * c * plane + p0                # flat index of (i, 0, p0)
    kind = _beta_kind(beta)
    run = np.empty(count, np.float32)
    zeros = _zero_row(count)
    _start_scale(run, src, zeros, first, plane, c, size, alpha_over_size, k, count)
    for j in range(c):
        step = _step(src, zeros, first, plane, c, size, alpha_over_size, j)
        at = first + j * plane
        # One loop per kind, each with its literal kind, so each vectorises.
        if kind == _BETA_3_4:
            _forward_row(src, dst, at, run, step, count, beta, _BETA_3_4)
        elif kind == _BETA_1_2:
            _forward_row(src, dst, at, run, step, count, beta, _BETA_1_2)
        elif kind == _BETA_1:
            _forward_row(src, dst, at, run, step, count, beta, _BETA_1)
        else:
            _forward_row(src, dst, at, run, step, count, beta, _BETA_ANY)


@njit(cache=True, parallel=True, error_model="numpy")
def lrn_across_forward(x, size, alpha_over_size, k, beta, out):
    """x (n, c, h, w) → out = x · scale^−β, scale = k + α/size · Σ_{|c'−c| ≤ pre_pad} x_{c'}².

    ``alpha_over_size``, ``k``, ``beta``: float32 scalars. ``out`` must not alias ``x``.
    Nothing is kept for backward: it rebuilds the same scale from x.
    """
    n, _, h, w = x.shape
    tasks = n * ((h * w + CHUNK - 1) // CHUNK)
    scalars = (size, alpha_over_size, k, beta)
    if x.size < PARALLEL_MIN:
        for task in range(tasks):
            _across_forward_task(x, scalars, out, task)
    else:
        for task in prange(tasks):
            _across_forward_task(x, scalars, out, task)


@njit(inline="always", error_model="numpy")
def _backward_row(arrays, at, run, step, ring, slot, acc, count, beta, kind):
    """Channel hd of a chunk, one vectorised loop: running-sum step; dx = dy·scale^−β (the
    direct term); ratio dy·y/scale into the ring and added to the window sum."""
    _, y, dy, dx = arrays
    for p in range(count):
        s = _next_scale(run, p, step)
        e = _u(at + p)
        dx[e] = dy[e] * _neg_power(s, beta, kind)
        r = (dy[e] * y[e]) / s
        ring[_u(slot + p)] = r
        acc[p] += r


@njit(error_model="numpy")
def _across_backward_task(inputs, scalars, bottom_diff, task):
    """Backward of one (image, chunk) task; see lrn_across_backward.

    The running scale leads by pre_pad channels: at step hd it is channel hd's scale, which
    gives dx[hd]'s direct term and the ratio of channel hd, kept in a ring of ``size`` rows
    until it leaves the window. Channel j = hd − pre_pad is finished at the same step, in
    Caffe's order: accum += ratio(j + pre_pad); dx[j] += −cache_ratio · (x[j] · accum);
    accum −= ratio(j − pre_pad).
    """
    x, top_data, top_diff = inputs
    size, alpha_over_size, k, beta, cache_ratio = scalars
    _, c, h, w = x.shape
    src = x.reshape(x.size)
    dx = bottom_diff.reshape(bottom_diff.size)
    arrays = (src, top_data.reshape(top_data.size), top_diff.reshape(top_diff.size), dx)
    plane = h * w
    i, p0, count = _task_span(task, plane)
    first = i * c * plane + p0
    kind = _beta_kind(beta)
    pre_pad = (size - 1) // 2
    neg_cache_ratio = -cache_ratio
    run = np.empty(count, np.float32)
    acc = _zero_row(count)
    ring = np.empty(size * count, np.float32)
    zeros = _zero_row(count)
    _start_scale(run, src, zeros, first, plane, c, size, alpha_over_size, k, count)
    for hd in range(c + pre_pad):
        if hd < c:
            step = _step(src, zeros, first, plane, c, size, alpha_over_size, hd)
            at = first + hd * plane
            slot = (hd % size) * count
            if kind == _BETA_3_4:
                _backward_row(arrays, at, run, step, ring, slot, acc, count, beta, _BETA_3_4)
            elif kind == _BETA_1_2:
                _backward_row(arrays, at, run, step, ring, slot, acc, count, beta, _BETA_1_2)
            elif kind == _BETA_1:
                _backward_row(arrays, at, run, step, ring, slot, acc, count, beta, _BETA_1)
            else:
                _backward_row(arrays, at, run, step, ring, slot, acc, count, beta, _BETA_ANY)
        j = hd - pre_pad
        if j >= 0:
            # Caffe subtracts a zero-padded ratio for j − pre_pad < 0: adding −0 is a no-op.
            leaving, base = zeros, 0
            if j - pre_pad >= 0:
                leaving, base = ring, ((j - pre_pad) % size) * count
            at = first + j * plane
            for p in range(count):
                e = _u(at + p)
                dx[e] = dx[e] + neg_cache_ratio * (src[e] * acc[p])
                acc[p] -= leaving[_u(base + p)]


@njit(cache=True, parallel=True, error_model="numpy")
def lrn_across_backward(x, top_data, top_diff, size, alpha_over_size, k, beta, cache_ratio,
                        bottom_diff):
    """dx = dy·scale^−β − cache_ratio · x · Σ_{|c'−c| ≤ pre_pad} dy_{c'}·y_{c'}/scale_{c'}.

    x, top_data, top_diff (n, c, h, w) as forward left them; the scalars as lrn_across_forward
    takes them, and ``cache_ratio`` = float32(2αβ/size). The scale is rebuilt from x with
    forward's arithmetic, so it is bit-identical to forward's (Caffe stores it instead; see the
    module docstring). Overwrites bottom_diff (n, c, h, w), which must not alias the inputs.
    """
    n, _, h, w = x.shape
    tasks = n * ((h * w + CHUNK - 1) // CHUNK)
    inputs = (x, top_data, top_diff)
    scalars = (size, alpha_over_size, k, beta, cache_ratio)
    if x.size < PARALLEL_MIN:
        for task in range(tasks):
            _across_backward_task(inputs, scalars, bottom_diff, task)
    else:
        for task in prange(tasks):
            _across_backward_task(inputs, scalars, bottom_diff, task)


# ---- WITHIN_CHANNEL -----------------------------------------------------------------------

@njit(inline="always", error_model="numpy")
def _within_plane(src, pool, alpha, beta, pw, dst, base, plane, kind):
    """lrn_within_forward over one plane (flat views); kind −1: the constant power 1."""
    for p in range(plane):
        e = _u(base + p)
        q = np.float32(1.0)
        if kind >= 0:
            q = _neg_power(pool[e] * alpha + np.float32(1.0), beta, kind)
        pw[e] = q
        dst[e] = src[e] * q


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
    plane = h * w
    src = x.reshape(x.size)
    pool = pooled.reshape(pooled.size)
    pw = power.reshape(power.size)
    dst = out.reshape(out.size)
    kind = _beta_kind(beta)
    constant = alpha * -beta == 0
    for nc in prange(n * c):
        base = nc * plane
        if constant:
            _within_plane(src, pool, alpha, beta, pw, dst, base, plane, -1)
        elif kind == _BETA_3_4:
            _within_plane(src, pool, alpha, beta, pw, dst, base, plane, _BETA_3_4)
        elif kind == _BETA_1_2:
            _within_plane(src, pool, alpha, beta, pw, dst, base, plane, _BETA_1_2)
        elif kind == _BETA_1:
            _within_plane(src, pool, alpha, beta, pw, dst, base, plane, _BETA_1)
        else:
            _within_plane(src, pool, alpha, beta, pw, dst, base, plane, _BETA_ANY)


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
