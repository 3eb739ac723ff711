"""im2col / col2im: the lowering that turns convolution into a matrix product.

One kernel, many layers: Convolution, Deconvolution and Im2col all go through these.

Notation:
    n       images in the batch (or chunk of the batch)
    c       channels of the image
    h w     image height and width (2-D); ``im_shape`` the spatial shape (N-D)
    oh ow   output (column) height and width; ``out_shape`` the spatial shape (N-D)
    kh kw   kernel height and width; ``ksize`` the kernel shape (N-D)
    ph pw   zero padding on each side; ``pad`` (N-D)
    sh sw   stride; ``stride`` (N-D)
    dh dw   dilation; ``dilation`` (N-D)

Column layout (Caffe's): row ``(ch * kh + ki) * kw + kj`` of image ``i`` holds, for every output
position ``(y, x)`` in row-major order, the input value at
``(y * sh - ph + ki * dh, x * sw - pw + kj * dw)``, or 0 where that lies in the padding.
N-D is the same with the kernel offset and the output position flattened in row-major order.

The caller computes the output shape (Caffe's ``(in + 2p - (d(k-1)+1)) / s + 1``) and checks that
it is positive; kernels validate nothing. Every kernel runs in parallel over the ``n * c``
image planes (``im2col_2d_rows_first``: over the column rows): each iteration writes only its
own plane's (or row's) elements, so results do not depend on the thread count, and col2im adds
into each image element in Caffe's order. Each kernel has a ``_serial`` twin that runs the same
per-plane (per-row) helper on the calling thread without holding the GIL: protonet's worker
threads (protonet/threads.py) lower one chunk of the batch each with it.
"""

from numba import njit, prange
from numba import uint64 as _u


@njit(inline="always")
def _ceil_div(a, b):
    """ceil(a / b) for b > 0 and any sign of a."""
    return -((-a) // b)


@njit(inline="always")
def _valid_range(k_offset, pad, stride, size, out_size):
    """Output indices ``[lo, hi)`` whose input index ``o * stride - pad + k_offset`` is inside."""
    lo = max(0, _ceil_div(pad - k_offset, stride))
    hi = min(out_size, _ceil_div(size + pad - k_offset, stride))
    return lo, max(lo, hi)


# ---- 2-D ------------------------------------------------------------------------------------

@njit(inline="always")
def _im2col_2d_plane(x, i, ch, ksize, pad, stride, dilation, col, r_mul, r_add):
    """im2col of plane (i, ch) into col (rows, oh, ow); kernel row ``row`` goes to
    ``col[row * r_mul + r_add]`` (image-major or rows-first layout, both C-contiguous)."""
    h, w = x.shape[2], x.shape[3]
    oh, ow = col.shape[1], col.shape[2]
    kh, kw = ksize
    ph, pw = pad
    sh, sw = stride
    dh, dw = dilation
    # Flat indexing: no per-row array views, so the inner copies vectorise.
    src = x.reshape(x.size)
    dst = col.reshape(col.size)
    plane_base = (i * x.shape[1] + ch) * h * w
    for ki in range(kh):
        y_lo, y_hi = _valid_range(ki * dh, ph, sh, h, oh)
        for kj in range(kw):
            x_lo, x_hi = _valid_range(kj * dw, pw, sw, w, ow)
            row = ((ch * kh + ki) * kw + kj) * r_mul + r_add
            _im2col_2d_kernel_row(src, plane_base, w, ki * dh - ph, kj * dw - pw, sh, sw,
                                  y_lo, y_hi, x_lo, x_hi, dst, row * oh * ow, oh, ow)


@njit(inline="always")
def _im2col_2d_kernel_row(src, plane_base, w, y_offset, x_offset, sh, sw, y_lo, y_hi, x_lo,
                          x_hi, dst, dst_base, oh, ow):
    """One image's (oh, ow) block of one kernel row: dst[dst_base + y·ow + xo] =
    src[plane_base + (y·sh + y_offset)·w + xo·sw + x_offset], 0 outside [y_lo, y_hi) ×
    [x_lo, x_hi).

    NOTE: indices go through ``_u`` (uint64): with signed indices Numba adds a
    negative-index wraparound test to every access, which stops the short copies from
    vectorising and made this loop 5-15x slower. Every index here is non-negative.
    """
    for y in range(oh):
        base = dst_base + y * ow
        if y < y_lo or y >= y_hi:
            for xo in range(ow):
                dst[_u(base + xo)] = 0.0
            continue
        src_base = plane_base + (y * sh + y_offset) * w + x_offset
        for xo in range(x_lo):
            dst[_u(base + xo)] = 0.0
        if sw == 1:
            for xo in range(x_lo, x_hi):
                dst[_u(base + xo)] = src[_u(src_base + xo)]
        else:
            for xo in range(x_lo, x_hi):
                dst[_u(base + xo)] = src[_u(src_base + xo * sw)]
        for xo in range(x_hi, ow):
            dst[_u(base + xo)] = 0.0


@njit(inline="always")
def _col2im_2d_plane(col, r_mul, r_add, i, ch, ksize, pad, stride, dilation, x):
    """col2im of plane (i, ch) from col (rows, oh, ow), rows addressed as in _im2col_2d_plane."""
    h, w = x.shape[2], x.shape[3]
    oh, ow = col.shape[1], col.shape[2]
    kh, kw = ksize
    ph, pw = pad
    sh, sw = stride
    dh, dw = dilation
    src = col.reshape(col.size)
    dst = x.reshape(x.size)
    plane_base = (i * x.shape[1] + ch) * h * w
    for s in range(h * w):
        dst[_u(plane_base + s)] = 0.0
    for ki in range(kh):
        y_lo, y_hi = _valid_range(ki * dh, ph, sh, h, oh)
        for kj in range(kw):
            x_lo, x_hi = _valid_range(kj * dw, pw, sw, w, ow)
            row = ((ch * kh + ki) * kw + kj) * r_mul + r_add
            offset = kj * dw - pw
            for y in range(y_lo, y_hi):
                col_base = (row * oh + y) * ow
                im_base = plane_base + (y * sh - ph + ki * dh) * w + offset
                for xo in range(x_lo, x_hi):
                    dst[_u(im_base + xo * sw)] += src[_u(col_base + xo)]


@njit(inline="always")
def _im2col_2d_unit(x, ksize, pad, stride, dilation, col, plane):
    """im2col_2d of one (image, channel) plane."""
    c = x.shape[1]
    rows = col.shape[1]
    flat = col.reshape(x.shape[0] * rows, col.shape[2], col.shape[3])
    i = plane // c
    _im2col_2d_plane(x, i, plane % c, ksize, pad, stride, dilation, flat, 1, i * rows)


@njit(cache=True, parallel=True)
def im2col_2d(x, ksize, pad, stride, dilation, col):
    """Lower images to columns.

    x (n, c, h, w) → col (n, c * kh * kw, oh, ow), every element written (padding as 0).
    ``ksize``, ``pad``, ``stride``, ``dilation`` are (h, w) int tuples. ``col`` must not alias x.
    """
    for plane in prange(x.shape[0] * x.shape[1]):
        _im2col_2d_unit(x, ksize, pad, stride, dilation, col, plane)


@njit(cache=True, nogil=True)
def im2col_2d_serial(x, ksize, pad, stride, dilation, col):
    """im2col_2d on the calling thread, without the GIL (for protonet's worker threads)."""
    for plane in range(x.shape[0] * x.shape[1]):
        _im2col_2d_unit(x, ksize, pad, stride, dilation, col, plane)


@njit(inline="always")
def _im2col_2d_rows_first_unit(x, ksize, pad, stride, dilation, col, row):
    """im2col_2d_rows_first of one kernel row (one contiguous row of ``col``)."""
    n, c, h, w = x.shape
    oh, ow = col.shape[2], col.shape[3]
    kh, kw = ksize
    ph, pw = pad
    sh, sw = stride
    dh, dw = dilation
    src = x.reshape(x.size)
    dst = col.reshape(col.size)
    kj = row % kw
    ki = (row // kw) % kh
    ch = row // (kw * kh)
    y_lo, y_hi = _valid_range(ki * dh, ph, sh, h, oh)
    x_lo, x_hi = _valid_range(kj * dw, pw, sw, w, ow)
    for i in range(n):
        _im2col_2d_kernel_row(src, (i * c + ch) * h * w, w, ki * dh - ph, kj * dw - pw,
                              sh, sw, y_lo, y_hi, x_lo, x_hi, dst, (row * n + i) * oh * ow,
                              oh, ow)


@njit(cache=True, parallel=True)
def im2col_2d_rows_first(x, ksize, pad, stride, dilation, col):
    """im2col_2d into the batched layout: col (c * kh * kw, n, oh, ow), row-major over rows.

    The columns of all n images sit side by side in each row, so one GEMM covers the batch.
    Parallel over the kernel rows: each iteration writes one contiguous row of ``col``.
    """
    for row in prange(col.shape[0]):
        _im2col_2d_rows_first_unit(x, ksize, pad, stride, dilation, col, row)


@njit(cache=True, nogil=True)
def im2col_2d_rows_first_serial(x, ksize, pad, stride, dilation, col):
    """im2col_2d_rows_first on the calling thread, without the GIL."""
    for row in range(col.shape[0]):
        _im2col_2d_rows_first_unit(x, ksize, pad, stride, dilation, col, row)


@njit(inline="always")
def _col2im_2d_unit(col, ksize, pad, stride, dilation, x, plane):
    """col2im_2d of one (image, channel) plane."""
    c = x.shape[1]
    rows = col.shape[1]
    flat = col.reshape(x.shape[0] * rows, col.shape[2], col.shape[3])
    i = plane // c
    _col2im_2d_plane(flat, 1, i * rows, i, plane % c, ksize, pad, stride, dilation, x)


@njit(cache=True, parallel=True)
def col2im_2d(col, ksize, pad, stride, dilation, x):
    """Fold columns back into images, summing overlaps (the adjoint of im2col_2d).

    col (n, c * kh * kw, oh, ow) → x (n, c, h, w), overwritten (zeroed, then accumulated in
    Caffe's order: kernel row, kernel column, output row, output column). ``x`` must not alias
    ``col``.
    """
    for plane in prange(x.shape[0] * x.shape[1]):
        _col2im_2d_unit(col, ksize, pad, stride, dilation, x, plane)


@njit(cache=True, nogil=True)
def col2im_2d_serial(col, ksize, pad, stride, dilation, x):
    """col2im_2d on the calling thread, without the GIL."""
    for plane in range(x.shape[0] * x.shape[1]):
        _col2im_2d_unit(col, ksize, pad, stride, dilation, x, plane)


@njit(inline="always")
def _col2im_2d_rows_first_unit(col, ksize, pad, stride, dilation, x, plane):
    """col2im_2d_rows_first of one (image, channel) plane."""
    n, c = x.shape[0], x.shape[1]
    flat = col.reshape(col.shape[0] * n, col.shape[2], col.shape[3])
    i = plane // c
    _col2im_2d_plane(flat, n, i, i, plane % c, ksize, pad, stride, dilation, x)


@njit(cache=True, parallel=True)
def col2im_2d_rows_first(col, ksize, pad, stride, dilation, x):
    """col2im_2d from the batched layout col (c * kh * kw, n, oh, ow); same order and result."""
    for plane in prange(x.shape[0] * x.shape[1]):
        _col2im_2d_rows_first_unit(col, ksize, pad, stride, dilation, x, plane)


@njit(cache=True, nogil=True)
def col2im_2d_rows_first_serial(col, ksize, pad, stride, dilation, x):
    """col2im_2d_rows_first on the calling thread, without the GIL."""
    for plane in range(x.shape[0] * x.shape[1]):
        _col2im_2d_rows_first_unit(col, ksize, pad, stride, dilation, x, plane)


# ---- N-D ------------------------------------------------------------------------------------

@njit(inline="always")
def _nd_image_index(k_flat, o_flat, im_shape, out_shape, ksize, pad, stride, dilation):
    """Flat index into the image plane for kernel offset k_flat at output o_flat; -1 if padding."""
    index = 0
    plane_stride = 1
    inside = True
    for d in range(len(ksize) - 1, -1, -1):
        kd = k_flat % ksize[d]
        k_flat //= ksize[d]
        od = o_flat % out_shape[d]
        o_flat //= out_shape[d]
        pos = od * stride[d] - pad[d] + kd * dilation[d]
        if pos < 0 or pos >= im_shape[d]:
            inside = False
        index += pos * plane_stride
        plane_stride *= im_shape[d]
    return index if inside else -1


@njit(inline="always")
def _im2col_nd_unit(x, im_shape, out_shape, ksize, pad, stride, dilation, col, plane):
    """im2col_nd of one (image, channel) plane."""
    c = x.shape[1]
    kernel_count = col.shape[1] // c
    i = plane // c
    ch = plane % c
    src = x[i, ch]
    for kk in range(kernel_count):
        out = col[i, ch * kernel_count + kk]
        for o in range(col.shape[2]):
            index = _nd_image_index(kk, o, im_shape, out_shape, ksize, pad, stride, dilation)
            out[o] = src[index] if index >= 0 else 0.0


@njit(cache=True, parallel=True)
def im2col_nd(x, im_shape, out_shape, ksize, pad, stride, dilation, col):
    """N-D im2col over flattened spatial axes.

    x (n, c, prod(im_shape)) → col (n, c * prod(ksize), prod(out_shape)), every element written.
    The shape and geometry arguments are int tuples of one entry per spatial axis (Caffe's
    ``im2col_nd_cpu``). ``col`` must not alias x.
    """
    for plane in prange(x.shape[0] * x.shape[1]):
        _im2col_nd_unit(x, im_shape, out_shape, ksize, pad, stride, dilation, col, plane)


@njit(cache=True, nogil=True)
def im2col_nd_serial(x, im_shape, out_shape, ksize, pad, stride, dilation, col):
    """im2col_nd on the calling thread, without the GIL."""
    for plane in range(x.shape[0] * x.shape[1]):
        _im2col_nd_unit(x, im_shape, out_shape, ksize, pad, stride, dilation, col, plane)


@njit(inline="always")
def _col2im_nd_unit(col, im_shape, out_shape, ksize, pad, stride, dilation, x, plane):
    """col2im_nd of one (image, channel) plane."""
    c = x.shape[1]
    kernel_count = col.shape[1] // c
    i = plane // c
    ch = plane % c
    dst = x[i, ch]
    for s in range(x.shape[2]):
        dst[s] = 0.0
    for kk in range(kernel_count):
        src = col[i, ch * kernel_count + kk]
        for o in range(col.shape[2]):
            index = _nd_image_index(kk, o, im_shape, out_shape, ksize, pad, stride, dilation)
            if index >= 0:
                dst[index] += src[o]


@njit(cache=True, parallel=True)
def col2im_nd(col, im_shape, out_shape, ksize, pad, stride, dilation, x):
    """N-D col2im, the adjoint of im2col_nd.

    col (n, c * prod(ksize), prod(out_shape)) → x (n, c, prod(im_shape)), overwritten (zeroed,
    then accumulated in Caffe's order: kernel offset, then output position). ``x`` must not
    alias ``col``.
    """
    for plane in prange(x.shape[0] * x.shape[1]):
        _col2im_nd_unit(col, im_shape, out_shape, ksize, pad, stride, dilation, x, plane)


@njit(cache=True, nogil=True)
def col2im_nd_serial(col, im_shape, out_shape, ksize, pad, stride, dilation, x):
    """col2im_nd on the calling thread, without the GIL."""
    for plane in range(x.shape[0] * x.shape[1]):
        _col2im_nd_unit(col, im_shape, out_shape, ksize, pad, stride, dilation, x, plane)
