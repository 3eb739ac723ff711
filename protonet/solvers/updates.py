"""The six update rules, as Caffe's ``ComputeUpdateValue``: gradient in, step out, in place.

Notation: g is a param's diff after iter_size normalisation and regularisation, r the local
rate (current lr × the param's lr_mult), h (and u) its history blobs, t = iter + 1.

    SGD       h ← μ·h + r·g;                  step = h
    Nesterov  h' ← μ·h + r·g;                 step = (1+μ)·h' − μ·h
    AdaGrad   h ← h + g²;                     step = r·g / (√h + δ)
    RMSProp   h ← ρ·h + (1−ρ)·g²;             step = r·g / (√h + δ)
    AdaDelta  h ← μ·h + (1−μ)·g²;  s = g·√((u+δ)/(h+δ));  u ← μ·u + (1−μ)·s²;
              step = r·s
    Adam      m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;
              step = r·√(1−β2^t)/(1−β1^t) · m/(√v + ε)

The step is written into g (the diff), and the net then does w ← w − diff, as Caffe. Variants
are thin: Nesterov is SGD plus a look-ahead, AdaGrad is RMSProp with ρ = 1 and weight 1 on g².
Every rule is a sequence of float32 in-place numpy operations over the param arrays, in the
order Caffe's CPU code performs them. The solver hands them slices of at most ``UPDATE_CHUNK``
elements and two scratch arrays of that size (Caffe's update_ and temp_ blobs, which are
param-sized); nothing is allocated per step.
"""

import math

import numpy as np

from ..errors import ProtonetError

f32 = np.float32

# Elements per slice of a param the rules work on (three 128 KB arrays stay in L2 cache).
UPDATE_CHUNK = 1 << 15


class Hyper:
    """The solver's hyper-parameters as float32 scalars, read once from the SolverParameter."""

    def __init__(self, param):
        self.momentum = f32(param.momentum)
        self.momentum2 = f32(param.momentum2)
        self.delta = f32(param.delta)
        self.rms_decay = f32(param.rms_decay)


# ---- the arithmetic ---------------------------------------------------------------------------
def _momentum(g, hist, scratch, rate, hp, t, nesterov=False):
    h = hist[0]
    old, tmp = scratch
    if nesterov:
        np.copyto(old, h)
    h *= hp.momentum
    np.multiply(g, rate, out=tmp)
    h += tmp
    if nesterov:
        np.multiply(h, f32(1) + hp.momentum, out=g)
        old *= hp.momentum
        g -= old
    else:
        np.copyto(g, h)


def _rms_scaled(g, hist, scratch, rate, hp, keep, weight):
    """h ← keep·h + weight·g²; g ← rate · g / (√h + δ)."""
    h = hist[0]
    upd, _ = scratch
    np.multiply(g, g, out=upd)
    if weight != 1:
        upd *= weight
    if keep != 1:
        h *= keep
    h += upd
    np.sqrt(h, out=upd)
    upd += hp.delta
    np.divide(g, upd, out=upd)
    np.multiply(upd, rate, out=g)


def _adadelta(g, hist, scratch, rate, hp, t):
    h, u = hist
    upd, tmp = scratch
    mom, rest = hp.momentum, f32(1) - hp.momentum
    np.multiply(g, g, out=upd)
    upd *= rest
    h *= mom
    h += upd
    np.add(u, hp.delta, out=upd)
    np.add(h, hp.delta, out=tmp)
    upd /= tmp
    np.sqrt(upd, out=upd)
    g *= upd
    np.multiply(g, g, out=upd)
    upd *= rest
    u *= mom
    u += upd
    g *= rate


def _adam(g, hist, scratch, rate, hp, t):
    m, v = hist
    tmp, _ = scratch
    b1, b2 = hp.momentum, hp.momentum2
    # Caffe computes the bias correction in double from float β's, then stores it as float.
    correction = f32(math.sqrt(1.0 - math.pow(b2, t)) / (1.0 - math.pow(b1, t)))
    np.multiply(g, f32(1) - b1, out=tmp)
    m *= b1
    m += tmp
    np.multiply(g, g, out=tmp)
    tmp *= f32(1) - b2
    v *= b2
    v += tmp
    np.sqrt(v, out=tmp)
    tmp += hp.delta
    np.divide(m, tmp, out=tmp)
    np.multiply(tmp, f32(rate * correction), out=g)


# ---- the rules --------------------------------------------------------------------------------
def _momentum_must_be_zero(param, name):
    if param.momentum != 0:
        raise ProtonetError(f"momentum cannot be used with {name}; remove it from the solver "
                            f"(got momentum: {param.momentum:g})")


def _check_rmsprop(param):
    _momentum_must_be_zero(param, "RMSProp")
    if not 0 <= param.rms_decay < 1:
        raise ProtonetError(f"rms_decay should lie between 0 and 1 (got {param.rms_decay:g})")


def _check_adam(param):
    # Caffe quirk: adam_solver.cpp does not check; momentum 1 divides by zero in the bias
    # correction (inf/NaN weights from the first update).
    for name in ("momentum", "momentum2"):
        value = getattr(param, name)
        if not 0 <= value < 1:
            raise ProtonetError(f"Adam needs 0 <= {name} < 1 (got {name}: {value:g})")


class UpdateRule:
    """A solver type's update: ``history_sets`` history blobs per param, a check, the step."""

    def __init__(self, name, compute, check=None, history_sets=1):
        self.name = name
        self.compute = compute          # compute(g, hist, scratch, rate, hp, t)
        self.check = check or (lambda param: None)
        self.history_sets = history_sets


RULES = {
    "SGD": UpdateRule("SGD", _momentum),
    "Nesterov": UpdateRule("Nesterov",
                           lambda g, h, s, r, hp, t: _momentum(g, h, s, r, hp, t, nesterov=True)),
    "AdaGrad": UpdateRule("AdaGrad",
                          lambda g, h, s, r, hp, t: _rms_scaled(g, h, s, r, hp, 1, 1),
                          check=lambda param: _momentum_must_be_zero(param, "AdaGrad")),
    "RMSProp": UpdateRule("RMSProp",
                          lambda g, h, s, r, hp, t: _rms_scaled(g, h, s, r, hp, hp.rms_decay,
                                                                f32(1) - hp.rms_decay),
                          check=_check_rmsprop),
    "AdaDelta": UpdateRule("AdaDelta", _adadelta, history_sets=2),
    "Adam": UpdateRule("Adam", _adam, check=_check_adam, history_sets=2),
}


# ---- what the solver does to every gradient before the rule -----------------------------------
def _l2(data, diff, decay, scratch):
    np.multiply(data, decay, out=scratch)
    diff += scratch


def _l1(data, diff, decay, scratch):
    np.sign(data, out=scratch)
    scratch *= decay
    diff += scratch


REGULARIZERS = {"L2": _l2, "L1": _l1}


def check_regularizer(param):
    name = param.regularization_type
    if name not in REGULARIZERS:
        raise ProtonetError(f"unknown regularization_type '{name}'; use one of "
                            f"{', '.join(REGULARIZERS)}")
    return REGULARIZERS[name]
