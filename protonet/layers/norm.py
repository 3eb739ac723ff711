"""Normalization and affine layers: BatchNorm, MVN, Scale, Bias.

BatchNorm and MVN share the kernels of :mod:`protonet.kernels.batchnorm` (statistics per index
of an (outer, dim, inner) view); Scale and Bias share :class:`AxisOperandLayer` (where the
operand — a param blob or a second bottom — lines up with the bottom) and the per-axis kernels
of :mod:`protonet.kernels.elementwise`. Scale with ``bias_term`` keeps an inner Bias layer, as
Caffe's scale_layer.cpp does; its forward adds the bias in the scaling pass (``axis_affine``,
which also writes the input copy an in-place Scale keeps for backward).
"""

import numpy as np

from ..blob import Blob
from ..fillers import fill
from ..kernels import batchnorm as bn_kernels
from ..kernels import elementwise
from ..proto import caffe_pb2
from .base import Layer
from .neuron import InputCopy
from .registry import register


# ---- BatchNorm ----------------------------------------------------------------------------------

@register("BatchNorm")
class BatchNormLayer(Layer):
    """y = (x − mean_c) / sqrt(var_c + eps), per channel c over the batch and spatial axes.

    batch_norm_param: use_global_stats (unset: false in TRAIN, true in TEST),
    moving_average_fraction (0.999), eps (1e-5).
    With batch statistics the running sums are updated: s ← s·f + 1, mean_sum ← mean_sum·f +
    mean, var_sum ← var_sum·f + m/(m−1)·var (m = count / C); with global statistics mean and var
    are mean_sum / s and var_sum / s (0 when s = 0).
    Bottom x: (N, C, ...) (a 1-D bottom is one channel). Top y: x's shape.
    Param blobs: mean_sum (C,), var_sum (C,), scale factor s (1,); statistics, never learned.
    No gamma/beta: pair with Scale (bias_term: true). In place: yes.
    """

    exact_bottoms = 1
    exact_tops = 1
    allow_in_place = True

    def setup(self, bottoms, tops):
        p = self.param.batch_norm_param
        self.moving_average_fraction = np.float32(p.moving_average_fraction)
        self.eps = np.float32(p.eps)
        self.use_global_stats = self.phase == caffe_pb2.TEST
        if p.HasField("use_global_stats"):
            self.use_global_stats = p.use_global_stats
        bottom = bottoms[0]
        self.channels = 1 if bottom.num_axes == 1 else bottom.shape[1]
        shapes = [(self.channels,), (self.channels,), (1,)]
        if not self.blobs:
            for shape in shapes:
                self.add_param_blob(shape)
        else:
            counts = [b.count for b in self.blobs]
            if counts != [s[0] for s in shapes]:
                self.fail(f"expected 3 param blobs of {self.channels}, {self.channels} and 1 "
                          f"elements (mean, variance, scale factor), got {counts}")
        self._fix_param_specs()
        self.param_propagate_down = [False] * 3
        self.mean = np.zeros(self.channels, np.float32)
        self.var = np.zeros(self.channels, np.float32)
        self.denom = np.zeros(self.channels, np.float32)
        self.scratch = np.zeros(self.channels, np.float32)
        self.x_norm = Blob()

    def _fix_param_specs(self):
        # Caffe quirk: BatchNorm appends `param { lr_mult: 0 }` for each of its 3 blobs to its
        # own LayerParameter, which the net then reads (batch_norm_layer.cpp, net.cpp).
        for i in range(3):
            if len(self.param.param) == i:
                self.param.param.add().lr_mult = 0.0
            elif self.param.param[i].lr_mult != 0:
                self.fail(f"param {i} has lr_mult {self.param.param[i].lr_mult}: BatchNorm's "
                          f"blobs are statistics, not learned parameters; set lr_mult: 0 or "
                          f"drop the param entries")

    def reshape(self, bottoms, tops):
        bottom = bottoms[0]
        channels = 1 if bottom.num_axes == 1 else bottom.shape[1]
        if channels != self.channels:
            self.fail(f"the bottom has {channels} channels, the layer was set up for "
                      f"{self.channels}")
        tops[0].reshape(bottom.shape)
        spatial = bottom.count_axes(2) if bottom.num_axes >= 2 else 1
        self.view = (bottom.shape[0], self.channels, spatial)
        if not self.use_global_stats:
            self.x_norm.reshape(bottom.shape)

    def forward(self, bottoms, tops):
        x = bottoms[0].data.reshape(self.view)
        y = tops[0].data.reshape(self.view)
        if self.use_global_stats:
            stored = self.blobs[2].data[0]
            factor = np.float32(0.0) if stored == 0 else np.float32(1.0) / stored
            np.multiply(self.blobs[0].data, factor, out=self.mean)
            np.multiply(self.blobs[1].data, factor, out=self.var)
            np.add(self.var, self.eps, out=self.denom)
            np.sqrt(self.denom, out=self.denom)
            bn_kernels.normalize_forward(x, self.mean, self.denom, y)
            return
        # Backward needs y; a later in-place layer may overwrite the top, so the kernel also
        # writes a copy.
        bn_kernels.standardize(x, self.eps, bn_kernels.EPS_IN_SQRT, self.mean, self.var,
                               self.denom, y, self.x_norm.data.reshape(self.view))
        self._update_running_stats(bottoms[0].count)

    def _update_running_stats(self, count):
        f = self.moving_average_fraction
        mean_sum, var_sum, scale = (b.data for b in self.blobs)
        # Caffe quirk: the stored statistics are unnormalised sums, decayed by f, with the
        # scale factor s counting the decayed number of batches (batch_norm_layer.cpp).
        scale *= f
        scale += 1
        m = count // self.channels
        correction = np.float32(m) / np.float32(m - 1) if m > 1 else np.float32(1.0)
        mean_sum *= f
        mean_sum += self.mean
        var_sum *= f
        np.multiply(self.var, correction, out=self.scratch)
        var_sum += self.scratch

    def backward(self, tops, propagate_down, bottoms):
        if not propagate_down[0]:
            return
        dy = tops[0].diff.reshape(self.view)
        dx = bottoms[0].diff.reshape(self.view)
        if self.use_global_stats:
            bn_kernels.normalize_backward(bn_kernels.SCALE_ONLY, dy, dy, self.denom, dx)
        else:
            bn_kernels.normalize_backward(bn_kernels.FULL, dy, self.x_norm.data.reshape(self.view),
                                          self.denom, dx)


# ---- MVN ----------------------------------------------------------------------------------------

@register("MVN")
class MVNLayer(Layer):
    """y = (x − mean) / (sqrt(var) + eps) per sample and channel (or per sample).

    mvn_param: normalize_variance (true; false gives y = x − mean), across_channels (false:
    statistics per (n, c) over H·W; true: per n over C·H·W), eps (1e-9, added to the standard
    deviation, not to the variance).
    Bottom x: (N, C, H, W), at most 4 axes. Top y: (N, C, H, W) with missing axes as 1.
    No param blobs. In place: yes.
    """

    exact_bottoms = 1
    exact_tops = 1
    allow_in_place = True

    def setup(self, bottoms, tops):
        p = self.param.mvn_param
        self.normalize_variance = p.normalize_variance
        self.across_channels = p.across_channels
        self.eps = np.float32(p.eps)
        self.rows = -1
        self.y = Blob()

    def reshape(self, bottoms, tops):
        bottom = bottoms[0]
        if bottom.num_axes > 4:
            self.fail(f"MVN works on blobs of at most 4 axes (num, channels, height, width), "
                      f"got shape {bottom.shape}")
        # Caffe quirk: the top takes the legacy 4-D shape, so a (N, C) bottom gives an
        # (N, C, 1, 1) top (mvn_layer.cpp).
        tops[0].reshape(bottom.num, bottom.channels, bottom.height, bottom.width)
        rows = bottom.num if self.across_channels else bottom.num * bottom.channels
        self.view = (1, rows, bottom.count // rows if rows else 0)
        if rows != self.rows:
            self.rows = rows
            self.mean = np.zeros(rows, np.float32)
            self.var = np.zeros(rows, np.float32)
            self.denom = np.ones(rows, np.float32)
        if self.normalize_variance:
            self.y.reshape(tops[0].shape)

    def forward(self, bottoms, tops):
        x = bottoms[0].data.reshape(self.view)
        y = tops[0].data.reshape(self.view)
        # Caffe quirk: eps is added to the standard deviation, not to the variance as in
        # BatchNorm (mvn_layer.cpp). Without normalize_variance denom stays 1.
        mode = bn_kernels.EPS_AFTER_SQRT if self.normalize_variance else bn_kernels.NO_VARIANCE
        y_copy = self.y.data.reshape(self.view) if self.normalize_variance else y
        bn_kernels.standardize(x, self.eps, mode, self.mean, self.var, self.denom, y, y_copy)

    def backward(self, tops, propagate_down, bottoms):
        if not propagate_down[0]:
            return
        dy = tops[0].diff.reshape(self.view)
        dx = bottoms[0].diff.reshape(self.view)
        if self.normalize_variance:
            bn_kernels.normalize_backward(bn_kernels.FULL, dy, self.y.data.reshape(self.view),
                                          self.denom, dx)
        else:
            bn_kernels.normalize_backward(bn_kernels.CENTER, dy, dy, self.denom, dx)


# ---- Scale and Bias -----------------------------------------------------------------------------

class AxisOperandLayer(Layer):
    """A layer combining bottom[0] with an operand along axes [axis, axis + operand.num_axes).

    The operand is bottom[1] when there are two bottoms, else the layer's first param blob.
    bottom[0] is viewed as (outer, dim, inner), dim = operand.count, so that operand[d] meets
    every x[o, d, i].
    """

    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1
    allow_in_place = True
    what = "operand"

    def canonical_axis(self, bottom, axis):
        n = bottom.num_axes
        if not -n <= axis < n:
            self.fail(f"axis {axis} is out of range for bottom[0] of shape {bottom.shape} "
                      f"({n} axes)")
        return axis + n if axis < 0 else axis

    def create_operand(self, bottom, axis, num_axes, filler):
        """Add the param blob of shape bottom.shape[axis:axis + num_axes] and fill it."""
        axis = self.canonical_axis(bottom, axis)
        if num_axes < -1:
            self.fail(f"num_axes must be non-negative, or -1 to extend to the end of bottom[0]; "
                      f"got {num_axes}")
        end = bottom.num_axes if num_axes == -1 else axis + num_axes
        if end > bottom.num_axes:
            self.fail(f"the {self.what} blob's shape extends past bottom[0]'s shape "
                      f"{bottom.shape}: axis {axis} + num_axes {num_axes} > {bottom.num_axes}")
        blob = self.add_param_blob(bottom.shape[axis:end])
        fill(blob.data, filler)
        return blob

    def operand_view(self, bottom, operand, axis):
        """(outer, dim, inner) of bottom for ``operand``, checking that their shapes line up."""
        # Caffe: a scalar operand is applied with axis 0, whatever the axis field says.
        axis = 0 if operand.num_axes == 0 else self.canonical_axis(bottom, axis)
        end = axis + operand.num_axes
        if end > bottom.num_axes or tuple(bottom.shape[axis:end]) != tuple(operand.shape):
            self.fail(f"the {self.what} of shape {operand.shape} does not match bottom[0]'s "
                      f"shape {bottom.shape} from axis {axis}")
        return (bottom.count_axes(0, axis), operand.count, bottom.count_axes(end))

    def check_blob_count(self, expected):
        if len(self.blobs) != expected:
            shapes = [b.shape for b in self.blobs]
            self.fail(f"expected {expected} param blob(s), got {len(self.blobs)} of shapes "
                      f"{shapes}")


@register("Bias")
class BiasLayer(AxisOperandLayer):
    """y = x + b, b broadcast along the axes of x it does not cover.

    bias_param: axis (1), num_axes (1; −1 for all remaining axes), filler (constant 0).
    Bottoms: x (any shape) and optionally b, of shape x.shape[axis:axis + b.num_axes], which
    then replaces the param blob. Top y: x's shape.
    Param blobs (one bottom only): b of shape x.shape[axis:axis + num_axes]. In place: yes.
    """

    what = "bias"

    def setup(self, bottoms, tops):
        p = self.param.bias_param
        self.axis = p.axis
        if len(bottoms) == 1 and not self.blobs:
            self.create_operand(bottoms[0], p.axis, p.num_axes, p.filler)
        self.check_blob_count(1 if len(bottoms) == 1 else 0)

    def reshape(self, bottoms, tops):
        operand = bottoms[1] if len(bottoms) > 1 else self.blobs[0]
        self.view = self.operand_view(bottoms[0], operand, self.axis)
        if tops[0] is not bottoms[0]:
            tops[0].reshape(bottoms[0].shape)

    def forward(self, bottoms, tops):
        bias = bottoms[1] if len(bottoms) > 1 else self.blobs[0]
        elementwise.axis_bias(bottoms[0].data.reshape(self.view), bias.data.reshape(-1),
                              tops[0].data.reshape(self.view))

    def backward(self, tops, propagate_down, bottoms):
        # In place, the bottom diff is the top diff already.
        if propagate_down[0] and tops[0] is not bottoms[0]:
            bottoms[0].diff[...] = tops[0].diff
        from_param = len(bottoms) == 1
        if (from_param and self.param_propagate_down[0]) or (
                not from_param and propagate_down[1]):
            bias = self.blobs[0] if from_param else bottoms[1]
            # A param diff accumulates; a bottom diff is overwritten.
            elementwise.axis_sum(tops[0].diff.reshape(self.view), from_param,
                                 bias.diff.reshape(-1))


@register("Scale")
class ScaleLayer(AxisOperandLayer):
    """y = x · s (+ b), s (and b) broadcast along the axes of x they do not cover.

    scale_param: axis (1), num_axes (1; −1 for all remaining axes), filler (constant 1),
    bias_term (false), bias_filler (constant 0).
    Bottoms: x (any shape) and optionally s, of shape x.shape[axis:axis + s.num_axes], which
    then replaces the scale param blob. Top y: x's shape.
    Param blobs: s (one bottom only) of shape x.shape[axis:axis + num_axes], then b with
    bias_term (shaped like s). In place: yes.
    """

    what = "scale"

    def setup(self, bottoms, tops):
        p = self.param.scale_param
        self.axis = p.axis
        if len(bottoms) == 1 and not self.blobs:
            filler = p.filler if p.HasField("filler") else caffe_pb2.FillerParameter(
                type="constant", value=1.0)
            self.create_operand(bottoms[0], p.axis, p.num_axes, filler)
        self.bias_layer = self._make_bias_layer(bottoms, tops) if p.bias_term else None
        self.check_blob_count(int(len(bottoms) == 1) + int(p.bias_term))
        self.input_copy = InputCopy()
        self.no_bias = np.full(1, -0.0, np.float32)  # x · s + (−0) is x · s to the bit

    def _make_bias_layer(self, bottoms, tops):
        """Caffe's inner Bias layer; it shares the bias blob, the last of this layer's blobs."""
        p = self.param.scale_param
        param = caffe_pb2.LayerParameter()
        param.CopyFrom(self.param)
        param.type = "Bias"
        param.ClearField("loss_weight")
        param.bias_param.axis = p.axis
        param.bias_param.num_axes = bottoms[1].num_axes if len(bottoms) > 1 else p.num_axes
        param.bias_param.filler.CopyFrom(p.bias_filler)
        # Caffe: the bias blob was loaded too when blobs + bottoms reach 3 (scale_layer.cpp).
        loaded = self.blobs[-1:] if len(self.blobs) + len(bottoms) >= 3 else None
        layer = BiasLayer(param, self.phase, blobs=loaded)
        layer.layer_setup(bottoms[:1], tops)
        if loaded is None:
            self.blobs.append(layer.blobs[0])
        return layer

    def reshape(self, bottoms, tops):
        scale = bottoms[1] if len(bottoms) > 1 else self.blobs[0]
        self.view = self.operand_view(bottoms[0], scale, self.axis)
        if tops[0] is not bottoms[0]:
            tops[0].reshape(bottoms[0].shape)
        self.input_copy.reshape(bottoms[0], tops[0], True)
        if self.bias_layer is not None:
            self.bias_layer.reshape(tops[:1], tops)
        # The bias joins the scaling pass when it lines up as the scale does (it always does but
        # for a loaded bias blob of another shape).
        self.fused_bias = self.bias_layer is not None and self.bias_layer.view == self.view

    def forward(self, bottoms, tops):
        # One pass over x: the input copy (in place, for backward; InputCopy.save's condition),
        # x · s and, rounded after the product as in Caffe's two layers, the inner Bias's + b.
        scale = bottoms[1] if len(bottoms) > 1 else self.blobs[0]
        y = tops[0].data.reshape(self.view)
        x_copy = y
        if self.input_copy.active and self.needs_backward:
            self.input_copy.blob.reshape(bottoms[0].shape)
            x_copy = self.input_copy.blob.data.reshape(self.view)
        bias = self.bias_layer.blobs[0].data.reshape(-1) if self.fused_bias else self.no_bias
        elementwise.axis_affine(bottoms[0].data.reshape(self.view), scale.data.reshape(-1),
                                bias, y, x_copy)
        if self.bias_layer is not None and not self.fused_bias:
            self.bias_layer.forward(tops[:1], tops)

    def backward(self, tops, propagate_down, bottoms):
        # Parameter gradients first: in place, the bottom diff overwrites the top diff.
        if self.bias_layer is not None and self.param_propagate_down[-1]:
            self.bias_layer.backward(tops, [False], tops[:1])
        from_param = len(bottoms) == 1
        scale = self.blobs[0] if from_param else bottoms[1]
        dy = tops[0].diff.reshape(self.view)
        if (from_param and self.param_propagate_down[0]) or (
                not from_param and propagate_down[1]):
            # Caffe overwrites a same-sized scale param's diff instead of accumulating into it
            # (its "is_eltwise" shortcut); we accumulate into every param diff, as the contract
            # says, and overwrite only bottom diffs.
            x = self.input_copy.data(bottoms[0]).reshape(self.view)
            elementwise.axis_dot(dy, x, from_param, scale.diff.reshape(-1))
        if propagate_down[0]:
            elementwise.axis_scale(dy, scale.data.reshape(-1), bottoms[0].diff.reshape(self.view))
