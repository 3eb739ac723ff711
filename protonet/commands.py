"""The library functions behind ``protonet train | test | time | parse_log | plot_log``.

Each follows its Caffe counterpart (tools/caffe.cpp, tools/extra/parse_log.py): same flags,
same log lines, same CSV columns. The CLI in :mod:`protonet.cli` only parses arguments and calls
these; tests call them directly.
"""

import csv
import datetime
import os
import re
import time
from collections import OrderedDict

import numpy as np

from .errors import ProtonetError
from .log import get_logger
from .solvers.signals import SignalHandler
from .solvers.solver import fmt, loss_note

log = get_logger(__name__)
f32 = np.float32


# ---- train ------------------------------------------------------------------------------------
def train(solver_path, weights=None, snapshot=None, iterations=None, sigint_effect="stop",
          sighup_effect="snapshot", level=0, stages=(), sigterm_effect="stop"):
    """Train (or fine-tune, or resume) as ``caffe train``; returns the solver when done.

    ``weights``: comma-separated .caffemodel files to start from (replaces the solver's own
    ``weights``); ``snapshot``: a .solverstate(.h5) to resume (not with ``weights``);
    ``iterations``: overrides max_iter; ``level``/``stages`` go into the solver's train_state.
    """
    from .io.prototxt import read_solver
    from .solvers import get_solver

    if snapshot and weights:
        raise ProtonetError("give a snapshot to resume training or weights to finetune, but not "
                            "both")
    param = read_solver(solver_path)
    # Caffe quirk: the tool always sets train_state.level, so --level 0 overrides a level the
    # solver's train_state gave (caffe.cpp train()).
    param.train_state.level = level
    param.train_state.stage.extend(stages)
    if iterations is not None:
        param.max_iter = iterations
    if snapshot or weights:
        del param.weights[:]
    if weights:
        param.weights.append(weights)
    with SignalHandler(sigint_effect, sighup_effect, sigterm_effect) as signals:
        log.info("Use CPU.")
        solver = get_solver(param, source=solver_path)
        solver.set_action_function(signals.check)
        if snapshot:
            log.info("Resuming from %s", snapshot)
        log.info("Starting Optimization")
        solver.solve(resume_file=snapshot)
        # Caffe quirk: the tool logs this again after Solve(), even after an early stop.
        log.info("Optimization Done.")
    return solver


# ---- test -------------------------------------------------------------------------------------
def _output_values(net):
    """(name, loss weight, value) for every element of every output, in Caffe's order."""
    return [(name, weight, value) for name, blob, weight in net.loss_outputs()
            for value in blob.data.ravel()]


def test_model(model, weights, iterations=50, phase="TEST", level=0, stages=()):
    """Score a model as ``caffe test``.

    Returns ``{"loss": mean loss, "outputs": {name: mean}}`` (a list of means for an output
    with several elements).
    """
    from .net import Net

    if not weights:
        raise ProtonetError("need model weights to score (give --weights)")
    net = Net(model, phase=phase, level=level, stages=tuple(stages))
    for path in (w.strip() for w in weights.split(",")):
        net.copy_from(path)
    log.info("Running for %d iterations.", iterations)
    scores, names, loss = None, [], f32(0)
    for i in range(iterations):
        loss += f32(net.forward_from_to())
        outputs = _output_values(net)
        for name, _, value in outputs:
            log.info("Batch %d, %s = %s", i, name, fmt(value))
        values = np.array([v for _, _, v in outputs], dtype=np.float32)
        scores = values if scores is None else scores + values
        names = [(name, weight) for name, weight, _ in outputs]
    loss /= f32(max(iterations, 1))
    log.info("Loss: %s", fmt(loss))
    means = OrderedDict()
    for (name, weight), score in zip(names, scores if scores is not None else []):
        mean = f32(score) / f32(iterations)
        log.info("%s = %s%s", name, fmt(mean), loss_note(weight, mean))
        means.setdefault(name, []).append(float(mean))
    outputs = OrderedDict((name, v[0] if len(v) == 1 else v) for name, v in means.items())
    return {"loss": float(loss), "outputs": outputs}


# ---- time -------------------------------------------------------------------------------------
def time_model(model, iterations=50, phase="TRAIN", level=0, stages=()):
    """Benchmark as ``caffe time``: per-layer forward/backward ms; returns the timings (ms)."""
    from .net import Net

    net = Net(model, phase=phase, level=level, stages=tuple(stages))
    log.info("Performing Forward")
    log.info("Initial loss: %s", fmt(net.forward_from_to()))
    log.info("Performing Backward")
    net.backward_from_to()
    records = net.records
    log.info("*** Benchmark begins ***")
    log.info("Testing for %d iterations.", iterations)
    forward_ms = np.zeros(len(records))
    backward_ms = np.zeros(len(records))
    total_forward = total_backward = 0.0
    clock = time.perf_counter
    total_start = clock()
    for j in range(iterations):
        iter_start = clock()
        for i, record in enumerate(records):
            start = clock()
            record.layer.layer_forward(record.bottoms, record.tops)
            forward_ms[i] += (clock() - start) * 1000
        middle = clock()
        total_forward += (middle - iter_start) * 1000
        # Caffe calls Backward on every layer; one that needs none does nothing there.
        for i in range(len(records) - 1, -1, -1):
            record = records[i]
            start = clock()
            if record.need_backward:
                record.layer.layer_backward(record.tops, record.bottom_need_backward,
                                            record.bottoms)
            backward_ms[i] += (clock() - start) * 1000
        total_backward += (clock() - middle) * 1000
        log.info("Iteration: %d forward-backward time: %s ms.", j + 1,
                 fmt((clock() - iter_start) * 1000))
    total = (clock() - total_start) * 1000
    n = max(iterations, 1)
    log.info("Average time per layer: ")
    for i, record in enumerate(records):
        name = record.param.name
        log.info("%10s\tforward: %s ms.", name, fmt(forward_ms[i] / n))
        log.info("%10s\tbackward: %s ms.", name, fmt(backward_ms[i] / n))
    log.info("Average Forward pass: %s ms.", fmt(total_forward / n))
    log.info("Average Backward pass: %s ms.", fmt(total_backward / n))
    log.info("Average Forward-Backward: %s ms.", fmt(total / n))
    log.info("Total Time: %s ms.", fmt(total))
    log.info("*** Benchmark ends ***")
    return {
        "layers": [(r.param.name, forward_ms[i] / n, backward_ms[i] / n)
                   for i, r in enumerate(records)],
        "forward": total_forward / n,
        "backward": total_backward / n,
        "forward_backward": total / n,
        "total": total,
    }


# ---- parse_log --------------------------------------------------------------------------------
# The regular expressions of Caffe's tools/extra/parse_log.py.
ITERATION = re.compile(r"Iteration (\d+)")
TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")


def _line_time(line, year):
    """The glog prefix's date and time (``I1122 00:35:08.123456 …``); ValueError if none."""
    parts = line.strip().split()
    if len(parts) < 2:
        raise ValueError("no glog prefix")
    month, day = int(parts[0][1:3]), int(parts[0][3:])
    stamp = parts[1]
    dot = stamp.rfind(".")
    hour, minute, second = (int(x) for x in stamp[:dot].split(":"))
    return datetime.datetime(year, month, day, hour, minute, second, int(stamp[dot + 1:]))


def _add_output(regex, row, rows, line, iteration, seconds, rate):
    match = regex.search(line)
    if match:
        if not row or row["NumIters"] != iteration:
            if row:
                rows.append(row)
            row = OrderedDict([("NumIters", iteration), ("Seconds", seconds),
                               ("LearningRate", rate)])
        row[match.group(2)] = float(match.group(3))
    if row and rows and len(row) == len(rows[0]):
        rows.append(row)
        row = None
    return row


def parse_log(log_path):
    """(train rows, test rows) from a Caffe or protonet training log, as parse_log.py makes them.

    Each row is an OrderedDict: NumIters, Seconds (since the "Solving" line), LearningRate and
    one column per net output. The year comes from the file's ctime, as in parse_log.py.
    """
    log_path = os.fspath(log_path)
    year = datetime.datetime.fromtimestamp(os.path.getctime(log_path)).year
    train_rows, test_rows = [], []
    train_row = test_row = None
    iteration, rate = -1, float("nan")
    with open(log_path) as f:
        start = None
        for line in f:
            if "Solving" in line:
                start = _line_time(line, year)
                break
        if start is None:
            raise ProtonetError("no 'Solving' line: not a training log", file=log_path)
        last = start
        for line in f:
            match = ITERATION.search(line)
            if match:
                iteration = float(match.group(1))
            if iteration == -1:
                continue
            try:
                when = _line_time(line, year)
            except ValueError:
                continue
            if when.month < last.month:
                year += 1
                when = _line_time(line, year)
            last = when
            seconds = (when - start).total_seconds()
            match = LEARNING_RATE.search(line)
            if match:
                rate = float(match.group(1))
            train_row = _add_output(TRAIN_OUTPUT, train_row, train_rows, line, iteration,
                                    seconds, rate)
            test_row = _add_output(TEST_OUTPUT, test_row, test_rows, line, iteration, seconds,
                                   rate)
    for rows in (train_rows, test_rows):
        if len(rows) > 1:
            rows[0]["LearningRate"] = rows[1]["LearningRate"]
    return train_rows, test_rows


def write_log_csv(log_path, output_dir=None, delimiter=","):
    """Write ``<log>.train`` and ``<log>.test`` CSV files as parse_log.py; returns their paths."""
    train_rows, test_rows = parse_log(log_path)
    output_dir = os.path.dirname(os.path.abspath(log_path)) if output_dir is None else output_dir
    base = os.path.join(os.fspath(output_dir), os.path.basename(os.fspath(log_path)))
    written = []
    for suffix, rows in ((".train", train_rows), (".test", test_rows)):
        if not rows:
            continue
        path = base + suffix
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()), dialect=csv.excel,
                                    delimiter=delimiter)
            writer.writeheader()
            writer.writerows(rows)
        written.append(path)
    return written


# ---- plot_log ---------------------------------------------------------------------------------
def plot_log(log_path, out_png):
    """Plot train outputs and test outputs against iterations into ``out_png`` (matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ProtonetError("plot_log needs matplotlib; install it with "
                            "`pip install protonet[plot]` (or `pip install matplotlib`)") from None
    train_rows, test_rows = parse_log(log_path)
    if not train_rows and not test_rows:
        raise ProtonetError("the log has no train or test outputs to plot", file=log_path)
    fig, ax = plt.subplots(figsize=(8, 5))
    for prefix, rows in (("train", train_rows), ("test", test_rows)):
        if not rows:
            continue
        iters = [row["NumIters"] for row in rows]
        for column in list(rows[0].keys())[3:]:
            ax.plot(iters, [row.get(column, float("nan")) for row in rows],
                    label=f"{prefix} {column}")
    ax.set_xlabel("Iterations")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.savefig(out_png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out_png
