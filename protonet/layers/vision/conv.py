"""The convolution family: Convolution, Deconvolution and Im2col, all read ``convolution_param``.

Convolution is im2col + one BLAS GEMM per image and group (numpy ``matmul`` over a chunk of the
batch in one call); 1x1 convolutions with stride 1 and no padding skip im2col and multiply the
image directly. When the output plane is small (``col_dim`` ≤ ``BATCHED_MAX_COL_DIM``), a
per-image GEMM is too small for BLAS (N = OH·OW, 49–256), so the *batched* path lowers a chunk
of images into one ``(rows, images · col_dim)`` matrix instead and issues one GEMM per group
for the whole chunk (N = images · OH·OW); the output and the top diff are transposed between
``(images, channels, col_dim)`` and ``(channels, images · col_dim)`` on the way.
A Convolution with few output channels over a deep window (``conv_out_channels`` ≤
``ROWS_MAX_OUTPUT_CHANNELS``, ``kernel_dim`` ≥ ``ROWS_MIN_KERNEL_DIM``, small output planes, one
group, 2-D) uses the *row* layout instead (protonet/kernels/im2row.py): a chunk of images is
copied channels-last, lowered to one row per output position, and multiplied as colᵀ · Wᵀ,
the orientation in which OpenBLAS runs such thin products fastest; the output is transposed back
to planes. The weights are read in (out, kh, kw, c) order for it, a small copy per pass.
Deconvolution is the same machinery run backwards (Caffe's ``BaseConvolutionLayer`` with
``reverse_dimensions``): its forward is convolution's data gradient and its data gradient is
convolution's forward.

Chunks are independent pieces of work: protonet's worker threads (protonet/threads.py) take
them in turn, each with its own scratch and single-threaded BLAS, and the weight gradient adds
the chunks' products in image order, so every result is the same for any thread count.

Roles, as in Caffe's ``base_conv_layer.cpp``: the *image* side is what im2col lowers (the bottom
of a Convolution, the top of a Deconvolution), with ``conv_in_channels`` channels; the *output*
side is what the GEMM produces (the top of a Convolution, the bottom of a Deconvolution), with
``conv_out_channels`` channels. The weights are ``(conv_out_channels, conv_in_channels / group,
k...)`` in both cases.
"""

import numpy as np

from ...fillers import fill
from ... import threads
from ...kernels import im2col as kernels
from ...kernels import im2row
from ..base import Layer
from ..registry import register

# A col buffer (with, batched, its transposed output) holds a chunk of the batch; this bounds its
# size (elements, 2 MB; one per worker thread): chunks that stay in cache between im2col and the
# GEMM run 15-20 % faster than 16 MB ones (CIFAR-10 quick, one thread), and small chunks give
# the threads enough pieces.
COL_BUFFER_MAX_ELEMENTS = 1 << 19
# The fewest output positions (GEMM columns) in a band of a large image's forward.
BAND_MIN_COLUMNS = 1024
# Output planes up to this many elements use one GEMM over a chunk of images (see above).
BATCHED_MAX_COL_DIM = 1024
# A 1x1 convolution multiplies the images themselves: batching them costs a copy in and out,
# which pays only for small planes (ResNet-50 res5, 7x7: 8 % faster batched; GoogLeNet
# inception 1x1s at 14x14 and 28x28: 4-10 % faster per image, one thread).
BATCHED_MAX_COL_DIM_1X1 = 128

# The row layout (see the module docstring) pays two transposes per pass; they pay off when the
# GEMM is thin (few output channels) and long (a deep window). CIFAR-10 quick conv2 (32
# channels out, 5x5x32 window): forward 27 → 18 ms on one thread; conv1 (5x5x3) loses.
ROWS_MAX_OUTPUT_CHANNELS = 64
ROWS_MIN_KERNEL_DIM = 256

# Workspace slots (one of each per worker thread): the col buffer followed by the batched
# path's transposed output, and a weight-gradient product waiting to be added.
SCRATCH_SLOT = "conv_scratch"
WEIGHT_SLOT = "conv_weight_product"

# (repeated field, prefix of its 2-D _h/_w form or None, default or None when required)
_SPATIAL_FIELDS = {
    "kernel": ("kernel_size", "kernel", None),
    "stride": ("stride", "stride", 1),
    "pad": ("pad", "pad", 0),
    "dilation": ("dilation", None, 1),
}


def parse_spatial_field(layer, message, field, hw_prefix, default, num_spatial_axes):
    """One value per spatial axis from a repeated field or its 2-D ``_h``/``_w`` form.

    A repeated field may be given once (applies to every axis) or once per axis; when it is
    absent, ``default`` applies (a required field has ``default=None``). The ``_h``/``_w`` form
    is 2-D only and excludes the repeated form. Returns a tuple of ints.
    """
    values = [int(v) for v in getattr(message, field)]
    if hw_prefix is not None:
        h_name, w_name = f"{hw_prefix}_h", f"{hw_prefix}_w"
        if message.HasField(h_name) or message.HasField(w_name):
            if num_spatial_axes != 2:
                layer.fail(f"{h_name} & {w_name} can only be used for 2-D convolution; the "
                           f"bottom has {num_spatial_axes} spatial axes: use {field}")
            if values:
                layer.fail(f"give either {field} or {h_name}/{w_name}, not both")
            return int(getattr(message, h_name)), int(getattr(message, w_name))
    if not values and default is not None:
        return (default,) * num_spatial_axes
    if len(values) not in (1, num_spatial_axes):
        required = " (it is required)" if default is None and not values else ""
        layer.fail(f"{field} given {len(values)} times for {num_spatial_axes} spatial axes"
                   f"{required}; give it once or once per axis")
    return tuple(values * num_spatial_axes if len(values) == 1 else values)


def _gemm(a, b, out, lane):
    """out = a @ b (stacked, numpy broadcasting). On a worker thread (``lane`` set) one BLAS
    call; for a chunk run alone, each 2-D product is split over the worker threads instead
    (BLAS is held to one thread during a net's passes), with the same numbers."""
    if lane is not None:
        np.matmul(a, b, out=out)
        return
    lead = out.shape[:-2]
    a = np.broadcast_to(a, lead + a.shape[-2:])
    b = np.broadcast_to(b, lead + b.shape[-2:])
    for index in np.ndindex(lead):
        threads.matmul(a[index], b[index], out[index])


def _channel_axis(layer, bottom, axis):
    n = bottom.num_axes
    if not -n <= axis < n:
        layer.fail(f"axis {axis} is out of range for a bottom with {n} axes {bottom.shape}")
    return axis + n if axis < 0 else axis


class ConvGeometry:
    """Kernel, stride, pad and dilation per spatial axis, and the im2col/col2im calls they drive.

    ``force_nd`` (``force_nd_im2col``) selects the N-D kernels for 2-D inputs too; both give the
    same numbers, as in Caffe.
    """

    def __init__(self, layer, conv_param, num_spatial_axes):
        parsed = {name: parse_spatial_field(layer, conv_param, field, hw, default,
                                            num_spatial_axes)
                  for name, (field, hw, default) in _SPATIAL_FIELDS.items()}
        for name in ("kernel", "stride", "dilation"):
            if any(v <= 0 for v in parsed[name]):
                layer.fail(f"{name} must be positive on every spatial axis, got {parsed[name]}")
        self.ksize = parsed["kernel"]
        self.stride = parsed["stride"]
        self.pad = parsed["pad"]
        self.dilation = parsed["dilation"]
        self.force_nd = bool(conv_param.force_nd_im2col)
        self.kernel_count = int(np.prod(self.ksize, dtype=np.int64))
        self.extent = tuple(d * (k - 1) + 1 for k, d in zip(self.ksize, self.dilation))

    @property
    def is_1x1(self):
        """im2col is the identity: every kernel 1, stride 1, pad 0 (base_conv_layer.cpp)."""
        return all(k == 1 and s == 1 and p == 0
                   for k, s, p in zip(self.ksize, self.stride, self.pad))

    def conv_output_shape(self, layer, in_shape):
        """Caffe's ``(in + 2p - extent) / s + 1`` per axis; fails when the kernel does not fit."""
        # Unlike Caffe: conv_layer.cpp does not check this, and C++ division truncating toward
        # zero then gives a size-1 output that reads only padding. We refuse such a layer.
        for axis, (size, ext, p) in enumerate(zip(in_shape, self.extent, self.pad)):
            if size + 2 * p < ext:
                layer.fail(f"kernel extent {ext} (kernel {self.ksize}, dilation "
                           f"{self.dilation}) is larger than the padded input {size} + 2*{p} "
                           f"on spatial axis {axis}; use a smaller kernel or more padding")
        return tuple((size + 2 * p - ext) // s + 1
                     for size, ext, p, s in zip(in_shape, self.extent, self.pad, self.stride))

    def deconv_output_shape(self, layer, in_shape):
        """Caffe's ``s (in - 1) + extent - 2p`` per axis; fails when it is not positive."""
        shape = tuple(s * (size - 1) + ext - 2 * p
                      for size, ext, p, s in zip(in_shape, self.extent, self.pad, self.stride))
        if any(size <= 0 for size in shape):
            layer.fail(f"deconvolution output shape {shape} from input {tuple(in_shape)} is not "
                       f"positive (kernel {self.ksize}, stride {self.stride}, pad {self.pad}); "
                       f"use less padding")
        return shape

    def _use_2d(self, num_spatial_axes):
        return num_spatial_axes == 2 and not self.force_nd

    def im2col(self, im, col_shape, col, rows_first=False, serial=False):
        """im (n, c, *im_spatial) → col (n · c · kernel_count · prod(col_shape) elements).

        ``rows_first``: col is laid out (c · kernel_count, n, *col_shape), the batched layout.
        ``serial``: run on the calling thread (a worker thread of protonet/threads.py).
        """
        n, c = im.shape[:2]
        rows = c * self.kernel_count
        if self._use_2d(len(col_shape)):
            if rows_first:
                kernel = (kernels.im2col_2d_rows_first_serial if serial
                          else kernels.im2col_2d_rows_first)
                kernel(im, self.ksize, self.pad, self.stride, self.dilation,
                       col.reshape((rows, n) + tuple(col_shape)))
            else:
                kernel = kernels.im2col_2d_serial if serial else kernels.im2col_2d
                kernel(im, self.ksize, self.pad, self.stride, self.dilation,
                       col.reshape((n, rows) + tuple(col_shape)))
            return
        view = (col.reshape(rows, n, -1).swapaxes(0, 1) if rows_first
                else col.reshape(n, rows, -1))
        kernel = kernels.im2col_nd_serial if serial else kernels.im2col_nd
        kernel(im.reshape(n, c, -1), tuple(im.shape[2:]), tuple(col_shape), self.ksize,
               self.pad, self.stride, self.dilation, view)

    def im2col_rows(self, im, first_row, col_shape, col, serial=False):
        """im2col (2-D) of output rows first_row..first_row + col_shape[0] only.

        Moving the output origin down by r rows is moving the top padding up by r·stride: the
        kernels take a pad that may be negative."""
        n, c = im.shape[:2]
        kernel = kernels.im2col_2d_serial if serial else kernels.im2col_2d
        kernel(im, self.ksize, (self.pad[0] - first_row * self.stride[0], self.pad[1]),
               self.stride, self.dilation, col.reshape((n, c * self.kernel_count)
                                                       + tuple(col_shape)))

    def col2im(self, col, col_shape, im, rows_first=False, serial=False):
        """Adjoint of :meth:`im2col`; overwrites im (n, c, *im_spatial)."""
        n, c = im.shape[:2]
        rows = c * self.kernel_count
        if self._use_2d(len(col_shape)):
            if rows_first:
                kernel = (kernels.col2im_2d_rows_first_serial if serial
                          else kernels.col2im_2d_rows_first)
                kernel(col.reshape((rows, n) + tuple(col_shape)), self.ksize, self.pad,
                       self.stride, self.dilation, im)
            else:
                kernel = kernels.col2im_2d_serial if serial else kernels.col2im_2d
                kernel(col.reshape((n, rows) + tuple(col_shape)), self.ksize, self.pad,
                       self.stride, self.dilation, im)
            return
        view = (col.reshape(rows, n, -1).swapaxes(0, 1) if rows_first
                else col.reshape(n, rows, -1))
        kernel = kernels.col2im_nd_serial if serial else kernels.col2im_nd
        kernel(view, tuple(im.shape[2:]), tuple(col_shape), self.ksize, self.pad, self.stride,
               self.dilation, im.reshape(n, c, -1))


class BaseConvolutionLayer(Layer):
    """Shared by Convolution and Deconvolution; they differ only in ``reverse_dimensions``.

    Holds the parameter parsing, param blobs, shapes, col buffer and the three GEMM passes:
    image → output (``_im_to_out``), output → image (``_out_to_im``) and the weight gradient
    (``_weight_gradient``), each over chunks of the batch.
    """

    min_bottoms = 1
    min_tops = 1
    equal_bottoms_tops = True
    reverse_dimensions = False

    def setup(self, bottoms, tops):
        conv_param = self.param.convolution_param
        self.channel_axis = _channel_axis(self, bottoms[0], conv_param.axis)
        self.num_spatial_axes = bottoms[0].num_axes - self.channel_axis - 1
        self.geometry = ConvGeometry(self, conv_param, self.num_spatial_axes)
        self.is_1x1 = self.geometry.is_1x1
        self.channels = bottoms[0].shape[self.channel_axis]
        self.num_output = int(conv_param.num_output)
        self.group = int(conv_param.group)
        self.bias_term = bool(conv_param.bias_term)
        self._check_channels()
        if self.reverse_dimensions:
            # Caffe quirk: Deconvolution's weights are (C_in, num_output / group, k...), the
            # transpose of a Convolution's (deconv_layer.cpp via base_conv_layer.cpp).
            self.conv_out_channels, self.conv_in_channels = self.channels, self.num_output
        else:
            self.conv_out_channels, self.conv_in_channels = self.num_output, self.channels
        weight_shape = ((self.conv_out_channels, self.conv_in_channels // self.group)
                        + self.geometry.ksize)
        shapes = [weight_shape] + ([(self.num_output,)] if self.bias_term else [])
        if self.blobs:
            self.check_param_shapes(shapes)
        else:
            fill(self.add_param_blob(weight_shape).data, conv_param.weight_filler)
            if self.bias_term:
                fill(self.add_param_blob((self.num_output,)).data, conv_param.bias_filler)
        self.kernel_dim = self.conv_in_channels // self.group * self.geometry.kernel_count
        self._bias_buffer = np.zeros(self.num_output, dtype=np.float32)

    def _check_channels(self):
        if self.num_output <= 0:
            self.fail(f"num_output must be positive, got {self.num_output}")
        if self.group <= 0:
            self.fail(f"group must be positive, got {self.group}")
        if self.channels <= 0:
            self.fail(f"the bottom has {self.channels} channels; it needs at least one")
        if self.channels % self.group:
            self.fail(f"group {self.group} does not divide the {self.channels} input channels")
        if self.num_output % self.group:
            self.fail(f"group {self.group} does not divide num_output {self.num_output}")

    def output_spatial_shape(self, in_shape):
        raise NotImplementedError

    def reshape(self, bottoms, tops):
        bottom = bottoms[0]
        axis = self.channel_axis
        if bottom.num_axes != axis + 1 + self.num_spatial_axes:
            self.fail(f"the bottom's number of axes may not change: set up with "
                      f"{axis + 1 + self.num_spatial_axes}, now {bottom.shape}")
        if bottom.shape[axis] != self.channels:
            self.fail(f"bottom has {bottom.shape[axis]} channels, the weights expect "
                      f"{self.channels}")
        for i, other in enumerate(bottoms[1:], start=1):
            if other.shape != bottom.shape:
                self.fail(f"all bottoms must have one shape: bottom 0 is {bottom.shape}, "
                          f"bottom {i} is {other.shape}")
        in_spatial = tuple(bottom.shape[axis + 1:])
        out_spatial = self.output_spatial_shape(in_spatial)
        for top in tops:
            top.reshape(tuple(bottom.shape[:axis]) + (self.num_output,) + out_spatial)
        self.num = bottom.count_axes(0, axis)
        im_spatial, col_spatial = ((out_spatial, in_spatial) if self.reverse_dimensions
                                   else (in_spatial, out_spatial))
        self.col_spatial = col_spatial
        self.im_shape = (self.num, self.conv_in_channels) + im_spatial
        self.out_shape = (self.num, self.conv_out_channels) + col_spatial
        self.col_dim = int(np.prod(col_spatial, dtype=np.int64))
        self.top_shape3 = (self.num, self.num_output, int(np.prod(out_spatial, dtype=np.int64)))
        image_col = self.kernel_dim * self.group * self.col_dim
        # The chunk depends on the shapes alone, never on the thread count: the batched weight
        # gradient sums over a chunk's images inside one GEMM.
        self.chunk = max(1, min(self.num, COL_BUFFER_MAX_ELEMENTS // max(image_col, 1)))
        self.batched = self.num > 1 and self.chunk > 1 and self.col_dim <= (
            BATCHED_MAX_COL_DIM_1X1 if self.is_1x1 else BATCHED_MAX_COL_DIM)
        if self.batched:
            # The batched layout also needs the transposed output: the budget covers both.
            image_out = self.conv_out_channels * self.col_dim
            self.chunk = max(2, min(self.num, COL_BUFFER_MAX_ELEMENTS // (image_col + image_out)))
        # One image's columns larger than the buffer: the forward lowers and multiplies it a
        # band of output rows at a time (2-D only), so the columns stay in cache; a band keeps
        # at least BAND_MIN_COLUMNS output positions, or its GEMM gets too thin.
        self.band_rows = None
        if (image_col > COL_BUFFER_MAX_ELEMENTS and not self.is_1x1
                and self.geometry._use_2d(len(col_spatial))):
            height, width = col_spatial
            rows = max(COL_BUFFER_MAX_ELEMENTS // (image_col // height),
                       -(-BAND_MIN_COLUMNS // width))
            self.band_rows = rows if rows < height else None
        self.rows = (not self.reverse_dimensions and self.group == 1 and not self.is_1x1
                     and self.geometry._use_2d(len(col_spatial))
                     and self.col_dim <= BATCHED_MAX_COL_DIM
                     and self.kernel_dim >= ROWS_MIN_KERNEL_DIM
                     and self.conv_out_channels <= ROWS_MAX_OUTPUT_CHANNELS)
        # Scratch lives in the net's workspace (conv layers never run at the same time), one
        # set per worker thread; lane 0 is also the scratch of a chunk run alone.
        if self.rows:
            # Rows, then the output rows, then the channels-last images (or their diff).
            image_out = self.conv_out_channels * self.col_dim
            image_in = int(np.prod(self.im_shape[1:], dtype=np.int64))
            self.batched = False
            self.band_rows = None
            self.chunk = max(1, min(self.num, COL_BUFFER_MAX_ELEMENTS
                                    // (image_col + image_out + image_in)))
            self.out_offset = self.chunk * image_col
            self.in_offset = self.out_offset + self.chunk * image_out
            scratch = self.in_offset + self.chunk * image_in
        else:
            self.out_offset = self.chunk * image_col if self.batched or not self.is_1x1 else 0
            scratch = self.out_offset + (self.chunk * self.conv_out_channels * self.col_dim
                                         if self.batched else 0)
        lanes = min(threads.num_threads(), -(-self.num // self.chunk))
        for lane in range(lanes):
            self.workspace.reserve(f"{SCRATCH_SLOT}{lane}", scratch)

    # ---- views and scratch -------------------------------------------------------------------
    # ``lane`` is the worker thread running a chunk (protonet/threads.py), None for a chunk run
    # alone on the calling thread with Numba's parallel kernels and threaded BLAS.
    def _scratch(self, slot, lane, count, offset=0):
        return self.workspace.get(f"{slot}{lane or 0}", offset + count)[offset:]

    def _col(self, lane, count):
        """The col buffer of ``lane``: the start of its scratch."""
        return self._scratch(SCRATCH_SLOT, lane, count)

    def _groups(self, array, start, stop, rows):
        """array[start:stop] viewed as (images, group, rows per group, col_dim)."""
        return array[start:stop].reshape(stop - start, self.group, rows, self.col_dim)

    def _run_chunks(self, piece, ordered_sum=None):
        """``piece(start, stop, lane)`` for every chunk of the batch, on the worker threads."""
        chunks = [(start, min(start + self.chunk, self.num))
                  for start in range(0, self.num, self.chunk)]
        threads.run(lambda i, lane: piece(*chunks[i], lane), len(chunks),
                    on_error=ordered_sum.abandon if ordered_sum is not None else None)

    def _weight_groups(self):
        return self.blobs[0].data.reshape(self.group, -1, self.kernel_dim)

    def _columns(self, im, start, stop, lane):
        """im2col of images start..stop: (images, group, kernel_dim, col_dim), or in the batched
        layout (group, kernel_dim, images · col_dim)."""
        m = stop - start
        count = self.group * self.kernel_dim * m * self.col_dim
        if self.batched:
            col = self._col(lane, count)
            self.geometry.im2col(im[start:stop], self.col_spatial, col, rows_first=True,
                                 serial=lane is not None)
            return col.reshape(self.group, self.kernel_dim, m * self.col_dim)
        if self.is_1x1:
            return self._groups(im, start, stop, self.kernel_dim)
        col = self._col(lane, count)
        self.geometry.im2col(im[start:stop], self.col_spatial, col, serial=lane is not None)
        return col.reshape(m, self.group, self.kernel_dim, self.col_dim)

    def _batched_out(self, m, lane):
        """Scratch for the output role in the batched layout, (channels, images, col_dim)."""
        count = self.conv_out_channels * m * self.col_dim
        buffer = self._scratch(SCRATCH_SLOT, lane, count, self.out_offset)
        return buffer.reshape(self.conv_out_channels, m, self.col_dim)

    def _out_chunk(self, out, start, stop, lane):
        """The output role of images start..stop as the GEMMs read it: (images, group, mg,
        col_dim), or in the batched layout a copy (group, mg, images · col_dim)."""
        mg = self.conv_out_channels // self.group
        if not self.batched:
            return self._groups(out, start, stop, mg)
        m = stop - start
        buffer = self._batched_out(m, lane)
        np.copyto(buffer, out[start:stop].reshape(m, self.conv_out_channels,
                                                  self.col_dim).swapaxes(0, 1))
        return buffer.reshape(self.group, mg, m * self.col_dim)

    # ---- one chunk of each GEMM pass ----------------------------------------------------------
    def _im_to_out_chunk(self, im, out, start, stop, lane, bias):
        """out[start:stop] = W · im2col(im[start:stop]) (+ bias) (Caffe's forward_cpu_gemm)."""
        weights = self._weight_groups()
        mg = self.conv_out_channels // self.group
        columns = self._columns(im, start, stop, lane)
        m = stop - start
        planes = out[start:stop].reshape(m, self.conv_out_channels, self.col_dim)
        if not self.batched:
            _gemm(weights, columns, self._groups(out, start, stop, mg), lane)
            if bias is not None:
                planes += bias
            return
        buffer = self._batched_out(m, lane)
        _gemm(weights, columns, buffer.reshape(self.group, mg, m * self.col_dim), lane)
        if bias is None:
            np.copyto(planes, buffer.swapaxes(0, 1))
        else:
            np.add(buffer.swapaxes(0, 1), bias, out=planes)

    def _weight_gradient_chunk(self, im, out_chunk, start, stop, lane, weight_sum):
        """weight diff += out ⊛ imᵀ of images start..stop (Caffe's weight_cpu_gemm).

        ``weight_sum`` (an OrderedSum over the weight diff) adds the chunk's product (batched:
        one per chunk, numbered by chunk; else one per image, numbered by image) in order.
        Caffe quirk: the weight gradient is added to the diff, never assigned, so successive
        backwards and several bottoms accumulate (base_conv_layer.cpp, GEMM with beta 1).
        """
        columns = self._columns(im, start, stop, lane)
        product = self._scratch(WEIGHT_SLOT, lane, self.blobs[0].count).reshape(
            self.group, -1, self.kernel_dim)
        if self.batched:
            _gemm(out_chunk, columns.transpose(0, 2, 1), product, lane)
            weight_sum.add(start // self.chunk, product)
            return
        for i in range(stop - start):
            _gemm(out_chunk[i], columns[i].transpose(0, 2, 1), product, lane)
            weight_sum.add(start + i, product)

    def _out_to_im_chunk(self, out_chunk, im, start, stop, lane):
        """im[start:stop] = col2im(Wᵀ · out) (Caffe's backward_cpu_gemm; overwrites im)."""
        weights_t = self._weight_groups().transpose(0, 2, 1)
        m = stop - start
        count = self.group * self.kernel_dim * m * self.col_dim
        serial = lane is not None
        if self.batched:
            col = self._col(lane, count)
            _gemm(weights_t, out_chunk, col.reshape(self.group, self.kernel_dim, -1), lane)
            self.geometry.col2im(col, self.col_spatial, im[start:stop], rows_first=True,
                                 serial=serial)
        elif self.is_1x1:
            _gemm(weights_t, out_chunk, self._groups(im, start, stop, self.kernel_dim), lane)
        else:
            col = self._col(lane, count)
            _gemm(weights_t, out_chunk, col.reshape(m, self.group, self.kernel_dim,
                                                    self.col_dim), lane)
            self.geometry.col2im(col, self.col_spatial, im[start:stop], serial=serial)

    # ---- the row layout (Convolution only) ----------------------------------------------------
    def _rows_weights(self):
        """The weights as (out, kh·kw·c): the column order of the row layout."""
        weights = self.blobs[0].data
        return np.ascontiguousarray(weights.transpose(0, 2, 3, 1)).reshape(
            weights.shape[0], -1)

    def _rows_images(self, im, start, stop, lane):
        """Scratch for images start..stop channels-last, (images, h, w, c)."""
        m = stop - start
        c, h, w = self.im_shape[1:]
        return self._scratch(SCRATCH_SLOT, lane, m * c * h * w, self.in_offset).reshape(
            m, h, w, c)

    def _rows_lower(self, im, start, stop, lane):
        """The rows of images start..stop: (images · col_dim, kernel_dim)."""
        m = stop - start
        images = self._rows_images(im, start, stop, lane)
        im2row.transpose_batched(im[start:stop].reshape(m, self.conv_in_channels, -1),
                                 images.reshape(m, -1, self.conv_in_channels))
        col = self._col(lane, m * self.col_dim * self.kernel_dim).reshape(-1, self.kernel_dim)
        g = self.geometry
        im2row.im2row_2d(images, g.ksize, g.pad, g.stride, g.dilation, self.col_spatial, col)
        return col

    def _rows_out(self, m, lane):
        count = m * self.col_dim * self.conv_out_channels
        return self._scratch(SCRATCH_SLOT, lane, count, self.out_offset).reshape(
            -1, self.conv_out_channels)

    def _rows_forward_chunk(self, im, out, start, stop, weights, lane, bias):
        """out[start:stop] = W ⊛ im[start:stop] (+ bias) through the row layout."""
        m = stop - start
        rows = self._rows_out(m, lane)
        _gemm(self._rows_lower(im, start, stop, lane), weights.T, rows, lane)
        planes = out[start:stop].reshape(m, -1, self.col_dim)
        im2row.transpose_batched(rows.reshape(m, self.col_dim, -1), planes)
        if bias is not None:
            planes += bias

    def _rows_gradients_chunk(self, im, out, im_diff, start, stop, weights, weight_sum, lane):
        """Both gradients of images start..stop through the row layout (see _gradients)."""
        m = stop - start
        out_rows = self._rows_out(m, lane)
        im2row.transpose_batched(out[start:stop].reshape(m, -1, self.col_dim),
                                 out_rows.reshape(m, self.col_dim, -1))
        if weight_sum is not None:
            col = self._rows_lower(im, start, stop, lane)
            product = self._scratch(WEIGHT_SLOT, lane, weights.size).reshape(weights.shape)
            _gemm(out_rows.T, col, product, lane)
            weight_sum.add(start // self.chunk, product.reshape(weight_sum.target.shape))
        if im_diff is not None:
            col = self._col(lane, m * self.col_dim * self.kernel_dim).reshape(
                -1, self.kernel_dim)
            _gemm(out_rows, weights, col, lane)
            images = self._rows_images(im_diff, start, stop, lane)
            g = self.geometry
            im2row.row2im_2d(col, g.ksize, g.pad, g.stride, g.dilation, self.col_spatial,
                             images)
            im2row.transpose_batched(images.reshape(m, -1, self.conv_in_channels),
                                     im_diff[start:stop].reshape(m, self.conv_in_channels, -1))

    # ---- the passes over the batch: chunks run on protonet's worker threads --------------------
    def _weight_sum(self):
        return threads.OrderedSum(self.blobs[0].diff.reshape(self.group, -1, self.kernel_dim))

    def _im_to_out(self, im, out, bias=None):
        """out = W ⊛ im (+ bias): Caffe's forward_cpu_gemm. im/out are role-shaped arrays.

        ``bias`` (conv_out_channels,) is added to each piece of the output right after its
        GEMM, while it is still in cache (a separate pass over the top cost a 1x1
        convolution a fifth of its forward)."""
        if bias is not None:
            bias = bias.reshape(-1, 1)
        if self.rows:
            weights = self._rows_weights()
            self._run_chunks(lambda start, stop, lane: self._rows_forward_chunk(
                im, out, start, stop, weights, lane, bias))
            return
        if self.band_rows is None:
            self._run_chunks(lambda start, stop, lane:
                             self._im_to_out_chunk(im, out, start, stop, lane, bias))
            return
        height = self.col_spatial[0]
        bands = [(i, y0, min(y0 + self.band_rows, height))
                 for i in range(self.num) for y0 in range(0, height, self.band_rows)]
        threads.run(lambda k, lane: self._im_to_out_band(im, out, *bands[k], lane, bias),
                    len(bands))

    def _im_to_out_band(self, im, out, i, y0, y1, lane, bias):
        """Output rows y0..y1 of image i. The bands depend on the shapes alone; OpenBLAS may
        round a band's product in the last bit differently from a whole image's."""
        width = self.col_spatial[1]
        count = self.group * self.kernel_dim * (y1 - y0) * width
        col = self._col(lane, count)
        self.geometry.im2col_rows(im[i:i + 1], y0, (y1 - y0, width), col,
                                  serial=lane is not None)
        mg = self.conv_out_channels // self.group
        rows = out[i].reshape(self.group, mg, self.col_dim)[:, :, y0 * width:y1 * width]
        _gemm(self._weight_groups(), col.reshape(self.group, self.kernel_dim, -1), rows, lane)
        if bias is not None:
            rows += bias.reshape(self.group, mg, 1)

    def _out_to_im(self, out, im):
        """im = Wᵀ ⊛ out, folded back by col2im (overwrites im)."""
        self._run_chunks(lambda start, stop, lane: self._out_to_im_chunk(
            self._out_chunk(out, start, stop, lane), im, start, stop, lane))

    def _weight_gradient(self, im, out):
        """weight diff += Σ_images out ⊛ imᵀ (accumulates, in image order)."""
        weight_sum = self._weight_sum()
        self._run_chunks(lambda start, stop, lane: self._weight_gradient_chunk(
            im, self._out_chunk(out, start, stop, lane), start, stop, lane, weight_sum),
            weight_sum)

    def _gradients(self, im, out, im_diff, weights):
        """Both gradients in one pass over the batch: per chunk, the weight gradient, then the
        data gradient into ``im_diff`` (None: not wanted). ``weights``: whether the weight
        gradient is wanted. Each chunk of ``out`` is read (and, batched, transposed) once and
        is still in cache for the second GEMM; the numbers are those of the two passes."""
        if self.rows:
            # The weight diff seen in the row layout's (out, kh, kw, c) order.
            weight_sum = (threads.OrderedSum(self.blobs[0].diff.transpose(0, 2, 3, 1))
                          if weights else None)
            rows_weights = self._rows_weights()
            self._run_chunks(lambda start, stop, lane: self._rows_gradients_chunk(
                im, out, im_diff, start, stop, rows_weights, weight_sum, lane), weight_sum)
            return
        weight_sum = self._weight_sum() if weights else None

        def piece(start, stop, lane):
            out_chunk = self._out_chunk(out, start, stop, lane)
            if weights:
                self._weight_gradient_chunk(im, out_chunk, start, stop, lane, weight_sum)
            if im_diff is not None:
                # The data gradient overwrites the col buffer the weight gradient read.
                self._out_to_im_chunk(out_chunk, im_diff, start, stop, lane)

        self._run_chunks(piece, weight_sum)

    def _add_bias(self, top):
        if self.bias_term:
            top.data.reshape(self.top_shape3)[...] += self.blobs[1].data[:, None]

    def _bias_gradient(self, top):
        if self.bias_term and self.param_propagate_down[1]:
            np.sum(top.diff.reshape(self.top_shape3), axis=(0, 2), out=self._bias_buffer)
            self.blobs[1].diff[...] += self._bias_buffer


@register("Convolution")
class ConvolutionLayer(BaseConvolutionLayer):
    """y[n, o] = Σ_c W[o, c] ⋆ x[n, g·C/G + c] + b[o] (cross-correlation, per group g).

    convolution_param: num_output (required, > 0), bias_term (true), kernel_size (required;
    once or once per spatial axis) or kernel_h/kernel_w, stride (1) or stride_h/stride_w, pad (0)
    or pad_h/pad_w, dilation (1), group (1; divides channels and num_output), axis (1: the
    channel axis; axes before it are batch axes), force_nd_im2col (false), weight_filler
    (constant 0), bias_filler (constant 0). engine is ignored: there is one CPU engine.

    Bottoms: one or more of the same shape (N..., C, *spatial), each convolved with the same
    weights. Tops: one per bottom, (N..., num_output, *out), out = (in + 2p - (d(k-1)+1)) / s + 1.
    Params: weights (num_output, C / group, *kernel), bias (num_output) if bias_term.
    In-place: no.
    """

    def output_spatial_shape(self, in_shape):
        return self.geometry.conv_output_shape(self, in_shape)

    def forward(self, bottoms, tops):
        bias = self.blobs[1].data if self.bias_term else None
        for bottom, top in zip(bottoms, tops):
            self._im_to_out(bottom.data.reshape(self.im_shape), top.data.reshape(self.out_shape),
                            bias)

    def backward(self, tops, propagate_down, bottoms):
        for top, down, bottom in zip(tops, propagate_down, bottoms):
            self._bias_gradient(top)
            if self.param_propagate_down[0] or down:
                self._gradients(bottom.data.reshape(self.im_shape),
                                top.diff.reshape(self.out_shape),
                                bottom.diff.reshape(self.im_shape) if down else None,
                                self.param_propagate_down[0])


@register("Deconvolution")
class DeconvolutionLayer(BaseConvolutionLayer):
    """Transposed convolution: y = Wᵀ ⊛ x + b, the data gradient of a Convolution.

    convolution_param: num_output (required, > 0), bias_term (true), kernel_size (required;
    once or once per spatial axis) or kernel_h/kernel_w, stride (1) or stride_h/stride_w, pad (0)
    or pad_h/pad_w, dilation (1), group (1; divides channels and num_output), axis (1: the
    channel axis; axes before it are batch axes), force_nd_im2col (false), weight_filler
    (constant 0), bias_filler (constant 0). engine is ignored: there is one CPU engine.

    Bottoms: one or more of the same shape (N..., C, *spatial). Tops: one per bottom,
    (N..., num_output, *out), out = s (in - 1) + d(k-1)+1 - 2p.
    Params: weights (C, num_output / group, *kernel), bias (num_output) if bias_term.
    In-place: no.
    """

    reverse_dimensions = True

    def output_spatial_shape(self, in_shape):
        return self.geometry.deconv_output_shape(self, in_shape)

    def forward(self, bottoms, tops):
        for bottom, top in zip(bottoms, tops):
            self._out_to_im(bottom.data.reshape(self.out_shape), top.data.reshape(self.im_shape))
            self._add_bias(top)

    def backward(self, tops, propagate_down, bottoms):
        for top, down, bottom in zip(tops, propagate_down, bottoms):
            self._bias_gradient(top)
            top_diff = top.diff.reshape(self.im_shape)
            if self.param_propagate_down[0]:
                self._weight_gradient(top_diff, bottom.data.reshape(self.out_shape))
            if down:
                self._im_to_out(top_diff, bottom.diff.reshape(self.out_shape))


@register("Im2col")
class Im2colLayer(Layer):
    """y = im2col(x): every kernel window of every channel laid out along the channel axis.

    convolution_param: kernel_size (required) or kernel_h/kernel_w, stride (1) or
    stride_h/stride_w, pad (0) or pad_h/pad_w, dilation (1), axis (1), force_nd_im2col (false).
    Other fields are ignored, as in Caffe.
    Bottom: (N..., C, *spatial), at least one spatial axis. Top: (N..., C · prod(kernel), *out),
    out = (in + 2p - (d(k-1)+1)) / s + 1; channel c, kernel offset k at row c · prod(kernel) + k.
    Params: none. In-place: no.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottoms, tops):
        conv_param = self.param.convolution_param
        self.channel_axis = _channel_axis(self, bottoms[0], conv_param.axis)
        self.num_spatial_axes = bottoms[0].num_axes - self.channel_axis - 1
        if self.num_spatial_axes < 1:
            self.fail(f"needs at least one spatial axis after the channel axis "
                      f"{self.channel_axis}; bottom shape is {bottoms[0].shape}")
        self.geometry = ConvGeometry(self, conv_param, self.num_spatial_axes)

    def reshape(self, bottoms, tops):
        bottom = bottoms[0]
        axis = self.channel_axis
        if bottom.num_axes != axis + 1 + self.num_spatial_axes:
            self.fail(f"the bottom's number of axes may not change: set up with "
                      f"{axis + 1 + self.num_spatial_axes}, now {bottom.shape}")
        channels = bottom.shape[axis]
        self.out_spatial = self.geometry.conv_output_shape(self, tuple(bottom.shape[axis + 1:]))
        tops[0].reshape(tuple(bottom.shape[:axis])
                        + (channels * self.geometry.kernel_count,) + self.out_spatial)
        self.im_shape = (bottom.count_axes(0, axis), channels) + tuple(bottom.shape[axis + 1:])

    def forward(self, bottoms, tops):
        self.geometry.im2col(bottoms[0].data.reshape(self.im_shape), self.out_spatial,
                             tops[0].data)

    def backward(self, tops, propagate_down, bottoms):
        if propagate_down[0]:
            self.geometry.col2im(tops[0].diff, self.out_spatial,
                                 bottoms[0].diff.reshape(self.im_shape))
