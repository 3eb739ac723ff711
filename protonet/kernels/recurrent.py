"""LSTM cell kernels (Caffe's LSTMUnit).

Notation: ``n`` streams, ``d`` hidden size; gates ``x`` (n, 4d) hold i', f', o', g' in that
order; ``cont`` (n,) are the sequence-continuation flags.
"""

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


@njit(cache=True, inline="always")
def _tanh(v):
    # Caffe quirk: lstm_unit_layer.cpp computes tanh as 2·sigmoid(2v) − 1.
    return 2.0 * _sigmoid(2.0 * v) - 1.0


@njit(cache=True, parallel=True)
def lstm_unit_forward(c_prev, x, cont, c, h):
    """c_prev (n, d), x (n, 4d), cont (n,) → c, h (n, d): c = f·c_prev + i·g, h = o·tanh(c)."""
    n, d = c_prev.shape
    for s in prange(n):
        for k in range(d):
            i = _sigmoid(x[s, k])
            f = 0.0 if cont[s] == 0 else cont[s] * _sigmoid(x[s, d + k])
            o = _sigmoid(x[s, 2 * d + k])
            g = _tanh(x[s, 3 * d + k])
            value = f * c_prev[s, k] + i * g
            c[s, k] = value
            h[s, k] = o * _tanh(value)


@njit(cache=True, parallel=True)
def lstm_unit_backward(c_prev, x, cont, c, c_diff, h_diff, c_prev_diff, x_diff):
    """Gradients of lstm_unit_forward: writes c_prev_diff (n, d) and x_diff (n, 4d)."""
    n, d = c_prev.shape
    for s in prange(n):
        for k in range(d):
            i = _sigmoid(x[s, k])
            f = 0.0 if cont[s] == 0 else cont[s] * _sigmoid(x[s, d + k])
            o = _sigmoid(x[s, 2 * d + k])
            g = _tanh(x[s, 3 * d + k])
            tanh_c = _tanh(c[s, k])
            c_term = c_diff[s, k] + h_diff[s, k] * o * (1.0 - tanh_c * tanh_c)
            c_prev_diff[s, k] = c_term * f
            x_diff[s, k] = c_term * g * i * (1.0 - i)
            # Caffe quirk: f here already includes cont, and so does its derivative.
            x_diff[s, d + k] = c_term * c_prev[s, k] * f * (1.0 - f)
            x_diff[s, 2 * d + k] = h_diff[s, k] * tanh_c * o * (1.0 - o)
            x_diff[s, 3 * d + k] = c_term * i * (1.0 - g * g)
