"""BatchNorm, MVN, Scale and Bias: NumPy references, gradient checks, in-place runs, checks."""

import numpy as np
import pytest

from protonet.blob import Blob
from protonet.errors import ProtonetError
from protonet.kernels import batchnorm as bn_kernels
from protonet.kernels import elementwise
from protonet.kernels.elementwise import PARALLEL_MIN, STREAM_MIN
from tests.helpers.gradcheck import check_gradient
from tests.helpers.layers import TEST, TRAIN, blobs_from, make_layer, setup_layer
from tests.helpers.tolerances import KERNEL_ATOL, KERNEL_RTOL
from tests.helpers.threads import on_one_thread


def _rand(*shape, seed=0, lo=None, hi=None):
    rng = np.random.default_rng(seed)
    if lo is None:
        return rng.standard_normal(shape).astype(np.float32)
    return rng.uniform(lo, hi, shape).astype(np.float32)


def _close(ours, ref, msg=""):
    np.testing.assert_allclose(ours, ref, rtol=KERNEL_RTOL, atol=KERNEL_ATOL, err_msg=msg)


def _run(layer, bottoms, tops, dy):
    """Forward, then backward with top diff dy into every bottom; return (top data, diffs)."""
    layer.layer_forward(bottoms, tops)
    out = tops[0].data.copy()
    for blob in layer.blobs:
        blob.diff[...] = 0
    tops[0].diff[...] = dy
    layer.backward(tops, [True] * len(bottoms), bottoms)
    diffs = [b.diff.copy() for b in bottoms] + [b.diff.copy() for b in layer.blobs]
    return out, diffs


def _assert_in_place_matches(text, arrays, phase=TRAIN, init=None):
    """The layer run in place (top 0 is bottom 0) gives the out-of-place top and diffs."""
    dy = _rand(*arrays[0].shape, seed=9)
    layer, bottoms, tops = setup_layer(text, arrays, phase=phase)
    in_place = make_layer(text, phase)
    blobs = blobs_from(*arrays)
    in_place.layer_setup(blobs, blobs[:1])
    if init is not None:
        init(layer)
        init(in_place)
    out, diffs = _run(layer, bottoms, tops, dy)
    out_ip, diffs_ip = _run(in_place, blobs, blobs[:1], dy)
    np.testing.assert_array_equal(out_ip, out)
    for ours, theirs in zip(diffs_ip, diffs):
        np.testing.assert_array_equal(ours, theirs)


# ---- BatchNorm ----------------------------------------------------------------------------------

BN_TRAIN = ('type: "BatchNorm" batch_norm_param { use_global_stats: false '
            'moving_average_fraction: 0.9 eps: 1e-5 }')
BN_GLOBAL = 'type: "BatchNorm" batch_norm_param { use_global_stats: true }'


def _bn_init(layer):
    c = layer.channels
    layer.blobs[0].data[...] = np.linspace(-1, 1, c)
    layer.blobs[1].data[...] = np.linspace(0.5, 2, c)
    layer.blobs[2].data[...] = 2


def test_batchnorm_train_normalises_with_batch_stats_and_updates_running_sums():
    x = _rand(4, 3, 2, 3) * 2 + 1
    layer, bottoms, tops = setup_layer(BN_TRAIN, [x], phase=TRAIN)
    _bn_init(layer)
    before = [b.data.copy() for b in layer.blobs]
    layer.layer_forward(bottoms, tops)
    xd = x.astype(np.float64)
    mean = xd.mean(axis=(0, 2, 3))
    var = xd.var(axis=(0, 2, 3))
    ref = (xd - mean[None, :, None, None]) / np.sqrt(var + 1e-5)[None, :, None, None]
    _close(tops[0].data, ref)
    m = x.size // 3
    _close(layer.blobs[0].data, 0.9 * before[0] + mean)
    _close(layer.blobs[1].data, 0.9 * before[1] + m / (m - 1) * var)
    _close(layer.blobs[2].data, 0.9 * before[2] + 1)


@pytest.mark.parametrize("text", [BN_GLOBAL, 'type: "BatchNorm"'])
def test_batchnorm_global_stats_divide_the_sums_by_the_scale_factor(text):
    x = _rand(2, 4, 3)
    layer, bottoms, tops = setup_layer(text, [x], phase=TEST)
    assert layer.use_global_stats
    _bn_init(layer)
    before = [b.data.copy() for b in layer.blobs]
    layer.layer_forward(bottoms, tops)
    mean = before[0] / 2.0
    var = before[1] / 2.0
    _close(tops[0].data, (x - mean[None, :, None]) / np.sqrt(var + 1e-5)[None, :, None])
    for blob, old in zip(layer.blobs, before):
        np.testing.assert_array_equal(blob.data, old)
    layer.blobs[2].data[...] = 0  # a zero scale factor means zero statistics
    layer.layer_forward(bottoms, tops)
    _close(tops[0].data, x / np.sqrt(np.float32(1e-5)))


def test_batchnorm_use_global_stats_defaults_by_phase():
    assert not setup_layer('type: "BatchNorm"', [_rand(2, 3)], phase=TRAIN)[0].use_global_stats
    assert setup_layer('type: "BatchNorm"', [_rand(2, 3)], phase=TEST)[0].use_global_stats
    forced = 'type: "BatchNorm" batch_norm_param { use_global_stats: false }'
    assert not setup_layer(forced, [_rand(2, 3)], phase=TEST)[0].use_global_stats


@pytest.mark.parametrize("text", [BN_TRAIN, BN_GLOBAL])
def test_batchnorm_gradient(text):
    layer, bottoms, tops = setup_layer(text, [_rand(3, 2, 2, 3)], phase=TRAIN)
    _bn_init(layer)
    check_gradient(layer, bottoms, tops, check_params=False)


@pytest.mark.parametrize("text", [BN_TRAIN, BN_GLOBAL])
def test_batchnorm_in_place_matches_out_of_place(text):
    _assert_in_place_matches(text, [_rand(3, 2, 2, 3)], init=_bn_init)


def test_large_batchnorm_in_place_matches_out_of_place():
    # From STREAM_MIN elements on the normalised copy for backward takes non-temporal stores.
    _assert_in_place_matches(BN_TRAIN, [_rand(2, 3, STREAM_MIN // 6 + 5)], init=_bn_init)


def test_batchnorm_blobs_are_statistics_with_lr_mult_zero():
    layer, _, _ = setup_layer(BN_TRAIN, [_rand(2, 5, 3)], phase=TRAIN)
    assert [b.shape for b in layer.blobs] == [(5,), (5,), (1,)]
    assert layer.param_propagate_down == [False, False, False]
    assert [p.lr_mult for p in layer.param.param] == [0, 0, 0]
    with pytest.raises(ProtonetError, match="lr_mult 1"):
        setup_layer('type: "BatchNorm" param { lr_mult: 0 } param { lr_mult: 1 }', [_rand(2, 5)])


def test_batchnorm_rejects_mismatched_channels_and_blobs():
    layer, bottoms, tops = setup_layer(BN_TRAIN, [_rand(2, 5, 3)], phase=TRAIN)
    bottoms[0].reshape(2, 4, 3)
    with pytest.raises(ProtonetError, match="4 channels"):
        layer.layer_forward(bottoms, tops)
    layer = make_layer(BN_TRAIN, TRAIN)
    layer.blobs = [Blob(5), Blob(5)]
    with pytest.raises(ProtonetError, match="expected 3 param blobs"):
        layer.layer_setup(blobs_from(_rand(2, 5)), [Blob()])


# ---- MVN ----------------------------------------------------------------------------------------

MVN = {
    "mvn": ('type: "MVN"', (2, 3)),
    "mvn_across": ('type: "MVN" mvn_param { across_channels: true }', (1, 2, 3)),
    "mvn_mean_only": ('type: "MVN" mvn_param { normalize_variance: false }', None),
}


@pytest.mark.parametrize("name", sorted(MVN))
def test_mvn_forward_matches_numpy_with_eps_on_the_std(name):
    text, axes = MVN[name]
    text = text[:-1] + " eps: 0.01 }" if "{" in text else text + " mvn_param { eps: 0.01 }"
    x = _rand(2, 3, 3, 4) * 3 + 2
    layer, bottoms, tops = setup_layer(text, [x])
    layer.layer_forward(bottoms, tops)
    xd = x.astype(np.float64)
    stat_axes = axes or (2, 3)
    centred = xd - xd.mean(axis=stat_axes, keepdims=True)
    ref = centred if axes is None else centred / (centred.std(axis=axes, keepdims=True) + 0.01)
    _close(tops[0].data, ref, name)


@pytest.mark.parametrize("name", sorted(MVN))
def test_mvn_gradient(name):
    layer, bottoms, tops = setup_layer(MVN[name][0], [_rand(2, 3, 2, 3)], phase=TRAIN)
    check_gradient(layer, bottoms, tops)


@pytest.mark.parametrize("name", sorted(MVN))
def test_mvn_in_place_matches_out_of_place(name):
    _assert_in_place_matches(MVN[name][0], [_rand(2, 3, 2, 3)])


def test_mvn_top_takes_the_legacy_4d_shape_and_refuses_5d():
    _, _, tops = setup_layer('type: "MVN"', [_rand(2, 3)])
    assert tops[0].shape == (2, 3, 1, 1)
    with pytest.raises(ProtonetError, match="at most 4 axes"):
        setup_layer('type: "MVN"', [_rand(1, 2, 2, 2, 2)])


def test_normalization_kernels_do_not_depend_on_thread_count():
    x = _rand(4, 3, PARALLEL_MIN // 8)
    dy = _rand(*x.shape, seed=1)

    def run():
        mean, var = np.zeros(3, np.float32), np.zeros(3, np.float32)
        bn_kernels.moments(x, True, mean, var)
        denom = np.sqrt(var + np.float32(1e-5))
        y = np.empty_like(x)
        bn_kernels.normalize_forward(x, mean, denom, y)
        dx = np.empty_like(x)
        bn_kernels.normalize_backward(bn_kernels.FULL, dy, y, denom, dx)
        return [mean, var, y, dx]

    single = on_one_thread(run)
    for one, many in zip(single, run()):
        np.testing.assert_array_equal(one, many)


# ---- Scale and Bias -----------------------------------------------------------------------------

# name → (prototxt, bottom shapes, broadcast shape of the operand against bottom 0)
SCALE = {
    "scale_default": ('type: "Scale"', [(2, 3, 4)], (1, 3, 1)),
    "scale_axis_numaxes": ('type: "Scale" scale_param { axis: 1 num_axes: 2 }', [(2, 3, 4, 2)],
                           (1, 3, 4, 1)),
    "scale_to_end": ('type: "Scale" scale_param { axis: -2 num_axes: -1 }', [(2, 3, 4)],
                     (1, 3, 4)),
    "scale_scalar": ('type: "Scale" scale_param { num_axes: 0 }', [(2, 3, 4)], (1, 1, 1)),
    "scale_bias": ('type: "Scale" scale_param { bias_term: true }', [(2, 3, 2, 2)],
                   (1, 3, 1, 1)),
    "scale_two_bottoms": ('type: "Scale" scale_param { axis: 0 }', [(2, 3, 4), (2, 3)],
                          (2, 3, 1)),
    "scale_two_bottoms_bias": ('type: "Scale" scale_param { axis: 0 bias_term: true }',
                               [(2, 3, 4), (2, 3)], (2, 3, 1)),
    "bias_default": ('type: "Bias"', [(2, 3, 2, 2)], (1, 3, 1, 1)),
    "bias_scalar": ('type: "Bias" bias_param { num_axes: 0 }', [(2, 3)], (1, 1)),
    "bias_two_bottoms": ('type: "Bias" bias_param { axis: 1 }', [(2, 3, 4), (3, 4)], (1, 3, 4)),
}


def _operands(name, shapes):
    return [_rand(*shape, seed=i) for i, shape in enumerate(shapes)]


def _fill_params(layer):
    for j, blob in enumerate(layer.blobs):
        blob.data[...] = _rand(*blob.shape, seed=10 + j)


@pytest.mark.parametrize("name", sorted(SCALE))
def test_scale_and_bias_forward_match_broadcasting(name):
    text, shapes, bshape = SCALE[name]
    arrays = _operands(name, shapes)
    layer, bottoms, tops = setup_layer(text, arrays)
    _fill_params(layer)
    layer.layer_forward(bottoms, tops)
    x = arrays[0].astype(np.float64)
    operands = [a.reshape(bshape) for a in arrays[1:]] + [b.data.reshape(bshape)
                                                           for b in layer.blobs]
    if layer.type == "Bias":
        ref = x + operands[0]
    else:
        ref = x * operands[0] + (operands[1] if len(operands) > 1 else 0)
    _close(tops[0].data, ref, name)


@pytest.mark.parametrize("name", sorted(SCALE))
def test_scale_and_bias_gradient(name):
    text, shapes, _ = SCALE[name]
    layer, bottoms, tops = setup_layer(text, _operands(name, shapes), phase=TRAIN)
    _fill_params(layer)
    check_gradient(layer, bottoms, tops)


@pytest.mark.parametrize("name", sorted(SCALE))
def test_scale_and_bias_in_place_matches_out_of_place(name):
    text, shapes, _ = SCALE[name]
    _assert_in_place_matches(text, _operands(name, shapes), init=_fill_params)


@pytest.mark.parametrize("name", ["scale_bias", "bias_default", "scale_axis_numaxes"])
def test_param_diffs_accumulate(name):
    text, shapes, _ = SCALE[name]
    layer, bottoms, tops = setup_layer(text, _operands(name, shapes))
    layer.layer_forward(bottoms, tops)
    tops[0].diff[...] = _rand(*tops[0].shape, seed=3)
    for blob in layer.blobs:
        blob.diff[...] = 0
    layer.backward(tops, [False], bottoms)
    once = [b.diff.copy() for b in layer.blobs]
    layer.backward(tops, [False], bottoms)
    for blob, first in zip(layer.blobs, once):
        _close(blob.diff, 2 * first)


def test_scale_fillers_default_to_one_and_zero():
    layer, _, _ = setup_layer('type: "Scale" scale_param { bias_term: true }', [_rand(2, 3, 4)])
    assert [b.shape for b in layer.blobs] == [(3,), (3,)]
    assert np.all(layer.blobs[0].data == 1) and np.all(layer.blobs[1].data == 0)
    filled, _, _ = setup_layer(
        'type: "Scale" scale_param { filler { value: 2 } bias_term: true '
        'bias_filler { value: 3 } }', [_rand(2, 3, 4)])
    assert np.all(filled.blobs[0].data == 2) and np.all(filled.blobs[1].data == 3)


def test_scale_with_loaded_blobs_reuses_them():
    layer = make_layer('type: "Scale" scale_param { bias_term: true }')
    layer.blobs = blobs_from(np.full(3, 2.0), np.full(3, 5.0))
    x = _rand(2, 3, 4)
    bottoms, tops = blobs_from(x), [Blob()]
    layer.layer_setup(bottoms, tops)
    layer.layer_forward(bottoms, tops)
    _close(tops[0].data, 2 * x + 5)


@pytest.mark.parametrize("text, shapes, match", [
    ('type: "Scale" scale_param { num_axes: -2 }', [(2, 3)], "num_axes must be"),
    ('type: "Bias" bias_param { axis: 1 num_axes: 3 }', [(2, 3, 4)], "extends past"),
    ('type: "Scale" scale_param { axis: 3 }', [(2, 3, 4)], "out of range"),
    ('type: "Scale"', [(2, 3, 4), (4,)], "does not match"),
    ('type: "Bias" bias_param { axis: 1 }', [(2, 3, 4), (3, 5)], "does not match"),
])
def test_scale_and_bias_reject_misplaced_operands(text, shapes, match):
    with pytest.raises(ProtonetError, match=match):
        setup_layer(text, [np.zeros(s) for s in shapes])


# Serial, parallel and streamed (≥ STREAM_MIN) sizes; odd planes; one-element planes.
AFFINE_SHAPES = [(1, 1, 1), (2, 3, 5), (3, 1, 7), (2, 5, PARALLEL_MIN // 10 + 1),
                 (2, 3, STREAM_MIN // 6 + 5), (3, STREAM_MIN // 3 + 7, 1)]


def _misaligned_like(x):
    """An empty array shaped like x that starts 4 bytes past a 64-byte boundary."""
    buffer = np.empty(x.size + 32, np.float32)
    start = (-buffer.ctypes.data % 64) // 4 + 1
    return buffer[start:start + x.size].reshape(x.shape)


def _scale_then_bias(x, s, t):
    y = np.empty_like(x)
    elementwise.axis_scale(x, s, y)
    elementwise.axis_bias(y, t, y)
    return y


@pytest.mark.parametrize("shape", AFFINE_SHAPES)
@pytest.mark.parametrize("operands", ["per_d", "one_value"])
def test_axis_affine_is_scale_then_bias_and_copies_the_input(shape, operands):
    x = _rand(*shape, seed=20)
    dim = shape[1] if operands == "per_d" else 1
    s, t = _rand(dim, seed=21), _rand(dim, seed=22)
    if operands == "per_d":
        expected = _scale_then_bias(x, s, t)
    else:
        expected = x * s[0] + t[0]
    y, copy = np.empty_like(x), _misaligned_like(x)
    elementwise.axis_affine(x, s, t, y, copy)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(copy, x)
    in_place, copy = x.copy(), np.empty_like(x)
    elementwise.axis_affine(in_place, s, t, in_place, copy)
    np.testing.assert_array_equal(in_place, expected)
    np.testing.assert_array_equal(copy, x)
    alone = x.copy()
    elementwise.axis_affine(alone, s, t, alone, alone)     # no copy
    np.testing.assert_array_equal(alone, expected)


def test_axis_affine_with_a_negative_zero_bias_is_axis_scale():
    x = _rand(2, 3, 5, seed=23)
    x[0, 0, :2] = [0.0, -0.0]
    s = _rand(3, seed=24)
    expected = np.empty_like(x)
    elementwise.axis_scale(x, s, expected)
    y = np.empty_like(x)
    elementwise.axis_affine(x, s, np.full(1, -0.0, np.float32), y, y)
    np.testing.assert_array_equal(np.signbit(y), np.signbit(expected))
    np.testing.assert_array_equal(y, expected)


def test_axis_affine_does_not_depend_on_thread_count():
    x = _rand(2, 3, STREAM_MIN // 6 + 5, seed=25)
    s, t = _rand(3, seed=26), _rand(3, seed=27)

    def run():
        y, copy = x.copy(), np.empty_like(x)
        elementwise.axis_affine(y, s, t, y, copy)
        return y, copy

    for one, many in zip(on_one_thread(run), run()):
        np.testing.assert_array_equal(one, many)


def test_large_scale_with_bias_in_place_matches_out_of_place():
    # The input copy for backward rides along in the forward pass (streamed at this size).
    _assert_in_place_matches(SCALE["scale_bias"][0], [_rand(2, 3, STREAM_MIN // 6 + 5)],
                             init=_fill_params)


def test_scale_with_a_bias_shaped_unlike_the_scale_adds_it_separately():
    # Loaded blobs may disagree: scale (3,) on axis 1, bias (3, 4) on axes 1-2.
    layer = make_layer('type: "Scale" scale_param { bias_term: true }')
    scale, bias = _rand(3, seed=28), _rand(3, 4, seed=29)
    layer.blobs = blobs_from(scale, bias)
    x = _rand(2, 3, 4, seed=30)
    bottoms, tops = blobs_from(x), [Blob()]
    layer.layer_setup(bottoms, tops)
    assert not layer.fused_bias
    layer.layer_forward(bottoms, tops)
    np.testing.assert_array_equal(tops[0].data, x * scale[None, :, None] + bias[None])
