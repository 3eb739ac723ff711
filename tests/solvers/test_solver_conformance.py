"""Every solver case in ../shared/conformance/solvers, produced by BVLC Caffe, reproduced.

Per case (run inside the case directory, snapshots redirected to tmp_path): train 10 iterations
from init.caffemodel → the losses match losses.json, the weights match ref_iter_10, our
snapshots at 5 and 10 hold Caffe's iteration, current_step and history; then restore Caffe's
ref_iter_5 solverstate and train to 10 → the weights match resumed_iter_10.
"""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from protonet.io.prototxt import read_solver
from protonet.proto import caffe_pb2
from protonet.solvers import get_solver
from protonet.solvers.snapshot import FORMATS, read_state
from tests.helpers.tolerances import SOLVER_ATOL_SCALE, SOLVER_RTOL, conformance_atol

SOLVER_CASES = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "solvers"
CASES = sorted(p.name for p in SOLVER_CASES.iterdir() if p.is_dir()) \
    if SOLVER_CASES.is_dir() else []


def assert_close(ours, ref, what):
    np.testing.assert_allclose(ours, ref, rtol=SOLVER_RTOL,
                               atol=conformance_atol(ref, SOLVER_ATOL_SCALE), err_msg=what)


def reference_weights(path):
    """{(layer, i): array} from a .caffemodel or .caffemodel.h5 written by Caffe."""
    path = str(path)
    if path.endswith(".h5"):
        with h5py.File(path, "r") as h5:
            return {(layer, int(i)): h5["data"][layer][i][...]
                    for layer in h5["data"] for i in h5["data"][layer]}
    net = caffe_pb2.NetParameter()
    net.ParseFromString(Path(path).read_bytes())
    return {(layer.name, i): np.asarray(blob.data, np.float32).reshape(tuple(blob.shape.dim))
            for layer in net.layer for i, blob in enumerate(layer.blobs)}


def assert_weights(net, ref_path):
    ref = reference_weights(ref_path)
    assert ref, f"{ref_path} holds no weights"
    for (layer, i), expected in ref.items():
        assert_close(net.params[layer][i].data, expected, f"{ref_path}: {layer}[{i}]")


def assert_state(ours_path, ref_path):
    ours, ref = read_state(ours_path), read_state(ref_path)
    assert (ours.iter, ours.current_step) == (ref.iter, ref.current_step), ref_path
    assert len(ours.history) == len(ref.history), ref_path
    for i, (a, b) in enumerate(zip(ours.history, ref.history)):
        assert a.shape == b.shape
        assert_close(a, b, f"{ref_path}: history {i}")


def case_solver(prefix, **fields):
    param = read_solver("solver.prototxt")
    param.snapshot_prefix = str(prefix)
    for name, value in fields.items():
        getattr(param, name).append(value) if name == "weights" else setattr(param, name, value)
    return get_solver(param)


@pytest.mark.skipif(not CASES, reason="../shared/conformance/solvers is not beside the checkout")
@pytest.mark.parametrize("case", CASES, ids=CASES)
def test_solver_matches_caffe_reference(case, tmp_path, monkeypatch):
    case_dir = SOLVER_CASES / case
    monkeypatch.chdir(case_dir)
    solver = case_solver(tmp_path / "ours", weights="init.caffemodel")
    losses = []
    solver.add_callback(lambda: None,
                        lambda: losses.append(float(solver.net.blobs["loss"].data)))
    solver.solve()
    expected = json.loads((case_dir / "losses.json").read_text())["loss_after_each_iteration"]
    assert_close(np.array(losses), np.array(expected), "losses")
    form = FORMATS[solver.param.snapshot_format]
    assert_weights(solver.net, case_dir / f"ref_iter_10{form.model_ext}")
    for n in (5, 10):
        assert_state(tmp_path / f"ours_iter_{n}{form.state_ext}",
                     case_dir / f"ref_iter_{n}{form.state_ext}")
        assert_weights_file = reference_weights(tmp_path / f"ours_iter_{n}{form.model_ext}")
        for key, value in reference_weights(case_dir / f"ref_iter_{n}{form.model_ext}").items():
            assert_close(assert_weights_file[key], value, f"snapshot {n}: {key}")

    resumed = case_solver(tmp_path / "resumed")
    resumed.solve(resume_file=f"ref_iter_5{form.state_ext}")
    assert resumed.iter == 10
    assert_weights(resumed.net, case_dir / f"resumed_iter_10{form.model_ext}")
