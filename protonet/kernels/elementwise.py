"""Element-wise kernels: the neuron functions, masks, and per-axis broadcasts.

Notation:
    n                  number of elements of a flat (1-D) array
    (outer, dim, inner) a blob viewed around one axis range: ``dim`` elements share one
                       coefficient (channel, scale entry, bias entry); the coefficient index is
                       the middle index. Scale, Bias and PReLU use this view.
    p                  a 4-tuple of float32 scalars, an op's parameters (see ``OPS``).

Unary ops are selected by an integer op code (``RELU``, ``SIGMOID``...), one kernel pair for all:
``unary_forward(op, p, x, y)`` and ``unary_backward(op, p, x, y, dy, dx)``. ReLU, by far the most
used, branches off before the loop into its own block loops, which vectorise; the other ops
branch on ``op`` per element, which blocks SIMD but matters little next to their
transcendental functions. Scalar parameters are float32, so the arithmetic is Caffe's float
arithmetic; where Caffe's source computes in double (Sigmoid, BNLL, Swish's derivative) we do
too.

Small arrays (fewer than ``PARALLEL_MIN`` elements) run on the calling thread: waking the thread
pool costs more than the work (about 10 µs on an idle machine, far more on a busy one). Both
paths run the same per-element or per-plane helper, so they give identical results.

Every kernel compiles with ``error_model="numpy"``: a float division by zero gives inf or NaN,
as C gives Caffe, instead of raising (and both the serial and the ``prange`` path agree).

Aliasing: every element-wise kernel may write its output over any of its inputs
(``y is x``, ``dx is dy``): element ``i`` is read before it is written, and nothing else
reads it afterwards. NOTE: LLVM cannot prove that two array arguments do not overlap, so it
guards a vectorised loop with a run-time overlap test and falls back to scalar code when they
do, which is exactly the in-place case. The vectorised kernels therefore test for an in-place
call (``_same``) and then pass the one array twice to an inlined loop, where LLVM sees a single
pointer. They index flat views with uint64 (``_u``; see pooling.py's NOTE) in blocks of
``BLOCK`` elements.

Reductions (``axis_sum``, ``axis_dot``, ``prelu_slope_grad``) sum each output in float64 in
one fixed order, whatever the thread count: per plane x[o, d, :] (``_plane_sum``), then over o
in order.

NOTE: ``_plane_sum`` compiles with ``fastmath={"reassoc"}`` and nothing else (no FMA
contraction, no finite-math assumptions): it lets LLVM split the float64 sum into vector-wide
partial sums, which run at memory speed instead of one add latency per element. The split is
fixed by the compiled loop and the plane's bounds, never by the thread count or the data's
address, so results are reproducible; they differ from one running sum by float64 rounding.
"""

import math
import platform

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba import uint64 as _u
from numba.core import cgutils, types
from numba.extending import intrinsic

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
# Elements per task of the vectorised kernels' parallel loops (64 KB of float32).
BLOCK = 1 << 14


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


# ---- ReLU blocks ------------------------------------------------------------------------------

@njit(inline="always", error_model="numpy")
def _same(a, b):
    """Whether two arrays start at the same address (an in-place call)."""
    return a.ctypes.data == b.ctypes.data


@njit(inline="always", error_model="numpy")
def _block(b, n):
    """Flat index range [lo, hi) of block b of an n-element array, as uint64."""
    lo = b * BLOCK
    return _u(lo), _u(min(lo + BLOCK, n))


@njit(inline="always", error_model="numpy")
def _relu_forward_block(slope, x, y, b):
    lo, hi = _block(b, x.shape[0])
    for i in range(lo, hi):
        y[i] = _leaky(x[i], slope)


@njit(inline="always", error_model="numpy")
def _relu_backward_block(slope, x, dy, dx, b):
    lo, hi = _block(b, x.shape[0])
    for i in range(lo, hi):
        dx[i] = dy[i] * _leaky_grad(x[i], slope)


@njit(inline="always", error_model="numpy")
def _relu_forward_blocks(slope, x, y):
    n = x.shape[0]
    blocks = (n + BLOCK - 1) // BLOCK
    if n < PARALLEL_MIN:
        for b in range(blocks):
            _relu_forward_block(slope, x, y, b)
    else:
        for b in prange(blocks):
            _relu_forward_block(slope, x, y, b)


@njit(inline="always", error_model="numpy")
def _relu_backward_blocks(slope, x, dy, dx):
    n = x.shape[0]
    blocks = (n + BLOCK - 1) // BLOCK
    if n < PARALLEL_MIN:
        for b in range(blocks):
            _relu_backward_block(slope, x, dy, dx, b)
    else:
        for b in prange(blocks):
            _relu_backward_block(slope, x, dy, dx, b)


# ---- unary kernels ---------------------------------------------------------------------------

@njit(cache=True, parallel=True, error_model="numpy")
def unary_forward(op, p, x, y):
    """y[i] = f_op(x[i]; p). x, y: (n,) float32; y may be x."""
    n = x.shape[0]
    if op == RELU:
        if _same(x, y):
            _relu_forward_blocks(p[0], x, x)
        else:
            _relu_forward_blocks(p[0], x, y)
    elif n < PARALLEL_MIN:
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
    if op == RELU:
        if _same(dy, dx):
            _relu_backward_blocks(p[0], x, dy, dy)
        else:
            _relu_backward_blocks(p[0], x, dy, dx)
    elif n < PARALLEL_MIN:
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

SUM = 0     # _plane_sum terms: a[i]
DOT = 1     # a[i] · b[i]


@njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _plane_sum(kind, a, b, lo, hi):
    """Σ_{lo ≤ i < hi} a[i] (SUM) or a[i]·b[i] (DOT) in float64 over flat a (and b), uint64
    bounds; see the module docstring's NOTE on the order."""
    s = 0.0
    if kind == SUM:
        for i in range(lo, hi):
            s += np.float64(a[i])
    else:
        for i in range(lo, hi):
            s += np.float64(a[i]) * np.float64(b[i])
    return s


@njit(inline="always", error_model="numpy")
def _axis_sum_index(kind, a, b, d, dim, inner):
    """Σ_o Σ_i term over the planes a[o, d, :] of flat (outer · dim · inner) views."""
    outer = a.shape[0] // (dim * inner) if dim * inner else 0
    acc = 0.0
    for o in range(outer):
        lo = _u((o * dim + d) * inner)
        acc += _plane_sum(kind, a, b, lo, lo + _u(inner))
    return acc


@njit(inline="always", error_model="numpy")
def _affine_plane(x, s, t, y, od, dim, inner):
    """y = x · s[d] + t[d] over plane od of flat views (s or t may be a 1-element stand-in)."""
    d = od % dim
    factor = s[d % s.shape[0]]
    value = t[d % t.shape[0]]
    lo = _u(od * inner)
    for i in range(lo, lo + _u(inner)):
        y[i] = x[i] * factor + value


@njit(inline="always", error_model="numpy")
def _affine_planes(x, s, t, y, dim, inner):
    planes = x.shape[0] // inner if inner else 0
    if x.shape[0] < PARALLEL_MIN:
        for od in range(planes):
            _affine_plane(x, s, t, y, od, dim, inner)
    else:
        for od in prange(planes):
            _affine_plane(x, s, t, y, od, dim, inner)


@njit(inline="always", error_model="numpy")
def _affine(x, s, t, y):
    """y = x · s[d] + t[d] over (outer, dim, inner) views; in-place calls pass one array."""
    dim, inner = x.shape[1], x.shape[2]
    xf = x.reshape(-1)
    if _same(x, y):
        _affine_planes(xf, s, t, xf, dim, inner)
    else:
        _affine_planes(xf, s, t, y.reshape(-1), dim, inner)


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
    # −0 is the exact identity of +: x · s + (−0) is x · s to the bit, −0 included.
    _affine(x, s, np.full(1, -0.0, np.float32), y)


@njit(cache=True, parallel=True, error_model="numpy")
def axis_bias(x, b, y):
    """y[o, d, i] = x[o, d, i] + b[d]. x, y: (outer, dim, inner); b: (dim,); y may be x."""
    _affine(x, np.ones(1, np.float32), b, y)


# ---- Scale forward with the saved input, non-temporal stores --------------------------------
# NOTE: a layer that keeps a copy of a large blob for its backward (Scale and BatchNorm in
# place) writes that copy with non-temporal stores: an ordinary store first reads the line
# into the cache (as much DRAM traffic again as the copy itself) and evicts data this layer
# still reads, for a copy that is read only in backward, long after it left the cache.

# Arrays of at least this many elements write their saved copies with non-temporal stores.
STREAM_MIN = 1 << 20
# Elements per non-temporal store (64 bytes, one cache line).
_STREAM_WIDTH = 16
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


@intrinsic
def _stream_line(typingctx, dst, src, i):
    """dst[i:i + 16] = src[i:i + 16] (flat float32) by one non-temporal 64-byte store; the
    address of dst[i] must be a multiple of 64."""
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array)
            and dst.dtype == src.dtype == types.float32 and dst.ndim == src.ndim == 1
            and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        dst_type, src_type, _ = signature.args
        dst_data = context.make_array(dst_type)(context, builder, args[0]).data
        src_data = context.make_array(src_type)(context, builder, args[1]).data
        vector = ir.VectorType(ir.FloatType(), _STREAM_WIDTH).as_pointer()
        value = builder.load(builder.bitcast(builder.gep(src_data, [args[2]]), vector), align=4)
        store = builder.store(value, builder.bitcast(builder.gep(dst_data, [args[2]]), vector),
                              align=64)
        store.set_metadata("nontemporal",
                           builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return types.void(dst, src, i), codegen


@intrinsic
def _store_fence(typingctx):
    """Orders the calling thread's non-temporal stores before its later stores (x86 sfence, a
    full fence elsewhere), so a thread that synchronises with it afterwards sees them."""
    def codegen(context, builder, signature, args):
        if _X86:
            sfence = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse.sfence")
            builder.call(sfence, [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@njit(inline="always", error_model="numpy")
def _copy_run(dst, src, lo, hi, stream):
    """dst[lo:hi] = src[lo:hi] (flat float32, uint64 bounds). With ``stream`` the 64-byte
    aligned lines of dst take non-temporal stores, the ragged ends ordinary ones; the caller
    then runs _store_fence before its task ends."""
    i = lo
    if stream:
        offset = (_u(dst.ctypes.data) + lo * _u(4)) % _u(64)
        # A float32 array not 4-byte aligned (a raw buffer view) never lines up: all ordinary.
        head = min(hi, lo + (_u(64) - offset) % _u(64) // _u(4)) if offset % _u(4) == 0 else hi
        while i < head:
            dst[i] = src[i]
            i += _u(1)
        while i + _u(_STREAM_WIDTH) <= hi:
            _stream_line(dst, src, i)
            i += _u(_STREAM_WIDTH)
    while i < hi:
        dst[i] = src[i]
        i += _u(1)


@njit(inline="always", error_model="numpy")
def _affine_copy_block(x, s, t, y, x_copy, copy, stream, dim, inner, b):
    """Block b of flat views: x_copy = x if ``copy`` (before y may overwrite x), then
    y = x · s[d] + t[d] run by run of one plane (s or t may be a 1-element stand-in)."""
    lo, hi = _block(b, x.shape[0])
    if copy:
        _copy_run(x_copy, x, lo, hi, stream)
    i = lo
    while i < hi:
        od = i // _u(inner)
        end = min(hi, (od + _u(1)) * _u(inner))
        d = od % _u(dim)
        factor = s[d % _u(s.shape[0])]
        value = t[d % _u(t.shape[0])]
        for k in range(i, end):
            y[k] = x[k] * factor + value
        i = end
    if copy and stream:
        _store_fence()


@njit(inline="always", error_model="numpy")
def _affine_copy_blocks(x, s, t, y, x_copy, copy, dim, inner):
    n = x.shape[0]
    blocks = (n + BLOCK - 1) // BLOCK
    if n < PARALLEL_MIN:
        for b in range(blocks):
            _affine_copy_block(x, s, t, y, x_copy, copy, False, dim, inner, b)
    else:
        stream = n >= STREAM_MIN
        for b in prange(blocks):
            _affine_copy_block(x, s, t, y, x_copy, copy, stream, dim, inner, b)


@njit(cache=True, parallel=True, error_model="numpy")
def axis_affine(x, s, t, y, x_copy):
    """x_copy = x, then y[o, d, i] = x[o, d, i] · s[d] + t[d] in one pass over x.

    x, y, x_copy: (outer, dim, inner); s, t: (dim,) or (1,) (one value for every d). y may be
    x; pass y as x_copy for no copy, else x_copy must alias neither. The product is rounded
    before the sum (no fused multiply-add), so Scale with bias_term gives axis_scale then
    axis_bias to the bit; t = [−0.0] gives axis_scale. Large copies bypass the cache (NOTE above).
    """
    dim, inner = x.shape[1], x.shape[2]
    xf = x.reshape(-1)
    copy = not _same(x_copy, y)
    if _same(x, y):
        _affine_copy_blocks(xf, s, t, xf, x_copy.reshape(-1), copy, dim, inner)
    else:
        _affine_copy_blocks(xf, s, t, y.reshape(-1), x_copy.reshape(-1), copy, dim, inner)


@njit(inline="always", error_model="numpy")
def _reduce(kind, a, b, accumulate, out):
    """out[d] (+)= Σ term over a[:, d, :] (and b) for every d, in float64, rounded once."""
    dim, inner = a.shape[1], a.shape[2]
    af = a.reshape(-1)
    bf = b.reshape(-1)
    if a.size < PARALLEL_MIN:
        for d in range(dim):
            acc = _axis_sum_index(kind, af, bf, d, dim, inner)
            out[d] = np.float32(out[d] + acc) if accumulate else np.float32(acc)
    else:
        for d in prange(dim):
            acc = _axis_sum_index(kind, af, bf, d, dim, inner)
            out[d] = np.float32(out[d] + acc) if accumulate else np.float32(acc)


@njit(cache=True, parallel=True, error_model="numpy")
def axis_sum(a, accumulate, out):
    """out[d] (+)= Σ_o Σ_i a[o, d, i]. a: (outer, dim, inner); out: (dim,).

    ``accumulate``: add to out (param diffs) instead of overwriting it (bottom diffs).
    """
    _reduce(SUM, a, a, accumulate, out)


@njit(cache=True, parallel=True, error_model="numpy")
def axis_dot(a, b, accumulate, out):
    """out[d] (+)= Σ_o Σ_i a[o, d, i] · b[o, d, i]. a, b: (outer, dim, inner); out: (dim,)."""
    _reduce(DOT, a, b, accumulate, out)


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
