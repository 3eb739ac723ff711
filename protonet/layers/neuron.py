"""Neuron layers: one bottom, one top of the same shape, element-wise math.

Most of them are one op of :mod:`protonet.kernels.elementwise`: a subclass of
:class:`UnaryLayer` names its op code and turns its proto fields into the op's four float32
parameters; the base class does reshape, forward, backward and in-place bookkeeping. PReLU
(a learned slope per channel) and Dropout (a random mask) use the same module's mask and
per-axis kernels.

In-place use (top is bottom) is allowed for all but AbsVal, as in Caffe. A layer whose backward
reads its input keeps a copy of it while running in place (Caffe's PReLU ``bottom_memory_``);
where the output determines what backward needs (the sign, for ReLU with a slope ≥ 0), no copy
is made.
"""

import numpy as np

from ..blob import Blob
from ..fillers import fill
from ..kernels import elementwise
from ..proto import caffe_pb2
from ..rng import get_rng
from .base import NeuronLayer
from .registry import register


class InputCopy:
    """The bottom's data, kept for backward when a layer runs in place and needs it.

    ``reshape`` decides (top is bottom and the layer needs it); ``save(bottom, layer)`` copies
    the bottom before forward overwrites it, unless the layer's backward will not run (a TEST
    net), so nothing is allocated then; ``data`` is what backward reads as the input.
    """

    def __init__(self):
        self.blob = Blob()
        self.active = False

    def reshape(self, bottom, top, needed):
        self.active = bool(needed) and top is bottom

    def save(self, bottom, layer):
        if self.active and layer.needs_backward:
            self.blob.reshape(bottom.shape)
            self.blob.data[...] = bottom.data

    def data(self, bottom):
        return self.blob.data if self.active else bottom.data


class UnaryLayer(NeuronLayer):
    """A neuron layer computed by one op of ``elementwise.unary_forward``/``unary_backward``.

    Subclasses set ``op`` and implement ``read_params()``, returning the op's parameters (see
    ``elementwise``) after checking them; it may also set ``self.backward_reads_input``.
    """

    op = None
    # Whether backward needs x itself (not only y); then in-place use keeps a copy of x.
    backward_reads_input = False

    def read_params(self):
        return ()

    def setup(self, bottoms, tops):
        self.p = elementwise.params(*self.read_params())
        self.input_copy = InputCopy()

    def reshape(self, bottoms, tops):
        super().reshape(bottoms, tops)
        self.input_copy.reshape(bottoms[0], tops[0], self.backward_reads_input)

    def forward(self, bottoms, tops):
        self.input_copy.save(bottoms[0], self)
        elementwise.unary_forward(self.op, self.p, bottoms[0].data.reshape(-1),
                                  tops[0].data.reshape(-1))

    def backward(self, tops, propagate_down, bottoms):
        if not propagate_down[0]:
            return
        x = self.input_copy.data(bottoms[0])
        elementwise.unary_backward(self.op, self.p, x.reshape(-1), tops[0].data.reshape(-1),
                                   tops[0].diff.reshape(-1), bottoms[0].diff.reshape(-1))


@register("ReLU")
class ReLULayer(UnaryLayer):
    """y = max(x, 0) + negative_slope · min(x, 0).

    relu_param: negative_slope (0); engine (DEFAULT, ignored).
    Bottom x: any shape. Top y: x's shape. No param blobs. In place: yes.
    """

    op = elementwise.RELU

    def read_params(self):
        slope = self.param.relu_param.negative_slope
        # Backward tests x > 0; y > 0 says the same thing unless the slope is negative.
        self.backward_reads_input = slope < 0
        return (slope,)


@register("ELU")
class ELULayer(UnaryLayer):
    """y = x if x > 0 else alpha · (exp(x) − 1).

    elu_param: alpha (1). Bottom x: any shape. Top y: x's shape. No param blobs. In place: yes.
    """

    op = elementwise.ELU

    def read_params(self):
        alpha = self.param.elu_param.alpha
        # Backward tests x > 0 and uses y; y > 0 marks x > 0 unless alpha is negative.
        self.backward_reads_input = alpha < 0
        return (alpha,)


@register("Sigmoid")
class SigmoidLayer(UnaryLayer):
    """y = 1 / (1 + exp(−x)), computed as 0.5 · tanh(0.5x) + 0.5 in double, as Caffe does.

    sigmoid_param: engine (ignored). Bottom x: any shape. Top y: x's shape. No param blobs.
    In place: yes.
    """

    op = elementwise.SIGMOID


@register("TanH")
class TanHLayer(UnaryLayer):
    """y = tanh(x).

    tanh_param: engine (ignored). Bottom x: any shape. Top y: x's shape. No param blobs.
    In place: yes.
    """

    op = elementwise.TANH


@register("AbsVal")
class AbsValLayer(UnaryLayer):
    """y = |x|; dy/dx = sign(x), 0 at 0.

    No parameters. Bottom x: any shape. Top y: x's shape. No param blobs. In place: no.
    """

    op = elementwise.ABSVAL
    # Caffe quirk: AbsVal refuses in-place use (CHECK_NE in absval_layer.cpp).
    allow_in_place = False
    backward_reads_input = True

    def setup(self, bottoms, tops):
        if tops[0] is bottoms[0]:
            self.fail("AbsVal does not allow in-place computation; give the top its own name")
        super().setup(bottoms, tops)


@register("Power")
class PowerLayer(UnaryLayer):
    """y = (shift + scale · x) ^ power.

    power_param: power (1), scale (1), shift (0). Bottom x: any shape. Top y: x's shape.
    No param blobs. In place: yes.
    """

    op = elementwise.POWER

    def read_params(self):
        p = self.param.power_param
        power, scale, shift = elementwise.params(p.power, p.scale, p.shift)[:3]
        diff_scale = power * scale
        # Backward reads x unless the derivative is the constant power · scale.
        self.backward_reads_input = diff_scale != 0 and power != 1
        return (power, scale, shift, diff_scale)


@register("Exp")
class ExpLayer(UnaryLayer):
    """y = base ^ (shift + scale · x), with base −1 meaning e.

    exp_param: base (−1), scale (1), shift (0). Bottom x: any shape. Top y: x's shape.
    No param blobs. In place: yes.
    """

    op = elementwise.EXP

    def read_params(self):
        p = self.param.exp_param
        base, scale, shift = elementwise.params(p.base, p.scale, p.shift)[:3]
        log_base = _log_base(self, base)
        inner_scale = log_base * scale
        if shift == 0:
            outer_scale = 1.0
        else:
            outer_scale = base ** shift if base != -1 else np.exp(shift)
        return (inner_scale, outer_scale)


@register("Log")
class LogLayer(UnaryLayer):
    """y = log_base(shift + scale · x), with base −1 meaning e.

    log_param: base (−1), scale (1), shift (0). Bottom x: any shape. Top y: x's shape.
    No param blobs. In place: yes.
    """

    op = elementwise.LOG
    backward_reads_input = True

    def read_params(self):
        p = self.param.log_param
        base, scale, shift = elementwise.params(p.base, p.scale, p.shift)[:3]
        log_base = _log_base(self, base)
        if log_base == 0:
            self.fail(f"base {float(base)} gives log(base) = 0, so 1/log(base) is infinite; "
                      f"use a base other than 1")
        return (scale, shift, 1 / log_base, scale / log_base)


@register("BNLL")
class BNLLLayer(UnaryLayer):
    """y = log(1 + exp(x)) (binomial normal log-likelihood), stable for large |x|.

    No parameters. Bottom x: any shape. Top y: x's shape. No param blobs. In place: yes.
    """

    op = elementwise.BNLL
    backward_reads_input = True


@register("Threshold")
class ThresholdLayer(UnaryLayer):
    """y = 1 if x > threshold else 0. Has no gradient.

    threshold_param: threshold (0). Bottom x: any shape. Top y: x's shape. No param blobs.
    In place: yes.
    """

    op = elementwise.THRESHOLD

    def read_params(self):
        return (self.param.threshold_param.threshold,)

    def backward(self, tops, propagate_down, bottoms):
        if propagate_down[0]:
            # Caffe: Backward_cpu is NOT_IMPLEMENTED (threshold_layer.hpp).
            self.fail("Threshold has no backward; set propagate_down: false on its bottom or "
                      "keep it out of the path to the loss")


@register("Swish")
class SwishLayer(UnaryLayer):
    """y = x · sigmoid(beta · x).

    swish_param: beta (1). Bottom x: any shape. Top y: x's shape. No param blobs. In place: yes.
    """

    op = elementwise.SWISH
    backward_reads_input = True

    def read_params(self):
        return (self.param.swish_param.beta,)


@register("Clip")
class ClipLayer(UnaryLayer):
    """y = max(min, min(x, max)); the gradient passes where min ≤ x ≤ max.

    clip_param: min, max (both required). Bottom x: any shape. Top y: x's shape.
    No param blobs. In place: yes.
    """

    op = elementwise.CLIP
    backward_reads_input = True

    def read_params(self):
        p = self.param.clip_param
        if p.min > p.max:
            self.fail(f"clip_param min {p.min} is greater than max {p.max}; the output would be "
                      f"min everywhere")
        return (p.min, p.max)


@register("PReLU")
class PReLULayer(NeuronLayer):
    """y = max(x, 0) + a_c · min(x, 0), with a learned slope a per channel (or one shared).

    prelu_param: filler (constant 0.25), channel_shared (false).
    Bottom x: (N, C, ...), at least 2 axes. Top y: x's shape.
    Param blobs: slope a, shape (C,), or () with channel_shared. In place: yes.
    """

    def setup(self, bottoms, tops):
        self._check_axes(bottoms[0])
        p = self.param.prelu_param
        self.channel_shared = p.channel_shared
        channels = bottoms[0].shape[1]
        expected = 1 if self.channel_shared else channels
        if not self.blobs:
            blob = self.add_param_blob(() if self.channel_shared else (channels,))
            filler = p.filler if p.HasField("filler") else caffe_pb2.FillerParameter(
                type="constant", value=0.25)
            fill(blob.data, filler)
        elif len(self.blobs) != 1 or self.blobs[0].count != expected:
            counts = [b.count for b in self.blobs]
            self.fail(f"expected one slope blob of {expected} element(s) "
                      f"({'channel_shared' if self.channel_shared else 'one per channel'}), "
                      f"got blobs of {counts} elements")
        self.input_copy = InputCopy()

    def _check_axes(self, bottom):
        if bottom.num_axes < 2:
            self.fail(f"the bottom needs at least 2 axes (N, C, ...), got shape {bottom.shape}")

    def reshape(self, bottoms, tops):
        bottom = bottoms[0]
        self._check_axes(bottom)
        if not self.channel_shared and bottom.shape[1] != self.blobs[0].count:
            self.fail(f"the bottom has {bottom.shape[1]} channels but the slope blob has "
                      f"{self.blobs[0].count}")
        super().reshape(bottoms, tops)
        self.input_copy.reshape(bottom, tops[0], True)
        if self.channel_shared:
            self.view = (1, 1, bottom.count)
        else:
            self.view = (bottom.shape[0], bottom.shape[1], bottom.count_axes(2))

    def forward(self, bottoms, tops):
        self.input_copy.save(bottoms[0], self)
        elementwise.prelu_forward(bottoms[0].data.reshape(self.view),
                                  self.blobs[0].data.reshape(-1), tops[0].data.reshape(self.view))

    def backward(self, tops, propagate_down, bottoms):
        x = self.input_copy.data(bottoms[0]).reshape(self.view)
        dy = tops[0].diff.reshape(self.view)
        slope = self.blobs[0]
        # The slope gradient first: in place, writing the bottom diff overwrites the top diff.
        if self.param_propagate_down[0]:
            elementwise.prelu_slope_grad(x, dy, slope.diff.reshape(-1))
        if propagate_down[0]:
            elementwise.prelu_backward(x, dy, slope.data.reshape(-1),
                                       bottoms[0].diff.reshape(self.view))


@register("Dropout")
class DropoutLayer(NeuronLayer):
    """TRAIN: y = x · m / (1 − dropout_ratio), m ~ Bernoulli(1 − dropout_ratio). TEST: y = x.

    dropout_param: dropout_ratio (0.5). Bottom x: any shape. Top y: x's shape. No param blobs.
    The mask comes from the global RNG (:mod:`protonet.rng`). In place: yes.
    """

    def setup(self, bottoms, tops):
        ratio = self.param.dropout_param.dropout_ratio
        if not 0 <= ratio < 1:
            self.fail(f"dropout_ratio must be in [0, 1), got {ratio}")
        self.ratio, self.scale = elementwise.params(ratio, 1.0 / (1.0 - ratio))[:2]
        self.train = self.phase == caffe_pb2.TRAIN
        # Holds 0 or 1/(1 − ratio) per element once forward has drawn it.
        self.mask = Blob()

    def reshape(self, bottoms, tops):
        super().reshape(bottoms, tops)
        if self.train:
            self.mask.reshape(bottoms[0].shape)

    def forward(self, bottoms, tops):
        x, y = bottoms[0].data.reshape(-1), tops[0].data.reshape(-1)
        if not self.train:
            if tops[0] is not bottoms[0]:
                y[...] = x
            return
        mask = self.mask.data.reshape(-1)
        get_rng().random(dtype=mask.dtype, out=mask)
        elementwise.dropout_mask(self.ratio, self.scale, mask)
        elementwise.multiply(x, mask, y)

    def backward(self, tops, propagate_down, bottoms):
        if not propagate_down[0]:
            return
        dy, dx = tops[0].diff.reshape(-1), bottoms[0].diff.reshape(-1)
        if self.train:
            elementwise.multiply(dy, self.mask.data.reshape(-1), dx)
        elif tops[0] is not bottoms[0]:
            dx[...] = dy


def _log_base(layer, base):
    """log(base) in float32 for Exp and Log, 1 for base −1 (e); checked as Caffe checks it."""
    if base == -1:
        return np.float32(1.0)
    if not base > 0:
        layer.fail(f"base must be strictly positive (or -1 for e), got {float(base)}")
    log_base = np.log(np.float32(base))
    if not np.isfinite(log_base):
        layer.fail(f"log(base) = log({float(base)}) = {float(log_base)} is not finite")
    return log_base
