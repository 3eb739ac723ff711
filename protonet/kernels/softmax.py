"""Softmax and the loss and metric kernels built on scores, labels and targets.

Notation: a blob is viewed around its class axis as ``(outer, c, inner)``: ``outer`` is the
product of the axes before it, ``c`` the number of classes, ``inner`` the product of the axes
after it; each of the ``outer · inner`` positions ``p = o · inner + k`` is an independent
distribution over ``c`` values, ``inner`` apart in memory, with its label at ``label[p]``. The
2-D losses (Hinge, MultinomialLogistic, Contrastive) view a blob as ``(n, dim)``: ``n`` = num
(the first axis), ``dim`` = count / n.

Labels arrive as float32 and are truncated toward zero, as Caffe's ``static_cast<int>`` does.
Kernels do not validate: the layer calls :func:`check_labels` first, so every label that is not
ignored is in range when the other kernels index with it. Arithmetic is float32, as Caffe's, and
sums over labels run in index order in a float32 accumulator, as Caffe's loops do; comparisons
follow ``std::max`` (``(a < b) ? b : a``) so that NaN propagates as it does in Caffe.

The softmax kernels vectorise along the contiguous axis: over c, one row at a time, when inner
= 1 (a classifier's scores), else across a chunk of ``SOFTMAX_CHUNK`` positions while the
classes go by. e^x is ``fastmath.exp_nonpositive`` (within 1 ulp; np.exp would be a scalar libm
call). They run on the calling thread below ``PARALLEL_MIN`` elements, as the element-wise
kernels do: both paths call the same helpers, so the results are identical.
"""

import math

import numpy as np
from numba import njit, prange
from numba import uint64 as _u

from .elementwise import PARALLEL_MIN
from .fastmath import exp_nonpositive, range_dot, range_max, range_sum

# Caffe quirk: SoftmaxWithLoss clamps the probability inside log() at FLT_MIN
# (softmax_loss_layer.cpp) but InfogainLoss and MultinomialLogisticLoss at kLOG_THRESHOLD = 1e-20
# (defined in loss_layer.hpp).
FLT_MIN = float(np.finfo(np.float32).tiny)
LOG_THRESHOLD = 1e-20
# Caffe quirk: ContrastiveLoss's gradient divides by d + 1e-4 rather than d, so it is not quite
# the derivative of its loss (contrastive_loss_layer.cpp).
CONTRASTIVE_EPS = 1e-4
# Positions per task of a softmax over a strided class axis (inner > 1): the running max and sum
# of a chunk stay in L1 while the classes go by.
SOFTMAX_CHUNK = 1024
_INT_LIMIT = 2147483648.0


@njit(cache=True, inline="always")
def _is_ignored(value, has_ignore, ignore_label):
    """Whether a float label truncates to ``ignore_label`` (never for NaN or out-of-int values)."""
    if not has_ignore:
        return False
    if not (-_INT_LIMIT < value < _INT_LIMIT):
        return False
    return int(value) == ignore_label


# ---- labels ----------------------------------------------------------------------------------

@njit(cache=True)
def check_labels(label, num_classes, has_ignore, ignore_label):
    """Count the labels that are not ignored and find the first one outside [0, num_classes).

    label (m,) float32. Returns ``(valid_count, first_bad)``: ``first_bad`` is the index of the
    first non-ignored label whose truncation is not in [0, num_classes) (NaN and values beyond
    int32 included), or -1; ``valid_count`` counts the non-ignored labels before it. Writes
    nothing.
    """
    valid = 0
    for i in range(label.shape[0]):
        value = label[i]
        if _is_ignored(value, has_ignore, ignore_label):
            continue
        if not (-_INT_LIMIT < value < _INT_LIMIT):
            return valid, i
        v = int(value)
        if v < 0 or v >= num_classes:
            return valid, i
        valid += 1
    return valid, -1


# ---- Softmax ---------------------------------------------------------------------------------

@njit(inline="always")
def _same(a, b):
    """Whether two arrays start at the same address (an in-place call)."""
    return a.ctypes.data == b.ctypes.data


@njit(cache=True, parallel=True, error_model="numpy")
def softmax_forward(x, out):
    """out = exp(x − max_c x) / Σ_c exp(x − max_c x) over the class axis.

    x, out (outer, c, inner) float32, C-contiguous; out written, may alias x. The max is
    subtracted first, as Caffe's softmax_layer.cpp does; e^(x − max) is ``exp_nonpositive``
    (within 1.02 ulp of e^x). inner = 1 runs row by row (``_softmax_rows``), inner > 1 on
    chunks of positions vectorised along the contiguous inner axis (``_softmax_columns``).

    NOTE: the exponentials are multiplied by 1/Σ where Caffe divides by Σ: one more rounding
    (≤ 1 ulp), but a multiply instead of a divide per element (~1 µs of the ~6 µs at 16×1000).
    """
    outer, c, inner = x.shape
    if x.size == 0:
        return
    src = x.reshape(x.size)
    dst = out.reshape(out.size)
    chunks = (inner + SOFTMAX_CHUNK - 1) // SOFTMAX_CHUNK
    if inner == 1:
        if x.size < PARALLEL_MIN:
            _softmax_rows(src, dst, c, 0, outer)
        else:
            for o in prange(outer):
                _softmax_rows(src, dst, c, o, o + 1)
    elif x.size < PARALLEL_MIN:
        for task in range(outer * chunks):
            _softmax_columns(src, dst, c, inner, task // chunks, task % chunks)
    else:
        for task in prange(outer * chunks):
            _softmax_columns(src, dst, c, inner, task // chunks, task % chunks)


@njit(error_model="numpy")
def _softmax_rows(src, dst, c, o0, o1):
    """Softmax of rows o0..o1 − 1 (inner = 1) of flat views.

    NOTE: the task functions of these kernels are plain ``njit`` functions, shared by the
    serial and the ``prange`` loop (one compiled copy, a fraction of the cold compile time);
    in place they pass the one array twice to the inlined loops, where LLVM then sees a single
    pointer (see elementwise.py's NOTE on aliasing).
    """
    if _same(src, dst):
        for o in range(o0, o1):
            _softmax_row(src, src, _u(o * c), _u(o * c + c))
    else:
        for o in range(o0, o1):
            _softmax_row(src, dst, _u(o * c), _u(o * c + c))


@njit(inline="always", error_model="numpy")
def _softmax_row(src, dst, lo, hi):
    """Softmax of the contiguous row src[lo:hi] into dst[lo:hi] (uint64 bounds).

    NOTE: the sum runs in vector partial sums (``range_sum``; Caffe's own sum is a BLAS gemv,
    whose order is not sequential either).
    """
    m = range_max(src, lo, hi)
    for i in range(lo, hi):
        dst[i] = exp_nonpositive(src[i] - m)
    r = np.float32(1.0) / range_sum(dst, lo, hi)
    for i in range(lo, hi):
        dst[i] = dst[i] * r


@njit(inline="always", error_model="numpy")
def _chunk_span(chunk, inner):
    """(first position, count) of one chunk of the inner axis."""
    k0 = chunk * SOFTMAX_CHUNK
    return k0, min(SOFTMAX_CHUNK, inner - k0)


@njit(error_model="numpy")
def _softmax_columns(src, dst, c, inner, o, chunk):
    """Softmax over c of one chunk of the positions of x[o, :, :] (flat views)."""
    if _same(src, dst):
        _softmax_chunk(src, src, c, inner, o, chunk)
    else:
        _softmax_chunk(src, dst, c, inner, o, chunk)


@njit(inline="always", error_model="numpy")
def _softmax_chunk(src, dst, c, inner, o, chunk):
    """_softmax_columns: the max and the sum of each position run over j in order, vectorised
    across the positions of the chunk."""
    k0, count = _chunk_span(chunk, inner)
    m = np.empty(count, np.float32)
    s = np.empty(count, np.float32)
    base = o * c * inner + k0
    for k in range(count):
        m[k] = src[_u(base + k)]
        s[k] = np.float32(0.0)
    for j in range(1, c):
        at = base + j * inner
        for k in range(count):
            v = src[_u(at + k)]
            m[k] = v if m[k] < v else m[k]          # std::max, as Caffe
    for j in range(c):
        at = base + j * inner
        for k in range(count):
            e = exp_nonpositive(src[_u(at + k)] - m[k])
            dst[_u(at + k)] = e
            s[k] += e
    for k in range(count):
        s[k] = np.float32(1.0) / s[k]
    for j in range(c):
        at = base + j * inner
        for k in range(count):
            dst[_u(at + k)] = dst[_u(at + k)] * s[k]


@njit(cache=True, parallel=True, error_model="numpy")
def softmax_backward(y, dy, dx):
    """dx = (dy − Σ_c dy · y) · y, the softmax gradient given its output y.

    y, dy, dx (outer, c, inner) float32, C-contiguous; dx written, may alias dy. The dot runs
    in vector partial sums for inner = 1 (``range_dot``), over c in order otherwise.
    """
    outer, c, inner = y.shape
    if y.size == 0:
        return
    yf = y.reshape(y.size)
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    chunks = (inner + SOFTMAX_CHUNK - 1) // SOFTMAX_CHUNK
    if inner == 1:
        if y.size < PARALLEL_MIN:
            _softmax_backward_rows(yf, dyf, dxf, c, 0, outer)
        else:
            for o in prange(outer):
                _softmax_backward_rows(yf, dyf, dxf, c, o, o + 1)
    elif y.size < PARALLEL_MIN:
        for task in range(outer * chunks):
            _softmax_backward_columns(yf, dyf, dxf, c, inner, task // chunks, task % chunks)
    else:
        for task in prange(outer * chunks):
            _softmax_backward_columns(yf, dyf, dxf, c, inner, task // chunks, task % chunks)


@njit(error_model="numpy")
def _softmax_backward_rows(y, dy, dx, c, o0, o1):
    """softmax_backward of rows o0..o1 − 1 (inner = 1) of flat views."""
    if _same(dy, dx):
        for o in range(o0, o1):
            _softmax_backward_row(y, dy, dy, _u(o * c), _u(o * c + c))
    else:
        for o in range(o0, o1):
            _softmax_backward_row(y, dy, dx, _u(o * c), _u(o * c + c))


@njit(inline="always", error_model="numpy")
def _softmax_backward_row(y, dy, dx, lo, hi):
    """softmax_backward of one contiguous row [lo, hi) of flat views."""
    dot = range_dot(dy, y, lo, hi)
    for i in range(lo, hi):
        dx[i] = (dy[i] - dot) * y[i]


@njit(error_model="numpy")
def _softmax_backward_columns(y, dy, dx, c, inner, o, chunk):
    """softmax_backward of one chunk of the positions of [o, :, :] (flat views)."""
    if _same(dy, dx):
        _softmax_backward_chunk(y, dy, dy, c, inner, o, chunk)
    else:
        _softmax_backward_chunk(y, dy, dx, c, inner, o, chunk)


@njit(inline="always", error_model="numpy")
def _softmax_backward_chunk(y, dy, dx, c, inner, o, chunk):
    """_softmax_backward_columns, vectorised across the positions of the chunk."""
    k0, count = _chunk_span(chunk, inner)
    dot = np.empty(count, np.float32)        # not np.zeros: that would be a parfor
    base = o * c * inner + k0
    for k in range(count):
        dot[k] = np.float32(0.0)
    for j in range(c):
        at = base + j * inner
        for k in range(count):
            dot[k] += dy[_u(at + k)] * y[_u(at + k)]
    for j in range(c):
        at = base + j * inner
        for k in range(count):
            e = _u(at + k)
            dx[e] = (dy[e] - dot[k]) * y[e]


# ---- SoftmaxWithLoss and InfogainLoss --------------------------------------------------------

@njit(cache=True)
def softmax_loss_forward(prob, label, has_ignore, ignore_label):
    """Σ −log(max(prob[o, label, k], FLT_MIN)) over the non-ignored positions, unnormalised.

    prob (outer, c, inner), label (outer · inner,) float32, labels checked. Returns the float32
    sum, accumulated in Caffe's order. Writes nothing.
    """
    outer, c, inner = prob.shape
    tiny = np.float32(FLT_MIN)
    loss = np.float32(0.0)
    for o in range(outer):
        for k in range(inner):
            value = label[o * inner + k]
            if _is_ignored(value, has_ignore, ignore_label):
                continue
            q = prob[o, int(value), k]
            if q < tiny:
                q = tiny
            loss -= np.log(q)
    return loss


@njit(cache=True, parallel=True)
def softmax_loss_backward(prob, label, has_ignore, ignore_label, scale, dx):
    """dx = scale · (prob − onehot(label)), and 0 at every class of an ignored position.

    prob, dx (outer, c, inner), label (outer · inner,) float32, labels checked; scale float32
    (loss weight / normaliser). dx written, may alias prob.
    """
    outer, c, inner = prob.shape
    if prob.size < PARALLEL_MIN:
        for p in range(outer * inner):
            _softmax_loss_backward_one(prob, label, has_ignore, ignore_label, scale, dx, p)
    else:
        for p in prange(outer * inner):
            _softmax_loss_backward_one(prob, label, has_ignore, ignore_label, scale, dx, p)


@njit(cache=True, inline="always")
def _softmax_loss_backward_one(prob, label, has_ignore, ignore_label, scale, dx, p):
    """softmax_loss_backward at position p = o · inner + k."""
    c, inner = prob.shape[1], prob.shape[2]
    o = p // inner
    k = p - o * inner
    value = label[p]
    if _is_ignored(value, has_ignore, ignore_label):
        for j in range(c):
            dx[o, j, k] = 0.0
        return
    v = int(value)
    one = np.float32(1.0)
    for j in range(c):
        g = prob[o, j, k]
        if j == v:
            g = g - one
        dx[o, j, k] = g * scale


@njit(cache=True)
def infogain_loss_forward(prob, label, h, has_ignore, ignore_label):
    """Σ over non-ignored positions of −Σ_l H[label, l] · log(max(prob[o, l, k], 1e-20)).

    prob (outer, c, inner), label (outer · inner,), h (c, c) float32, labels checked. Returns
    the unnormalised float32 sum in Caffe's order. Writes nothing.
    """
    outer, c, inner = prob.shape
    threshold = np.float32(LOG_THRESHOLD)
    loss = np.float32(0.0)
    for o in range(outer):
        for k in range(inner):
            value = label[o * inner + k]
            if _is_ignored(value, has_ignore, ignore_label):
                continue
            v = int(value)
            for j in range(c):
                q = prob[o, j, k]
                if q < threshold:
                    q = threshold
                loss -= h[v, j] * np.log(q)
    return loss


@njit(cache=True, parallel=True)
def infogain_loss_backward(prob, label, h, h_row_sums, has_ignore, ignore_label, scale, dx):
    """dx = scale · (prob · Σ_l H[label, l] − H[label, :]), and 0 at ignored positions.

    prob, dx (outer, c, inner), label (outer · inner,), h (c, c), h_row_sums (c,) float32,
    labels checked; scale float32. dx written, may alias prob.
    """
    outer, c, inner = prob.shape
    for p in prange(outer * inner):
        o = p // inner
        k = p - o * inner
        value = label[p]
        if _is_ignored(value, has_ignore, ignore_label):
            for j in range(c):
                dx[o, j, k] = 0.0
            continue
        v = int(value)
        for j in range(c):
            dx[o, j, k] = (prob[o, j, k] * h_row_sums[v] - h[v, j]) * scale


# ---- SigmoidCrossEntropyLoss -----------------------------------------------------------------

@njit(cache=True)
def sigmoid_cross_entropy_forward(x, target, has_ignore, ignore_label, sigmoid):
    """Write sigmoid = σ(x) and return (Σ loss, valid_count) over the non-ignored targets.

    x, target, sigmoid (m,) float32; sigmoid written (every element). The per-element loss is
    Caffe's overflow-free form −[x · (t − [x ≥ 0]) − log(1 + exp(x − 2x · [x ≥ 0]))], summed in
    float32 in index order; σ(x) = 0.5 · tanh(0.5 x) + 0.5 in double, rounded, as Caffe's
    SigmoidLayer computes it.
    """
    one = np.float32(1.0)
    two = np.float32(2.0)
    loss = np.float32(0.0)
    valid = 0
    for i in range(x.shape[0]):
        xi = x[i]
        sigmoid[i] = 0.5 * math.tanh(0.5 * np.float64(xi)) + 0.5
        if _is_ignored(target[i], has_ignore, ignore_label):
            continue
        positive = one if xi >= 0 else np.float32(0.0)
        loss -= xi * (target[i] - positive) - np.log(one + np.exp(xi - two * xi * positive))
        valid += 1
    return loss, valid


@njit(cache=True, parallel=True)
def sigmoid_cross_entropy_backward(sigmoid, target, has_ignore, ignore_label, scale, dx):
    """dx = scale · (σ(x) − t), and 0 where the target is ignored.

    sigmoid, target, dx (m,) float32; scale float32. dx written, may alias sigmoid.
    """
    for i in prange(sigmoid.shape[0]):
        if _is_ignored(target[i], has_ignore, ignore_label):
            dx[i] = 0.0
        else:
            dx[i] = (sigmoid[i] - target[i]) * scale


# ---- HingeLoss -------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def hinge_margins(x, label, margins):
    """margins[i, j] = max(0, 1 + s · x[i, j]) with s = −1 at j = label[i] and +1 elsewhere.

    x, margins (n, dim), label (≥ n,) float32, labels checked. margins written, must not alias
    x. A NaN margin becomes 0, as Caffe's std::max(0, ·) makes it.
    """
    n, dim = x.shape
    one = np.float32(1.0)
    for i in prange(n):
        v = int(label[i])
        for j in range(dim):
            value = x[i, j]
            if j == v:
                value = -value
            m = one + value
            margins[i, j] = m if 0 < m else 0.0


@njit(cache=True, parallel=True)
def hinge_backward(margins, label, squared, scale, dx):
    """dx = scale · sign(m̃) (L1) or scale · m̃ (L2, ``squared``), m̃ = margins with the label
    column negated.

    margins, dx (n, dim), label (≥ n,) float32, labels checked; scale float32 (already holding
    L2's factor 2). dx written, may alias margins.
    """
    n, dim = margins.shape
    for i in prange(n):
        v = int(label[i])
        for j in range(dim):
            m = margins[i, j]
            if j == v:
                m = -m
            if squared:
                dx[i, j] = m * scale
            else:
                sign = np.float32(0.0)
                if 0 < m:
                    sign = np.float32(1.0)
                elif m < 0:
                    sign = np.float32(-1.0)
                dx[i, j] = sign * scale


# ---- MultinomialLogisticLoss -----------------------------------------------------------------

@njit(cache=True)
def multinomial_logistic_forward(prob, label):
    """Σ_i −log(max(prob[i, label[i]], 1e-20)), unnormalised.

    prob (n, dim), label (≥ n,) float32, labels checked. Returns the float32 sum in index order.
    """
    threshold = np.float32(LOG_THRESHOLD)
    loss = np.float32(0.0)
    for i in range(prob.shape[0]):
        q = prob[i, int(label[i])]
        if q < threshold:
            q = threshold
        loss -= np.log(q)
    return loss


@njit(cache=True, parallel=True)
def multinomial_logistic_backward(prob, label, scale, dx):
    """dx[i, label[i]] = scale / max(prob[i, label[i]], 1e-20), 0 elsewhere.

    prob, dx (n, dim), label (≥ n,) float32, labels checked; scale float32 (−loss weight / n).
    dx written, must not alias prob.
    """
    n, dim = prob.shape
    threshold = np.float32(LOG_THRESHOLD)
    for i in prange(n):
        v = int(label[i])
        for j in range(dim):
            dx[i, j] = 0.0
        q = prob[i, v]
        if q < threshold:
            q = threshold
        dx[i, v] = scale / q


# ---- ContrastiveLoss -------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _is_similar(value):
    """Caffe's static_cast<int>(sim) != 0; NaN and huge values count as similar, as on x86."""
    return not (-1.0 < value < 1.0)


@njit(cache=True, parallel=True)
def contrastive_forward(a, b, sim, margin, legacy, diff, dist_sq):
    """Write diff = a − b and dist_sq = ‖a − b‖² per row; return the unnormalised loss sum.

    a, b, diff (n, c), sim (≥ n,), dist_sq (n,) float32; margin float32. A similar pair adds
    d²; a dissimilar pair adds max(margin − d, 0)² or, ``legacy``, max(margin − d², 0). The sum
    runs in float32 in index order. diff and dist_sq must not alias a or b.
    """
    n, c = a.shape
    for i in prange(n):
        acc = np.float32(0.0)
        for j in range(c):
            d = a[i, j] - b[i, j]
            diff[i, j] = d
            acc += d * d
        dist_sq[i] = acc
    zero = np.float32(0.0)
    loss = np.float32(0.0)
    for i in range(n):
        if _is_similar(sim[i]):
            loss += dist_sq[i]
        elif legacy:
            t = margin - dist_sq[i]
            loss += zero if t < zero else t
        else:
            t = margin - np.sqrt(dist_sq[i])
            t = zero if t < zero else t
            loss += t * t
    return loss


@njit(cache=True, parallel=True)
def contrastive_backward(diff, dist_sq, sim, margin, legacy, alpha, dx):
    """Gradient of the contrastive loss for one side; ``alpha`` = ±loss weight / n.

    diff, dx (n, c), dist_sq (n,), sim (≥ n,) float32; margin, alpha float32. Similar rows get
    alpha · diff; dissimilar rows with a positive margin term get beta · diff with beta = −alpha
    (legacy) or −alpha · (margin − d) / (d + 1e-4); the rest 0. dx written, must not alias diff.
    """
    n, c = diff.shape
    eps = np.float32(CONTRASTIVE_EPS)
    for i in prange(n):
        if _is_similar(sim[i]):
            for j in range(c):
                dx[i, j] = alpha * diff[i, j]
            continue
        if legacy:
            mdist = margin - dist_sq[i]
            beta = -alpha
        else:
            dist = np.sqrt(dist_sq[i])
            mdist = margin - dist
            beta = -alpha * mdist / (dist + eps)
        if mdist > 0:
            for j in range(c):
                dx[i, j] = beta * diff[i, j]
        else:
            for j in range(c):
                dx[i, j] = 0.0


# ---- Accuracy --------------------------------------------------------------------------------

@njit(cache=True)
def accuracy_forward(x, label, top_k, has_ignore, ignore_label, class_counts, class_accuracy):
    """Top-k accuracy over the non-ignored positions; returns it (0 when every label is ignored).

    x (outer, c, inner), label (outer · inner,) float32, labels checked. A position is correct
    when fewer than top_k other classes score ≥ its true class (ties count against it, as in
    Caffe). class_counts (c,) is scratch; class_accuracy (c,) is written with each class's
    accuracy (0 for a class with no labels). Neither may alias x.
    """
    outer, c, inner = x.shape
    for j in range(c):
        class_counts[j] = 0.0
        class_accuracy[j] = 0.0
    hits = np.float32(0.0)
    count = 0
    for o in range(outer):
        for k in range(inner):
            value = label[o * inner + k]
            if _is_ignored(value, has_ignore, ignore_label):
                continue
            v = int(value)
            class_counts[v] += 1.0
            true_score = x[o, v, k]
            better = -1
            j = 0
            # Caffe quirk: a class scoring equal to the true one counts as better
            # (accuracy_layer.cpp).
            while j < c and better < top_k:
                if x[o, j, k] >= true_score:
                    better += 1
                j += 1
            if better < top_k:
                hits += np.float32(1.0)
                class_accuracy[v] += 1.0
            count += 1
    for j in range(c):
        if class_counts[j] != 0:
            class_accuracy[j] = class_accuracy[j] / class_counts[j]
    if count == 0:
        return np.float32(0.0)
    return hits / np.float32(count)
