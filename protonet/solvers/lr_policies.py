"""Learning-rate policies: ``lr_policy`` name → a small function (Caffe's GetLearningRate).

Each policy is ``policy(param, iter, current_step, say) -> (rate, current_step)``: ``param`` is
the SolverParameter, ``iter`` the number of updates done so far, ``current_step`` the position
that ``step`` and ``multistep`` keep in the solverstate, ``say`` a logging function (multistep
reports when it moves on). Rates are float32, as Caffe's ``Dtype rate``.

    fixed      base_lr
    step       base_lr · gamma^⌊iter / stepsize⌋
    exp        base_lr · gamma^iter
    inv        base_lr · (1 + gamma · iter)^(−power)
    multistep  base_lr · gamma^k, k = number of stepvalues reached (one more per call at most)
    poly       base_lr · (1 − iter / max_iter)^power
    sigmoid    base_lr / (1 + exp(−gamma · (iter − stepsize)))

:data:`CHECKS` lists, per policy, the conditions Caffe CHECKs; :func:`check_policy` turns a
failed one (or an unknown name) into a ProtonetError before training starts.
"""

import math

import numpy as np

from ..errors import ProtonetError

f32 = np.float32


def _quiet(*args):
    pass


def fixed(p, it, step, say=_quiet):
    return f32(p.base_lr), step


def step(p, it, step, say=_quiet):
    step = it // p.stepsize
    return f32(p.base_lr * math.pow(p.gamma, step)), step


def exp(p, it, step, say=_quiet):
    return f32(p.base_lr * math.pow(p.gamma, it)), step


def inv(p, it, step, say=_quiet):
    base = f32(1) + f32(p.gamma) * f32(it)
    return f32(f32(p.base_lr) * f32(math.pow(base, -p.power))), step


def multistep(p, it, step, say=_quiet):
    # Caffe quirk: the step advances at most once per call (sgd_solver.cpp), so two stepvalues
    # that are both passed at a resumed iteration take two iterations to catch up.
    if step < len(p.stepvalue) and it >= p.stepvalue[step]:
        step += 1
        say("MultiStep Status: Iteration %d, step = %d", it, step)
    return f32(p.base_lr * math.pow(p.gamma, step)), step


def poly(p, it, step, say=_quiet):
    frac = f32(1) - f32(it) / f32(p.max_iter)
    return f32(f32(p.base_lr) * f32(math.pow(frac, p.power))), step


def sigmoid(p, it, step, say=_quiet):
    x = -f32(p.gamma) * (f32(it) - f32(p.stepsize))
    return f32(f32(p.base_lr) * (f32(1) / (f32(1) + f32(math.exp(x))))), step


POLICIES = {
    "fixed": fixed,
    "step": step,
    "exp": exp,
    "inv": inv,
    "multistep": multistep,
    "poly": poly,
    "sigmoid": sigmoid,
}

_GAMMA = (lambda p: p.gamma >= 0, "gamma must be >= 0")
_STEPSIZE = (lambda p: p.stepsize > 0, "stepsize must be > 0")
_MAX_ITER = (lambda p: p.max_iter > 0, "max_iter must be > 0")

CHECKS = {
    "fixed": (),
    "step": (_STEPSIZE, _GAMMA),
    "exp": (_GAMMA,),
    "inv": (_GAMMA,),
    "multistep": (_GAMMA,),
    "poly": (_MAX_ITER,),
    "sigmoid": (_GAMMA, _STEPSIZE),
}


def check_policy(param):
    """The policy function for ``param.lr_policy``; a ProtonetError if unknown or misconfigured."""
    name = param.lr_policy
    if name not in POLICIES:
        given = f"'{name}'" if name else "none"
        raise ProtonetError(f"unknown learning rate policy {given}; lr_policy must be one of "
                            f"{', '.join(POLICIES)}")
    for ok, message in CHECKS[name]:
        if not ok(param):
            raise ProtonetError(f"lr_policy '{name}': {message}")
    return POLICIES[name]
