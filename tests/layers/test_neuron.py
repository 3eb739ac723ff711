"""Neuron layers: forward against NumPy, gradient checks, in-place runs, Caffe's checks."""

import numpy as np
import pytest

from protonet import rng as global_rng
from protonet.blob import Blob
from protonet.errors import ProtonetError
from tests.helpers.gradcheck import check_gradient
from tests.helpers.layers import TEST, TRAIN, blobs_from, make_layer, setup_layer
from tests.helpers.tolerances import KERNEL_ATOL, KERNEL_RTOL

SHAPE = (2, 3, 4, 5)


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


# name → (prototxt, input range, kinks to keep away from, NumPy forward in float64)
LAYERS = {
    "relu": ('type: "ReLU"', (-2, 2), (0,), lambda x: np.maximum(x, 0)),
    "relu_leaky": ('type: "ReLU" relu_param { negative_slope: 0.1 }', (-2, 2), (0,),
                   lambda x: np.where(x > 0, x, 0.1 * x)),
    "relu_negative_slope": ('type: "ReLU" relu_param { negative_slope: -0.3 }', (-2, 2), (0,),
                            lambda x: np.where(x > 0, x, -0.3 * x)),
    "elu": ('type: "ELU" elu_param { alpha: 0.5 }', (-2, 2), (0,),
            lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
    "sigmoid": ('type: "Sigmoid"', (-4, 4), (), _sig),
    "tanh": ('type: "TanH"', (-2, 2), (), np.tanh),
    "absval": ('type: "AbsVal"', (-2, 2), (0,), np.abs),
    "power": ('type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }', (-2, 2), (),
              lambda x: (1 + 0.5 * x) ** 2),
    "power_fractional": ('type: "Power" power_param { power: 0.5 scale: 2 }', (0.5, 2), (),
                         lambda x: np.sqrt(2 * x)),
    "power_general": ('type: "Power" power_param { power: 3 scale: 0.8 shift: 0.2 }', (-1, 1),
                      (), lambda x: (0.2 + 0.8 * x) ** 3),
    "exp": ('type: "Exp"', (-2, 2), (), np.exp),
    "exp_base2": ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 0.1 }', (-2, 2), (),
                  lambda x: 2.0 ** (0.1 + 0.5 * x)),
    "log": ('type: "Log"', (0.5, 3), (), np.log),
    "log_base10": ('type: "Log" log_param { base: 10 scale: 2 shift: 0.5 }', (0.5, 3), (),
                   lambda x: np.log10(2 * x + 0.5)),
    "bnll": ('type: "BNLL"', (-3, 3), (), lambda x: np.logaddexp(0, x)),
    "swish": ('type: "Swish" swish_param { beta: 1.5 }', (-3, 3), (),
              lambda x: x * _sig(1.5 * x)),
    "clip": ('type: "Clip" clip_param { min: -0.5 max: 0.7 }', (-2, 2), (-0.5, 0.7),
             lambda x: np.clip(x, -0.5, 0.7)),
    "prelu": ('type: "PReLU"', (-2, 2), (0,), lambda x: np.where(x > 0, x, 0.25 * x)),
    "prelu_shared": ('type: "PReLU" prelu_param { channel_shared: true }', (-2, 2), (0,),
                     lambda x: np.where(x > 0, x, 0.25 * x)),
    "dropout_test": ('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', (-2, 2), (),
                     lambda x: x),
}
DIFFERENTIABLE = sorted(LAYERS)


def _x(name, seed=0, shape=SHAPE):
    _, (lo, hi), kinks, _ = LAYERS[name]
    x = np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)
    for kink in kinks:
        # Central differences with step 1e-2 must not straddle a kink.
        near = np.abs(x - kink) < 0.05
        x[near] = kink + np.float32(0.05) * np.where(x[near] >= kink, 1, -1)
    return x


def _setup_in_place(text, x, phase=TEST):
    layer = make_layer(text, phase)
    blobs = blobs_from(x)
    layer.layer_setup(blobs, blobs)
    return layer, blobs


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_forward_matches_numpy(name):
    text, _, _, reference = LAYERS[name]
    x = _x(name)
    layer, bottoms, tops = setup_layer(text, [x])
    layer.layer_forward(bottoms, tops)
    np.testing.assert_allclose(tops[0].data, reference(x.astype(np.float64)), rtol=KERNEL_RTOL,
                               atol=KERNEL_ATOL, err_msg=name)
    np.testing.assert_array_equal(bottoms[0].data, x)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_gradient_matches_central_differences(name):
    text = LAYERS[name][0]
    layer, bottoms, tops = setup_layer(text, [_x(name)], phase=TRAIN)
    if layer.type == "PReLU":
        # A slope other than the filler's 0.25 per channel, so channels differ.
        layer.blobs[0].data[...] = np.linspace(0.1, 0.4, layer.blobs[0].count).reshape(
            layer.blobs[0].shape)
    check_gradient(layer, bottoms, tops)


# AbsVal refuses in-place use (test_absval_refuses_in_place).
@pytest.mark.parametrize("name", [name for name in sorted(LAYERS) if name != "absval"])
def test_in_place_matches_out_of_place(name):
    text = LAYERS[name][0]
    x = _x(name)
    dy = np.random.default_rng(5).standard_normal(SHAPE).astype(np.float32)
    layer, bottoms, tops = setup_layer(text, [x], phase=TRAIN)
    global_rng.set_random_seed(7)
    layer.layer_forward(bottoms, tops)
    tops[0].diff[...] = dy
    layer.backward(tops, [True], bottoms)

    in_place, blobs = _setup_in_place(text, x, phase=TRAIN)
    global_rng.set_random_seed(7)
    in_place.layer_forward(blobs, blobs)
    np.testing.assert_array_equal(blobs[0].data, tops[0].data)
    blobs[0].diff[...] = dy
    in_place.backward(blobs, [True], blobs)
    np.testing.assert_array_equal(blobs[0].diff, bottoms[0].diff)
    for ours, theirs in zip(in_place.blobs, layer.blobs):
        np.testing.assert_array_equal(ours.diff, theirs.diff)


@pytest.mark.parametrize("name", ["relu", "sigmoid", "prelu", "power"])
def test_propagate_down_false_leaves_bottom_diff_untouched(name):
    layer, bottoms, tops = setup_layer(LAYERS[name][0], [_x(name)])
    layer.layer_forward(bottoms, tops)
    bottoms[0].diff[...] = 42
    tops[0].diff[...] = 1
    layer.backward(tops, [False], bottoms)
    assert np.all(bottoms[0].diff == 42)


# ---- PReLU --------------------------------------------------------------------------------------

def test_prelu_blob_shapes_and_default_filler():
    layer, _, _ = setup_layer('type: "PReLU"', [np.zeros(SHAPE)])
    assert layer.blobs[0].shape == (3,) and np.all(layer.blobs[0].data == np.float32(0.25))
    shared, _, _ = setup_layer('type: "PReLU" prelu_param { channel_shared: true }',
                               [np.zeros(SHAPE)])
    assert shared.blobs[0].shape == () and shared.blobs[0].data == np.float32(0.25)
    filled, _, _ = setup_layer(
        'type: "PReLU" prelu_param { filler { type: "constant" value: 0.5 } }', [np.zeros(SHAPE)])
    assert np.all(filled.blobs[0].data == 0.5)


def test_prelu_slope_gradient_accumulates():
    x = _x("prelu")
    layer, bottoms, tops = setup_layer('type: "PReLU"', [x])
    layer.layer_forward(bottoms, tops)
    tops[0].diff[...] = 1
    layer.blobs[0].diff[...] = 0
    layer.backward(tops, [False], bottoms)
    once = layer.blobs[0].diff.copy()
    np.testing.assert_allclose(once, np.minimum(x, 0).sum(axis=(0, 2, 3)), rtol=KERNEL_RTOL)
    layer.backward(tops, [False], bottoms)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * once, rtol=KERNEL_RTOL)


def test_prelu_rejects_bad_bottoms_and_blobs():
    with pytest.raises(ProtonetError, match="at least 2 axes"):
        setup_layer('type: "PReLU"', [np.zeros(5)])
    layer = make_layer('type: "PReLU"')
    layer.blobs = [Blob(4)]
    with pytest.raises(ProtonetError, match="3 element"):
        layer.layer_setup(blobs_from(np.zeros(SHAPE)), [Blob()])


# ---- Dropout ------------------------------------------------------------------------------------

DROPOUT = 'type: "Dropout" dropout_param { dropout_ratio: 0.3 }'


def test_dropout_train_keeps_rate_and_scales_by_inverse_keep_probability():
    x = np.ones((50, 40, 10), np.float32)
    layer, bottoms, tops = setup_layer(DROPOUT, [x], phase=TRAIN)
    global_rng.set_random_seed(1)
    layer.layer_forward(bottoms, tops)
    y = tops[0].data
    kept = y != 0
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.7)}
    # 20000 Bernoulli(0.7) draws: the standard deviation of the rate is 0.0032.
    assert abs(kept.mean() - 0.7) < 0.015
    assert abs(y.mean() - 1.0) < 0.025


def test_dropout_backward_uses_the_forward_mask():
    x = _x("dropout_test")
    layer, bottoms, tops = setup_layer(DROPOUT, [x], phase=TRAIN)
    layer.layer_forward(bottoms, tops)
    mask = tops[0].data / x
    dy = np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)
    tops[0].diff[...] = dy
    layer.backward(tops, [True], bottoms)
    np.testing.assert_allclose(bottoms[0].diff, dy * mask, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


def test_dropout_masks_repeat_with_the_seed_and_differ_without():
    layer, bottoms, tops = setup_layer(DROPOUT, [np.ones(SHAPE)], phase=TRAIN)
    global_rng.set_random_seed(3)
    layer.layer_forward(bottoms, tops)
    first = tops[0].data.copy()
    layer.layer_forward(bottoms, tops)
    assert not np.array_equal(first, tops[0].data)
    global_rng.set_random_seed(3)
    layer.layer_forward(bottoms, tops)
    np.testing.assert_array_equal(first, tops[0].data)


def test_dropout_test_phase_is_identity_both_ways():
    x = _x("dropout_test")
    layer, bottoms, tops = setup_layer(DROPOUT, [x], phase=TEST)
    layer.layer_forward(bottoms, tops)
    np.testing.assert_array_equal(tops[0].data, x)
    tops[0].diff[...] = 3
    layer.backward(tops, [True], bottoms)
    assert np.all(bottoms[0].diff == 3)


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_dropout_rejects_impossible_ratio(ratio):
    with pytest.raises(ProtonetError, match="dropout_ratio"):
        setup_layer(f'type: "Dropout" dropout_param {{ dropout_ratio: {ratio} }}', [np.ones(3)])


# ---- Caffe's checks and special cases -----------------------------------------------------------

def test_absval_refuses_in_place():
    layer = make_layer('type: "AbsVal"')
    assert layer.allow_in_place is False
    blobs = blobs_from(np.ones(3))
    with pytest.raises(ProtonetError, match="in-place"):
        layer.layer_setup(blobs, blobs)


def test_threshold_forward_and_no_backward():
    x = np.array([-1.0, 0.2, 0.21, 3.0], np.float32)
    layer, bottoms, tops = setup_layer('type: "Threshold" threshold_param { threshold: 0.2 }', [x])
    layer.layer_forward(bottoms, tops)
    np.testing.assert_array_equal(tops[0].data, [0, 0, 1, 1])
    layer.backward(tops, [False], bottoms)
    with pytest.raises(ProtonetError, match="no backward"):
        layer.backward(tops, [True], bottoms)


@pytest.mark.parametrize("kind", ["Exp", "Log"])
@pytest.mark.parametrize("base", [0, -2])
def test_exp_and_log_reject_non_positive_base(kind, base):
    with pytest.raises(ProtonetError, match="strictly positive"):
        setup_layer(f'type: "{kind}" {kind.lower()}_param {{ base: {base} }}', [np.ones(3)])


def test_log_rejects_base_one():
    with pytest.raises(ProtonetError, match="infinite"):
        setup_layer('type: "Log" log_param { base: 1 }', [np.ones(3)])


def test_clip_rejects_min_above_max():
    with pytest.raises(ProtonetError, match="greater than max"):
        setup_layer('type: "Clip" clip_param { min: 1 max: 0 }', [np.ones(3)])


@pytest.mark.parametrize("text, value", [
    ('power_param { power: 2 scale: 0 shift: 3 }', 9.0),
    ('power_param { power: 0 scale: 2 shift: 3 }', 1.0),
])
def test_power_ignores_input_when_scale_or_power_is_zero(text, value):
    x = _x("power")
    layer, bottoms, tops = setup_layer(f'type: "Power" {text}', [x])
    layer.layer_forward(bottoms, tops)
    assert np.all(tops[0].data == value)
    tops[0].diff[...] = 1
    layer.backward(tops, [True], bottoms)
    assert np.all(bottoms[0].diff == 0)
