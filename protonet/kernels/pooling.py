"""Pooling kernels: MAX, AVE and STOCHASTIC over NCHW planes, as Caffe computes them.

Notation: ``n c h w`` bottom shape, ``oh ow`` pooled (top) height and width, ``kh kw`` kernel,
``sh sw`` stride, ``ph pw`` padding; ``oy ox`` index a pooled position, ``y x`` a bottom
position. Spatial parameters come as tuples: ``ksize=(kh, kw)``, ``stride=(sh, sw)``,
``pad=(ph, pw)``. The caller computes ``oh ow`` (Caffe's ceil-then-clip rule lives in the
Pooling layer) and validates everything; kernels check nothing.

Every kernel runs ``prange`` over the ``n·c`` planes; an iteration reads and writes only its own
plane, and within a plane the arithmetic follows Caffe's loop order, so results do not depend on
the thread count. Backward kernels *accumulate* into ``bottom_diff``: the caller zeroes it first
(Caffe's ``caffe_set(0)``), and SPP uses the accumulation to sum its pyramid levels. Argmax and
sampled positions are int32 indices within a plane (``y·w + x``); -1 marks "no position".

``error_model="numpy"`` everywhere: a float division by zero gives inf/NaN as in C++, never a
Python exception.

NOTE: the MAX and AVE kernels index flat views through ``_u`` (uint64). With signed indices
Numba tests every access for a negative (wrap-around) index, which costs more than the pooling
arithmetic on small windows (3-5x slower). Every index is non-negative.
"""

import numpy as np
from numba import njit, prange
from numba import uint64 as _u

# Caffe quirk: max pooling starts every output at -FLT_MAX, not -inf (pooling_layer.cpp).
_NEG_FLT_MAX = np.float32(-3.4028234663852886e38)


@njit(cache=True, inline="always")
def _window(o, stride, pad, kernel, size):
    """Window [start, end) of pooled index ``o`` along one axis, clipped to the bottom."""
    start = o * stride - pad
    end = min(start + kernel, size)
    return max(start, 0), end


# ---- MAX ----------------------------------------------------------------------------------

@njit(cache=True, parallel=True, error_model="numpy")
def max_pool_forward(x, ksize, stride, pad, out, mask):
    """Max over each window: x (n, c, h, w) → out (n, c, oh, ow), mask (n, c, oh, ow) int32.

    ``mask`` gets the in-plane index of the first maximum (strict ``>``, scanning rows then
    columns). A window with no element above -FLT_MAX (empty, all -inf or NaN) gives -FLT_MAX
    and mask -1, as Caffe's loop does. ``out`` and ``mask`` must not alias ``x``.
    """
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    kh, kw = ksize
    sh, sw = stride
    ph, pw = pad
    src = x.reshape(x.size)
    dst = out.reshape(out.size)
    arg = mask.reshape(mask.size)
    for nc in prange(n * c):
        in_base = nc * h * w
        out_base = nc * oh * ow
        for oy in range(oh):
            y0, y1 = _window(oy, sh, ph, kh, h)
            for ox in range(ow):
                x0, x1 = _window(ox, sw, pw, kw, w)
                best = _NEG_FLT_MAX
                best_index = -1
                for y in range(y0, y1):
                    for xx in range(x0, x1):
                        v = src[_u(in_base + y * w + xx)]
                        if v > best:
                            best = v
                            best_index = y * w + xx
                dst[_u(out_base + oy * ow + ox)] = best
                arg[_u(out_base + oy * ow + ox)] = best_index


@njit(cache=True, parallel=True, error_model="numpy")
def max_pool_backward(top_diff, mask, bottom_diff):
    """Route each top diff to its mask position: bottom_diff[mask] += top_diff.

    top_diff (n, c, oh, ow), mask (n, c, oh, ow) int32 in-plane indices, bottom_diff
    (n, c, h, w), accumulated in (oy, ox) order. Also serves STOCHASTIC pooling, whose sampled
    positions are its mask. Mask entries < 0 receive nothing.
    """
    n, c, h, w = bottom_diff.shape
    oh, ow = top_diff.shape[2], top_diff.shape[3]
    src = top_diff.reshape(top_diff.size)
    arg = mask.reshape(mask.size)
    dst = bottom_diff.reshape(bottom_diff.size)
    for nc in prange(n * c):
        in_base = nc * h * w
        out_base = nc * oh * ow
        for o in range(oh * ow):
            index = arg[_u(out_base + o)]
            if index >= 0:
                dst[_u(in_base + index)] += src[_u(out_base + o)]


# ---- AVE ----------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _ave_window(o, stride, pad, kernel, size):
    """Clipped window [start, end) and Caffe's divisor extent along one axis.

    Caffe quirk: the divisor counts padding: the window is first clipped to size + pad, its
    extent taken, and only then clipped to the bottom (pooling_layer.cpp).
    """
    start = o * stride - pad
    end = min(start + kernel, size + pad)
    extent = end - start
    return max(start, 0), min(end, size), extent


@njit(cache=True, parallel=True, error_model="numpy")
def ave_pool_forward(x, ksize, stride, pad, out):
    """Window mean, padding counted: x (n, c, h, w) → out (n, c, oh, ow).

    Sums each window in row-major order from 0, then divides by the integer pool size, as
    Caffe does. ``out`` must not alias ``x``.
    """
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    kh, kw = ksize
    sh, sw = stride
    ph, pw = pad
    src = x.reshape(x.size)
    dst = out.reshape(out.size)
    for nc in prange(n * c):
        in_base = nc * h * w
        out_base = nc * oh * ow
        for oy in range(oh):
            y0, y1, ey = _ave_window(oy, sh, ph, kh, h)
            for ox in range(ow):
                x0, x1, ex = _ave_window(ox, sw, pw, kw, w)
                total = np.float32(0.0)
                for y in range(y0, y1):
                    for xx in range(x0, x1):
                        total += src[_u(in_base + y * w + xx)]
                dst[_u(out_base + oy * ow + ox)] = total / np.float32(ey * ex)


@njit(cache=True, parallel=True, error_model="numpy")
def ave_pool_backward(top_diff, ksize, stride, pad, bottom_diff):
    """Spread each top diff over its window: bottom_diff[window] += top_diff / pool_size.

    top_diff (n, c, oh, ow), bottom_diff (n, c, h, w), accumulated in (oy, ox, y, x) order.
    """
    n, c, h, w = bottom_diff.shape
    oh, ow = top_diff.shape[2], top_diff.shape[3]
    kh, kw = ksize
    sh, sw = stride
    ph, pw = pad
    src = top_diff.reshape(top_diff.size)
    dst = bottom_diff.reshape(bottom_diff.size)
    for nc in prange(n * c):
        in_base = nc * h * w
        out_base = nc * oh * ow
        for oy in range(oh):
            y0, y1, ey = _ave_window(oy, sh, ph, kh, h)
            for ox in range(ow):
                x0, x1, ex = _ave_window(ox, sw, pw, kw, w)
                share = src[_u(out_base + oy * ow + ox)] / np.float32(ey * ex)
                for y in range(y0, y1):
                    for xx in range(x0, x1):
                        dst[_u(in_base + y * w + xx)] += share


# ---- STOCHASTIC ---------------------------------------------------------------------------
# Caffe implements these only as CUDA kernels (pooling_layer.cu, StoPoolForwardTrain/Test);
# no padding: the layer rejects pad > 0 for STOCHASTIC, as Caffe does.

@njit(cache=True, parallel=True, error_model="numpy")
def stochastic_pool_forward_train(x, ksize, stride, u, out, index):
    """Sample one position per window with probability x / Σx.

    x (n, c, h, w), u (n, c, oh, ow) uniform draws in (0, 1] → out (n, c, oh, ow) the sampled
    value, index (n, c, oh, ow) int32 its in-plane position. The first position whose running
    sum reaches u·Σx is taken (both sums in row-major order, float32). If none does (only
    possible with negative inputs), out is 0 and index -1.
    """
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    kh, kw = ksize
    sh, sw = stride
    for nc in prange(n * c):
        i = nc // c
        j = nc % c
        for oy in range(oh):
            y0, y1 = _window(oy, sh, 0, kh, h)
            for ox in range(ow):
                x0, x1 = _window(ox, sw, 0, kw, w)
                total = np.float32(0.0)
                for y in range(y0, y1):
                    for xx in range(x0, x1):
                        total += x[i, j, y, xx]
                threshold = u[i, j, oy, ox] * total
                running = np.float32(0.0)
                chosen = -1
                value = np.float32(0.0)
                for y in range(y0, y1):
                    for xx in range(x0, x1):
                        if chosen < 0:
                            running += x[i, j, y, xx]
                            if running >= threshold:
                                chosen = y * w + xx
                                value = x[i, j, y, xx]
                out[i, j, oy, ox] = value
                index[i, j, oy, ox] = chosen


@njit(cache=True, parallel=True, error_model="numpy")
def stochastic_pool_forward_test(x, ksize, stride, out):
    """Probability-weighted average Σx² / Σx per window (0 where Σx ≤ 0).

    x (n, c, h, w) → out (n, c, oh, ow); both sums in row-major order, float32.
    """
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    kh, kw = ksize
    sh, sw = stride
    for nc in prange(n * c):
        i = nc // c
        j = nc % c
        for oy in range(oh):
            y0, y1 = _window(oy, sh, 0, kh, h)
            for ox in range(ow):
                x0, x1 = _window(ox, sw, 0, kw, w)
                total = np.float32(0.0)
                squares = np.float32(0.0)
                for y in range(y0, y1):
                    for xx in range(x0, x1):
                        v = x[i, j, y, xx]
                        total += v
                        squares += v * v
                out[i, j, oy, ox] = squares / total if total > 0 else np.float32(0.0)
