"""Schema tests for protonet/proto: Caffe wire/text compatibility.

The schema must match BVLC Caffe's caffe.proto field for field. The full
cross-check against Caffe's own file was done once when the schema was
written; these tests pin a representative table of those facts (field
numbers, labels, defaults, enum values) so a careless edit is caught, and
parse the real Caffe-era model files from ../shared/caffe-era-models.
"""

import re
from pathlib import Path

import pytest
from google.protobuf import descriptor, text_format

from protonet.proto import caffe_pb2, protonet_pb2

FD = descriptor.FieldDescriptor
REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / ".." / "shared" / "caffe-era-models"


def _field(message_cls, name):
    fields = message_cls.DESCRIPTOR.fields_by_name
    assert name in fields, f"{message_cls.DESCRIPTOR.name} lacks field {name!r}"
    return fields[name]


def _number(message_cls, name):
    return _field(message_cls, name).number


def _default(message_cls, name):
    f = _field(message_cls, name)
    assert f.has_default_value, f"{message_cls.DESCRIPTOR.name}.{name} has no explicit default"
    return f.default_value


# ---------------------------------------------------------------------------
# Module layout
# ---------------------------------------------------------------------------


def test_caffe_pb2_alias_exposes_the_generated_classes():
    import protonet.proto.caffe_pb2 as direct

    assert direct is caffe_pb2
    assert caffe_pb2.NetParameter is protonet_pb2.NetParameter
    assert caffe_pb2.DESCRIPTOR is protonet_pb2.DESCRIPTOR
    assert caffe_pb2.TRAIN == 0 and caffe_pb2.TEST == 1
    assert caffe_pb2.Phase.Name(1) == "TEST"


def test_package_is_caffe_and_syntax_is_proto2():
    assert protonet_pb2.DESCRIPTOR.package == "caffe"
    assert caffe_pb2.NetParameter.DESCRIPTOR.full_name == "caffe.NetParameter"
    # proto2: optional scalars track presence.
    p = caffe_pb2.PoolingParameter()
    assert not p.HasField("pool")
    p.pool = caffe_pb2.PoolingParameter.MAX
    assert p.HasField("pool")


# Number of fields of every top-level message in BVLC Caffe's caffe.proto.
CAFFE_MESSAGE_FIELD_COUNTS = {
    "BlobShape": 1, "BlobProto": 9, "BlobProtoVector": 1, "Datum": 7,
    "FillerParameter": 8, "NetParameter": 9, "SolverParameter": 42,
    "SolverState": 4, "NetState": 3, "NetStateRule": 5, "ParamSpec": 4,
    "LayerParameter": 60, "TransformationParameter": 7, "LossParameter": 3,
    "AccuracyParameter": 3, "ArgMaxParameter": 3, "ClipParameter": 2,
    "ConcatParameter": 2, "BatchNormParameter": 3, "BiasParameter": 3,
    "ContrastiveLossParameter": 2, "ConvolutionParameter": 18,
    "CropParameter": 2, "DataParameter": 10, "DropoutParameter": 1,
    "DummyDataParameter": 6, "EltwiseParameter": 3, "ELUParameter": 1,
    "EmbedParameter": 5, "ExpParameter": 3, "FlattenParameter": 2,
    "HDF5DataParameter": 3, "HDF5OutputParameter": 1, "HingeLossParameter": 1,
    "ImageDataParameter": 12, "InfogainLossParameter": 2,
    "InnerProductParameter": 6, "InputParameter": 1, "LogParameter": 3,
    "LRNParameter": 6, "MemoryDataParameter": 4, "MVNParameter": 3,
    "ParameterParameter": 1, "PoolingParameter": 13, "PowerParameter": 3,
    "PythonParameter": 4, "RecurrentParameter": 5, "ReductionParameter": 3,
    "ReLUParameter": 2, "ReshapeParameter": 3, "ScaleParameter": 5,
    "SigmoidParameter": 1, "SliceParameter": 3, "SoftmaxParameter": 2,
    "SwishParameter": 1, "TanHParameter": 1, "TileParameter": 2,
    "ThresholdParameter": 1, "WindowDataParameter": 13, "SPPParameter": 3,
    "V1LayerParameter": 43, "V0LayerParameter": 38, "PReLUParameter": 2,
}


def test_every_caffe_message_exists_with_caffe_field_count():
    messages = protonet_pb2.DESCRIPTOR.message_types_by_name
    assert set(messages) == set(CAFFE_MESSAGE_FIELD_COUNTS)
    counts = {name: len(d.fields) for name, d in messages.items()}
    assert counts == CAFFE_MESSAGE_FIELD_COUNTS
    assert set(protonet_pb2.DESCRIPTOR.enum_types_by_name) == {"Phase"}


# ---------------------------------------------------------------------------
# Field numbers
# ---------------------------------------------------------------------------

LAYER_PARAM_NUMBERS = {
    "name": 1, "type": 2, "bottom": 3, "top": 4, "loss_weight": 5,
    "param": 6, "blobs": 7, "include": 8, "exclude": 9, "phase": 10,
    "propagate_down": 11,
    "transform_param": 100, "loss_param": 101, "accuracy_param": 102,
    "argmax_param": 103, "concat_param": 104, "contrastive_loss_param": 105,
    "convolution_param": 106, "data_param": 107, "dropout_param": 108,
    "dummy_data_param": 109, "eltwise_param": 110, "exp_param": 111,
    "hdf5_data_param": 112, "hdf5_output_param": 113, "hinge_loss_param": 114,
    "image_data_param": 115, "infogain_loss_param": 116,
    "inner_product_param": 117, "lrn_param": 118, "memory_data_param": 119,
    "mvn_param": 120, "pooling_param": 121, "power_param": 122,
    "relu_param": 123, "sigmoid_param": 124, "softmax_param": 125,
    "slice_param": 126, "tanh_param": 127, "threshold_param": 128,
    "window_data_param": 129, "python_param": 130, "prelu_param": 131,
    "spp_param": 132, "reshape_param": 133, "log_param": 134,
    "flatten_param": 135, "reduction_param": 136, "embed_param": 137,
    "tile_param": 138, "batch_norm_param": 139, "elu_param": 140,
    "bias_param": 141, "scale_param": 142, "input_param": 143,
    "crop_param": 144, "parameter_param": 145, "recurrent_param": 146,
    "swish_param": 147, "clip_param": 148,
}


def test_layer_parameter_field_numbers_match_caffe():
    actual = {f.name: f.number for f in caffe_pb2.LayerParameter.DESCRIPTOR.fields}
    assert actual == LAYER_PARAM_NUMBERS


def test_layer_parameter_param_fields_point_at_their_messages():
    f = _field(caffe_pb2.LayerParameter, "convolution_param")
    assert f.message_type.name == "ConvolutionParameter"
    assert _field(caffe_pb2.LayerParameter, "transform_param").message_type.name == (
        "TransformationParameter")
    assert _field(caffe_pb2.LayerParameter, "phase").enum_type.name == "Phase"


def test_net_parameter_field_numbers():
    expected = {"name": 1, "layers": 2, "input": 3, "input_dim": 4,
                "force_backward": 5, "state": 6, "debug_info": 7,
                "input_shape": 8, "layer": 100}
    actual = {f.name: f.number for f in caffe_pb2.NetParameter.DESCRIPTOR.fields}
    assert actual == expected
    assert _field(caffe_pb2.NetParameter, "layers").message_type.name == "V1LayerParameter"


@pytest.mark.parametrize("name,number", [
    ("train_net", 1), ("test_net", 2), ("test_iter", 3), ("test_interval", 4),
    ("base_lr", 5), ("display", 6), ("max_iter", 7), ("lr_policy", 8),
    ("gamma", 9), ("power", 10), ("momentum", 11), ("weight_decay", 12),
    ("stepsize", 13), ("snapshot", 14), ("snapshot_prefix", 15),
    ("solver_mode", 17), ("random_seed", 20), ("net", 24), ("net_param", 25),
    ("regularization_type", 29), ("solver_type", 30), ("delta", 31),
    ("test_initialization", 32), ("average_loss", 33), ("stepvalue", 34),
    ("clip_gradients", 35), ("iter_size", 36), ("snapshot_format", 37),
    ("rms_decay", 38), ("momentum2", 39), ("type", 40),
    ("layer_wise_reduce", 41), ("weights", 42),
])
def test_solver_parameter_field_number(name, number):
    assert _number(caffe_pb2.SolverParameter, name) == number


def test_blob_proto_fields_numbers_and_packing():
    bp = caffe_pb2.BlobProto
    expected = {"num": 1, "channels": 2, "height": 3, "width": 4, "data": 5,
                "diff": 6, "shape": 7, "double_data": 8, "double_diff": 9}
    assert {f.name: f.number for f in bp.DESCRIPTOR.fields} == expected
    for name in ("data", "diff", "double_data", "double_diff"):
        assert _field(bp, name).is_packed, name
    assert _field(bp, "double_data").type == FD.TYPE_DOUBLE
    assert _field(bp, "data").type == FD.TYPE_FLOAT
    assert _field(caffe_pb2.BlobShape, "dim").is_packed
    assert _field(caffe_pb2.BlobShape, "dim").type == FD.TYPE_INT64
    # Datum.float_data is NOT packed in Caffe.
    assert not _field(caffe_pb2.Datum, "float_data").is_packed


def test_labels_and_types_of_selected_fields():
    assert _field(caffe_pb2.ClipParameter, "min").is_required
    assert _field(caffe_pb2.ClipParameter, "max").is_required
    conv = caffe_pb2.ConvolutionParameter
    for name in ("pad", "kernel_size", "stride", "dilation"):
        assert _field(conv, name).is_repeated and _field(conv, name).type == FD.TYPE_UINT32
    assert _number(conv, "dilation") == 18
    assert _number(conv, "engine") == 15 and _number(conv, "axis") == 16
    assert _number(conv, "force_nd_im2col") == 17
    assert _field(caffe_pb2.SolverParameter, "random_seed").type == FD.TYPE_INT64
    assert _field(caffe_pb2.Datum, "data").type == FD.TYPE_BYTES
    assert _field(caffe_pb2.V1LayerParameter, "type").enum_type.name == "LayerType"


def test_v1_layer_parameter_field_numbers():
    v1 = caffe_pb2.V1LayerParameter
    expected = {"layer": 1, "bottom": 2, "top": 3, "name": 4, "type": 5,
                "blobs": 6, "blobs_lr": 7, "weight_decay": 8,
                "concat_param": 9, "convolution_param": 10, "data_param": 11,
                "pooling_param": 19, "include": 32, "exclude": 33,
                "loss_weight": 35, "transform_param": 36, "loss_param": 42,
                "param": 1001, "blob_share_mode": 1002}
    for name, number in expected.items():
        assert _number(v1, name) == number, name


def test_v0_layer_parameter_field_numbers():
    v0 = caffe_pb2.V0LayerParameter
    expected = {"name": 1, "type": 2, "num_output": 3, "biasterm": 4,
                "kernelsize": 8, "group": 9, "stride": 10, "pool": 11,
                "k": 22, "source": 16, "meanfile": 18, "batchsize": 19,
                "cropsize": 20, "blobs": 50, "blobs_lr": 51,
                "weight_decay": 52, "det_context_pad": 58,
                "det_crop_mode": 59, "concat_dim": 65,
                "hdf5_output_param": 1001}
    for name, number in expected.items():
        assert _number(v0, name) == number, name
    assert _default(v0, "det_crop_mode") == "warp"
    assert _default(v0, "biasterm") is True


# ---------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------


def test_solver_parameter_defaults():
    s = caffe_pb2.SolverParameter()
    assert s.type == "SGD"
    assert s.momentum2 == pytest.approx(0.999, rel=1e-6)
    assert s.delta == pytest.approx(1e-8, rel=1e-6)
    assert s.rms_decay == pytest.approx(0.99, rel=1e-6)
    assert s.clip_gradients == -1
    assert s.average_loss == 1
    assert s.iter_size == 1
    assert s.test_initialization is True
    assert s.snapshot_after_train is True
    assert s.layer_wise_reduce is True
    assert s.random_seed == -1
    assert s.regularization_type == "L2"
    assert s.solver_mode == caffe_pb2.SolverParameter.GPU
    assert s.snapshot_format == caffe_pb2.SolverParameter.BINARYPROTO
    assert s.solver_type == caffe_pb2.SolverParameter.SGD
    assert s.test_interval == 0 and s.snapshot == 0 and s.device_id == 0
    # No explicit default in Caffe: plain zero values.
    assert not _field(caffe_pb2.SolverParameter, "base_lr").has_default_value
    assert s.base_lr == 0.0 and s.lr_policy == ""


def test_solver_enums():
    sp = caffe_pb2.SolverParameter
    assert [sp.SGD, sp.NESTEROV, sp.ADAGRAD, sp.RMSPROP, sp.ADADELTA, sp.ADAM] == list(range(6))
    assert (sp.CPU, sp.GPU) == (0, 1)
    assert (sp.HDF5, sp.BINARYPROTO) == (0, 1)


def test_net_state_and_param_spec_defaults():
    assert caffe_pb2.NetState().phase == caffe_pb2.TEST
    assert caffe_pb2.NetState().level == 0
    assert not _field(caffe_pb2.NetStateRule, "phase").has_default_value
    ps = caffe_pb2.ParamSpec()
    assert ps.lr_mult == 1.0 and ps.decay_mult == 1.0
    assert (caffe_pb2.ParamSpec.STRICT, caffe_pb2.ParamSpec.PERMISSIVE) == (0, 1)


def test_layer_parameter_defaults():
    pool = caffe_pb2.PoolingParameter()
    assert pool.round_mode == caffe_pb2.PoolingParameter.CEIL
    assert (caffe_pb2.PoolingParameter.CEIL, caffe_pb2.PoolingParameter.FLOOR) == (0, 1)
    assert pool.pool == caffe_pb2.PoolingParameter.MAX and pool.stride == 1
    assert _number(caffe_pb2.PoolingParameter, "round_mode") == 13

    bn = caffe_pb2.BatchNormParameter()
    assert bn.moving_average_fraction == pytest.approx(0.999, rel=1e-6)
    assert bn.eps == pytest.approx(1e-5, rel=1e-6)
    assert not _field(caffe_pb2.BatchNormParameter, "use_global_stats").has_default_value

    lrn = caffe_pb2.LRNParameter()
    assert lrn.local_size == 5 and lrn.alpha == 1.0 and lrn.beta == 0.75 and lrn.k == 1.0
    assert lrn.norm_region == caffe_pb2.LRNParameter.ACROSS_CHANNELS
    assert caffe_pb2.LRNParameter.WITHIN_CHANNEL == 1

    data = caffe_pb2.DataParameter()
    assert data.backend == caffe_pb2.DataParameter.LEVELDB
    assert caffe_pb2.DataParameter.LMDB == 1
    assert data.prefetch == 4 and data.scale == 1.0

    conv = caffe_pb2.ConvolutionParameter()
    assert conv.bias_term is True and conv.group == 1 and conv.axis == 1
    assert conv.engine == caffe_pb2.ConvolutionParameter.DEFAULT

    ip = caffe_pb2.InnerProductParameter()
    assert ip.bias_term is True and ip.axis == 1 and ip.transpose is False

    embed = caffe_pb2.EmbedParameter()
    assert embed.bias_term is True
    assert _number(caffe_pb2.EmbedParameter, "input_dim") == 2
    assert _number(caffe_pb2.EmbedParameter, "bias_filler") == 5

    rec = caffe_pb2.RecurrentParameter()
    assert rec.num_output == 0 and rec.expose_hidden is False and rec.debug_info is False
    assert _number(caffe_pb2.RecurrentParameter, "expose_hidden") == 5

    filler = caffe_pb2.FillerParameter()
    assert filler.type == "constant" and filler.std == 1.0 and filler.max == 1.0
    assert filler.sparse == -1
    assert filler.variance_norm == caffe_pb2.FillerParameter.FAN_IN

    assert caffe_pb2.DropoutParameter().dropout_ratio == 0.5
    assert caffe_pb2.ConcatParameter().axis == 1
    assert caffe_pb2.CropParameter().axis == 2
    assert caffe_pb2.FlattenParameter().end_axis == -1
    assert caffe_pb2.ReshapeParameter().num_axes == -1
    assert caffe_pb2.ExpParameter().base == -1.0
    assert caffe_pb2.MVNParameter().eps == pytest.approx(1e-9, rel=1e-6)
    assert caffe_pb2.EltwiseParameter().operation == caffe_pb2.EltwiseParameter.SUM
    assert caffe_pb2.EltwiseParameter().stable_prod_grad is True
    assert caffe_pb2.ReductionParameter().operation == caffe_pb2.ReductionParameter.SUM
    assert caffe_pb2.ReductionParameter.SUM == 1 and caffe_pb2.ReductionParameter.MEAN == 4
    assert caffe_pb2.HingeLossParameter().norm == caffe_pb2.HingeLossParameter.L1
    assert caffe_pb2.HingeLossParameter.L1 == 1
    assert caffe_pb2.LossParameter().normalization == caffe_pb2.LossParameter.VALID
    assert caffe_pb2.LossParameter.NONE == 3
    assert caffe_pb2.ImageDataParameter().batch_size == 1
    assert caffe_pb2.ImageDataParameter().is_color is True
    assert caffe_pb2.WindowDataParameter().crop_mode == "warp"
    assert caffe_pb2.WindowDataParameter().fg_fraction == 0.25
    assert caffe_pb2.ScaleParameter().bias_term is False
    assert caffe_pb2.TransformationParameter().scale == 1.0
    assert caffe_pb2.AccuracyParameter().top_k == 1
    assert caffe_pb2.SwishParameter().beta == 1.0
    assert caffe_pb2.BlobProto().num == 0


def test_v1_layer_type_enum_values():
    lt = caffe_pb2.V1LayerParameter
    expected = {"NONE": 0, "ACCURACY": 1, "BNLL": 2, "CONCAT": 3,
                "CONVOLUTION": 4, "DATA": 5, "DROPOUT": 6,
                "EUCLIDEAN_LOSS": 7, "FLATTEN": 8, "INNER_PRODUCT": 14,
                "LRN": 15, "POOLING": 17, "RELU": 18, "SOFTMAX": 20,
                "SOFTMAX_LOSS": 21, "SPLIT": 22, "ELTWISE": 25,
                "DUMMY_DATA": 32, "SLICE": 33, "ABSVAL": 35, "SILENCE": 36,
                "CONTRASTIVE_LOSS": 37, "EXP": 38, "DECONVOLUTION": 39}
    for name, value in expected.items():
        assert lt.LayerType.Value(name) == value, name
    assert len(lt.LayerType.DESCRIPTOR.values) == 40
    assert (lt.STRICT, lt.PERMISSIVE) == (0, 1)


# ---------------------------------------------------------------------------
# Text / binary round trips
# ---------------------------------------------------------------------------

V2_NET = """
name: "tiny"
layer {
  name: "data" type: "Input" top: "data"
  input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } }
}
layer {
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 }
  param { lr_mult: 2 decay_mult: 0 }
  convolution_param {
    num_output: 4 kernel_size: 3 pad: 1 stride: 1 dilation: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 }
  }
}
layer {
  name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: AVE kernel_size: 2 stride: 2 round_mode: FLOOR }
}
layer {
  name: "bn" type: "BatchNorm" bottom: "pool1" top: "pool1"
  batch_norm_param { use_global_stats: true eps: 1e-3 }
  include { phase: TEST }
}
layer { name: "clip" type: "Clip" bottom: "pool1" top: "clip" clip_param { min: -1 max: 1 } }
layer {
  name: "loss" type: "SoftmaxWithLoss" bottom: "clip" bottom: "label" top: "loss"
  loss_weight: 1
  loss_param { ignore_label: 255 normalization: BATCH_SIZE }
}
state { phase: TRAIN stage: "x" }
"""

V1_NET = """
name: "LeNet-v1"
layers {
  name: "mnist" type: DATA top: "data" top: "label"
  data_param { source: "mnist_train_lmdb" backend: LMDB batch_size: 64 }
  transform_param { scale: 0.00390625 }
  include: { phase: TRAIN }
}
layers {
  name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  convolution_param { num_output: 20 kernel_size: 5 stride: 1 weight_filler { type: "xavier" } }
}
layers { name: "ip" type: INNER_PRODUCT bottom: "conv1" top: "ip" inner_product_param { num_output: 10 } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "ip" bottom: "label" top: "loss" }
layers {
  layer { name: "old" type: "conv" num_output: 8 kernelsize: 3 biasterm: false }
  bottom: "data" top: "old"
}
"""


def _roundtrip(text, message_cls):
    msg = text_format.Parse(text, message_cls())
    wire = msg.SerializeToString()
    back = message_cls.FromString(wire)
    assert back == msg
    assert text_format.Parse(text_format.MessageToString(back), message_cls()) == msg
    return back


def test_v2_net_text_and_binary_round_trip():
    net = _roundtrip(V2_NET, caffe_pb2.NetParameter)
    assert [l.type for l in net.layer] == [
        "Input", "Convolution", "Pooling", "BatchNorm", "Clip", "SoftmaxWithLoss"]
    conv = net.layer[1].convolution_param
    assert list(conv.kernel_size) == [3] and conv.bias_term is True
    assert net.layer[2].pooling_param.round_mode == caffe_pb2.PoolingParameter.FLOOR
    assert net.layer[3].include[0].phase == caffe_pb2.TEST
    assert net.layer[4].clip_param.min == -1.0
    assert net.state.phase == caffe_pb2.TRAIN


def test_v1_net_text_and_binary_round_trip():
    net = _roundtrip(V1_NET, caffe_pb2.NetParameter)
    assert len(net.layer) == 0
    assert [l.type for l in net.layers[:4]] == [
        caffe_pb2.V1LayerParameter.DATA, caffe_pb2.V1LayerParameter.CONVOLUTION,
        caffe_pb2.V1LayerParameter.INNER_PRODUCT, caffe_pb2.V1LayerParameter.SOFTMAX_LOSS]
    assert net.layers[0].data_param.backend == caffe_pb2.DataParameter.LMDB
    assert list(net.layers[1].blobs_lr) == [1.0, 2.0]
    assert net.layers[4].layer.kernelsize == 3 and net.layers[4].layer.biasterm is False


def test_blob_proto_binary_wire_format_is_packed():
    blob = caffe_pb2.BlobProto(data=[1.0, 2.0])
    # field 5, wire type 2 (length-delimited), 8 bytes of two float32s.
    assert blob.SerializeToString() == b"\x2a\x08\x00\x00\x80\x3f\x00\x00\x00\x40"
    shape = caffe_pb2.BlobShape(dim=[2, 3])
    assert shape.SerializeToString() == b"\x0a\x02\x02\x03"


def test_solver_text_round_trip():
    solver = _roundtrip(
        'net: "train_val.prototxt" test_iter: 100 test_interval: 500 base_lr: 0.01\n'
        'lr_policy: "multistep" stepvalue: 1000 stepvalue: 2000 gamma: 0.1\n'
        'solver_mode: CPU type: "Adam" momentum2: 0.99 snapshot_format: HDF5\n'
        'solver_type: NESTEROV weights: "a.caffemodel"\n',
        caffe_pb2.SolverParameter)
    assert solver.solver_mode == caffe_pb2.SolverParameter.CPU
    assert list(solver.stepvalue) == [1000, 2000]


def test_unknown_field_is_rejected_by_text_parser():
    with pytest.raises(text_format.ParseError):
        text_format.Parse('layer { name: "x" bogus_param { } }', caffe_pb2.NetParameter())


# ---------------------------------------------------------------------------
# Real Caffe-era model files
# ---------------------------------------------------------------------------


def _readme_acceptance(models_dir):
    """Map relative path -> accepted-by-Caffe (bool) from the README table."""
    table = {}
    row = re.compile(r"^\|\s*(\S+\.prototxt)\s*\|.*\|\s*(yes|no)\s*\|\s*$")
    for line in (models_dir / "README.md").read_text(encoding="utf-8").splitlines():
        m = row.match(line)
        if m:
            table[m.group(1)] = m.group(2) == "yes"
    return table


def test_caffe_era_model_files_parse_exactly_as_caffe_does():
    if not MODELS_DIR.is_dir():
        pytest.skip(f"shared model corpus not present at {MODELS_DIR.resolve()}")
    accepted = _readme_acceptance(MODELS_DIR)
    files = sorted(MODELS_DIR.rglob("*.prototxt"))
    assert files, "no .prototxt files found"
    assert any(not ok for ok in accepted.values())

    wrong = []
    for path in files:
        rel = path.relative_to(MODELS_DIR).as_posix()
        assert rel in accepted, f"{rel} is not listed in README.md"
        cls = caffe_pb2.SolverParameter if "solver" in path.name else caffe_pb2.NetParameter
        try:
            text_format.Parse(path.read_text(encoding="utf-8"), cls())
            parsed, error = True, None
        except text_format.ParseError as exc:
            parsed, error = False, str(exc)
        if parsed != accepted[rel]:
            wrong.append(f"{rel}: expected {'accept' if accepted[rel] else 'reject'}, "
                         f"got {'accept' if parsed else 'reject: ' + error}")
    assert not wrong, "\n".join(wrong)
    assert len(files) == len(accepted)
