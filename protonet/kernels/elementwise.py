"""Element-wise kernels: the neuron functions, masks, and per-axis broadcasts.

Notation:
    n                  number of elements of a flat (1-D) array
    (outer, dim, inner) a blob viewed around one axis range: ``dim`` elements share one
                       coefficient (channel, scale entry, bias entry); the coefficient index is
                       the middle index. Scale, Bias and PReLU use this view.
    p                  a 4-tuple of float32 scalars, an op's parameters (see ``OPS``).

Unary ops are selected by an integer op code (``RELU``, ``SIGMOID``...), one kernel pair for all:
``unary_forward(op, p, x, y)`` and ``unary_backward(op, p, x, y, dy, dx)``. The branch on ``op``
is loop-invariant and costs nothing measurable next to the memory traffic. Scalar parameters
are float32, so the arithmetic is Caffe's float arithmetic; where Caffe's source computes in
double (Sigmoid, BNLL, Swish's derivative) we do too.

Small arrays (fewer than ``PARALLEL_MIN`` elements) run on the calling thread: waking the thread
pool costs more than the work (about 10 µs on an idle machine, far more on a busy one). Both
paths run the same per-element or per-plane helper, so they give identical results.

Every kernel compiles with ``error_model="numpy"``: a float division by zero gives inf or NaN,
as C gives Caffe, instead of raising (and both the serial and the ``prange`` path agree).

Aliasing: every element-wise kernel may write its output over any of its inputs
(``y is x``, ``dx is dy``): element ``i`` is read before it is written, and nothing else
reads it afterwards. Reductions (``axis_sum``, ``axis_dot``, ``prelu_slope_grad``) sum each
output in one fixed order (outer, then inner) in float64, whatever the thread count.
"""

import math

import numpy as np
from numba import njit, prange

RELU = 0        # p = (negative_slope, -, -, -)
ELU = 1         # p = (alpha, -, -, -)
SIGMOID = 2     # p unused
TANH = 3        # p unused
ABSVAL = 4      # p unused
POWER = 5       # p = (power, scale, shift, power * scale)
EXP = 6         # p = (inner_scale, outer_scale, -, -)
LOG = 7         # p = (scale, shift, 1 / log(base), scale / log(base))
BNLL = 8        # p unused
THRESHOLD = 9   # p = (threshold, -, -, -); no backward
SWISH = 10      # p = (beta, -, -, -)
CLIP = 11       # p = (min, max, -, -)

OPS = {
    "ReLU": RELU, "ELU": ELU, "Sigmoid": SIGMOID, "TanH": TANH, "AbsVal": ABSVAL,
    "Power": POWER, "Exp": EXP, "Log": LOG, "BNLL": BNLL, "Threshold": THRESHOLD,
    "Swish": SWISH, "Clip": CLIP,
}

# Caffe's BNLL clamps the exponent in backward (bnll_layer.cpp, kBNLL_THRESHOLD).
BNLL_THRESHOLD = 50.0
# Below this many elements a kernel stays on the calling thread (see the module docstring).
PARALLEL_MIN = 1 << 15


def params(*values):
    """The 4-tuple of float32 scalars the unary kernels take; missing values are 0."""
    values = tuple(values) + (0.0,) * (4 - len(values))
    return tuple(np.float32(v) for v in values)


# ---- scalar functions -----------------------------------------------------------------------

@njit(inline="always", error_model="numpy")
def _cmax(a, b):
    """std::max(a, b): (a < b) ? b : a, NaN handling included."""
    return b if a < b else a


@njit(inline="always", error_model="numpy")
def _cmin(a, b):
    """std::min(a, b): (b < a) ? b : a."""
    return b if b < a else a


@njit(inline="always", error_model="numpy")
def _leaky(x, slope):
    """ReLU/PReLU: max(x, 0) + slope · min(x, 0), in Caffe's float arithmetic."""
    zero = np.float32(0.0)
    return _cmax(x, zero) + slope * _cmin(x, zero)


@njit(inline="always", error_model="numpy")
def _leaky_grad(x, slope):
    """ReLU/PReLU derivative as Caffe writes it: (x > 0) + slope · (x ≤ 0)."""
    zero = np.float32(0.0)
    one = np.float32(1.0)
    return (one if x > zero else zero) + slope * (one if x <= zero else zero)


@njit(inline="always", error_model="numpy")
def _sigmoid(x):
    """Caffe's sigmoid, evaluated in double as sigmoid_layer.cpp does: 0.5·tanh(0.5x) + 0.5."""
    return 0.5 * math.tanh(0.5 * np.float64(x)) + 0.5


@njit(inline="always", error_model="numpy")
def _forward_one(op, p, x):
    zero = np.float32(0.0)
    one = np.float32(1.0)
    if op == RELU:
        return _leaky(x, p[0])
    elif op == ELU:
        return _cmax(x, zero) + p[0] * (np.float32(math.exp(_cmin(x, zero))) - one)
    elif op == SIGMOID:
        return np.float32(_sigmoid(x))
    elif op == TANH:
        return np.float32(math.tanh(x))
    elif op == ABSVAL:
        return np.float32(abs(x))
    elif op == POWER:
        if p[3] == zero:
            # Caffe: scale or power is 0, so the input is ignored (power_layer.cpp).
            return one if p[0] == zero else np.float32(p[2] ** p[0])
        t = x * p[1] + p[2]
        return t if p[0] == one else np.float32(t ** p[0])
    elif op == EXP:
        return np.float32(math.exp(p[0] * x)) * p[1]
    elif op == LOG:
        return np.float32(math.log(x * p[0] + p[1])) * p[2]
    elif op == BNLL:
        xd = np.float64(x)
        if xd > 0.0:
            return np.float32(xd + math.log(1.0 + math.exp(-xd)))
        return np.float32(math.log(1.0 + math.exp(xd)))
    elif op == THRESHOLD:
        return one if x > p[0] else zero
    elif op == SWISH:
        return x * np.float32(_sigmoid(p[0] * x))
    else:  # CLIP
        return _cmax(p[0], _cmin(x, p[1]))


@njit(inline="always", error_model="numpy")
def _backward_one(op, p, x, y, dy):
    zero = np.float32(0.0)
    one = np.float32(1.0)
    if op == RELU:
        return dy * _leaky_grad(x, p[0])
    elif op == ELU:
        return dy * ((one if x > zero else zero) + (p[0] + y) * (one if x <= zero else zero))
    elif op == SIGMOID:
        return np.float32(dy * y * (1.0 - np.float64(y)))
    elif op == TANH:
        return dy * (one - y * y)
    elif op == ABSVAL:
        sign = (one if zero < x else zero) - (one if x < zero else zero)
        return sign * dy
    elif op == POWER:
        # p = (power, scale, shift, diff_scale); dy/dx = diff_scale · y / (shift + scale·x).
        if p[3] == zero:
            return zero
        if p[0] == one:
            return dy * p[3]
        if p[0] == np.float32(2.0):
            return dy * (p[3] * p[1] * x + p[3] * p[2])
        if p[2] == zero:
            # Caffe quirk: power · y / x, NaN at x = 0 for any power (power_layer.cpp).
            return dy * ((y / x) * p[0])
        return dy * ((y / (x * p[1] + p[2])) * p[3])
    elif op == EXP:
        return (y * dy) * p[0]
    elif op == LOG:
        return dy * ((one / (x * p[0] + p[1])) * p[3])
    elif op == BNLL:
        e = math.exp(np.float64(_cmin(x, np.float32(BNLL_THRESHOLD))))
        return np.float32(dy * np.float32(e) / (np.float32(e) + 1.0))
    elif op == THRESHOLD:
        return zero
    elif op == SWISH:
        s = np.float32(_sigmoid(p[0] * x))
        by = np.float64(p[0] * y)
        return np.float32(dy * (by + s * (1.0 - by)))
    else:  # CLIP
        return dy * (one if (x >= p[0] and x <= p[1]) else zero)


# ---- unary kernels ---------------------------------------------------------------------------

@njit(cache=True, parallel=True, error_model="numpy")
def unary_forward(op, p, x, y):
    """y[i] = f_op(x[i]; p). x, y: (n,) float32; y may be x."""
    n = x.shape[0]
    if n < PARALLEL_MIN:
        for i in range(n):
            y[i] = _forward_one(op, p, x[i])
    else:
        for i in prange(n):
            y[i] = _forward_one(op, p, x[i])


@njit(cache=True, parallel=True, error_model="numpy")
def unary_backward(op, p, x, y, dy, dx):
    """dx[i] = dy[i] · f_op'(x[i]) (using y = f_op(x) where the op's formula does).

    x, y, dy, dx: (n,) float32; dx may be dy (in-place layers), x may be y when the op reads the
    sign of its input from its output.
    """
    n = x.shape[0]
    if n < PARALLEL_MIN:
        for i in range(n):
            dx[i] = _backward_one(op, p, x[i], y[i], dy[i])
    else:
        for i in prange(n):
            dx[i] = _backward_one(op, p, x[i], y[i], dy[i])


# ---- masks -----------------------------------------------------------------------------------

@njit(inline="always", error_model="numpy")
def _mask_one(u, ratio, scale):
    return scale if u >= ratio else np.float32(0.0)


@njit(cache=True, parallel=True, error_model="numpy")
def dropout_mask(ratio, scale, mask):
    """mask[i] ← scale if mask[i] ≥ ratio else 0, for mask[i] drawn uniform in [0, 1).

    Keeps each element with probability 1 − ratio. mask: (n,) float32, rewritten in place.
    """
    n = mask.shape[0]
    if n < PARALLEL_MIN:
        for i in range(n):
            mask[i] = _mask_one(mask[i], ratio, scale)
    else:
        for i in prange(n):
            mask[i] = _mask_one(mask[i], ratio, scale)


@njit(cache=True, parallel=True, error_model="numpy")
def multiply(a, b, out):
    """out[i] = a[i] · b[i]. a, b, out: (n,) float32; out may be a or b."""
    n = a.shape[0]
    if n < PARALLEL_MIN:
        for i in range(n):
            out[i] = a[i] * b[i]
    else:
        for i in prange(n):
            out[i] = a[i] * b[i]


# ---- per-axis broadcasts (Scale, Bias, PReLU) ------------------------------------------------
# Each helper handles one plane x[o, d, :] (od = o · dim + d) or one reduction index d.

@njit(inline="always", error_model="numpy")
def _scale_plane(x, s, y, od):
    dim, inner = x.shape[1], x.shape[2]
    o = od // dim
    d = od % dim
    factor = s[d]
    for i in range(inner):
        y[o, d, i] = x[o, d, i] * factor


@njit(inline="always", error_model="numpy")
def _bias_plane(x, b, y, od):
    dim, inner = x.shape[1], x.shape[2]
    o = od // dim
    d = od % dim
    value = b[d]
    for i in range(inner):
        y[o, d, i] = x[o, d, i] + value


@njit(inline="always", error_model="numpy")
def _prelu_plane(x, slope, y, od):
    dim, inner = x.shape[1], x.shape[2]
    o = od // dim
    d = od % dim
    a = slope[d]
    for i in range(inner):
        y[o, d, i] = _leaky(x[o, d, i], a)


@njit(inline="always", error_model="numpy")
def _prelu_grad_plane(x, dy, slope, dx, od):
    dim, inner = x.shape[1], x.shape[2]
    o = od // dim
    d = od % dim
    a = slope[d]
    for i in range(inner):
        dx[o, d, i] = dy[o, d, i] * _leaky_grad(x[o, d, i], a)


@njit(inline="always", error_model="numpy")
def _sum_index(a, accumulate, out, d):
    outer, inner = a.shape[0], a.shape[2]
    acc = 0.0
    for o in range(outer):
        for i in range(inner):
            acc += a[o, d, i]
    out[d] = np.float32(out[d] + acc) if accumulate else np.float32(acc)


@njit(inline="always", error_model="numpy")
def _dot_index(a, b, accumulate, out, d):
    outer, inner = a.shape[0], a.shape[2]
    acc = 0.0
    for o in range(outer):
        for i in range(inner):
            acc += np.float64(a[o, d, i]) * np.float64(b[o, d, i])
    out[d] = np.float32(out[d] + acc) if accumulate else np.float32(acc)


@njit(inline="always", error_model="numpy")
def _slope_grad_index(x, dy, out, d):
    outer, inner = x.shape[0], x.shape[2]
    acc = 0.0
    for o in range(outer):
        for i in range(inner):
            v = x[o, d, i]
            if v <= 0:
                acc += np.float64(dy[o, d, i]) * np.float64(v)
    out[d] = np.float32(out[d] + acc)


@njit(cache=True, parallel=True, error_model="numpy")
def axis_scale(x, s, y):
    """y[o, d, i] = x[o, d, i] · s[d]. x, y: (outer, dim, inner); s: (dim,); y may be x."""
    outer, dim, inner = x.shape
    if x.size < PARALLEL_MIN:
        for od in range(outer * dim):
            _scale_plane(x, s, y, od)
    else:
        for od in prange(outer * dim):
            _scale_plane(x, s, y, od)


@njit(cache=True, parallel=True, error_model="numpy")
def axis_bias(x, b, y):
    """y[o, d, i] = x[o, d, i] + b[d]. x, y: (outer, dim, inner); b: (dim,); y may be x."""
    outer, dim, inner = x.shape
    if x.size < PARALLEL_MIN:
        for od in range(outer * dim):
            _bias_plane(x, b, y, od)
    else:
        for od in prange(outer * dim):
            _bias_plane(x, b, y, od)


@njit(cache=True, parallel=True, error_model="numpy")
def axis_sum(a, accumulate, out):
    """out[d] (+)= Σ_o Σ_i a[o, d, i]. a: (outer, dim, inner); out: (dim,).

    ``accumulate``: add to out (param diffs) instead of overwriting it (bottom diffs).
    """
    dim = a.shape[1]
    if a.size < PARALLEL_MIN:
        for d in range(dim):
            _sum_index(a, accumulate, out, d)
    else:
        for d in prange(dim):
            _sum_index(a, accumulate, out, d)


@njit(cache=True, parallel=True, error_model="numpy")
def axis_dot(a, b, accumulate, out):
    """out[d] (+)= Σ_o Σ_i a[o, d, i] · b[o, d, i]. a, b: (outer, dim, inner); out: (dim,)."""
    dim = a.shape[1]
    if a.size < PARALLEL_MIN:
        for d in range(dim):
            _dot_index(a, b, accumulate, out, d)
    else:
        for d in prange(dim):
            _dot_index(a, b, accumulate, out, d)


@njit(cache=True, parallel=True, error_model="numpy")
def prelu_forward(x, slope, y):
    """y = max(x, 0) + slope[d] · min(x, 0).

    x, y: (outer, dim, inner); slope: (dim,); y may be x.
    """
    outer, dim, inner = x.shape
    if x.size < PARALLEL_MIN:
        for od in range(outer * dim):
            _prelu_plane(x, slope, y, od)
    else:
        for od in prange(outer * dim):
            _prelu_plane(x, slope, y, od)


@njit(cache=True, parallel=True, error_model="numpy")
def prelu_backward(x, dy, slope, dx):
    """dx = dy · (1 if x > 0 else slope[d]). x, dy, dx: (outer, dim, inner); dx may be dy."""
    outer, dim, inner = x.shape
    if x.size < PARALLEL_MIN:
        for od in range(outer * dim):
            _prelu_grad_plane(x, dy, slope, dx, od)
    else:
        for od in prange(outer * dim):
            _prelu_grad_plane(x, dy, slope, dx, od)


@njit(cache=True, parallel=True, error_model="numpy")
def prelu_slope_grad(x, dy, out):
    """out[d] += Σ_o Σ_i dy · x · [x ≤ 0] (accumulated).

    x, dy: (outer, dim, inner); out: (dim,).
    """
    dim = x.shape[1]
    if x.size < PARALLEL_MIN:
        for d in range(dim):
            _slope_grad_index(x, dy, out, d)
    else:
        for d in prange(dim):
            _slope_grad_index(x, dy, out, d)
