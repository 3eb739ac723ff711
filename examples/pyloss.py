"""A Euclidean loss written as a Python layer, as in Caffe's examples/pycaffe/layers/pyloss.py.

Use it from a prototxt with::

    layer { name: "loss" type: "Python" bottom: "pred" bottom: "label" top: "loss"
            python_param { module: "pyloss" layer: "EuclideanLossLayer" } loss_weight: 1 }

with this folder on PYTHONPATH. loss = Σ (a − b)² / (2 N), N the batch size.
"""

import numpy as np

import protonet as caffe


class EuclideanLossLayer(caffe.Layer):
    """Two bottoms of equal size → one scalar top; gradients (a − b)/N and (b − a)/N."""

    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise caffe.ProtonetError("EuclideanLossLayer needs two bottoms (prediction, target)")

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise caffe.ProtonetError(f"bottoms differ in size: {bottom[0].shape} vs "
                                      f"{bottom[1].shape}")
        self.diff = np.zeros(bottom[0].shape, dtype=np.float32)
        top[0].reshape(1)      # a scalar loss (Caffe's loss blobs are 1-element)

    def forward(self, bottom, top):
        self.diff[...] = bottom[0].data - bottom[1].data.reshape(self.diff.shape)
        top[0].data[...] = np.sum(self.diff ** 2) / bottom[0].num / 2.0

    def backward(self, top, propagate_down, bottom):
        # The top's diff holds the loss weight; scale by it as Caffe's built-in loss does.
        weight = float(top[0].diff.flat[0])
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                bottom[i].diff[...] = (sign * weight * self.diff / bottom[i].num).reshape(
                    bottom[i].shape)
