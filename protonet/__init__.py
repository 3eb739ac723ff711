"""protonet: Caffe's files and numbers on a modern Python stack, with Numba CPU kernels.

The public API follows pycaffe, so ``import protonet as caffe`` runs pycaffe scripts::

    net = protonet.Net("deploy.prototxt", protonet.TEST, weights="model.caffemodel")
    out = net.forward(data=images)
    solver = protonet.get_solver("solver.prototxt")
    solver.step(100)
"""

import os

# Numba's OpenMP threads and OpenBLAS's threads both spin after their work; on few cores a
# Numba kernel followed by a GEMM then waits milliseconds for the other pool to yield. Passive
# waiting (set before Numba loads its threading layer) removes that; a user's setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import layers  # noqa: E402,F401  (fills the layer registry)
from .blob import Blob  # noqa: E402,F401
from .errors import ProtonetError  # noqa: E402,F401
from .layers import Layer, layer_type_list  # noqa: E402,F401
from .log import get_logger  # noqa: E402
from .net import TEST, TRAIN, Net  # noqa: E402,F401
from .rng import set_random_seed  # noqa: E402,F401

__version__ = "0.1.0"

_SOLVER_NAMES = ("get_solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
                 "AdaDeltaSolver", "AdamSolver")


def set_mode_cpu():
    """protonet always runs on the CPU; kept for pycaffe scripts."""


def set_mode_gpu():
    """No GPU engine: scripts that ask for one keep running on the CPU (a warning says so)."""
    get_logger(__name__).warning("protonet runs on the CPU; set_mode_gpu() has no effect")


def set_device(device_id):
    """Kept for pycaffe scripts; protonet has one CPU device, so this does nothing."""
    get_logger(__name__).info("set_device(%s): protonet runs on the CPU, ignoring", device_id)


def __getattr__(name):
    # Solvers, io, draw and net_spec load on first use: `import protonet` stays fast.
    if name in _SOLVER_NAMES:
        from . import solvers

        return getattr(solvers, name)
    import importlib

    if name in ("io", "draw", "net_spec", "proto", "coord_map", "visualize", "pycaffe"):
        return importlib.import_module(f".{name}", __name__)
    if name in ("Classifier", "Detector"):
        return getattr(importlib.import_module(f".{name.lower()}", __name__), name)
    if name in ("NetSpec", "to_proto", "params"):
        return getattr(importlib.import_module(".net_spec", __name__), name)
    raise AttributeError(f"module 'protonet' has no attribute {name!r}")
