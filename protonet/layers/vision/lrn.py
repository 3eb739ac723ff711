"""Local response normalization (LRN), across channels or within each channel."""

import numpy as np

from ...kernels import lrn as lrn_kernels
from ...proto import caffe_pb2
from ..base import Layer
from ..registry import register
from .pool import AvePoolOp, Scratch

ACROSS_CHANNELS = caffe_pb2.LRNParameter.ACROSS_CHANNELS
WITHIN_CHANNEL = caffe_pb2.LRNParameter.WITHIN_CHANNEL


class _AcrossChannels:
    """y = x·(k + α/n·Σ_{c' near c} x_{c'}²)^−β.

    Keeps nothing between passes: backward rebuilds the scale from x with forward's
    arithmetic, which costs less than writing it (and scale^−β) in forward and reading it back.
    """

    def __init__(self, size, alpha, beta, k):
        self.size = size
        self.beta = np.float32(beta)
        self.k = np.float32(k)
        self.alpha_over_size = np.float32(np.float32(alpha) / np.float32(size))
        # Caffe computes 2·α·β/n in double and stores it as float (lrn_layer.cpp).
        self.cache_ratio = np.float32(2.0 * alpha * beta / size)

    def reshape(self, shape):
        """Nothing to size: the kernels keep their scratch per task."""

    def forward(self, x, out):
        lrn_kernels.lrn_across_forward(x, self.size, self.alpha_over_size, self.k, self.beta,
                                       out)

    def backward(self, x, top_data, top_diff, bottom_diff):
        lrn_kernels.lrn_across_backward(x, top_data, top_diff, self.size, self.alpha_over_size,
                                        self.k, self.beta, self.cache_ratio, bottom_diff)


class _WithinChannel:
    """y = x·(1 + α·mean_{n×n window}(x²))^−β, composed as Caffe composes it.

    Caffe quirk: Caffe builds this region from internal Split → Power(x²) → Pooling(AVE, kernel
    n, pad (n−1)/2, stride 1) → Power(shift 1, scale α, power −β) → Eltwise(PROD) layers, so k
    is ignored and α multiplies the padded window *mean* (lrn_layer.cpp). We run the same
    steps with the AVE pooling kernels and reproduce its numbers.
    """

    def __init__(self, fail, size, alpha, beta):
        pre_pad = (size - 1) // 2
        self.pool = AvePoolOp(fail, (size, size), (1, 1), (pre_pad, pre_pad))
        self.alpha = np.float32(alpha)
        self.beta = np.float32(beta)
        self._buffers = [Scratch() for _ in range(3)]
        self.square = self.pooled = self.power = None

    def reshape(self, shape):
        pooled_shape = self.pool.reshape(shape)
        assert pooled_shape == tuple(shape), (pooled_shape, shape)
        self.square, self.pooled, self.power = (b.view(shape) for b in self._buffers)

    def forward(self, x, out):
        np.multiply(x, x, out=self.square)
        self.pool.forward(self.square, self.pooled)
        lrn_kernels.lrn_within_forward(x, self.pooled, self.alpha, self.beta, self.power, out)

    def backward(self, x, top_data, top_diff, bottom_diff):
        pooled_diff = self.square  # the squares are not needed again: reuse their memory
        lrn_kernels.lrn_within_backward_pooled(x, top_diff, self.pooled, self.power, self.alpha,
                                               self.beta, pooled_diff)
        self.pool.backward(pooled_diff, bottom_diff, accumulate=False)
        lrn_kernels.lrn_within_backward_data(x, top_diff, self.power, bottom_diff)


@register("LRN")
class LRNLayer(Layer):
    """Local response normalization of NCHW blobs.

    ACROSS_CHANNELS: y = x·(k + α/n·Σ_{|c'−c| ≤ (n−1)/2} x_{c'}²)^−β.
    WITHIN_CHANNEL: y = x·(1 + α/n²·Σ_{n×n window, zero-padded} x²)^−β (k is ignored, as in
    Caffe).
    ``lrn_param``: local_size n (5, odd), alpha α (1), beta β (0.75), norm_region
    (ACROSS_CHANNELS | WITHIN_CHANNEL), k (1; ACROSS_CHANNELS only). ``engine`` is ignored.

    Bottom: x (n, c, h, w). Top: y (n, c, h, w). No param blobs. Not in place.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottoms, tops):
        lp = self.param.lrn_param
        size = int(lp.local_size)
        if size % 2 != 1:
            self.fail(f"local_size must be odd, got {size}")
        if lp.norm_region == WITHIN_CHANNEL:
            self.region = _WithinChannel(self.fail, size, lp.alpha, lp.beta)
        else:
            self.region = _AcrossChannels(size, lp.alpha, lp.beta, lp.k)

    def reshape(self, bottoms, tops):
        shape = bottoms[0].shape
        if len(shape) != 4:
            self.fail(f"input must have 4 axes (num, channels, height, width), got shape "
                      f"{tuple(shape)}")
        tops[0].reshape(shape)
        self.region.reshape(shape)

    def forward(self, bottoms, tops):
        self.region.forward(bottoms[0].data, tops[0].data)

    def backward(self, tops, propagate_down, bottoms):
        if propagate_down[0]:
            self.region.backward(bottoms[0].data, tops[0].data, tops[0].diff, bottoms[0].diff)
