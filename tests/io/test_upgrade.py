"""Legacy upgrades (protonet.io.upgrade): V0, V1, data-transform fields, input fields,
BatchNorm param specs, solver types; checked against real Caffe-era files and their current
twins, and against the layer lists real Caffe built from them."""

import json
from pathlib import Path

import pytest
from google.protobuf import text_format

from protonet.errors import ProtonetError
from protonet.io.prototxt import (parse_net_text, parse_solver_text, read_net,
                                  read_net_with_lines, read_solver)
from protonet.io.upgrade import (SOLVER_TYPES, V0_LAYER_TYPES, V1_LAYER_TYPES,
                                 net_needs_upgrade, run_net_upgrades, upgrade_net,
                                 upgrade_solver)
from protonet.proto import caffe_pb2

MODELS = Path(__file__).resolve().parents[2].parent / "shared" / "caffe-era-models"
LEGACY = MODELS / "caffe-legacy"
CURRENT = MODELS / "caffe"

needs_models = pytest.mark.skipif(not MODELS.is_dir(),
                                  reason=f"Caffe-era model corpus not found at {MODELS}")


def twin_of(legacy_rel):
    """The current-Caffe file a caffe-legacy/<era>/<path> file became."""
    return CURRENT / Path(*Path(legacy_rel).parts[1:])


def layer_structure(net):
    """Per layer: name, type, bottoms, tops and the (name, lr_mult, decay_mult) of each param."""
    return [(layer.name, layer.type, list(layer.bottom), list(layer.top),
             [(p.name, p.lr_mult, p.decay_mult) for p in layer.param]) for layer in net.layer]


def rename_input_layer(net, name):
    """Current deploy files call their Input layer "data"; the input-fields upgrade calls it
    "input" (Caffe's UpgradeNetInput). That is the only difference we normalise away."""
    if net.layer and net.layer[0].type == "Input":
        net.layer[0].name = name
    return net


def clear_data_paths(net):
    """Drop data sources, DB backends and mean files: the 2014 examples pointed at leveldbs and
    relative means, later ones at LMDBs under examples/ — edits of content, not of format."""
    for layer in net.layer:
        if layer.HasField("data_param"):
            layer.data_param.ClearField("source")
            layer.data_param.ClearField("backend")
        if layer.HasField("image_data_param"):
            layer.image_data_param.ClearField("source")
        if layer.HasField("transform_param"):
            layer.transform_param.ClearField("mean_file")
    return net


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------

def test_v1_type_table_covers_every_v1_enum_value():
    enum_names = set(caffe_pb2.V1LayerParameter.LayerType.keys())
    assert set(V1_LAYER_TYPES) == enum_names
    assert len(enum_names - {"NONE"}) == 39
    assert V1_LAYER_TYPES["SOFTMAX_LOSS"] == "SoftmaxWithLoss"
    assert V1_LAYER_TYPES["IMAGE_DATA"] == "ImageData"
    assert V1_LAYER_TYPES["INNER_PRODUCT"] == "InnerProduct"


def test_v0_type_table_has_caffes_24_names_mapping_to_v1_enums():
    assert len(V0_LAYER_TYPES) == 24
    assert set(V0_LAYER_TYPES.values()) <= set(caffe_pb2.V1LayerParameter.LayerType.keys())
    assert V0_LAYER_TYPES["images"] == "IMAGE_DATA"
    assert V0_LAYER_TYPES["innerproduct"] == "INNER_PRODUCT"


def test_solver_type_table_covers_every_solver_enum_value():
    assert set(SOLVER_TYPES) == set(caffe_pb2.SolverParameter.SolverType.keys())


# ---------------------------------------------------------------------------------------------
# Legacy files against their current twins
# ---------------------------------------------------------------------------------------------

# Legacy files whose upgrade is message-for-message the current file (the current files were
# made with Caffe's upgrade tool; deploy files only renamed the Input layer to "data").
EXACT_TWINS = [
    "v0-2014-03/examples/cifar10/cifar10_quick.prototxt",
    "v1-olddataparams-2014-08/examples/cifar10/cifar10_quick.prototxt",
    "v1-olddataparams-2014-08/examples/mnist/lenet.prototxt",
    "v1-2015-02/examples/cifar10/cifar10_full.prototxt",
    "v1-2015-02/examples/cifar10/cifar10_full_train_test.prototxt",
    "v1-2015-02/examples/cifar10/cifar10_quick.prototxt",
    "v1-2015-02/examples/cifar10/cifar10_quick_train_test.prototxt",
    "v1-2015-02/examples/feature_extraction/imagenet_val.prototxt",
    "v1-2015-02/examples/finetune_pascal_detection/pascal_finetune_trainval_test.prototxt",
    "v1-2015-02/examples/mnist/lenet.prototxt",
    "v1-2015-02/examples/mnist/lenet_train_test.prototxt",
    "v1-2015-02/examples/mnist/mnist_autoencoder.prototxt",
    "v1-2015-02/examples/siamese/mnist_siamese.prototxt",
    "v1-2015-02/examples/siamese/mnist_siamese_train_test.prototxt",
    "v1-2015-02/models/bvlc_alexnet/deploy.prototxt",
    "v1-2015-02/models/bvlc_alexnet/train_val.prototxt",
    "v1-2015-02/models/bvlc_googlenet/deploy.prototxt",
    "v1-2015-02/models/bvlc_reference_caffenet/deploy.prototxt",
    "v1-2015-02/models/bvlc_reference_caffenet/train_val.prototxt",
    "v1-2015-02/models/bvlc_reference_rcnn_ilsvrc13/deploy.prototxt",
    "v1-2015-02/models/finetune_flickr_style/deploy.prototxt",
    "inputfields-2015-10/models/bvlc_alexnet/deploy.prototxt",
    "inputfields-2015-10/models/bvlc_googlenet/deploy.prototxt",
    "inputfields-2015-10/models/bvlc_reference_caffenet/deploy.prototxt",
    "inputfields-2015-10/models/bvlc_reference_rcnn_ilsvrc13/deploy.prototxt",
    "inputfields-2015-10/models/finetune_flickr_style/deploy.prototxt",
    "bn3param-2016-09/examples/cifar10/cifar10_full_sigmoid_train_test_bn.prototxt",
]

# Twins whose only content edits are data paths (leveldb → lmdb, mean file locations).
DATA_PATH_TWINS = [
    "v1-olddataparams-2014-08/examples/mnist/lenet_train_test.prototxt",
    "v1-olddataparams-2014-08/examples/cifar10/cifar10_full_train_test.prototxt",
    "v1-olddataparams-2014-08/examples/cifar10/cifar10_quick_train_test.prototxt",
    "v1-olddataparams-2014-08/examples/feature_extraction/imagenet_val.prototxt",
]

# Twins whose hyper-parameters were edited later, so only the structure (names, types, wiring,
# param specs) must agree: GoogLeNet's filler stds were retuned and its second auxiliary loss
# top fixed from "loss2/loss1" to "loss2/loss2"; the hdf5 example switched its filler from
# gaussian to xavier; the V0 cifar10_full predates LRN's norm_region.
# Value: the layers whose tops were renamed (their tops are not compared).
STRUCTURE_TWINS = {
    "v1-2015-02/models/bvlc_googlenet/train_val.prototxt": {"loss2/loss"},
    "v1-2015-02/examples/hdf5_classification/train_val.prototxt": set(),
    "v0-2014-03/examples/cifar10/cifar10_full.prototxt": set(),
}


@needs_models
@pytest.mark.parametrize("rel", EXACT_TWINS)
def test_legacy_file_upgrades_to_exactly_its_current_twin(rel):
    current = read_net(twin_of(rel))
    upgraded = rename_input_layer(read_net(LEGACY / rel), current.layer[0].name)
    assert text_format.MessageToString(upgraded) == text_format.MessageToString(current)


@needs_models
@pytest.mark.parametrize("rel", DATA_PATH_TWINS)
def test_legacy_file_upgrades_to_its_twin_up_to_data_paths(rel):
    upgraded = clear_data_paths(read_net(LEGACY / rel))
    current = clear_data_paths(read_net(twin_of(rel)))
    assert text_format.MessageToString(upgraded) == text_format.MessageToString(current)


@needs_models
@pytest.mark.parametrize("rel,renamed_tops", sorted(STRUCTURE_TWINS.items()),
                         ids=sorted(STRUCTURE_TWINS))
def test_legacy_file_upgrades_to_the_structure_of_its_twin(rel, renamed_tops):
    current = read_net(twin_of(rel))
    upgraded = rename_input_layer(read_net(LEGACY / rel), current.layer[0].name)
    for net in (current, upgraded):
        for layer in net.layer:
            if layer.name in renamed_tops:
                layer.ClearField("top")
    assert layer_structure(upgraded) == layer_structure(current)


@needs_models
def test_v1_lenet_upgrades_to_current_lenet_layer_by_layer():
    upgraded = read_net(LEGACY / "v1-2015-02/examples/mnist/lenet_train_test.prototxt")
    current = read_net(CURRENT / "examples/mnist/lenet_train_test.prototxt")
    assert [layer.name for layer in upgraded.layer] == [
        "mnist", "mnist", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2",
        "accuracy", "loss"]
    assert [layer.type for layer in upgraded.layer] == [
        "Data", "Data", "Convolution", "Pooling", "Convolution", "Pooling", "InnerProduct",
        "ReLU", "InnerProduct", "Accuracy", "SoftmaxWithLoss"]
    conv1 = upgraded.layer[2]
    assert [(p.lr_mult, p.decay_mult, p.HasField("decay_mult")) for p in conv1.param] == [
        (1.0, 1.0, False), (2.0, 1.0, False)]
    assert list(conv1.convolution_param.kernel_size) == [5]
    assert conv1.convolution_param.weight_filler.type == "xavier"
    assert caffe_pb2.Phase.Name(upgraded.layer[0].include[0].phase) == "TRAIN"
    assert upgraded.layer[0].transform_param.scale == pytest.approx(0.00390625)
    for ours, theirs in zip(upgraded.layer, current.layer):
        assert (ours.name, ours.type, list(ours.bottom), list(ours.top)) == \
            (theirs.name, theirs.type, list(theirs.bottom), list(theirs.top))
        assert list(ours.param) == list(theirs.param)
        for field, value in theirs.ListFields():
            if field.name.endswith("_param"):
                assert getattr(ours, field.name) == value, f"{ours.name}.{field.name}"


# ---------------------------------------------------------------------------------------------
# Against what real Caffe built
# ---------------------------------------------------------------------------------------------

def _in_phase(layer, phase):
    """NetState filtering by phase only (none of the corpus's built nets uses levels/stages)."""
    def matches(rule):
        assert not (rule.stage or rule.not_stage or rule.HasField("min_level")
                    or rule.HasField("max_level")), "this helper filters by phase only"
        return not rule.HasField("phase") or caffe_pb2.Phase.Name(rule.phase) == phase
    if layer.include:
        return any(matches(rule) for rule in layer.include)
    return not any(matches(rule) for rule in layer.exclude)


def _built_by_caffe():
    path = MODELS / "CAFFE_SHAPES.json"
    if not path.is_file():
        return []
    shapes = json.loads(path.read_text())
    return [(rel, phase, info["layers"]) for rel, phases in sorted(shapes.items())
            for phase, info in sorted(phases.items()) if "layers" in info]


@needs_models
@pytest.mark.parametrize("rel,phase,caffe_layers", _built_by_caffe(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_upgraded_net_lists_the_layers_caffe_built(rel, phase, caffe_layers):
    net = read_net(MODELS / rel)
    ours = [[layer.name, layer.type] for layer in net.layer if _in_phase(layer, phase)]
    assert ours == [entry for entry in caffe_layers if entry[1] != "Split"]


# ---------------------------------------------------------------------------------------------
# V0
# ---------------------------------------------------------------------------------------------

@needs_models
def test_v0_lenet_moves_flat_fields_into_typed_params():
    net = read_net(LEGACY / "v0-2014-03/examples/lenet/lenet_train.prototxt")
    layers = {layer.name: layer for layer in net.layer}
    assert len(net.layers) == 0
    data = layers["mnist"]
    assert data.type == "Data"
    assert (data.data_param.source, data.data_param.batch_size) == ("mnist-train-leveldb", 64)
    assert data.transform_param.scale == pytest.approx(0.00390625)
    conv1 = layers["conv1"]
    assert conv1.type == "Convolution"
    assert conv1.convolution_param.num_output == 20
    assert list(conv1.convolution_param.kernel_size) == [5]
    assert list(conv1.convolution_param.stride) == [1]
    assert [p.lr_mult for p in conv1.param] == [1.0, 2.0]
    pool1 = layers["pool1"]
    assert (pool1.type, pool1.pooling_param.kernel_size, pool1.pooling_param.stride) == \
        ("Pooling", 2, 2)
    assert pool1.pooling_param.pool == caffe_pb2.PoolingParameter.MAX
    assert layers["loss"].type == "SoftmaxWithLoss"


@needs_models
def test_v0_padding_layers_fold_into_the_next_convolution():
    path = LEGACY / "v0-2014-03/examples/pascal-finetuning/pascal_finetune_train.prototxt"
    net, lines = read_net_with_lines(path)
    names = [layer.name for layer in net.layer]
    assert not {"pad2", "pad3", "pad4", "pad5"} & set(names)
    conv2 = net.layer[names.index("conv2")]
    assert list(conv2.convolution_param.pad) == [2]
    assert list(conv2.bottom) == ["norm1"]
    assert list(net.layer[names.index("conv3")].convolution_param.pad) == [1]
    # Lines stay aligned with the layers that remain: conv2's block opens at line 82.
    assert lines[names.index("conv2")] == 82
    source = path.read_text().split("\n")
    assert all(source[line - 1].startswith("layers") for line in lines)
    window = net.layer[0].window_data_param
    assert (window.fg_threshold, window.context_pad, window.crop_mode) == (0.5, 16, "warp")
    assert net.layer[0].transform_param.crop_size == 227
    assert net.layer[0].transform_param.mirror is True


V0_TEMPLATE = """
input: "data"
input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
layers {{ layer {{ name: "pad" type: "padding" pad: 2 }} bottom: "data" top: "padded" }}
layers {{ layer {{ name: "next" type: "{next_type}" {extra} }} bottom: "padded" top: "out" }}
"""


def test_v0_padding_feeding_a_non_conv_layer_is_an_error():
    text = V0_TEMPLATE.format(next_type="relu", extra="")
    with pytest.raises(ProtonetError, match="padding layer 'pad' feeds layer 'next'") as err:
        parse_net_text(text, filename="old.prototxt")
    assert err.value.file == "old.prototxt"
    assert err.value.line == 5


def test_v0_padding_into_pooling_sets_pooling_pad():
    net = parse_net_text(V0_TEMPLATE.format(next_type="pool", extra="kernelsize: 3"))
    assert [layer.name for layer in net.layer] == ["input", "next"]
    assert net.layer[1].pooling_param.pad == 2
    assert list(net.layer[1].bottom) == ["data"]
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 3, 8, 8]


def test_v0_unknown_layer_type_is_an_error_naming_file_and_line():
    text = 'layers {\n  layer { name: "x" type: "convolution" }\n  top: "x"\n}\n'
    with pytest.raises(ProtonetError, match="unknown V0 layer type 'convolution'") as err:
        parse_net_text(text, filename="old.prototxt")
    assert (err.value.file, err.value.line) == ("old.prototxt", 1)


def test_v0_field_on_wrong_layer_type_is_dropped_with_an_error_log(capsys):
    net = caffe_pb2.NetParameter()
    text_format.Parse('layers { layer { name: "r" type: "relu" num_output: 3 } '
                      'bottom: "a" top: "a" } input: "a"', net)
    report = run_net_upgrades(net, source="old.prototxt")
    assert report.upgraded and not report.compatible
    assert net.layer[0].type == "ReLU"
    assert not net.layer[0].HasField("convolution_param")
    err = capsys.readouterr().err
    assert "Unknown parameter num_output for layer type relu" in err
    assert "had one or more problems upgrading V0NetParameter" in err


# ---------------------------------------------------------------------------------------------
# Data-transform fields, V1 → V2
# ---------------------------------------------------------------------------------------------

@needs_models
def test_old_data_params_move_into_transform_param():
    path = LEGACY / "v1-olddataparams-2014-08/examples/imagenet/imagenet_train_val.prototxt"
    data = read_net(path).layer[0]
    assert data.type == "Data"
    assert data.transform_param.crop_size == 227
    assert data.transform_param.mirror is True
    assert data.transform_param.mean_file.endswith("imagenet_mean.binaryproto")
    for field in ("scale", "mean_file", "crop_size", "mirror"):
        assert not data.data_param.HasField(field)


def test_v1_param_names_and_share_modes_become_param_specs():
    net = parse_net_text("""
        layers { name: "ip" type: INNER_PRODUCT bottom: "x" top: "y"
                 param: "w" param: "b" blob_share_mode: PERMISSIVE
                 blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
                 inner_product_param { num_output: 4 } loss_weight: 0.5 }
    """)
    ip = net.layer[0]
    assert ip.type == "InnerProduct"
    assert [(p.name, p.lr_mult, p.decay_mult) for p in ip.param] == [("w", 1, 1), ("b", 2, 0)]
    assert ip.param[0].share_mode == caffe_pb2.ParamSpec.PERMISSIVE
    assert not ip.param[1].HasField("share_mode")
    assert list(ip.loss_weight) == [0.5]
    assert ip.inner_product_param.num_output == 4


def test_file_mixing_layer_and_layers_is_refused():
    text = 'layers {\n  name: "a" type: RELU\n}\nlayer {\n  name: "b" type: "ReLU"\n}\n'
    with pytest.raises(ProtonetError, match="both 'layer' and 'layers'") as err:
        parse_net_text(text, filename="mixed.prototxt")
    assert (err.value.file, err.value.line) == ("mixed.prototxt", 1)


def test_upgrade_logs_caffes_messages(capsys):
    net = caffe_pb2.NetParameter()
    text_format.Parse('layers { name: "r" type: RELU bottom: "a" top: "a" }', net)
    assert upgrade_net(net, source="v1.prototxt") is True
    err = capsys.readouterr().err
    assert ("Attempting to upgrade input file specified using deprecated V1LayerParameter: "
            "v1.prototxt") in err
    assert "Successfully upgraded file specified using deprecated V1LayerParameter" in err
    assert upgrade_net(net, source="v1.prototxt") is False
    assert not net_needs_upgrade(net)


# ---------------------------------------------------------------------------------------------
# Input fields
# ---------------------------------------------------------------------------------------------

@needs_models
def test_input_fields_become_a_first_input_layer_shaped_like_the_current_deploy():
    rel = "inputfields-2015-10/models/bvlc_alexnet/deploy.prototxt"
    upgraded = read_net(LEGACY / rel)
    current = read_net(twin_of(rel))
    first = upgraded.layer[0]
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["data"])
    assert list(first.input_param.shape[0].dim) == [10, 3, 227, 227]
    assert first.input_param == current.layer[0].input_param
    assert not upgraded.input and not upgraded.input_shape and not upgraded.input_dim


def test_input_dim_gives_four_dims_per_input():
    net = parse_net_text('input: "a" input: "b"\n'
                         "input_dim: 2 input_dim: 3 input_dim: 4 input_dim: 5\n"
                         "input_dim: 2 input_dim: 1 input_dim: 1 input_dim: 1\n"
                         'layer { name: "r" type: "ReLU" bottom: "a" top: "r" }\n')
    assert [layer.name for layer in net.layer] == ["input", "r"]
    assert list(net.layer[0].top) == ["a", "b"]
    assert [list(s.dim) for s in net.layer[0].input_param.shape] == [[2, 3, 4, 5], [2, 1, 1, 1]]


def test_bare_input_without_shape_is_dropped_as_caffe_does():
    net = parse_net_text('input: "data"\nlayer { name: "r" type: "ReLU" bottom: "data" '
                         'top: "r" }\n')
    assert [layer.name for layer in net.layer] == ["r"]
    assert not net.input


def test_too_few_input_dims_is_an_error():
    with pytest.raises(ProtonetError, match="need 8 input_dim values") as err:
        parse_net_text('input: "a" input: "b"\ninput_dim: 1 input_dim: 2 input_dim: 3 '
                       'input_dim: 4\n', filename="deploy.prototxt")
    assert (err.value.file, err.value.line) == ("deploy.prototxt", 1)


# ---------------------------------------------------------------------------------------------
# BatchNorm
# ---------------------------------------------------------------------------------------------

@needs_models
def test_batch_norm_with_three_param_specs_gets_zero_multipliers():
    net = read_net(LEGACY / "bn3param-2016-09/examples/cifar10/"
                            "cifar10_full_sigmoid_train_test_bn.prototxt")
    batch_norms = [layer for layer in net.layer if layer.type == "BatchNorm"]
    assert len(batch_norms) == 3
    for layer in batch_norms:
        # Caffe 1.0 keeps the three specs (the very first version of the pass removed them).
        assert [(p.lr_mult, p.decay_mult) for p in layer.param] == [(0.0, 0.0)] * 3
        assert all(p.HasField("decay_mult") for p in layer.param)


def test_batch_norm_upgrade_keeps_param_names_and_skips_other_counts():
    net = parse_net_text("""
        layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x"
                param { name: "m" lr_mult: 1 } param { name: "v" } param { name: "s" } }
        layer { name: "bn2" type: "BatchNorm" bottom: "x" top: "x" param { lr_mult: 1 } }
    """)
    assert [(p.name, p.lr_mult, p.decay_mult) for p in net.layer[0].param] == [
        ("m", 0, 0), ("v", 0, 0), ("s", 0, 0)]
    assert [(p.lr_mult, p.HasField("decay_mult")) for p in net.layer[1].param] == [(1, False)]


# ---------------------------------------------------------------------------------------------
# Solvers
# ---------------------------------------------------------------------------------------------

SOLVER_ENUM_FILES = {
    "lenet_solver.prototxt": "SGD",
    "lenet_solver_adam.prototxt": "Adam",
    "lenet_solver_rmsprop.prototxt": "RMSProp",
    "lenet_adadelta_solver.prototxt": "AdaDelta",
    "mnist_autoencoder_solver_adagrad.prototxt": "AdaGrad",
    "mnist_autoencoder_solver_nesterov.prototxt": "Nesterov",
}


@needs_models
@pytest.mark.parametrize("name,expected", sorted(SOLVER_ENUM_FILES.items()))
def test_solver_type_enum_becomes_type_string(name, expected):
    solver = read_solver(LEGACY / "solver-enum-2015-09/examples/mnist" / name)
    assert solver.type == expected
    assert not solver.HasField("solver_type")


def test_solver_with_both_solver_type_and_type_is_an_error():
    text = 'base_lr: 0.1\ntype: "Adam"\nsolver_type: ADAM\n'
    with pytest.raises(ProtonetError, match="cannot both be specified") as err:
        parse_solver_text(text, filename="s.prototxt")
    assert (err.value.file, err.value.line) == ("s.prototxt", 3)


def test_upgrade_solver_reports_whether_it_changed_anything():
    solver = caffe_pb2.SolverParameter(solver_type=caffe_pb2.SolverParameter.RMSPROP)
    assert upgrade_solver(solver) is True
    assert solver.type == "RMSProp"
    assert upgrade_solver(solver) is False
