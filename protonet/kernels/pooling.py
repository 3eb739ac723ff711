"""Pooling kernels: MAX, AVE and STOCHASTIC over NCHW planes, as Caffe computes them.

Notation: ``n c h w`` bottom shape, ``oh ow`` pooled (top) height and width, ``kh kw`` kernel,
``sh sw`` stride, ``ph pw`` padding; ``oy ox`` index a pooled position, ``y x`` a bottom
position. Spatial parameters come as tuples: ``ksize=(kh, kw)``, ``stride=(sh, sw)``,
``pad=(ph, pw)``. The caller computes ``oh ow`` (Caffe's ceil-then-clip rule lives in the
Pooling layer) and validates everything; kernels check nothing.

MAX and AVE work in *phase space* (space-to-depth). A plane, padded with a fill value (-inf for
MAX, which never beats Caffe's -FLT_MAX start; 0 for AVE, which adds nothing), is cut into
``sh·sw`` phase planes, phase (py, px) holding the padded positions (i·sh + py, j·sw + px).
Window element (ky, kx) of output (oy, ox) is then element (oy + ky//sh, ox + kx//sw) of phase
(ky % sh, kx % sw): with phase rows ``ws`` wide, every window element lies at a fixed offset
from the output's own flat position ``oy·ws + ox``. So one loop over the flat positions of a
whole chunk of planes computes every window: unit-stride loads, long loops that vectorise even
for 4-wide rows, no border cases (phase columns past ``ow`` and rows past ``oh`` are computed
and dropped). Each window is still scanned in Caffe's row-major order, so results are
bit-identical to Caffe's loops: MAX keeps the first maximum (strict ``>``; NaN never wins) and
AVE adds the padding's zeros, which leave a float sum unchanged. The stride-2 phase split loads
pairs of neighbours, which LLVM shuffles apart; a stride-2 load on its own becomes a gather,
several times slower. Stride 1 without padding needs no split: the bottom is its own phase.

AVE backward runs the same way in reverse: the shares dy / pool size go into a zero-bordered
grid, each phase element sums the shares of the windows that cover it (in increasing (oy, ox),
Caffe's order), and the phases are interleaved back into the bottom diff.

Windows that are the whole plane (global pooling, or a kernel equal to the bottom without
padding) take a direct path: one scan or sum per plane.

MAX 3×3 with stride 1 or 2 (most nets' pooling) is separable: each bottom row's maxima over
the three columns of every window come first, then the first row holding the largest of the
three. Keeping the first column on ties and then the first row finds the same element as
Caffe's row-major scan. The row maxima go into row phases (like the column phases above), so
the pass down runs over whole bands of output rows at fixed offsets. Per output that is 6
compares instead of 8, and every pass is unit-stride.

AVE 3×3 with stride 2, no padding and an even width (CIFAR-10's pool2/pool3) splits columns
in one flat pass over whole chunks of planes and sums windows at every bottom row, keeping
every other row: on 16×16 planes the per-row loops of the phase split cost more than that.

MAX records each maximum as Caffe's in-plane index ``y·w + x`` (int32; -1 marks "no maximum":
window empty, all -inf or NaN, where the output is -FLT_MAX as in Caffe); a size-0 mask records
nothing (a net that never runs backward). ``max_pool_backward`` routes by such indices, also
when they come as float32 from a mask top or from STOCHASTIC's samples.

Parallelism: tasks are chunks of whole planes (``prange`` from ``PARALLEL_MIN`` bottom
elements on, ``FORWARD_PARALLEL_MIN`` for the forward passes; serially below: waking the
thread pool costs more than pooling a small blob);
a task reads and writes only its own planes, and a plane's arithmetic does not depend on the
chunk it lands in, so results do not depend on the thread count. Backward kernels either
overwrite ``bottom_diff`` (``accumulate=False``) or add into it (``accumulate=True``: SPP sums
its pyramid levels this way).

``error_model="numpy"`` everywhere: a float division by zero gives inf/NaN as in C++, never a
Python exception.

NOTE: flat views are indexed through ``_u`` (uint64). With signed indices Numba tests every
access for a negative (wrap-around) index, which costs more than the pooling arithmetic and
stops vectorization. Every index is non-negative.
"""

import numpy as np
from numba import njit, prange
from numba import uint64 as _u

from .elementwise import PARALLEL_MIN

# Caffe quirk: max pooling starts every output at -FLT_MAX, not -inf (pooling_layer.cpp).
_NEG_FLT_MAX = np.float32(-3.4028234663852886e38)
# MAX's padding: never > -FLT_MAX, so never chosen and never a tie.
_NEG_INF = np.float32(-np.inf)
_ZERO = np.float32(0.0)
# "No maximum" in the float32 index arrays of the 3×3 MAX path.
_NO_MAX = np.float32(-1.0)
# float32 holds every integer below this exactly (the 3×3 MAX path's in-plane indices).
_FLOAT_EXACT = 1 << 24
# Scratch (float32 elements) of one block of work: its phases and results stay in L1.
BLOCK_ELEMENTS = 1 << 12
# Bottom-row elements (rows · pooled width) per band of the 3×3 MAX path: its horizontal
# maxima stay in L1 for the pass down (ResNet-50 pool1, 112x112, one thread: 4.7 ms in bands
# of 8 output rows, 7.6 ms in whole planes).
BAND_ELEMENTS = 1 << 10
# Forward passes go parallel from this many bottom elements on: below it one thread is faster
# (LeNet pool1 and pool2, 0.7M and 0.2M elements: 130 and 72 us on one thread, 165 and 120 us
# split over two).
FORWARD_PARALLEL_MIN = 1 << 20
# Planes per task of the whole-plane paths.
PLANES_PER_TASK = 256
# Parallel tasks of the blocked paths; each allocates its scratch once.
TASKS = 16

@njit(cache=True, inline="always")
def _window(o, stride, pad, kernel, size):
    """Window [start, end) of pooled index ``o`` along one axis, clipped to the bottom."""
    start = o * stride - pad
    end = min(start + kernel, size)
    return max(start, 0), end


@njit(cache=True, inline="always")
def _ave_extent(o, stride, pad, kernel, size):
    """Caffe's AVE divisor extent along one axis.

    Caffe quirk: the divisor counts padding: the window is clipped to size + pad, not to the
    bottom (pooling_layer.cpp); it can be 0 or negative for an empty window past the end.
    """
    start = o * stride - pad
    return min(start + kernel, size + pad) - start


@njit(cache=True, inline="always")
def _phase_shape(ksize, stride, oh, ow):
    """(npy, npx, my, mx, hs, ws): phases used per axis, window reach in phase rows/columns,
    and the phase plane's extent that covers every window."""
    kh, kw = ksize
    sh, sw = stride
    my = (kh - 1) // sh
    mx = (kw - 1) // sw
    return min(sh, kh), min(sw, kw), my, mx, oh + my, ow + mx


@njit(cache=True, inline="always")
def _covers_plane(ksize, pad, h, w, oh, ow):
    """Whether the single window is the whole plane (global pooling and its equivalents)."""
    return oh == 1 and ow == 1 and pad == (0, 0) and ksize == (h, w)


@njit(cache=True, inline="always")
def _blocks(planes, oh, row_elements, extra_rows):
    """Blocks of work: (planes per block, output rows per block, bands per plane, blocks).

    A block is several whole planes, or one band of a plane's output rows when a plane's
    scratch (``row_elements`` per output row, ``extra_rows`` more rows) exceeds BLOCK_ELEMENTS.
    """
    per_plane = row_elements * (oh + extra_rows)
    if per_plane <= BLOCK_ELEMENTS:
        chunk = min(BLOCK_ELEMENTS // per_plane, planes)
        return chunk, oh, 1, (planes + chunk - 1) // chunk
    rows = min(max(BLOCK_ELEMENTS // row_elements - extra_rows, 1), oh)
    bands = (oh + rows - 1) // rows
    return 1, rows, bands, planes * bands


@njit(cache=True, inline="always")
def _task_blocks(task, tasks, blocks):
    """Blocks [t0, t1) of task ``task`` of ``tasks``."""
    return task * blocks // tasks, (task + 1) * blocks // tasks


@njit(cache=True, inline="always")
def _block(t, planes, oh, chunk, rows, bands):
    """(p0, p1, oy0, oy1) of block ``t``: planes [p0, p1), output rows [oy0, oy1)."""
    p0 = (t // bands) * chunk
    oy0 = (t % bands) * rows
    return p0, min(p0 + chunk, planes), oy0, min(oy0 + rows, oh)


# ---- phase split and merge ----------------------------------------------------------------

@njit(inline="always")
def _valid_columns(w, pw, sw, px, cols):
    """Phase columns [lo, hi) of phase column px whose bottom column j·sw + px − pw exists."""
    lo = min(max(-((px - pw) // sw), 0), cols)
    hi = max(min(-((px - pw - w) // sw), cols), lo)
    return lo, hi


@njit(inline="always")
def _row_to_phases(src, row, w, q, dst, qstride, cols, sw, npx, pw):
    """q[dst + px·qstride + j] = src[row + j·sw + px − pw] where that column exists; the
    other phase columns are left alone (the caller filled them once)."""
    if sw == 2 and npx == 2:
        lo0, hi0 = _valid_columns(w, pw, 2, 0, cols)
        lo1, hi1 = _valid_columns(w, pw, 2, 1, cols)
        lo = max(lo0, lo1)
        hi = max(min(hi0, hi1), lo)
        s0 = _u(row + 2 * lo - pw)
        d0 = _u(dst + lo)
        d1 = _u(dst + qstride + lo)
        for k in range(hi - lo):                   # pairs: LLVM shuffles them apart
            q[d0 + _u(k)] = src[s0 + _u(2 * k)]
            q[d1 + _u(k)] = src[s0 + _u(2 * k + 1)]
        for j in range(lo0, lo):
            q[_u(dst + j)] = src[_u(row + 2 * j - pw)]
        for j in range(lo1, lo):
            q[_u(dst + qstride + j)] = src[_u(row + 2 * j + 1 - pw)]
        for j in range(hi, hi0):
            q[_u(dst + j)] = src[_u(row + 2 * j - pw)]
        for j in range(hi, hi1):
            q[_u(dst + qstride + j)] = src[_u(row + 2 * j + 1 - pw)]
        return
    for px in range(npx):
        lo, hi = _valid_columns(w, pw, sw, px, cols)
        for j in range(lo, hi):
            q[_u(dst + px * qstride + j)] = src[_u(row + j * sw + px - pw)]


@njit(inline="always")
def _plane_to_phases(src, base, h, w, q, qoff, qstride, prow, row0, rows, cols, stride, pad,
                     npy, npx, fill, fill_rows):
    """Split the plane at ``src[base:]`` into phases: phase (py, px) row row0 + i, column j at
    ``q[(py·npx + px)·qstride + qoff + i·prow + j]`` for i < rows, j < cols.

    Only existing bottom positions are written, and, if ``fill_rows``, the rows outside the
    bottom get ``fill``. The other positions (padding columns) are the caller's to fill: they
    are the same in every row, so a scratch of a fixed layout is filled once.
    """
    sh, sw = stride
    ph, pw = pad
    for i in range(rows):
        for py in range(npy):
            y = (row0 + i) * sh + py - ph
            dst = py * npx * qstride + qoff + i * prow
            if 0 <= y < h:
                _row_to_phases(src, base + y * w, w, q, dst, qstride, cols, sw, npx, pw)
            elif fill_rows:
                for px in range(npx):
                    for j in range(cols):
                        q[_u(dst + px * qstride + j)] = fill


@njit(inline="always")
def _row_from_phases(d, row_start, dstride, cols, dst, row, w, sw, npx, pw, accumulate):
    """dst[row + x] = phase value of padded column c = x + pw, ``d[row_start + px·dstride + j]``
    with px = c % sw, j = c // sw; columns in no window (px ≥ npx, or j ≥ cols) get 0, or stay
    when ``accumulate``."""
    if sw == 2 and npx == 2:
        lo = (pw + 1) // 2                         # both 2j − pw and 2j + 1 − pw inside
        hi = max(min((w + pw) // 2, cols), lo)
        s0 = _u(row + 2 * lo - pw)
        for k in range(hi - lo):
            dst[s0 + _u(2 * k)] = d[_u(row_start + lo + k)]
            dst[s0 + _u(2 * k + 1)] = d[_u(row_start + dstride + lo + k)]
        for x in range(min(2 * lo - pw, w)):
            _edge_from_phases(d, row_start, dstride, cols, dst, row, sw, npx, pw, accumulate, x)
        for x in range(max(2 * hi - pw, 0), w):
            _edge_from_phases(d, row_start, dstride, cols, dst, row, sw, npx, pw, accumulate, x)
        return
    if sw == 1:
        hi = max(min(w, cols - pw), 0)
        for x in range(hi):
            dst[_u(row + x)] = d[_u(row_start + x + pw)]
        if not accumulate:
            for x in range(hi, w):
                dst[_u(row + x)] = _ZERO
        return
    for x in range(w):
        _edge_from_phases(d, row_start, dstride, cols, dst, row, sw, npx, pw, accumulate, x)


@njit(inline="always")
def _edge_from_phases(d, row_start, dstride, cols, dst, row, sw, npx, pw, accumulate, x):
    """One column of ``_row_from_phases``, checked."""
    c = x + pw
    if c % sw < npx and c // sw < cols:
        dst[_u(row + x)] = d[_u(row_start + (c % sw) * dstride + c // sw)]
    elif not accumulate:
        dst[_u(row + x)] = _ZERO


# ---- MAX ----------------------------------------------------------------------------------

@njit(inline="always", error_model="numpy")
def _max_scan(q, qbase, qstride, ws, count, vals, steps, w, ksize, stride, npx):
    """MAX of every window over ``count`` flat phase positions: vals[j], and in steps[j] the
    maximum's in-plane distance ``ky·w + kx`` from the window corner (-1 if none).

    One pass over the positions per window element, updating in memory, in row-major window
    order.
    """
    kh, kw = ksize
    sh, sw = stride
    for j in range(count):
        vals[_u(j)] = _NEG_FLT_MAX
        steps[_u(j)] = -1
    for ky in range(kh):
        for kx in range(kw):
            first = qbase + ((ky % sh) * npx + kx % sw) * qstride + (ky // sh) * ws + kx // sw
            step = np.int32(ky * w + kx)
            for j in range(count):
                v = q[_u(first + j)]
                take = v > vals[_u(j)]
                vals[_u(j)] = v if take else vals[_u(j)]
                steps[_u(j)] = step if take else steps[_u(j)]


@njit(inline="always", error_model="numpy")
def _phases_of_block(src, scratch, qstride, dims, ksize, stride, pad, p0, p1, oy0, oy1, fill):
    """(q, qbase, qstride, pstride): the phases of planes [p0, p1), rows [oy0, oy1 + my),
    in ``scratch`` (phases ``qstride`` apart, padding columns already ``fill``), or ``src``
    itself for stride 1 without padding.

    Phase (py, px) of plane p0 + p, row oy0 + i, column j is
    ``q[qbase + (py·npx + px)·qstride + p·pstride + i·ws + j]``.
    """
    h, w, oh, ow = dims
    npy, npx, my, mx, hs, ws = _phase_shape(ksize, stride, oh, ow)
    if stride == (1, 1) and pad == (0, 0):     # the bottom is its own (single) phase
        return src, (p0 * h + oy0) * w, 0, h * w
    rows = oy1 - oy0 + my
    pstride = rows * ws
    for p in range(p1 - p0):
        _plane_to_phases(src, (p0 + p) * h * w, h, w, scratch, p * pstride, qstride, ws, oy0,
                         rows, ws, stride, pad, npy, npx, fill, True)
    return scratch, 0, qstride, pstride


@njit(inline="always", error_model="numpy")
def _max_block(src, dst, mask, phases, vals, steps, dims, ksize, stride, pad, p0, p1, oy0,
               oy1):
    """MAX forward of planes [p0, p1), output rows [oy0, oy1); ``phases``, ``vals`` and
    ``steps`` are scratch; ``dims`` = (h, w, oh, ow)."""
    h, w, oh, ow = dims
    sh, sw = stride
    ph, pw = pad
    npy, npx, my, mx, hs, ws = _phase_shape(ksize, stride, oh, ow)
    q, qbase, qstride, pstride = _phases_of_block(src, phases, phases.size // (npy * npx),
                                                  dims, ksize, stride, pad, p0, p1, oy0, oy1,
                                                  _NEG_INF)
    rows = oy1 - oy0
    flat = (p1 - p0 - 1) * pstride + (rows - 1) * ws + ow
    _max_scan(q, qbase, qstride, ws, flat, vals, steps, w, ksize, stride, npx)
    for p in range(p1 - p0):
        for oy in range(rows):
            s = p * pstride + oy * ws
            d = ((p0 + p) * oh + oy0 + oy) * ow
            for ox in range(ow):
                dst[_u(d + ox)] = vals[_u(s + ox)]
            if mask.size > 0:
                corner = ((oy0 + oy) * sh - ph) * w - pw
                for ox in range(ow):
                    step = steps[_u(s + ox)]
                    mask[_u(d + ox)] = corner + ox * sw + step if step >= 0 else -1


@njit(cache=True, error_model="numpy")
def _max_blocks(src, dst, mask, dims, ksize, stride, pad, split, t0, t1):
    """MAX forward of blocks [t0, t1) of the ``split`` = (chunk, rows, bands, planes) plan.

    The 3×3 kernels with stride 1 or 2 take the separable path (``_max_3x3``) and reach this
    one only for planes of 2**24 elements or more, so no kernel is unrolled here.
    """
    h, w, oh, ow = dims
    chunk, rows, bands, planes = split
    npy, npx, my, mx, hs, ws = _phase_shape(ksize, stride, oh, ow)
    size = chunk * (rows + my) * ws
    phases = np.full(npy * npx * size, _NEG_INF, np.float32)   # padding columns stay -inf
    vals = np.empty(size, np.float32)
    steps = np.empty(size, np.int32)
    for t in range(t0, t1):
        p0, p1, oy0, oy1 = _block(t, planes, oh, chunk, rows, bands)
        _max_block(src, dst, mask, phases, vals, steps, dims, ksize, stride, pad, p0, p1,
                   oy0, oy1)


@njit(cache=True, error_model="numpy")
def _max_2x2_rows(src, dst, mask, h, w, r0, r1):
    """MAX 2×2, stride 2, no padding, even h and w: top rows [r0, r1) counted over all planes
    (top row r reads bottom rows 2r and 2r + 1, wherever the planes begin)."""
    ow = w // 2
    for r in range(r0, r1):
        a = _u(2 * r * w)
        b = a + _u(w)
        o = _u(r * ow)
        corner = (2 * r) % h * w               # in-plane index of row 2r's first element
        for ox in range(ow):
            x = _u(2 * ox)
            v0, v1, v2, v3 = src[a + x], src[a + x + _u(1)], src[b + x], src[b + x + _u(1)]
            i0 = corner + 2 * ox
            take = v0 > _NEG_FLT_MAX
            best = v0 if take else _NEG_FLT_MAX
            index = i0 if take else -1
            take = v1 > best
            best = v1 if take else best
            index = i0 + 1 if take else index
            take = v2 > best
            best = v2 if take else best
            index = i0 + w if take else index
            take = v3 > best
            best = v3 if take else best
            index = i0 + w + 1 if take else index
            dst[o + _u(ox)] = best
            if mask.size > 0:
                mask[o + _u(ox)] = index


@njit(inline="always", error_model="numpy")
def _max_3_across(src, row, w, ow, s, pw, line, odd, hv, hk, at, columns, corner, record):
    """Horizontal maxima of one bottom row for a 3-wide window, stride ``s`` (1 or 2):
    hv[at + j] is the first maximum above -FLT_MAX of the padded row's columns s·j, s·j + 1,
    s·j + 2 (else -FLT_MAX); if ``record``, hk[at + j] is its in-plane index (``corner`` =
    y·w plus the window's bottom column ``columns[j]`` plus kx) as a float, -1 if none.
    ``line`` (and ``odd``) are scratch whose padding stays -inf.

    Stride 2 first splits the padded row into its even (``line``) and odd (``odd``) columns,
    so that every window reads three unit-stride streams.
    NOTE: the two halves are separate arrays: two store streams into one array at a run-time
    distance keep LLVM from vectorising the split (2.5x slower). Values are loaded before any
    is selected: a load under a condition keeps LLVM from vectorising the loop.
    """
    if s == 2:
        lo = pw // 2
        # An odd row's last column has no partner; for an even row that place is padding.
        # NOTE: stored unconditionally: a conditional store after the split loop made the
        # whole pass 1.6x slower.
        last = src[_u(row + w - 1)] if w % 2 else _NEG_INF
        if pw % 2 == 0:
            for k in range(w // 2):
                line[_u(lo + k)] = src[_u(row + 2 * k)]
                odd[_u(lo + k)] = src[_u(row + 2 * k + 1)]
            line[_u(lo + w // 2)] = last
        else:
            for k in range(w // 2):
                odd[_u(lo + k)] = src[_u(row + 2 * k)]
                line[_u(lo + 1 + k)] = src[_u(row + 2 * k + 1)]
            odd[_u(lo + w // 2)] = last
        middle, second = odd, 0               # window columns: line[j], odd[j], line[j + 1]
    else:
        for x in range(w):
            line[_u(pw + x)] = src[_u(row + x)]
        middle, second = line, 1              # window columns: line[j], line[j + 1], line[j + 2]
    if record:
        for j in range(ow):
            a = line[_u(j)]
            b = middle[_u(j + second)]
            c = line[_u(j + second + 1)]
            col = corner + columns[_u(j)]
            take = a > _NEG_FLT_MAX
            best = a if take else _NEG_FLT_MAX
            k = col if take else _NO_MAX
            take = b > best
            best = b if take else best
            k = col + np.float32(1) if take else k
            take = c > best
            best = c if take else best
            k = col + np.float32(2) if take else k
            hv[_u(at + j)] = best
            hk[_u(at + j)] = k
    else:
        for j in range(ow):
            a = line[_u(j)]
            b = middle[_u(j + second)]
            c = line[_u(j + second + 1)]
            best = a if a > _NEG_FLT_MAX else _NEG_FLT_MAX
            best = b if b > best else best
            best = c if c > best else best
            hv[_u(at + j)] = best


@njit(inline="always", error_model="numpy")
def _max_3x3_planes(src, dst, mask, dims, s, pad, p0, p1, record):
    """MAX 3×3, stride ``s`` (1 or 2), of planes [p0, p1), separably.

    Each bottom row's horizontal maxima (first kx on ties) go into ``hv`` in row-phase order
    (padded row i at phase i % s, place i // s), so output (oy, ox) finds its window's three
    rows at fixed distances from its own flat position oy·ow + ox: one pass over the plane
    takes, for every output, the first row holding the largest. Row maximum first, then the
    first row: that is the first maximum of Caffe's row-major scan. Padding rows stay
    -FLT_MAX with index -1. Indices are float32 (exact: the caller checks h·w < 2**24); an
    int32 select chain beside float compares does not vectorise.
    """
    h, w, oh, ow = dims
    ph, pw = pad
    band = min(max(BAND_ELEMENTS // (s * ow) - 1, 1), oh)   # output rows per band
    places = band + 2 // s                     # rows per phase
    line = np.full(ow + 2 if s == 2 else w + 2 * pw + 2, _NEG_INF, np.float32)
    odd = np.full(ow + 2 if s == 2 else 0, _NEG_INF, np.float32)
    hv = np.empty(s * places * ow, np.float32)
    hk = np.empty(s * places * ow if record else 0, np.float32)
    columns = np.empty(ow, np.float32)
    for j in range(ow):
        columns[j] = np.float32(s * j - pw)
    first = places * ow if s == 2 else ow      # offset of window row 1 from row 0
    second = ow if s == 2 else 2 * ow          # offset of window row 2
    for p in range(p0, p1):
        base = p * h * w
        for oy0 in range(0, oh, band):
            oy1 = min(oy0 + band, oh)
            y0 = oy0 * s - ph
            for i in range((oy1 - oy0 - 1) * s + 3):
                y = y0 + i
                at = ((i % s) * places + i // s) * ow
                if 0 <= y < h:
                    _max_3_across(src, base + y * w, w, ow, s, pw, line, odd, hv, hk, at,
                                  columns, np.float32(y * w), record)
                else:
                    for j in range(ow):
                        hv[_u(at + j)] = _NEG_FLT_MAX
                    if record:
                        for j in range(ow):
                            hk[_u(at + j)] = _NO_MAX
            d = (p * oh + oy0) * ow
            if record:
                for f in range((oy1 - oy0) * ow):
                    a0, a1, a2 = hv[_u(f)], hv[_u(first + f)], hv[_u(second + f)]
                    k0, k1, k2 = hk[_u(f)], hk[_u(first + f)], hk[_u(second + f)]
                    take = a1 > a0
                    best = a1 if take else a0
                    k = k1 if take else k0
                    take = a2 > best
                    dst[_u(d + f)] = a2 if take else best
                    mask[_u(d + f)] = np.int32(k2 if take else k)
            else:
                for f in range((oy1 - oy0) * ow):
                    a0, a1, a2 = hv[_u(f)], hv[_u(first + f)], hv[_u(second + f)]
                    best = a1 if a1 > a0 else a0
                    dst[_u(d + f)] = a2 if a2 > best else best


@njit(cache=True, error_model="numpy")
def _max_3x3(src, dst, mask, dims, stride, pad, p0, p1):
    """MAX 3×3 of planes [p0, p1); the stride (1 or 2) and whether to record go on as
    constants.

    NOTE: a loop that records and one that does not, side by side under a run-time test,
    made the horizontal pass 1.4x slower than either alone.
    """
    if stride[0] == 2:
        if mask.size > 0:
            _max_3x3_planes(src, dst, mask, dims, 2, pad, p0, p1, True)
        else:
            _max_3x3_planes(src, dst, mask, dims, 2, pad, p0, p1, False)
    elif mask.size > 0:
        _max_3x3_planes(src, dst, mask, dims, 1, pad, p0, p1, True)
    else:
        _max_3x3_planes(src, dst, mask, dims, 1, pad, p0, p1, False)


@njit(cache=True, error_model="numpy")
def _max_whole_planes(src, dst, mask, hw, p0, p1):
    """MAX of planes [p0, p1) whose window is the whole plane."""
    for p in range(p0, p1):
        best = _NEG_FLT_MAX
        index = -1
        for i in range(hw):
            v = src[_u(p * hw + i)]
            if v > best:
                best = v
                index = i
        dst[_u(p)] = best
        if mask.size > 0:
            mask[_u(p)] = index


@njit(cache=True, parallel=True, error_model="numpy")
def max_pool_forward(x, ksize, stride, pad, out, mask):
    """Max over each window: x (n, c, h, w) → out (n, c, oh, ow), mask (n, c, oh, ow) int32.

    ``mask`` gets the in-plane index ``y·w + x`` of the first maximum (strict ``>``, scanning
    rows then columns). A window with no element above -FLT_MAX (empty, all -inf or NaN) gives
    -FLT_MAX and mask -1, as Caffe's loop does. Pass a size-0 ``mask`` when no backward will
    run: nothing is recorded. ``out`` and ``mask`` must not alias ``x``.
    """
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    planes = n * c
    src = x.reshape(x.size)
    dst = out.reshape(out.size)
    arg = mask.reshape(mask.size)
    parallel = x.size >= FORWARD_PARALLEL_MIN
    if _covers_plane(ksize, pad, h, w, oh, ow):
        if parallel:
            for t in prange((planes + PLANES_PER_TASK - 1) // PLANES_PER_TASK):
                _max_whole_planes(src, dst, arg, h * w, t * PLANES_PER_TASK,
                                  min((t + 1) * PLANES_PER_TASK, planes))
        else:
            _max_whole_planes(src, dst, arg, h * w, 0, planes)
        return
    if ksize == (2, 2) and stride == (2, 2) and pad == (0, 0) and h % 2 == 0 and w % 2 == 0:
        # NOTE: no phase split here: loading both columns of a pair is what LLVM vectorises
        # well, and planes this regular need no padding, so the split would only add a pass.
        top_rows = planes * oh
        if parallel:
            tasks = min(top_rows, TASKS)
            for task in prange(tasks):
                r0, r1 = _task_blocks(task, tasks, top_rows)
                _max_2x2_rows(src, dst, arg, h, w, r0, r1)
        else:
            _max_2x2_rows(src, dst, arg, h, w, 0, top_rows)
        return
    if (ksize == (3, 3) and (stride == (1, 1) or stride == (2, 2)) and h * w < _FLOAT_EXACT
            and pad[0] < 3 and pad[1] < 3):
        dims = (h, w, oh, ow)
        if parallel:
            tasks = min(planes, TASKS)
            for task in prange(tasks):
                p0, p1 = _task_blocks(task, tasks, planes)
                _max_3x3(src, dst, arg, dims, stride, pad, p0, p1)
        else:
            _max_3x3(src, dst, arg, dims, stride, pad, 0, planes)
        return
    npy, npx, my, mx, hs, ws = _phase_shape(ksize, stride, oh, ow)
    dims = (h, w, oh, ow)
    chunk, rows, bands, blocks = _blocks(planes, oh, (npy * npx + 2) * ws, my)
    split = (chunk, rows, bands, planes)
    if parallel:
        tasks = min(blocks, TASKS)
        for task in prange(tasks):
            t0, t1 = _task_blocks(task, tasks, blocks)
            _max_blocks(src, dst, arg, dims, ksize, stride, pad, split, t0, t1)
    else:
        _max_blocks(src, dst, arg, dims, ksize, stride, pad, split, 0, blocks)


@njit(cache=True, error_model="numpy")
def _max_backward_planes(src, arg, dst, plane, count, accumulate, p0, p1):
    """MAX backward of planes [p0, p1) over flat views: ``plane`` = h·w, ``count`` = oh·ow."""
    for nc in range(p0, p1):
        base = nc * plane
        if not accumulate:
            for i in range(plane):
                dst[_u(base + i)] = _ZERO
        for o in range(nc * count, (nc + 1) * count):
            index = int(arg[_u(o)])
            if index >= 0:
                dst[_u(base + index)] += src[_u(o)]


@njit(cache=True, parallel=True, error_model="numpy")
def max_pool_backward(top_diff, mask, bottom_diff, accumulate):
    """Route each top diff to its mask position: bottom_diff[mask] (+)= top_diff.

    top_diff (n, c, oh, ow), mask (n, c, oh, ow) in-plane indices ``y·w + x``, int32 or
    float32 (a mask top), bottom_diff (n, c, h, w): overwritten, or added into when
    ``accumulate``; the diffs reaching one bottom element are summed in (oy, ox) order. Also
    serves STOCHASTIC pooling, whose sampled positions are its mask. Mask entries < 0 route
    nothing.
    """
    n, c, h, w = bottom_diff.shape
    planes = n * c
    count = top_diff.shape[2] * top_diff.shape[3]
    src = top_diff.reshape(top_diff.size)
    arg = mask.reshape(mask.size)
    dst = bottom_diff.reshape(bottom_diff.size)
    if bottom_diff.size < PARALLEL_MIN:
        _max_backward_planes(src, arg, dst, h * w, count, accumulate, 0, planes)
    else:
        tasks = min(planes, TASKS)
        for task in prange(tasks):
            p0, p1 = _task_blocks(task, tasks, planes)
            _max_backward_planes(src, arg, dst, h * w, count, accumulate, p0, p1)


# ---- AVE ----------------------------------------------------------------------------------

@njit(inline="always", error_model="numpy")
def _sum_scan(q, qbase, qstride, ws, count, sums, ksize, stride, npx, unrolled):
    """Window sums over ``count`` flat phase positions, each in row-major order from 0."""
    kh, kw = ksize
    sh, sw = stride
    if unrolled:
        for j in range(count):
            total = _ZERO
            for ky in range(kh):
                for kx in range(kw):
                    total += q[_u(qbase + ((ky % sh) * npx + kx % sw) * qstride
                                  + (ky // sh) * ws + kx // sw + j)]
            sums[_u(j)] = total
        return
    for j in range(count):
        sums[_u(j)] = _ZERO
    for ky in range(kh):
        for kx in range(kw):
            first = qbase + ((ky % sh) * npx + kx % sw) * qstride + (ky // sh) * ws + kx // sw
            for j in range(count):
                sums[_u(j)] += q[_u(first + j)]


@njit(inline="always", error_model="numpy")
def _ave_block(src, dst, phases, sums, extent_x, dims, ksize, stride, pad, p0, p1, oy0, oy1,
               unrolled):
    """AVE forward of planes [p0, p1), output rows [oy0, oy1); ``phases`` and ``sums`` are
    scratch, ``extent_x`` the divisor extents along x; ``dims`` = (h, w, oh, ow)."""
    h, w, oh, ow = dims
    kh, kw = ksize
    sh, sw = stride
    ph, pw = pad
    npy, npx, my, mx, hs, ws = _phase_shape(ksize, stride, oh, ow)
    q, qbase, qstride, pstride = _phases_of_block(src, phases, phases.size // (npy * npx),
                                                  dims, ksize, stride, pad, p0, p1, oy0, oy1,
                                                  _ZERO)
    rows = oy1 - oy0
    flat = (p1 - p0 - 1) * pstride + (rows - 1) * ws + ow
    _sum_scan(q, qbase, qstride, ws, flat, sums, ksize, stride, npx, unrolled)
    for p in range(p1 - p0):
        for oy in range(rows):
            ey = _ave_extent(oy0 + oy, sh, ph, kh, h)
            s = p * pstride + oy * ws
            d = ((p0 + p) * oh + oy0 + oy) * ow
            for ox in range(ow):
                dst[_u(d + ox)] = sums[_u(s + ox)] / np.float32(ey * extent_x[ox])


@njit(cache=True, error_model="numpy")
def _ave_blocks(src, dst, dims, ksize, stride, pad, split, t0, t1):
    """AVE forward of blocks [t0, t1); as for MAX, the common kernels go on as constants."""
    h, w, oh, ow = dims
    chunk, rows, bands, planes = split
    npy, npx, my, mx, hs, ws = _phase_shape(ksize, stride, oh, ow)
    size = chunk * (rows + my) * ws
    phases = np.zeros(npy * npx * size, np.float32)   # padding columns stay 0
    sums = np.empty(size, np.float32)
    extent_x = np.empty(ow, np.int64)
    for ox in range(ow):
        extent_x[ox] = _ave_extent(ox, stride[1], pad[1], ksize[1], w)
    for t in range(t0, t1):
        p0, p1, oy0, oy1 = _block(t, planes, oh, chunk, rows, bands)
        if ksize == (2, 2) and stride == (2, 2):
            _ave_block(src, dst, phases, sums, extent_x, dims, (2, 2), (2, 2), pad, p0, p1, oy0,
                       oy1, True)
        elif ksize == (3, 3) and stride == (2, 2):
            _ave_block(src, dst, phases, sums, extent_x, dims, (3, 3), (2, 2), pad, p0, p1, oy0,
                       oy1, True)
        elif ksize == (3, 3) and stride == (1, 1):
            _ave_block(src, dst, phases, sums, extent_x, dims, (3, 3), (1, 1), pad, p0, p1, oy0,
                       oy1, True)
        else:
            _ave_block(src, dst, phases, sums, extent_x, dims, ksize, stride, pad, p0, p1, oy0,
                       oy1, False)


@njit(cache=True, error_model="numpy")
def _ave_whole_planes(src, dst, hw, p0, p1):
    """Means of planes [p0, p1) whose window is the whole plane, each summed in order.

    NOTE: eight planes at a time: eight independent add chains instead of one chain waiting
    on each add's latency (4x faster on 7×7 planes); each plane's sum keeps its order.
    """
    size = np.float32(hw)
    p = p0
    while p + 8 <= p1:
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = _ZERO
        b = p * hw
        for i in range(hw):
            a0 += src[_u(b + i)]
            a1 += src[_u(b + hw + i)]
            a2 += src[_u(b + 2 * hw + i)]
            a3 += src[_u(b + 3 * hw + i)]
            a4 += src[_u(b + 4 * hw + i)]
            a5 += src[_u(b + 5 * hw + i)]
            a6 += src[_u(b + 6 * hw + i)]
            a7 += src[_u(b + 7 * hw + i)]
        dst[_u(p)] = a0 / size
        dst[_u(p + 1)] = a1 / size
        dst[_u(p + 2)] = a2 / size
        dst[_u(p + 3)] = a3 / size
        dst[_u(p + 4)] = a4 / size
        dst[_u(p + 5)] = a5 / size
        dst[_u(p + 6)] = a6 / size
        dst[_u(p + 7)] = a7 / size
        p += 8
    for r in range(p, p1):
        total = _ZERO
        for i in range(hw):
            total += src[_u(r * hw + i)]
        dst[_u(r)] = total / size


@njit(cache=True, error_model="numpy")
def _ave_3x3_s2_blocks(src, dst, dims, chunk, planes, t0, t1):
    """AVE 3×3, stride 2, no padding, even width, of blocks [t0, t1) of ``chunk`` planes
    (``planes`` in all); the scratch is allocated once for all of them."""
    h, w = dims[0], dims[1]
    size = chunk * h * (w // 2)
    even = np.empty(size, np.float32)
    odd = np.empty(size, np.float32)
    sums = np.empty(size, np.float32)
    for t in range(t0, t1):
        _ave_3x3_s2_planes(src, dst, dims, t * chunk, min((t + 1) * chunk, planes), even, odd,
                           sums)


@njit(inline="always", error_model="numpy")
def _ave_3x3_s2_planes(src, dst, dims, p0, p1, even, odd, sums):
    """AVE 3×3, stride 2, no padding, even width, of planes [p0, p1), flat; ``even``,
    ``odd`` and ``sums`` are scratch of at least (p1 − p0)·h·w/2 elements.

    With w even the split into even and odd columns is one flat pass over the planes (bottom
    element 2g and 2g + 1 go to place g), and a window starting at bottom row r, column 2j
    reads places g, g + 1, g + half, ... (g = r·half + j, half = w/2): one flat pass computes
    the sum of a window starting at every bottom row, in Caffe's order, and the output rows
    take every other one. The last column's and (h even) the last row's windows are clipped
    (they would read the next row or plane): they add only their own elements, in order.
    """
    h, w, oh, ow = dims
    half = w // 2
    count = (p1 - p0) * h * half
    base = p0 * h * w
    nine = np.float32(9.0)
    for g in range(count):
        even[_u(g)] = src[_u(base + 2 * g)]
        odd[_u(g)] = src[_u(base + 2 * g + 1)]
    for g in range(max(count - 2 * half - 1, 0)):
        a, b, c = even[_u(g)], odd[_u(g)], even[_u(g + 1)]
        d, e, f = even[_u(g + half)], odd[_u(g + half)], even[_u(g + half + 1)]
        i, j, k = even[_u(g + 2 * half)], odd[_u(g + 2 * half)], even[_u(g + 2 * half + 1)]
        sums[_u(g)] = (((((((((_ZERO + a) + b) + c) + d) + e) + f) + i) + j) + k) / nine
    last = half - 1                            # the clipped last column: 2 wide
    for p in range(p0, p1):
        for oy in range(oh):
            r = (p - p0) * h + 2 * oy              # the window's first row, in places
            rows = min(3, h - 2 * oy)              # 2 in the last row of an even height
            d = (p * oh + oy) * ow
            g = r * half
            if rows == 3:
                for ox in range(ow - 1):
                    dst[_u(d + ox)] = sums[_u(g + ox)]
            else:
                for ox in range(ow - 1):
                    total = _ZERO
                    for ky in range(2):
                        at = g + ky * half + ox
                        total += even[_u(at)]
                        total += odd[_u(at)]
                        total += even[_u(at + 1)]
                    dst[_u(d + ox)] = total / np.float32(6.0)
            total = _ZERO
            for ky in range(rows):
                total += even[_u(g + ky * half + last)]
                total += odd[_u(g + ky * half + last)]
            dst[_u(d + ow - 1)] = total / np.float32(2 * rows)


@njit(cache=True, parallel=True, error_model="numpy")
def ave_pool_forward(x, ksize, stride, pad, out):
    """Window mean, padding counted: x (n, c, h, w) → out (n, c, oh, ow).

    Sums each window in row-major order from 0, then divides by the integer pool size, as
    Caffe does. ``out`` must not alias ``x``.
    """
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    planes = n * c
    src = x.reshape(x.size)
    dst = out.reshape(out.size)
    parallel = x.size >= FORWARD_PARALLEL_MIN
    if _covers_plane(ksize, pad, h, w, oh, ow):
        if parallel:
            for t in prange((planes + PLANES_PER_TASK - 1) // PLANES_PER_TASK):
                _ave_whole_planes(src, dst, h * w, t * PLANES_PER_TASK,
                                  min((t + 1) * PLANES_PER_TASK, planes))
        else:
            _ave_whole_planes(src, dst, h * w, 0, planes)
        return
    dims = (h, w, oh, ow)
    if ksize == (3, 3) and stride == (2, 2) and pad == (0, 0) and w % 2 == 0 and h >= 3:
        # flat column split; planes in chunks whose three scratch arrays stay in L1
        chunk = max(BLOCK_ELEMENTS // (h * w // 2), 1)
        blocks = (planes + chunk - 1) // chunk
        if parallel:
            tasks = min(blocks, TASKS)
            for task in prange(tasks):
                t0, t1 = _task_blocks(task, tasks, blocks)
                _ave_3x3_s2_blocks(src, dst, dims, chunk, planes, t0, t1)
        else:
            _ave_3x3_s2_blocks(src, dst, dims, chunk, planes, 0, blocks)
        return
    npy, npx, my, mx, hs, ws = _phase_shape(ksize, stride, oh, ow)
    chunk, rows, bands, blocks = _blocks(planes, oh, (npy * npx + 1) * ws, my)
    split = (chunk, rows, bands, planes)
    if parallel:
        tasks = min(blocks, TASKS)
        for task in prange(tasks):
            t0, t1 = _task_blocks(task, tasks, blocks)
            _ave_blocks(src, dst, dims, ksize, stride, pad, split, t0, t1)
    else:
        _ave_blocks(src, dst, dims, ksize, stride, pad, split, 0, blocks)


@njit(inline="always", error_model="numpy")
def _ave_backward_block(src, dst, grid, acc, extent_x, dims, ksize, stride, pad, accumulate,
                        p0, p1, i0, i1):
    """AVE backward of planes [p0, p1), phase rows [i0, i1) (the bottom rows they hold).

    The shares of output rows [i0 − my, i1) go into ``grid`` with ``mx`` zero columns left and
    right (rows ``wg`` wide) and zero rows where no output row is; the phases (``acc``) use
    the same layout, so the share of window element (ky, kx) sits at a fixed offset from every
    phase position, and phase rows past i1 − i0 are scratch.
    """
    h, w, oh, ow = dims
    kh, kw = ksize
    sh, sw = stride
    ph, pw = pad
    npy, npx, my, mx, hs, ws = _phase_shape(ksize, stride, oh, ow)
    count = p1 - p0
    rows = i1 - i0
    wg = ow + 2 * mx
    pstride = (rows + my) * wg
    dstride = count * pstride
    flat = (count - 1) * pstride + (rows - 1) * wg + ws
    for j in range(dstride):
        grid[_u(j)] = _ZERO
    for p in range(count):
        for oy in range(max(i0 - my, 0), min(i1, oh)):
            ey = _ave_extent(oy, sh, ph, kh, h)
            s = ((p0 + p) * oh + oy) * ow
            d = p * pstride + (oy - i0 + my) * wg + mx
            for ox in range(ow):
                grid[_u(d + ox)] = src[_u(s + ox)] / np.float32(ey * extent_x[ox])
    if accumulate:
        # Positions outside the bottom are never read back: they may start with anything.
        for p in range(count):
            _plane_to_phases(dst, (p0 + p) * h * w, h, w, acc, p * pstride, dstride, wg, i0,
                             rows, ws, stride, pad, npy, npx, _ZERO, False)
    else:
        for j in range(npy * npx * dstride):
            acc[_u(j)] = _ZERO
    # Phase (py, px) gets the windows whose element (ky, kx) has ky % sh = py, kx % sw = px;
    # descending (ky, kx) is ascending (oy, ox), Caffe's order of adds.
    for ky in range(kh - 1, -1, -1):
        for kx in range(kw - 1, -1, -1):
            first = ((ky % sh) * npx + kx % sw) * dstride
            shift = (my - ky // sh) * wg + mx - kx // sw
            for j in range(flat):
                acc[_u(first + j)] += grid[_u(shift + j)]
    # Bottom rows of phase rows [i0, i1); the last block also takes the rows past every window.
    y1 = h if i1 == hs else min(i1 * sh - ph, h)
    for p in range(count):
        base = (p0 + p) * h * w
        for y in range(max(i0 * sh - ph, 0), y1):
            r = y + ph
            if r % sh < npy and r // sh < i1:
                start = (r % sh) * npx * dstride + p * pstride + (r // sh - i0) * wg
                _row_from_phases(acc, start, dstride, ws, dst, base + y * w, w, sw, npx, pw,
                                 accumulate)
            elif not accumulate:
                for x in range(w):
                    dst[_u(base + y * w + x)] = _ZERO


@njit(cache=True, error_model="numpy")
def _ave_backward_blocks(src, dst, dims, ksize, stride, pad, accumulate, split, t0, t1):
    """AVE backward of blocks [t0, t1) (bands of phase rows); common kernels as constants."""
    h, w, oh, ow = dims
    chunk, rows, bands, planes = split
    npy, npx, my, mx, hs, ws = _phase_shape(ksize, stride, oh, ow)
    size = chunk * (rows + my) * (ow + 2 * mx)
    grid = np.empty(size, np.float32)
    acc = np.empty(npy * npx * size, np.float32)
    extent_x = np.empty(ow, np.int64)
    for ox in range(ow):
        extent_x[ox] = _ave_extent(ox, stride[1], pad[1], ksize[1], w)
    for t in range(t0, t1):
        p0, p1, i0, i1 = _block(t, planes, hs, chunk, rows, bands)
        if ksize == (3, 3) and stride == (2, 2):
            _ave_backward_block(src, dst, grid, acc, extent_x, dims, (3, 3), (2, 2), pad,
                                accumulate, p0, p1, i0, i1)
        elif ksize == (3, 3) and stride == (1, 1):
            _ave_backward_block(src, dst, grid, acc, extent_x, dims, (3, 3), (1, 1), pad,
                                accumulate, p0, p1, i0, i1)
        else:
            _ave_backward_block(src, dst, grid, acc, extent_x, dims, ksize, stride, pad,
                                accumulate, p0, p1, i0, i1)


@njit(cache=True, error_model="numpy")
def _ave_backward_whole_planes(src, dst, hw, accumulate, p0, p1):
    """AVE backward of planes [p0, p1) whose window is the whole plane: a fill."""
    size = np.float32(hw)
    for p in range(p0, p1):
        share = src[_u(p)] / size
        if accumulate:
            for i in range(hw):
                dst[_u(p * hw + i)] += share
        else:
            for i in range(hw):
                dst[_u(p * hw + i)] = share


@njit(cache=True, parallel=True, error_model="numpy")
def ave_pool_backward(top_diff, ksize, stride, pad, bottom_diff, accumulate):
    """Spread each top diff over its window: bottom_diff[window] (+)= top_diff / pool_size.

    top_diff (n, c, oh, ow), bottom_diff (n, c, h, w): overwritten, or added into when
    ``accumulate``; the shares reaching one bottom element are summed in (oy, ox) order.
    """
    n, c, h, w = bottom_diff.shape
    oh, ow = top_diff.shape[2], top_diff.shape[3]
    planes = n * c
    src = top_diff.reshape(top_diff.size)
    dst = bottom_diff.reshape(bottom_diff.size)
    parallel = bottom_diff.size >= PARALLEL_MIN
    if _covers_plane(ksize, pad, h, w, oh, ow):
        if parallel:
            for t in prange((planes + PLANES_PER_TASK - 1) // PLANES_PER_TASK):
                _ave_backward_whole_planes(src, dst, h * w, accumulate, t * PLANES_PER_TASK,
                                           min((t + 1) * PLANES_PER_TASK, planes))
        else:
            _ave_backward_whole_planes(src, dst, h * w, accumulate, 0, planes)
        return
    npy, npx, my, mx, hs, ws = _phase_shape(ksize, stride, oh, ow)
    dims = (h, w, oh, ow)
    chunk, rows, bands, blocks = _blocks(planes, hs, (npy * npx + 1) * (ow + 2 * mx), my)
    split = (chunk, rows, bands, planes)
    if parallel:
        tasks = min(blocks, TASKS)
        for task in prange(tasks):
            t0, t1 = _task_blocks(task, tasks, blocks)
            _ave_backward_blocks(src, dst, dims, ksize, stride, pad, accumulate, split, t0, t1)
    else:
        _ave_backward_blocks(src, dst, dims, ksize, stride, pad, accumulate, split, 0, blocks)


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
