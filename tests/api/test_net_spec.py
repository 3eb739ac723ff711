"""NetSpec: pycaffe's naming, ntop, in_place, keyword routing; coord_map.crop."""

import numpy as np
import pytest
from google.protobuf import text_format

import protonet
from protonet import coord_map
from protonet.errors import ProtonetError
from protonet.net_spec import NetSpec, layers as L, params as P, to_proto
from protonet.proto import caffe_pb2


def one_line(layer):
    return text_format.MessageToString(layer, as_one_line=True)


def test_assigned_tops_name_layers_and_blobs():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2]))
    n.ip = L.InnerProduct(n.data, num_output=3)
    net = n.to_proto()
    assert [(layer.name, layer.type, list(layer.bottom), list(layer.top)) for layer in
            net.layer] == [("data", "Input", [], ["data"]), ("ip", "InnerProduct", ["data"],
                                                            ["ip"])]


def test_unassigned_tops_get_type_counter_names():
    data = L.Input(shape=dict(dim=[1, 2]))
    top = L.ReLU(L.InnerProduct(L.InnerProduct(data, num_output=3), num_output=2))
    net = to_proto(top)
    assert [layer.name for layer in net.layer] == ["Input1", "InnerProduct1", "InnerProduct2",
                                                   "ReLU1"]
    assert list(net.layer[2].bottom) == ["InnerProduct1"]


def test_ntop_returns_a_tuple_and_ntop_zero_the_function():
    n = NetSpec()
    n.data, n.label = L.Data(source="x", batch_size=2, backend=P.Data.LMDB, ntop=2)
    n.silence = L.Silence(n.label, ntop=0)    # a Function: no tops, not assignable as a top
    assert isinstance(n.silence, protonet.net_spec.Function)
    named = n.to_proto()
    assert list(named.layer[0].top) == ["data", "label"]
    assert (named.layer[1].name, list(named.layer[1].bottom)) == ("silence", ["label"])
    assert not named.layer[1].top
    auto = to_proto(n.data, n.silence)
    assert list(auto.layer[0].top) == ["Data1", "Data2"]
    assert auto.layer[1].name == "Silence1"


def test_in_place_layer_reuses_the_bottom_name():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2]))
    n.ip = L.InnerProduct(n.data, num_output=2)
    n.relu = L.ReLU(n.ip, in_place=True)
    n.out = L.InnerProduct(n.relu, num_output=1)
    net = n.to_proto()
    relu = net.layer[2]
    assert (relu.name, list(relu.bottom), list(relu.top)) == ("relu", ["ip"], ["ip"])
    assert list(net.layer[3].bottom) == ["ip"]


def test_keywords_route_to_type_param_then_layer_fields():
    top = L.Convolution(L.Input(shape=dict(dim=[1, 1, 5, 5])), kernel_size=3, num_output=4,
                        weight_filler=dict(type="xavier"), loss_weight=0.5,
                        param=[dict(lr_mult=1), dict(lr_mult=2, decay_mult=0)],
                        include=dict(phase=protonet.TRAIN), name="conv")
    layer = to_proto(top).layer[1]
    assert layer.name == "conv"
    assert list(layer.convolution_param.kernel_size) == [3]       # scalar → repeated
    assert layer.convolution_param.num_output == 4
    assert layer.convolution_param.weight_filler.type == "xavier"
    assert list(layer.loss_weight) == [0.5]
    assert [p.lr_mult for p in layer.param] == [1, 2] and layer.param[1].decay_mult == 0
    assert layer.include[0].phase == caffe_pb2.TRAIN


def test_param_suffix_keywords_go_to_layer_fields():
    top = L.Data(source="db", batch_size=4, transform_param=dict(scale=0.5, mirror=True))
    layer = to_proto(top).layer[0]
    assert layer.data_param.source == "db" and layer.data_param.batch_size == 4
    assert layer.transform_param.scale == 0.5 and layer.transform_param.mirror


def test_deconvolution_keywords_route_to_convolution_param():
    layer = to_proto(L.Deconvolution(L.Input(), num_output=2, kernel_size=4, stride=2)).layer[1]
    assert layer.convolution_param.num_output == 2
    assert list(layer.convolution_param.stride) == [2]


def test_unknown_keyword_is_an_attribute_error_as_in_pycaffe():
    with pytest.raises(AttributeError):
        to_proto(L.InnerProduct(L.Input(), num_outputs=3))


def test_non_top_bottom_is_a_type_error():
    with pytest.raises(TypeError, match="not a Top"):
        L.ReLU("data")


def test_params_give_enum_values():
    assert P.Pooling.MAX == caffe_pb2.PoolingParameter.MAX
    assert P.Pooling.AVE == caffe_pb2.PoolingParameter.AVE
    assert P.Data.LMDB == caffe_pb2.DataParameter.LMDB
    assert P.Eltwise.SUM == caffe_pb2.EltwiseParameter.SUM


def test_netspec_item_access_and_missing_name():
    n = NetSpec()
    n["conv/1"] = L.Input(shape=dict(dim=[1]))
    assert n["conv/1"] is n.tops["conv/1"]
    assert n.to_proto().layer[0].name == "conv/1"
    with pytest.raises(AttributeError, match="no top named"):
        n.missing  # noqa: B018


def test_netspec_net_builds_and_runs():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3]))
    n.ip = L.InnerProduct(n.data, num_output=2, weight_filler=dict(type="constant", value=1),
                          bias_filler=dict(type="constant", value=0.5))
    net = protonet.Net(n.to_proto(), protonet.TEST)
    out = net.forward(data=np.arange(6, dtype=np.float32).reshape(2, 3))["ip"]
    np.testing.assert_array_equal(out, [[3.5, 3.5], [12.5, 12.5]])


def test_lenet_example_matches_the_classic_text():
    n = NetSpec()
    n.data, n.label = L.Data(batch_size=64, backend=P.Data.LMDB, source="mnist_train_lmdb",
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20,
                            weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.loss = L.SoftmaxWithLoss(n.pool1, n.label)
    lines = [one_line(layer) for layer in n.to_proto().layer]
    assert lines[0] == ('name: "data" type: "Data" top: "data" top: "label" transform_param '
                        '{ scale: 0.003921569 } data_param { source: "mnist_train_lmdb" '
                        'batch_size: 64 backend: LMDB }')
    assert lines[2] == ('name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" '
                        'pooling_param { pool: MAX kernel_size: 2 stride: 2 }')
    assert lines[3] == ('name: "loss" type: "SoftmaxWithLoss" bottom: "pool1" bottom: "label" '
                        'top: "loss"')


# ---- coord_map.crop ----------------------------------------------------------------------------
def fcn_tops():
    """FCN-style: conv(pad 100) → pool/2 → score → deconv ×2, cropped to the data."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 20, 20]))
    n.conv = L.Convolution(n.data, kernel_size=3, pad=100, num_output=2)
    n.pool = L.Pooling(n.conv, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.up = L.Deconvolution(n.pool, convolution_param=dict(num_output=2, kernel_size=4,
                                                          stride=2, bias_term=False))
    return n


def test_crop_offsets_follow_the_coordinate_map():
    n = fcn_tops()
    n.score = coord_map.crop(n.up, n.data)
    layer = n.to_proto().layer[-1]
    assert layer.type == "Crop" and list(layer.bottom) == ["up", "data"]
    # Maps (scale, shift): deconv (2, 1.5), pool (1/2, -1/4), conv (1, 99); composed from
    # "up" back to "data": (1, 1.5 - 0.5 + 99) = (1, 100) → offset 100.
    assert layer.crop_param.axis == 2 and list(layer.crop_param.offset) == [100]


def test_crop_built_net_aligns_shapes():
    n = fcn_tops()
    n.score = coord_map.crop(n.up, n.data)
    net = protonet.Net(n.to_proto(), protonet.TEST)
    assert net.blobs["score"].shape == (1, 2, 20, 20)


def test_crop_of_unconnected_tops_is_an_error():
    a = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    b = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    with pytest.raises(ProtonetError, match="cannot map"):
        coord_map.crop(a, b)


def test_coord_map_compose_and_inverse():
    ax, a, b = coord_map.compose((None, 1, 0), (2, 0.5, -1))
    assert (ax, a, b) == (2, 0.5, -1)
    assert coord_map.inverse((2, 0.5, -1)) == (2, 2.0, 2.0)
    with pytest.raises(coord_map.AxisMismatchException):
        coord_map.compose((1, 1, 0), (2, 1, 0))
