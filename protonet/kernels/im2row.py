"""Channels-last lowering for convolution: im2row / row2im and the layout transposes around them.

The im2col kernels (im2col.py) build Caffe's column matrix, (c·kh·kw, oh·ow) per image, and the
forward GEMM is W (m, c·kh·kw) · col. When the output has few channels (m = 20-64) that GEMM is
thin, and OpenBLAS runs it 20-50 % slower than its transpose, colᵀ · Wᵀ, whose long side is
the output positions. The *row* layout builds that transpose directly: one row per output
position holding its window in (kh, kw, c) order, read from a channels-last copy of the images,
where a window row of ``kw`` pixels is ``kw·c`` contiguous floats (one copy, not ``c·kw``
short ones).

Notation: ``m`` images, ``c`` channels, ``h w`` image size, ``oh ow`` output size, ``kh kw``
kernel, ``ph pw`` padding, ``sh sw`` stride, ``dh dw`` dilation. Row ``(i·oh + y)·ow + x`` of a
row matrix holds, at column ``(ky·kw + kx)·c + ch``, image ``i``'s value at channel ``ch``,
position ``(y·sh − ph + ky·dh, x·sw − pw + kx·dw)``, or 0 in the padding.

Every kernel here is serial and releases the GIL (``nogil``): protonet's worker threads
(protonet/threads.py) run one chunk of the batch each. Each fixes its order of arithmetic, so
results do not depend on the thread count.

NOTE: flat indices go through ``_u`` (uint64), as in im2col.py: signed indices make Numba test
every access for wrap-around, which stops the copies from vectorising. Every index computed
here is non-negative; positions that may be negative are tested before they are used.
"""

from numba import njit
from numba import uint64 as _u

# A transpose moves 8 x 8 tiles: the compiler turns a constant-size tile into register shuffles,
# and a tile's 8 rows and 8 columns stay in L1 (1.7x faster than 64-row strips of scalars).
TILE = 8


@njit(cache=True, nogil=True)
def transpose_batched(src, dst):
    """dst[i, b, a] = src[i, a, b] for src (m, A, B), dst (m, B, A), both C-contiguous.

    Serves NCHW ↔ channels-last ((m, c, h·w) ↔ (m, h·w, c)) and a GEMM's row-layout output ↔
    planes ((m, oh·ow, n) ↔ (m, n, oh·ow)).
    """
    m, rows, cols = src.shape
    s = src.reshape(src.size)
    d = dst.reshape(dst.size)
    whole_rows = rows - rows % TILE
    whole_cols = cols - cols % TILE
    for i in range(m):
        base = i * rows * cols
        for a0 in range(0, whole_rows, TILE):
            for b0 in range(0, whole_cols, TILE):
                for b in range(b0, b0 + TILE):
                    for a in range(a0, a0 + TILE):
                        d[_u(base + b * rows + a)] = s[_u(base + a * cols + b)]
            for b in range(whole_cols, cols):
                for a in range(a0, a0 + TILE):
                    d[_u(base + b * rows + a)] = s[_u(base + a * cols + b)]
        for a in range(whole_rows, rows):
            for b in range(cols):
                d[_u(base + b * rows + a)] = s[_u(base + a * cols + b)]


@njit(cache=True, nogil=True)
def im2row_2d(x, ksize, pad, stride, dilation, out_shape, col):
    """x (m, h, w, c) channels-last → col (m·oh·ow, kh·kw·c) in the row layout (see above)."""
    m, h, w, c = x.shape
    oh, ow = out_shape
    kh, kw = ksize
    ph, pw = pad
    sh, sw = stride
    dh, dw = dilation
    src = x.reshape(x.size)
    dst = col.reshape(col.size)
    run = kw * c
    width = kh * run
    for i in range(m):
        for oy in range(oh):
            for ox in range(ow):
                row = ((i * oh + oy) * ow + ox) * width
                x0 = ox * sw - pw
                # A window row wholly inside the image is kw·c contiguous floats.
                whole = dw == 1 and x0 >= 0 and x0 + kw <= w
                for ky in range(kh):
                    y = oy * sh - ph + ky * dh
                    at = row + ky * run
                    if y < 0 or y >= h:
                        for t in range(run):
                            dst[_u(at + t)] = 0.0
                    elif whole:
                        start = ((i * h + y) * w + x0) * c
                        for t in range(run):
                            dst[_u(at + t)] = src[_u(start + t)]
                    else:
                        for kx in range(kw):
                            xx = x0 + kx * dw
                            to = at + kx * c
                            if xx < 0 or xx >= w:
                                for t in range(c):
                                    dst[_u(to + t)] = 0.0
                            else:
                                start = ((i * h + y) * w + xx) * c
                                for t in range(c):
                                    dst[_u(to + t)] = src[_u(start + t)]


@njit(cache=True, nogil=True)
def row2im_2d(col, ksize, pad, stride, dilation, out_shape, x):
    """Adjoint of :func:`im2row_2d`: x (m, h, w, c) = Σ of col's window entries per position.

    Overwrites x. Each element receives its shares in output-position order, then (ky, kx).
    """
    m, h, w, c = x.shape
    oh, ow = out_shape
    kh, kw = ksize
    ph, pw = pad
    sh, sw = stride
    dh, dw = dilation
    src = col.reshape(col.size)
    dst = x.reshape(x.size)
    for t in range(x.size):
        dst[_u(t)] = 0.0
    run = kw * c
    width = kh * run
    for i in range(m):
        for oy in range(oh):
            for ox in range(ow):
                row = ((i * oh + oy) * ow + ox) * width
                x0 = ox * sw - pw
                whole = dw == 1 and x0 >= 0 and x0 + kw <= w
                for ky in range(kh):
                    y = oy * sh - ph + ky * dh
                    if y < 0 or y >= h:
                        continue
                    at = row + ky * run
                    if whole:
                        start = ((i * h + y) * w + x0) * c
                        for t in range(run):
                            dst[_u(start + t)] += src[_u(at + t)]
                    else:
                        for kx in range(kw):
                            xx = x0 + kx * dw
                            if xx < 0 or xx >= w:
                                continue
                            start = ((i * h + y) * w + xx) * c
                            fro = at + kx * c
                            for t in range(c):
                                dst[_u(start + t)] += src[_u(fro + t)]
