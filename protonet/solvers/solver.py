"""The training loop: Caffe's Solver and SGDSolver, with the update rule as a pluggable part.

``Solver(path_or_SolverParameter)`` builds the train net and the test nets, then ``solve()``
runs Caffe's Solver::Solve and ``step(n)`` its Solver::Step, in exactly Caffe's order:

    Step, per iteration:
      clear param diffs
      test all nets          if test_interval divides iter (and iter > 0 or test_initialization)
      iter_size × forward/backward; loss ÷ iter_size; smoothed loss over average_loss
      display                "Iteration N (x iter/s, ys/D iters), loss = L" + train outputs
      ApplyUpdate            lr from the policy ("Iteration N, lr = X" on display iterations);
                             clip gradients; per param: ÷ iter_size, regularise, update rule;
                             w ← w − diff; iter += 1
      snapshot               if snapshot divides iter, or a signal asked for one
      stop                   if a signal asked to
    Solve: Step(max_iter − iter); final snapshot unless the last iteration made one (and
      snapshot_after_train); a forward-only pass to print "Iteration N, loss = L" if display
      divides max_iter; a final test if test_interval divides it; "Optimization Done."

Log lines are Caffe's, byte for byte (floats printed as C++ streams print them, ``%g``), so
``tools/extra/parse_log.py`` reads protonet's logs. The pycaffe Solver API is kept: ``net``,
``test_nets``, ``iter``, ``param``, ``lr``, ``step``, ``solve``, ``snapshot``, ``restore``,
``apply_update``, ``share_weights``, ``add_callback``.
"""

import glob
import os
import time
import weakref

import numpy as np
from google.protobuf import text_format

from .. import rng, threads
from ..errors import ProtonetError
from ..log import get_logger
from ..net import Net
from ..proto import caffe_pb2
from . import lr_policies, updates
from . import snapshot as snap
from .signals import NONE, SNAPSHOT, STOP

log = get_logger(__name__)
f32 = np.float32

TRAIN_NET_FIELDS = ("net", "net_param", "train_net", "train_net_param")


def fmt(value):
    """A number as Caffe's ``LOG(INFO) << value`` prints it (C++ stream default: %g, 6 digits)."""
    return f"{float(value):g}"


def read_solver_param(path):
    from ..io.prototxt import read_solver

    return read_solver(path)


def _upgraded_copy(param):
    from ..io.upgrade import upgrade_solver

    copy = caffe_pb2.SolverParameter()
    copy.CopyFrom(param)
    upgrade_solver(copy)
    return copy


def _merged_state(phase, *states):
    """Caffe's NetState precedence: the solver default, then each given state merged over it."""
    state = caffe_pb2.NetState(phase=phase)
    for extra in states:
        state.MergeFrom(extra)
    return state


def first_nonfinite_layer(net):
    """The first layer (in forward order) one of whose tops holds a NaN or an infinity."""
    for record in net.records:
        for top in record.tops:
            if not np.isfinite(top.data).all():
                return record
    return None


class Solver:
    """Caffe's Solver + SGDSolver; the subclasses only choose the update rule.

    ``Solver(path)`` uses the rule named by the file's ``type``; ``SGDSolver(path)``,
    ``AdamSolver(path)``... force theirs, as pycaffe's classes do.
    """

    type = None

    def __init__(self, param, *, source=None):
        if isinstance(param, caffe_pb2.SolverParameter):
            self.param, self.source = _upgraded_copy(param), source
        else:
            self.source = os.fspath(param)
            self.param = read_solver_param(self.source)
        p = self.param
        log.info("Initializing solver from parameters: \n%s",
                 text_format.MessageToString(p).rstrip())
        self.rule = self._choose_rule()
        self._check_param()
        self._check_snapshot_writable()
        if p.random_seed >= 0:
            rng.set_random_seed(p.random_seed)
        self.net = self._init_train_net()
        self.test_nets = self._init_test_nets()
        # Stop the nets' prefetch threads when the solver is collected, even without close().
        self._finalizer = weakref.finalize(self, _close_nets, [self.net] + self.test_nets)
        self._finalizer.atexit = False
        log.info("Solver scaffolding done.")
        self.iter = 0
        self.current_step = 0
        self.requested_early_exit = False
        # Caffe's solver overrides the nets' own debug_info with its own; protonet honours
        # either (debug_info: true in the net file or in the solver).
        self._train_debug = bool(p.debug_info or self.net.debug_info)
        self.check_nan = False
        self.smoothed_loss = f32(0)
        self._losses = []
        self._callbacks = []
        self._action = lambda: NONE
        self.snapshot_failure = "stop"   # or "keep": log a failed snapshot and train on
        self._hyper = updates.Hyper(p)
        params = self.net.learnable_params
        self.history = [np.zeros(b.shape, dtype=np.float32)
                        for _ in range(self.rule.history_sets) for b in params]
        # Caffe keeps two param-sized scratch blobs per param (update_, temp_); the update
        # runs over slices of UPDATE_CHUNK elements instead, so one small pair serves them all.
        largest = max((b.count for b in params), default=0)
        self._scratch = tuple(np.empty(min(largest, updates.UPDATE_CHUNK), np.float32)
                              for _ in range(2))

    # ---- construction ------------------------------------------------------------------------
    def _choose_rule(self):
        name = self.type or self.param.type
        if name not in updates.RULES:
            raise ProtonetError(f"unknown solver type '{name}'; type must be one of "
                                f"{', '.join(updates.RULES)}", file=self.source)
        if self.type and self.param.type != self.type:
            log.warning("The solver file asks for type '%s' but a %s was created; using %s",
                        self.param.type, type(self).__name__, self.type)
        return updates.RULES[name]

    def _check_param(self):
        p = self.param
        try:
            if p.average_loss < 1:
                raise ProtonetError(f"average_loss must be >= 1 (got {p.average_loss})")
            if p.iter_size < 1:
                raise ProtonetError(f"iter_size must be >= 1 (got {p.iter_size})")
            self.rule.check(p)
            self._policy = lr_policies.check_policy(p)
            self._regularize = updates.check_regularizer(p)
            if p.snapshot_format not in snap.FORMATS:
                raise ProtonetError(f"unsupported snapshot_format {p.snapshot_format}")
        except ProtonetError as err:
            raise err.with_context(file=self.source)

    def _snapshot_filename(self, extension):
        return f"{self.param.snapshot_prefix}_iter_{self.iter}{extension}"

    def _check_snapshot_writable(self):
        """Caffe's CheckSnapshotWritePermissions, also run when only the final snapshot is due."""
        p = self.param
        if not (p.snapshot or p.snapshot_after_train):
            return
        if p.snapshot and not p.HasField("snapshot_prefix"):
            raise ProtonetError("snapshot is specified but snapshot_prefix is not; give "
                                "snapshot_prefix in the solver", file=self.source)
        probe = f"{p.snapshot_prefix}_iter_0.tempfile"
        try:
            with open(probe, "wb"):
                pass
            os.remove(probe)
        except OSError:
            raise ProtonetError(f"Cannot write to snapshot prefix '{p.snapshot_prefix}'. Make "
                                f"sure that the directory exists and is writable.",
                                file=self.source) from None
        leftovers = sorted(glob.glob(f"{glob.escape(p.snapshot_prefix)}_iter_*.tmp"))
        if leftovers:
            log.warning("%d temporary file(s) left by an interrupted snapshot (never read; safe "
                        "to delete): %s", len(leftovers), ", ".join(leftovers[:5]) +
                        (", ..." if len(leftovers) > 5 else ""))

    def _net_file(self, path, field):
        if not os.path.isfile(path):
            raise ProtonetError(f"the solver's {field} '{path}' does not exist (paths in a "
                                f"solver are relative to the current directory, {os.getcwd()})",
                                file=self.source)
        from ..io.prototxt import read_net

        return read_net(path)

    def _build_net(self, source, state, what, workspace=None):
        """``source`` is a file path or an inline NetParameter; ``state`` the merged NetState."""
        log.info("Creating %s", what)
        if isinstance(source, str):
            net = Net(source, state=state, workspace=workspace)
        else:
            net_param = caffe_pb2.NetParameter()
            net_param.CopyFrom(source)
            net_param.state.CopyFrom(state)
            net = Net(net_param, state=state, workspace=workspace)
        self._load_weights(net)
        return net

    def _load_weights(self, net):
        for entry in self.param.weights:
            for path in (name.strip() for name in entry.split(",")):
                log.info("Finetuning from %s", path)
                net.copy_from(path)

    def _init_train_net(self):
        p = self.param
        given = [f for f in TRAIN_NET_FIELDS if p.HasField(f)]
        if len(given) != 1:
            problem = "must specify a train net" if not given else \
                f"must not contain more than one train net (found {', '.join(given)})"
            raise ProtonetError(f"SolverParameter {problem}, using one of these fields: "
                                f"{', '.join(TRAIN_NET_FIELDS)}", file=self.source)
        field = given[0]
        if field in ("net", "train_net"):
            source = getattr(p, field)
            file_state = self._net_file(source, field).state
        else:
            source = getattr(p, field)
            file_state = source.state
        state = _merged_state(caffe_pb2.TRAIN, file_state, p.train_state)
        what = f"training net from {field} file: {source}" if isinstance(source, str) else \
            f"training net specified in {field}."
        return self._build_net(source, state, what)

    def _test_sources(self):
        """(source, description) per test net instance, in Caffe's order."""
        p = self.param
        if p.HasField("net") and p.HasField("net_param"):
            raise ProtonetError("both net and net_param are given; give only one",
                                file=self.source)
        explicit = [(net, "test_net_param") for net in p.test_net_param] + \
                   [(path, f"test_net file: {path}") for path in p.test_net]
        generic = p.HasField("net") or p.HasField("net_param")
        count_ok = len(p.test_iter) >= len(explicit) if generic else \
            len(p.test_iter) == len(explicit)
        if not count_ok:
            raise ProtonetError(f"test_iter must be specified for each test network: "
                                f"{len(p.test_iter)} test_iter for {len(explicit)} test nets "
                                f"(test_net/test_net_param)", file=self.source)
        extra = len(p.test_iter) - len(explicit)
        if p.HasField("net_param"):
            explicit += [(p.net_param, "net_param")] * extra
        elif p.HasField("net"):
            explicit += [(p.net, f"net file: {p.net}")] * extra
        if p.test_state and len(p.test_state) != len(explicit):
            raise ProtonetError(f"test_state must be unspecified or specified once per test net "
                                f"({len(p.test_state)} given for {len(explicit)} test nets)",
                                file=self.source)
        if explicit and p.test_interval <= 0:
            raise ProtonetError(f"{len(explicit)} test net(s) but test_interval is "
                                f"{p.test_interval}; set test_interval > 0",
                                file=self.source)
        return explicit

    def _init_test_nets(self):
        p = self.param
        nets = []
        for i, (source, where) in enumerate(self._test_sources()):
            if isinstance(source, str):
                field = "test_net" if where.startswith("test_net") else "net"
                file_state = self._net_file(source, field).state
            else:
                file_state = source.state
            extra = [p.test_state[i]] if p.test_state else []
            state = _merged_state(caffe_pb2.TEST, file_state, *extra)
            # Test nets run between training iterations, never during one: they borrow the
            # train net's scratch.
            net = self._build_net(source, state, f"test net (#{i}) specified by {where}",
                                  workspace=self.net.workspace)
            net.set_debug_info(p.debug_info or net.debug_info)
            nets.append(net)
        return nets

    # ---- pycaffe API -------------------------------------------------------------------------
    @property
    def lr(self):
        """The learning rate the next update will use."""
        return self._policy(self.param, self.iter, self.current_step)[0]

    def set_action_function(self, action):
        """``action()`` returns "none", "stop" or "snapshot" (Caffe's SetActionFunction)."""
        self._action = action

    def add_callback(self, on_start, on_gradients_ready):
        """pycaffe's add_callback: two functions called around the gradient computation."""
        self._callbacks.append((on_start, on_gradients_ready))

    def share_weights(self, net):
        """Make ``net`` use the train net's weights (pycaffe's share_weights)."""
        net.share_with(self.net)

    def set_check_nan(self, flag):
        """Check every layer of the train and test nets for NaN/Inf (``train --check_nan``).

        Off (the default), only the loss is checked, after each forward.
        """
        self.check_nan = bool(flag)
        for net in [self.net] + self.test_nets:
            net.set_check_nan(flag)

    def close(self):
        """Stop the data layers' prefetch threads of the train and test nets."""
        _close_nets([self.net] + self.test_nets)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False

    # ---- the loop ----------------------------------------------------------------------------
    def solve(self, resume_file=None):
        """Caffe's Solver::Solve: (restore,) step to max_iter, final snapshot, test, done.

        The nets' prefetch threads are stopped at the end (they restart on a later forward).
        """
        try:
            self._solve(resume_file)
        finally:
            self.close()

    def _solve(self, resume_file):
        p = self.param
        log.info("Solving %s", self.net.name)
        log.info("Learning Rate Policy: %s", p.lr_policy)
        self.requested_early_exit = False
        if resume_file:
            log.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self._scheduled_snapshot()
        if self.requested_early_exit:
            log.info("Optimization stopped early.")
            return
        if p.display and self.iter % p.display == 0:
            loss = f32(self._run(self.net, self.net.forward_from_to, "final forward"))
            self._update_smoothed_loss(loss, start_iter)
            log.info("Iteration %d, loss = %s", self.iter, fmt(self.smoothed_loss))
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        log.info("Optimization Done.")

    def step(self, iters):
        """Caffe's Solver::Step: ``iters`` iterations (fewer if a signal asks to stop)."""
        start_iter, stop_iter = self.iter, self.iter + iters
        self._losses = []
        self.smoothed_loss = f32(0)
        self._timer = time.perf_counter()
        self._iterations_last = self.iter
        # One BLAS setting for the whole run, not one switch per pass (protonet/threads.py).
        with threads.serial_blas():
            self._steps(start_iter, stop_iter)

    def _steps(self, start_iter, stop_iter):
        p = self.param
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if p.test_interval and self.iter % p.test_interval == 0 and \
                    (self.iter > 0 or p.test_initialization):
                self.test_all()
                if self.requested_early_exit:
                    break
            for on_start, _ in self._callbacks:
                on_start()
            display = bool(p.display) and self.iter % p.display == 0
            self.net.set_debug_info(display and self._train_debug)
            loss = f32(0)
            for _ in range(p.iter_size):
                loss += f32(self._run(self.net, self._forward_backward, "train"))
            loss /= f32(p.iter_size)
            self._update_smoothed_loss(loss, start_iter)
            if display:
                self._display()
            for _, on_gradients_ready in self._callbacks:
                on_gradients_ready()
            self.apply_update()
            request = self._action()
            if (p.snapshot and self.iter % p.snapshot == 0) or request == SNAPSHOT:
                self._scheduled_snapshot()
            if request == STOP:
                self.requested_early_exit = True
                break

    def _run(self, net, function, what):
        """``function()``; with check_nan, a ProtonetError gains the iteration (and net)."""
        if not self.check_nan:
            return function()
        try:
            return function()
        except ProtonetError as err:
            where = f"iteration {self.iter}" + ("" if what == "train" else f", {what}")
            raise ProtonetError(f"{where}: {err.message}", file=err.file, line=err.line,
                                layer=err.layer, layer_type=err.layer_type) from None

    def _forward_backward(self):
        loss = self.net.forward_from_to()
        if not np.isfinite(loss):
            self._fail_nonfinite(loss)
        self.net.full_backward()
        return loss

    def _fail_nonfinite(self, loss):
        record = first_nonfinite_layer(self.net)
        where = (f"; the first layer whose output is not finite is '{record.param.name}' "
                 f"({record.param.type})") if record is not None else ""
        raise ProtonetError(f"iteration {self.iter}: the loss is {loss}{where}. Training "
                            f"diverged: lower base_lr, set clip_gradients, or check the input "
                            f"data", file=self.source)

    def _update_smoothed_loss(self, loss, start_iter):
        average = self.param.average_loss
        if len(self._losses) < average:
            self._losses.append(loss)
            size = len(self._losses)
            self.smoothed_loss = (self.smoothed_loss * f32(size - 1) + loss) / f32(size)
        else:
            index = (self.iter - start_iter) % average
            self.smoothed_loss += (loss - self._losses[index]) / f32(average)
            self._losses[index] = loss

    def _display(self):
        p = self.param
        lapse = f32(time.perf_counter() - self._timer)
        per_s = f32(self.iter - self._iterations_last) / (lapse if lapse else f32(1))
        log.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s", self.iter, fmt(per_s),
                 fmt(lapse), p.display, fmt(self.smoothed_loss))
        self._timer = time.perf_counter()
        self._iterations_last = self.iter
        index = 0
        for name, blob, weight in self.net.loss_outputs():
            for value in blob.data.ravel():
                log.info("    Train net output #%d: %s = %s%s", index, name, fmt(value),
                         loss_note(weight, value))
                index += 1

    # ---- the update --------------------------------------------------------------------------
    def apply_update(self):
        """Caffe's SGDSolver::ApplyUpdate: lr, clip, normalise, regularise, rule, w −= diff."""
        p = self.param
        rate, self.current_step = self._policy(p, self.iter, self.current_step, log.info)
        if p.display and self.iter % p.display == 0:
            log.info("Iteration %d, lr = %s", self.iter, fmt(rate))
        self._clip_gradients()
        params = self.net.learnable_params
        count = len(params)
        sets = self.rule.history_sets
        # debug_info logs the steps before any weight moves, so then w −= diff waits.
        fused_apply = not self.net.debug_info
        for i, blob in enumerate(params):
            decay = f32(p.weight_decay) * f32(self.net.params_weight_decay[i])
            local_rate = rate * f32(self.net.params_lr[i])
            hist = [self.history[i + k * count].reshape(-1) for k in range(sets)]
            data, diff = blob.data.reshape(-1), blob.diff.reshape(-1)
            # Every step below is element-wise, so slicing gives the same numbers as whole
            # arrays, and a slice stays in cache from one operation to the next.
            for start in range(0, diff.size, updates.UPDATE_CHUNK):
                part = slice(start, start + updates.UPDATE_CHUNK)
                g = diff[part]
                scratch = tuple(a[:g.size] for a in self._scratch)
                if p.iter_size != 1:
                    g *= f32(1) / f32(p.iter_size)
                if decay:
                    self._regularize(data[part], g, decay, scratch[0])
                self.rule.compute(g, [h[part] for h in hist], scratch, local_rate,
                                  self._hyper, self.iter + 1)
                if fused_apply:
                    np.subtract(data[part], g, out=data[part])
        if not fused_apply:
            self.net.update_debug_info()
            for blob in params:
                np.subtract(blob.data, blob.diff, out=blob.data)
        self.iter += 1

    def _clip_gradients(self):
        # Caffe quirk: clipping sees the gradient summed over iter_size passes, before the
        # division by iter_size (sgd_solver.cpp ApplyUpdate), so the threshold scales with it.
        clip = f32(self.param.clip_gradients)
        if clip < 0:
            return
        params = self.net.learnable_params
        sumsq = f32(0)
        for blob in params:
            flat = blob.diff.ravel()
            sumsq += f32(np.dot(flat, flat))
        norm = np.sqrt(sumsq)
        if norm > clip:
            scale = clip / norm
            log.info("Gradient clipping: scaling down gradients (L2 norm %s > %s) by scale "
                     "factor %s", fmt(norm), fmt(clip), fmt(scale))
            for blob in params:
                blob.diff[...] *= scale

    # ---- testing -----------------------------------------------------------------------------
    def test_all(self):
        results = []
        for test_net_id in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            results.append(self.test(test_net_id))
        return results

    def test(self, test_net_id=0):
        """Run test net ``test_net_id`` for its test_iter batches; log and return the means."""
        p = self.param
        log.info("Iteration %d, Testing net (#%d)", self.iter, test_net_id)
        net = self.test_nets[test_net_id]
        net.share_with(self.net)
        batches = p.test_iter[test_net_id]
        scores, loss = None, f32(0)
        for _ in range(batches):
            request = self._action()
            while request != NONE:
                if request == SNAPSHOT:
                    self.snapshot()
                elif request == STOP:
                    self.requested_early_exit = True
                request = self._action()
            if self.requested_early_exit:
                break
            iter_loss = self._run(net, net.forward_from_to, f"test net #{test_net_id}")
            if p.test_compute_loss:
                loss += f32(iter_loss)
            values = np.concatenate([blob.data.ravel() for _, blob, _ in net.loss_outputs()]) \
                if net.outputs else np.zeros(0, np.float32)
            scores = values.astype(np.float32) if scores is None else scores + values
        if self.requested_early_exit:
            log.info("Test interrupted.")
            return None
        if p.test_compute_loss:
            loss /= f32(batches)
            log.info("Test loss: %s", fmt(loss))
        names = [(name, weight) for name, blob, weight in net.loss_outputs()
                 for _ in range(blob.count)]
        means = []
        for i, score in enumerate(scores if scores is not None else []):
            name, weight = names[i]
            mean = f32(score) / f32(batches)
            log.info("    Test net output #%d: %s = %s%s", i, name, fmt(mean),
                     loss_note(weight, mean))
            means.append((name, float(mean)))
        return means

    # ---- snapshots ---------------------------------------------------------------------------
    def snapshot(self):
        """Write the weights, then the solver state (and protonet's resume sidecar)."""
        p = self.param
        form = snap.FORMATS[p.snapshot_format]
        model_path = self._snapshot_filename(form.model_ext)
        form.write_model(self.net, model_path, p.snapshot_diff)
        state_path = self._snapshot_filename(form.state_ext)
        form.write_state(state_path, snap.SolverStateData(self.iter, model_path,
                                                          self.current_step, self.history))
        snap.write_sidecar(state_path, self.iter, self.rule.name, self.net, self.test_nets)
        return model_path, state_path

    def _scheduled_snapshot(self):
        """snapshot(), honouring ``snapshot_failure`` when it fails (a full disk, a read-only
        directory): "stop" re-raises (the previous snapshot is intact), "keep" logs and trains
        on, trying again at the next snapshot."""
        try:
            self.snapshot()
        except ProtonetError as err:
            if self.snapshot_failure != "keep":
                raise
            log.warning("Snapshot at iteration %d failed: %s; training goes on "
                        "(--snapshot_failure keep)", self.iter, err)

    def _learned_net_path(self, learned, state_file):
        if os.path.isfile(learned):
            return learned
        beside = os.path.join(os.path.dirname(os.fspath(state_file)), os.path.basename(learned))
        if os.path.isfile(beside):
            log.info("Weights file %s not found from the current directory; using %s", learned,
                     beside)
            return beside
        raise ProtonetError(f"the solver state names the weights file '{learned}', which does "
                            f"not exist (nor beside the solver state)", file=state_file)

    def restore(self, state_file):
        """Load a .solverstate(.h5): iteration, weights (its learned_net), history, step."""
        state_file = os.fspath(state_file)
        state = snap.read_state(state_file)
        expected = len(self.history)
        if len(state.history) != expected:
            raise ProtonetError(
                f"Incorrect length of history blobs: the solver state has {len(state.history)}, "
                f"a {self.rule.name} solver for this net needs {expected}. Is it a snapshot of "
                f"another net or of another solver type?", file=state_file)
        for i, (mine, theirs) in enumerate(zip(self.history, state.history)):
            if mine.size != theirs.size or _squeezed(mine.shape) != _squeezed(theirs.shape):
                raise ProtonetError(f"history blob {i} has shape {tuple(theirs.shape)}, this "
                                    f"net's param has {tuple(mine.shape)}: the snapshot is "
                                    f"from a different net", file=state_file)
        if state.learned_net:
            self.net.copy_from(self._learned_net_path(state.learned_net, state_file))
        self.iter = state.iter
        self.current_step = state.current_step
        log.info("SGDSolver: restoring history")
        for mine, theirs in zip(self.history, state.history):
            mine.reshape(-1)[...] = theirs.reshape(-1)
        snap.read_sidecar(state_file, state.iter, self.rule.name, self.net, self.test_nets)


def _close_nets(nets):
    for net in nets:
        net.close()


def _squeezed(shape):
    shape = tuple(shape)
    while shape and shape[0] == 1:
        shape = shape[1:]
    return shape


def loss_note(weight, value):
    """Caffe's suffix for an output with a loss weight: `` (* w = w·v loss)``."""
    if not weight:
        return ""
    return f" (* {fmt(weight)} = {fmt(f32(weight) * f32(value))} loss)"


class SGDSolver(Solver):
    type = "SGD"


class NesterovSolver(SGDSolver):
    type = "Nesterov"


class AdaGradSolver(SGDSolver):
    type = "AdaGrad"


class RMSPropSolver(SGDSolver):
    type = "RMSProp"


class AdaDeltaSolver(SGDSolver):
    type = "AdaDelta"


class AdamSolver(SGDSolver):
    type = "Adam"


SOLVERS = {cls.type: cls for cls in (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver,
                                     AdaDeltaSolver, AdamSolver)}


def get_solver(param, *, source=None):
    """The solver class named by the file's (or message's) ``type``, built (pycaffe get_solver).

    ``param`` is a solver prototxt path or a SolverParameter (``source`` then names its file in
    error messages).
    """
    if isinstance(param, caffe_pb2.SolverParameter):
        param = _upgraded_copy(param)
        source = os.fspath(source) if source is not None else None
    else:
        source = os.fspath(param)
        param = read_solver_param(source)
    if param.type not in SOLVERS:
        raise ProtonetError(f"unknown solver type '{param.type}'; type must be one of "
                            f"{', '.join(SOLVERS)}", file=source)
    return SOLVERS[param.type](param, source=source)
