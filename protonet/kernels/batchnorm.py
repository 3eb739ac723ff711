"""Normalization kernels shared by BatchNorm and MVN.

Notation:
    (outer, dim, inner)  the input viewed so that one statistic belongs to each middle index d,
                         computed over the m = outer · inner elements x[:, d, :].
                         BatchNorm: (N, C, H·W), statistics per channel over batch and space.
                         MVN: (1, N·C, H·W) per channel of each sample, or (1, N, C·H·W) with
                         across_channels.
    denom                per-d divisor: sqrt(var + eps) for BatchNorm, sqrt(var) + eps for MVN.

Every kernel runs over d (``prange`` from ``elementwise.PARALLEL_MIN`` elements on, serially
below); each d reads and writes only x[:, d, :], so outputs may alias inputs and the sums
(float64, in the order outer then inner) do not depend on the thread count.
"""

import numpy as np
from numba import njit, prange

from .elementwise import PARALLEL_MIN

# normalize_backward modes.
SCALE_ONLY = 0  # dx = dy / denom (BatchNorm with global statistics)
CENTER = 1      # dx = dy − mean(dy) (MVN without normalize_variance)
FULL = 2        # dx = (dy − mean(dy) − mean(dy·y)·y) / denom


@njit(inline="always", error_model="numpy")
def _moments_index(x, with_var, mean, var, d):
    outer, inner = x.shape[0], x.shape[2]
    m = outer * inner
    acc = 0.0
    for o in range(outer):
        for i in range(inner):
            acc += x[o, d, i]
    mu = np.float32(acc / m)
    mean[d] = mu
    if with_var:
        acc = 0.0
        for o in range(outer):
            for i in range(inner):
                t = np.float64(x[o, d, i] - mu)
                acc += t * t
        var[d] = np.float32(acc / m)


@njit(inline="always", error_model="numpy")
def _normalize_plane(x, mean, denom, y, od):
    dim, inner = x.shape[1], x.shape[2]
    o = od // dim
    d = od % dim
    mu = mean[d]
    sd = denom[d]
    for i in range(inner):
        y[o, d, i] = (x[o, d, i] - mu) / sd


@njit(inline="always", error_model="numpy")
def _normalize_backward_index(mode, dy, y, denom, dx, d):
    outer, inner = dy.shape[0], dy.shape[2]
    m = outer * inner
    sd = denom[d]
    if mode == SCALE_ONLY:
        for o in range(outer):
            for i in range(inner):
                dx[o, d, i] = dy[o, d, i] / sd
        return
    sum_dy = 0.0
    sum_dy_y = 0.0
    for o in range(outer):
        for i in range(inner):
            g = dy[o, d, i]
            sum_dy += g
            if mode == FULL:
                sum_dy_y += np.float64(g) * np.float64(y[o, d, i])
    if mode == CENTER:
        mu = np.float32(sum_dy / m)
        for o in range(outer):
            for i in range(inner):
                dx[o, d, i] = dy[o, d, i] - mu
        return
    s1 = np.float32(sum_dy_y)
    s2 = np.float32(sum_dy)
    neg_inv_m = np.float32(-1.0 / m)
    for o in range(outer):
        for i in range(inner):
            t = y[o, d, i] * s1 + s2
            dx[o, d, i] = (dy[o, d, i] + t * neg_inv_m) / sd


@njit(cache=True, parallel=True, error_model="numpy")
def moments(x, with_var, mean, var):
    """mean[d] = E[x[:, d, :]]; if with_var, var[d] = E[(x − mean[d])²] (biased).

    x: (outer, dim, inner) float32; mean, var: (dim,) float32, written (var only with_var). The
    centred values are rounded to float32 before squaring, as Caffe's (X − EX)² in float is.
    """
    dim = x.shape[1]
    if x.size < PARALLEL_MIN:
        for d in range(dim):
            _moments_index(x, with_var, mean, var, d)
    else:
        for d in prange(dim):
            _moments_index(x, with_var, mean, var, d)


@njit(cache=True, parallel=True, error_model="numpy")
def normalize_forward(x, mean, denom, y):
    """y[o, d, i] = (x[o, d, i] − mean[d]) / denom[d], in float32.

    x, y: (outer, dim, inner); mean, denom: (dim,); y may be x.
    """
    outer, dim, inner = x.shape
    if x.size < PARALLEL_MIN:
        for od in range(outer * dim):
            _normalize_plane(x, mean, denom, y, od)
    else:
        for od in prange(outer * dim):
            _normalize_plane(x, mean, denom, y, od)


@njit(cache=True, parallel=True, error_model="numpy")
def normalize_backward(mode, dy, y, denom, dx):
    """Gradient of y = (x − mean) / denom through the statistics; ``mode`` picks the formula.

    dy, y, dx: (outer, dim, inner); denom: (dim,). ``y`` is the forward output (the normalised
    input), read only by FULL. dx may be dy. FULL follows batch_norm_layer.cpp's order:
    dx = (dy − (y · Σ(dy·y) + Σdy) / m) / denom.
    """
    dim = dy.shape[1]
    if dy.size < PARALLEL_MIN:
        for d in range(dim):
            _normalize_backward_index(mode, dy, y, denom, dx, d)
    else:
        for d in prange(dim):
            _normalize_backward_index(mode, dy, y, denom, dx, d)
