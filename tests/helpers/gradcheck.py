"""Numerical gradient check, modelled on Caffe's GradientChecker.

The objective is ``Σ_t Σ top_t · G_t`` with ``G_t`` a fixed random top diff. Every bottom that
can carry a gradient and every param blob is perturbed element by element with central
differences; the analytic gradient from ``backward`` must agree within ``threshold`` relative to
``max(|analytic|, |numeric|, 1)``. The global RNG is re-seeded before every forward so that
stochastic layers (Dropout) repeat their masks.
"""

import numpy as np

from protonet import rng as global_rng

from .tolerances import GRAD_STEP, GRAD_THRESHOLD


def _objective(layer, bottoms, tops, top_grads, seed):
    global_rng.set_random_seed(seed)
    layer.layer_forward(bottoms, tops)
    total = 0.0
    for top, grad in zip(tops, top_grads):
        total += float(np.sum(top.data.astype(np.float64) * grad))
    return total


def check_gradient(layer, bottoms, tops, *, check_bottoms=None, check_params=True,
                   step=GRAD_STEP, threshold=GRAD_THRESHOLD, kink=None, kink_range=-1.0,
                   seed=1701, top_indices=None, max_elements=None):
    """Compare ``layer.backward`` with central differences; raise AssertionError on mismatch.

    ``layer`` must already be set up with ``bottoms``/``tops`` (Blob lists). ``check_bottoms``:
    indices of bottoms to check (default: all). ``kink``/``kink_range``: skip elements whose
    top input lies within ``kink_range`` of ``kink`` (ReLU at 0). ``max_elements``: check at most
    this many elements per blob, chosen at random (keeps big layers fast).
    """
    rng = np.random.default_rng(seed)
    check_bottoms = range(len(bottoms)) if check_bottoms is None else check_bottoms
    top_indices = range(len(tops)) if top_indices is None else top_indices
    _objective(layer, bottoms, tops, [np.zeros(t.shape) for t in tops], seed)
    top_grads = []
    for i, top in enumerate(tops):
        grad = rng.standard_normal(top.shape) if i in top_indices else np.zeros(top.shape)
        top_grads.append(grad)

    def analytic():
        _objective(layer, bottoms, tops, top_grads, seed)
        for top, grad in zip(tops, top_grads):
            top.diff[...] = grad
        for blob in layer.blobs:
            blob.diff[...] = 0
        propagate = [i in check_bottoms for i in range(len(bottoms))]
        layer.backward(tops, propagate, bottoms)
        grads = {("bottom", i): bottoms[i].diff.astype(np.float64).copy() for i in check_bottoms}
        if check_params:
            for j, blob in enumerate(layer.blobs):
                if j < len(layer.param_propagate_down) and not layer.param_propagate_down[j]:
                    continue
                grads[("param", j)] = blob.diff.astype(np.float64).copy()
        return grads

    expected = analytic()
    for (kind, index), grad in expected.items():
        blob = bottoms[index] if kind == "bottom" else layer.blobs[index]
        flat = blob.data.reshape(-1)
        positions = np.arange(flat.size)
        if max_elements is not None and flat.size > max_elements:
            positions = rng.choice(flat.size, max_elements, replace=False)
        for pos in positions:
            original = float(flat[pos])
            if kink is not None and abs(original - kink) < kink_range:
                continue
            flat[pos] = original + step
            plus = _objective(layer, bottoms, tops, top_grads, seed)
            flat[pos] = original - step
            minus = _objective(layer, bottoms, tops, top_grads, seed)
            flat[pos] = original
            numeric = (plus - minus) / (2 * step)
            computed = float(grad.reshape(-1)[pos])
            scale = max(abs(computed), abs(numeric), 1.0)
            if abs(computed - numeric) > threshold * scale:
                raise AssertionError(
                    f"layer '{layer.name}' ({layer.type}): {kind} {index} element {pos}: "
                    f"analytic {computed:.6g} vs numeric {numeric:.6g} "
                    f"(step {step}, threshold {threshold})")
    return expected
