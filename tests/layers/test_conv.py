"""Convolution, Deconvolution and Im2col: forward against slow NumPy references, gradients by
central differences, Caffe's checks and defaults."""

import itertools

import numpy as np
import pytest

from protonet.blob import Blob
from protonet.errors import ProtonetError
from protonet.layers.vision import conv as conv_module

from tests.helpers.gradcheck import check_gradient
from tests.helpers.layers import blobs_from, make_layer, setup_layer
from tests.helpers.tolerances import LAYER_RTOL, conformance_atol
from tests.kernels.test_im2col import im2col_reference

GRAD_MAX_ELEMENTS = 60


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


def _random(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def assert_close(ours, ref):
    np.testing.assert_allclose(ours, ref, rtol=LAYER_RTOL, atol=conformance_atol(ref))


# ---- references ---------------------------------------------------------------------------

def _window(offset, dilation, stride, count):
    return slice(offset * dilation, offset * dilation + stride * (count - 1) + 1, stride)


def conv_reference(x, w, b, stride, pad, dilation, group):
    """Direct grouped cross-correlation in float64: one strided window per kernel offset."""
    x = x.astype(np.float64)
    n, c = x.shape[:2]
    m, ksize = w.shape[0], w.shape[2:]
    cg, mg = c // group, m // group
    out = tuple((i + 2 * p - (d * (k - 1) + 1)) // s + 1
                for i, k, p, s, d in zip(x.shape[2:], ksize, pad, stride, dilation))
    padded = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    y = np.zeros((n, m) + out)
    for g in range(group):
        for offset in itertools.product(*(range(k) for k in ksize)):
            window = tuple(_window(o, d, s, q) for o, d, s, q in zip(offset, dilation, stride, out))
            patch = padded[(slice(None), slice(g * cg, (g + 1) * cg)) + window]
            weights = w[(slice(g * mg, (g + 1) * mg), slice(None)) + offset].astype(np.float64)
            y[:, g * mg:(g + 1) * mg] += np.einsum("oc,nc...->no...", weights, patch)
    if b is not None:
        y += b.astype(np.float64).reshape((1, m) + (1,) * len(out))
    return y


def deconv_reference(x, w, b, stride, pad, dilation, group):
    """Direct transposed convolution in float64: scatter every input into the full output."""
    x = x.astype(np.float64)
    n, c = x.shape[:2]
    mg, ksize = w.shape[1], w.shape[2:]
    cg, m = c // group, w.shape[1] * group
    full = tuple(s * (i - 1) + d * (k - 1) + 1
                 for i, k, s, d in zip(x.shape[2:], ksize, stride, dilation))
    y = np.zeros((n, m) + full)
    for g in range(group):
        for offset in itertools.product(*(range(k) for k in ksize)):
            window = tuple(_window(o, d, s, q)
                           for o, d, s, q in zip(offset, dilation, stride, x.shape[2:]))
            weights = w[(slice(g * cg, (g + 1) * cg), slice(None)) + offset].astype(np.float64)
            contribution = np.einsum("cm,nc...->nm...", weights, x[:, g * cg:(g + 1) * cg])
            y[(slice(None), slice(g * mg, (g + 1) * mg)) + window] += contribution
    crop = tuple(slice(p, size - p) for p, size in zip(pad, full))
    y = y[(slice(None), slice(None)) + crop]
    if b is not None:
        y += b.astype(np.float64).reshape((1, m) + (1,) * len(full))
    return y


def conv_text(layer_type="Convolution", **fields):
    """A layer prototxt with convolution_param fields (lists become repeated fields)."""
    lines = []
    for name, value in fields.items():
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            item = str(item).lower() if isinstance(item, bool) else item
            lines.append(f"{name}: {item}")
    return f'type: "{layer_type}" convolution_param {{ {" ".join(lines)} }}'


def build(rng, text, bottom_shapes):
    """Set up a layer on random bottoms and give it random params."""
    layer, bottoms, tops = setup_layer(text, [_random(rng, s) for s in bottom_shapes],
                                       n_tops=len(bottom_shapes))
    for blob in layer.blobs:
        blob.data[...] = _random(rng, blob.shape)
    return layer, bottoms, tops


def _params(layer):
    bias = layer.blobs[1].data if len(layer.blobs) > 1 else None
    return layer.blobs[0].data, bias


# (bottom shape, convolution_param fields, expected (stride, pad, dilation, group))
CONV_CASES = [
    ((2, 3, 7, 7), dict(num_output=4, kernel_size=3), ((1, 1), (0, 0), (1, 1), 1)),
    ((2, 3, 9, 8), dict(num_output=5, kernel_size=3, pad=1, stride=2),
     ((2, 2), (1, 1), (1, 1), 1)),
    ((1, 4, 6, 6), dict(num_output=6, kernel_size=3, pad=1, group=2), ((1, 1), (1, 1), (1, 1), 2)),
    ((2, 4, 6, 5), dict(num_output=4, kernel_size=3, pad=1, group=4), ((1, 1), (1, 1), (1, 1), 4)),
    ((2, 3, 9, 9), dict(num_output=2, kernel_size=3, dilation=2, pad=2),
     ((1, 1), (2, 2), (2, 2), 1)),
    ((2, 2, 8, 9), dict(num_output=3, kernel_h=3, kernel_w=5, pad_h=1, pad_w=2, stride_h=2,
                        stride_w=1), ((2, 1), (1, 2), (1, 1), 1)),
    ((2, 3, 11, 10), dict(num_output=2, kernel_size=4, stride=3, bias_term=False),
     ((3, 3), (0, 0), (1, 1), 1)),
    ((3, 5, 4, 3), dict(num_output=7, kernel_size=1), ((1, 1), (0, 0), (1, 1), 1)),
    ((2, 4, 5, 5), dict(num_output=4, kernel_size=1, stride=2, group=2),
     ((2, 2), (0, 0), (1, 1), 2)),
    ((2, 3, 7, 6), dict(num_output=2, kernel_size=[3, 2], pad=[2, 1], stride=[1, 2],
                        dilation=[1, 3]), ((1, 2), (2, 1), (1, 3), 1)),
    ((2, 2, 5, 6, 5), dict(num_output=3, kernel_size=3, pad=1, stride=2),
     ((2, 2, 2), (1, 1, 1), (1, 1, 1), 1)),
    ((2, 2, 9), dict(num_output=3, kernel_size=4, stride=2, pad=1), ((2,), (1,), (1,), 1)),
]

DECONV_CASES = [
    ((2, 4, 5, 5), dict(num_output=3, kernel_size=4, stride=2, pad=1),
     ((2, 2), (1, 1), (1, 1), 1)),
    ((2, 4, 4, 6), dict(num_output=4, kernel_size=3, group=2, bias_term=False),
     ((1, 1), (0, 0), (1, 1), 2)),
    ((1, 2, 3, 4), dict(num_output=3, kernel_h=3, kernel_w=2, stride_h=3, stride_w=2, pad_h=1,
                        dilation=2), ((3, 2), (1, 0), (2, 2), 1)),
    ((2, 3, 4, 4), dict(num_output=2, kernel_size=1), ((1, 1), (0, 0), (1, 1), 1)),
    ((1, 2, 3, 2, 3), dict(num_output=2, kernel_size=2, stride=2), ((2, 2, 2), (0, 0, 0),
                                                                    (1, 1, 1), 1)),
]


def _ids(cases):
    return [f"{shape}-{','.join(f'{k}={v}' for k, v in fields.items())}"
            for shape, fields, _ in cases]


# ---- forward ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,fields,geometry", CONV_CASES, ids=_ids(CONV_CASES))
def test_convolution_forward_matches_direct_reference(rng, shape, fields, geometry):
    layer, bottoms, tops = build(rng, conv_text(**fields), [shape])
    layer.layer_forward(bottoms, tops)
    expected = conv_reference(bottoms[0].data, *_params(layer), *geometry)
    assert tops[0].shape == expected.shape
    assert_close(tops[0].data, expected)


@pytest.mark.parametrize("shape,fields,geometry", DECONV_CASES, ids=_ids(DECONV_CASES))
def test_deconvolution_forward_matches_direct_reference(rng, shape, fields, geometry):
    layer, bottoms, tops = build(rng, conv_text("Deconvolution", **fields), [shape])
    layer.layer_forward(bottoms, tops)
    expected = deconv_reference(bottoms[0].data, *_params(layer), *geometry)
    assert tops[0].shape == expected.shape
    assert_close(tops[0].data, expected)


def test_deconvolution_weights_are_input_channels_by_outputs_per_group(rng):
    layer, _, _ = build(rng, conv_text("Deconvolution", num_output=6, kernel_size=3, group=2),
                        [(1, 4, 3, 3)])
    assert [blob.shape for blob in layer.blobs] == [(4, 3, 3, 3), (6,)]


def test_convolution_applies_the_same_weights_to_every_bottom(rng):
    fields = dict(num_output=3, kernel_size=3, pad=1)
    layer, bottoms, tops = build(rng, conv_text(**fields), [(2, 2, 5, 5), (2, 2, 5, 5)])
    layer.layer_forward(bottoms, tops)
    for bottom, top in zip(bottoms, tops):
        expected = conv_reference(bottom.data, *_params(layer), (1, 1), (1, 1), (1, 1), 1)
        assert_close(top.data, expected)


def test_convolution_axis_treats_leading_axes_as_batch(rng):
    layer, bottoms, tops = build(rng, conv_text(num_output=2, kernel_size=3, axis=2),
                                 [(2, 3, 4, 5, 5)])
    layer.layer_forward(bottoms, tops)
    flat = bottoms[0].data.reshape(6, 4, 5, 5)
    expected = conv_reference(flat, *_params(layer), (1, 1), (0, 0), (1, 1), 1)
    assert tops[0].shape == (2, 3, 2, 3, 3)
    assert_close(tops[0].data, expected.reshape(tops[0].shape))


def test_force_nd_im2col_gives_the_same_numbers(rng):
    fields = dict(num_output=3, kernel_size=3, pad=1, stride=2, dilation=2)
    x = _random(rng, (2, 3, 9, 8))
    outputs = []
    for force in (False, True):
        layer, bottoms, tops = setup_layer(conv_text(force_nd_im2col=force, **fields), [x])
        layer.blobs[0].data[...] = np.arange(layer.blobs[0].count).reshape(
            layer.blobs[0].shape) % 7 - 3
        layer.layer_forward(bottoms, tops)
        outputs.append(tops[0].data.copy())
    np.testing.assert_array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize("layer_type", ["Convolution", "Deconvolution"])
def test_chunking_the_batch_gives_the_same_numbers(rng, monkeypatch, layer_type):
    text = conv_text(layer_type, num_output=4, kernel_size=3, pad=1, stride=2, group=2)
    x = _random(rng, (5, 4, 7, 6))
    grad_seed = _random(rng, (1,))
    results = []
    for limit in (conv_module.COL_BUFFER_MAX_ELEMENTS, 1):
        monkeypatch.setattr(conv_module, "COL_BUFFER_MAX_ELEMENTS", limit)
        layer, bottoms, tops = setup_layer(text, [x])
        layer.blobs[0].data[...] = np.linspace(-1, 1, layer.blobs[0].count).reshape(
            layer.blobs[0].shape)
        layer.layer_forward(bottoms, tops)
        tops[0].diff[...] = tops[0].data * grad_seed
        layer.backward(tops, [True], bottoms)
        results.append([tops[0].data.copy(), bottoms[0].diff.copy()]
                       + [blob.diff.copy() for blob in layer.blobs])
    assert layer.chunk == 1
    for whole, chunked in zip(*results):
        assert_close(chunked, whole)


def test_fillers_initialise_weights_and_bias():
    text = ('type: "Convolution" convolution_param { num_output: 2 kernel_size: 2 '
            'weight_filler { type: "constant" value: 0.5 } '
            'bias_filler { type: "constant" value: -2 } }')
    layer, _, _ = setup_layer(text, [np.zeros((1, 3, 4, 4))])
    np.testing.assert_array_equal(layer.blobs[0].data, np.full((2, 3, 2, 2), 0.5))
    np.testing.assert_array_equal(layer.blobs[1].data, np.full(2, -2.0))


def test_reshape_follows_a_new_input_size(rng):
    layer, bottoms, tops = build(rng, conv_text(num_output=2, kernel_size=3, pad=1, stride=2),
                                 [(1, 2, 5, 5)])
    bottoms[0].reshape(3, 2, 8, 7)
    bottoms[0].data[...] = _random(rng, (3, 2, 8, 7))
    layer.layer_forward(bottoms, tops)
    expected = conv_reference(bottoms[0].data, *_params(layer), (2, 2), (1, 1), (1, 1), 1)
    assert_close(tops[0].data, expected)


# ---- backward -----------------------------------------------------------------------------

GRAD_CASES = [CONV_CASES[i] for i in (1, 2, 4, 5, 6, 7, 9, 10)]


@pytest.mark.parametrize("shape,fields,geometry", GRAD_CASES, ids=_ids(GRAD_CASES))
def test_convolution_gradient_matches_numeric(rng, shape, fields, geometry):
    layer, bottoms, tops = build(rng, conv_text(**fields), [shape])
    check_gradient(layer, bottoms, tops, max_elements=GRAD_MAX_ELEMENTS)


@pytest.mark.parametrize("shape,fields,geometry", DECONV_CASES, ids=_ids(DECONV_CASES))
def test_deconvolution_gradient_matches_numeric(rng, shape, fields, geometry):
    layer, bottoms, tops = build(rng, conv_text("Deconvolution", **fields), [shape])
    check_gradient(layer, bottoms, tops, max_elements=GRAD_MAX_ELEMENTS)


def test_two_bottom_gradient_sums_weight_gradients(rng):
    layer, bottoms, tops = build(rng, conv_text(num_output=3, kernel_size=3, group=1),
                                 [(2, 2, 5, 5), (2, 2, 5, 5)])
    check_gradient(layer, bottoms, tops, max_elements=GRAD_MAX_ELEMENTS)


@pytest.mark.parametrize("layer_type", ["Convolution", "Deconvolution"])
def test_param_gradients_accumulate_and_skipped_bottoms_stay_untouched(rng, layer_type):
    layer, bottoms, tops = build(rng, conv_text(layer_type, num_output=2, kernel_size=3, pad=1),
                                 [(2, 2, 4, 4)])
    original = bottoms[0].data.copy()
    layer.layer_forward(bottoms, tops)
    np.testing.assert_array_equal(bottoms[0].data, original)
    tops[0].diff[...] = _random(rng, tops[0].shape)
    for blob in layer.blobs:
        blob.diff[...] = 0
    bottoms[0].diff[...] = 7.0
    layer.backward(tops, [False], bottoms)
    once = [blob.diff.copy() for blob in layer.blobs]
    layer.backward(tops, [False], bottoms)
    np.testing.assert_array_equal(bottoms[0].diff, np.full(bottoms[0].shape, 7.0))
    for blob, first in zip(layer.blobs, once):
        assert_close(blob.diff, 2 * first)


def test_param_propagate_down_false_leaves_param_diffs(rng):
    layer, bottoms, tops = build(rng, conv_text(num_output=2, kernel_size=3), [(1, 2, 4, 4)])
    layer.param_propagate_down = [False, False]
    layer.layer_forward(bottoms, tops)
    tops[0].diff[...] = 1.0
    for blob in layer.blobs:
        blob.diff[...] = 0
    layer.backward(tops, [True], bottoms)
    for blob in layer.blobs:
        np.testing.assert_array_equal(blob.diff, np.zeros(blob.shape))
    assert np.any(bottoms[0].diff != 0)


# ---- Im2col -------------------------------------------------------------------------------

IM2COL_CASES = [
    ((2, 3, 6, 7), dict(kernel_size=3, stride=2, pad=1), ((3, 3), (1, 1), (2, 2), (1, 1))),
    ((1, 2, 5, 6), dict(kernel_h=2, kernel_w=3, dilation=2, pad_w=2),
     ((2, 3), (0, 2), (1, 1), (2, 2))),
    ((2, 2, 4, 5, 3), dict(kernel_size=2, stride=[1, 2, 1]),
     ((2, 2, 2), (0, 0, 0), (1, 2, 1), (1, 1, 1))),
]


@pytest.mark.parametrize("shape,fields,geometry", IM2COL_CASES, ids=_ids(IM2COL_CASES))
def test_im2col_layer_forward_and_gradient(rng, shape, fields, geometry):
    layer, bottoms, tops = build(rng, conv_text("Im2col", **fields), [shape])
    layer.layer_forward(bottoms, tops)
    np.testing.assert_array_equal(tops[0].data, im2col_reference(bottoms[0].data, *geometry))
    check_gradient(layer, bottoms, tops, max_elements=GRAD_MAX_ELEMENTS)


# ---- Caffe's checks -----------------------------------------------------------------------

BAD_PARAMS = [
    ("Convolution", dict(num_output=0, kernel_size=3), "num_output must be positive, got 0"),
    ("Convolution", dict(num_output=4, kernel_size=3, group=2), "group 2 does not divide the 3"),
    ("Convolution", dict(num_output=4, kernel_size=3, group=3),
     "group 3 does not divide num_output 4"),
    ("Convolution", dict(num_output=2, kernel_size=7), "larger than the padded input"),
    ("Convolution", dict(num_output=2, kernel_size=3, dilation=3), "kernel extent 7"),
    ("Convolution", dict(num_output=2, kernel_size=[3, 3, 3]), "kernel_size given 3 times"),
    ("Convolution", dict(num_output=2), "kernel_size given 0 times"),
    ("Convolution", dict(num_output=2, kernel_size=3, kernel_h=3), "not both"),
    ("Convolution", dict(num_output=2, kernel_size=3, stride=0), "stride must be positive"),
    ("Convolution", dict(num_output=2, kernel_h=3), r"kernel must be positive.*\(3, 0\)"),
    ("Convolution", dict(num_output=2, kernel_size=1, stride=[1, 1, 1]), "stride given 3"),
    ("Convolution", dict(num_output=2, kernel_size=1, axis=4), "axis 4 is out of range"),
    ("Deconvolution", dict(num_output=2, kernel_size=2, pad=3), "not positive"),
    ("Im2col", dict(kernel_size=2, pad_h=1, pad=1), "pad or pad_h/pad_w"),
]


@pytest.mark.parametrize("layer_type,fields,message", BAD_PARAMS,
                         ids=[m for _, _, m in BAD_PARAMS])
def test_impossible_parameters_raise_with_the_numbers(layer_type, fields, message):
    with pytest.raises(ProtonetError, match=message):
        setup_layer(conv_text(layer_type, **fields), [np.zeros((1, 3, 5, 5))])


def test_hw_fields_are_2d_only():
    with pytest.raises(ProtonetError, match="kernel_h & kernel_w can only be used for 2-D"):
        setup_layer(conv_text(num_output=2, kernel_h=1, kernel_w=1), [np.zeros((1, 3, 4, 4, 4))])


def test_loaded_weights_with_the_wrong_shape_are_refused():
    layer = make_layer(conv_text(num_output=2, kernel_size=3))
    layer.blobs = [Blob(2, 1, 3, 3), Blob(2)]
    with pytest.raises(ProtonetError, match=r"expected shape \(2, 3, 3, 3\), got \(2, 1, 3, 3\)"):
        layer.layer_setup(blobs_from(np.zeros((1, 3, 5, 5))), [Blob()])


def test_loaded_weights_without_the_bias_blob_are_refused():
    layer = make_layer(conv_text(num_output=2, kernel_size=3))
    layer.blobs = [Blob(2, 3, 3, 3)]
    with pytest.raises(ProtonetError, match="expected 2 param blobs, got 1"):
        layer.layer_setup(blobs_from(np.zeros((1, 3, 5, 5))), [Blob()])


def test_bottoms_of_different_shapes_are_refused():
    with pytest.raises(ProtonetError, match="all bottoms must have one shape"):
        setup_layer(conv_text(num_output=2, kernel_size=3),
                    [np.zeros((1, 3, 5, 5)), np.zeros((1, 3, 6, 5))], n_tops=2)


def test_a_changed_channel_count_is_refused(rng):
    layer, bottoms, tops = build(rng, conv_text(num_output=2, kernel_size=3), [(1, 3, 5, 5)])
    bottoms[0].reshape(1, 4, 5, 5)
    with pytest.raises(ProtonetError, match="bottom has 4 channels, the weights expect 3"):
        layer.layer_forward(bottoms, tops)


@pytest.mark.parametrize("geometry", [
    "kernel_size: 3 pad: 1 stride: 1", "kernel_size: 5 pad: 2 stride: 2",
    "kernel_h: 3 kernel_w: 2 pad_h: 2 pad_w: 0 stride_h: 3 stride_w: 1",
    "kernel_size: 3 dilation: 2 pad: 3 stride: 1 group: 2"])
def test_forward_in_bands_of_output_rows_equals_the_whole_image(geometry, monkeypatch):
    # A col buffer smaller than one image's columns makes the forward lower and multiply
    # bands of a few output rows; the numbers must be the whole image's up to the last-bit
    # rounding OpenBLAS gives products of other shapes.
    from google.protobuf import text_format

    from protonet.blob import Blob
    from protonet.layers import get_layer_class
    from protonet.proto import caffe_pb2

    x = np.random.default_rng(2).standard_normal((2, 16, 67, 61), dtype=np.float32)
    text = (f'name: "c" type: "Convolution" convolution_param {{ num_output: 32 {geometry} '
            f'weight_filler {{ type: "gaussian" std: 0.3 }} }}')
    tops = []
    monkeypatch.setattr("protonet.layers.vision.conv.BATCHED_MAX_COL_DIM", 0)  # per image
    monkeypatch.setattr("protonet.layers.vision.conv.BAND_MIN_COLUMNS", 64)
    for cap in (1 << 24, 60000):
        monkeypatch.setattr("protonet.layers.vision.conv.COL_BUFFER_MAX_ELEMENTS", cap)
        np.random.seed(0)
        layer = get_layer_class("Convolution")(text_format.Parse(text, caffe_pb2.LayerParameter()))
        bottom, top = Blob(x.shape), Blob((1,))
        bottom.data[...] = x
        layer.layer_setup([bottom], [top])
        layer.blobs[0].data[...] = np.random.default_rng(1).standard_normal(layer.blobs[0].shape)
        layer.layer_forward([bottom], [top])
        assert (layer.band_rows is not None) == (cap == 60000)
        tops.append(top.data.copy())
    np.testing.assert_allclose(tops[1], tops[0], rtol=1e-5, atol=1e-5)
    assert np.abs(tops[0]).sum() > 0


# ---- the row layout (few output channels over a deep window) --------------------------------

ROWS_CASES = [CONV_CASES[i] for i in (0, 1, 4, 5, 6, 9)]       # 2-D, one group, not 1x1


@pytest.fixture
def rows_everywhere(monkeypatch):
    """Every eligible Convolution takes the row layout, whatever its window depth."""
    monkeypatch.setattr(conv_module, "ROWS_MIN_KERNEL_DIM", 0)


@pytest.mark.parametrize("shape,fields,geometry", ROWS_CASES, ids=_ids(ROWS_CASES))
def test_row_layout_forward_matches_direct_reference(rng, rows_everywhere, shape, fields,
                                                     geometry):
    layer, bottoms, tops = build(rng, conv_text(**fields), [shape])
    layer.layer_forward(bottoms, tops)
    assert layer.rows
    assert_close(tops[0].data, conv_reference(bottoms[0].data, *_params(layer), *geometry))


@pytest.mark.parametrize("shape,fields,geometry", ROWS_CASES, ids=_ids(ROWS_CASES))
def test_row_layout_gradient_matches_numeric(rng, rows_everywhere, shape, fields, geometry):
    layer, bottoms, tops = build(rng, conv_text(**fields), [shape])
    assert layer.rows
    check_gradient(layer, bottoms, tops, max_elements=GRAD_MAX_ELEMENTS)


def test_row_layout_equals_the_column_layout_in_chunks(rng, monkeypatch):
    # CIFAR-10 quick conv3's geometry (5x5x32 window, 64 outputs) at a small batch, chunked.
    text = conv_text(num_output=64, kernel_size=5, pad=2)
    x = _random(rng, (6, 32, 8, 8))
    top_diff = _random(rng, (6, 64, 8, 8))
    results = []
    for min_depth in (conv_module.ROWS_MIN_KERNEL_DIM, 1 << 30):
        monkeypatch.setattr(conv_module, "ROWS_MIN_KERNEL_DIM", min_depth)
        monkeypatch.setattr(conv_module, "COL_BUFFER_MAX_ELEMENTS", 120000)
        layer, bottoms, tops = setup_layer(text, [x])
        layer.blobs[0].data[...] = np.linspace(-1, 1, layer.blobs[0].count).reshape(
            layer.blobs[0].shape)
        layer.blobs[0].diff[...] = 0.25              # the weight gradient adds onto this
        layer.layer_forward(bottoms, tops)
        tops[0].diff[...] = top_diff
        layer.backward(tops, [True], bottoms)
        results.append((layer.rows, layer.chunk, tops[0].data.copy(), bottoms[0].diff.copy(),
                        layer.blobs[0].diff.copy(), layer.blobs[1].diff.copy()))
    (rows, chunk, *row_results), (columns, _, *column_results) = results
    assert rows and not columns and 1 < chunk < 6
    for ours, ref in zip(row_results, column_results):
        assert_close(ours, ref)


@pytest.mark.parametrize("text", [
    conv_text(num_output=32, kernel_size=5, pad=2, group=2),          # grouped
    conv_text(num_output=96, kernel_size=5, pad=2),                   # many outputs
    conv_text(num_output=32, kernel_size=2, stride=2),                # shallow window
    conv_text("Deconvolution", num_output=32, kernel_size=5, pad=2),
])
def test_row_layout_is_only_for_thin_deep_convolutions(text):
    layer, _, _ = setup_layer(text, [np.zeros((2, 32, 8, 8))])
    assert not layer.rows
