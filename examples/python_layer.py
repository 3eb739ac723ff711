#!/usr/bin/env python3
"""A Python loss layer inside a net: built, run, compared with Caffe's EuclideanLoss, and
gradient-checked by finite differences.

    python examples/python_layer.py
"""

import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # so "pyloss" imports

import protonet as caffe  # noqa: E402
from protonet.net_spec import NetSpec, layers as L  # noqa: E402


def make_net(loss_type):
    """data (4×6) → InnerProduct (3) → loss against label (4×3); force_backward for data."""
    n = NetSpec()
    n.data, n.label = L.Input(shape=[dict(dim=[4, 6]), dict(dim=[4, 3])], ntop=2)
    n.pred = L.InnerProduct(n.data, num_output=3, weight_filler=dict(type="gaussian", std=0.5),
                            bias_filler=dict(type="constant", value=0.1))
    if loss_type == "Python":
        n.loss = L.Python(n.pred, n.label, module="pyloss", layer="EuclideanLossLayer",
                          loss_weight=1)
    else:
        n.loss = L.EuclideanLoss(n.pred, n.label)
    net_param = n.to_proto()
    net_param.force_backward = True
    return net_param


def run(net, data, label):
    net.blobs["data"].data[...] = data
    net.blobs["label"].data[...] = label
    net.clear_param_diffs()
    loss = net.forward()["loss"].item()
    net.backward()
    return loss


def numeric_gradient(net, data, label, step=1e-2):
    """Central differences of the loss with respect to each data element (float64 sums)."""
    grad = np.zeros_like(data, dtype=np.float64)
    for index in np.ndindex(*data.shape):
        losses = []
        for delta in (step, -step):
            shifted = data.copy()
            shifted[index] += delta
            net.blobs["data"].data[...] = shifted
            net.blobs["label"].data[...] = label
            losses.append(net.forward()["loss"].item())
        grad[index] = (losses[0] - losses[1]) / (2 * step)
    return grad


def main():
    caffe.set_random_seed(1701)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((4, 6)).astype(np.float32)
    label = rng.standard_normal((4, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pyloss.prototxt")
        with open(path, "w") as f:
            f.write(str(make_net("Python")))
        py_net = caffe.Net(path, caffe.TRAIN)
    ref_net = caffe.Net(make_net("EuclideanLoss"), caffe.TRAIN)
    ref_net.share_with(py_net)                  # same weights in both nets

    py_loss, ref_loss = run(py_net, data, label), run(ref_net, data, label)
    print(f"Python EuclideanLossLayer loss = {py_loss:.6f}, built-in EuclideanLoss = "
          f"{ref_loss:.6f}")
    assert abs(py_loss - ref_loss) <= 1e-5 * max(1.0, abs(ref_loss))
    for name in ("data", "label"):
        np.testing.assert_allclose(py_net.blobs[name].diff, ref_net.blobs[name].diff,
                                   rtol=1e-5, atol=1e-6, err_msg=f"{name} gradient")
    np.testing.assert_allclose(py_net.params["pred"][0].diff, ref_net.params["pred"][0].diff,
                               rtol=1e-5, atol=1e-6, err_msg="weight gradient")

    run(py_net, data, label)
    analytic = py_net.blobs["data"].diff.copy()
    numeric = numeric_gradient(py_net, data, label)
    error = np.abs(analytic - numeric) / np.maximum(1.0, np.abs(numeric))
    print(f"gradient check over {data.size} inputs: max relative error {error.max():.2e}")
    assert error.max() < 1e-3, "Python layer gradient disagrees with finite differences"
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
