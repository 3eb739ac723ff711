"""The pycaffe surface of Net: constructors, dictionaries, forward/backward with keywords,
forward_all / forward_backward_all, weights round trips, sharing, and real Caffe weights."""

import glob
import os

import h5py
import numpy as np
import pytest
from google.protobuf import text_format

import protonet
from protonet import pycaffe
from protonet.errors import ProtonetError
from protonet.io.prototxt import read_net
from protonet.proto import caffe_pb2

from tests.helpers.tolerances import KERNEL_ATOL, KERNEL_RTOL

CONFORMANCE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "conformance",
                           "solvers")

NET = """
name: "api"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 2 dim: 5 dim: 5 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3
          weight_filler { type: "gaussian" std: 0.3 }
          bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""

DEPLOY = """
name: "api_deploy"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 4 dim: 2 dim: 5 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3
          weight_filler { type: "gaussian" std: 0.3 }
          bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


@pytest.fixture
def rng():
    return np.random.default_rng(3)


@pytest.fixture
def files(tmp_path):
    """(train prototxt, deploy prototxt, weights) with seeded filler weights."""
    protonet.set_random_seed(1701)
    train, deploy = tmp_path / "train.prototxt", tmp_path / "deploy.prototxt"
    train.write_text(NET)
    deploy.write_text(DEPLOY)
    weights = tmp_path / "w.caffemodel"
    protonet.Net(str(train), protonet.TRAIN).save(str(weights))
    return str(train), str(deploy), str(weights)


def inputs(rng, n=4):
    return (rng.standard_normal((n, 2, 5, 5)).astype(np.float32),
            rng.integers(0, 3, n).astype(np.float32))


# ---- construction and dictionaries -------------------------------------------------------------
def test_both_constructor_forms_load_the_same_weights(files):
    train, _, weights = files
    a = protonet.Net(train, protonet.TEST, weights=weights)
    b = protonet.Net(train, weights, protonet.TEST)
    assert a.phase == b.phase == protonet.TEST
    for name in ("conv", "ip"):
        for blob_a, blob_b in zip(a.params[name], b.params[name]):
            np.testing.assert_array_equal(blob_a.data, blob_b.data)


def test_dictionaries_follow_caffe_order(files):
    net = protonet.Net(files[0], protonet.TRAIN)
    assert list(net.blobs) == ["data", "label", "conv", "ip", "loss"]
    assert list(net.params) == ["conv", "ip"]
    assert [b.shape for b in net.params["conv"]] == [(3, 2, 3, 3), (3,)]
    assert net._layer_names == ["data", "conv", "relu", "ip", "loss"]
    assert list(net.layer_dict) == net._layer_names
    assert net.layer_dict["conv"].type == "Convolution"
    assert net.top_names["relu"] == ["conv"] and net.bottom_names["loss"] == ["ip", "label"]
    assert net.inputs == ["data", "label"] and net.outputs == ["loss"]
    assert net.blob_loss_weights["loss"] == 1 and net.blob_loss_weights["ip"] == 0
    assert net.blobs["conv"].num == 4 and net.blobs["conv"].channels == 3
    assert net.blobs["conv"].count == 4 * 3 * 3 * 3


def test_forward_with_keywords_and_extra_blobs(files, rng):
    net = protonet.Net(files[1], protonet.TEST, weights=files[2])
    data, _ = inputs(rng)
    out = net.forward(blobs=["conv"], data=data)
    assert set(out) == {"prob", "conv"}
    np.testing.assert_allclose(out["prob"].sum(axis=1), 1, rtol=KERNEL_RTOL)
    w, b = net.params["ip"][0].data, net.params["ip"][1].data
    logits = out["conv"].reshape(4, -1) @ w.T + b
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(out["prob"], expected, rtol=1e-4, atol=KERNEL_ATOL)


def test_forward_keywords_must_name_all_inputs(files, rng):
    net = protonet.Net(files[0], protonet.TEST)
    with pytest.raises(ProtonetError, match="do not match"):
        net.forward(data=inputs(rng)[0])


def test_forward_start_end_runs_part_of_the_net(files, rng):
    net = protonet.Net(files[1], protonet.TEST, weights=files[2])
    data, _ = inputs(rng)
    net.blobs["data"].data[...] = data
    conv = net.forward(end="relu")["conv"].copy()
    assert (conv >= 0).all()
    prob = net.forward(start="ip")["prob"]
    np.testing.assert_allclose(prob, net.forward(data=data)["prob"], rtol=KERNEL_RTOL)


# ---- forward_all / forward_backward_all --------------------------------------------------------
def forward_all(net, **kwargs):
    method = getattr(net, "forward_all", None)
    return method(**kwargs) if method else pycaffe.forward_all(net, **kwargs)


def forward_backward_all(net, **kwargs):
    method = getattr(net, "forward_backward_all", None)
    return method(**kwargs) if method else pycaffe.forward_backward_all(net, **kwargs)


def test_forward_all_batches_and_drops_padding(files, rng):
    net = protonet.Net(files[1], protonet.TEST, weights=files[2])
    data = rng.standard_normal((10, 2, 5, 5)).astype(np.float32)     # 4 + 4 + 2 (padded)
    out = forward_all(net, blobs=["conv"], data=data)
    assert out["prob"].shape == (10, 3) and out["conv"].shape == (10, 3, 3, 3)
    for start in (0, 4):
        expected = net.forward(data=data[start:start + 4])["prob"]
        np.testing.assert_allclose(out["prob"][start:start + 4], expected, rtol=KERNEL_RTOL)
    last = net.forward(data=np.concatenate([data[8:], np.zeros((2, 2, 5, 5), np.float32)]))
    np.testing.assert_allclose(out["prob"][8:], last["prob"][:2], rtol=KERNEL_RTOL)


def test_forward_all_needs_inputs(files):
    net = protonet.Net(files[1], protonet.TEST)
    with pytest.raises(ProtonetError, match="needs input arrays"):
        forward_all(net)


def test_forward_backward_all_returns_outputs_and_input_diffs(files, rng):
    net_param = text_format.Parse(DEPLOY, caffe_pb2.NetParameter())
    net_param.force_backward = True
    net = protonet.Net(net_param, protonet.TEST, weights=files[2])
    data = rng.standard_normal((6, 2, 5, 5)).astype(np.float32)
    top_diff = rng.standard_normal((6, 3)).astype(np.float32)
    outs, diffs = forward_backward_all(net, data=data, prob=top_diff)
    assert outs["prob"].shape == (6, 3) and diffs["data"].shape == (6, 2, 5, 5)
    net.forward(data=data[:4])
    expected = net.backward(prob=top_diff[:4])["data"]
    np.testing.assert_allclose(diffs["data"][:4], expected, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


# ---- weights ----------------------------------------------------------------------------------
def test_save_then_copy_from_gives_identical_outputs(files, rng, tmp_path):
    net = protonet.Net(files[1], protonet.TEST)
    data, _ = inputs(rng)
    expected = net.forward(data=data)["prob"].copy()
    path = str(tmp_path / "again.caffemodel")
    net.save(path)
    other = protonet.Net(files[1], protonet.TEST)
    other.copy_from(path)
    np.testing.assert_array_equal(other.forward(data=data)["prob"], expected)


def test_hdf5_save_and_load_round_trip(files, rng, tmp_path):
    net = protonet.Net(files[1], protonet.TEST)
    data, _ = inputs(rng)
    expected = net.forward(data=data)["prob"].copy()
    path = str(tmp_path / "w.caffemodel.h5")
    net.save_hdf5(path)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["data/conv/0"][()], net.params["conv"][0].data)
    other = protonet.Net(files[1], protonet.TEST)
    other.load_hdf5(path)
    np.testing.assert_array_equal(other.forward(data=data)["prob"], expected)


def test_share_with_uses_the_same_parameter_storage(files, rng):
    train = protonet.Net(files[0], protonet.TRAIN)
    deploy = protonet.Net(files[1], protonet.TEST)
    deploy.share_with(train)
    train.params["ip"][0].data[...] = 0.25
    np.testing.assert_array_equal(deploy.params["ip"][0].data, 0.25)


# ---- weights written by BVLC Caffe ------------------------------------------------------------
def conformance_net(case):
    """The case's net with its HDF5Data layer replaced by an Input layer of the same tops."""
    folder = os.path.join(CONFORMANCE, case)
    net_param = read_net(os.path.join(folder, "net.prototxt"))
    with h5py.File(os.path.join(folder, "train.h5"), "r") as f:
        shapes = [f["data"].shape, f["label"].shape]
    data_layer = net_param.layer[0]
    batch = data_layer.hdf5_data_param.batch_size
    data_layer.Clear()
    data_layer.name, data_layer.type = "data", "Input"
    data_layer.top.extend(["data", "label"])
    for shape in shapes:
        data_layer.input_param.shape.add().dim.extend([batch] + list(shape[1:]))
    return protonet.Net(net_param, protonet.TEST)


def proto_blobs(path):
    weights = caffe_pb2.NetParameter()
    with open(path, "rb") as f:
        weights.ParseFromString(f.read())
    return {layer.name: [protonet.io.blobproto_to_array(b) for b in layer.blobs]
            for layer in weights.layer if layer.blobs}


CASES = sorted(os.path.basename(os.path.dirname(p))
               for p in glob.glob(os.path.join(CONFORMANCE, "*", "ref_iter_10.caffemodel")))


@pytest.mark.skipif(not CASES, reason="shared conformance data not present")
@pytest.mark.parametrize("weights", ["init.caffemodel", "ref_iter_10.caffemodel"])
@pytest.mark.parametrize("case", CASES)
def test_caffe_written_caffemodel_loads_blob_for_blob(case, weights):
    path = os.path.join(CONFORMANCE, case, weights)
    net = conformance_net(case)
    net.copy_from(path)
    expected = proto_blobs(path)
    assert set(expected) == set(net.params)
    for name, arrays in expected.items():
        for blob, array in zip(net.params[name], arrays):
            np.testing.assert_array_equal(blob.data, array.reshape(blob.shape))


@pytest.mark.skipif(not os.path.isdir(os.path.join(CONFORMANCE, "adam_hdf5_snapshots")),
                    reason="shared conformance data not present")
def test_caffe_written_hdf5_caffemodel_loads():
    path = os.path.join(CONFORMANCE, "adam_hdf5_snapshots", "ref_iter_10.caffemodel.h5")
    net = conformance_net("adam_hdf5_snapshots")
    net.copy_from(path)
    with h5py.File(path, "r") as f:
        for name, blobs in net.params.items():
            for i, blob in enumerate(blobs):
                np.testing.assert_array_equal(blob.data, f[f"data/{name}/{i}"][()])
