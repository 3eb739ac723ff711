"""Spatial pyramid pooling: pool the whole image into 1, 2×2, 4×4, ... bins and concatenate."""

import math

from ...proto import caffe_pb2
from ..base import Layer
from ..registry import register
from .pool import AVE, MAX, POOL_OPS, STOCHASTIC, Scratch

# SPPParameter.PoolMethod → the PoolingParameter.PoolMethod of the internal pooling levels.
SPP_METHODS = {caffe_pb2.SPPParameter.MAX: MAX, caffe_pb2.SPPParameter.AVE: AVE,
               caffe_pb2.SPPParameter.STOCHASTIC: STOCHASTIC}


def level_geometry(level, height, width):
    """(kernel, stride, pad) as (h, w) pairs of pyramid level ``level`` (2^level bins per axis).

    As spp_layer.cpp's GetPoolingParam: kernel = ceil(size / bins), stride = kernel,
    pad = (kernel·bins − size + 1) // 2.
    """
    bins = 2 ** level
    kernel = tuple(math.ceil(size / bins) for size in (height, width))
    pad = tuple((k * bins - size + 1) // 2 for k, size in zip(kernel, (height, width)))
    return kernel, kernel, pad


@register("SPP")
class SPPLayer(Layer):
    """y = concat over levels l < L of flatten(pool_l(x)), pool_l with 2^l × 2^l bins.

    ``spp_param``: pyramid_height L (required), pool (MAX | AVE | STOCHASTIC; default MAX).
    ``engine`` is ignored. Level l pools with kernel ceil(size/2^l), stride = kernel and pad
    (kernel·2^l − size + 1)/2 per axis, under the Pooling layer's rules (so Caffe's output-size
    rule, and its pad < kernel check, which rejects some small inputs at deep levels).

    Bottom: x (n, c, h, w). Top: (n, Σ_l c·oh_l·ow_l), levels in order, each flattened
    channel-major; with L = 1 the single level's (n, c, 1, 1) is the top, unflattened.
    No param blobs. Not in place.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottoms, tops):
        sp = self.param.spp_param
        if not sp.HasField("pyramid_height") or sp.pyramid_height < 1:
            self.fail(f"pyramid_height must be given and at least 1, got {sp.pyramid_height}")
        self.pyramid_height = int(sp.pyramid_height)
        self.op_class = POOL_OPS[SPP_METHODS[sp.pool]]
        self.levels = []
        self.input_shape = None
        self._outputs = [Scratch() for _ in range(self.pyramid_height)]

    def _build_levels(self, shape):
        """One PoolOp and output buffer per level, for a bottom of ``shape``."""
        if len(shape) != 4:
            self.fail(f"input must have 4 axes (num, channels, height, width), got shape "
                      f"{tuple(shape)}")
        n, c, h, w = shape
        if h <= 0 or w <= 0:
            self.fail(f"input height and width must be positive, got shape {tuple(shape)}")
        self.levels = []
        for level in range(self.pyramid_height):
            kernel, stride, pad = level_geometry(level, h, w)
            # Caffe quirk: the internal Pooling layers are built from a fresh LayerParameter,
            # whose phase is TRAIN, so STOCHASTIC samples even in a TEST net (spp_layer.cpp).
            op = self.op_class(self._level_fail(level, shape), kernel, stride, pad, train=True)
            top_shape = op.reshape(shape)
            self.levels.append((op, self._outputs[level].view(top_shape)))
        self.input_shape = tuple(shape)

    def _level_fail(self, level, shape):
        """A ``fail`` for one level's PoolOp that names the level and the input shape."""
        def fail(message):
            self.fail(f"pyramid level {level} of an input of shape {tuple(shape)}: {message}")
        return fail

    def reshape(self, bottoms, tops):
        shape = tuple(bottoms[0].shape)
        if shape != self.input_shape:
            self._build_levels(shape)
        n = shape[0]
        if self.pyramid_height == 1:
            # Caffe quirk: a one-level pyramid is the Pooling output itself, (n, c, 1, 1),
            # without the Flatten/Concat used for deeper pyramids (spp_layer.cpp).
            tops[0].reshape(self.levels[0][1].shape)
        else:
            tops[0].reshape(n, sum(out[0].size for _, out in self.levels))

    def forward(self, bottoms, tops):
        x = bottoms[0].data
        top = tops[0].data.reshape(x.shape[0], -1)
        start = 0
        for op, out in self.levels:
            op.forward(x, out, record=self.needs_backward)
            width = out[0].size
            top[:, start:start + width] = out.reshape(out.shape[0], -1)
            start += width

    def backward(self, tops, propagate_down, bottoms):
        if not propagate_down[0]:
            return
        bottom_diff = bottoms[0].diff
        top_diff = tops[0].diff.reshape(bottom_diff.shape[0], -1)
        start = 0
        for level, (op, out) in enumerate(self.levels):
            width = out[0].size
            # The level's output buffer is free after forward: it takes the level's top diff.
            out.reshape(out.shape[0], -1)[...] = top_diff[:, start:start + width]
            # Caffe's Split sums the levels' gradients in level order; stride = kernel, so a
            # level touches each bottom element at most once and accumulating is the same sum.
            # Level 0 overwrites the bottom diff, the later levels add into it.
            op.backward(out, bottom_diff, accumulate=level > 0)
            start += width
