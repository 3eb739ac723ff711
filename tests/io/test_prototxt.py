"""Reading and writing nets and solvers (protonet.io.prototxt): the real Caffe-era corpus,
layer source lines, parse errors with file:line and column, lenient mode, round trips,
binary detection, solver reading and the upgrade tools."""

import os
import re
from pathlib import Path

import pytest
from google.protobuf import text_format

from protonet.errors import ProtonetError
from protonet.io.prototxt import (parse_net_text, parse_net_text_with_lines, parse_solver_text,
                                  read_net, read_net_with_lines, read_solver, upgrade_net_file,
                                  upgrade_solver_file, write_net_binary, write_net_text,
                                  write_solver_text)
from protonet.proto import caffe_pb2

MODELS = Path(__file__).resolve().parents[2].parent / "shared" / "caffe-era-models"
LEGACY = MODELS / "caffe-legacy"

needs_models = pytest.mark.skipif(not MODELS.is_dir(),
                                  reason=f"Caffe-era model corpus not found at {MODELS}")

SOLVER_TYPES = {"SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"}


def _corpus(accepted):
    """Prototxt files of the corpus README whose "accepted by Caffe" column is ``accepted``."""
    readme = MODELS / "README.md"
    if not readme.is_file():
        return []
    rows = re.findall(r"^\| (\S+\.prototxt) \|.*\| (yes|no) \|$", readme.read_text(), re.M)
    return [rel for rel, answer in rows if answer == accepted]


def _is_solver(rel):
    return "solver" in Path(rel).name


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------

@needs_models
@pytest.mark.parametrize("rel", [r for r in _corpus("yes") if not _is_solver(r)])
def test_corpus_net_accepted_by_caffe_reads_as_v2_with_string_types(rel):
    net, lines = read_net_with_lines(MODELS / rel)
    assert len(net.layers) == 0
    assert len(net.layer) > 0
    assert all(isinstance(layer.type, str) and layer.type for layer in net.layer)
    assert not net.input and not net.input_dim and not net.input_shape
    assert len(lines) == len(net.layer)
    source = (MODELS / rel).read_text().split("\n")
    for layer, line in zip(net.layer, lines):
        if line is None:
            assert layer.type == "Input"
        else:
            assert source[line - 1].lstrip().startswith(("layer", "input")), (layer.name, line)


@needs_models
@pytest.mark.parametrize("rel", [r for r in _corpus("yes") if _is_solver(r)])
def test_corpus_solver_accepted_by_caffe_reads_with_a_type_string(rel):
    solver = read_solver(MODELS / rel)
    assert solver.type in SOLVER_TYPES
    assert not solver.HasField("solver_type")
    assert solver.HasField("snapshot_prefix")


# Caffe rejects these three; the line and field are where BVLC Caffe's parser stops too.
REJECTED = {
    "caffe-legacy/v1-olddataparams-2014-08/examples/cifar10/cifar10_full.prototxt":
        (78, "column 5: unknown field 'norm_region' in PoolingParameter"),
    "caffe-legacy/v1-2015-02/examples/mnist/lenet_stepearly_solver.prototxt":
        (18, "column 1: unknown field 'stepearly' in SolverParameter"),
    "caffe-legacy/solver-enum-2015-09/examples/mnist/lenet_stepearly_solver.prototxt":
        (18, "column 1: unknown field 'stepearly' in SolverParameter"),
}


@needs_models
def test_corpus_lists_exactly_the_three_rejected_files():
    assert sorted(_corpus("no")) == sorted(REJECTED)


@needs_models
@pytest.mark.parametrize("rel", sorted(REJECTED))
def test_corpus_file_rejected_by_caffe_fails_strict_with_file_and_line(rel):
    line, message = REJECTED[rel]
    read = read_solver if _is_solver(rel) else read_net
    with pytest.raises(ProtonetError) as err:
        read(MODELS / rel)
    assert err.value.file == str(MODELS / rel)
    assert err.value.line == line
    assert err.value.message.startswith(message)
    assert str(err.value).startswith(f"{MODELS / rel}:{line}: column")


@needs_models
def test_lenient_drops_norm_region_from_pooling_with_one_warning(capsys):
    path = LEGACY / "v1-olddataparams-2014-08/examples/cifar10/cifar10_full.prototxt"
    net = read_net(path, lenient=True)
    pool2 = next(layer for layer in net.layer if layer.name == "pool2")
    assert pool2.pooling_param.pool == caffe_pb2.PoolingParameter.AVE
    assert (pool2.pooling_param.kernel_size, pool2.pooling_param.stride) == (3, 2)
    norm1 = next(layer for layer in net.layer if layer.name == "norm1")
    assert norm1.lrn_param.norm_region == caffe_pb2.LRNParameter.WITHIN_CHANNEL
    warnings = [line for line in capsys.readouterr().err.splitlines() if "dropping" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith("W")
    assert "prototxt.py:" in warnings[0]
    assert warnings[0].endswith(f"{path}:78: dropping unknown field 'norm_region' in "
                                "PoolingParameter")


@needs_models
def test_lenient_solver_drops_unknown_field_and_keeps_the_rest():
    path = LEGACY / "v1-2015-02/examples/mnist/lenet_stepearly_solver.prototxt"
    solver = read_solver(path, lenient=True)
    assert solver.lr_policy == "stepearly"
    assert solver.gamma == pytest.approx(0.9)
    assert solver.max_iter == 10000
    assert solver.snapshot_prefix == "lenet"


# ---------------------------------------------------------------------------------------------
# Layer source lines
# ---------------------------------------------------------------------------------------------

LINES_NET = """\
name: "lines"  # layer { in a comment
input: "data"
input_shape { dim: 1 dim: 2 }
layer {
  name: "a"   # layer {
  type: "ReLU"
  bottom: "data" top: "a"
  python_param { param_str: "layer { }" }
}

layer
{
  name: "b" type: "ReLU" bottom: "a" top: "b"
}
layer { name: "c" type: "ReLU" bottom: "b" top: "c" }
"""


def test_layer_lines_point_at_each_layer_opening_ignoring_comments_and_strings():
    net, lines = parse_net_text_with_lines(LINES_NET)
    assert [layer.name for layer in net.layer] == ["input", "a", "b", "c"]
    assert lines == [2, 4, 11, 15]


def test_v1_layer_lines_follow_layers_blocks():
    text = 'name: "v1"\n\nlayers {\n  name: "a"\n  type: RELU\n}\nlayers { name: "b" ' \
           'type: SIGMOID }\n'
    net, lines = parse_net_text_with_lines(text)
    assert [layer.type for layer in net.layer] == ["ReLU", "Sigmoid"]
    assert lines == [3, 7]


def test_binary_net_has_no_lines(tmp_path):
    net = parse_net_text('layer { name: "a" type: "ReLU" }')
    write_net_binary(net, tmp_path / "n.caffemodel")
    read, lines = read_net_with_lines(tmp_path / "n.caffemodel")
    assert read == net
    assert lines == [None]


# ---------------------------------------------------------------------------------------------
# Parse errors
# ---------------------------------------------------------------------------------------------

PARSE_ERRORS = {
    "unclosed_brace": ('layer {\n  name: "a"\n  type: "ReLU"\n', 3,
                       "column 9: expected '}': the block opened on line 1 is never closed"),
    "extra_brace": ('layer {\n  name: "a"\n}\n}\n', 4,
                    "column 1: unexpected '}': there is no block to close here"),
    "float_for_integer": ('layer {\n  convolution_param {\n    num_output: 2.5\n  }\n}\n', 3,
                          "column 17: bad value 2.5: expected an integer"),
    "string_for_integer": ('layer {\n  convolution_param { num_output: "x" }\n}\n', 2,
                           'column 35: bad value "x": expected an integer'),
    "word_for_bool": ('layer {\n  convolution_param {\n    bias_term: maybe\n  }\n}\n', 3,
                      "column 16: bad value: expected true or false"),
    "unquoted_string": ('layer {\n  name: a\n}\n', 2,
                        "column 9: expected a string in quotes but found 'a'"),
    "unknown_enum": ('layer {\n  pooling_param { pool: MAXX }\n}\n', 2,
                     "column 25: unknown value 'MAXX' for PoolingParameter.PoolMethod; "
                     "expected one of MAX, AVE, STOCHASTIC"),
    "negative_unsigned": ('layer {\n  convolution_param { num_output: -1 }\n}\n', 2,
                          "column 35: value -1 is out of range"),
    "repeated_optional": ('layer {\n  name: "a"\n  name: "b"\n}\n', 3,
                          "column 9: field 'name' given more than once in LayerParameter"),
    "typo_field": ('layer {\n  convolution_param {\n    num_ouput: 3\n  }\n}\n', 3,
                   "column 5: unknown field 'num_ouput' in ConvolutionParameter (did you mean "
                   "'num_output'?"),
    "fork_field": ('layer {\n  pooling_param {\n    pool: MAX\n    ceil_mode: false\n  }\n}\n', 4,
                   "column 5: unknown field 'ceil_mode' in PoolingParameter (this field comes "
                   "from a Caffe fork"),
    "unterminated_string": ('layer {\n  name: "a\n}\n', 2,
                            "column 9: string '\"a' is missing its closing quote"),
}


@pytest.mark.parametrize("case", sorted(PARSE_ERRORS))
def test_parse_error_names_file_line_and_column(case):
    text, line, message = PARSE_ERRORS[case]
    with pytest.raises(ProtonetError) as err:
        parse_net_text(text, filename="models/x.prototxt")
    assert (err.value.file, err.value.line) == ("models/x.prototxt", line)
    assert err.value.message.startswith(message), err.value.message
    assert str(err.value).startswith(f"models/x.prototxt:{line}: {message}")


def test_parse_error_from_a_file_names_the_path(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  bogus_field: 1\n}\n')
    with pytest.raises(ProtonetError, match="unknown field 'bogus_field' in LayerParameter") \
            as err:
        read_net(path)
    assert (err.value.file, err.value.line) == (str(path), 4)


def test_missing_file_is_a_protonet_error(tmp_path):
    with pytest.raises(ProtonetError, match="cannot read") as err:
        read_net(tmp_path / "nope.prototxt")
    assert err.value.file == str(tmp_path / "nope.prototxt")


def test_unknown_field_in_strict_mode_explains_where_the_field_belongs():
    with pytest.raises(ProtonetError, match=r"BVLC Caffe has it in LRNParameter only; rerun "
                                            r"with --lenient to drop it"):
        parse_net_text('layer {\n  pooling_param { norm_region: WITHIN_CHANNEL }\n}\n')


# ---------------------------------------------------------------------------------------------
# Lenient mode
# ---------------------------------------------------------------------------------------------

FORK_NET = """\
name: "fork"
layer {
  name: "data"
  type: "Data"
  top: "data"
  data_param {
    source: "db"
    shuffle: true
    batch_size: 4
    mystery_block {
      depth: 1
      inner { text: "} {" }
    }
    backend: LMDB
  }
  fancy_list: [1, 2, 3];
}
layer {
  name: "pool"
  type: "Pooling"
  bottom: "data"
  top: "pool"
  pooling_param {
    pool: MAX
    kernel_size: 3
    ceil_mode: false
  }
}
layer {
  name: "pool_ceil"
  type: "Pooling"
  bottom: "pool"
  top: "pool_ceil"
  pooling_param { pool: AVE ceil_mode: true kernel_size: 2 }
}
"""


def test_lenient_drops_scalars_blocks_and_lists_keeping_everything_else(capsys):
    net, lines = parse_net_text_with_lines(FORK_NET, filename="fork.prototxt", lenient=True)
    data = net.layer[0].data_param
    assert (data.source, data.batch_size, data.backend) == ("db", 4, caffe_pb2.DataParameter.LMDB)
    assert [layer.name for layer in net.layer] == ["data", "pool", "pool_ceil"]
    assert lines == [2, 18, 29]
    err = capsys.readouterr().err
    assert "fork.prototxt:8: dropping unknown field 'shuffle' in DataParameter" in err
    assert "fork.prototxt:10: dropping unknown field 'mystery_block' in DataParameter" in err
    assert "fork.prototxt:16: dropping unknown field 'fancy_list' in LayerParameter" in err
    assert err.count("dropping") == 3


def test_lenient_maps_ceil_mode_to_round_mode(capsys):
    net = parse_net_text(FORK_NET, filename="fork.prototxt", lenient=True)
    floor, ceil = net.layer[1].pooling_param, net.layer[2].pooling_param
    assert floor.round_mode == caffe_pb2.PoolingParameter.FLOOR
    assert (floor.pool, floor.kernel_size) == (caffe_pb2.PoolingParameter.MAX, 3)
    assert ceil.round_mode == caffe_pb2.PoolingParameter.CEIL
    assert ceil.HasField("round_mode")
    assert (ceil.pool, ceil.kernel_size) == (caffe_pb2.PoolingParameter.AVE, 2)
    err = capsys.readouterr().err
    assert ("fork.prototxt:26: mapping field 'ceil_mode: false' in PoolingParameter (from a "
            "Caffe fork) to BVLC's 'round_mode: FLOOR'") in err


def test_lenient_still_reports_errors_that_are_not_unknown_fields():
    with pytest.raises(ProtonetError, match="expected an integer") as err:
        parse_net_text('layer {\n  shuffle: 1\n  convolution_param { num_output: x1 }\n}\n',
                       filename="f.prototxt", lenient=True)
    assert err.value.line == 3


def test_strict_mode_rejects_what_lenient_mode_drops():
    with pytest.raises(ProtonetError, match="unknown field 'shuffle' in DataParameter") as err:
        parse_net_text(FORK_NET, filename="fork.prototxt")
    assert err.value.line == 8


# ---------------------------------------------------------------------------------------------
# Round trips and binary detection
# ---------------------------------------------------------------------------------------------

@needs_models
@pytest.mark.parametrize("rel", [
    "caffe/models/bvlc_googlenet/train_val.prototxt",
    "caffe/examples/siamese/mnist_siamese_train_test.prototxt",
    "caffe-legacy/v0-2014-03/examples/pascal-finetuning/pascal_finetune_train.prototxt",
    "caffe-legacy/inputfields-2015-10/models/bvlc_reference_caffenet/deploy.prototxt",
])
def test_text_and_binary_round_trips_give_the_same_message(rel, tmp_path):
    net = read_net(MODELS / rel)
    write_net_text(net, tmp_path / "net.prototxt")
    assert read_net(tmp_path / "net.prototxt") == net
    write_net_binary(net, tmp_path / "net.caffemodel")
    assert read_net(tmp_path / "net.caffemodel") == net
    assert (tmp_path / "net.caffemodel").read_bytes() == net.SerializeToString()


def test_binary_round_trip_keeps_blobs(tmp_path):
    net = parse_net_text('layer { name: "ip" type: "InnerProduct" '
                         'inner_product_param { num_output: 2 } }')
    blob = net.layer[0].blobs.add()
    blob.shape.dim.extend([2, 3])
    blob.data.extend([0.5, -1.0, 2.0, 0.0, 1e-8, 3.25])
    write_net_binary(net, tmp_path / "w.caffemodel")
    read = read_net(tmp_path / "w.caffemodel")
    assert list(read.layer[0].blobs[0].shape.dim) == [2, 3]
    assert list(read.layer[0].blobs[0].data) == pytest.approx([0.5, -1.0, 2.0, 0.0, 1e-8, 3.25])


def test_binary_content_is_detected_whatever_the_name(tmp_path):
    net = parse_net_text('name: "bin"\nlayer { name: "a" type: "ReLU" }')
    blob = net.layer[0].blobs.add()
    blob.data.extend([1.0, 2.0])
    (tmp_path / "weights.prototxt").write_bytes(net.SerializeToString())
    assert read_net(tmp_path / "weights.prototxt") == net


def test_text_in_a_caffemodel_named_file_is_read_as_text(tmp_path):
    (tmp_path / "net.caffemodel").write_text('name: "t"\nlayer { name: "a" type: "ReLU" }\n')
    net, lines = read_net_with_lines(tmp_path / "net.caffemodel")
    assert net.name == "t"
    assert lines == [2]


def test_binary_legacy_v1_net_is_upgraded(tmp_path):
    v1 = caffe_pb2.NetParameter()
    text_format.Parse('layers { name: "ip" type: INNER_PRODUCT blobs_lr: 1 blobs_lr: 2 '
                      'blobs { data: 1 data: 2 } }', v1)
    (tmp_path / "old.caffemodel").write_bytes(v1.SerializeToString())
    net = read_net(tmp_path / "old.caffemodel")
    assert net.layer[0].type == "InnerProduct"
    assert [p.lr_mult for p in net.layer[0].param] == [1, 2]
    assert list(net.layer[0].blobs[0].data) == [1, 2]


def test_solver_round_trip(tmp_path):
    solver = parse_solver_text('net: "a.prototxt"\nbase_lr: 0.01\nlr_policy: "step"\n'
                               'stepvalue: 10 stepvalue: 20\ntype: "Adam"\n')
    write_solver_text(solver, tmp_path / "s.prototxt")
    read = read_solver(tmp_path / "s.prototxt")
    read.ClearField("snapshot_prefix")
    assert read == solver


# ---------------------------------------------------------------------------------------------
# Solvers
# ---------------------------------------------------------------------------------------------

def test_unset_snapshot_prefix_becomes_solver_path_without_extension(tmp_path):
    path = tmp_path / "lenet_solver.prototxt"
    path.write_text('net: "lenet_train_test.prototxt"\nbase_lr: 0.01\n')
    solver = read_solver(path)
    assert solver.snapshot_prefix == str(tmp_path / "lenet_solver")
    assert solver.net == "lenet_train_test.prototxt"


def test_snapshot_prefix_naming_a_directory_gets_the_solver_stem(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkdir("snapshots")
    Path("solver.prototxt").write_text('train_net: "t.prototxt"\nsnapshot_prefix: "snapshots/"\n')
    solver = read_solver("solver.prototxt")
    assert solver.snapshot_prefix == "snapshots/solver"
    assert solver.train_net == "t.prototxt"


def test_snapshot_prefix_that_is_not_a_directory_stays(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("solver.prototxt").write_text('snapshot_prefix: "out/lenet"\n')
    assert read_solver("solver.prototxt").snapshot_prefix == "out/lenet"


# ---------------------------------------------------------------------------------------------
# The upgrade tools
# ---------------------------------------------------------------------------------------------

@needs_models
def test_upgrade_net_file_writes_v2_text_and_binary(tmp_path):
    source = LEGACY / "v1-2015-02/examples/mnist/lenet_train_test.prototxt"
    upgrade_net_file(source, tmp_path / "out.prototxt")
    text = (tmp_path / "out.prototxt").read_text()
    assert "layers {" not in text
    assert text.count("layer {") == 11
    assert 'type: "SoftmaxWithLoss"' in text
    upgrade_net_file(source, tmp_path / "out.caffemodel", binary=True)
    parsed = caffe_pb2.NetParameter.FromString((tmp_path / "out.caffemodel").read_bytes())
    assert parsed == read_net(source)


def test_upgrade_net_file_on_a_current_file_writes_it_unchanged(tmp_path, capsys):
    (tmp_path / "in.prototxt").write_text('name: "n"\nlayer { name: "a" type: "ReLU" }\n')
    upgrade_net_file(tmp_path / "in.prototxt", tmp_path / "out.prototxt")
    assert read_net(tmp_path / "out.prototxt") == read_net(tmp_path / "in.prototxt")
    assert "File already in latest proto format" in capsys.readouterr().err


def test_upgrade_net_file_with_dropped_fields_writes_then_fails(tmp_path):
    (tmp_path / "in.prototxt").write_text(
        'input: "x"\nlayers { layer { name: "r" type: "relu" num_output: 3 } bottom: "x" '
        'top: "y" }\n')
    with pytest.raises(ProtonetError, match="encountered error"):
        upgrade_net_file(tmp_path / "in.prototxt", tmp_path / "out.prototxt")
    assert read_net(tmp_path / "out.prototxt").layer[0].type == "ReLU"


@needs_models
def test_upgrade_solver_file_converts_the_enum_and_leaves_snapshot_prefix(tmp_path):
    source = LEGACY / "solver-enum-2015-09/examples/mnist/lenet_solver_adam.prototxt"
    upgrade_solver_file(source, tmp_path / "out.prototxt")
    out = caffe_pb2.SolverParameter()
    text_format.Parse((tmp_path / "out.prototxt").read_text(), out)
    assert out.type == "Adam"
    assert not out.HasField("solver_type")
    original = caffe_pb2.SolverParameter()
    text_format.Parse(source.read_text(), original)
    assert out.snapshot_prefix == original.snapshot_prefix
    assert out.base_lr == original.base_lr
