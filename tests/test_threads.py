"""protonet's worker threads: pieces, ordered sums, split GEMMs, and thread-count independence."""

import threading

import numba
import numpy as np
import pytest
from google.protobuf import text_format

from protonet import threads
from protonet.blob import Blob
from protonet.layers import get_layer_class
from protonet.proto import caffe_pb2
from tests.helpers.threads import with_threads


@pytest.fixture
def two_threads():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 Numba threads")
    saved = numba.get_num_threads()
    numba.set_num_threads(2)
    yield
    numba.set_num_threads(saved)


def test_run_covers_every_piece_once_on_two_threads(two_threads):
    seen = []
    names = set()

    def task(i, lane):
        seen.append((i, lane))
        names.add(threading.current_thread().name)

    threads.run(task, 40)
    assert sorted(i for i, _ in seen) == list(range(40))
    assert {lane for _, lane in seen} <= {0, 1}
    assert len(names) >= 1


def test_one_piece_runs_alone_on_the_calling_thread(two_threads):
    calls = []
    threads.run(lambda i, lane: calls.append((i, lane, threading.current_thread())), 1)
    assert calls == [(0, None, threading.current_thread())]


def test_several_pieces_on_one_thread_run_as_lane_zero():
    # The same code path (and so the same arithmetic) as on worker threads, not the "alone"
    # path, which would split the pieces' GEMMs differently.
    calls = []
    with_threads(1, lambda: threads.run(lambda i, lane: calls.append((i, lane)), 3))
    assert calls == [(0, 0), (1, 0), (2, 0)]


def test_an_error_in_a_piece_reaches_the_caller_and_releases_ordered_waiters(two_threads):
    target = np.zeros(3)
    total = threads.OrderedSum(target)

    def task(i, lane):
        if i == 0:
            raise ValueError("piece 0 failed")
        total.add(i, np.ones(3))        # waits for piece 0, which never adds

    with pytest.raises(ValueError, match="piece 0 failed"):
        threads.run(task, 6, on_error=total.abandon)


def test_ordered_sum_adds_in_index_order_whatever_the_finishing_order():
    target = np.zeros(1, dtype=np.float32)
    total = threads.OrderedSum(target)
    # Values whose float32 sum depends on the order: big + small + (-big) + small ...
    parts = [np.float32(v) for v in (1e8, 3.0, -1e8, 5.0, 7.0)]
    expected = np.float32(0)
    for p in parts:
        expected = np.float32(expected + p)
    workers = [threading.Thread(target=total.add, args=(i, np.array([p])))
               for i, p in reversed(list(enumerate(parts)))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert target[0] == expected


@pytest.mark.parametrize("shape", [(16, 9216, 4096), (500, 64, 800), (64, 800, 500),
                                   (37, 91, 1003), (3, 4, 5)])
def test_split_matmul_is_bit_identical_to_numpy_for_any_thread_count(shape):
    m, k, n = shape
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((n, k), dtype=np.float32).T       # a transposed operand
    results = []
    for count in (1, numba.config.NUMBA_NUM_THREADS):
        out = np.full((m, n), np.nan, dtype=np.float32)
        with_threads(count, lambda: threads.matmul(a, b, out))
        results.append(out)
    with threads.serial_blas():
        expected = np.matmul(a, b)
    for out in results:
        np.testing.assert_array_equal(out, expected)


def test_serial_blas_restores_the_thread_count():
    libraries = threads._blas()
    before = [lib.get_num_threads() for lib in libraries]
    with threads.serial_blas():
        assert all(lib.get_num_threads() == 1 for lib in libraries)
        with threads.serial_blas():
            pass
        assert all(lib.get_num_threads() == 1 for lib in libraries)
    assert [lib.get_num_threads() for lib in libraries] == before


CONV = """name: "c" type: "Convolution" convolution_param {{ num_output: {out} kernel_size: {k}
  pad: {pad} stride: {stride} group: {group} weight_filler {{ type: "gaussian" std: 0.1 }}
  bias_filler {{ type: "constant" value: 0.2 }} }}"""


@pytest.mark.parametrize("spec", [
    dict(shape=(37, 4, 9, 9), out=6, k=3, pad=1, stride=1, group=2),      # batched
    dict(shape=(5, 3, 40, 40), out=4, k=5, pad=2, stride=2, group=1),     # per image
    dict(shape=(9, 8, 20, 20), out=8, k=1, pad=0, stride=1, group=1),     # 1x1
    dict(shape=(7, 32, 8, 8), out=32, k=5, pad=2, stride=1, group=1),     # row layout
    dict(shape=(2, 32, 8, 8), out=32, k=5, pad=2, stride=1, group=1, one_chunk=True),
    # Several chunks whose GEMMs are big enough to be split if they ran alone.
    dict(shape=(8, 32, 32, 32), out=64, k=3, pad=1, stride=1, group=1, cap=600000),
    # One chunk for the whole batch: its GEMMs are split over the threads instead.
    dict(shape=(2, 64, 30, 30), out=96, k=3, pad=1, stride=1, group=1, one_chunk=True),
])
def test_convolution_is_bit_identical_on_one_and_all_threads(spec, monkeypatch):
    # Small col buffers give many chunks, so the threads really share the batch.
    spec = dict(spec)
    one_chunk = spec.pop("one_chunk", False)
    monkeypatch.setattr("protonet.layers.vision.conv.COL_BUFFER_MAX_ELEMENTS",
                        spec.pop("cap", 1 << 24 if one_chunk else 2000))
    rng = np.random.default_rng(4)
    x = rng.standard_normal(spec["shape"], dtype=np.float32)
    results = []
    for count in (1, numba.config.NUMBA_NUM_THREADS):
        def run():
            param = text_format.Parse(CONV.format(**spec), caffe_pb2.LayerParameter())
            numba_rng = np.random.default_rng(0)
            layer = get_layer_class("Convolution")(param)
            bottom, top = Blob(x.shape), Blob((1,))
            bottom.data[...] = x
            layer.layer_setup([bottom], [top])
            layer.blobs[0].data[...] = numba_rng.standard_normal(layer.blobs[0].shape)
            layer.layer_forward([bottom], [top])
            top.diff[...] = numba_rng.standard_normal(top.shape)
            layer.blobs[0].diff[...] = 0.5      # the weight gradient accumulates onto this
            layer.layer_backward([top], [True], [bottom])
            assert (layer.chunk >= x.shape[0]) == one_chunk
            return top.data.copy(), bottom.diff.copy(), layer.blobs[0].diff.copy()
        results.append(with_threads(count, run))
    for one, many in zip(*results):
        np.testing.assert_array_equal(one, many)


def test_a_forked_child_gets_fresh_worker_threads(two_threads):
    import os

    threads.run(lambda i, lane: None, 4)          # the parent's pool exists now
    pid = os.fork()
    if pid == 0:                                  # child: pieces must still run
        import signal

        signal.signal(signal.SIGALRM, lambda *_: os._exit(3))   # a hang fails, not blocks
        signal.alarm(30)
        done = []
        try:
            threads.run(lambda i, lane: done.append(i), 6)
            os._exit(0 if sorted(done) == list(range(6)) else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("shape", [(4096, 16, 2304), (16, 700, 64), (3, 4, 5), (500, 64, 800)])
def test_accumulating_matmul_adds_the_product_without_depending_on_threads(shape):
    m, k, n = shape
    rng = np.random.default_rng(2)
    a = rng.standard_normal((k, m), dtype=np.float32).T           # a transposed operand
    b = rng.standard_normal((k, n), dtype=np.float32)
    start = rng.standard_normal((m, n), dtype=np.float32)
    results = []
    for count in (1, numba.config.NUMBA_NUM_THREADS):
        out = start.copy()
        with_threads(count, lambda: threads.matmul(a, b, out, accumulate=True))
        results.append(out)
    np.testing.assert_array_equal(results[0], results[1])
    expected = start.astype(np.float64) + a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(results[0], expected, rtol=1e-4, atol=1e-4)
