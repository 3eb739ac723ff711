"""Pooling, and the 2-D pooling operation that SPP and LRN (WITHIN_CHANNEL) build on.

Caffe composes SPP and within-channel LRN from internal PoolingLayer instances; protonet gives
them the same :class:`PoolOp` objects that the Pooling layer uses, so the geometry rules, the
checks and the kernels exist once.
"""

import numpy as np

from ... import rng as global_rng
from ...kernels import pooling
from ...proto import caffe_pb2
from ..base import Layer
from ..registry import register

MAX = caffe_pb2.PoolingParameter.MAX
AVE = caffe_pb2.PoolingParameter.AVE
STOCHASTIC = caffe_pb2.PoolingParameter.STOCHASTIC
METHOD_NAMES = {MAX: "MAX", AVE: "AVE", STOCHASTIC: "STOCHASTIC"}


class Scratch:
    """A reusable work array: reallocated only when a larger one is asked for."""

    def __init__(self, dtype=np.float32):
        self._buf = np.zeros(0, dtype=dtype)

    def view(self, shape):
        """A C-contiguous array of ``shape`` over the buffer (contents undefined)."""
        count = int(np.prod(shape, dtype=np.int64))
        if count > self._buf.size:
            self._buf = np.zeros(count, dtype=self._buf.dtype)
        return self._buf[:count].reshape(shape)


def spatial_pair(fail, param, square_field, prefix):
    """(h, w) of one spatial parameter: ``square_field``, or ``<prefix>_h`` and ``<prefix>_w``.

    Returns None when none of the three is set. Giving both forms, or only one of _h/_w, is an
    error (Caffe's pooling_layer.cpp checks the same for pad and stride; for the kernel it
    silently ignores a lone kernel_h/kernel_w next to kernel_size, which we reject).
    """
    has_square = param.HasField(square_field)
    has_h = param.HasField(f"{prefix}_h")
    has_w = param.HasField(f"{prefix}_w")
    if has_square and (has_h or has_w):
        fail(f"{square_field} given together with {prefix}_h/{prefix}_w; give either "
             f"{square_field}, or {prefix}_h and {prefix}_w")
    if has_h != has_w:
        given, missing = (f"{prefix}_h", f"{prefix}_w") if has_h else (f"{prefix}_w", f"{prefix}_h")
        fail(f"{given} given without {missing}; give both, or {square_field} alone")
    if has_h:
        return int(getattr(param, f"{prefix}_h")), int(getattr(param, f"{prefix}_w"))
    if has_square:
        value = int(getattr(param, square_field))
        return value, value
    return None


def pooled_extent(fail, axis, size, kernel, stride, pad, ceil_mode, clip):
    """Caffe's pooled size along one axis (``axis`` is "height" or "width", for messages)."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    # Caffe quirk: a kernel a little larger than the padded input still gives one (clipped)
    # window when the size rounds up to 1; only an empty output is an error.
    if out < 1:
        fail(f"kernel {axis} {kernel} is larger than the padded input {axis} "
             f"{size} + 2·{pad} = {size + 2 * pad}; use a smaller kernel or more padding")
    # Caffe quirk: the size is rounded up (round_mode CEIL), then, if there is any padding on
    # either axis, decremented once when the last window would start in the padding
    # (pooling_layer.cpp). Without padding no clipping happens, so a stride larger than the
    # kernel can leave the last window empty.
    if clip and (out - 1) * stride >= size + pad:
        out -= 1
    return out


class PoolOp:
    """One 2-D pooling configuration over NCHW blobs: geometry, checks, scratch, kernels.

    ``forward(x, out, record=True)`` writes ``out`` (``record=False``: no backward will
    follow, so what only backward reads may be skipped); ``backward(top_diff, bottom_diff,
    accumulate)`` overwrites ``bottom_diff``, or adds into it when ``accumulate``. Subclasses
    implement one pooling method.
    """

    supports_pad = True

    def __init__(self, fail, kernel, stride, pad, *, ceil_mode=True, global_pooling=False,
                 train=True):
        self.fail = fail
        self.kernel = kernel
        self.stride = stride
        self.pad = pad
        self.ceil_mode = ceil_mode
        self.global_pooling = global_pooling
        self.train = train
        self.top_shape = None
        self._check()

    def _check(self):
        (sh, sw), (ph, pw) = self.stride, self.pad
        if self.global_pooling and (self.pad != (0, 0) or self.stride != (1, 1)):
            self.fail(f"global_pooling takes pad 0 and stride 1, got pad ({ph}, {pw}) and "
                      f"stride ({sh}, {sw}); remove them")
        if not self.global_pooling and min(self.kernel) <= 0:
            self.fail(f"kernel size must be positive, got {self.kernel}")
        if min(self.stride) <= 0:
            self.fail(f"stride must be positive, got ({sh}, {sw})")
        if self.pad != (0, 0):
            if not self.supports_pad:
                self.fail(f"padding is implemented only for MAX and AVE pooling, got pad "
                          f"({ph}, {pw}) with {type(self).method_name}")
            kh, kw = self.kernel
            if ph >= kh or pw >= kw:
                self.fail(f"pad ({ph}, {pw}) must be smaller than the kernel ({kh}, {kw})")

    def reshape(self, shape):
        """Top shape (n, c, oh, ow) for a bottom of ``shape``; sizes the scratch buffers."""
        if len(shape) != 4:
            self.fail(f"input must have 4 axes (num, channels, height, width), got shape "
                      f"{tuple(shape)}")
        n, c, h, w = shape
        if self.global_pooling:
            self.kernel = (h, w)
        clip = self.pad != (0, 0)
        oh = pooled_extent(self.fail, "height", h, self.kernel[0], self.stride[0], self.pad[0],
                           self.ceil_mode, clip)
        ow = pooled_extent(self.fail, "width", w, self.kernel[1], self.stride[1], self.pad[1],
                           self.ceil_mode, clip)
        self.top_shape = (n, c, oh, ow)
        self._reshape_scratch(self.top_shape)
        return self.top_shape

    def _reshape_scratch(self, top_shape):
        """Size per-output scratch; default: none."""


class MaxPoolOp(PoolOp):
    """MAX: the window maximum; ``index`` holds each maximum's in-plane position (written by
    a recording forward; ``backward`` routes by it, or by ``mask``, e.g. a float mask top)."""

    method_name = "MAX"
    _NO_INDEX = np.empty(0, np.int32)

    def __init__(self, *args, **kwargs):
        self._index = Scratch(np.int32)
        self.index = None
        super().__init__(*args, **kwargs)

    def _reshape_scratch(self, top_shape):
        self.index = self._index.view(top_shape)

    def forward(self, x, out, record=True):
        pooling.max_pool_forward(x, self.kernel, self.stride, self.pad, out,
                                 self.index if record else self._NO_INDEX)

    def backward(self, top_diff, bottom_diff, accumulate, mask=None):
        pooling.max_pool_backward(top_diff, self.index if mask is None else mask, bottom_diff,
                                  accumulate)


class AvePoolOp(PoolOp):
    """AVE: the window mean, dividing by the window clipped to input + pad (padding counts)."""

    method_name = "AVE"

    def forward(self, x, out, record=True):
        pooling.ave_pool_forward(x, self.kernel, self.stride, self.pad, out)

    def backward(self, top_diff, bottom_diff, accumulate):
        pooling.ave_pool_backward(top_diff, self.kernel, self.stride, self.pad, bottom_diff,
                                  accumulate)


class StochasticPoolOp(PoolOp):
    """STOCHASTIC, with the semantics of Caffe's CUDA kernels (pooling_layer.cu).

    TRAIN: sample one position per window with probability x / Σx, using the global RNG;
    backward routes the gradient to the sampled position. TEST: Σx² / Σx, no backward.
    """

    method_name = "STOCHASTIC"
    supports_pad = False

    def __init__(self, *args, **kwargs):
        self._index = Scratch(np.int32)
        self._uniform = Scratch(np.float32)
        self.index = None
        self.uniform = None
        super().__init__(*args, **kwargs)

    def _reshape_scratch(self, top_shape):
        self.index = self._index.view(top_shape)
        self.uniform = self._uniform.view(top_shape)

    def forward(self, x, out, record=True):
        if not self.train:
            pooling.stochastic_pool_forward_test(x, self.kernel, self.stride, out)
            return
        global_rng.get_rng().random(dtype=np.float32, out=self.uniform)
        # Caffe quirk: curand's uniform draws lie in (0, 1], not [0, 1); a draw of exactly 0
        # would let a leading zero activation be picked (pooling_layer.cu).
        np.subtract(np.float32(1.0), self.uniform, out=self.uniform)
        pooling.stochastic_pool_forward_train(x, self.kernel, self.stride, self.uniform, out,
                                              self.index)

    def backward(self, top_diff, bottom_diff, accumulate):
        if not self.train:
            self.fail("STOCHASTIC pooling has no backward in the TEST phase (Caffe's "
                      "would reuse stale samples); run it in TRAIN or use AVE/MAX")
        pooling.max_pool_backward(top_diff, self.index, bottom_diff, accumulate)


POOL_OPS = {MAX: MaxPoolOp, AVE: AvePoolOp, STOCHASTIC: StochasticPoolOp}


@register("Pooling")
class PoolingLayer(Layer):
    """Spatial pooling of NCHW blobs: MAX, AVE or STOCHASTIC over kernel windows.

    ``pooling_param``: pool (MAX), kernel_size or kernel_h + kernel_w (required unless
    global_pooling), stride (1) or stride_h + stride_w, pad (0) or pad_h + pad_w (pad < kernel;
    MAX and AVE only), global_pooling (false: kernel = the bottom's height and width, pad 0,
    stride 1), round_mode (CEIL | FLOOR). ``engine`` is ignored.
    Output size: round((in + 2·pad − kernel) / stride) + 1, then, if any pad > 0, one less when
    the last window would start in the padding. AVE divides by the window clipped to in + pad.
    STOCHASTIC follows Caffe's GPU kernels (Caffe has no CPU version): TRAIN samples with
    probability ∝ x from the global RNG, TEST gives Σx²/Σx.

    Bottom: x (n, c, h, w). Tops: y (n, c, oh, ow); MAX only: optional mask (n, c, oh, ow),
    the in-plane index y·w + x of each maximum as float32 (backward reads it back, as Caffe
    does). No param blobs. Not in place.
    """

    exact_bottoms = 1
    min_tops = 1
    max_tops = 2

    def setup(self, bottoms, tops):
        pp = self.param.pooling_param
        kernel = spatial_pair(self.fail, pp, "kernel_size", "kernel")
        if pp.global_pooling and kernel is not None:
            self.fail("with global_pooling the kernel is the input size; remove kernel_size "
                      "/ kernel_h / kernel_w")
        if not pp.global_pooling and kernel is None:
            self.fail("kernel_size (or kernel_h and kernel_w) is required unless "
                      "global_pooling is true")
        if pp.pool != MAX and len(tops) > 1:
            self.fail(f"only MAX pooling has a second (mask) top; {METHOD_NAMES[pp.pool]} "
                      f"pooling takes one top, got {len(tops)}")
        self.use_top_mask = len(tops) > 1
        self.op = POOL_OPS[pp.pool](
            self.fail, kernel or (0, 0),
            spatial_pair(self.fail, pp, "stride", "stride") or (1, 1),
            spatial_pair(self.fail, pp, "pad", "pad") or (0, 0),
            ceil_mode=pp.round_mode == caffe_pb2.PoolingParameter.CEIL,
            global_pooling=pp.global_pooling, train=self.phase == caffe_pb2.TRAIN)

    def reshape(self, bottoms, tops):
        top_shape = self.op.reshape(bottoms[0].shape)
        for top in tops:
            top.reshape(top_shape)

    def forward(self, bottoms, tops):
        # A net that never runs this layer's backward needs no argmax (unless it is a top).
        self.op.forward(bottoms[0].data, tops[0].data,
                        record=self.needs_backward or self.use_top_mask)
        if self.use_top_mask:
            tops[1].data[...] = self.op.index

    def backward(self, tops, propagate_down, bottoms):
        if not propagate_down[0]:
            return
        if self.use_top_mask:
            # Caffe quirk: with a mask top, backward routes by the mask top's data, not by an
            # internal copy (pooling_layer.cpp).
            self.op.backward(tops[0].diff, bottoms[0].diff, accumulate=False,
                             mask=tops[1].data)
        else:
            self.op.backward(tops[0].diff, bottoms[0].diff, accumulate=False)
