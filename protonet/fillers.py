"""Weight fillers, with Caffe's distributions and defaults (filler.hpp).

``fill(array, filler_param)`` fills a float32 array in place from the global RNG
(:mod:`protonet.rng`). ``filler_param`` is a ``FillerParameter`` message; its defaults are
Caffe's: type "constant", value 0, min 0, max 1, mean 0, std 1, sparse -1, variance_norm FAN_IN.
"""

import numpy as np

from .errors import ProtonetError
from .rng import get_rng

FAN_IN, FAN_OUT, AVERAGE = 0, 1, 2


def _fans(shape):
    count = int(np.prod(shape)) if shape else 1
    fan_in = count // shape[0] if len(shape) > 0 and shape[0] else count
    fan_out = count // shape[1] if len(shape) > 1 and shape[1] else count
    return fan_in, fan_out


def _variance_n(shape, variance_norm):
    fan_in, fan_out = _fans(shape)
    return {FAN_IN: fan_in, FAN_OUT: fan_out, AVERAGE: (fan_in + fan_out) / 2.0}[variance_norm]


def _constant(a, p):
    a[...] = p.value


def _uniform(a, p):
    a[...] = get_rng().uniform(p.min, p.max, a.shape)


def _gaussian(a, p):
    a[...] = get_rng().normal(p.mean, p.std, a.shape)
    if p.sparse >= 0:
        # Caffe: keep each weight with probability sparse / num_outputs (shape[0]), zero the rest.
        if a.ndim < 2:
            raise ProtonetError("gaussian filler with sparse needs a blob with at least 2 axes")
        keep = get_rng().random(a.shape) < (p.sparse / float(a.shape[0]))
        a *= keep


def _positive_unitball(a, p):
    a[...] = get_rng().uniform(0.0, 1.0, a.shape)
    rows = a.reshape(a.shape[0] if a.ndim else 1, -1)
    rows /= rows.sum(axis=1, keepdims=True)


def _xavier(a, p):
    scale = np.sqrt(3.0 / _variance_n(a.shape, p.variance_norm))
    a[...] = get_rng().uniform(-scale, scale, a.shape)


def _msra(a, p):
    std = np.sqrt(2.0 / _variance_n(a.shape, p.variance_norm))
    a[...] = get_rng().normal(0.0, std, a.shape)


def _bilinear(a, p):
    if a.ndim != 4 or a.shape[2] != a.shape[3]:
        raise ProtonetError(f"bilinear filler needs a 4-D blob with square kernels, got shape "
                            f"{a.shape}")
    k = a.shape[3]
    f = np.ceil(k / 2.0)
    c = (k - 1) / (2.0 * f)  # Caffe quirk: filler.hpp's centre, not FCN's Python one
    x = np.arange(k)
    weights_1d = 1 - np.abs(x / f - c)
    a[...] = np.outer(weights_1d, weights_1d)[None, None]


FILLERS = {
    "constant": _constant,
    "uniform": _uniform,
    "gaussian": _gaussian,
    "positive_unitball": _positive_unitball,
    "xavier": _xavier,
    "msra": _msra,
    "bilinear": _bilinear,
}


def fill(array, filler_param):
    """Fill ``array`` in place as ``filler_param`` says."""
    kind = filler_param.type
    if kind not in FILLERS:
        raise ProtonetError(f"unknown filler type {kind!r}; known: {', '.join(sorted(FILLERS))}")
    if filler_param.sparse >= 0 and kind != "gaussian":
        raise ProtonetError(f"filler {kind!r} does not support sparse (only gaussian does)")
    if kind == "gaussian" and not filler_param.std >= 0:
        raise ProtonetError(f"gaussian filler std must be >= 0 (got {filler_param.std:g})")
    if kind == "uniform" and not filler_param.min <= filler_param.max:
        raise ProtonetError(f"uniform filler needs min <= max (got min {filler_param.min:g}, "
                            f"max {filler_param.max:g})")
    if array.size == 0:
        return array
    try:
        FILLERS[kind](array, filler_param)
    except MemoryError:   # numpy's random draws are float64 temporaries: twice the blob
        raise ProtonetError(f"out of memory filling a blob of shape {array.shape} "
                            f"({array.nbytes / 2**30:.3g} GB); check the shapes") from None
    return array
