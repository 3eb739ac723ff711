"""Vectorisable float32 elementary functions for the kernels' inner loops.

numba has no vector math library here: ``np.exp`` on a float32 is a scalar libm call, which
stops LLVM from vectorising the loop around it. The functions below are float32 arithmetic,
fused multiply-adds, compare-selects and integer/float bit casts (small LLVM intrinsics
defined here), which LLVM vectorises once they are inlined into a loop.

``exp_nonpositive(x)``: e^x for x ≤ 0, as softmax needs it (x − max ≤ 0). Range reduction
x = n·ln2 + r with |r| ≤ ln2/2, n = round(x / ln2), by a two-constant (Cody–Waite) split of
ln2; e^r = 1 + r + r²·q(r), q a degree-4 polynomial fitted for minimal relative error on
[−ln2/2, ln2/2] (residual 3e-9); 2^n built from its exponent bits. Every float32 x in
[ln(FLT_MIN), 0] gives a result within 1.02 ulp of e^x (all 1.1e9 of them checked once; 22 are
above 1 ulp; tests/kernels/test_fastmath.py checks every 97th); e^0 = 1 exactly; NaN → NaN;
−inf → 0. About 0.22 ns per element in a vectorised loop here (libm expf: 2.5–6 ns).

``range_max``, ``range_sum``, ``range_dot``: reductions over a flat range that LLVM vectorises.

NOTE: below ln(FLT_MIN) ≈ −87.34 the result is 0 (np.exp gives a subnormal there, at most
1.2e-38): a softmax term that small is far below its sum's rounding, so nothing visible changes.

NOTE: a ``cache=True`` kernel stores these functions compiled into its own cache entry, and
Numba checks only the kernel's source file for changes: after editing this module, touch the
modules that use it (softmax.py) or their cached versions stay stale.
"""

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

_LOG2E = np.float32(1.4426950408889634)
# ln2 = _LN2_HI + _LN2_LO; _LN2_HI has 15 significant bits, so n·_LN2_HI is exact for |n| < 2^9.
_LN2_HI = np.float32(22713.0 / 32768.0)
_LN2_LO = np.float32(np.log(2.0) - 22713.0 / 32768.0)
# t = x·log2(e) + 1.5·2^23 rounds to an integer (the float32 ulp there is 1), so t − that is
# round(x / ln2); the extra 127 (the exponent bias) leaves n + 127 in the low bits of t's
# pattern, which a shift by 23 turns into the bits of 2^n.
_SHIFTER = np.float32(12582912.0 + 127.0)
# ln(FLT_MIN): below it 2^n would need a subnormal exponent.
_EXP_LO = np.float32(-87.33654)
# q(r) = (e^r − 1 − r) / r², fitted in float64 (iteratively reweighted least squares towards
# minimax relative error of e^r, on Chebyshev nodes), rounded to float32.
_Q0 = np.float32(0.4999999403953552)
_Q1 = np.float32(0.1666652113199234)
_Q2 = np.float32(0.04166838899254799)
_Q3 = np.float32(0.008368710055947304)
_Q4 = np.float32(0.001381461275741458)


@intrinsic
def _float_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bit pattern is the int32 ``bits``."""
    if not isinstance(bits, types.Integer) or bits.bitwidth != 32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _bits_of_float(typingctx, x):
    """The IEEE-754 bit pattern of the float32 ``x``, as an int32."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(x), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """a·b + c for float32 operands, rounded once (llvm.fma; one instruction where the CPU has
    FMA). Explicit, so the rounding does not depend on compiler flags."""
    if not (a == b == c == types.float32):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return types.float32(a, b, c), codegen


@njit(inline="always", error_model="numpy")
def exp_nonpositive(x):
    """e^x for a float32 x ≤ 0 (see the module docstring); branch-free, so loops vectorise."""
    below = x < _EXP_LO
    xc = _EXP_LO if below else x                 # keeps n in range; NaN stays NaN
    t = fma(xc, _LOG2E, _SHIFTER)
    n = t - _SHIFTER
    r = fma(n, -_LN2_HI, xc)
    r = fma(n, -_LN2_LO, r)
    q = fma(fma(fma(fma(_Q4, r, _Q3), r, _Q2), r, _Q1), r, _Q0)
    p = fma(q * r, r, r) + np.float32(1.0)
    two_n = _float_from_bits(np.int32(_bits_of_float(t) << np.int32(23)))
    return np.float32(0.0) if below else p * two_n


# ---- reductions over a flat range ------------------------------------------------------------

@njit(inline="always", error_model="numpy")
def _ordered_key(bits):
    """A float32's bits as an int32 that orders like the float (−0 just below +0): flipping the
    magnitude bits of negatives. Applied twice it gives the bits back."""
    return np.int32(bits ^ ((bits >> np.int32(31)) & np.int32(0x7FFFFFFF)))


@njit(error_model="numpy")
def range_max(a, lo, hi):
    """max(a[lo:hi]) of a flat float32 array, lo < hi (uint64 bounds).

    NOTE: an integer max over order-preserving keys: LLVM vectorises integer max reductions
    without fast-math flags, but not the float compare-select one. The maximum is exact and
    order-free; with a NaN in the range the result is that NaN or another element (callers
    propagate the NaN through the element itself).
    """
    m = _ordered_key(_bits_of_float(a[lo]))
    for i in range(lo, hi):
        key = _ordered_key(_bits_of_float(a[i]))
        m = max(m, key)
    return _float_from_bits(_ordered_key(m))


@njit(fastmath={"reassoc"}, error_model="numpy")
def range_sum(a, lo, hi):
    """Σ a[lo:hi] of a flat float32 array in float32 (uint64 bounds).

    NOTE: ``reassoc`` (this function only) lets LLVM keep vector partial sums; the order is
    then fixed by the compiled code and the range, not by the thread count.
    """
    s = np.float32(0.0)
    for i in range(lo, hi):
        s += a[i]
    return s


@njit(fastmath={"reassoc"}, error_model="numpy")
def range_dot(a, b, lo, hi):
    """Σ a[i]·b[i] over [lo, hi) of flat float32 arrays in float32; order as ``range_sum``."""
    s = np.float32(0.0)
    for i in range(lo, hi):
        s += a[i] * b[i]
    return s
