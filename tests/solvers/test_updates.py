"""The six update rules and the regularizers against slow float64 references of Caffe's formulas."""

import math

import numpy as np
import pytest

from protonet.errors import ProtonetError
from protonet.proto import caffe_pb2
from protonet.solvers import updates
from tests.helpers.tolerances import KERNEL_ATOL, KERNEL_RTOL

MOMENTUM, MOMENTUM2, DELTA, RMS_DECAY = 0.9, 0.99, 1e-6, 0.95
RATE = 0.03
STEPS = 4


def reference_step(name, g, hist, t):
    """One update in float64 (CAFFE_REFERENCE §1.4); returns the step, updates ``hist``."""
    mu, r, d = MOMENTUM, RATE, DELTA
    if name == "SGD":
        hist[0] = mu * hist[0] + r * g
        return hist[0].copy()
    if name == "Nesterov":
        old = hist[0].copy()
        hist[0] = mu * hist[0] + r * g
        return (1 + mu) * hist[0] - mu * old
    if name == "AdaGrad":
        hist[0] = hist[0] + g * g
        return r * g / (np.sqrt(hist[0]) + d)
    if name == "RMSProp":
        hist[0] = RMS_DECAY * hist[0] + (1 - RMS_DECAY) * g * g
        return r * g / (np.sqrt(hist[0]) + d)
    if name == "AdaDelta":
        hist[0] = mu * hist[0] + (1 - mu) * g * g
        s = g * np.sqrt((hist[1] + d) / (hist[0] + d))
        hist[1] = mu * hist[1] + (1 - mu) * s * s
        return r * s
    if name == "Adam":
        hist[0] = mu * hist[0] + (1 - mu) * g
        hist[1] = MOMENTUM2 * hist[1] + (1 - MOMENTUM2) * g * g
        correction = math.sqrt(1 - MOMENTUM2 ** t) / (1 - mu ** t)
        return r * correction * hist[0] / (np.sqrt(hist[1]) + d)
    raise AssertionError(name)


def hyper(momentum=MOMENTUM):
    return updates.Hyper(caffe_pb2.SolverParameter(momentum=momentum, momentum2=MOMENTUM2,
                                                   delta=DELTA, rms_decay=RMS_DECAY))


@pytest.mark.parametrize("name", list(updates.RULES))
def test_rule_matches_float64_reference_over_several_steps(name):
    rng = np.random.default_rng(3)
    rule = updates.RULES[name]
    shape = (5, 7)
    ours = [np.zeros(shape, np.float32) for _ in range(rule.history_sets)]
    ref = [np.zeros(shape) for _ in range(rule.history_sets)]
    scratch = (np.empty(shape, np.float32), np.empty(shape, np.float32))
    hp = hyper(0.0 if name in ("AdaGrad", "RMSProp") else MOMENTUM)
    for t in range(1, STEPS + 1):
        g = rng.standard_normal(shape).astype(np.float32)
        expected = reference_step(name, g.astype(np.float64), ref, t)
        diff = g.copy()
        rule.compute(diff, ours, scratch, np.float32(RATE), hp, t)
        assert diff.dtype == np.float32
        np.testing.assert_allclose(diff, expected, rtol=KERNEL_RTOL, atol=KERNEL_ATOL,
                                   err_msg=f"{name} step {t}")
        for k, (a, b) in enumerate(zip(ours, ref)):
            np.testing.assert_allclose(a, b, rtol=KERNEL_RTOL, atol=KERNEL_ATOL,
                                       err_msg=f"{name} history {k} step {t}")


def test_adadelta_and_adam_keep_two_history_sets():
    assert {n: r.history_sets for n, r in updates.RULES.items()} == {
        "SGD": 1, "Nesterov": 1, "AdaGrad": 1, "RMSProp": 1, "AdaDelta": 2, "Adam": 2}


@pytest.mark.parametrize("kind, expected", [
    ("L2", lambda w, g, decay: g + decay * w),
    ("L1", lambda w, g, decay: g + decay * np.sign(w)),
])
def test_regularizers_add_decay_term_to_the_gradient(kind, expected):
    rng = np.random.default_rng(4)
    w = rng.standard_normal(20).astype(np.float32)
    w[3] = 0.0                       # sign(0) = 0, as caffe_cpu_sign
    g = rng.standard_normal(20).astype(np.float32)
    diff = g.copy()
    regularize = updates.check_regularizer(caffe_pb2.SolverParameter(regularization_type=kind))
    regularize(w, diff, np.float32(0.01), np.empty_like(w))
    np.testing.assert_allclose(diff, expected(w, g, 0.01), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


def test_unknown_regularization_type_is_an_error():
    with pytest.raises(ProtonetError, match="L2, L1"):
        updates.check_regularizer(caffe_pb2.SolverParameter(regularization_type="L3"))


@pytest.mark.parametrize("name, fields, message", [
    ("AdaGrad", {"momentum": 0.9}, "momentum cannot be used with AdaGrad"),
    ("RMSProp", {"momentum": 0.5}, "momentum cannot be used with RMSProp"),
    ("RMSProp", {"rms_decay": 1.0}, "rms_decay should lie between 0 and 1"),
])
def test_rule_checks_reject_caffe_forbidden_settings(name, fields, message):
    with pytest.raises(ProtonetError, match=message):
        updates.RULES[name].check(caffe_pb2.SolverParameter(**fields))


@pytest.mark.parametrize("name", list(updates.RULES))
@pytest.mark.parametrize("regularization", ["L2", "L1"])
def test_update_over_param_slices_equals_whole_arrays(tmp_path, monkeypatch, name,
                                                      regularization):
    # The solver updates params UPDATE_CHUNK elements at a time with one small scratch pair;
    # slices of 5 elements (params here have 6-48) must give the bit-identical weights that
    # whole-array updates give.
    from protonet.solvers import get_solver
    from tests.solvers.nets import write_workspace

    monkeypatch.chdir(tmp_path)
    momentum = "0" if name in ("AdaGrad", "RMSProp") else "0.9"
    path = write_workspace(".", type=f'"{name}"', momentum=momentum, max_iter="3",
                           snapshot="0", test_interval="0", test_iter=None, iter_size="2",
                           regularization_type=f'"{regularization}"')
    weights = {}
    for chunk in (5, 1 << 20):
        monkeypatch.setattr(updates, "UPDATE_CHUNK", chunk)
        solver = get_solver(path)
        assert all(a.size == min(chunk, 48) for a in solver._scratch)
        solver.solve()
        weights[chunk] = [b.data.copy() for b in solver.net.learnable_params]
    for small, whole in zip(weights[5], weights[1 << 20]):
        np.testing.assert_array_equal(small, whole, err_msg=name)
        assert not np.array_equal(small, 0)
