"""Training: the Solver loop, the six update rules, lr policies, snapshots, signals.

``get_solver(path)`` reads a solver prototxt and builds the class its ``type`` names;
``SGDSolver(path)`` … ``AdamSolver(path)`` force a type, as pycaffe's classes do.
"""

from .solver import (
    SOLVERS,
    AdaDeltaSolver,
    AdaGradSolver,
    AdamSolver,
    NesterovSolver,
    RMSPropSolver,
    SGDSolver,
    Solver,
    get_solver,
)

__all__ = ["SOLVERS", "AdaDeltaSolver", "AdaGradSolver", "AdamSolver", "NesterovSolver",
           "RMSPropSolver", "SGDSolver", "Solver", "get_solver"]
