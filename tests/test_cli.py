"""The `protonet` command: each subcommand in-process through main(), as a user runs it."""

import subprocess
import sys
from pathlib import Path

import pytest

from protonet.cli import main

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "caffe-era-models"
DEPLOY_NETS = sorted(str(p.relative_to(MODELS)) for p in MODELS.rglob("*deploy*.prototxt")) \
    if MODELS.is_dir() else []
LENET = """name: "LeNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 1 dim: 28 dim: 28 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
"""


@pytest.fixture
def lenet(tmp_path):
    path = tmp_path / "lenet.prototxt"
    path.write_text(LENET)
    return path


def test_version_and_help_list_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and "protonet 0.1.0" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("train", "test", "time", "info", "upgrade-net", "upgrade-solver"):
        assert command in out


def test_info_prints_shapes_params_and_totals(lenet, capsys):
    assert main(["info", str(lenet)]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "2x20x24x24" in out
    assert "total params: 29,330" in out      # conv1 20·25+20, ip1 10·2880+10


def test_layers_lists_caffe_types(capsys):
    assert main(["layers"]) == 0
    names = capsys.readouterr().out.split()
    assert "Convolution" in names and "LSTM" in names and len(names) == 61


def test_malformed_prototxt_is_one_line_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('layer {\n  name: "x"\n  type: "Input"\n  top: "x"\n  bogus: 3\n}\n')
    assert main(["info", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{bad}:5" in err[0] and "bogus" in err[0]


def test_unknown_layer_type_names_file_line_layer_and_suggestion(tmp_path, capsys):
    bad = tmp_path / "relu.prototxt"
    bad.write_text(LENET.replace('"Softmax"', '"Sotfmax"'))
    assert main(["info", str(bad)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("protonet: error: ")
    assert f"{bad}:9: layer 'prob' (Sotfmax)" in last and "did you mean 'Softmax'" in last


def test_missing_bottom_is_reported_with_the_layer(tmp_path, capsys):
    bad = tmp_path / "missing.prototxt"
    bad.write_text(LENET.replace('bottom: "pool1"', 'bottom: "pool9"'))
    assert main(["info", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "layer 'ip1'" in err and "pool9" in err


def test_upgrade_net_writes_the_current_format(tmp_path):
    v1 = MODELS / "caffe-legacy/v1-2015-02/examples/mnist/lenet.prototxt"
    if not v1.is_file():
        pytest.skip("../shared/caffe-era-models is not beside the checkout")
    out = tmp_path / "lenet_v2.prototxt"
    assert main(["upgrade-net", str(v1), str(out)]) == 0
    text = out.read_text()
    assert "layer {" in text and "layers {" not in text and 'type: "Convolution"' in text


def test_command_line_error_exits_1_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "protonet", "info", str(tmp_path / "nope")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "nope" in result.stderr


@pytest.mark.parametrize("model", DEPLOY_NETS)
def test_info_prints_a_table_for_every_deploy_net(model, capsys, monkeypatch):
    monkeypatch.chdir(MODELS)
    assert main(["info", model]) == 0
    assert "total params:" in capsys.readouterr().out


def test_missing_data_source_names_the_prototxt_line_and_the_source(tmp_path, capsys):
    model = tmp_path / "train.prototxt"
    model.write_text('layer {\n  name: "data"\n  type: "Data"\n  top: "data"\n'
                     '  data_param { source: "no/such_lmdb" batch_size: 2 backend: LMDB }\n}\n')
    assert main(["info", str(model), "--phase", "TRAIN"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{model}:1: layer 'data' (Data): no/such_lmdb: " in last
