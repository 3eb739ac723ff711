"""Worker threads for the GEMM-bound layers, with OpenBLAS held to one thread meanwhile.

numpy's OpenBLAS and Numba each keep a pool of threads. When a convolution alternates a
parallel Numba im2col with a 2-thread GEMM, each pool's threads spin or sleep while the other
works, and on a 2-core machine every small call pays both pools' hand-over (a convolution ran
barely faster on two threads than on one, and a busy machine made it 10x slower). protonet
instead splits a GEMM-bound layer into independent pieces (chunks of images, blocks of output
rows) and runs them on its own threads; each piece calls single-threaded BLAS and the
``_serial`` Numba kernels, which release the GIL. Numba's own pool runs the other layers
(pooling, ReLU, ...) between those calls, with passive waiting, so one pool works at a time.

- ``run(task, count)`` runs ``task(i, lane)`` for every piece on up to ``num_threads()``
  threads (the calling thread is one of them; ``lane`` numbers the thread, for per-thread
  scratch) and returns when all are done; pieces are handed out in increasing order. A single
  piece runs as ``task(0, None)`` on the calling thread: it may then split its own work over
  the threads (``matmul``). Whether a piece is alone depends on the shapes, never on the thread
  count, so each piece does the same arithmetic on any machine.
- ``OrderedSum`` adds per-piece partial results into one array in piece order, whichever
  thread finishes first, so a sum over pieces is bit-identical for any number of threads.
- ``matmul(a, b, out)`` is ``np.matmul`` for the 2-D GEMMs of the other layers
  (InnerProduct), cut into blocks of output rows or columns run as pieces.
- ``serial_blas()`` holds OpenBLAS to one thread (it restores the previous count); ``run``, the
  Net's forward and backward passes and a solver's steps hold it, so that OpenBLAS's own
  threads never wake up (once woken they spin for a while, on the cores the workers need).
  It needs ``threadpoolctl``; without it BLAS keeps its threads (correct, slower).

The thread count is Numba's (``NUMBA_NUM_THREADS``, ``numba.set_num_threads``), so one setting
governs all of protonet's parallelism.
"""

import contextlib
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

_executor = None
_executor_size = 0
_executor_lock = threading.Lock()


def num_threads():
    """Threads protonet computes with: Numba's current setting."""
    return numba.get_num_threads()


def _forget_workers():
    # A forked child has none of its parent's threads: start a fresh pool there on demand.
    global _executor, _executor_size
    _executor, _executor_size = None, 0


os.register_at_fork(after_in_child=_forget_workers)


def _workers(count):
    global _executor, _executor_size
    with _executor_lock:
        if _executor is None or _executor_size < count:
            if _executor is not None:
                _executor.shutdown(wait=False)
            _executor = ThreadPoolExecutor(max_workers=count, thread_name_prefix="protonet")
            _executor_size = count
        return _executor


def run(task, count, on_error=None):
    """Call ``task(i, lane)`` for i in 0..count-1 on the worker threads; re-raise the first
    error (after calling ``on_error()``, e.g. an OrderedSum's ``abandon``).

    Pieces must write disjoint memory (or go through an ``OrderedSum``).
    """
    threads = min(num_threads(), count)
    if threads <= 1:
        # Threaded BLAS may round differently: hold it to one thread here too.
        with serial_blas():
            for i in range(count):
                task(i, None if count == 1 else 0)
        return
    pieces = itertools.count()       # next() is atomic under the GIL
    failed = threading.Event()

    def lane(number):
        try:
            for i in pieces:
                if i >= count or failed.is_set():
                    return
                task(i, number)
        except BaseException:
            failed.set()
            if on_error is not None:
                on_error()
            raise

    with serial_blas():
        futures = [_workers(threads - 1).submit(lane, number) for number in range(1, threads)]
        errors = []
        try:
            lane(0)
        except BaseException as err:   # wait for the others before raising
            errors.append(err)
        for future in futures:
            try:
                future.result()
            except BaseException as err:
                errors.append(err)
    if errors:
        raise next((e for e in errors if not isinstance(e, _Abandoned)), errors[0])


class _Abandoned(Exception):
    """An OrderedSum whose earlier piece failed: this piece stops quietly."""


class OrderedSum:
    """``target += part`` for parts numbered 0, 1, 2, ..., applied strictly in that order.

    ``add(index, part)`` blocks until every lower-numbered part has been added. Pieces handed
    out in increasing order (as ``run`` does) always make progress. If a piece fails,
    ``abandon()`` releases the waiting threads.
    """

    def __init__(self, target):
        self.target = target
        self._next = 0
        self._abandoned = False
        self._turn = threading.Condition()

    def add(self, index, part):
        with self._turn:
            while self._next != index and not self._abandoned:
                self._turn.wait()
            if self._abandoned:
                raise _Abandoned()
            self.target += part
            self._next += 1
            self._turn.notify_all()

    def abandon(self):
        with self._turn:
            self._abandoned = True
            self._turn.notify_all()


_blas_libraries = None


def _blas():
    """threadpoolctl controllers of the loaded OpenBLAS libraries (empty without it)."""
    global _blas_libraries
    if _blas_libraries is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _blas_libraries = []
        else:
            controller = ThreadpoolController().select(internal_api="openblas")
            _blas_libraries = list(controller.lib_controllers)
    return _blas_libraries


@contextlib.contextmanager
def serial_blas():
    """Hold OpenBLAS to one thread inside the block (nested blocks cost two C calls)."""
    changed = []
    for library in _blas():
        threads = library.get_num_threads()
        if threads != 1:
            library.set_num_threads(1)
            changed.append((library, threads))
    try:
        yield
    finally:
        for library, threads in changed:
            library.set_num_threads(threads)


# Below this many multiply-adds a GEMM runs whole on the calling thread: handing it out costs
# more than it saves.
MATMUL_SPLIT_MIN = 1 << 20
# A split GEMM is cut into this many blocks of output rows (or columns), whatever the thread
# count, so the same sub-products are computed on any machine.
MATMUL_PIECES = 8


# With accumulate=True a block's product goes through this much per-thread scratch (elements)
# before it is added into ``out``, so it is added while still in cache.
ACCUMULATE_BLOCK = 1 << 18
_scratch = threading.local()


def _block_scratch(count):
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.size < count:
        buffer = _scratch.buffer = np.empty(max(count, ACCUMULATE_BLOCK), dtype=np.float32)
    return buffer[:count]


def matmul(a, b, out, accumulate=False):
    """out = a @ b (or out += a @ b with ``accumulate``, as a GEMM with beta 1) for 2-D
    arrays, in blocks of out's rows (or columns) on the worker threads.

    The blocks depend on the shapes alone (one thread runs them one after another) and BLAS
    runs single-threaded, so the result does not depend on the thread count. Accumulating
    needs no product-sized buffer: each block's product is added while in cache.
    """
    m, n = out.shape
    # Small products run whole; an accumulated one also needs its product to fit one block.
    if m * n * a.shape[1] < MATMUL_SPLIT_MIN and (not accumulate or m * n <= ACCUMULATE_BLOCK):
        with serial_blas():
            if not accumulate:
                np.matmul(a, b, out=out)
                return
            product = _block_scratch(m * n).reshape(m, n)
            np.matmul(a, b, out=product)
            out += product
        return
    by_rows = m >= n
    size = m if by_rows else n
    pieces = min(MATMUL_PIECES, size)
    if accumulate:
        pieces = max(pieces, min(size, -(-m * n // ACCUMULATE_BLOCK)))
    step = -(-size // pieces)

    def block(i, lane):
        lo, hi = i * step, min((i + 1) * step, size)
        a_part, b_part = (a[lo:hi], b) if by_rows else (a, b[:, lo:hi])
        target = out[lo:hi] if by_rows else out[:, lo:hi]
        if not accumulate:
            np.matmul(a_part, b_part, out=target)
            return
        product = _block_scratch(target.size).reshape(target.shape)
        np.matmul(a_part, b_part, out=product)
        target += product

    run(block, -(-size // step))
