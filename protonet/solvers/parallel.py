"""A solver that trains as one rank of a data-parallel MPI job (see :mod:`protonet.distributed`).

``make_parallel_solver(param, world)`` builds the solver class the file's ``type`` names, with
:class:`ParallelSolverMixin` in front. Per rank it changes only what Caffe's multi-GPU training
changes (parallel.cpp, solver.cpp with ``Caffe::root_solver()``):

- set-up: every rank uses the same ``random_seed`` (rank 0 draws one when the file gives none),
  so data shuffles agree and the shards stay disjoint; only rank 0 builds test nets, loads the
  ``weights`` files and writes snapshots; rank 0's weights are broadcast to all, and each train
  net data layer gets its shard;
- each iteration: the gradient all-reduce (sum × 1/N) runs between the last backward pass and
  ``apply_update`` (pycaffe's ``add_callback`` hooks, as Caffe's NCCL class); with ``overlap``,
  backward runs layer by layer and each bucket's all-reduce starts as soon as its layers are
  done;
- signals: the "stop"/"snapshot" requests of all ranks are OR-ed every iteration (in a small
  all-reduce started before the forward pass), so every rank stops or snapshots at the same
  iteration; a request that arrives while rank 0 tests takes effect after the test;
- resume: every rank restores the same snapshot files, then the ranks check that their weights
  and solver history are bit-identical.
"""

import numpy as np

from .. import rng
from ..proto import caffe_pb2
from . import solver as base
from .signals import NONE, SNAPSHOT, STOP

log = base.log

_STOP_BIT, _SNAPSHOT_BIT = 1, 2
_TEST_FIELDS = ("test_net", "test_net_param", "test_iter", "test_state")


def _rank_param(param, world):
    """The SolverParameter rank ``world.rank`` builds its solver from."""
    mine = caffe_pb2.SolverParameter()
    mine.CopyFrom(param)
    if mine.random_seed < 0:
        seed = world.broadcast_object(int(np.random.default_rng().integers(2**31)) if
                                      world.is_root else None, "the random seed broadcast")
        mine.random_seed = seed
    if not world.is_root:
        for field in _TEST_FIELDS:
            mine.ClearField(field)
        mine.test_interval = 0
        mine.snapshot = 0
        mine.snapshot_after_train = False
        del mine.weights[:]         # rank 0 loads them and broadcasts the weights
    return mine


def _all_param_arrays(net):
    return [blob.data for blob in net.learnable_params]


class ParallelSolverMixin:
    """Put in front of a Solver class: that solver then trains as one rank of ``world``."""

    def __init__(self, param, *, world, source=None, bucket_bytes=None, overlap=True):
        from ..distributed import DEFAULT_BUCKET_BYTES, GradientReducer, shard_net

        self.world = world
        super().__init__(_rank_param(param, world), source=source)
        world.broadcast_arrays(_all_param_arrays(self.net), "the initial weights broadcast")
        # Rank 0 also drew fillers for its test nets: give every rank its RNG state, so that
        # layers drawing from the global RNG (a reshuffle at each pass) agree across ranks.
        rng.set_state(world.broadcast_object(rng.get_state(), "the RNG state broadcast"))
        sharded = shard_net(self.net, world.rank, world.size)
        self.reducer = GradientReducer(world, self.net, bucket_bytes or DEFAULT_BUCKET_BYTES)
        self.overlap = bool(overlap)
        self._passes = 0
        self._testing = False
        self._deferred = NONE
        self._control = None
        self._local_action = lambda: NONE
        super().set_action_function(self._agreed_action)
        self.add_callback(self._on_start, self._on_gradients_ready)
        log.info("Rank %d of %d: data layers sharded: %s; gradients: %s, overlap %s",
                 world.rank, world.size, ", ".join(sharded) or "none",
                 self.reducer.describe(), "on" if self.overlap else "off")

    # ---- each iteration ------------------------------------------------------------------------
    def _on_start(self):
        self._passes = 0
        self.world.where = f"iteration {self.iter}"
        self.reducer.start_iteration()
        request = self._deferred if self._deferred != NONE else self._local_action()
        self._deferred = NONE
        self._control = np.array([(request == STOP) * _STOP_BIT |
                                  (request == SNAPSHOT) * _SNAPSHOT_BIT], dtype=np.int32)
        self._control_request = self.world.iallreduce(self._control, self.world.MPI.BOR)

    def _forward_backward(self):
        """One forward/backward pass; the last pass of an iteration overlaps the all-reduce.

        Backward runs layer by layer (as Net.backward_from_to would) so that the buckets each
        layer completes start reducing while the layers below compute. With debug_info the
        solver's own pass runs (its per-layer lines and norms stay Caffe's), reduced after.
        """
        last = self._passes == self.param.iter_size - 1
        self._passes += 1
        net = self.net
        if net.debug_info or not (self.overlap and last):
            return super()._forward_backward()
        loss = net.forward_from_to()
        if not np.isfinite(loss):
            self._fail_nonfinite(loss)
        for i in range(len(net.records) - 1, -1, -1):
            net.backward_from_to(i, i)
            self.reducer.layer_done(i)
        return loss

    def _on_gradients_ready(self):
        self.reducer.finish()

    def _agreed_action(self):
        """The request all ranks agree on (called once per iteration; per test batch on rank 0)."""
        if self._testing:
            # Rank 0 between test batches: the other ranks wait in the next all-reduce, so the
            # request is kept for the next iteration's agreement.
            request = self._local_action()
            if request != NONE:
                self._deferred = request
            return NONE
        if self._control is None:
            return NONE
        self.world.wait([self._control_request], "the stop/snapshot agreement")
        flags = int(self._control[0])
        self._control = None
        if flags & _STOP_BIT:
            if flags & _SNAPSHOT_BIT:
                self.snapshot()
            return STOP
        return SNAPSHOT if flags & _SNAPSHOT_BIT else NONE

    # ---- pycaffe API, rank-aware ---------------------------------------------------------------
    def set_action_function(self, action):
        """``action()`` gives this rank's request; the solver acts on what all ranks agree."""
        self._local_action = action

    def test_all(self):
        self._testing = True
        try:
            return super().test_all()
        finally:
            self._testing = False

    def snapshot(self):
        """Rank 0 writes the snapshot; the other ranks write nothing (returns None there)."""
        if not self.world.is_root:
            return None
        paths = super().snapshot()
        self.world.last_snapshot = paths[1]
        return paths

    def restore(self, state_file):
        """Every rank restores (its copy of) the snapshot; then the ranks must agree bit for bit."""
        super().restore(state_file)
        self.world.check_identical(_all_param_arrays(self.net) + list(self.history),
                                   "restored weights and solver history")


_CLASSES = {}


def make_parallel_solver(param, world, *, source=None, bucket_bytes=None, overlap=True):
    """The solver for ``param`` (a SolverParameter) as rank ``world.rank`` of ``world``."""
    from ..errors import ProtonetError

    param = base._upgraded_copy(param)
    name = param.type
    if name not in base.SOLVERS:
        raise ProtonetError(f"unknown solver type '{name}'; type must be one of "
                            f"{', '.join(base.SOLVERS)}", file=source)
    cls = _CLASSES.get(name)
    if cls is None:
        parent = base.SOLVERS[name]
        cls = type(f"Parallel{parent.__name__}", (ParallelSolverMixin, parent), {})
        _CLASSES[name] = cls
    return cls(param, world=world, source=source, bucket_bytes=bucket_bytes, overlap=overlap)
