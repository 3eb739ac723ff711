"""Drawing nets as Graphviz DOT (pycaffe's caffe.draw, without pydot) and the `draw` command."""

import argparse
import stat

import pytest
from google.protobuf import text_format

import protonet
from protonet import cli_tools, draw
from protonet.errors import ProtonetError
from protonet.proto import caffe_pb2

NET = """
name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        data_param { source: "x" batch_size: 64 } }
layer { name: "input" type: "Input" top: "data" top: "label" include { phase: TEST }
        input_param { shape { dim: 2 dim: 1 dim: 8 dim: 8 } shape { dim: 2 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 20 kernel_size: 5 stride: 1 pad: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool1" top: "ip"
        inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


@pytest.fixture
def net_param():
    return text_format.Parse(NET, caffe_pb2.NetParameter())


@pytest.fixture
def no_graphviz(monkeypatch):
    monkeypatch.setattr(draw.shutil, "which", lambda name: None)


def test_dot_text_has_layers_blobs_and_labelled_edges(net_param):
    text = draw.get_dot_text(net_param, "LR")
    assert text.startswith('digraph "tiny" {\n  rankdir=LR;')
    assert ('"conv1_Convolution" [label="conv1\\n(Convolution)\\nkernel size: 5\\nstride: 1\\n'
            'pad: 2", shape="record", fillcolor="#FF5050", style="filled"];') in text
    assert '"pool1_Pooling" [label="pool1\\n(Pooling AVE)' in text
    assert '"relu1_ReLU" [label="relu1\\n(ReLU)", shape="record", fillcolor="#90EE90"' in text
    assert '"conv1_blob" [label="conv1", shape="octagon", fillcolor="#E0E0E0"' in text
    assert '"conv1_Convolution" -> "conv1_blob" [label="20"];' in text
    assert '"data_Data" -> "data_blob" [label="Batch 64"];' in text
    assert '"ip_InnerProduct" -> "ip_blob" [label="10"];' in text
    assert text.rstrip().endswith("}")


def test_vertical_layout_puts_words_on_one_line(net_param):
    text = draw.get_dot_text(net_param, "TB")
    assert '[label="conv1 (Convolution) kernel size: 5 stride: 1 pad: 2"' in text


def test_phase_filter_keeps_that_phase_only(net_param):
    train = draw.get_dot_text(net_param, phase=caffe_pb2.TRAIN)
    test = draw.get_dot_text(net_param, phase=caffe_pb2.TEST)
    assert '"data_Data"' in train and '"input_Input"' not in train
    assert '"input_Input"' in test and '"data_Data"' not in test
    both = draw.get_dot_text(net_param)
    assert '"data_Data"' in both and '"input_Input"' in both


def test_display_lrm_adds_learning_rate_multipliers(net_param):
    text = draw.get_dot_text(net_param, display_lrm=True)
    assert "lr mult: 1.0, 2.0" in text
    assert "lr mult: 1.0, 1.0" in text        # ip: no param specs → defaults


def test_names_with_quotes_are_escaped():
    net = caffe_pb2.NetParameter(name='a"b')
    net.layer.add(name='x"y', type="ReLU", bottom=["in"], top=["in"])
    text = draw.get_dot_text(net)
    assert 'digraph "a\\"b"' in text and '"x\\"y_ReLU"' in text


def test_draw_net_to_dot_file_needs_no_graphviz(net_param, tmp_path, no_graphviz):
    path = tmp_path / "net.dot"
    draw.draw_net_to_file(net_param, str(path), "LR")
    assert path.read_text() == draw.get_dot_text(net_param, "LR")


def test_draw_png_without_graphviz_says_how_to_fix(net_param, tmp_path, no_graphviz):
    with pytest.raises(ProtonetError, match=r"install Graphviz \(apt-get install graphviz\) or "
                                            r"write \.dot"):
        draw.draw_net_to_file(net_param, str(tmp_path / "net.png"))
    assert not (tmp_path / "net.png").exists()


def test_draw_png_pipes_dot_text_through_graphviz(net_param, tmp_path, monkeypatch):
    fake_dot = tmp_path / "dot"
    fake_dot.write_text("#!/bin/sh\necho \"format $1\"\ncat\n")
    fake_dot.chmod(fake_dot.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(draw.shutil, "which", lambda name: str(fake_dot))
    out = tmp_path / "net.svg"
    draw.draw_net_to_file(net_param, str(out), "BT")
    assert out.read_text() == "format -Tsvg\n" + draw.get_dot_text(net_param, "BT")


def test_draw_command_writes_dot_for_the_chosen_phase(tmp_path):
    model = tmp_path / "net.prototxt"
    model.write_text(NET)
    out = tmp_path / "graph.dot"
    parser = argparse.ArgumentParser()
    help_text, build, command = cli_tools.CLI_COMMANDS["draw"]
    build(parser)
    args = parser.parse_args([str(model), str(out), "--rankdir", "TB", "--phase", "TEST"])
    assert command(args) == 0
    text = out.read_text()
    assert "rankdir=TB;" in text and '"input_Input"' in text and '"data_Data"' not in text


def test_pycaffe_module_names_exist():
    assert protonet.draw.draw_net_to_file is draw.draw_net_to_file
    assert draw.choose_color_by_layertype("Pooling") == "#FF9900"
    assert draw.get_pooling_types_dict()[0] == "MAX"
