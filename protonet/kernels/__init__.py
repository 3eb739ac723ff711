"""Numba kernels shared by layers; each module states its notation block."""
