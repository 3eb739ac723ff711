"""Named tolerances; test bodies use these, never bare numbers."""

# Layer conformance against BVLC Caffe (../shared/conformance/README.md).
LAYER_RTOL = 1e-4
LAYER_ATOL_SCALE = 1e-5
# Solver trajectories against BVLC Caffe.
SOLVER_RTOL = 1e-3
SOLVER_ATOL_SCALE = 1e-5
# A Numba kernel against its slow NumPy reference (same math, different order).
KERNEL_RTOL = 1e-5
KERNEL_ATOL = 1e-6
# Data layer batches against Caffe's.
DATA_ATOL = 1e-6
# Numerical gradient check (Caffe's GradientChecker defaults).
GRAD_STEP = 1e-2
GRAD_THRESHOLD = 1e-3


def conformance_atol(ref, scale=LAYER_ATOL_SCALE):
    """atol = scale · max(1, |ref|max), as the conformance README states."""
    import numpy as np

    return scale * max(1.0, float(np.abs(ref).max()) if np.size(ref) else 1.0)
