"""protonet's random number generator, seeded like Caffe's global RNG.

Caffe keeps one process-wide RNG seeded from ``random_seed``; fillers, Dropout, data shuffling
and random crops draw from it. protonet does the same with one ``numpy.random.Generator``:
:func:`set_random_seed` reseeds it (``Caffe::set_random_seed``), :func:`get_rng` returns it. This
and the layer registry are the only process-wide state in the package.
"""

import numpy as np

_state = {"rng": np.random.default_rng()}


def set_random_seed(seed):
    """Reseed the global generator; the same seed gives the same fillers, dropout masks and crops."""
    _state["rng"] = np.random.default_rng(int(seed))


def get_rng():
    """The global generator."""
    return _state["rng"]


def get_state():
    """A picklable snapshot of the generator state (stored beside snapshots for exact resume)."""
    return _state["rng"].bit_generator.state


def set_state(state):
    """Restore a state returned by :func:`get_state`."""
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    _state["rng"] = rng
