"""The library functions behind ``protonet train | test | time | parse_log | plot_log``.

Each follows its Caffe counterpart (tools/caffe.cpp, tools/extra/parse_log.py): same flags,
same log lines, same CSV columns. The CLI in :mod:`protonet.cli` only parses arguments and calls
these; tests call them directly.
"""

import contextlib
import csv
import datetime
import functools
import logging
import os
import re
import sys
import time
from collections import OrderedDict

import numpy as np

from .errors import ProtonetError
from . import threads
from .kernels import compilation
from .log import get_logger
from .solvers.signals import SignalHandler
from .solvers.solver import fmt, loss_note

log = get_logger(__name__)
f32 = np.float32


# ---- train ------------------------------------------------------------------------------------
def read_train_solver(solver_path, weights, snapshot, iterations, level, stages):
    """The SolverParameter ``caffe train`` runs: the file with the command line's overrides."""
    from .io.prototxt import read_solver

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
    return param


def train(solver_path, weights=None, snapshot=None, iterations=None, sigint_effect="stop",
          sighup_effect="snapshot", level=0, stages=(), sigterm_effect="stop", check_nan=False,
          progress="auto", snapshot_failure="stop"):
    """Train (or fine-tune, or resume) as ``caffe train``; returns the solver when done.

    ``weights``: comma-separated .caffemodel files to start from (replaces the solver's own
    ``weights``); ``snapshot``: a .solverstate(.h5) to resume (not with ``weights``);
    ``iterations``: overrides max_iter; ``level``/``stages`` go into the solver's train_state.
    ``check_nan``: check every layer's outputs and gradients for NaN/Inf (else only the loss).
    ``progress``: "auto" (a progress line when stderr is a terminal), "on" or "off"; never
    written when stderr is redirected.
    ``snapshot_failure``: "stop" (default) or "keep" training when a snapshot cannot be written
    (a full disk, a read-only directory); the previous snapshot is intact either way.
    """
    from .solvers import get_solver

    compilation.start()
    param = read_train_solver(solver_path, weights, snapshot, iterations, level, stages)
    with SignalHandler(sigint_effect, sighup_effect, sigterm_effect) as signals, \
            progress_line(progress) as show:
        log.info("Use CPU.")
        solver = get_solver(param, source=solver_path)
        solver.set_action_function(signals.check)
        solver.set_check_nan(check_nan)
        solver.snapshot_failure = snapshot_failure
        show.attach(solver)
        _report_compilation_once(solver)
        if snapshot:
            log.info("Resuming from %s", snapshot)
        log.info("Starting Optimization")
        solver.solve(resume_file=snapshot)
        # Caffe quirk: the tool logs this again after Solve(), even after an early stop.
        log.info("Optimization Done.")
    return solver


def _report_compilation_once(solver):
    """Log Numba's compile time when the first iteration's gradients are ready."""
    done = []

    def on_gradients_ready():
        if not done:
            done.append(True)
            compilation.report(log)

    solver.add_callback(lambda: None, on_gradients_ready)


# ---- progress line ----------------------------------------------------------------------------
PROGRESS_MODES = ("auto", "on", "off")


def progress_enabled(mode, stream):
    """Whether to draw: never off a terminal; "auto" also not on a dumb terminal."""
    if mode not in PROGRESS_MODES:
        raise ProtonetError(f"unknown progress mode {mode!r}; use one of "
                            f"{', '.join(PROGRESS_MODES)}")
    isatty = getattr(stream, "isatty", None)
    if mode == "off" or not (callable(isatty) and isatty()):
        return False
    return mode == "on" or os.environ.get("TERM", "") != "dumb"


def _duration(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _ClearingFormatter(logging.Formatter):
    """Wraps a handler's formatter: a log line first erases the progress line (terminal only)."""

    def __init__(self, inner, progress):
        super().__init__()
        self.inner, self.progress = inner, progress

    def format(self, record):
        text = self.inner.format(record)
        if self.progress.visible:
            self.progress.visible = False
            return "\r\033[K" + text
        return text


class ProgressLine:
    """Iteration, iter/s and ETA on one terminal line, redrawn in place with ``\r``.

    Log lines erase it before they are written (their handlers' formatters are wrapped while
    the line is active) and the next iteration draws it again, so the glog lines themselves are
    unchanged. A disabled ProgressLine does nothing at all.
    """

    MIN_INTERVAL = 0.25     # seconds between redraws

    def __init__(self, enabled, stream_getter=lambda: sys.stderr):
        self.enabled = enabled
        self.visible = False
        self._stream = stream_getter
        self._solver = None
        self._first = None
        self._last_draw = 0.0
        self._handlers = []

    def attach(self, solver):
        """Draw at the start of each of ``solver``'s iterations."""
        if not self.enabled:
            return
        self._solver = solver
        solver.add_callback(self._on_iteration, lambda: None)
        for handler in logging.getLogger("protonet").handlers:
            self._handlers.append((handler, handler.formatter))
            handler.setFormatter(_ClearingFormatter(handler.formatter or logging.Formatter(),
                                                    self))

    def _on_iteration(self):
        now = time.perf_counter()
        iteration, total = self._solver.iter, self._solver.param.max_iter
        if self._first is None:
            self._first = (iteration, now)
        if now - self._last_draw < self.MIN_INTERVAL:
            return
        self._last_draw = now
        done, elapsed = iteration - self._first[0], now - self._first[1]
        rate = done / elapsed if elapsed > 0 and done else 0.0
        eta = _duration((total - iteration) / rate) if rate else "?"
        percent = 100.0 * iteration / total if total else 100.0
        self._write(f"\r[progress] iteration {iteration}/{total} ({percent:.0f}%), "
                    f"{rate:.2f} iter/s, ETA {eta}\033[K")
        self.visible = True

    def _write(self, text):
        for handler, _ in self._handlers:
            handler.acquire()
        try:
            stream = self._stream()
            stream.write(text)
            stream.flush()
        finally:
            for handler, _ in self._handlers:
                handler.release()

    def close(self):
        """Erase the line and give the log handlers their formatters back."""
        if self.visible:
            self._write("\r\033[K")
            self.visible = False
        for handler, formatter in self._handlers:
            handler.setFormatter(formatter)
        self._handlers = []


@contextlib.contextmanager
def progress_line(mode="auto"):
    """A :class:`ProgressLine` for stderr, enabled per ``mode`` (see :func:`progress_enabled`)."""
    line = ProgressLine(progress_enabled(mode, sys.stderr))
    try:
        yield line
    finally:
        line.close()


# ---- test -------------------------------------------------------------------------------------
def _output_values(net):
    """(name, loss weight, value) for every element of every output, in Caffe's order."""
    return [(name, weight, value) for name, blob, weight in net.loss_outputs()
            for value in blob.data.ravel()]


def _with_batch(function, index):
    """``function()``; a ProtonetError gains "batch <index>: " in front of its message."""
    try:
        return function()
    except ProtonetError as err:
        raise ProtonetError(f"batch {index}: {err.message}", file=err.file, line=err.line,
                            layer=err.layer, layer_type=err.layer_type) from None


def test_model(model, weights, iterations=50, phase="TEST", level=0, stages=(),
               check_nan=False):
    """Score a model as ``caffe test``.

    Returns ``{"loss": mean loss, "outputs": {name: mean}}`` (a list of means for an output
    with several elements). ``check_nan`` checks every layer's tops for NaN/Inf.
    """
    from .net import Net

    if not weights:
        raise ProtonetError("need model weights to score (give --weights)")
    compilation.start()
    with Net(model, phase=phase, level=level, stages=tuple(stages)) as net:
        net.set_check_nan(check_nan)
        for path in (w.strip() for w in weights.split(",")):
            net.copy_from(path)
        return _score(net, iterations)


def _score(net, iterations):
    log.info("Running for %d iterations.", iterations)
    scores, names, loss = None, [], f32(0)
    for i in range(iterations):
        loss += f32(_with_batch(net.forward_from_to, i))
        if i == 0:
            compilation.report(log, "the first batch")
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
def time_model(model, iterations=50, phase="TRAIN", level=0, stages=(), check_nan=False):
    """Benchmark as ``caffe time``: per-layer forward/backward ms; returns the timings (ms).

    ``check_nan`` checks each layer's outputs and gradients (not counted in the per-layer
    times).
    """
    from .net import Net

    compilation.start()
    with Net(model, phase=phase, level=level, stages=tuple(stages)) as net:
        net.set_check_nan(check_nan)
        return _benchmark(net, iterations)


def _benchmark(net, iterations):
    log.info("Performing Forward")
    log.info("Initial loss: %s", fmt(net.forward_from_to()))
    log.info("Performing Backward")
    net.backward_from_to()
    compilation.report(log, "the first forward and backward")
    log.info("*** Benchmark begins ***")
    log.info("Testing for %d iterations.", iterations)
    timings = time_layers(net, iterations, on_iteration=lambda j, ms: log.info(
        "Iteration: %d forward-backward time: %s ms.", j + 1, fmt(ms)))
    log.info("Average time per layer: ")
    for name, forward_ms, backward_ms in timings["layers"]:
        log.info("%10s\tforward: %s ms.", name, fmt(forward_ms))
        log.info("%10s\tbackward: %s ms.", name, fmt(backward_ms))
    log.info("Average Forward pass: %s ms.", fmt(timings["forward"]))
    log.info("Average Backward pass: %s ms.", fmt(timings["backward"]))
    log.info("Average Forward-Backward: %s ms.", fmt(timings["forward_backward"]))
    log.info("Total Time: %s ms.", fmt(timings["total"]))
    log.info("*** Benchmark ends ***")
    return timings


def time_layers(net, iterations, on_iteration=None):
    """Caffe's ``time`` loop: every layer's forward, then backward, timed one by one.

    Returns mean milliseconds per iteration: ``layers`` [(name, forward, backward)],
    ``forward``, ``backward``, ``forward_backward``, and ``total`` (all iterations). The bench
    (bench/nets.py) runs the same loop, so its per-layer sums add up to ``protonet time``'s.
    ``on_iteration(j, ms)`` is called after each iteration.
    """
    records = net.records
    forward_ms = np.zeros(len(records))
    backward_ms = np.zeros(len(records))
    total_forward = total_backward = 0.0
    clock = time.perf_counter
    total_start = clock()
    with threads.serial_blas():      # as the Net's own passes do
        for j in range(iterations):
            iter_start = clock()
            for i, record in enumerate(records):
                start = clock()
                record.layer.layer_forward(record.bottoms, record.tops)
                forward_ms[i] += (clock() - start) * 1000
                if net.check_nan:
                    _with_batch(functools.partial(net.check_forward_finite, i), j)
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
                if net.check_nan and record.need_backward:
                    _with_batch(functools.partial(net.check_backward_finite, i), j)
            total_backward += (clock() - middle) * 1000
            if on_iteration is not None:
                on_iteration(j, (clock() - iter_start) * 1000)
    total = (clock() - total_start) * 1000
    n = max(iterations, 1)
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
