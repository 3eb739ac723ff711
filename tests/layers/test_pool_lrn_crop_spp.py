"""Pooling, LRN, Crop and SPP layers: Caffe's shapes and checks, values, gradients, sampling.

Conformance against BVLC Caffe's own outputs lives in tests/conformance (cases pool_*, lrn_*,
crop, spp); here the layers are checked against float64 references of their formulas.
"""

import numpy as np
import pytest

from protonet import rng as global_rng
from protonet.errors import ProtonetError
from tests.helpers.gradcheck import check_gradient
from tests.helpers.layers import TEST, TRAIN, setup_layer
from tests.helpers.tolerances import KERNEL_ATOL, KERNEL_RTOL

# Sampling tests: allowed deviation of a frequency from its probability, in binomial sigmas.
SAMPLING_SIGMAS = 5.0
# Max-pooling gradient checks move inputs by GRAD_STEP; inputs are spaced wider than that so
# no perturbation changes a window's argmax.
MAX_POOL_INPUT_SPACING = 0.05
# Gradient checks perturb at most this many (random) elements per bottom: the kernel tests
# already compare every backward element with a reference, and the machine is small.
GRAD_MAX_ELEMENTS = 48


@pytest.fixture
def rng():
    return np.random.default_rng(4321)


@pytest.fixture(autouse=True)
def seeded_global_rng():
    global_rng.set_random_seed(1701)


def spaced_values(rng, shape):
    """Distinct values, spaced MAX_POOL_INPUT_SPACING apart, in random order."""
    count = int(np.prod(shape))
    return (rng.permutation(count) - count / 2).reshape(shape) * MAX_POOL_INPUT_SPACING


def pooling_text(method, fields):
    return f'type: "Pooling" pooling_param {{ pool: {method} {fields} }}'


# ---- a float64 reference for pooling ----------------------------------------------------------

def ref_pool(x, kernel, stride, pad, method, top_hw):
    """MAX or AVE pooling by Caffe's definition (AVE divides by the window clipped to in+pad)."""
    n, c, h, w = x.shape
    out = np.zeros((n, c) + tuple(top_hw))
    for oy in range(top_hw[0]):
        for ox in range(top_hw[1]):
            y0, x0 = oy * stride[0] - pad[0], ox * stride[1] - pad[1]
            y1, x1 = min(y0 + kernel[0], h + pad[0]), min(x0 + kernel[1], w + pad[1])
            size = (y1 - y0) * (x1 - x0)
            window = x[:, :, max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)].astype(np.float64)
            if method == "MAX":
                out[:, :, oy, ox] = window.max(axis=(2, 3))
            else:
                out[:, :, oy, ox] = window.sum(axis=(2, 3)) / size
    return out


# ---- Pooling: output size and checks ----------------------------------------------------------

@pytest.mark.parametrize("fields, in_hw, out_hw", [
    ("kernel_size: 3 stride: 2", (8, 8), (4, 4)),                 # ceil((8-3)/2)+1 = 4
    ("kernel_size: 3 stride: 2 round_mode: FLOOR", (8, 8), (3, 3)),
    ("kernel_size: 2 stride: 2", (7, 9), (4, 5)),                 # ceil keeps the partial window
    ("kernel_size: 2 stride: 2 pad: 1", (5, 5), (3, 3)),          # ceil gives 4, clipped to 3
    ("kernel_size: 2 stride: 2 pad: 1 round_mode: FLOOR", (5, 5), (3, 3)),
    ("kernel_size: 3 stride: 2 pad: 1", (7, 6), (4, 4)),
    # pad on one axis clips the other axis too: width alone would give ceil(4/3)+1 = 3
    ("kernel_h: 3 kernel_w: 1 stride: 3 pad_h: 1 pad_w: 0", (4, 5), (2, 2)),
    ("kernel_h: 1 kernel_w: 1 stride: 3", (4, 5), (2, 3)),        # no pad: no clipping
    ("global_pooling: true", (5, 6), (1, 1)),
], ids=str)
def test_pooling_output_size_follows_caffe_ceil_then_clip_rule(rng, fields, in_hw, out_hw):
    x = rng.standard_normal((2, 3) + in_hw)
    _, _, tops = setup_layer(pooling_text("AVE", fields), [x])
    assert tops[0].shape == (2, 3) + out_hw


@pytest.mark.parametrize("text, message", [
    (pooling_text("MAX", "kernel_size: 2 pad: 2"), "pad"),
    (pooling_text("AVE", "kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 2"), "smaller than the kernel"),
    (pooling_text("MAX", "kernel_size: 9"), "larger than the padded input"),
    (pooling_text("MAX", "stride: 2"), "kernel_size"),
    (pooling_text("MAX", "global_pooling: true kernel_size: 2"), "global_pooling"),
    (pooling_text("MAX", "global_pooling: true stride: 2"), "global_pooling"),
    (pooling_text("MAX", "kernel_size: 2 kernel_h: 3"), "kernel_size given together"),
    (pooling_text("MAX", "kernel_size: 2 pad_h: 1"), "pad_h given without pad_w"),
    (pooling_text("MAX", "kernel_size: 2 stride: 0"), "stride must be positive"),
    (pooling_text("MAX", "kernel_size: 0"), "kernel size must be positive"),
    (pooling_text("STOCHASTIC", "kernel_size: 3 pad: 1"), "only for MAX and AVE"),
], ids=str)
def test_pooling_rejects_impossible_parameters_with_the_numbers(rng, text, message):
    with pytest.raises(ProtonetError, match=message):
        setup_layer(text, [rng.standard_normal((1, 2, 6, 6))])


def test_pooling_mask_top_only_for_max(rng):
    with pytest.raises(ProtonetError, match="mask"):
        setup_layer(pooling_text("AVE", "kernel_size: 2"), [rng.standard_normal((1, 1, 4, 4))],
                    n_tops=2)


def test_pooling_needs_four_axes(rng):
    with pytest.raises(ProtonetError, match="4 axes"):
        setup_layer(pooling_text("MAX", "kernel_size: 2"), [rng.standard_normal((2, 4, 4))])


# ---- Pooling: values and gradients ------------------------------------------------------------

GEOMETRY_FIELDS = [
    ("kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0)),
    ("kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1)),
    ("kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2", (2, 3), (1, 2), (0, 0)),
    ("kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0", (3, 2), (2, 1), (1, 0)),
    ("kernel_size: 2 stride: 2 round_mode: FLOOR", (2, 2), (2, 2), (0, 0)),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("fields, kernel, stride, pad", GEOMETRY_FIELDS, ids=str)
def test_pooling_forward_matches_reference(rng, method, fields, kernel, stride, pad):
    x = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
    layer, bottoms, tops = setup_layer(pooling_text(method, fields), [x])
    layer.layer_forward(bottoms, tops)
    expected = ref_pool(x, kernel, stride, pad, method, tops[0].shape[2:])
    np.testing.assert_allclose(tops[0].data, expected, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    np.testing.assert_array_equal(bottoms[0].data, x)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("fields", [g[0] for g in GEOMETRY_FIELDS] + ["global_pooling: true"],
                         ids=str)
def test_pooling_gradient_is_correct(rng, method, fields):
    x = spaced_values(rng, (2, 2, 6, 5))
    layer, bottoms, tops = setup_layer(pooling_text(method, fields), [x], phase=TRAIN)
    check_gradient(layer, bottoms, tops, max_elements=GRAD_MAX_ELEMENTS)


def test_pooling_mask_top_holds_argmax_indices_and_drives_backward(rng):
    x = spaced_values(rng, (1, 2, 4, 4))
    layer, bottoms, tops = setup_layer(pooling_text("MAX", "kernel_size: 2 stride: 2"), [x],
                                       n_tops=2)
    layer.layer_forward(bottoms, tops)
    windows = x.reshape(1, 2, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(1, 2, 2, 2, 4)
    rows, cols = np.divmod(windows.argmax(axis=-1), 2)
    expected = (np.arange(2)[:, None] * 2 + rows) * 4 + (np.arange(2)[None, :] * 2 + cols)
    np.testing.assert_array_equal(tops[1].data, expected.astype(np.float32))

    # Caffe routes the gradient by the mask top's data: redirect one output to position 0.
    tops[1].data[0, 0, 0, 0] = 0
    tops[0].diff[...] = 1
    layer.backward(tops, [True], bottoms)
    expected_diff = np.zeros_like(x)
    flat = expected_diff.reshape(1, 2, 16)
    for j in range(2):
        np.add.at(flat[0, j], tops[1].data[0, j].reshape(-1).astype(int), 1)
    np.testing.assert_array_equal(bottoms[0].diff, expected_diff)


def test_pooling_backward_leaves_diff_alone_without_propagate_down(rng):
    x = rng.standard_normal((1, 1, 4, 4))
    layer, bottoms, tops = setup_layer(pooling_text("AVE", "kernel_size: 2"), [x])
    layer.layer_forward(bottoms, tops)
    bottoms[0].diff[...] = 7
    tops[0].diff[...] = 1
    layer.backward(tops, [False], bottoms)
    assert np.all(bottoms[0].diff == 7)


def test_pooling_reshapes_with_its_input(rng):
    layer, bottoms, tops = setup_layer(pooling_text("MAX", "global_pooling: true"),
                                       [rng.standard_normal((1, 2, 3, 3))])
    x = rng.standard_normal((2, 2, 5, 4)).astype(np.float32)
    bottoms[0].reshape(x.shape)
    bottoms[0].data[...] = x
    layer.layer_forward(bottoms, tops)
    np.testing.assert_array_equal(tops[0].data, x.max(axis=(2, 3), keepdims=True))


# ---- STOCHASTIC pooling -----------------------------------------------------------------------

def test_stochastic_pooling_samples_in_proportion_to_activations():
    planes = 4000
    values = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    x = np.broadcast_to(values.reshape(1, 1, 2, 2), (planes, 1, 2, 2)).copy()
    layer, bottoms, tops = setup_layer(pooling_text("STOCHASTIC", "kernel_size: 2"), [x],
                                       phase=TRAIN)
    layer.layer_forward(bottoms, tops)
    counts = np.array([(tops[0].data == v).sum() for v in values])
    assert counts.sum() == planes
    probability = values / values.sum()
    sigma = np.sqrt(planes * probability * (1 - probability))
    assert np.all(np.abs(counts - planes * probability) < SAMPLING_SIGMAS * sigma), counts


def test_stochastic_pooling_backward_routes_to_the_sampled_position(rng):
    x = rng.random((3, 2, 6, 6)).astype(np.float32) + 0.1
    layer, bottoms, tops = setup_layer(pooling_text("STOCHASTIC", "kernel_size: 3 stride: 2"),
                                       [x], phase=TRAIN)
    layer.layer_forward(bottoms, tops)
    top_diff = rng.standard_normal(tops[0].shape).astype(np.float32)
    tops[0].diff[...] = top_diff
    layer.backward(tops, [True], bottoms)
    # Reconstruct the choice from the forward: the sampled value sits in its window.
    expected = np.zeros_like(x)
    index = layer.op.index
    for i, j, oy, ox in np.ndindex(*tops[0].shape):
        y, xx = divmod(int(index[i, j, oy, ox]), 6)
        assert oy * 2 <= y < oy * 2 + 3 and ox * 2 <= xx < ox * 2 + 3
        assert x[i, j, y, xx] == tops[0].data[i, j, oy, ox]
        expected[i, j, y, xx] += top_diff[i, j, oy, ox]
    np.testing.assert_allclose(bottoms[0].diff, expected, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


def test_stochastic_pooling_repeats_with_the_same_seed(rng):
    x = rng.random((2, 3, 6, 6)).astype(np.float32)
    layer, bottoms, tops = setup_layer(pooling_text("STOCHASTIC", "kernel_size: 2"), [x],
                                       phase=TRAIN)
    global_rng.set_random_seed(5)
    layer.layer_forward(bottoms, tops)
    first = tops[0].data.copy()
    global_rng.set_random_seed(5)
    layer.layer_forward(bottoms, tops)
    np.testing.assert_array_equal(tops[0].data, first)


def test_stochastic_pooling_test_phase_gives_probability_weighted_average(rng):
    x = rng.random((2, 3, 4, 6)).astype(np.float32)
    x[0, 0] = 0  # Σx = 0 windows give 0
    layer, bottoms, tops = setup_layer(pooling_text("STOCHASTIC", "kernel_size: 2 stride: 2"),
                                       [x], phase=TEST)
    layer.layer_forward(bottoms, tops)
    windows = x.astype(np.float64).reshape(2, 3, 2, 2, 3, 2)
    total = windows.sum(axis=(3, 5))
    squares = (windows ** 2).sum(axis=(3, 5))
    expected = np.divide(squares, total, out=np.zeros_like(total), where=total > 0)
    np.testing.assert_allclose(tops[0].data, expected, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    with pytest.raises(ProtonetError, match="TEST"):
        layer.backward(tops, [True], bottoms)


# ---- LRN --------------------------------------------------------------------------------------

def ref_lrn(x, size, alpha, beta, k, region):
    """Float64 LRN by the formulas in Caffe's LRN documentation (WITHIN: k ignored)."""
    x = x.astype(np.float64)
    pre = (size - 1) // 2
    if region == "ACROSS_CHANNELS":
        padded = np.pad(x ** 2, ((0, 0), (pre, pre), (0, 0), (0, 0)))
        sums = sum(padded[:, d:d + x.shape[1]] for d in range(size))
        return x * (k + alpha / size * sums) ** -beta
    padded = np.pad(x ** 2, ((0, 0), (0, 0), (pre, pre), (pre, pre)))
    h, w = x.shape[2:]
    sums = sum(padded[:, :, dy:dy + h, dx:dx + w] for dy in range(size) for dx in range(size))
    return x * (1 + alpha / size ** 2 * sums) ** -beta


LRN_CASES = [
    ("ACROSS_CHANNELS", 5, 1.0, 0.75, 1.0),
    ("ACROSS_CHANNELS", 3, 0.5, 0.75, 2.0),
    ("ACROSS_CHANNELS", 1, 2.0, 0.5, 1.0),
    ("WITHIN_CHANNEL", 3, 0.5, 0.75, 1.0),
    ("WITHIN_CHANNEL", 3, 1.0, 0.5, 5.0),   # k ignored
    ("WITHIN_CHANNEL", 5, 2.0, 0.75, 1.0),
]


def lrn_text(region, size, alpha, beta, k):
    return (f'type: "LRN" lrn_param {{ norm_region: {region} local_size: {size} '
            f'alpha: {alpha} beta: {beta} k: {k} }}')


@pytest.mark.parametrize("region, size, alpha, beta, k", LRN_CASES, ids=str)
def test_lrn_forward_matches_formula(rng, region, size, alpha, beta, k):
    x = rng.standard_normal((2, 6, 5, 4)).astype(np.float32)
    layer, bottoms, tops = setup_layer(lrn_text(region, size, alpha, beta, k), [x])
    layer.layer_forward(bottoms, tops)
    np.testing.assert_allclose(tops[0].data, ref_lrn(x, size, alpha, beta, k, region),
                               rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    np.testing.assert_array_equal(bottoms[0].data, x)


@pytest.mark.parametrize("region, size, alpha, beta, k", LRN_CASES, ids=str)
def test_lrn_gradient_is_correct(rng, region, size, alpha, beta, k):
    x = rng.standard_normal((2, 5, 4, 3))
    layer, bottoms, tops = setup_layer(lrn_text(region, size, alpha, beta, k), [x], phase=TRAIN)
    check_gradient(layer, bottoms, tops, max_elements=GRAD_MAX_ELEMENTS)


def test_lrn_rejects_even_local_size(rng):
    with pytest.raises(ProtonetError, match="local_size must be odd, got 4"):
        setup_layer('type: "LRN" lrn_param { local_size: 4 }', [rng.standard_normal((1, 3, 2, 2))])


# ---- Crop -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, slices", [
    ("", (slice(None), slice(None), slice(0, 4), slice(0, 5))),
    ("offset: 2", (slice(None), slice(None), slice(2, 6), slice(2, 7))),
    ("axis: 2 offset: 1 offset: 3", (slice(None), slice(None), slice(1, 5), slice(3, 8))),
    ("axis: -1 offset: 2", (slice(None), slice(None), slice(None), slice(2, 7))),
    ("axis: 1 offset: 0 offset: 1 offset: 2",
     (slice(None), slice(0, 2), slice(1, 5), slice(2, 7))),
], ids=str)
def test_crop_forward_and_backward_cut_the_window(rng, fields, slices):
    x = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
    reference = np.zeros((2, 2, 4, 5), dtype=np.float32)
    layer, bottoms, tops = setup_layer(f'type: "Crop" crop_param {{ {fields} }}', [x, reference])
    layer.layer_forward(bottoms, tops)
    np.testing.assert_array_equal(tops[0].data, x[slices])
    top_diff = rng.standard_normal(tops[0].shape).astype(np.float32)
    tops[0].diff[...] = top_diff
    bottoms[0].diff[...] = 9
    bottoms[1].diff[...] = 9
    layer.backward(tops, [True, False], bottoms)
    expected = np.zeros_like(x)
    expected[slices] = top_diff
    np.testing.assert_array_equal(bottoms[0].diff, expected)
    assert np.all(bottoms[1].diff == 9)


def test_crop_gradient_is_correct(rng):
    x = rng.standard_normal((2, 2, 5, 6))
    layer, bottoms, tops = setup_layer('type: "Crop" crop_param { offset: 1 }',
                                       [x, np.zeros((2, 2, 3, 4))])
    check_gradient(layer, bottoms, tops, check_bottoms=[0])


@pytest.mark.parametrize("fields, ref_shape, message", [
    ("offset: 1 offset: 2 offset: 3", (2, 3, 4, 5), "offset given 3 times for 2 cropped axes"),
    ("offset: 4", (2, 3, 4, 5), "out of bounds"),
    ("axis: 4", (2, 3, 4, 5), "out of range"),
    ("", (2, 3, 4), "fewer than"),
], ids=str)
def test_crop_rejects_bad_offsets_and_shapes(rng, fields, ref_shape, message):
    with pytest.raises(ProtonetError, match=message):
        setup_layer(f'type: "Crop" crop_param {{ {fields} }}',
                    [rng.standard_normal((2, 3, 7, 8)), np.zeros(ref_shape)])


# ---- SPP --------------------------------------------------------------------------------------

def ref_spp(x, pyramid_height, method):
    """Level l: kernel ceil(size/2^l) = stride, pad (kernel·2^l − size + 1)//2 (spp_layer.cpp)."""
    n, c, h, w = x.shape
    parts = []
    for level in range(pyramid_height):
        bins = 2 ** level
        kernel = (-(-h // bins), -(-w // bins))
        pad = ((kernel[0] * bins - h + 1) // 2, (kernel[1] * bins - w + 1) // 2)
        top_hw = []
        for size, k, p in zip((h, w), kernel, pad):
            out = -(-(size + 2 * p - k) // k) + 1
            if pad != (0, 0) and (out - 1) * k >= size + p:
                out -= 1
            top_hw.append(out)
        parts.append(ref_pool(x, kernel, kernel, pad, method, top_hw).reshape(n, -1))
    return np.concatenate(parts, axis=1)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("pyramid_height, in_hw", [(2, (7, 8)), (3, (9, 12)), (3, (8, 8))],
                         ids=str)
def test_spp_forward_matches_composed_pooling(rng, method, pyramid_height, in_hw):
    x = rng.standard_normal((2, 3) + in_hw).astype(np.float32)
    layer, bottoms, tops = setup_layer(
        f'type: "SPP" spp_param {{ pyramid_height: {pyramid_height} pool: {method} }}', [x])
    layer.layer_forward(bottoms, tops)
    np.testing.assert_allclose(tops[0].data, ref_spp(x, pyramid_height, method),
                               rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


def test_spp_with_one_level_keeps_the_pooling_shape(rng):
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    layer, bottoms, tops = setup_layer('type: "SPP" spp_param { pyramid_height: 1 }', [x])
    layer.layer_forward(bottoms, tops)
    assert tops[0].shape == (2, 3, 1, 1)
    np.testing.assert_array_equal(tops[0].data, x.max(axis=(2, 3), keepdims=True))


@pytest.mark.parametrize("method, pyramid_height", [("MAX", 1), ("MAX", 2), ("AVE", 3)],
                         ids=str)
def test_spp_gradient_is_correct(rng, method, pyramid_height):
    x = spaced_values(rng, (2, 2, 8, 7))
    layer, bottoms, tops = setup_layer(
        f'type: "SPP" spp_param {{ pyramid_height: {pyramid_height} pool: {method} }}', [x],
        phase=TRAIN)
    check_gradient(layer, bottoms, tops, max_elements=GRAD_MAX_ELEMENTS)


def test_spp_rejects_levels_whose_pad_reaches_the_kernel(rng):
    # height 5 at level 2: kernel 2, pad (2·4 − 5 + 1) // 2 = 2; Caffe's Pooling check fails too
    with pytest.raises(ProtonetError, match="pyramid level 2.*pad"):
        setup_layer('type: "SPP" spp_param { pyramid_height: 3 }',
                    [rng.standard_normal((1, 1, 5, 8))])


def test_spp_requires_pyramid_height(rng):
    with pytest.raises(ProtonetError, match="pyramid_height"):
        setup_layer('type: "SPP" spp_param { pool: MAX }', [rng.standard_normal((1, 1, 4, 4))])


def test_spp_reshapes_with_its_input(rng):
    layer, bottoms, tops = setup_layer('type: "SPP" spp_param { pyramid_height: 2 pool: AVE }',
                                       [rng.standard_normal((1, 2, 4, 4))])
    x = rng.standard_normal((3, 2, 7, 9)).astype(np.float32)
    bottoms[0].reshape(x.shape)
    bottoms[0].data[...] = x
    layer.layer_forward(bottoms, tops)
    np.testing.assert_allclose(tops[0].data, ref_spp(x, 2, "AVE"), rtol=KERNEL_RTOL,
                               atol=KERNEL_ATOL)
