"""Data-parallel training over MPI: each test launches ``mpiexec -n N`` on a tiny net.

The net reads a fixed synthetic data set through ``shard_data.ShardedArrayData`` (reshuffled at
each pass with protonet's global RNG), so N ranks × batch b and 1 rank × batch N·b see the same
samples at every iteration and must reach the same weights, up to float summation order.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from protonet import distributed
from protonet.solvers import get_solver
from tests.helpers.tolerances import KERNEL_ATOL, KERNEL_RTOL

REPO = Path(__file__).resolve().parents[2]
MPIEXEC = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
try:
    import mpi4py  # noqa: F401
    MPI_MISSING = None if MPIEXEC else "no mpiexec on PATH or in the venv"
except ImportError:
    MPI_MISSING = "mpi4py is not installed"
needs_mpi = pytest.mark.skipif(MPI_MISSING is not None,
                               reason=f"{MPI_MISSING}; {distributed.INSTALL_HINT}")

ITERATIONS = 12
SNAPSHOT_EVERY = 6
GLOBAL_BATCH = 8
JOB_SECONDS = 120       # a hung job fails the test instead of hanging CI
FAULT_BOUND_SECONDS = 30
HANG_TIMEOUT_SECONDS = 3


def write_job(folder, batch, fault=None, name="job"):
    """net + solver files for batch ``batch``; returns the solver path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    train = {"n": 40, "dim": 6, "batch": batch, "shuffle": True}
    if fault:
        train["fault"] = fault
    test = {"n": 40, "dim": 6, "batch": 8}
    net = f"""name: "tiny"
layer {{ name: "data" type: "Python" top: "data" top: "label" include {{ phase: TRAIN }}
  python_param {{ module: "tests.distributed.shard_data" layer: "ShardedArrayData"
    param_str: '{json.dumps(train)}' }} }}
layer {{ name: "data" type: "Python" top: "data" top: "label" include {{ phase: TEST }}
  python_param {{ module: "tests.distributed.shard_data" layer: "ShardedArrayData"
    param_str: '{json.dumps(test)}' }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
  inner_product_param {{ num_output: 8 weight_filler {{ type: "gaussian" std: 0.3 }}
    bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
  include {{ phase: TEST }} }}
"""
    (folder / f"{name}.prototxt").write_text(net)
    solver = folder / f"{name}_solver.prototxt"
    solver.write_text(f"""net: "{folder / f'{name}.prototxt'}"
base_lr: 0.1 momentum: 0.9 weight_decay: 0.0005 lr_policy: "step" gamma: 0.5 stepsize: 5
max_iter: {ITERATIONS} display: 4 test_interval: {SNAPSHOT_EVERY} test_iter: 2
snapshot: {SNAPSHOT_EVERY} snapshot_prefix: "{folder / name}" random_seed: 17
""")
    return solver


def run_ranks(ranks, out, solver, *extra, env=None):
    """``mpiexec -n ranks`` the test driver; returns (completed process, seconds)."""
    command = [MPIEXEC, "-n", str(ranks), sys.executable, "-m", "tests.distributed.run_rank",
               str(out), str(solver), *extra]
    environment = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    start = time.monotonic()
    done = subprocess.run(command, check=False, cwd=REPO, env=environment, capture_output=True,
                          text=True, timeout=JOB_SECONDS)
    return done, time.monotonic() - start


def rank_weights(out, rank):
    with np.load(Path(out) / f"rank{rank}.npz") as f:
        return [f[f"p{i}"] for i in range(len([k for k in f.files if k.startswith("p")]))]


def assert_ok(done):
    assert done.returncode == 0, f"mpiexec failed ({done.returncode}):\n{done.stderr[-4000:]}"


def reference_weights(folder):
    """1 rank × the global batch, the ordinary solver, in this process."""
    solver = get_solver(str(write_job(folder, GLOBAL_BATCH, name="reference")))
    solver.solve()
    return [blob.data.copy() for blob in solver.net.learnable_params]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return reference_weights(tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One 2-rank run with batch 4 (overlap on), shared by several tests."""
    folder = tmp_path_factory.mktemp("two_ranks")
    solver = write_job(folder, GLOBAL_BATCH // 2)
    done, _ = run_ranks(2, folder, solver)
    assert_ok(done)
    return folder, solver, done


# ---- without MPI ---------------------------------------------------------------------------------
def test_shard_skips_partition_every_global_batch_into_rank_runs():
    size, batch = 4, 3
    runs = []
    for rank in range(size):
        before, after = distributed.shard_skips(rank, size, batch)
        assert before + batch + after == size * batch
        runs.append(range(before, before + batch))
    assert [i for run in runs for i in run] == list(range(size * batch))


@pytest.mark.parametrize("variables, expected", [({}, 1), ({"PMI_SIZE": "4"}, 4),
                                                 ({"OMPI_COMM_WORLD_SIZE": "3"}, 3)])
def test_launched_size_reads_the_launchers_environment(monkeypatch, variables, expected):
    for name in distributed._SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert distributed.launched_size() == expected


# ---- N ranks ----------------------------------------------------------------------------------------
@needs_mpi
def test_two_ranks_match_one_rank_with_double_batch(two_ranks, reference):
    folder, _, _ = two_ranks
    for mine, theirs in zip(rank_weights(folder, 0), reference):
        np.testing.assert_allclose(mine, theirs, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


@needs_mpi
def test_weights_are_bit_identical_across_ranks(two_ranks):
    folder, _, _ = two_ranks
    for zero, one in zip(rank_weights(folder, 0), rank_weights(folder, 1)):
        np.testing.assert_array_equal(zero, one)


@needs_mpi
def test_rank_zero_alone_logs_tests_and_snapshots(two_ranks):
    folder, _, done = two_ranks
    assert done.stderr.count("Iteration 4 (") == 1
    assert done.stderr.count("Testing net (#0)") == 3       # iterations 0, 6 and 12
    assert done.stderr.count("Snapshotting solver state") == 2
    assert sorted(p.name for p in folder.glob("job_iter_*.solverstate")) == \
        ["job_iter_12.solverstate", "job_iter_6.solverstate"]


@needs_mpi
def test_four_ranks_with_small_buckets_and_no_overlap_match_one_rank(tmp_path, reference):
    solver = write_job(tmp_path, GLOBAL_BATCH // 4)
    done, _ = run_ranks(4, tmp_path, solver, "--no-overlap", "--bucket-bytes", "64")
    assert_ok(done)
    assert "4 bucket(s)" in done.stderr
    weights = [rank_weights(tmp_path, rank) for rank in range(4)]
    for mine, theirs in zip(weights[0], reference):
        np.testing.assert_allclose(mine, theirs, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    for other in weights[1:]:
        for zero, mine in zip(weights[0], other):
            np.testing.assert_array_equal(zero, mine)


@needs_mpi
def test_every_rank_resumes_from_rank_zero_snapshot_exactly(two_ranks, tmp_path):
    folder = two_ranks[0]
    solver = write_job(tmp_path, GLOBAL_BATCH // 2)
    done, _ = run_ranks(2, tmp_path, solver, "--snapshot", str(folder / "job_iter_6.solverstate"))
    assert_ok(done)
    assert "Restoring previous solver status" in done.stderr
    for rank in range(2):
        for resumed, straight in zip(rank_weights(tmp_path, rank), rank_weights(folder, 0)):
            np.testing.assert_array_equal(resumed, straight)


def assert_snapshot_valid(folder, name, reference_folder=None):
    """The iteration-6 snapshot restores; with a reference run, its weights match bit for bit."""
    solver = get_solver(str(Path(folder) / f"{name}_solver.prototxt"))
    solver.restore(str(Path(folder) / f"{name}_iter_6.solverstate"))
    assert solver.iter == SNAPSHOT_EVERY
    if reference_folder is not None:
        other = get_solver(str(Path(reference_folder) / "job_solver.prototxt"))
        other.restore(str(Path(reference_folder) / "job_iter_6.solverstate"))
        for mine, theirs in zip(solver.net.learnable_params, other.net.learnable_params):
            np.testing.assert_array_equal(mine.data, theirs.data)


@needs_mpi
def test_killed_rank_stops_the_others_and_leaves_the_snapshot_valid(tmp_path, two_ranks):
    fault = {"rank": 1, "iter": SNAPSHOT_EVERY + 2, "kind": "kill"}
    solver = write_job(tmp_path, GLOBAL_BATCH // 2, fault=fault, name="job")
    done, seconds = run_ranks(2, tmp_path, solver)
    assert done.returncode != 0
    assert seconds < FAULT_BOUND_SECONDS
    output = done.stdout + done.stderr
    assert "signal 9" in output.lower() or "killed" in output.lower(), output[-2000:]
    assert not (tmp_path / "job_iter_12.solverstate").exists()
    assert_snapshot_valid(tmp_path, "job", reference_folder=two_ranks[0])


@needs_mpi
def test_hung_rank_makes_the_others_abort_after_the_timeout(tmp_path):
    fault = {"rank": 1, "iter": SNAPSHOT_EVERY + 2, "kind": "hang"}
    solver = write_job(tmp_path, GLOBAL_BATCH // 2, fault=fault)
    done, seconds = run_ranks(2, tmp_path, solver,
                              env={"PROTONET_MPI_TIMEOUT": str(HANG_TIMEOUT_SECONDS)})
    assert done.returncode != 0
    assert HANG_TIMEOUT_SECONDS < seconds < FAULT_BOUND_SECONDS
    assert "rank 0 of 2: no answer from the other ranks for 3 s in the gradient all-reduce " \
           "(iteration 7): a rank has died or hangs" in done.stderr, done.stderr[-3000:]
    assert "job_iter_6.solverstate, was completely written and stays valid" in done.stderr
    assert_snapshot_valid(tmp_path, "job")


@needs_mpi
def test_error_on_one_rank_is_reported_with_its_rank_and_aborts_all(tmp_path):
    fault = {"rank": 1, "iter": 3, "kind": "error"}
    solver = write_job(tmp_path, GLOBAL_BATCH // 2, fault=fault)
    done, seconds = run_ranks(2, tmp_path, solver)
    assert done.returncode != 0
    assert seconds < FAULT_BOUND_SECONDS
    assert "protonet: error: rank 1 of 2:" in done.stderr
    assert "injected data error" in done.stderr


# ---- the built-in data layers' shards ---------------------------------------------------------------
def write_source(folder, kind):
    """The 40 samples of ShardedArrayData as an HDF5 list file or an LMDB; returns the layer."""
    x = np.random.default_rng(11).standard_normal((40, 6)).astype(np.float32)
    y = (np.arange(40) % 3).astype(np.float32)
    x[:, 0] += y
    if kind == "HDF5Data":
        import h5py

        with h5py.File(folder / "rows.h5", "w") as f:
            f["data"], f["label"] = x, y
        (folder / "rows.txt").write_text(f"{folder / 'rows.h5'}\n")
        return ('layer {{ name: "data" type: "HDF5Data" top: "data" top: "label" '
                f'hdf5_data_param {{{{ source: "{folder / "rows.txt"}" batch_size: {{batch}} '
                'shuffle: true }} }}')
    from protonet.data.datum import array_to_datum
    from protonet.data.db import LMDBWriter

    with LMDBWriter(folder / "rows_lmdb") as db:
        for i in range(40):
            db.put(f"{i:08d}", array_to_datum(x[i].reshape(6, 1, 1), int(y[i]))
                   .SerializeToString())
    return ('layer {{ name: "data" type: "Data" top: "data" top: "label" data_param {{ '
            f'source: "{folder / "rows_lmdb"}" backend: LMDB batch_size: {{batch}} }}}} }}}}')


def write_file_job(folder, layer, batch, name):
    body = layer.format(batch=batch) + """
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 8 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""
    (folder / f"{name}.prototxt").write_text(f'name: "{name}"\n{body}')
    solver = folder / f"{name}_solver.prototxt"
    solver.write_text(f'net: "{folder / f"{name}.prototxt"}"\nbase_lr: 0.1 momentum: 0.9 '
                      f'lr_policy: "fixed" max_iter: {ITERATIONS} display: 0 '
                      f'snapshot_after_train: false random_seed: 5\n')
    return solver


@needs_mpi
@pytest.mark.parametrize("kind", ["HDF5Data", "Data"])
def test_builtin_data_layer_shards_match_one_rank_with_double_batch(tmp_path, kind):
    layer = write_source(tmp_path, kind)
    reference = get_solver(str(write_file_job(tmp_path, layer, GLOBAL_BATCH, "reference")))
    reference.solve()
    done, _ = run_ranks(2, tmp_path, write_file_job(tmp_path, layer, GLOBAL_BATCH // 2, "job"))
    assert_ok(done)
    for rank in range(2):
        for mine, theirs in zip(rank_weights(tmp_path, rank), reference.net.learnable_params):
            np.testing.assert_allclose(mine, theirs.data, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


@needs_mpi
def test_mpiexec_protonet_train_runs_data_parallel(tmp_path):
    solver = write_job(tmp_path, GLOBAL_BATCH // 2)
    protonet = Path(sys.executable).parent / "protonet"
    done = subprocess.run([MPIEXEC, "-n", "2", str(protonet), "train", "--solver", str(solver)],
                          check=False, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=JOB_SECONDS)
    assert_ok(done)
    assert "Data-parallel training on 2 MPI ranks" in done.stderr
    assert done.stderr.count("Iteration 12, Testing net (#0)") == 1
    assert (tmp_path / "job_iter_12.solverstate").exists()
