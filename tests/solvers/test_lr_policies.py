"""Every lr policy against its formula (CAFFE_REFERENCE §1.4), and the policy checks."""

import math

import numpy as np
import pytest

from protonet.errors import ProtonetError
from protonet.proto import caffe_pb2
from protonet.solvers import lr_policies
from tests.helpers.tolerances import KERNEL_RTOL


def solver_param(**fields):
    param = caffe_pb2.SolverParameter(base_lr=0.05, gamma=0.8, power=0.75, stepsize=3,
                                      max_iter=20, **fields)
    param.stepvalue.extend([2, 5, 11])
    return param


def expected_rate(name, p, it):
    """The textbook formulas, in float64, with multistep counted from scratch."""
    reached = sum(1 for v in p.stepvalue if it >= v)
    return {
        "fixed": p.base_lr,
        "step": p.base_lr * p.gamma ** (it // p.stepsize),
        "exp": p.base_lr * p.gamma ** it,
        "inv": p.base_lr * (1 + p.gamma * it) ** (-p.power),
        "multistep": p.base_lr * p.gamma ** reached,
        "poly": p.base_lr * (1 - it / p.max_iter) ** p.power,
        "sigmoid": p.base_lr / (1 + math.exp(-p.gamma * (it - p.stepsize))),
    }[name]


@pytest.mark.parametrize("name", list(lr_policies.POLICIES))
def test_policy_follows_its_formula_over_a_run(name):
    p = solver_param(lr_policy=name)
    policy = lr_policies.check_policy(p)
    step = 0
    for it in range(p.max_iter):
        rate, step = policy(p, it, step)
        assert isinstance(rate, np.float32)
        np.testing.assert_allclose(rate, expected_rate(name, p, it), rtol=KERNEL_RTOL,
                                   err_msg=f"{name} at iteration {it}")


def test_multistep_logs_each_step_and_advances_once_per_call():
    p = solver_param(lr_policy="multistep")
    said = []
    step = 0
    for it in range(8):
        _, step = lr_policies.multistep(p, it, step, lambda fmt, *a: said.append(fmt % a))
    assert said == ["MultiStep Status: Iteration 2, step = 1",
                    "MultiStep Status: Iteration 5, step = 2"]
    # Resumed late with current_step 0: Caffe catches up one step per iteration.
    _, step = lr_policies.multistep(p, 12, 0)
    assert step == 1
    _, step = lr_policies.multistep(p, 13, step)
    assert step == 2


def test_step_policy_records_the_current_step():
    p = solver_param(lr_policy="step")
    assert lr_policies.step(p, 7, 0)[1] == 2


def test_unknown_policy_lists_the_valid_ones():
    with pytest.raises(ProtonetError, match="fixed, step, exp, inv, multistep, poly, sigmoid"):
        lr_policies.check_policy(solver_param(lr_policy="cosine"))
    with pytest.raises(ProtonetError, match="unknown learning rate policy none"):
        lr_policies.check_policy(caffe_pb2.SolverParameter(base_lr=0.1))


@pytest.mark.parametrize("name, fields, message", [
    ("step", {"stepsize": 0}, "stepsize must be > 0"),
    ("sigmoid", {"gamma": -1.0}, "gamma must be >= 0"),
    ("exp", {"gamma": -0.5}, "gamma must be >= 0"),
    ("poly", {"max_iter": 0}, "max_iter must be > 0"),
])
def test_policy_checks_fail_before_training(name, fields, message):
    p = solver_param(lr_policy=name)
    for key, value in fields.items():
        setattr(p, key, value)
    with pytest.raises(ProtonetError, match=message):
        lr_policies.check_policy(p)
