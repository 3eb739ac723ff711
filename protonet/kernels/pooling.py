"""Pooling kernels: MAX, AVE and STOCHASTIC over NCHW planes, as Caffe computes them.

Notation: ``n c h w`` bottom shape, ``oh ow`` pooled (top) height and width, ``kh kw`` kernel,
``sh sw`` stride, ``ph pw`` padding; ``oy ox`` index a pooled position, ``y x`` a bottom
position. Spatial parameters come as tuples: ``ksize=(kh, kw)``, ``stride=(sh, sw)``,
``pad=(ph, pw)``. The caller computes ``oh ow`` (Caffe's ceil-then-clip rule lives in the
Pooling layer) and validates everything; kernels check nothing.

Every kernel runs over the ``n·c`` planes (``prange`` from ``PARALLEL_MIN`` bottom elements on,
serially below: waking the thread pool costs more than pooling a small blob); an iteration
reads and writes only its own plane, and within a plane every output element is computed in
Caffe's order, so results do not depend on the thread count. Sampled and argmax positions are
int32 indices within a plane (``y·w + x``); -1 marks "no position". Backward kernels either
overwrite ``bottom_diff`` (``accumulate=False``: each plane is zeroed and then receives its
gradient, so the memory is touched once) or add into it (``accumulate=True``: SPP sums its
pyramid levels this way).

MAX and AVE split each output row into border windows, which are clipped one by one, and the
interior windows (wholly inside the bottom along x), which are computed for the whole row at a
time: the loop over the window's (y, x) positions is outside the loop over ``ox``, which then
vectorizes. Each output element still sees its window in Caffe's row-major order; the backward
pass visits ``kx`` in descending order so that every bottom element receives its shares in
increasing ``ox``, Caffe's order.

``error_model="numpy"`` everywhere: a float division by zero gives inf/NaN as in C++, never a
Python exception.

NOTE: the MAX and AVE kernels index flat views through ``_u`` (uint64). With signed indices
Numba tests every access for a negative (wrap-around) index, which costs more than the pooling
arithmetic on small windows (3-5x slower) and stops vectorization. Every index is non-negative.
"""

import numpy as np
from numba import njit, prange
from numba import uint64 as _u

from .elementwise import PARALLEL_MIN

# Caffe quirk: max pooling starts every output at -FLT_MAX, not -inf (pooling_layer.cpp).
_NEG_FLT_MAX = np.float32(-3.4028234663852886e38)


@njit(cache=True, inline="always")
def _window(o, stride, pad, kernel, size):
    """Window [start, end) of pooled index ``o`` along one axis, clipped to the bottom."""
    start = o * stride - pad
    end = min(start + kernel, size)
    return max(start, 0), end


@njit(cache=True, inline="always")
def _interior(stride, pad, kernel, size, count):
    """Pooled indices [lo, hi) along one axis whose windows lie wholly inside [0, size)."""
    lo = min((pad + stride - 1) // stride, count)
    hi = max(min((size + pad - kernel) // stride + 1, count), lo)
    return lo, hi


# ---- MAX ----------------------------------------------------------------------------------

@njit(inline="always", error_model="numpy")
def _max_window(src, base, w, y0, y1, x0, x1):
    """(max, in-plane index) of one clipped window by Caffe's scan; (-FLT_MAX, -1) if none."""
    best = _NEG_FLT_MAX
    best_index = -1
    for y in range(y0, y1):
        for xx in range(x0, x1):
            v = src[_u(base + y * w + xx)]
            if v > best:
                best = v
                best_index = y * w + xx
    return best, best_index


@njit(inline="always", error_model="numpy")
def _max_plane(src, dst, arg, dims, ksize, stride, pad, nc):
    """MAX forward of plane ``nc`` over flat views; ``dims`` = (h, w, oh, ow, lo, hi).

    The common kernels (2×2 stride 2, 3×3 stride 1 or 2) are passed on as constants: the
    compiler then unrolls the window and vectorizes the loop over a row's interior windows.
    """
    sh, sw = stride
    if ksize == (3, 3) and sw == 2:
        _max_plane_fixed(src, dst, arg, dims, (3, 3), (sh, 2), pad, nc, True)
    elif ksize == (3, 3) and sw == 1:
        _max_plane_fixed(src, dst, arg, dims, (3, 3), (sh, 1), pad, nc, True)
    elif ksize == (2, 2) and sw == 2:
        _max_plane_fixed(src, dst, arg, dims, (2, 2), (sh, 2), pad, nc, True)
    else:
        _max_plane_fixed(src, dst, arg, dims, ksize, stride, pad, nc, False)


@njit(inline="always", error_model="numpy")
def _max_plane_fixed(src, dst, arg, dims, ksize, stride, pad, nc, unrolled):
    """MAX forward of plane ``nc``; with ``unrolled`` (a constant kernel), interior windows
    are computed branch-free, and clipped windows one by one by Caffe's branching scan.

    NOTE: without a constant kernel the branching scan is faster: a new maximum is rare in a
    large window, so the branch predicts well, while a select chain waits on every element.
    """
    h, w, oh, ow, lo, hi = dims
    kh, kw = ksize
    sh, sw = stride
    ph, pw = pad
    base = nc * h * w
    for oy in range(oh):
        y0, y1 = _window(oy, sh, ph, kh, h)
        row = (nc * oh + oy) * ow
        full = unrolled and y1 - y0 == kh
        for ox in range(ow):
            if not full or ox < lo or ox >= hi:
                x0, x1 = _window(ox, sw, pw, kw, w)
                best, best_index = _max_window(src, base, w, y0, y1, x0, x1)
                dst[_u(row + ox)] = best
                arg[_u(row + ox)] = best_index
        if full:
            for ox in range(lo, hi):
                first = y0 * w + ox * sw - pw     # in-plane index of the window's corner
                best = _NEG_FLT_MAX
                best_index = -1
                for ky in range(kh):
                    for kx in range(kw):
                        index = first + ky * w + kx
                        v = src[_u(base + index)]
                        take = v > best
                        best = v if take else best
                        best_index = index if take else best_index
                dst[_u(row + ox)] = best
                arg[_u(row + ox)] = best_index


@njit(cache=True, parallel=True, error_model="numpy")
def max_pool_forward(x, ksize, stride, pad, out, mask):
    """Max over each window: x (n, c, h, w) → out (n, c, oh, ow), mask (n, c, oh, ow) int32.

    ``mask`` gets the in-plane index of the first maximum (strict ``>``, scanning rows then
    columns). A window with no element above -FLT_MAX (empty, all -inf or NaN) gives -FLT_MAX
    and mask -1, as Caffe's loop does. ``out`` and ``mask`` must not alias ``x``.
    """
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    dims = (h, w, oh, ow) + _interior(stride[1], pad[1], ksize[1], w, ow)
    src = x.reshape(x.size)
    dst = out.reshape(out.size)
    arg = mask.reshape(mask.size)
    if x.size < PARALLEL_MIN:
        for nc in range(n * c):
            _max_plane(src, dst, arg, dims, ksize, stride, pad, nc)
    else:
        for nc in prange(n * c):
            _max_plane(src, dst, arg, dims, ksize, stride, pad, nc)


@njit(inline="always", error_model="numpy")
def _max_backward_plane(src, arg, dst, plane, count, accumulate, nc):
    """MAX backward of plane ``nc`` over flat views: ``plane`` = h·w, ``count`` = oh·ow."""
    base = nc * plane
    if not accumulate:
        for i in range(plane):
            dst[_u(base + i)] = np.float32(0.0)
    for o in range(nc * count, (nc + 1) * count):
        index = arg[_u(o)]
        if index >= 0:
            dst[_u(base + index)] += src[_u(o)]


@njit(cache=True, parallel=True, error_model="numpy")
def max_pool_backward(top_diff, mask, bottom_diff, accumulate):
    """Route each top diff to its mask position: bottom_diff[mask] (+)= top_diff.

    top_diff (n, c, oh, ow), mask (n, c, oh, ow) int32 in-plane indices, bottom_diff
    (n, c, h, w): overwritten, or added into when ``accumulate``; the diffs reaching one bottom
    element are summed in (oy, ox) order. Also serves STOCHASTIC pooling, whose sampled
    positions are its mask. Mask entries < 0 route nothing.
    """
    n, c, h, w = bottom_diff.shape
    count = top_diff.shape[2] * top_diff.shape[3]
    src = top_diff.reshape(top_diff.size)
    arg = mask.reshape(mask.size)
    dst = bottom_diff.reshape(bottom_diff.size)
    if bottom_diff.size < PARALLEL_MIN:
        for nc in range(n * c):
            _max_backward_plane(src, arg, dst, h * w, count, accumulate, nc)
    else:
        for nc in prange(n * c):
            _max_backward_plane(src, arg, dst, h * w, count, accumulate, nc)


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


@njit(inline="always", error_model="numpy")
def _ave_plane(src, dst, dims, ksize, stride, pad, nc):
    """AVE forward of plane ``nc`` over flat views; ``dims`` = (h, w, oh, ow, lo, hi).

    As for MAX, the common kernels are passed on as constants so that the interior windows
    of a row are summed in vector registers.
    """
    sh, sw = stride
    if ksize == (3, 3) and sw == 2:
        _ave_plane_fixed(src, dst, dims, (3, 3), (sh, 2), pad, nc)
    elif ksize == (3, 3) and sw == 1:
        _ave_plane_fixed(src, dst, dims, (3, 3), (sh, 1), pad, nc)
    elif ksize == (2, 2) and sw == 2:
        _ave_plane_fixed(src, dst, dims, (2, 2), (sh, 2), pad, nc)
    else:
        _ave_plane_fixed(src, dst, dims, ksize, stride, pad, nc)


@njit(inline="always", error_model="numpy")
def _ave_plane_fixed(src, dst, dims, ksize, stride, pad, nc):
    """AVE forward of plane ``nc``: each window summed in row-major order from 0."""
    h, w, oh, ow, lo, hi = dims
    kh, kw = ksize
    sh, sw = stride
    ph, pw = pad
    base = nc * h * w
    for oy in range(oh):
        y0, y1, ey = _ave_window(oy, sh, ph, kh, h)
        row = (nc * oh + oy) * ow
        full = y1 - y0 == kh
        for ox in range(ow):
            if not full or ox < lo or ox >= hi:
                x0, x1, ex = _ave_window(ox, sw, pw, kw, w)
                total = np.float32(0.0)
                for y in range(y0, y1):
                    for xx in range(x0, x1):
                        total += src[_u(base + y * w + xx)]
                dst[_u(row + ox)] = total / np.float32(ey * ex)
        if full:
            size = np.float32(kh * kw)        # a full window: the divisor is the kernel
            for ox in range(lo, hi):
                first = y0 * w + ox * sw - pw
                total = np.float32(0.0)
                for ky in range(kh):
                    for kx in range(kw):
                        total += src[_u(base + first + ky * w + kx)]
                dst[_u(row + ox)] = total / size


@njit(cache=True, parallel=True, error_model="numpy")
def ave_pool_forward(x, ksize, stride, pad, out):
    """Window mean, padding counted: x (n, c, h, w) → out (n, c, oh, ow).

    Sums each window in row-major order from 0, then divides by the integer pool size, as
    Caffe does. ``out`` must not alias ``x``.
    """
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    dims = (h, w, oh, ow) + _interior(stride[1], pad[1], ksize[1], w, ow)
    src = x.reshape(x.size)
    dst = out.reshape(out.size)
    if x.size < PARALLEL_MIN:
        for nc in range(n * c):
            _ave_plane(src, dst, dims, ksize, stride, pad, nc)
    else:
        for nc in prange(n * c):
            _ave_plane(src, dst, dims, ksize, stride, pad, nc)


@njit(inline="always", error_model="numpy")
def _ave_spread(src, dst, base, w, o, y0, y1, ey, x_window):
    """Add top diff ``src[o]`` / pool size over one clipped border window."""
    x0, x1, ex = x_window
    share = src[_u(o)] / np.float32(ey * ex)
    for y in range(y0, y1):
        for xx in range(x0, x1):
            dst[_u(base + y * w + xx)] += share


@njit(inline="always", error_model="numpy")
def _ave_backward_plane(src, dst, dims, ksize, stride, pad, accumulate, nc):
    """AVE backward of plane ``nc`` over flat views; ``dims`` = (h, w, oh, ow, lo, hi).

    The common kernels are passed on as constants; the loop over a row's interior windows
    then vectorizes. Other kernels spread one window at a time.
    """
    sh, sw = stride
    if ksize == (3, 3) and sw == 2:
        _ave_backward_fixed(src, dst, dims, (3, 3), (sh, 2), pad, accumulate, nc, True)
    elif ksize == (3, 3) and sw == 1:
        _ave_backward_fixed(src, dst, dims, (3, 3), (sh, 1), pad, accumulate, nc, True)
    elif ksize == (2, 2) and sw == 2:
        _ave_backward_fixed(src, dst, dims, (2, 2), (sh, 2), pad, accumulate, nc, True)
    else:
        _ave_backward_fixed(src, dst, dims, ksize, stride, pad, accumulate, nc, False)


@njit(inline="always", error_model="numpy")
def _ave_backward_fixed(src, dst, dims, ksize, stride, pad, accumulate, nc, unrolled):
    """AVE backward of plane ``nc``; interior windows a row at a time when ``unrolled``."""
    h, w, oh, ow, lo, hi = dims
    kh, kw = ksize
    sh, sw = stride
    ph, pw = pad
    base = nc * h * w
    if not accumulate:
        for i in range(h * w):
            dst[_u(base + i)] = np.float32(0.0)
    if not unrolled:
        lo, hi = ow, ow
    for oy in range(oh):
        y0, y1, ey = _ave_window(oy, sh, ph, kh, h)
        row = (nc * oh + oy) * ow
        # Shares reach a bottom element in increasing ox: left border, interior, right border.
        for ox in range(lo):
            _ave_spread(src, dst, base, w, row + ox, y0, y1, ey, _ave_window(ox, sw, pw, kw, w))
        size = np.float32(ey * kw)
        for y in range(y0, y1):
            for kx in range(kw - 1, -1, -1):
                first = y * w + kx - pw
                for ox in range(lo, hi):
                    dst[_u(base + first + ox * sw)] += src[_u(row + ox)] / size
        for ox in range(hi, ow):
            _ave_spread(src, dst, base, w, row + ox, y0, y1, ey, _ave_window(ox, sw, pw, kw, w))


@njit(cache=True, parallel=True, error_model="numpy")
def ave_pool_backward(top_diff, ksize, stride, pad, bottom_diff, accumulate):
    """Spread each top diff over its window: bottom_diff[window] (+)= top_diff / pool_size.

    top_diff (n, c, oh, ow), bottom_diff (n, c, h, w): overwritten, or added into when
    ``accumulate``; the shares reaching one bottom element are summed in (oy, ox) order.
    """
    n, c, h, w = bottom_diff.shape
    oh, ow = top_diff.shape[2], top_diff.shape[3]
    dims = (h, w, oh, ow) + _interior(stride[1], pad[1], ksize[1], w, ow)
    src = top_diff.reshape(top_diff.size)
    dst = bottom_diff.reshape(bottom_diff.size)
    if bottom_diff.size < PARALLEL_MIN:
        for nc in range(n * c):
            _ave_backward_plane(src, dst, dims, ksize, stride, pad, accumulate, nc)
    else:
        for nc in prange(n * c):
            _ave_backward_plane(src, dst, dims, ksize, stride, pad, accumulate, nc)


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
