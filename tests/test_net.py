"""Net building and running: Caffe's rules, one small net per rule."""

import numpy as np
import pytest
from google.protobuf import text_format

from protonet import rng
from protonet.errors import ProtonetError
from protonet.net import TEST, TRAIN, Net
from protonet.proto import caffe_pb2

from tests.helpers.tolerances import GRAD_STEP, GRAD_THRESHOLD

INPUTS = """
layer { name: "data" type: "Input" top: "x" top: "label"
        input_param { shape { dim: 4 dim: 6 } shape { dim: 4 } } }
"""


def build(text, phase=TRAIN):
    param = text_format.Parse(INPUTS + text, caffe_pb2.NetParameter())
    return Net(param, phase)


def set_inputs(net, seed=0):
    gen = np.random.default_rng(seed)
    net.blobs["x"].data[...] = gen.standard_normal(net.blobs["x"].shape)
    net.blobs["label"].data[...] = gen.integers(0, 3, net.blobs["label"].shape)


def check_param_gradient(net, blob, positions, step, name):
    """Central differences of the net's loss against ``blob.diff`` at ``positions``; a count."""
    analytic = blob.diff.copy().reshape(-1)
    flat = blob.data.reshape(-1)
    for i in positions:
        original = flat[i]
        flat[i] = original + step
        plus = net.forward_from_to()
        flat[i] = original - step
        minus = net.forward_from_to()
        flat[i] = original
        numeric = (plus - minus) / (2 * step)
        scale = max(abs(numeric), abs(analytic[i]), 1.0)
        assert abs(numeric - analytic[i]) <= GRAD_THRESHOLD * scale, \
            f"{name}[{i}]: analytic {analytic[i]} numeric {numeric}"
    return len(positions)


@pytest.fixture(autouse=True)
def seeded():
    rng.set_random_seed(7)


IP_LOSS = """
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_inputs_outputs_and_loss_weights_follow_caffe():
    net = build(IP_LOSS)
    assert net.inputs == ["x", "label"]
    assert net.outputs == ["loss"]
    assert net.blob_loss_weights["loss"] == 1.0 and net.blob_loss_weights["ip"] == 0.0
    assert list(net.params) == ["ip"] and [b.shape for b in net.params["ip"]] == [(3, 6), (3,)]


def test_forward_returns_outputs_and_loss_matches_numpy():
    net = build(IP_LOSS)
    set_inputs(net)
    out = net.forward()
    w, b = (blob.data for blob in net.params["ip"])
    scores = net.blobs["x"].data @ w.T + b
    scores -= scores.max(axis=1, keepdims=True)
    logp = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
    labels = net.blobs["label"].data.astype(int)
    expected = -logp[np.arange(4), labels].mean()
    assert np.isclose(float(out["loss"]), expected, rtol=1e-5)


def test_whole_net_gradient_matches_finite_differences():
    net = build(IP_LOSS)
    set_inputs(net)
    net.forward()
    net.clear_param_diffs()
    net.backward()
    weights = net.params["ip"][0]
    check_param_gradient(net, weights, range(weights.count), GRAD_STEP, "ip")


def test_split_layer_inserted_for_fan_out():
    net = build(IP_LOSS + ('layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" '
                           'top: "acc" }'))
    names = [r.param.name for r in net.records]
    assert "ip_ip_0_split" in names and "label_data_1_split" in names
    assert net.blobs["ip_ip_0_split_0"].shape == (4, 3)


def test_gradients_of_a_fanned_out_blob_are_summed():
    text = """force_backward: true""" + INPUTS + """
layer { name: "ip_a" type: "InnerProduct" bottom: "x" top: "a"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
layer { name: "ip_b" type: "InnerProduct" bottom: "x" top: "b"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss" }
layer { name: "silence" type: "Silence" bottom: "label" }
"""
    net = Net(text_format.Parse(text, caffe_pb2.NetParameter()), TRAIN)
    set_inputs(net)
    net.forward()
    net.backward()
    wa, wb = net.params["ip_a"][0].data, net.params["ip_b"][0].data
    diff = (net.blobs["a"].data - net.blobs["b"].data) / 4
    expected = diff @ wa - diff @ wb
    np.testing.assert_allclose(net.blobs["x"].diff, expected, rtol=1e-4, atol=1e-6)


def test_in_place_layer_shares_the_blob():
    net = build("""
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" inner_product_param { num_output: 3 } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
""")
    ip_record, relu_record = net.records[1], net.records[2]
    assert relu_record.tops[0] is relu_record.bottoms[0] is ip_record.tops[0]


def test_in_place_refused_for_layers_caffe_refuses():
    with pytest.raises(ProtonetError, match="in place") as info:
        build('layer { name: "abs" type: "AbsVal" bottom: "x" top: "x" }')
    assert info.value.layer == "abs"


def test_two_producers_of_one_top_is_an_error():
    with pytest.raises(ProtonetError, match="multiple sources"):
        build('layer { name: "a" type: "ReLU" bottom: "x" top: "y" }\n'
              'layer { name: "b" type: "ReLU" bottom: "x" top: "y" }')


def test_unknown_layer_type_suggests_the_closest_names():
    with pytest.raises(ProtonetError, match="did you mean 'ReLU'"):
        build('layer { name: "r" type: "Relu" bottom: "x" top: "y" }')


SHARED = """
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "a"
        param { name: "w" lr_mult: 1 } param { name: "b" lr_mult: 2 }
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
layer { name: "ip2" type: "InnerProduct" bottom: "x" top: "b"
        param { name: "w" } param { name: "b" }
        inner_product_param { num_output: 3 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss" }
"""


def test_named_params_are_shared_with_the_owner():
    net = build(SHARED)
    w1, w2 = net.params["ip1"][0], net.params["ip2"][0]
    w1.data[...] = 3
    assert np.all(w2.data == 3)
    assert len(net.learnable_params) == 2 and net.params_lr == [1.0, 2.0]


def test_shared_param_shape_mismatch_is_an_error():
    with pytest.raises(ProtonetError, match="shape mismatch"):
        build(SHARED.replace("inner_product_param { num_output: 3 } }",
                             "inner_product_param { num_output: 2 } }"))


def test_permissive_share_mode_compares_counts_only():
    text = """
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "a"
        param { name: "w" } inner_product_param { num_output: 3 bias_term: false } }
layer { name: "ip2" type: "InnerProduct" bottom: "x" top: "b"
        param { name: "w" share_mode: PERMISSIVE }
        inner_product_param { num_output: 6 bias_term: false transpose: true } }
"""
    with pytest.raises(ProtonetError):
        build(text.replace("transpose: true", "transpose: false"))
    net = build(text.replace("num_output: 6", "num_output: 3"))
    assert net.params["ip2"][0].shape == (6, 3)


def test_lr_mult_zero_and_propagate_down_prune_backward():
    net = build("""
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
        param { lr_mult: 0 } param { lr_mult: 0 } inner_product_param { num_output: 3 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip" top: "ip2" propagate_down: false
        inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
""")
    need = {r.param.name: r.need_backward for r in net.records}
    assert need == {"data": False, "ip": False, "ip2": True, "loss": True}
    assert net.records[2].bottom_need_backward == [False]


def test_layers_not_under_a_loss_need_no_backward_unless_forced():
    text = ('layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" '
            'inner_product_param { num_output: 3 } }')
    net = build(text)
    assert not net.records[1].need_backward
    forced = text_format.Parse("force_backward: true" + INPUTS + text, caffe_pb2.NetParameter())
    net = Net(forced, TRAIN)
    assert net.records[1].need_backward and net.records[1].bottom_need_backward == [True]


def test_explicit_loss_weight_makes_any_layer_a_loss():
    net = build('layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" loss_weight: 0.5 '
                'inner_product_param { num_output: 2 } }')
    set_inputs(net)
    loss = net.forward_from_to()
    assert np.isclose(loss, 0.5 * net.blobs["ip"].data.sum(), rtol=1e-5)


def test_phase_filtering_builds_different_train_and_test_nets():
    text = IP_LOSS + ('layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" '
                      'top: "acc" include { phase: TEST } }')
    assert "acc" not in build(text, TRAIN).layer_dict
    assert "acc" in build(text, TEST).layer_dict


def test_forward_from_and_to_named_layers():
    net = build(IP_LOSS)
    set_inputs(net)
    out = net.forward(end="ip")
    assert set(out) == {"ip"}
    with pytest.raises(ProtonetError, match="no layer named"):
        net.forward(start="nope")


def test_propagate_down_count_must_match_bottoms():
    with pytest.raises(ProtonetError, match="propagate_down"):
        build('layer { name: "r" type: "ReLU" bottom: "x" top: "y" propagate_down: true '
              'propagate_down: false }')


# A smaller step than the layer checks: max pooling and ReLU switch inside ±1e-2 on a whole net.
NET_GRAD_STEP = 1e-3

LENET_TRAIN = """
name: "LeNet"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 1 dim: 28 dim: 28 } shape { dim: 2 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 4 kernel_size: 5 stride: 1
          weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 5 kernel_size: 5 stride: 1
          weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
        inner_product_param { num_output: 8 weight_filler { type: "xavier" }
          bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def test_lenet_forward_backward_passes_a_numerical_gradient_check():
    net = Net(text_format.Parse(LENET_TRAIN, caffe_pb2.NetParameter()), TRAIN)
    gen = np.random.default_rng(3)
    net.blobs["data"].data[...] = gen.random(net.blobs["data"].shape)
    net.blobs["label"].data[...] = [3, 7]
    net.forward()
    net.clear_param_diffs()
    net.backward()
    checked = 0
    for layer_name, blobs in net.params.items():
        for blob in blobs:
            positions = gen.choice(blob.count, min(6, blob.count), replace=False)
            checked += check_param_gradient(net, blob, positions, NET_GRAD_STEP, layer_name)
    assert checked == sum(min(6, b.count) for blobs in net.params.values() for b in blobs)


def test_conv_layers_share_one_col_buffer_sized_for_the_largest():
    net = Net(text_format.Parse(LENET_TRAIN, caffe_pb2.NetParameter()), TRAIN)
    conv1, conv2 = net.layer_dict["conv1"], net.layer_dict["conv2"]
    assert conv1.workspace is conv2.workspace is net.workspace
    # Both run batched (2 images per GEMM): columns then transposed output. conv1: 2 images x
    # ((1 x 5 x 5) rows + 4 channels) x 24 x 24; conv2: 2 x (100 rows + 5 channels) x 8 x 8.
    scratch = net.workspace.get("conv_scratch0", 0).base
    assert scratch.size == max(2 * (25 + 4) * 24 * 24, 2 * (100 + 5) * 8 * 8) == 33408
    gen = np.random.default_rng(5)
    net.blobs["data"].data[...] = gen.random(net.blobs["data"].shape)
    net.blobs["label"].data[...] = [1, 4]
    net.forward()
    # Each layer recomputes its columns in its own call, so sharing changes no result: a net
    # whose conv2 has a private buffer computes the same numbers.
    private = Net(text_format.Parse(LENET_TRAIN, caffe_pb2.NetParameter()), TRAIN)
    private.layer_dict["conv2"].workspace = type(net.workspace)()
    for name in ("data", "label"):
        private.blobs[name].data[...] = net.blobs[name].data
    for layer, twin in zip(net.layers, private.layers):
        for a, b in zip(layer.blobs, twin.blobs):
            b.data[...] = a.data
    private.forward()
    assert net.blobs["loss"].data > 0
    for name in ("conv1", "conv2", "loss"):
        np.testing.assert_array_equal(private.blobs[name].data, net.blobs[name].data)


def test_in_place_input_copies_are_kept_only_where_backward_runs():
    # A deploy net has no loss, so no layer needs backward: an in-place Scale keeps no copy of
    # its input. With a loss (or force_backward) it must.
    body = INPUTS.replace("dim: 4 dim: 6", "dim: 4 dim: 6 dim: 5") + """
layer { name: "scale" type: "Scale" bottom: "x" top: "x" scale_param { bias_term: true } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
"""
    loss = ('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" '
            'top: "loss" }')
    for extra, force, kept in (("", False, False), (loss, False, True), ("", True, True)):
        param = text_format.Parse(body + extra, caffe_pb2.NetParameter())
        param.force_backward = force
        net = Net(param, TEST)
        set_inputs(net)
        net.forward()
        layer = net.layer_dict["scale"]
        assert layer.needs_backward == kept
        assert (layer.input_copy.blob.count == 4 * 6 * 5) == kept, (extra, force)
