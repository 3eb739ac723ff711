"""Reductions over the tail axes (Reduction) and top-k selection (ArgMax)."""

import numpy as np

from ...kernels import reduction as kernels
from ...proto import caffe_pb2
from ..base import Layer
from ..registry import register
from ._helpers import canonical_axis

MEAN = caffe_pb2.ReductionParameter.MEAN


@register("Reduction")
class ReductionLayer(Layer):
    """y[i] = coeff · Σ_j f(x[i, j]) over all axes from ``axis`` on; f by ``operation``.

    reduction_param: operation (SUM: f = x; ASUM: |x|; SUMSQ: x²; MEAN: x, with coeff divided by
    the number of reduced elements), axis (0; negative counts from the end; every axis from it on
    is reduced), coeff (1).
    Bottom: x (d_0, …, d_last). Top: y (d_0, …, d_{axis-1}); a scalar () for axis 0.
    dx = dy · coeff · f'(x), with sign(0) = 0 for ASUM. Params: none. In place: no.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottoms, tops):
        p = self.param.reduction_param
        self.operation = int(p.operation)
        self.axis_param = int(p.axis)
        self.coeff_param = np.float32(p.coeff)

    def reshape(self, bottoms, tops):
        x = bottoms[0]
        axis = canonical_axis(self, x, self.axis_param, "reduction_param.axis")
        self.num = x.count_axes(0, axis)
        self.dim = x.count_axes(axis)
        tops[0].reshape(x.shape[:axis])
        self.coeff = self.coeff_param
        if self.operation == MEAN:
            if self.dim == 0:
                self.fail(f"MEAN over axes {axis}.. of shape {x.shape} has no elements")
            # Caffe quirk: coeff_ /= dim_ in float32 (reduction_layer.cpp).
            self.coeff = np.float32(self.coeff_param / np.float32(self.dim))

    def forward(self, bottoms, tops):
        kernels.reduction_forward(bottoms[0].data.reshape(self.num, self.dim), self.operation,
                                  self.coeff, tops[0].data.reshape(self.num))

    def backward(self, tops, propagate_down, bottoms):
        if propagate_down[0]:
            kernels.reduction_backward(bottoms[0].data.reshape(self.num, self.dim),
                                       tops[0].diff.reshape(self.num), self.operation,
                                       self.coeff, bottoms[0].diff.reshape(self.num, self.dim))


@register("ArgMax")
class ArgMaxLayer(Layer):
    """The indices (and optionally values) of the top_k largest entries, largest first.

    argmax_param: top_k (1, >= 1), out_max_val (false), axis (unset: search each item's
    count(1) values; set: search along that axis, negative counting from the end).
    Bottom: x (N, …).
    Top with axis: x's shape with shape[axis] = top_k, holding the indices, or the values when
    out_max_val. Without axis: (N, 1, top_k) indices, or (N, 2, top_k) with out_max_val (indices
    then values), padded with trailing 1s to x's number of axes.
    Ties: the larger index first (Caffe sorts (value, index) pairs with std::greater).
    No backward. Params: none. In place: no.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottoms, tops):
        p = self.param.argmax_param
        self.top_k = int(p.top_k)
        self.out_max_val = bool(p.out_max_val)
        self.axis_param = int(p.axis) if p.HasField("axis") else None
        if self.top_k < 1:
            self.fail(f"argmax_param.top_k must be at least 1, got {self.top_k}")

    def reshape(self, bottoms, tops):
        x = bottoms[0]
        if self.axis_param is not None:
            axis = canonical_axis(self, x, self.axis_param, "argmax_param.axis")
            dim = x.shape[axis]
            self.outer, self.inner = x.count_axes(0, axis), x.count_axes(axis + 1)
            shape = x.shape[:axis] + (self.top_k,) + x.shape[axis + 1:]
        else:
            if x.num_axes < 1:
                self.fail("ArgMax without argmax_param.axis needs a bottom with a batch axis, "
                          "got a scalar")
            self.outer, dim, self.inner = x.shape[0], x.count_axes(1), 1
            # Caffe quirk: the top has at least 3 axes, (N, 1 or 2, top_k, 1, ...)
            # (argmax_layer.cpp).
            shape = (x.shape[0], 2 if self.out_max_val else 1, self.top_k)
            shape += (1,) * (x.num_axes - 3)
        if self.top_k > dim:
            self.fail(f"argmax_param.top_k {self.top_k} is larger than the {dim} values searched "
                      f"(bottom shape {x.shape})")
        self.dim = dim
        tops[0].reshape(shape)

    def forward(self, bottoms, tops):
        x = bottoms[0].data.reshape(self.outer, self.dim, self.inner)
        if self.axis_param is not None:
            out = tops[0].data.reshape(self.outer, self.top_k, self.inner)
            kernels.argmax_forward(x, out, out, not self.out_max_val, self.out_max_val)
        else:
            out = tops[0].data.reshape(self.outer, -1, self.top_k)
            indices = out[:, 0, :, np.newaxis]
            values = out[:, -1, :, np.newaxis]
            kernels.argmax_forward(x, indices, values, True, self.out_max_val)
