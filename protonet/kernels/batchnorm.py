"""Normalization kernels shared by BatchNorm and MVN.

Notation:
    (outer, dim, inner)  the input viewed so that one statistic belongs to each middle index d,
                         computed over the m = outer · inner elements x[:, d, :].
                         BatchNorm: (N, C, H·W), statistics per channel over batch and space.
                         MVN: (1, N·C, H·W) per channel of each sample, or (1, N, C·H·W) with
                         across_channels.
    denom                per-d divisor: sqrt(var + eps) for BatchNorm, sqrt(var) + eps for MVN.

Every kernel runs over d (``prange`` from ``elementwise.PARALLEL_MIN`` elements on, serially
below); each d reads and writes only x[:, d, :], so outputs may alias inputs and the sums do not
depend on the thread count: float64, per plane x[o, d, :] (``elementwise._plane_sum`` and the
two sums below, vectorised as its NOTE explains), then over o in order. ``standardize`` does a
training forward in three passes over each d's data, all while it is in cache: mean, variance
(Caffe's two-pass order), then the normalised values written to the top and to the copy
backward keeps; a large blob's copy takes non-temporal stores (see elementwise.py's NOTE on
them). FULL backward sums dy and dy·y in one pass, then writes dx. In-place calls pass one
array twice to the inlined loops (see elementwise.py's NOTE on aliasing); flat views use uint64
indices.
"""

import numpy as np
from numba import njit, prange
from numba import uint64 as _u

from .elementwise import (PARALLEL_MIN, STREAM_MIN, SUM, _copy_run, _plane_sum, _same,
                          _store_fence)

# normalize_backward modes.
SCALE_ONLY = 0  # dx = dy / denom (BatchNorm with global statistics)
CENTER = 1      # dx = dy − mean(dy) (MVN without normalize_variance)
FULL = 2        # dx = (dy − mean(dy) − mean(dy·y)·y) / denom

# standardize's denominators.
GIVEN = -1          # mean and denom given, nothing computed (normalize_forward)
NO_VARIANCE = 0     # denom left as it is, var not computed (MVN without normalize_variance)
EPS_IN_SQRT = 1     # sqrt(var + eps) (BatchNorm)
EPS_AFTER_SQRT = 2  # sqrt(var) + eps (MVN)


@njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _run_sqdev(a, mu, lo, hi):
    """Σ (a[i] − mu)² over [lo, hi) in float64, each difference rounded to float32 first."""
    s = 0.0
    for i in range(lo, hi):
        t = np.float64(a[i] - mu)
        s += t * t
    return s


@njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _run_sum_dot(a, b, lo, hi):
    """(Σ a[i], Σ a[i]·b[i]) over [lo, hi) in float64, in one pass."""
    s = 0.0
    p = 0.0
    for i in range(lo, hi):
        ai = np.float64(a[i])
        s += ai
        p += ai * np.float64(b[i])
    return s, p


@njit(inline="always", error_model="numpy")
def _moments_index(xf, with_var, mean, var, d, dim, inner):
    """mean[d], and var[d] if with_var, of flat x's planes x[:, d, :]: per plane in float64,
    then over the planes in order."""
    outer = xf.shape[0] // (dim * inner) if dim * inner else 0
    m = outer * inner
    acc = 0.0
    for o in range(outer):
        lo = _u((o * dim + d) * inner)
        acc += _plane_sum(SUM, xf, xf, lo, lo + _u(inner))
    mu = np.float32(acc / m)
    mean[d] = mu
    if with_var:
        acc = 0.0
        for o in range(outer):
            lo = _u((o * dim + d) * inner)
            acc += _run_sqdev(xf, mu, lo, lo + _u(inner))
        var[d] = np.float32(acc / m)


# _normalize_index's copy modes.
NO_COPY = 0   # y only
COPY = 1      # y and y_copy in one loop
STREAM = 2    # y, then y_copy by non-temporal stores (large blobs: not read again soon)


@njit(inline="always", error_model="numpy")
def _normalize_index(xf, mean, denom, y, y_copy, copy, d, dim, inner):
    """y (= y_copy) = (x − mean[d]) / denom[d] over the planes x[:, d, :] (flat views)."""
    outer = xf.shape[0] // (dim * inner) if dim * inner else 0
    mu = mean[d]
    sd = denom[d]
    for o in range(outer):
        lo = _u((o * dim + d) * inner)
        hi = lo + _u(inner)
        if copy == COPY:
            for i in range(lo, hi):
                v = (xf[i] - mu) / sd
                y[i] = v
                y_copy[i] = v
        else:
            for i in range(lo, hi):
                y[i] = (xf[i] - mu) / sd
            if copy == STREAM:
                _copy_run(y_copy, y, lo, hi, True)
    if copy == STREAM:
        _store_fence()


@njit(inline="always", error_model="numpy")
def _standardize_index(xf, eps, denom_mode, mean, var, denom, y, y_copy, copy, d, dim,
                       inner):
    if denom_mode != GIVEN:
        _moments_index(xf, denom_mode != NO_VARIANCE, mean, var, d, dim, inner)
    if denom_mode == EPS_IN_SQRT:
        denom[d] = np.sqrt(var[d] + eps)
    elif denom_mode == EPS_AFTER_SQRT:
        denom[d] = np.sqrt(var[d]) + eps
    _normalize_index(xf, mean, denom, y, y_copy, copy, d, dim, inner)


@njit(inline="always", error_model="numpy")
def _standardize_all(xf, eps, denom_mode, mean, var, denom, y, y_copy, copy, dim, inner):
    if xf.shape[0] < PARALLEL_MIN:
        for d in range(dim):
            _standardize_index(xf, eps, denom_mode, mean, var, denom, y, y_copy, copy, d, dim,
                               inner)
    else:
        for d in prange(dim):
            _standardize_index(xf, eps, denom_mode, mean, var, denom, y, y_copy, copy, d, dim,
                               inner)


@njit(inline="always", error_model="numpy")
def _normalize_backward_index(mode, dy, y, denom, dx, d, dim, inner):
    """One d of normalize_backward over flat views."""
    outer = dy.shape[0] // (dim * inner) if dim * inner else 0
    m = outer * inner
    sd = denom[d]
    if mode == SCALE_ONLY:
        for o in range(outer):
            lo = _u((o * dim + d) * inner)
            for i in range(lo, lo + _u(inner)):
                dx[i] = dy[i] / sd
        return
    if mode == CENTER:
        acc = 0.0
        for o in range(outer):
            lo = _u((o * dim + d) * inner)
            acc += _plane_sum(SUM, dy, dy, lo, lo + _u(inner))
        mu = np.float32(acc / m)
        for o in range(outer):
            lo = _u((o * dim + d) * inner)
            for i in range(lo, lo + _u(inner)):
                dx[i] = dy[i] - mu
        return
    sum_dy = 0.0
    sum_dy_y = 0.0
    for o in range(outer):
        lo = _u((o * dim + d) * inner)
        s, p = _run_sum_dot(dy, y, lo, lo + _u(inner))
        sum_dy += s
        sum_dy_y += p
    s1 = np.float32(sum_dy_y)
    s2 = np.float32(sum_dy)
    neg_inv_m = np.float32(-1.0 / m)
    for o in range(outer):
        lo = _u((o * dim + d) * inner)
        for i in range(lo, lo + _u(inner)):
            t = y[i] * s1 + s2
            dx[i] = (dy[i] + t * neg_inv_m) / sd


@njit(inline="always", error_model="numpy")
def _normalize_backward_all(mode, dy, y, denom, dx, dim, inner):
    if dy.shape[0] < PARALLEL_MIN:
        for d in range(dim):
            _normalize_backward_index(mode, dy, y, denom, dx, d, dim, inner)
    else:
        for d in prange(dim):
            _normalize_backward_index(mode, dy, y, denom, dx, d, dim, inner)


@njit(cache=True, parallel=True, error_model="numpy")
def moments(x, with_var, mean, var):
    """mean[d] = E[x[:, d, :]]; if with_var, var[d] = E[(x − mean[d])²] (biased).

    x: (outer, dim, inner) float32; mean, var: (dim,) float32, written (var only with_var). The
    centred values are rounded to float32 before squaring, as Caffe's (X − EX)² in float is.
    """
    dim, inner = x.shape[1], x.shape[2]
    xf = x.reshape(-1)
    if x.size < PARALLEL_MIN:
        for d in range(dim):
            _moments_index(xf, with_var, mean, var, d, dim, inner)
    else:
        for d in prange(dim):
            _moments_index(xf, with_var, mean, var, d, dim, inner)


@njit(cache=True, parallel=True, error_model="numpy")
def standardize(x, eps, denom_mode, mean, var, denom, y, y_copy):
    """The statistics and the normalised input in one call, per d with its data in cache.

    mean, var as ``moments`` (var only unless NO_VARIANCE; neither with GIVEN, which reads
    mean); denom[d] per ``denom_mode`` from var[d] and eps (float32), or read as given with
    NO_VARIANCE and GIVEN; then
    y = y_copy = (x − mean[d]) / denom[d]. x, y, y_copy: (outer, dim, inner) float32; mean,
    var, denom: (dim,). y may be x; y_copy must alias neither (pass y itself for no copy). From
    ``elementwise.STREAM_MIN`` elements on, y_copy takes non-temporal stores.
    """
    dim, inner = x.shape[1], x.shape[2]
    xf = x.reshape(-1)
    if _same(y_copy, y):
        copy = NO_COPY
    elif x.size >= STREAM_MIN:
        copy = STREAM
    else:
        copy = COPY
    if _same(x, y):
        _standardize_all(xf, eps, denom_mode, mean, var, denom, xf, y_copy.reshape(-1), copy,
                         dim, inner)
    else:
        _standardize_all(xf, eps, denom_mode, mean, var, denom, y.reshape(-1),
                         y_copy.reshape(-1), copy, dim, inner)


@njit(cache=True, error_model="numpy")
def normalize_forward(x, mean, denom, y):
    """y[o, d, i] = (x[o, d, i] − mean[d]) / denom[d], in float32.

    x, y: (outer, dim, inner); mean, denom: (dim,); y may be x.
    """
    standardize(x, np.float32(0.0), GIVEN, mean, mean, denom, y, y)


@njit(cache=True, parallel=True, error_model="numpy")
def normalize_backward(mode, dy, y, denom, dx):
    """Gradient of y = (x − mean) / denom through the statistics; ``mode`` picks the formula.

    dy, y, dx: (outer, dim, inner); denom: (dim,). ``y`` is the forward output (the normalised
    input), read only by FULL. dx may be dy. FULL follows batch_norm_layer.cpp's order:
    dx = (dy − (y · Σ(dy·y) + Σdy) / m) / denom.
    """
    dim, inner = dy.shape[1], dy.shape[2]
    dyf = dy.reshape(-1)
    if _same(dy, dx):
        _normalize_backward_all(mode, dyf, y.reshape(-1), denom, dyf, dim, inner)
    else:
        _normalize_backward_all(mode, dyf, y.reshape(-1), denom, dx.reshape(-1), dim, inner)
