"""Reduction kernels: Caffe's Reduction layer (sum, |x| sum, x² sum, mean) and ArgMax's top-k.

Notation: a blob is viewed as ``(num, dim)`` (Reduction: ``num`` independent rows of ``dim``
values each) or ``(outer, dim, inner)`` (ArgMax: ``dim`` candidates, ``inner`` apart, for each
of the ``outer · inner`` independent positions). ``top_k`` is the number of picks per position.
"""

import numpy as np
from numba import njit, prange

# ReductionParameter.ReductionOp values (caffe.proto); MEAN is SUM with coeff / dim.
SUM, ASUM, SUMSQ, MEAN = 1, 2, 3, 4


# ---- Reduction -----------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def reduction_forward(x, op, coeff, out):
    """out[i] = coeff · Σ_j f(x[i, j]) with f = x (SUM, MEAN), |x| (ASUM) or x² (SUMSQ).

    x (num, dim) float32; op one of SUM/ASUM/SUMSQ/MEAN; coeff float32 (already divided by dim
    for MEAN); out (num,) float32, written. Each row is summed in a float64 accumulator, in
    index order, then rounded to float32 and scaled in float32 as Caffe's ``caffe_scal`` does.
    out must not alias x.
    """
    num, dim = x.shape
    for i in prange(num):
        acc = 0.0
        if op == ASUM:
            for j in range(dim):
                acc += abs(np.float64(x[i, j]))
        elif op == SUMSQ:
            for j in range(dim):
                v = np.float64(x[i, j])
                acc += v * v
        else:
            for j in range(dim):
                acc += np.float64(x[i, j])
        out[i] = np.float32(acc) * coeff


@njit(cache=True, parallel=True)
def reduction_backward(x, top_diff, op, coeff, bottom_diff):
    """bottom_diff[i, j] = top_diff[i] · coeff · f'(x[i, j]) for the op of reduction_forward.

    x (num, dim), top_diff (num,), bottom_diff (num, dim) written, all float32. f' is 1 (SUM,
    MEAN), sign(x) with sign(0) = sign(NaN) = 0 (ASUM, Caffe's caffe_cpu_sign) or 2x (SUMSQ).
    bottom_diff must not alias x or top_diff.
    """
    num, dim = x.shape
    for i in prange(num):
        g = top_diff[i] * coeff
        if op == ASUM:
            for j in range(dim):
                v = x[i, j]
                s = np.float32(0.0)
                if v > 0:
                    s = np.float32(1.0)
                elif v < 0:
                    s = np.float32(-1.0)
                bottom_diff[i, j] = s * g
        elif op == SUMSQ:
            g2 = np.float32(2.0) * g
            for j in range(dim):
                bottom_diff[i, j] = g2 * x[i, j]
        else:
            for j in range(dim):
                bottom_diff[i, j] = g


# ---- ArgMax --------------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def argmax_forward(x, out_ind, out_val, write_ind, write_val):
    """The top_k largest of x[o, :, i] for every (o, i), largest first.

    x (outer, dim, inner) float32; out_ind, out_val (outer, top_k, inner) float32 (any strides),
    written only when write_ind / write_val is true: the candidate index j (as a float) and its
    value. Candidates are ordered as Caffe orders (value, index) pairs with std::greater: by value,
    and among equal values the larger index first. NaN values give unspecified picks (as
    std::partial_sort does in Caffe). Outputs must not alias x; out_ind may be out_val when only
    one of them is written.
    """
    outer, dim, inner = x.shape
    top_k = out_ind.shape[1]
    for r in prange(outer * inner):
        o = r // inner
        i = r % inner
        prev_v = np.float32(0.0)
        prev_j = dim
        for k in range(top_k):
            best_j = -1
            best_v = np.float32(0.0)
            for j in range(dim):
                v = x[o, j, i]
                # Only pairs strictly below the previous pick are still candidates.
                if k > 0 and not (v < prev_v or (v == prev_v and j < prev_j)):
                    continue
                # Caffe quirk: std::greater on (value, index) pairs puts the larger index first
                # among equal values (argmax_layer.cpp); scanning j upwards, ">=" does that.
                if best_j < 0 or v >= best_v:
                    best_j = j
                    best_v = v
            if write_ind:
                out_ind[o, k, i] = np.float32(best_j)
            if write_val:
                out_val[o, k, i] = best_v
            prev_v = best_v
            prev_j = best_j
