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
depend on the thread count: float64, per plane in ``elementwise.LANES`` interleaved partial sums,
then over o in order (``elementwise._plane_sum``). ``standardize`` does a training forward in
three passes over each d's data, all while it is in cache: mean, variance, then the normalised
values written to the top and to the copy backward keeps. In-place calls pass one array twice
to the inlined loops (see elementwise.py's NOTE on aliasing); flat views use uint64 indices.
"""

import numpy as np
from numba import njit, prange
from numba import uint64 as _u

from .elementwise import DOT, PARALLEL_MIN, SQDEV, SUM, _axis_sum_index, _same

# normalize_backward modes.
SCALE_ONLY = 0  # dx = dy / denom (BatchNorm with global statistics)
CENTER = 1      # dx = dy − mean(dy) (MVN without normalize_variance)
FULL = 2        # dx = (dy − mean(dy) − mean(dy·y)·y) / denom

# standardize's denominators.
GIVEN = -1          # mean and denom given, nothing computed (normalize_forward)
NO_VARIANCE = 0     # denom left as it is, var not computed (MVN without normalize_variance)
EPS_IN_SQRT = 1     # sqrt(var + eps) (BatchNorm)
EPS_AFTER_SQRT = 2  # sqrt(var) + eps (MVN)


@njit(inline="always", error_model="numpy")
def _moments_index(xf, with_var, mean, var, d, dim, inner):
    """mean[d], and var[d] if with_var, of flat x's planes x[:, d, :]."""
    m = xf.shape[0] // dim if dim else 0
    zero = np.float32(0.0)
    mu = np.float32(_axis_sum_index(SUM, xf, xf, zero, d, dim, inner) / m)
    mean[d] = mu
    if with_var:
        var[d] = np.float32(_axis_sum_index(SQDEV, xf, xf, mu, d, dim, inner) / m)


@njit(inline="always", error_model="numpy")
def _normalize_index(xf, mean, denom, y, y_copy, d, dim, inner):
    """y = y_copy = (x − mean[d]) / denom[d] over the planes x[:, d, :] (flat views)."""
    outer = xf.shape[0] // (dim * inner) if dim * inner else 0
    mu = mean[d]
    sd = denom[d]
    for o in range(outer):
        lo = _u((o * dim + d) * inner)
        for i in range(lo, lo + _u(inner)):
            v = (xf[i] - mu) / sd
            y[i] = v
            y_copy[i] = v


@njit(inline="always", error_model="numpy")
def _standardize_index(xf, eps, denom_mode, mean, var, denom, y, y_copy, d, dim, inner):
    if denom_mode != GIVEN:
        _moments_index(xf, denom_mode != NO_VARIANCE, mean, var, d, dim, inner)
    if denom_mode == EPS_IN_SQRT:
        denom[d] = np.sqrt(var[d] + eps)
    elif denom_mode == EPS_AFTER_SQRT:
        denom[d] = np.sqrt(var[d]) + eps
    _normalize_index(xf, mean, denom, y, y_copy, d, dim, inner)


@njit(inline="always", error_model="numpy")
def _standardize_all(xf, eps, denom_mode, mean, var, denom, y, y_copy, dim, inner):
    if xf.shape[0] < PARALLEL_MIN:
        for d in range(dim):
            _standardize_index(xf, eps, denom_mode, mean, var, denom, y, y_copy, d, dim, inner)
    else:
        for d in prange(dim):
            _standardize_index(xf, eps, denom_mode, mean, var, denom, y, y_copy, d, dim, inner)


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
    zero = np.float32(0.0)
    sum_dy = _axis_sum_index(SUM, dy, dy, zero, d, dim, inner)
    if mode == CENTER:
        mu = np.float32(sum_dy / m)
        for o in range(outer):
            lo = _u((o * dim + d) * inner)
            for i in range(lo, lo + _u(inner)):
                dx[i] = dy[i] - mu
        return
    s1 = np.float32(_axis_sum_index(DOT, dy, y, zero, d, dim, inner))
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
    var, denom: (dim,). y may be x; y_copy must alias neither (pass y itself for no copy).
    """
    dim, inner = x.shape[1], x.shape[2]
    xf = x.reshape(-1)
    if _same(x, y):
        _standardize_all(xf, eps, denom_mode, mean, var, denom, xf, y_copy.reshape(-1), dim,
                         inner)
    else:
        _standardize_all(xf, eps, denom_mode, mean, var, denom, y.reshape(-1),
                         y_copy.reshape(-1), dim, inner)


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
