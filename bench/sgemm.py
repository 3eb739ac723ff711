"""This machine's roofline, measured in the same run as the layers: SGEMM and copy bandwidth.

- SGEMM: numpy float32 ``matmul`` (the BLAS numpy links, usually OpenBLAS) at a few large
  square shapes and at the GEMM shapes convolution and InnerProduct actually issue; best of
  several runs each. The reference rate a layer is compared with is the best of these.
- Copy bandwidth: ``np.copyto`` of a float32 array much larger than the caches, best of several
  runs, counted as bytes read + bytes written (STREAM's convention). numpy's copy runs on one
  thread; a two-thread Numba copy is measured beside it for information only.

Also reported, because they change the numbers: which BLAS kernel and how many threads run
(``threadpoolctl``, when installed), and whether ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` are
set (on these machines they select a slower GEMM kernel).
"""

import os
import time

import numpy as np

OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

# (label, M, K, N): C(M, N) = A(M, K) · B(K, N). Conv-like shapes are one image's GEMM.
FULL_SHAPES = (
    ("square 2048", 2048, 2048, 2048),
    ("square 4096", 4096, 4096, 4096),
    ("conv VGG conv3 (256x2304 · 2304x3136)", 256, 2304, 3136),
    ("conv ResNet res2 3x3 (64x576 · 576x3136)", 64, 576, 3136),
    ("fc CaffeNet fc6 batch 16 (16x9216 · 9216x4096)", 16, 9216, 4096),
    # The shallow-window convolutions (3 or fewer input channels) at a whole batch's width:
    # BLAS's own ceiling at the shapes those layers must multiply.
    ("conv LeNet conv1 batch 64 (20x25 · 25x36864)", 20, 25, 36864),
    ("conv CIFAR-10 conv1 batch 100 (32x75 · 75x102400)", 32, 75, 102400),
    ("conv VGG conv1_1 (64x27 · 27x50176)", 64, 27, 50176),
)
QUICK_SHAPES = (
    ("square 1024", 1024, 1024, 1024),
    ("conv ResNet res2 3x3 (64x576 · 576x3136)", 64, 576, 3136),
)


def openblas_environment():
    """{name: value or None} for the OpenBLAS variables that slow GEMM down on these machines."""
    return {name: os.environ.get(name) for name in OPENBLAS_VARIABLES}


def blas_info():
    """What threadpoolctl sees: one dict per native thread pool (BLAS, OpenMP), or a note."""
    try:
        import threadpoolctl
    except ImportError:
        return [{"note": "threadpoolctl not installed: BLAS kernel and threads unknown "
                         "(pip install threadpoolctl)"}]
    keys = ("user_api", "internal_api", "version", "architecture", "num_threads",
            "threading_layer", "prefix")
    return [{k: pool.get(k) for k in keys if k in pool}
            for pool in threadpoolctl.threadpool_info()]


def _best_seconds(fn, repeats):
    fn()                                   # warm-up: page faults, BLAS buffers, thread start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_sgemm(shapes, repeats, seed=0):
    """[{label, m, k, n, seconds, gflops}] for C = A · B in float32, best of ``repeats``."""
    rng = np.random.default_rng(seed)
    results = []
    for label, m, k, n in shapes:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        c = np.empty((m, n), dtype=np.float32)
        seconds = _best_seconds(lambda: np.matmul(a, b, out=c), repeats)
        results.append({"label": label, "m": m, "k": k, "n": n, "seconds": seconds,
                        "gflops": 2.0 * m * n * k / seconds / 1e9})
    return results


def measure_copy(n_elements, repeats):
    """GB/s of ``np.copyto`` between two float32 arrays of ``n_elements`` (read + write)."""
    src = np.ones(n_elements, dtype=np.float32)
    dst = np.zeros_like(src)
    seconds = _best_seconds(lambda: np.copyto(dst, src), repeats)
    return 2.0 * src.nbytes / seconds / 1e9


def measure_parallel_copy(n_elements, repeats):
    """GB/s of a Numba ``prange`` copy on all Numba threads (information only)."""
    from numba import njit, prange

    @njit(parallel=True)
    def copy(src, dst):
        for i in prange(src.shape[0]):
            dst[i] = src[i]

    src = np.ones(n_elements, dtype=np.float32)
    dst = np.zeros_like(src)
    seconds = _best_seconds(lambda: copy(src, dst), repeats)
    return 2.0 * src.nbytes / seconds / 1e9


def measure_machine(quick):
    """The reference numbers for one run: SGEMM per shape, best SGEMM, copy bandwidths."""
    import numba

    load_before = os.getloadavg()[0]
    shapes = QUICK_SHAPES if quick else FULL_SHAPES
    copy_elements = (32 << 20) if quick else (64 << 20)     # 128 MB / 256 MB per array
    repeats = 3 if quick else 5
    start = time.perf_counter()
    sgemm = measure_sgemm(shapes, repeats)
    copy = measure_copy(copy_elements, repeats)
    parallel_copy = measure_parallel_copy(copy_elements, repeats)
    return {
        "sgemm": sgemm,
        "sgemm_ref_gflops": max(r["gflops"] for r in sgemm),
        "copy_gbps": copy,
        "copy_array_mb": copy_elements * 4 / 2**20,
        "numba_copy_gbps": parallel_copy,
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": numba.threading_layer(),
        "load_average_before": load_before,
        "blas": blas_info(),
        "openblas_env": openblas_environment(),
        "seconds": time.perf_counter() - start,
    }
