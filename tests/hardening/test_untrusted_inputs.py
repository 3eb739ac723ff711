"""Model files from strangers: Python layers can be refused, and weights files never run code.

A ``type: "Python"`` layer imports and runs the module it names (as in Caffe), so a net
definition is code. Weights are not: a ``.caffemodel`` whose layers say ``type: "Python"`` only
gives its blobs, and nothing protonet reads from a weights, solver-state or mean file goes
through pickle.
"""

import pickle
import sys

import numpy as np
import pytest

from protonet.cli import main
from protonet.errors import ProtonetError
from protonet.io.blobproto import array_to_blobproto, read_blobproto, write_blobproto
from protonet.io.prototxt import read_net
from protonet.layers.python import allow_python_layers
from protonet.net import Net
from protonet.proto import caffe_pb2

MODULE = "protonet_hardening_marker_module"

MARKER_SOURCE = f"""
import pathlib
pathlib.Path(__file__).with_name("IMPORTED").write_text("{MODULE} ran")
from protonet.layers import Layer


class Marker(Layer):
    def setup(self, bottoms, tops):
        pass

    def reshape(self, bottoms, tops):
        tops[0].reshape(bottoms[0].shape)

    def forward(self, bottoms, tops):
        tops[0].data[...] = bottoms[0].data
"""

NET = """name: "plain"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 4 } }
"""

PYTHON_NET = NET + f"""layer {{ name: "py" type: "Python" bottom: "ip" top: "py"
  python_param {{ module: "{MODULE}" layer: "Marker" }} }}
"""


@pytest.fixture
def marker_dir(tmp_path, monkeypatch):
    """A folder on sys.path holding a module that leaves a file behind when it is imported."""
    (tmp_path / f"{MODULE}.py").write_text(MARKER_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(MODULE, None)
    yield tmp_path
    sys.modules.pop(MODULE, None)
    allow_python_layers(True)


def _imported(marker_dir):
    return (marker_dir / "IMPORTED").exists() or MODULE in sys.modules


def _weights_with_python_layer(path):
    """A .caffemodel whose layer 'ip' says type Python (module MODULE) and carries ip's blobs."""
    net_param = caffe_pb2.NetParameter(name="from_a_stranger")
    layer = net_param.layer.add(name="ip", type="Python", bottom=["data"], top=["ip"])
    layer.python_param.module = MODULE
    layer.python_param.layer = "Marker"
    layer.blobs.add().CopyFrom(array_to_blobproto(np.full((4, 3), 0.25, np.float32)))
    layer.blobs.add().CopyFrom(array_to_blobproto(np.full((4,), -1.0, np.float32)))
    path.write_bytes(net_param.SerializeToString())
    return path


def test_python_layers_run_their_module_when_allowed(marker_dir, tmp_path):
    model = tmp_path / "py.prototxt"
    model.write_text(PYTHON_NET)
    net = Net(str(model), phase="TEST")
    assert _imported(marker_dir)
    assert net.layer_dict["py"].type == "Python"


def test_no_python_layers_refuses_the_net_without_importing(marker_dir, tmp_path):
    model = tmp_path / "py.prototxt"
    model.write_text(PYTHON_NET)
    allow_python_layers(False)
    with pytest.raises(ProtonetError, match=f"Python layers are disabled.*'{MODULE}'") as info:
        Net(str(model), phase="TEST")
    assert info.value.layer == "py"
    assert not _imported(marker_dir)
    Net(_plain_model(tmp_path), phase="TEST")   # nets without Python layers still build


def _plain_model(tmp_path):
    path = tmp_path / "plain.prototxt"
    path.write_text(NET)
    return str(path)


def test_caffemodel_naming_a_python_layer_loads_weights_without_importing(marker_dir,
                                                                          tmp_path):
    weights = _weights_with_python_layer(tmp_path / "stranger.caffemodel")
    net = Net(_plain_model(tmp_path), phase="TEST")
    net.copy_from(str(weights))
    np.testing.assert_array_equal(net.params["ip"][0].data, np.full((4, 3), 0.25, np.float32))
    np.testing.assert_array_equal(net.params["ip"][1].data, np.full((4,), -1.0, np.float32))
    read_net(str(weights))   # reading it as a NetParameter (upgrade-net, info) imports nothing
    assert not _imported(marker_dir)


def test_weights_are_loaded_without_importing_even_when_python_layers_are_refused(
        marker_dir, tmp_path):
    allow_python_layers(False)
    weights = _weights_with_python_layer(tmp_path / "stranger.caffemodel")
    net = Net(_plain_model(tmp_path), weights=str(weights), phase="TEST")
    assert net.params["ip"][0].data[0, 0] == np.float32(0.25)
    assert not _imported(marker_dir)


@pytest.fixture
def no_pickle(monkeypatch):
    """Make every pickle entry point (and numpy's pickle-capable loaders) fail loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while loading a file")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(np, "load", refuse)


def test_weights_solverstate_and_mean_files_are_read_without_pickle(tmp_path, no_pickle):
    from protonet.solvers import snapshot as snap

    net = Net(_plain_model(tmp_path), phase="TEST")
    net.params["ip"][0].data[...] = 3.0
    for name in ("w.caffemodel", "w.caffemodel.h5"):
        net.save(str(tmp_path / name))
        other = Net(_plain_model(tmp_path), phase="TEST")
        other.copy_from(str(tmp_path / name))
        assert (other.params["ip"][0].data == 3.0).all()
    state = snap.SolverStateData(7, str(tmp_path / "w.caffemodel"), 0,
                                 [np.ones((4, 3), np.float32)])
    for fmt in snap.FORMATS.values():
        path = str(tmp_path / ("s" + fmt.state_ext))
        fmt.write_state(path, state)
        assert snap.read_state(path).iter == 7
    write_blobproto(tmp_path / "mean.binaryproto", np.ones((1, 3, 2, 2), np.float32))
    assert read_blobproto(tmp_path / "mean.binaryproto").shape == (1, 3, 2, 2)



@pytest.mark.parametrize("command", ["train", "test", "time", "info"])
def test_cli_no_python_layers_refuses_with_one_line(command, marker_dir, tmp_path, capsys):
    model = tmp_path / "py.prototxt"
    model.write_text(PYTHON_NET)
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{model}"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 1\n')
    weights = _weights_with_python_layer(tmp_path / "w.caffemodel")
    argv = {"train": ["train", "--solver", str(solver)],
            "test": ["test", "--model", str(model), "--weights", str(weights),
                     "--iterations", "1"],
            "time": ["time", "--model", str(model), "--iterations", "1"],
            "info": ["info", str(model)]}[command]
    assert main(argv + ["--no-python-layers"]) == 1
    stderr = capsys.readouterr().err
    err = [line for line in stderr.splitlines() if line.startswith("protonet: error")]
    assert len(err) == 1 and "Python layers are disabled" in err[0], err
    assert "Traceback" not in stderr
    assert not _imported(marker_dir)
