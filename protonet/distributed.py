"""Data-parallel training over MPI (mpi4py): one solver per rank, gradients averaged every step.

``mpirun -n N protonet train --solver S.prototxt`` (or ``protonet train --solver S
--distributed`` under any MPI launcher) runs N ranks. Each rank builds its own solver and train
net, reads a disjoint 1/N shard of the training data, and after every backward pass the ranks
sum their gradients with an MPI all-reduce and multiply them by 1/N before the update, as Caffe's
multi-GPU training does (parallel.cpp: ``ncclAllReduce`` then ``caffe_scal(1/solver_count)``).
N ranks with batch b therefore train as one solver with batch N·b.

The pieces:

- :class:`World`: the communicator, ``rank``/``size``, and every collective the training needs,
  each non-blocking and waited for with a deadline (``timeout`` seconds, default
  ``PROTONET_MPI_TIMEOUT`` or 600): a rank that waits longer logs a FATAL line saying which
  collective at which iteration stalled and calls ``MPI.COMM_WORLD.Abort``, so every rank stops.
  (When a rank is killed, MPI launchers such as MPICH's Hydra and Open MPI's mpirun already kill
  the others at once; the deadline covers a rank that hangs, and launchers that do not clean up.)
- :class:`GradientReducer`: the gradient all-reduce. Learnable params are grouped, in the order
  backward finishes them, into buckets of about ``bucket_bytes``; a bucket's ``Iallreduce``
  starts as soon as the backward of the last layer that touches its params has run, while the
  layers below still compute, and every bucket is waited for before the update.
- sharding: :func:`shard_net` gives every data layer its ``(rank, size)`` through the layer's
  optional ``set_shard(rank, size)``. The contract: with batch b, rank r reads, out of every
  N·b consecutive items of the layer's stream (file order, or the shuffled order, which every
  rank draws from the same seed), items r·b … r·b + b − 1. So at each iteration the N ranks
  together read exactly the items one solver with batch N·b reads, and rank r's batch is rows
  r·b … r·b + b − 1 of that solver's batch. A shard-aware ``get_position()`` reports the
  position of the next *global* batch, so every rank can resume from rank 0's snapshot.
- rank 0 alone logs (other ranks log only FATAL lines), tests and snapshots.

The solver side (what changes in the training step) lives in :mod:`protonet.solvers.parallel`;
:func:`train` is ``protonet train`` for N ranks.
"""

import contextlib
import os
import pickle
import sys
import tempfile
import time
import zlib

import numpy as np

from .errors import ProtonetError
from .log import get_logger, set_level

log = get_logger(__name__)
f32 = np.float32

DEFAULT_TIMEOUT = 600.0
DEFAULT_BUCKET_BYTES = 4 << 20
# Environment variables through which MPI launchers announce the job size (MPICH/Hydra and
# Intel MPI, Open MPI, MVAPICH).
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
# Wait loop: poll the requests, sleeping between polls from _POLL_MIN up to _POLL_MAX seconds.
_POLL_MIN, _POLL_MAX = 2e-5, 2e-3
# Before MPI_Abort: time for the launcher to forward this rank's last lines (Hydra drops output
# still in its pipes when it kills the job).
_ABORT_GRACE_SECONDS = 1.0
INSTALL_HINT = ("install the MPI extra: `pip install -e '.[mpi]'` (mpi4py and MPICH from the "
                "package index; `make install` does it)")


def launched_size():
    """The number of ranks an MPI launcher started this process with (1 if none did).

    Read from the launcher's environment, so it needs no MPI import: ``protonet train`` uses it
    to go distributed by itself under ``mpirun -n N`` with N > 1.
    """
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def timeout_from_env():
    value = os.environ.get("PROTONET_MPI_TIMEOUT", "")
    try:
        return float(value) if value else DEFAULT_TIMEOUT
    except ValueError:
        raise ProtonetError(f"PROTONET_MPI_TIMEOUT must be a number of seconds, got "
                            f"{value!r}") from None


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise ProtonetError(f"distributed training needs mpi4py and an MPI library ({err}); "
                            f"{INSTALL_HINT}") from None
    return MPI


# ---- the communicator ---------------------------------------------------------------------------
class World:
    """The ranks of one training job and the collectives it uses, all with a deadline.

    ``where`` (a short text such as "iteration 12") and ``last_snapshot`` are set by the solver
    so that a FATAL message can say where the job stopped and which snapshot is intact.
    """

    def __init__(self, comm=None, timeout=None):
        self.MPI = _import_mpi()
        self.comm = self.MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.timeout = timeout_from_env() if timeout is None else float(timeout)
        if self.timeout <= 0:
            raise ProtonetError(f"the MPI timeout must be positive, got {self.timeout} s")
        self.where = "start-up"
        self.last_snapshot = None

    @property
    def is_root(self):
        return self.rank == 0

    def __repr__(self):
        return f"World(rank={self.rank}, size={self.size})"

    # ---- waiting with a deadline --------------------------------------------------------------
    def wait(self, requests, what):
        """Complete ``requests`` (a list of MPI requests) or abort the job after the timeout."""
        test_all = self.MPI.Request.Testall
        if test_all(requests):
            return
        deadline = time.perf_counter() + self.timeout
        delay = _POLL_MIN
        while not test_all(requests):
            now = time.perf_counter()
            if now > deadline:
                self.fatal(f"no answer from the other ranks for {self.timeout:g} s in {what} "
                           f"({self.where}): a rank has died or hangs")
            time.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    def poke(self, requests):
        """Let MPI progress the pending ``requests`` (MPICH moves them only inside MPI calls)."""
        if requests:
            self.MPI.Request.Testall(requests)

    def fatal(self, message):
        """Log a FATAL line naming this rank and the intact snapshot, and abort every rank."""
        snapshot = (f"; the last snapshot, {self.last_snapshot}, was completely written and "
                    f"stays valid" if self.last_snapshot else "")
        log.critical("rank %d of %d: %s. Aborting all ranks%s.", self.rank, self.size, message,
                     snapshot)
        self.abort()

    def abort(self):
        """End every rank of the job (MPI_Abort), after flushing and a short grace period."""
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(_ABORT_GRACE_SECONDS)
        self.comm.Abort(1)

    # ---- collectives ---------------------------------------------------------------------------
    def iallreduce(self, array, op=None):
        """Start an in-place sum (or ``op``) of ``array`` over the ranks; returns the request."""
        return self.comm.Iallreduce(self.MPI.IN_PLACE, array,
                                    op=self.MPI.SUM if op is None else op)

    def broadcast_arrays(self, arrays, what):
        """Overwrite every array in ``arrays`` with rank 0's values (in place)."""
        requests = [self.comm.Ibcast(a, root=0) for a in arrays if a.size]
        self.wait(requests, what)

    def broadcast_object(self, value, what):
        """Rank 0's picklable ``value`` on every rank (length first, then the pickled bytes)."""
        payload = np.frombuffer(pickle.dumps(value), np.uint8) if self.is_root else None
        length = np.array([0 if payload is None else payload.size], np.int64)
        self.wait([self.comm.Ibcast(length, root=0)], what)
        if not self.is_root:
            payload = np.empty(int(length[0]), np.uint8)
        self.wait([self.comm.Ibcast(payload, root=0)], what)
        return value if self.is_root else pickle.loads(payload.tobytes())

    def barrier(self, what):
        self.wait([self.comm.Ibarrier()], what)

    def check_identical(self, arrays, what):
        """Abort unless ``arrays`` are bit for bit the same on every rank (a CRC32 per rank)."""
        crc = 0
        for array in arrays:
            crc = zlib.crc32(np.ascontiguousarray(array).view(np.uint8), crc)
        sums = np.array([crc, crc], dtype=np.int64)
        sums[1] = -sums[1]
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, sums, op=self.MPI.MAX)
        self.wait([request], f"the {what} consistency check")
        if sums[0] != -sums[1]:
            self.fatal(f"the {what} differ between ranks (CRC32 of this rank: {crc:#010x}); "
                       f"every rank must start from the same files")


def init_world(timeout=None, threads=True):
    """Start MPI; quiet the logs of every rank but 0; share the cores among local ranks.

    ``threads``: when the launcher put several ranks on one machine and the user did not set
    ``NUMBA_NUM_THREADS``, give each rank ``cores // local ranks`` Numba threads (at least 1),
    so the ranks do not oversubscribe the cores.
    """
    world = World(timeout=timeout)
    if not world.is_root:
        # Rank 0 alone logs, as Caffe's root solver; the others keep only FATAL lines.
        set_level("CRITICAL")
    if threads:
        _share_cores(world)
    return world


def _share_cores(world):
    local = world.comm.Split_type(world.MPI.COMM_TYPE_SHARED)
    local_size = local.Get_size()
    local.Free()
    if local_size <= 1 or "NUMBA_NUM_THREADS" in os.environ:
        return
    import numba

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)
    per_rank = max(1, cores // local_size)
    numba.set_num_threads(min(per_rank, numba.config.NUMBA_NUM_THREADS))
    log.info("%d ranks on this machine with %d cores: %d Numba thread(s) per rank (set "
             "NUMBA_NUM_THREADS and OMP_NUM_THREADS to choose)", local_size, cores,
             numba.get_num_threads())


# ---- sharding -----------------------------------------------------------------------------------
# Built-in layers that read files or arrays: each must read its own shard, or the ranks would all
# train on the same batches. DummyData and Input hold no data set and need no shard.
FILE_BACKED_TYPES = ("Data", "ImageData", "HDF5Data", "WindowData", "MemoryData")


def shard_skips(rank, size, batch_size):
    """(items to skip before, items to skip after) rank ``rank``'s ``batch_size`` items.

    Out of every ``size · batch_size`` consecutive items of a data stream, rank r reads the
    r-th run of ``batch_size``; a data layer skips ``before`` items, reads its batch, then skips
    ``after`` items.
    """
    return rank * batch_size, (size - 1 - rank) * batch_size


def shard_net(net, rank, size):
    """Give every data layer of ``net`` its shard ``(rank, size)``; returns the sharded names.

    A layer with a ``set_shard(rank, size)`` method gets it called. A built-in file-backed data
    layer without one is an error; a Python data layer without one (for example one that makes
    random data) gets a warning, since every rank would then read the same items.
    """
    sharded = []
    for record in net.records:
        layer = record.layer
        if record.bottoms:
            continue
        if callable(getattr(layer, "set_shard", None)):
            layer.set_shard(rank, size)
            sharded.append(record.param.name)
        elif record.param.type in FILE_BACKED_TYPES:
            raise ProtonetError(f"this {record.param.type} layer cannot read a 1/{size} shard "
                                f"of its data (it has no set_shard(rank, size)); every rank "
                                f"would train on the same batches",
                                layer=record.param.name, layer_type=record.param.type)
        elif record.param.type == "Python" and record.tops:
            log.warning("Python layer '%s' has no set_shard(rank, size): all %d ranks read the "
                        "same items from it", record.param.name, size)
    return sharded


# ---- the gradient all-reduce --------------------------------------------------------------------
class _Bucket:
    """A group of learnable params reduced together in one flat float32 buffer.

    A bucket with a single param reduces that param's diff in place (no copy).
    """

    def __init__(self, blobs):
        self.blobs = blobs
        sizes = [b.diff.size for b in blobs]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.buffer = np.empty(int(self.offsets[-1]), np.float32) if len(blobs) > 1 else None
        self.request = None

    @property
    def nbytes(self):
        return int(self.offsets[-1]) * 4

    def start(self, world):
        if self.buffer is None:
            self.request = world.iallreduce(self.blobs[0].diff.reshape(-1))
            return
        for blob, lo, hi in zip(self.blobs, self.offsets[:-1], self.offsets[1:]):
            np.copyto(self.buffer[lo:hi], blob.diff.reshape(-1))
        self.request = world.iallreduce(self.buffer)

    def finish(self, scale):
        """Write the reduced sum × ``scale`` back into the param diffs."""
        self.request = None
        if self.buffer is None:
            diff = self.blobs[0].diff
            np.multiply(diff, scale, out=diff)
            return
        for blob, lo, hi in zip(self.blobs, self.offsets[:-1], self.offsets[1:]):
            np.multiply(self.buffer[lo:hi], scale, out=blob.diff.reshape(-1))


def _ready_layer(net):
    """For each learnable param, the lowest index of a layer that uses it.

    Backward runs from the last layer down, so a param's gradient is complete once the backward
    of that layer has run (a param shared by several layers collects from all of them).
    """
    ready = [len(net.records)] * len(net.learnable_params)
    position = 0
    for index, record in enumerate(net.records):
        for _ in record.layer.blobs:
            owner = net.param_owners[position]
            ready[owner] = min(ready[owner], index)
            position += 1
    return ready


class GradientReducer:
    """Averages the learnable params' diffs over the ranks, in buckets, overlapping backward.

    Per iteration: ``start_iteration()``; during the last backward pass ``layer_done(i)`` after
    layer i's backward (starts the buckets that layer completes); then ``finish()`` (starts the
    rest, waits for all, writes sum × 1/N into the diffs). Params with ``lr_mult: 0`` are not
    reduced: their diffs are never used (Caffe computes none for them). ``stats`` holds the
    seconds spent packing and starting (``launch``), blocked waiting (``wait``) and unpacking
    (``unpack``), summed over iterations.
    """

    def __init__(self, world, net, bucket_bytes=DEFAULT_BUCKET_BYTES):
        self.world = world
        self.scale = f32(1.0 / world.size)     # Caffe: Dtype(1.0 / solver_count)
        ready = _ready_layer(net)
        order = sorted((i for i, blob in enumerate(net.learnable_params)
                        if net.params_lr[i] != 0 and blob.count),
                       key=lambda i: (-ready[i], i))
        self.buckets, self.launch_after = [], {}
        group, group_bytes = [], 0
        for i in order + [None]:
            blob = None if i is None else net.learnable_params[i]
            if group and (blob is None or group_bytes + blob.count * 4 > bucket_bytes):
                bucket = _Bucket([net.learnable_params[k] for k in group])
                self.launch_after.setdefault(min(ready[k] for k in group), []).append(bucket)
                self.buckets.append(bucket)
                group, group_bytes = [], 0
            if blob is not None:
                group.append(i)
                group_bytes += blob.count * 4
        self.stats = {"launch": 0.0, "wait": 0.0, "unpack": 0.0, "iterations": 0}
        self._inflight = []

    def describe(self):
        sizes = ", ".join(f"{b.nbytes / 1024:.0f}" for b in self.buckets)
        return f"{len(self.buckets)} bucket(s) of [{sizes}] KiB"

    def start_iteration(self):
        self._inflight = []

    def layer_done(self, index):
        """Layer ``index``'s backward has run: start the buckets it completes; progress MPI."""
        buckets = self.launch_after.get(index)
        if buckets is None:
            self.world.poke(self._inflight)
            return
        start = time.perf_counter()
        for bucket in buckets:
            bucket.start(self.world)
            self._inflight.append(bucket.request)
        self.stats["launch"] += time.perf_counter() - start

    def finish(self):
        """Start what has not started, wait for every bucket, write the averaged diffs."""
        clock = time.perf_counter
        start = clock()
        for bucket in self.buckets:
            if bucket.request is None:
                bucket.start(self.world)
                self._inflight.append(bucket.request)
        launched = clock()
        self.world.wait(self._inflight, "the gradient all-reduce")
        waited = clock()
        for bucket in self.buckets:
            bucket.finish(self.scale)
        self._inflight = []
        self.stats["launch"] += launched - start
        self.stats["wait"] += waited - launched
        self.stats["unpack"] += clock() - waited
        self.stats["iterations"] += 1

    def seconds_per_iteration(self):
        """Communication seconds per iteration: pack/start + blocked waiting + unpack."""
        n = max(self.stats["iterations"], 1)
        return (self.stats["launch"] + self.stats["wait"] + self.stats["unpack"]) / n


# ---- snapshots on every rank ----------------------------------------------------------------------
def snapshot_files(state_file):
    """The files a resume reads: the solver state, its weights file and protonet's sidecar."""
    from .solvers import snapshot as snap

    state_file = os.fspath(state_file)
    files = [state_file]
    learned = snap.read_state(state_file).learned_net
    if learned:
        beside = os.path.join(os.path.dirname(state_file), os.path.basename(learned))
        files.append(learned if os.path.isfile(learned) else beside)
    sidecar = state_file + snap.SIDECAR_SUFFIX
    if os.path.isfile(sidecar):
        files.append(sidecar)
    return files


def share_snapshot(world, state_file):
    """Rank 0's snapshot files, copied to every other rank; returns the state file to restore.

    Rank 0 reads the files and broadcasts their bytes; the other ranks write them under one
    temporary folder with their original names (a solver state finds its weights file beside
    it), so a resume needs the snapshot on rank 0's machine only.
    """
    payload = None
    if world.is_root:
        payload = []
        for path in snapshot_files(state_file):
            if not os.path.isfile(path):
                raise ProtonetError("a file of the snapshot to resume is missing", file=path)
            with open(path, "rb") as f:
                payload.append((os.path.basename(path), f.read()))
    payload = world.broadcast_object(payload, "the snapshot broadcast")
    if world.is_root:
        return os.fspath(state_file)
    folder = tempfile.mkdtemp(prefix=f"protonet-rank{world.rank}-")
    for name, data in payload:
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    return os.path.join(folder, payload[0][0])


# ---- protonet train, N ranks ----------------------------------------------------------------------
@contextlib.contextmanager
def abort_on_error(world):
    """Any error on this rank: print it with the rank's number, then abort every rank.

    Without this, the other ranks would wait in their next collective until the timeout. A
    ProtonetError prints on one line as the CLI prints it; anything else (a bug) with its
    traceback.
    """
    try:
        yield
    except ProtonetError as err:
        print(f"protonet: error: rank {world.rank} of {world.size}: {err}", file=sys.stderr,
              flush=True)
        world.abort()
    except Exception:   # a bug: reported with its traceback, then every rank stops
        log.critical("rank %d of %d: unexpected error; aborting all ranks", world.rank,
                     world.size, exc_info=True)
        world.abort()


def train(solver_path, weights=None, snapshot=None, iterations=None, sigint_effect="stop",
          sighup_effect="snapshot", level=0, stages=(), sigterm_effect="stop", check_nan=False,
          timeout=None, bucket_bytes=DEFAULT_BUCKET_BYTES, overlap=True, world=None):
    """``protonet train`` on every rank of an MPI job; returns the solver when done.

    The arguments are :func:`protonet.commands.train`'s, plus ``timeout`` (seconds a rank waits
    in a collective before aborting the job), ``bucket_bytes`` and ``overlap`` (start each
    bucket's all-reduce during backward, or all of them after it). Any error on any rank is
    printed with the rank's number and aborts every rank, so none is left waiting.
    """
    world = init_world(timeout) if world is None else world
    with abort_on_error(world):
        return _train(world, solver_path, weights, snapshot, iterations,
                      (sigint_effect, sighup_effect, sigterm_effect), level, stages, check_nan,
                      bucket_bytes, overlap)


def _train(world, solver_path, weights, snapshot, iterations, effects, level, stages, check_nan,
           bucket_bytes, overlap):
    from .commands import read_train_solver
    from .solvers.parallel import make_parallel_solver
    from .solvers.signals import SignalHandler

    param = read_train_solver(solver_path, weights, snapshot, iterations, level, stages)
    with SignalHandler(*effects) as signals:
        log.info("Use CPU.")
        log.info("Data-parallel training on %d MPI ranks (MPI: %s)", world.size,
                 world.MPI.Get_library_version().splitlines()[0].strip())
        solver = make_parallel_solver(param, world, source=solver_path,
                                      bucket_bytes=bucket_bytes, overlap=overlap)
        solver.set_action_function(signals.check)
        solver.set_check_nan(check_nan)
        if snapshot:
            log.info("Resuming from %s", snapshot)
            snapshot = share_snapshot(world, snapshot)
        log.info("Starting Optimization")
        solver.solve(resume_file=snapshot)
        log.info("Optimization Done.")
        world.where = "the end of training"
        world.barrier("the final barrier")
    return solver
