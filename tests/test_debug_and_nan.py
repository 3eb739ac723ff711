"""Net-level debug_info (Caffe's net.cpp lines), --check_nan, the terminal progress line, and
closing nets and solvers (no prefetch thread left alive)."""

import gc
import io
import re
import sys
import threading

import numpy as np
import pytest

from protonet import Net, cli, commands
from protonet.data.datum import array_to_datum
from protonet.data.db import LMDBWriter
from protonet.errors import ProtonetError
from protonet.io.prototxt import parse_net_text as parse_net
from protonet.solvers import get_solver
from tests.solvers.nets import NET, write_workspace

GLOG = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] (.*)$")
NUMBER = r"[-+]?(?:\d+\.?\d*(?:e[-+]\d+)?|inf|nan)"

# data = −1 (2×3), W = 0.5, b = 1 → ip = −0.5; target 0.5 → loss = Σ(−1)²/(2·2) = 1;
# d loss/d ip = −0.5; dW = Σ_n (−0.5)(−1) = 1; db = −1.
DEBUG_NET = """name: "dbg"
debug_info: true
layer { name: "data" type: "DummyData" top: "data" top: "target"
  dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 2 }
    data_filler { type: "constant" value: -1 } data_filler { type: "constant" value: 0.5 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "constant" value: 0.5 }
    bias_filler { type: "constant" value: 1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }
"""

FORWARD_LINES = [
    ("I", "    [Forward] Layer data, top blob data data: 1"),
    ("I", "    [Forward] Layer data, top blob target data: 0.5"),
    ("I", "    [Forward] Layer ip, top blob ip data: 0.5"),
    ("I", "    [Forward] Layer ip, param blob 0 data: 0.5"),
    ("I", "    [Forward] Layer ip, param blob 1 data: 1"),
    ("I", "    [Forward] Layer loss, top blob loss data: 1"),
]
BACKWARD_LINES = [
    ("I", "    [Backward] Layer loss, bottom blob ip diff: 0.5"),
    ("I", "    [Backward] Layer ip, param blob 0 diff: 1"),
    ("I", "    [Backward] Layer ip, param blob 1 diff: 1"),
    # L1 = 6·0.5 + 2·1 and 6·1 + 2·1; L2 = √(6·0.25 + 2) and √8. Caffe logs it at ERROR.
    ("E", ("    [Backward] All net params (data, diff): L1 norm = (5, 8); "
           "L2 norm = (1.87083, 2.82843)")),
]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def glog_lines(err, prefix="    ["):
    """(severity, message) of every glog line whose message starts with ``prefix``."""
    out = []
    for line in err.splitlines():
        match = GLOG.match(line)
        if match and match.group(2).startswith(prefix):
            out.append((match.group(1), match.group(2)))
    return out


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name.startswith("prefetch-") and t.is_alive()]


# ---- debug_info ----------------------------------------------------------------------------------
def test_net_debug_info_logs_caffes_forward_and_backward_lines(capsys):
    net = Net(parse_net(DEBUG_NET), phase="TRAIN")
    capsys.readouterr()
    assert net.forward_backward() == pytest.approx(1.0)
    assert glog_lines(capsys.readouterr().err) == FORWARD_LINES + BACKWARD_LINES
    net.set_debug_info(False)
    net.forward_backward()
    assert glog_lines(capsys.readouterr().err) == []
    net.set_debug_info(True)
    net.clear_param_diffs()
    net.backward()          # pycaffe's backward is BackwardFromTo: no norms line, as in Caffe
    assert glog_lines(capsys.readouterr().err) == BACKWARD_LINES[:-1]


def test_solver_debug_info_adds_update_lines_on_display_iterations(workspace, capsys):
    (workspace / "net.prototxt").write_text(DEBUG_NET.replace("debug_info: true\n", ""))
    (workspace / "solver.prototxt").write_text(
        'net: "net.prototxt"\nbase_lr: 1\nlr_policy: "fixed"\nmax_iter: 2\ndisplay: 2\n'
        'debug_info: true\nsnapshot_after_train: false\n')
    solver = get_solver("solver.prototxt")
    capsys.readouterr()
    solver.step(2)
    lines = glog_lines(capsys.readouterr().err)
    # SGD without momentum: the step is lr · gradient; data is logged before w −= step.
    update = [("I", "    [Update] Layer ip, param 0 data: 0.5; diff: 1"),
              ("I", "    [Update] Layer ip, param 1 data: 1; diff: 1")]
    assert lines == FORWARD_LINES + BACKWARD_LINES + update      # iteration 0 only (display 2)


def test_shared_params_update_line_names_the_owner(workspace, capsys):
    shared = DEBUG_NET.replace(
        'layer { name: "loss"',
        'layer { name: "ip2" type: "InnerProduct" bottom: "ip" top: "ip2" param { name: "w" } '
        'inner_product_param { num_output: 2 bias_term: false } }\nlayer { name: "loss"').replace(
        'bottom: "ip" bottom: "target"', 'bottom: "ip3" bottom: "target"').replace(
        'layer { name: "loss"',
        'layer { name: "ip3" type: "InnerProduct" bottom: "ip2" top: "ip3" param { name: "w" } '
        'inner_product_param { num_output: 2 bias_term: false } }\nlayer { name: "loss"', 1)
    net = Net(parse_net(shared), phase="TRAIN")
    net.forward_backward()
    capsys.readouterr()
    net.update_debug_info()
    lines = [text for _, text in glog_lines(capsys.readouterr().err)]
    assert len(lines) == 4
    assert re.fullmatch(rf"    \[Update\] Layer ip, param 0 data: 0.5; diff: {NUMBER}", lines[0])
    assert re.fullmatch(rf"    \[Update\] Layer ip2, param w data: {NUMBER}; diff: {NUMBER}",
                        lines[2])
    assert re.fullmatch(rf"    \[Update\] Layer ip3, param blob w \(owned by layer ip2, param w\) "
                        rf"diff: {NUMBER}", lines[3])


def test_the_solver_no_longer_has_its_own_debug_loops():
    from protonet.solvers import solver

    assert not hasattr(solver, "forward_with_debug")
    assert not hasattr(solver, "backward_with_debug")


# ---- check_nan -----------------------------------------------------------------------------------
LOG_NET = NET.replace('bottom: "data" top: "ip1"', 'bottom: "logdata" top: "ip1"').replace(
    'layer { name: "ip1"',
    'layer { name: "log" type: "Log" bottom: "data" top: "logdata" }\nlayer { name: "ip1"')


def test_check_nan_stops_at_the_layer_that_makes_the_nan(workspace):
    net = Net(parse_net(LOG_NET), phase="TRAIN")
    net.set_check_nan(True)
    with pytest.raises(ProtonetError, match=r"layer 'log' \(Log\): forward produced NaN in top "
                                            r"blob 'logdata'; this is the first layer"):
        net.forward()


def test_check_nan_names_a_layer_with_nonfinite_weights(workspace):
    net = Net(parse_net(NET), phase="TRAIN")
    net.params["ip2"][0].data[1, 2] = np.inf
    net.forward()                                    # unchecked: no error from the net
    net.set_check_nan(True)
    with pytest.raises(ProtonetError, match=r"layer 'ip2' \(InnerProduct\): forward produced "
                                            r"(NaN|Inf) in top blob 'ip2' \(its param blob 0 "
                                            r"holds non-finite weights\)"):
        net.forward()


def test_check_nan_checks_gradients_after_backward(workspace):
    text = ('name: "grad" force_backward: true\n'
            'layer { name: "data" type: "DummyData" top: "data" top: "target" dummy_data_param {'
            ' shape { dim: 2 dim: 2 } shape { dim: 2 dim: 2 } data_filler { type: "constant" '
            'value: 0 } data_filler { type: "constant" value: 1 } } }\n'
            'layer { name: "sqrt" type: "Power" bottom: "data" top: "root" '
            'power_param { power: 0.5 } }\n'
            'layer { name: "loss" type: "EuclideanLoss" bottom: "root" bottom: "target" '
            'top: "loss" }\n')
    net = Net(parse_net(text), phase="TRAIN")
    net.set_check_nan(True)
    net.forward()                                    # √0 = 0: forward is finite
    with pytest.raises(ProtonetError, match=r"layer 'sqrt' \(Power\): backward produced "
                                            r"(NaN|Inf) in the diff of bottom blob 'data'"):
        net.backward()


def test_train_check_nan_names_iteration_layer_and_blob(workspace, capsys):
    diverging = write_workspace(".", type='"SGD"', base_lr="1e30", momentum="0",
                                test_interval=None, test_iter=None)
    with pytest.raises(ProtonetError, match=r"iteration 1: the loss is nan"):
        commands.train(diverging)                     # default: only the loss is checked
    # ip1's weights grow to ~1e29 after the first update; ip2 overflows to Inf first.
    with pytest.raises(ProtonetError, match=r"layer 'ip2' \(InnerProduct\): iteration 1: "
                                            r"forward produced Inf in top blob 'ip2'"):
        commands.train(diverging, check_nan=True)
    capsys.readouterr()
    assert cli.main(["train", "--solver", str(diverging), "--check_nan"]) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert re.fullmatch(r"protonet: error: net\.prototxt:\d+: layer 'ip2' \(InnerProduct\): "
                        r"iteration 1: forward produced Inf in top blob 'ip2'.*", err)


def test_test_and_time_check_nan(workspace):
    path = write_workspace(".", net_text=LOG_NET, max_iter="1", test_interval=None,
                           test_iter=None)
    solver = get_solver(path)
    solver.snapshot()
    weights = "snap/tiny_iter_0.caffemodel"
    with pytest.raises(ProtonetError, match=r"layer 'log' \(Log\): batch 0: forward produced "
                                            r"NaN in top blob 'logdata'"):
        commands.test_model("net.prototxt", weights, iterations=2, check_nan=True)
    assert np.isnan(commands.test_model("net.prototxt", weights, iterations=2)["loss"])
    with pytest.raises(ProtonetError, match=r"layer 'log' \(Log\): forward produced NaN"):
        commands.time_model("net.prototxt", iterations=1, check_nan=True)


# ---- progress line -------------------------------------------------------------------------------
class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_redirected_output_has_no_progress_text(workspace, capsys, mode):
    commands.train(write_workspace(".", display="2"), progress=mode)
    err = capsys.readouterr().err
    assert "\r" not in err and "\033" not in err and "[progress]" not in err
    assert "Optimization Done." in err


def test_progress_line_on_a_terminal_is_erased_before_each_log_line(workspace, monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr(commands.ProgressLine, "MIN_INTERVAL", 0.0)
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    commands.train(write_workspace(".", display="2"))
    out = terminal.getvalue()
    monkeypatch.undo()
    assert re.search(r"\r\[progress\] iteration 7/8 \(88%\), [\d.]+ iter/s, ETA [\d:?]+\033\[K",
                     out)
    assert out.endswith(("\n", "\r\033[K"))           # no progress left when training ends
    shown = []
    for line in out.split("\n")[:-1]:
        visible = line.rsplit("\r", 1)[-1]            # a terminal shows what follows the last \r
        assert "[progress]" not in visible
        shown.append(visible.replace("\033[K", ""))
    glog = [GLOG.match(text) for text in shown]
    assert sum(m is not None for m in glog) > 20
    assert any(m and m.group(2) == "Optimization Done." for m in glog)
    assert "Iteration 6 (" in out                     # the log lines themselves are intact


def test_progress_flag_choices(workspace):
    path = write_workspace(".", max_iter="1", test_interval=None, test_iter=None)
    assert cli.main(["train", "--solver", str(path), "--progress", "off"]) == 0
    assert cli.main(["train", "--solver", str(path), "--progress"]) == 0
    with pytest.raises(SystemExit):
        cli.main(["train", "--solver", str(path), "--progress", "sometimes"])


# ---- closing -------------------------------------------------------------------------------------
LMDB_NET = """name: "closing"
layer {{ name: "data" type: "Data" top: "data" top: "label"
  data_param {{ source: "{source}" batch_size: 2 backend: LMDB prefetch: 2 }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 0.1 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
"""


@pytest.fixture
def lmdb_net(workspace):
    images = np.random.default_rng(2).integers(0, 256, size=(6, 1, 3, 3), dtype=np.uint8)
    with LMDBWriter(workspace / "db") as db:
        for i, image in enumerate(images):
            db.put(f"{i:08d}", array_to_datum(image, i % 3).SerializeToString())
    (workspace / "net.prototxt").write_text(LMDB_NET.format(source="db"))
    return "net.prototxt"


def test_net_close_and_context_manager_stop_prefetch_threads(lmdb_net):
    with Net(lmdb_net, phase="TRAIN") as net:
        assert prefetch_threads()
        first = net.forward(["label"])["label"].copy()
    assert not prefetch_threads()
    np.testing.assert_array_equal(first, [0, 1])
    second = net.forward(["label"])["label"].copy()   # a closed net carries on where it was
    np.testing.assert_array_equal(second, [2, 0])
    net.close()
    assert not prefetch_threads()


def test_solver_closes_its_nets_after_solve_and_when_collected(lmdb_net, workspace):
    (workspace / "solver.prototxt").write_text(
        'net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 3\ndisplay: 1\n'
        'snapshot_after_train: false\n')
    solver = get_solver("solver.prototxt")
    assert prefetch_threads()
    solver.solve()
    assert not prefetch_threads()
    solver.step(1)                                    # still usable: the thread restarts
    assert prefetch_threads()
    del solver
    gc.collect()
    assert not prefetch_threads()
