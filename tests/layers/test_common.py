"""The common layers (protonet.layers.common) against NumPy references, gradients and errors.

Conformance with BVLC Caffe's own outputs is checked by tests/conformance; these tests cover
the options and error paths those cases do not.
"""

import numba
import numpy as np
import pytest

from protonet import rng as global_rng
from protonet.blob import Blob
from protonet.errors import ProtonetError
from protonet.kernels import reduction as reduction_kernels
from tests.helpers.gradcheck import check_gradient
from tests.helpers.layers import TRAIN, blobs_from, make_layer, setup_layer
from tests.helpers.tolerances import KERNEL_ATOL, KERNEL_RTOL


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


@pytest.fixture(autouse=True)
def seeded():
    global_rng.set_random_seed(1701)


def forward(layer, bottoms, tops):
    """Run forward and return copies of the top data."""
    layer.layer_forward(bottoms, tops)
    return [top.data.copy() for top in tops]


def backward(layer, bottoms, tops, top_diffs, propagate=None):
    """Set top diffs, zero param diffs, run backward; return copies of the bottom diffs."""
    for top, diff in zip(tops, top_diffs):
        top.diff[...] = diff
    for blob in layer.blobs:
        blob.diff[...] = 0
    propagate = [True] * len(bottoms) if propagate is None else propagate
    layer.backward(tops, propagate, bottoms)
    return [b.diff.copy() if down else None for b, down in zip(bottoms, propagate)]


def assert_close(ours, ref):
    np.testing.assert_allclose(ours, ref, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


def assert_forward_keeps_bottoms(layer, bottoms, tops):
    before = [b.data.copy() for b in bottoms]
    layer.layer_forward(bottoms, tops)
    for b, saved in zip(bottoms, before):
        np.testing.assert_array_equal(b.data, saved)


def assert_no_propagate_keeps_diffs(layer, bottoms, tops):
    """propagate_down all False leaves every bottom diff as it was."""
    layer.layer_forward(bottoms, tops)
    for top in tops:
        top.diff[...] = 1
    for b in bottoms:
        b.diff[...] = 7
    layer.backward(tops, [False] * len(bottoms), bottoms)
    for b in bottoms:
        assert np.all(b.diff == 7)


# ---- InnerProduct ----------------------------------------------------------------------------

IP_FILLERS = 'weight_filler { type: "gaussian" std: 1 } bias_filler { type: "uniform" min: -1 }'


@pytest.mark.parametrize("shape, axis, transpose, bias", [
    ((3, 4), 1, False, True),
    ((2, 3, 2, 2), 1, True, True),
    ((2, 3, 5, 2), 2, False, False),
    ((2, 3, 5, 2), -1, True, False),
])
def test_inner_product_matches_matmul_and_gradients(rng, shape, axis, transpose, bias):
    x = rng.standard_normal(shape)
    text = (f'type: "InnerProduct" inner_product_param {{ num_output: 3 axis: {axis} '
            f'transpose: {str(transpose).lower()} bias_term: {str(bias).lower()} {IP_FILLERS} }}')
    layer, bottoms, tops = setup_layer(text, [x])
    ax = axis % len(shape)
    w = layer.blobs[0].data.astype(np.float64)
    x2 = x.reshape(int(np.prod(shape[:ax])), -1)
    ref = x2 @ (w if transpose else w.T)
    if bias:
        ref = ref + layer.blobs[1].data
    assert len(layer.blobs) == (2 if bias else 1)
    assert layer.blobs[0].shape == ((x2.shape[1], 3) if transpose else (3, x2.shape[1]))
    (y,) = forward(layer, bottoms, tops)
    assert y.shape == shape[:ax] + (3,)
    assert_close(y.reshape(ref.shape), ref)
    check_gradient(layer, bottoms, tops)


def test_inner_product_param_diffs_accumulate(rng):
    layer, bottoms, tops = setup_layer(
        f'type: "InnerProduct" inner_product_param {{ num_output: 2 {IP_FILLERS} }}',
        [rng.standard_normal((3, 4))])
    layer.layer_forward(bottoms, tops)
    tops[0].diff[...] = rng.standard_normal(tops[0].shape)
    for blob in layer.blobs:
        blob.diff[...] = 0
    layer.backward(tops, [True], bottoms)
    once = [blob.diff.copy() for blob in layer.blobs]
    layer.backward(tops, [True], bottoms)
    for blob, first in zip(layer.blobs, once):
        assert_close(blob.diff, 2 * first)
    assert_no_propagate_keeps_diffs(layer, bottoms, tops)
    assert_forward_keeps_bottoms(layer, bottoms, tops)


def test_inner_product_rejects_changed_input_size(rng):
    layer, bottoms, tops = setup_layer('type: "InnerProduct" inner_product_param { num_output: 2 }',
                                       [rng.standard_normal((3, 4))])
    bottoms[0].reshape(3, 5)
    with pytest.raises(ProtonetError, match="4 inputs per item at setup, now 5"):
        layer.layer_forward(bottoms, tops)


def test_inner_product_rejects_missing_num_output_and_bad_blobs(rng):
    with pytest.raises(ProtonetError, match="num_output must be positive"):
        setup_layer('type: "InnerProduct"', [rng.standard_normal((3, 4))])
    layer = make_layer('type: "InnerProduct" inner_product_param { num_output: 2 }')
    layer.blobs = [Blob(2, 5), Blob(2)]
    with pytest.raises(ProtonetError, match=r"expected shape \(2, 4\), got \(2, 5\)"):
        layer.layer_setup(blobs_from(rng.standard_normal((3, 4))), [Blob()])


def test_inner_product_rejects_out_of_range_axis(rng):
    with pytest.raises(ProtonetError, match="inner_product_param.axis 2 is out of range"):
        setup_layer('type: "InnerProduct" inner_product_param { num_output: 2 axis: 2 }',
                    [rng.standard_normal((3, 4))])


# ---- Embed -------------------------------------------------------------------------------------

EMBED = ('type: "Embed" embed_param { num_output: 3 input_dim: 5 '
         'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }')


def test_embed_looks_up_rows_and_accumulates_repeated_indices(rng):
    idx = np.array([[0, 4, 2], [2, 2, 1]], dtype=np.float32)
    layer, bottoms, tops = setup_layer(EMBED, [idx])
    w, b = layer.blobs[0].data.copy(), layer.blobs[1].data.copy()
    (y,) = forward(layer, bottoms, tops)
    assert y.shape == (2, 3, 3)
    assert_close(y, w[idx.astype(int)] + b)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    backward(layer, bottoms, tops, [dy], propagate=[False])
    ref_dw = np.zeros_like(w)
    np.add.at(ref_dw, idx.astype(int).ravel(), dy.reshape(-1, 3))
    assert_close(layer.blobs[0].diff, ref_dw)
    assert_close(layer.blobs[1].diff, dy.reshape(-1, 3).sum(axis=0))
    check_gradient(layer, bottoms, tops, check_bottoms=[])
    assert not layer.allow_force_backward(0)


@pytest.mark.parametrize("value, message", [(5.0, "out of range"), (-1.0, "out of range"),
                                            (np.nan, "out of range"), (1.5, "not a whole number")])
def test_embed_rejects_bad_indices(value, message):
    layer, bottoms, tops = setup_layer(EMBED, [np.array([0, 1, value], dtype=np.float32)])
    with pytest.raises(ProtonetError, match=f"index .* at position 2 is {message}"):
        layer.layer_forward(bottoms, tops)


def test_embed_refuses_gradient_into_indices():
    layer, bottoms, tops = setup_layer(EMBED, [np.array([0, 1], dtype=np.float32)])
    layer.layer_forward(bottoms, tops)
    with pytest.raises(ProtonetError, match="cannot backpropagate to the index bottom"):
        layer.backward(tops, [True], bottoms)


# ---- Concat / Slice ------------------------------------------------------------------------------

@pytest.mark.parametrize("shapes, param, axis", [
    ([(2, 3, 2), (1, 3, 2)], "axis: 0", 0),
    ([(2, 1, 3), (2, 4, 3), (2, 2, 3)], "", 1),
    ([(2, 3, 2), (2, 3, 1)], "axis: -1", 2),
    ([(2, 3, 2), (2, 3, 4)], "concat_dim: 2", 2),
])
def test_concat_joins_along_axis_and_splits_gradient(rng, shapes, param, axis):
    xs = [rng.standard_normal(s) for s in shapes]
    layer, bottoms, tops = setup_layer(f'type: "Concat" concat_param {{ {param} }}', xs)
    (y,) = forward(layer, bottoms, tops)
    np.testing.assert_array_equal(y, np.concatenate(xs, axis=axis).astype(np.float32))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dxs = backward(layer, bottoms, tops, [dy])
    stops = np.cumsum([s[axis] for s in shapes])[:-1]
    for dx, ref in zip(dxs, np.split(dy, stops, axis=axis)):
        np.testing.assert_array_equal(dx, ref)
    check_gradient(layer, bottoms, tops)
    assert_no_propagate_keeps_diffs(layer, bottoms, tops)


def test_concat_rejects_mismatched_shapes_and_double_axis(rng):
    with pytest.raises(ProtonetError, match=r"bottom 1 has shape \(2, 3, 3\) but bottom 0 has"):
        setup_layer('type: "Concat"', [np.zeros((2, 3, 2)), np.zeros((2, 3, 3))])
    with pytest.raises(ProtonetError, match="either concat_param.axis or"):
        setup_layer('type: "Concat" concat_param { axis: 1 concat_dim: 1 }', [np.zeros((2, 3))])
    with pytest.raises(ProtonetError, match="concat_dim 2 is out of range"):
        setup_layer('type: "Concat" concat_param { concat_dim: 2 }', [np.zeros((2, 3))])


@pytest.mark.parametrize("shape, param, n_tops, sections, axis", [
    ((2, 3, 4, 3), "axis: 2", 2, 2, 2),
    ((2, 5, 2), "slice_point: 1 slice_point: 3", 3, [1, 3], 1),
    ((6, 2), "slice_dim: 0 slice_point: 4", 2, [4], 0),
    ((2, 2, 6), "axis: -1", 3, 3, 2),
])
def test_slice_splits_along_axis_and_joins_gradient(rng, shape, param, n_tops, sections, axis):
    x = rng.standard_normal(shape)
    layer, bottoms, tops = setup_layer(f'type: "Slice" slice_param {{ {param} }}', [x], n_tops)
    ys = forward(layer, bottoms, tops)
    for y, ref in zip(ys, np.split(x.astype(np.float32), sections, axis=axis)):
        np.testing.assert_array_equal(y, ref)
    dys = [rng.standard_normal(y.shape).astype(np.float32) for y in ys]
    (dx,) = backward(layer, bottoms, tops, dys)
    np.testing.assert_array_equal(dx, np.concatenate(dys, axis=axis))
    check_gradient(layer, bottoms, tops)
    assert_no_propagate_keeps_diffs(layer, bottoms, tops)


@pytest.mark.parametrize("param, n_tops, message", [
    ("axis: 1", 2, "2 tops cannot evenly divide the 5 entries"),
    ("slice_point: 2", 3, "slice_point given 1 times for 3 tops"),
    ("slice_point: 3 slice_point: 2", 3, "strictly increasing"),
    ("slice_point: 6", 2, "at most 5"),
    ("axis: 1 slice_dim: 1", 2, "either slice_param.axis or"),
])
def test_slice_rejects_bad_slice_points(param, n_tops, message):
    with pytest.raises(ProtonetError, match=message):
        setup_layer(f'type: "Slice" slice_param {{ {param} }}', [np.zeros((2, 5))], n_tops)


# ---- Split / Flatten / Reshape -------------------------------------------------------------------

def test_split_copies_and_sums_top_diffs(rng):
    x = rng.standard_normal((2, 3, 4))
    layer, bottoms, tops = setup_layer('type: "Split"', [x], 3)
    for y in forward(layer, bottoms, tops):
        np.testing.assert_array_equal(y, x.astype(np.float32))
    dys = [rng.standard_normal(x.shape).astype(np.float32) for _ in range(3)]
    (dx,) = backward(layer, bottoms, tops, dys)
    assert_close(dx, dys[0] + dys[1] + dys[2])
    check_gradient(layer, bottoms, tops)
    assert_no_propagate_keeps_diffs(layer, bottoms, tops)


@pytest.mark.parametrize("text", ['type: "Split"', 'type: "Flatten"',
                                  'type: "Reshape" reshape_param { shape { dim: -1 } }'])
def test_split_flatten_reshape_refuse_in_place(text):
    layer = make_layer(text)
    (blob,) = blobs_from(np.zeros((2, 3)))
    assert not layer.allow_in_place
    with pytest.raises(ProtonetError, match="does not allow in-place computation"):
        layer.layer_setup([blob], [blob])


@pytest.mark.parametrize("param, expected", [
    ("", (2, 60)),
    ("axis: 1 end_axis: 2", (2, 12, 5)),
    ("axis: 0 end_axis: -2", (24, 5)),
    ("axis: -2", (2, 3, 20)),
    ("axis: 2 end_axis: 1", (2, 3, 1, 4, 5)),
])
def test_flatten_merges_axes(rng, param, expected):
    x = rng.standard_normal((2, 3, 4, 5))
    layer, bottoms, tops = setup_layer(f'type: "Flatten" flatten_param {{ {param} }}', [x])
    (y,) = forward(layer, bottoms, tops)
    np.testing.assert_array_equal(y, x.reshape(expected).astype(np.float32))
    dy = rng.standard_normal(expected).astype(np.float32)
    (dx,) = backward(layer, bottoms, tops, [dy])
    np.testing.assert_array_equal(dx, dy.reshape(x.shape))
    assert_no_propagate_keeps_diffs(layer, bottoms, tops)


def test_flatten_rejects_end_axis_before_axis():
    with pytest.raises(ProtonetError, match=r"end_axis \(0\) comes before axis \(2\)"):
        setup_layer('type: "Flatten" flatten_param { axis: 2 end_axis: 0 }', [np.zeros((2, 3, 4))])


# Examples from caffe.proto's ReshapeParameter comments, on a (2, 8) bottom, plus the cases.
@pytest.mark.parametrize("shape, param, expected", [
    ((2, 8), "shape { dim: 0 dim: -1 dim: 2 }", (2, 4, 2)),
    ((2, 8), "shape { dim: 2 dim: 4 } axis: 1 num_axes: 1", (2, 2, 4)),
    ((2, 8), "shape { dim: 1 } axis: 0 num_axes: 0", (1, 2, 8)),
    ((2, 8), "shape { dim: 1 } axis: -1 num_axes: 0", (2, 8, 1)),
    ((2, 8), "shape { dim: 1 } axis: 1 num_axes: 0", (2, 1, 8)),
    ((3, 4, 5), "shape { dim: 2 dim: 2 } axis: 1 num_axes: 1", (3, 2, 2, 5)),
    ((3, 4, 5), "shape { dim: -1 }", (60,)),
    ((3, 4, 5), "shape { dim: 0 dim: 0 dim: 0 }", (3, 4, 5)),
    ((3, 4, 5), "shape { dim: -1 dim: 10 } axis: -3", (3, 2, 10)),
])
def test_reshape_copies_and_infers_dims(rng, shape, param, expected):
    x = rng.standard_normal(shape)
    layer, bottoms, tops = setup_layer(f'type: "Reshape" reshape_param {{ {param} }}', [x])
    (y,) = forward(layer, bottoms, tops)
    np.testing.assert_array_equal(y, x.reshape(expected).astype(np.float32))
    dy = rng.standard_normal(expected).astype(np.float32)
    (dx,) = backward(layer, bottoms, tops, [dy])
    np.testing.assert_array_equal(dx, dy.reshape(shape))
    assert_no_propagate_keeps_diffs(layer, bottoms, tops)


@pytest.mark.parametrize("param, message", [
    ("shape { dim: -1 dim: -1 }", "has 2 dims of -1"),
    ("shape { dim: -1 dim: 7 }", r"not divisible by the product of the other dimensions \(7\)"),
    ("shape { dim: 5 dim: 5 }", r"output shape \(5, 5\) has 25 elements"),
    ("shape { dim: 0 dim: 0 dim: 0 dim: 0 }", "has a 0 at position 3"),
    ("shape { dim: 2 } axis: 4", "reshape_param.axis 4 is out of range"),
    ("shape { dim: 2 } axis: 1 num_axes: 3", "beyond the 3 axes"),
    ("shape { dim: -2 }", "has a dim below -1"),
])
def test_reshape_rejects_impossible_shapes(param, message):
    with pytest.raises(ProtonetError, match=message):
        setup_layer(f'type: "Reshape" reshape_param {{ {param} }}', [np.zeros((3, 4, 5))])


# ---- Eltwise -------------------------------------------------------------------------------------

def _distinct_inputs(rng, n, shape):
    """n arrays whose elements all differ by far more than the gradient-check step."""
    values = rng.permutation(n * int(np.prod(shape))).astype(np.float64) * 0.1 - 1.0
    return list(values.reshape((n,) + shape))


def test_eltwise_sum_applies_coeffs(rng):
    xs = [rng.standard_normal((2, 3, 4)) for _ in range(3)]
    layer, bottoms, tops = setup_layer(
        'type: "Eltwise" eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2 }', xs)
    (y,) = forward(layer, bottoms, tops)
    assert_close(y, xs[0] - 0.5 * xs[1] + 2 * xs[2])
    dy = rng.standard_normal(y.shape).astype(np.float32)
    for dx, c in zip(backward(layer, bottoms, tops, [dy]), (1, -0.5, 2)):
        assert_close(dx, c * dy)
    check_gradient(layer, bottoms, tops)
    assert_no_propagate_keeps_diffs(layer, bottoms, tops)
    assert_forward_keeps_bottoms(layer, bottoms, tops)


@pytest.mark.parametrize("stable", ["true", "false"])
def test_eltwise_prod_multiplies_and_differentiates(rng, stable):
    xs = [rng.uniform(0.5, 1.5, (2, 3)) * rng.choice([-1, 1], (2, 3)) for _ in range(3)]
    layer, bottoms, tops = setup_layer(
        f'type: "Eltwise" eltwise_param {{ operation: PROD stable_prod_grad: {stable} }}', xs)
    (y,) = forward(layer, bottoms, tops)
    assert_close(y, xs[0] * xs[1] * xs[2])
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dxs = backward(layer, bottoms, tops, [dy])
    for i, dx in enumerate(dxs):
        others = np.prod([x for j, x in enumerate(xs) if j != i], axis=0)
        np.testing.assert_allclose(dx, others * dy, rtol=1e-5, atol=1e-6)
    check_gradient(layer, bottoms, tops)


def test_eltwise_max_routes_gradient_to_winner_with_caffe_ties(rng):
    a = np.array([1.0, 2.0, 3.0, 5.0], dtype=np.float32)
    b = np.array([1.0, 4.0, 3.0, 0.0], dtype=np.float32)
    c = np.array([1.0, 4.0, 0.0, 5.0], dtype=np.float32)
    layer, bottoms, tops = setup_layer('type: "Eltwise" eltwise_param { operation: MAX }',
                                       [a, b, c])
    (y,) = forward(layer, bottoms, tops)
    np.testing.assert_array_equal(y, [1, 4, 3, 5])
    dy = np.array([10, 20, 30, 40], dtype=np.float32)
    da, db, dc = backward(layer, bottoms, tops, [dy])
    # Ties: a vs b goes to b; a later bottom must beat the running max strictly.
    np.testing.assert_array_equal(da, [0, 0, 0, 40])
    np.testing.assert_array_equal(db, [10, 20, 30, 0])
    np.testing.assert_array_equal(dc, [0, 0, 0, 0])


def test_eltwise_max_gradient(rng):
    xs = _distinct_inputs(rng, 3, (2, 3, 2))
    layer, bottoms, tops = setup_layer('type: "Eltwise" eltwise_param { operation: MAX }', xs)
    (y,) = forward(layer, bottoms, tops)
    assert_close(y, np.max(xs, axis=0))
    check_gradient(layer, bottoms, tops)
    assert_no_propagate_keeps_diffs(layer, bottoms, tops)


@pytest.mark.parametrize("param, shapes, message", [
    ("operation: SUM coeff: 1", [(2,), (2,)], "coeff given 1 times for 2 bottoms"),
    ("operation: PROD coeff: 1 coeff: 2", [(2,), (2,)], "only applies to operation SUM"),
    ("operation: SUM", [(2, 3), (3, 2)], r"bottom 1 has shape \(3, 2\) but bottom 0 has"),
])
def test_eltwise_rejects_bad_params(param, shapes, message):
    with pytest.raises(ProtonetError, match=message):
        setup_layer(f'type: "Eltwise" eltwise_param {{ {param} }}', [np.zeros(s) for s in shapes])


# ---- Tile ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, axis, tiles", [((2, 2, 3), 1, 3), ((2, 3), 0, 2), ((2, 3), -1, 4)])
def test_tile_repeats_blocks_and_sums_gradient(rng, shape, axis, tiles):
    x = rng.standard_normal(shape)
    layer, bottoms, tops = setup_layer(
        f'type: "Tile" tile_param {{ axis: {axis} tiles: {tiles} }}', [x])
    (y,) = forward(layer, bottoms, tops)
    reps = [1] * len(shape)
    reps[axis] = tiles
    np.testing.assert_array_equal(y, np.tile(x, reps).astype(np.float32))
    check_gradient(layer, bottoms, tops)
    assert_no_propagate_keeps_diffs(layer, bottoms, tops)


@pytest.mark.parametrize("param, message", [("axis: 1", "tiles is required"),
                                            ("tiles: 0", "tiles must be positive")])
def test_tile_requires_positive_tiles(param, message):
    with pytest.raises(ProtonetError, match=message):
        setup_layer(f'type: "Tile" tile_param {{ {param} }}', [np.zeros((2, 3))])


# ---- Reduction -----------------------------------------------------------------------------------

REDUCTIONS = {
    "SUM": lambda x: x.sum(axis=-1),
    "ASUM": lambda x: np.abs(x).sum(axis=-1),
    "SUMSQ": lambda x: (x * x).sum(axis=-1),
    "MEAN": lambda x: x.mean(axis=-1),
}


@pytest.mark.parametrize("op", sorted(REDUCTIONS))
@pytest.mark.parametrize("shape, axis", [((3, 4), 0), ((3, 4, 2), 1), ((2, 3, 4), -1)])
def test_reduction_matches_numpy_and_gradients(rng, op, shape, axis):
    x = rng.uniform(0.1, 1.0, shape) * rng.choice([-1, 1], shape)  # away from ASUM's kink
    layer, bottoms, tops = setup_layer(
        f'type: "Reduction" reduction_param {{ operation: {op} axis: {axis} coeff: 1.5 }}', [x])
    ax = axis % len(shape)
    (y,) = forward(layer, bottoms, tops)
    assert y.shape == shape[:ax]
    assert_close(y, 1.5 * REDUCTIONS[op](x.reshape(shape[:ax] + (-1,))))
    check_gradient(layer, bottoms, tops)
    assert_no_propagate_keeps_diffs(layer, bottoms, tops)


def test_reduction_asum_gradient_is_zero_at_zero():
    layer, bottoms, tops = setup_layer('type: "Reduction" reduction_param { operation: ASUM }',
                                       [np.array([-2.0, 0.0, 3.0])])
    (y,) = forward(layer, bottoms, tops)
    assert y == 5
    (dx,) = backward(layer, bottoms, tops, [np.float32(2.0)])
    np.testing.assert_array_equal(dx, [-2, 0, 2])


def test_reduction_kernels_do_not_depend_on_thread_count(rng):
    x = rng.standard_normal((64, 37)).astype(np.float32)
    dy = rng.standard_normal(64).astype(np.float32)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        try:
            out = np.empty(64, np.float32)
            dx = np.empty_like(x)
            reduction_kernels.reduction_forward(x, reduction_kernels.SUMSQ, np.float32(0.5), out)
            reduction_kernels.reduction_backward(x, dy, reduction_kernels.ASUM, np.float32(0.5),
                                                 dx)
            results.append((out, dx))
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


# ---- ArgMax --------------------------------------------------------------------------------------

def _argmax_reference(rows, top_k):
    """(indices, values) of each row's top_k, as Caffe's partial_sort with std::greater orders."""
    picks = [sorted(((v, j) for j, v in enumerate(row)), reverse=True)[:top_k] for row in rows]
    return (np.array([[j for _, j in p] for p in picks], dtype=np.float32),
            np.array([[v for v, _ in p] for p in picks], dtype=np.float32))


@pytest.mark.parametrize("top_k", [1, 3])
@pytest.mark.parametrize("out_max_val", [False, True])
def test_argmax_without_axis_breaks_ties_towards_larger_index(rng, top_k, out_max_val):
    x = rng.integers(0, 3, (4, 2, 3)).astype(np.float32)  # many ties
    layer, bottoms, tops = setup_layer(
        f'type: "ArgMax" argmax_param {{ top_k: {top_k} out_max_val: {str(out_max_val).lower()} }}',
        [x])
    (y,) = forward(layer, bottoms, tops)
    ind, val = _argmax_reference(x.reshape(4, -1), top_k)
    expected = np.stack([ind, val], axis=1) if out_max_val else ind[:, None, :]
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("out_max_val", [False, True])
def test_argmax_along_axis(rng, axis, out_max_val):
    x = rng.integers(0, 4, (3, 5, 4)).astype(np.float32)
    layer, bottoms, tops = setup_layer(
        f'type: "ArgMax" argmax_param {{ top_k: 2 axis: {axis} '
        f'out_max_val: {str(out_max_val).lower()} }}', [x])
    (y,) = forward(layer, bottoms, tops)
    moved = np.moveaxis(x, axis, -1)
    ind, val = _argmax_reference(moved.reshape(-1, moved.shape[-1]), 2)
    expected = (val if out_max_val else ind).reshape(moved.shape[:-1] + (2,))
    np.testing.assert_array_equal(y, np.moveaxis(expected, -1, axis))


def test_argmax_pads_top_to_three_axes_and_checks_top_k(rng):
    layer, bottoms, tops = setup_layer('type: "ArgMax"', [rng.standard_normal((2, 3, 4, 5))])
    assert tops[0].shape == (2, 1, 1, 1)
    with pytest.raises(ProtonetError, match="top_k 7 is larger than the 6 values"):
        setup_layer('type: "ArgMax" argmax_param { top_k: 7 }', [np.zeros((2, 6))])
    with pytest.raises(ProtonetError, match="top_k 4 is larger than the 3 values"):
        setup_layer('type: "ArgMax" argmax_param { top_k: 4 axis: 1 }', [np.zeros((2, 3))])


# ---- Silence / Parameter -------------------------------------------------------------------------

def test_silence_has_no_tops_and_zeroes_diffs(rng):
    layer, bottoms, tops = setup_layer('type: "Silence"', [np.ones((2, 3)), np.ones(4)], 0)
    layer.layer_forward(bottoms, tops)
    for b in bottoms:
        b.diff[...] = 5
    layer.backward(tops, [True, False], bottoms)
    assert np.all(bottoms[0].diff == 0)
    assert np.all(bottoms[1].diff == 5)


def test_parameter_exposes_its_blob_and_accumulates_diff(rng):
    layer, bottoms, tops = setup_layer(
        'type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }', [], 1)
    assert layer.blobs[0].shape == (2, 3)
    np.testing.assert_array_equal(layer.blobs[0].data, 0)
    p = rng.standard_normal((2, 3)).astype(np.float32)
    layer.blobs[0].data[...] = p
    (y,) = forward(layer, bottoms, tops)
    np.testing.assert_array_equal(y, p)
    dy = rng.standard_normal((2, 3)).astype(np.float32)
    backward(layer, bottoms, tops, [dy])
    layer.backward(tops, [], bottoms)
    assert_close(layer.blobs[0].diff, 2 * dy)
    check_gradient(layer, bottoms, tops)


def test_parameter_checks_loaded_blob_shape():
    layer = make_layer('type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }')
    layer.blobs = [Blob(3, 2)]
    with pytest.raises(ProtonetError, match=r"expected shape \(2, 3\), got \(3, 2\)"):
        layer.layer_setup([], [Blob()])


# ---- Filter / BatchReindex -----------------------------------------------------------------------

def test_filter_keeps_selected_items(rng):
    x = rng.standard_normal((5, 3))
    z = rng.standard_normal((5, 2, 2))
    sel = np.array([[0], [1], [0], [2], [-1]], dtype=np.float32)
    layer, bottoms, tops = setup_layer('type: "Filter"', [x, z, sel], 2, TRAIN)
    # Caffe quirk: the reshape at setup sizes the tops for the whole batch.
    assert tops[0].shape == (5, 3) and tops[1].shape == (5, 2, 2)
    ys = forward(layer, bottoms, tops)
    keep = [1, 3, 4]
    assert_close(ys[0], x[keep])
    assert_close(ys[1], z[keep])
    dys = [rng.standard_normal(y.shape).astype(np.float32) for y in ys]
    dx, dz, _ = backward(layer, bottoms, tops, dys, propagate=[True, True, False])
    ref = np.zeros((5, 3), np.float32)
    ref[keep] = dys[0]
    np.testing.assert_array_equal(dx, ref)
    np.testing.assert_array_equal(dz[[0, 2]], 0)
    check_gradient(layer, bottoms, tops, check_bottoms=[0, 1])
    assert not layer.allow_force_backward(2)
    with pytest.raises(ProtonetError, match="cannot backpropagate to the selector"):
        layer.backward(tops, [False, False, True], bottoms)


def test_filter_with_nothing_selected_gives_empty_tops(rng):
    layer, bottoms, tops = setup_layer('type: "Filter"', [np.ones((3, 2)), np.zeros(3)], 1)
    (y,) = forward(layer, bottoms, tops)
    assert y.shape == (0, 2)
    (dx, _) = backward(layer, bottoms, tops, [y], propagate=[True, False])
    np.testing.assert_array_equal(dx, 0)


@pytest.mark.parametrize("shapes, n_tops, message", [
    ([(3, 2), (3,)], 2, "one top per filtered bottom"),
    ([(3, 2), (3, 2)], 1, r"selector \(last bottom\) must have shape"),
    ([(4, 2), (3,)], 1, "must have as many items as the selector"),
])
def test_filter_rejects_bad_shapes(shapes, n_tops, message):
    with pytest.raises(ProtonetError, match=message):
        setup_layer('type: "Filter"', [np.ones(s) for s in shapes], n_tops)


def test_batch_reindex_gathers_and_scatters_gradient(rng):
    x = rng.standard_normal((4, 3, 2))
    perm = np.array([2, 0, 2, 3, 1.7], dtype=np.float32)  # 1.7 truncates to 1, as in Caffe
    layer, bottoms, tops = setup_layer('type: "BatchReindex"', [x, perm])
    (y,) = forward(layer, bottoms, tops)
    idx = [2, 0, 2, 3, 1]
    assert_close(y, x[idx])
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, _ = backward(layer, bottoms, tops, [dy], propagate=[True, False])
    ref = np.zeros_like(x)
    np.add.at(ref, idx, dy)
    assert_close(dx, ref)
    check_gradient(layer, bottoms, tops, check_bottoms=[0])
    assert not layer.allow_force_backward(1)


@pytest.mark.parametrize("perm, message", [([0, 4], "index 4 at position 1 is out of range"),
                                           ([-1, 0], "index -1 at position 0 is out of range")])
def test_batch_reindex_rejects_out_of_range_indices(perm, message):
    layer, bottoms, tops = setup_layer('type: "BatchReindex"',
                                       [np.zeros((4, 2)), np.array(perm, np.float32)])
    with pytest.raises(ProtonetError, match=message):
        layer.layer_forward(bottoms, tops)
