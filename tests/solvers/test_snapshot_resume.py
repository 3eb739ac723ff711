"""Snapshots and resume: file names and layouts, atomic writes, exact resume, user errors."""

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from protonet.errors import ProtonetError
from protonet.proto import caffe_pb2
from protonet.solvers import get_solver
from protonet.solvers.snapshot import SIDECAR_SUFFIX, read_state
from tests.solvers.nets import NET, write_workspace

FORMATS = {"BINARYPROTO": (".caffemodel", ".solverstate"),
           "HDF5": (".caffemodel.h5", ".solverstate.h5")}


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def weights(solver):
    return [blob.data.copy() for blob in solver.net.learnable_params]


def solve(prefix="snap/tiny", resume=None, **fields):
    path = write_workspace(".", snapshot_prefix=f'"{prefix}"', **fields)
    solver = get_solver(path)
    solver.solve(resume_file=resume)
    return solver


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_resume_from_protonet_snapshot_is_bit_identical(workspace, fmt):
    model_ext, state_ext = FORMATS[fmt]
    whole = solve("snap/a", snapshot_format=fmt)
    resumed = solve("snap/b", resume=f"snap/a_iter_4{state_ext}", snapshot_format=fmt)
    assert resumed.iter == whole.iter == 8
    for ours, ref in zip(weights(resumed), weights(whole)):
        np.testing.assert_array_equal(ours, ref)
    for ours, ref in zip(resumed.history, whole.history):
        np.testing.assert_array_equal(ours, ref)
    assert os.path.isfile(f"snap/b_iter_8{model_ext}")


def test_caffe_solverstate_without_sidecar_restarts_the_data(workspace):
    whole = solve("snap/a")
    os.remove("snap/a_iter_4.solverstate" + SIDECAR_SUFFIX)
    path = write_workspace(".", snapshot_prefix='"snap/c"')
    resumed = get_solver(path)
    resumed.restore("snap/a_iter_4.solverstate")
    assert resumed.iter == 4
    assert resumed.net.layer_dict["data"].cursor == 0        # as Caffe: from the first record
    resumed.solve()
    assert any(not np.array_equal(a, b) for a, b in zip(weights(resumed), weights(whole)))


def test_a_stale_sidecar_is_ignored(workspace):
    solve("snap/a")
    sidecar = "snap/a_iter_4.solverstate" + SIDECAR_SUFFIX
    os.replace("snap/a_iter_8.solverstate" + SIDECAR_SUFFIX, sidecar)
    resumed = get_solver(write_workspace(".", snapshot_prefix='"snap/c"'))
    resumed.restore("snap/a_iter_4.solverstate")
    assert resumed.net.layer_dict["data"].cursor == 0


def test_snapshot_writes_model_then_state_atomically(workspace, capsys):
    solver = solve("snap/tiny")
    lines = capsys.readouterr().err.splitlines()
    model = next(i for i, l in enumerate(lines)
                 if "Snapshotting to binary proto file snap/tiny_iter_4.caffemodel" in l)
    state = next(i for i, l in enumerate(lines) if "Snapshotting solver state to binary proto "
                 "file snap/tiny_iter_4.solverstate" in l)
    assert model < state
    assert sorted(os.listdir("snap")) == sorted(
        f"tiny_iter_{n}{ext}" for n in (4, 8)
        for ext in (".caffemodel", ".solverstate", ".solverstate" + SIDECAR_SUFFIX))
    proto = caffe_pb2.SolverState()
    proto.ParseFromString(Path("snap/tiny_iter_8.solverstate").read_bytes())
    assert (proto.iter, proto.learned_net, proto.current_step) == (
        8, "snap/tiny_iter_8.caffemodel", 2)
    assert len(proto.history) == 2 * len(solver.net.learnable_params)     # Adam: m then v
    for blob, history, second in zip(solver.net.learnable_params, proto.history[:4],
                                     proto.history[4:]):
        assert tuple(history.shape.dim) == tuple(second.shape.dim) == blob.shape
    net = caffe_pb2.NetParameter()
    net.ParseFromString(Path("snap/tiny_iter_8.caffemodel").read_bytes())
    np.testing.assert_array_equal(np.array(net.layer[1].blobs[0].data),
                                  solver.net.params["ip1"][0].data.ravel())


def test_hdf5_snapshot_has_caffe_layout(workspace):
    solver = solve("snap/tiny", snapshot_format="HDF5", type='"SGD"')
    with h5py.File("snap/tiny_iter_8.solverstate.h5", "r") as h5:
        assert h5["iter"].dtype == np.int32 and h5["iter"].shape == (1,)
        assert int(h5["iter"][0]) == 8 and int(h5["current_step"][0]) == 2
        assert h5["learned_net"][()] == b"snap/tiny_iter_8.caffemodel.h5"
        assert sorted(h5["history"], key=int) == [str(i) for i in range(4)]
        np.testing.assert_array_equal(h5["history"]["0"][...], solver.history[0])
    with h5py.File("snap/tiny_iter_8.caffemodel.h5", "r") as h5:
        np.testing.assert_array_equal(h5["data"]["ip2"]["0"][...],
                                      solver.net.params["ip2"][0].data)


@pytest.mark.parametrize("max_iter, after_train, expected", [
    ("6", None, {4, 6}),        # the final snapshot: the last iteration did not make one
    ("8", None, {4, 8}),        # no duplicate when the last iteration already snapshotted
    ("6", "false", {4}),        # snapshot_after_train: false
])
def test_final_snapshot_rule(workspace, max_iter, after_train, expected):
    solve("snap/tiny", max_iter=max_iter, snapshot_after_train=after_train)
    made = {int(name.split("_iter_")[1].split(".")[0]) for name in os.listdir("snap")}
    assert made == expected


def test_same_seed_same_data_gives_bit_identical_runs(workspace):
    first = weights(solve("snap/a"))
    second = weights(solve("snap/b"))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_unwritable_snapshot_prefix_fails_before_training(workspace):
    path = write_workspace(".", snapshot_prefix='"missing_dir/tiny"')
    with pytest.raises(ProtonetError, match="Cannot write to snapshot prefix 'missing_dir/tiny'"
                                            r"\. Make sure that the directory exists"):
        get_solver(path)


def test_restoring_a_caffemodel_says_to_use_weights(workspace):
    solve("snap/a")
    solver = get_solver(write_workspace(".", snapshot_prefix='"snap/b"'))
    with pytest.raises(ProtonetError, match="weights file, not a solver state"):
        solver.restore("snap/a_iter_4.caffemodel")


def test_restoring_another_solver_types_state_is_an_error(workspace):
    solve("snap/a")                                  # Adam: 8 history blobs
    solver = get_solver(write_workspace(".", snapshot_prefix='"snap/b"', type='"SGD"'))
    with pytest.raises(ProtonetError, match="Incorrect length of history blobs"):
        solver.restore("snap/a_iter_4.solverstate")


def test_restoring_a_snapshot_of_another_net_is_an_error(workspace):
    solve("snap/a")
    other = NET.replace("num_output: 8", "num_output: 5")
    solver = get_solver(write_workspace(".", net_text=other, snapshot_prefix='"snap/b"'))
    with pytest.raises(ProtonetError, match="different net"):
        solver.restore("snap/a_iter_4.solverstate")


def test_learned_net_is_found_beside_the_state_when_run_elsewhere(workspace, monkeypatch):
    whole = solve("snap/a")
    os.mkdir("elsewhere")
    write_workspace("elsewhere", snapshot_prefix='"snap/b"')
    monkeypatch.chdir("elsewhere")
    resumed = get_solver("solver.prototxt")
    resumed.restore(os.path.join("..", "snap", "a_iter_8.solverstate"))
    assert read_state(os.path.join("..", "snap", "a_iter_8.solverstate")).iter == 8
    for a, b in zip(weights(resumed), weights(whole)):
        np.testing.assert_array_equal(a, b)


def test_resuming_with_another_solver_type_of_same_history_size_warns(workspace, capsys):
    solve("snap/a", type='"SGD"')
    solver = get_solver(write_workspace(".", snapshot_prefix='"snap/b"', type='"Nesterov"'))
    capsys.readouterr()
    solver.restore("snap/a_iter_4.solverstate")
    assert "was written by a SGD solver; resuming it with Nesterov" in capsys.readouterr().err


def test_leftover_snapshot_temp_files_are_named_in_a_warning(workspace, capsys):
    os.makedirs("snap", exist_ok=True)
    Path("snap/tiny_iter_4.caffemodel.x1y2.tmp").write_bytes(b"half a file")
    solve("snap/tiny")
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if "interrupted snapshot" in line)
    assert warning.startswith("W") and "snap/tiny_iter_4.caffemodel.x1y2.tmp" in warning
