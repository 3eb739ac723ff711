"""Eltwise: element-wise product, weighted sum or maximum of several blobs of one shape."""

import numpy as np

from ...log import get_logger
from ...proto import caffe_pb2
from ..base import Layer
from ..registry import register
from ._helpers import Scratch

log = get_logger(__name__)

PROD = caffe_pb2.EltwiseParameter.PROD
SUM = caffe_pb2.EltwiseParameter.SUM
MAX = caffe_pb2.EltwiseParameter.MAX


@register("Eltwise")
class EltwiseLayer(Layer):
    """y = Π_i x_i (PROD), Σ_i coeff_i · x_i (SUM) or max_i x_i (MAX), element by element.

    eltwise_param: operation (SUM), coeff (repeated, SUM only: none or one per bottom, default
    1), stable_prod_grad (true: PROD's dx_i is the product of the other bottoms; false: y / x_i).
    Bottoms: x_i (at least 2), all of one shape. Top: y, that shape.
    MAX keeps the index of the winning bottom per element (ties: Caffe's order, see forward);
    the gradient goes to that bottom only. Params: none. In place: no.
    """

    min_bottoms = 2
    exact_tops = 1

    def setup(self, bottoms, tops):
        p = self.param.eltwise_param
        n = len(bottoms)
        if len(p.coeff) not in (0, n):
            self.fail(f"eltwise_param.coeff given {len(p.coeff)} times for {n} bottoms; give one "
                      f"per bottom or none")
        if p.operation == PROD and len(p.coeff):
            self.fail("eltwise_param.coeff only applies to operation SUM; remove it for PROD")
        if p.operation == MAX and len(p.coeff):
            log.warning("layer '%s': eltwise_param.coeff is ignored for operation MAX (as in "
                        "Caffe)", self.name)
        self.operation = p.operation
        self.coeffs = [np.float32(c) for c in p.coeff] or [np.float32(1.0)] * n
        self.stable_prod_grad = bool(p.stable_prod_grad)
        forward = {PROD: self._forward_prod, SUM: self._forward_sum, MAX: self._forward_max}
        backward = {PROD: self._backward_prod, SUM: self._backward_sum, MAX: self._backward_max}
        self._forward, self._backward = forward[p.operation], backward[p.operation]
        self._mask_buf = Scratch(np.int32)
        self._flags_buf = Scratch(np.bool_)
        self._tmp_buf = Scratch(np.float32)

    def reshape(self, bottoms, tops):
        shape = bottoms[0].shape
        for i, blob in enumerate(bottoms[1:], start=1):
            if blob.shape != shape:
                self.fail(f"bottom {i} has shape {blob.shape} but bottom 0 has {shape}; all "
                          f"bottoms must have the same shape")
        tops[0].reshape(shape)
        if self.operation == MAX:
            self._mask = self._mask_buf.get(shape)
            self._flags = self._flags_buf.get(shape)
        if self.operation == SUM and any(c != 1 for c in self.coeffs[1:]):
            self._tmp = self._tmp_buf.get(shape)

    def forward(self, bottoms, tops):
        self._forward(bottoms, tops[0].data)

    def backward(self, tops, propagate_down, bottoms):
        for i, down in enumerate(propagate_down):
            if down:
                self._backward(i, bottoms, tops[0], bottoms[i].diff)

    # ---- PROD --------------------------------------------------------------------------------
    def _forward_prod(self, bottoms, y):
        np.multiply(bottoms[0].data, bottoms[1].data, out=y)
        for blob in bottoms[2:]:
            np.multiply(y, blob.data, out=y)

    def _backward_prod(self, i, bottoms, top, dx):
        if self.stable_prod_grad:
            others = [blob.data for j, blob in enumerate(bottoms) if j != i]
            np.copyto(dx, others[0])
            for data in others[1:]:
                np.multiply(dx, data, out=dx)
        else:
            np.divide(top.data, bottoms[i].data, out=dx)
        np.multiply(dx, top.diff, out=dx)

    # ---- SUM ---------------------------------------------------------------------------------
    def _forward_sum(self, bottoms, y):
        np.multiply(bottoms[0].data, self.coeffs[0], out=y)
        for blob, coeff in zip(bottoms[1:], self.coeffs[1:]):
            if coeff == 1:
                np.add(y, blob.data, out=y)
            else:
                np.multiply(blob.data, coeff, out=self._tmp)
                np.add(y, self._tmp, out=y)

    def _backward_sum(self, i, bottoms, top, dx):
        np.multiply(top.diff, self.coeffs[i], out=dx)

    # ---- MAX ---------------------------------------------------------------------------------
    def _forward_max(self, bottoms, y):
        # Caffe quirk: bottom 0 wins over bottom 1 only if strictly greater (ties go to 1), and
        # each later bottom must be strictly greater than the running max (eltwise_layer.cpp).
        wins = self._flags
        np.greater(bottoms[0].data, bottoms[1].data, out=wins)
        np.copyto(y, bottoms[1].data)
        np.copyto(y, bottoms[0].data, where=wins)
        self._mask[...] = 1
        np.copyto(self._mask, 0, where=wins)
        for index, blob in enumerate(bottoms[2:], start=2):
            np.greater(blob.data, y, out=wins)
            np.copyto(y, blob.data, where=wins)
            np.copyto(self._mask, index, where=wins)

    def _backward_max(self, i, bottoms, top, dx):
        np.equal(self._mask, i, out=self._flags)
        dx[...] = 0
        np.copyto(dx, top.diff, where=self._flags)
