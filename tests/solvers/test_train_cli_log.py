"""train / test / time, the log they write (parse_log.py-compatible), signals and user errors."""

import csv
import datetime
import os
import re
import signal

import numpy as np
import pytest

from protonet import cli, commands
from protonet.errors import ProtonetError
from protonet.solvers import Solver, get_solver
from tests.solvers.nets import NET, write_workspace

# CAFFE_REFERENCE §1.8: the glog prefix and parse_log.py's regular expressions.
GLOG = re.compile(r"^[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{6}) +\d+ [\w.]+:\d+\] (.*)$")
PARSE_ITERATION = re.compile(r"Iteration (\d+)")
PARSE_TRAIN = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
PARSE_TEST = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
PARSE_LR = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")
NUMBER = r"[-+]?(?:\d+\.?\d*(?:e[-+]\d+)?|inf|nan)"
PROGRESS = re.compile(rf"^Iteration (\d+) \(({NUMBER}) iter/s, ({NUMBER})s/(\d+) iters\), "
                      rf"loss = ({NUMBER})$")


STAGED_NET = NET.replace('layer { name: "loss"', 'layer { name: "staged" type: "ReLU" '
                         'bottom: "ip2" top: "ip2" include { stage: "extra" } }\n'
                         'layer { name: "loss"')


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def messages(err):
    """The message of every glog line. Only the solver-parameter dump spans several lines (as in
    Caffe, whose parse_log.py skips such lines); any other line must carry a glog prefix."""
    out = []
    for line in err.splitlines():
        match = GLOG.match(line)
        if match:
            out.append(match.group(7))
            continue
        assert out and out[-1].startswith("Initializing solver from parameters:"), \
            f"not a glog line: {line!r}"
    return out


def caffe_parse(lines):
    """parse_log.py's row logic on messages: {iteration: {output: value}} for train and test."""
    train, test, iteration, rates = {}, {}, -1, {}
    started = False
    for text in lines:
        started = started or "Solving" in text
        if not started:
            continue
        match = PARSE_ITERATION.search(text)
        if match:
            iteration = int(match.group(1))
        match = PARSE_LR.search(text)
        if match:
            rates[iteration] = float(match.group(1))
        for regex, table in ((PARSE_TRAIN, train), (PARSE_TEST, test)):
            match = regex.search(text)
            if match:
                table.setdefault(iteration, {})[match.group(2)] = float(match.group(3))
    return train, test, rates


def test_training_log_is_what_caffes_parse_log_reads(workspace, capsys):
    solver = commands.train(write_workspace(".", display="1", max_iter="6"))
    err = capsys.readouterr().err
    lines = messages(err)
    assert "Solving tiny" in lines and "Learning Rate Policy: step" in lines
    assert lines.index("Solving tiny") < lines.index("Learning Rate Policy: step")
    progress = [PROGRESS.match(t) for t in lines if t.startswith("Iteration") and "iter/s" in t]
    assert [int(m.group(1)) for m in progress] == list(range(6))
    assert all(m.group(4) == "1" for m in progress)
    train, test, rates = caffe_parse(lines)
    assert sorted(train) == list(range(6))
    assert all(set(row) == {"loss"} for row in train.values())
    assert sorted(test) == [0, 4]
    assert all(set(row) == {"acc", "loss"} for row in test.values())
    assert rates == {0: 0.05, 1: 0.05, 2: 0.05, 3: 0.025, 4: 0.025, 5: 0.025}
    last = commands.fmt(train[5]["loss"])
    assert f"    Train net output #0: loss = {last} (* 1 = {last} loss)" in lines
    assert f"Iteration 6, loss = {commands.fmt(solver.smoothed_loss)}" in lines
    assert lines.count("Optimization Done.") == 2     # Solve() and the tool, as in Caffe
    assert "Iteration 4, Testing net (#0)" in lines

    log_path = workspace / "train.log"
    log_path.write_text(err)
    train_rows, test_rows = commands.parse_log(log_path)
    assert [row["NumIters"] for row in train_rows] == [float(i) for i in range(6)]
    assert [row["loss"] for row in train_rows] == [train[i]["loss"] for i in range(6)]
    assert list(train_rows[0]) == ["NumIters", "Seconds", "LearningRate", "loss"]
    assert list(test_rows[0]) == ["NumIters", "Seconds", "LearningRate", "acc", "loss"]
    assert train_rows[0]["LearningRate"] == 0.05 and train_rows[4]["LearningRate"] == 0.025
    assert all(row["Seconds"] >= 0 for row in train_rows)
    written = commands.write_log_csv(log_path, workspace)
    assert [os.path.basename(p) for p in written] == ["train.log.train", "train.log.test"]
    with open(written[1], newline="") as f:
        header = next(csv.reader(f))
    assert header == ["NumIters", "Seconds", "LearningRate", "acc", "loss"]


def test_parse_log_follows_glog_dates(workspace):
    log_path = workspace / "caffe.log"
    log_path.write_text(
        "I0210 13:39:20.000000  4242 solver.cpp:1] Solving LeNet\n"
        "I0210 13:39:22.500000  4242 solver.cpp:2] Iteration 100 (1 iter/s, 2s/100 iters), "
        "loss = 0.3\n"
        "I0210 13:39:22.500001  4242 solver.cpp:3]     Train net output #0: loss = 0.3 "
        "(* 1 = 0.3 loss)\n"
        "I0210 13:39:22.500002  4242 solver.cpp:4] Iteration 100, lr = 1e-05\n"
        "I0210 13:39:23.000000  4242 solver.cpp:2] Iteration 200 (1 iter/s, 2s/100 iters), "
        "loss = 0.2\n"
        "I0210 13:39:23.000001  4242 solver.cpp:3]     Train net output #0: loss = 0.2 "
        "(* 1 = 0.2 loss)\n")
    train_rows, test_rows = commands.parse_log(log_path)
    assert [(r["NumIters"], r["LearningRate"], r["loss"]) for r in train_rows] == [
        (100.0, 1e-05, 0.3), (200.0, 1e-05, 0.2)]
    assert train_rows[0]["Seconds"] == datetime.timedelta(seconds=2.500001).total_seconds()
    assert test_rows == []


def test_cli_train_runs_and_reports_errors_on_one_line(workspace, capsys):
    path = write_workspace(".", max_iter="2", test_iter=None, test_interval=None)
    assert cli.main(["train", "-solver", str(path)]) == 0
    assert os.path.isfile("snap/tiny_iter_2.caffemodel")
    assert cli.main(["train", "--solver", str(path), "--weights", "x.caffemodel",
                     "--snapshot", "y.solverstate"]) == 1
    assert "not both" in capsys.readouterr().err.splitlines()[-1]


def _signal_at(monkeypatch, iteration, signum):
    original = Solver.apply_update

    def apply_update_then_signal(self):
        original(self)
        if self.iter == iteration:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(Solver, "apply_update", apply_update_then_signal)


def test_sigint_stops_early_with_a_final_snapshot(workspace, monkeypatch, capsys):
    _signal_at(monkeypatch, 3, signal.SIGINT)
    solver = commands.train(write_workspace("."))
    assert solver.iter == 3
    assert "Optimization stopped early." in messages(capsys.readouterr().err)
    assert os.path.isfile("snap/tiny_iter_3.solverstate")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sighup_snapshots_and_training_goes_on(workspace, monkeypatch):
    _signal_at(monkeypatch, 1, signal.SIGHUP)
    solver = commands.train(write_workspace("."))
    assert solver.iter == 8
    assert os.path.isfile("snap/tiny_iter_1.caffemodel")


def test_sigterm_stops_training(workspace, monkeypatch):
    _signal_at(monkeypatch, 2, signal.SIGTERM)
    assert commands.train(write_workspace(".")).iter == 2


def test_signal_effect_none_ignores_the_signal(workspace, monkeypatch):
    _signal_at(monkeypatch, 2, signal.SIGINT)
    assert commands.train(write_workspace("."), sigint_effect="none").iter == 8
    with pytest.raises(ProtonetError, match="snapshot, stop, none"):
        commands.train(write_workspace("."), sighup_effect="pause")


def test_nonfinite_loss_names_the_iteration_and_the_layer(workspace):
    net = NET.replace('bottom: "data" top: "ip1"', 'bottom: "logdata" top: "ip1"').replace(
        "layer { name: \"ip1\"",
        'layer { name: "log" type: "Log" bottom: "data" top: "logdata" }\nlayer { name: "ip1"')
    with pytest.raises(ProtonetError, match=r"iteration 0: the loss is nan; the first layer "
                                            r"whose output is not finite is 'log' \(Log\)"):
        commands.train(write_workspace(".", net_text=net))


def test_display_shows_loss_smoothed_over_average_loss(workspace, capsys):
    solver = get_solver(write_workspace(".", display="1", average_loss="3", max_iter="5",
                                        test_interval=None, test_iter=None))
    losses = []
    solver.add_callback(lambda: None, lambda: losses.append(float(solver.net.blobs["loss"].data)))
    solver.step(5)
    shown = [float(m.group(5)) for m in map(PROGRESS.match, messages(capsys.readouterr().err))
             if m]
    expected = [np.mean(losses[max(0, i - 2):i + 1]) for i in range(5)]
    np.testing.assert_allclose(shown, expected, rtol=1e-5)


def test_debug_info_clipping_and_test_loss_lines(workspace, capsys):
    commands.train(write_workspace(".", display="4", debug_info="true", clip_gradients="0.01",
                                   test_compute_loss="true", max_iter="4"))
    lines = messages(capsys.readouterr().err)
    assert any(re.fullmatch(rf"    \[Forward\] Layer ip1, top blob ip1 data: {NUMBER}", t)
               for t in lines)
    assert any(re.fullmatch(rf"    \[Forward\] Layer ip1, param blob 1 data: {NUMBER}", t)
               for t in lines)
    assert any(re.fullmatch(rf"    \[Backward\] Layer ip2, bottom blob ip1 diff: {NUMBER}", t)
               for t in lines)
    assert any(t.startswith("    [Backward] All net params (data, diff): L1 norm = (")
               for t in lines)
    assert any(re.fullmatch(rf"Gradient clipping: scaling down gradients \(L2 norm {NUMBER} > "
                            rf"0\.01\) by scale factor {NUMBER}", t) for t in lines)
    assert any(re.fullmatch(rf"Test loss: {NUMBER}", t) for t in lines)


def test_cli_level_and_stages_go_into_train_state(workspace):
    path = write_workspace(".", net_text=STAGED_NET, max_iter="1")
    assert "staged" in commands.train(path, stages=("extra",)).net._layer_names
    assert "staged" not in commands.train(path).net._layer_names


def test_test_and_time_commands_print_caffes_lines(workspace, capsys):
    commands.train(write_workspace(".", max_iter="2"))
    capsys.readouterr()
    result = commands.test_model("net.prototxt", "snap/tiny_iter_2.caffemodel", iterations=3)
    lines = messages(capsys.readouterr().err)
    assert lines.count("Running for 3 iterations.") == 1
    batches = [float(re.fullmatch(rf"Batch \d, acc = ({NUMBER})", t).group(1))
               for t in lines if t.startswith("Batch") and "acc" in t]
    assert len(batches) == 3
    np.testing.assert_allclose(result["outputs"]["acc"], np.mean(batches), rtol=1e-5)
    assert f"Loss: {commands.fmt(result['loss'])}" in lines
    assert any(re.fullmatch(rf"loss = {NUMBER} \(\* 1 = {NUMBER} loss\)", t) for t in lines)

    timing = commands.time_model("net.prototxt", iterations=2)
    lines = messages(capsys.readouterr().err)
    assert [name for name, _, _ in timing["layers"]] == ["data", "ip1", "drop", "relu", "ip2",
                                                         "loss"]
    assert any(re.fullmatch(rf"\s*ip1\tforward: {NUMBER} ms\.", t) for t in lines)
    assert any(re.fullmatch(rf"\s*ip1\tbackward: {NUMBER} ms\.", t) for t in lines)
    for phrase in ("Average Forward pass", "Average Backward pass",
                   "Average Forward-Backward", "Total Time"):
        assert any(t.startswith(phrase) for t in lines), phrase
    assert sum(t.startswith("Iteration: ") for t in lines) == 2


@pytest.mark.parametrize("fields, message", [
    ({"net": '"absent.prototxt"'}, "absent.prototxt' does not exist"),
    ({"net": None, "train_net": '"net.prototxt"'}, "test_iter must be specified for each test"),
    ({"net": None, "train_net": '"net.prototxt"', "test_iter": None,
      "test_net": '"net.prototxt"'}, "test_iter must be specified for each test"),
    ({"net": None}, "must specify a train net"),
    ({"type": '"Adamax"'}, "SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam"),
    ({"lr_policy": '"cosine"'}, "fixed, step, exp, inv, multistep, poly, sigmoid"),
    ({"test_interval": "0"}, "test_interval"),
    ({"average_loss": "0"}, "average_loss must be >= 1"),
])
def test_solver_mistakes_are_protonet_errors(workspace, fields, message):
    with pytest.raises(ProtonetError, match=re.escape(message)):
        commands.train(write_workspace(".", **fields))



def test_net_state_precedence_solver_default_then_file_then_solver_state(workspace):
    with_file_state = STAGED_NET + 'state { stage: "extra" }\n'
    solver = get_solver(write_workspace(".", net_text=with_file_state, max_iter="1"))
    assert "staged" in solver.net._layer_names           # the file's state adds the stage
    assert "staged" in solver.test_nets[0]._layer_names
    assert solver.net.phase == 0 and solver.test_nets[0].phase == 1
    solver = get_solver(write_workspace(".", net_text=STAGED_NET,
                                        train_state='{ stage: "extra" }',
                                        test_state='{ level: 2 }'))
    assert "staged" in solver.net._layer_names
    assert "staged" not in solver.test_nets[0]._layer_names
    assert solver.test_nets[0].state.level == 2


def test_test_initialization_false_skips_the_first_test(workspace, capsys):
    commands.train(write_workspace(".", test_initialization="false"),
                   iterations=4)
    lines = messages(capsys.readouterr().err)
    assert "Iteration 0, Testing net (#0)" not in lines
    assert "Iteration 4, Testing net (#0)" in lines


def test_resume_and_finetune_log_what_they_load(workspace, capsys):
    path = write_workspace(".")
    commands.train(path)
    capsys.readouterr()
    assert commands.train(path, snapshot="snap/tiny_iter_4.solverstate").iter == 8
    lines = messages(capsys.readouterr().err)
    assert "Resuming from snap/tiny_iter_4.solverstate" in lines
    assert "Restoring previous solver status from snap/tiny_iter_4.solverstate" in lines
    commands.train(path, weights="snap/tiny_iter_8.caffemodel", iterations=1)
    lines = messages(capsys.readouterr().err)
    assert lines.count("Finetuning from snap/tiny_iter_8.caffemodel") == 2   # train + test net


def test_plot_log_writes_a_png_or_says_matplotlib_is_missing(workspace, capsys):
    import importlib.util

    commands.train(write_workspace(".", max_iter="2"))
    (workspace / "train.log").write_text(capsys.readouterr().err)
    if importlib.util.find_spec("matplotlib") is None:
        with pytest.raises(ProtonetError, match="needs matplotlib"):
            commands.plot_log(workspace / "train.log", workspace / "curves.png")
    else:
        commands.plot_log(workspace / "train.log", workspace / "curves.png")
        assert (workspace / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
