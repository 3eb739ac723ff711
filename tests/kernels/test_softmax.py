"""Softmax and loss kernels against slow, obvious NumPy references (float64)."""

import numpy as np
import pytest

from protonet.kernels import softmax as k
from tests.helpers.tolerances import KERNEL_ATOL, KERNEL_RTOL
from tests.helpers.threads import on_one_thread

SHAPES = [(1, 1, 1), (2, 5, 1), (3, 4, 7), (1, 3, 6), (4, 1, 2)]


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


def f32(array):
    return np.ascontiguousarray(array, dtype=np.float32)


def close(ours, ref, what=""):
    np.testing.assert_allclose(ours, ref, rtol=KERNEL_RTOL, atol=KERNEL_ATOL, err_msg=what)


def ref_softmax(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def labels_for(rng, outer, c, inner):
    return f32(rng.integers(0, c, size=outer * inner))


def onehot(labels, outer, c, inner):
    """(outer, c, inner) one-hot of flat labels (outer · inner,)."""
    out = np.zeros((outer, c, inner))
    lab = labels.astype(int).reshape(outer, inner)
    for o in range(outer):
        out[o, lab[o], np.arange(inner)] = 1.0
    return out


# ---- labels ----------------------------------------------------------------------------------

def test_check_labels_counts_valid_and_skips_ignored():
    labels = f32([0, 2, 5, 1, 5, 2.9])
    assert k.check_labels(labels, 3, True, 5) == (4, -1)


def test_check_labels_reports_first_out_of_range_position():
    assert k.check_labels(f32([0, 1, 3, -1]), 3, False, 0) == (2, 2)
    assert k.check_labels(f32([0, -1]), 3, False, 0) == (1, 1)


def test_check_labels_truncates_toward_zero_like_static_cast():
    # -0.5 truncates to 0 and 2.99 to 2: both valid for 3 classes.
    assert k.check_labels(f32([-0.5, 2.99]), 3, False, 0) == (2, -1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 3e9])
def test_check_labels_rejects_nan_and_huge_values(bad):
    assert k.check_labels(f32([1, bad]), 3, True, -1) == (1, 1)


# ---- softmax ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_softmax_forward_matches_reference(rng, shape):
    x = f32(rng.standard_normal(shape) * 5)
    out = np.empty_like(x)
    k.softmax_forward(x, out)
    close(out, ref_softmax(x))


def test_softmax_forward_is_stable_for_large_inputs():
    x = f32([[[1000.0], [1001.0], [-1000.0]]])
    out = np.empty_like(x)
    k.softmax_forward(x, out)
    close(out, ref_softmax(x))
    assert np.isfinite(out).all()


def test_softmax_forward_may_run_in_place(rng):
    x = f32(rng.standard_normal((3, 4, 5)))
    expected = ref_softmax(x)
    k.softmax_forward(x, x)
    close(x, expected)


# Rows (inner = 1) of odd lengths, a classifier batch, strided classes over more than one chunk
# of positions (SOFTMAX_CHUNK), and blobs above PARALLEL_MIN in both layouts.
FAST_SHAPES = [(3, 37, 1), (16, 1000, 1), (2, 3, 2500), (1, 21, 1030), (64, 1000, 1),
               (2, 21, 1600)]


@pytest.mark.parametrize("shape", FAST_SHAPES, ids=str)
def test_softmax_forward_matches_reference_on_vectorised_paths(rng, shape):
    x = f32(rng.standard_normal(shape) * 8)
    out = np.empty_like(x)
    k.softmax_forward(x, out)
    close(out, ref_softmax(x))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("shape", [(4, 300, 1), (2, 5, 70)], ids=str)
def test_softmax_forward_flushes_far_below_the_max_to_zero(shape):
    """e^(x − max) below e^−87.3 is 0 (np.exp would give a subnormal or 0)."""
    x = np.zeros(shape, np.float32)
    x[:, 0] = 100.0
    x[:, 1] = 100.0 - 87.0
    x[:, 2] = -100.0
    out = np.empty_like(x)
    k.softmax_forward(x, out)
    close(out, ref_softmax(x))
    assert (out[:, 2] == 0).all()


@pytest.mark.parametrize("shape", [(3, 40, 1), (3, 6, 33)], ids=str)
def test_softmax_forward_propagates_nan_and_inf_like_caffe(shape):
    """A NaN or +inf anywhere in a distribution makes all of it NaN (NaN enters the sum; inf −
    inf is NaN); −inf scores get probability 0; other distributions are untouched."""
    x = np.zeros(shape, np.float32)
    x[0, 4, 0] = np.nan
    x[1, 3, -1] = np.inf
    x[2, 1, 0] = -np.inf
    out = np.empty_like(x)
    with np.errstate(invalid="ignore"):
        expected = ref_softmax(x)
        k.softmax_forward(x, out)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    finite = ~np.isnan(expected)
    close(out[finite], expected[finite])


@pytest.mark.parametrize("shape", [(16, 1000, 1), (2, 21, 1600)], ids=str)
def test_softmax_forward_in_place_on_vectorised_paths(rng, shape):
    x = f32(rng.standard_normal(shape) * 3)
    expected = np.empty_like(x)
    k.softmax_forward(x, expected)
    k.softmax_forward(x, x)
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("shape", [(64, 1000, 1), (2, 21, 1600)], ids=str)
def test_softmax_kernels_are_bit_identical_for_any_thread_count(rng, shape):
    x = f32(rng.standard_normal(shape) * 3)
    dy = f32(rng.standard_normal(shape))

    def run():
        y, dx = np.empty_like(x), np.empty_like(x)
        k.softmax_forward(x, y)
        k.softmax_backward(y, dy, dx)
        return y, dx

    for a, b in zip(on_one_thread(run), run()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", SHAPES + FAST_SHAPES, ids=str)
def test_softmax_backward_matches_reference(rng, shape):
    y = f32(ref_softmax(rng.standard_normal(shape)))
    dy = f32(rng.standard_normal(shape))
    dx = np.empty_like(y)
    k.softmax_backward(y, dy, dx)
    y64, dy64 = y.astype(np.float64), dy.astype(np.float64)
    close(dx, (dy64 - (dy64 * y64).sum(axis=1, keepdims=True)) * y64)


@pytest.mark.parametrize("shape", [(3, 37, 1), (2, 21, 1600)], ids=str)
def test_softmax_backward_may_run_in_place(rng, shape):
    y = f32(ref_softmax(rng.standard_normal(shape)))
    dy = f32(rng.standard_normal(shape))
    expected = np.empty_like(dy)
    k.softmax_backward(y, dy, expected)
    k.softmax_backward(y, dy, dy)
    np.testing.assert_array_equal(dy, expected)


# ---- SoftmaxWithLoss / Infogain --------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("ignore", [None, 0])
def test_softmax_loss_forward_and_backward_match_reference(rng, shape, ignore):
    outer, c, inner = shape
    prob = f32(ref_softmax(rng.standard_normal(shape)))
    labels = labels_for(rng, outer, c, inner)
    has_ignore = ignore is not None
    ignore_label = 0 if ignore is None else ignore
    keep = ~(labels == ignore_label) if has_ignore else np.ones(labels.shape, bool)
    picked = np.take_along_axis(prob.astype(np.float64),
                                labels.astype(int).reshape(outer, 1, inner), axis=1).reshape(-1)
    expected_loss = -np.log(picked[keep]).sum()
    loss = k.softmax_loss_forward(prob, labels, has_ignore, ignore_label)
    np.testing.assert_allclose(loss, expected_loss, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    dx = np.empty_like(prob)
    scale = np.float32(0.5)
    k.softmax_loss_backward(prob, labels, has_ignore, ignore_label, scale, dx)
    expected = (prob - onehot(labels, outer, c, inner)) * 0.5
    expected *= keep.reshape(outer, 1, inner)
    close(dx, expected)


def test_softmax_loss_forward_clamps_zero_probability_at_flt_min():
    prob = f32([[[0.0], [1.0]]])
    loss = k.softmax_loss_forward(prob, f32([0]), False, 0)
    np.testing.assert_allclose(loss, -np.log(np.float32(k.FLT_MIN)), rtol=KERNEL_RTOL)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_infogain_forward_and_backward_match_reference(rng, shape):
    outer, c, inner = shape
    prob = f32(ref_softmax(rng.standard_normal(shape)))
    labels = labels_for(rng, outer, c, inner)
    h = f32(rng.uniform(0, 2, (c, c)))
    lab = labels.astype(int).reshape(outer, inner)
    hl = h.astype(np.float64)[lab]                       # (outer, inner, c)
    logp = np.log(prob.astype(np.float64)).transpose(0, 2, 1)
    loss = k.infogain_loss_forward(prob, labels, h, False, 0)
    np.testing.assert_allclose(loss, -(hl * logp).sum(), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    dx = np.empty_like(prob)
    row_sums = f32(h.sum(axis=1))
    k.infogain_loss_backward(prob, labels, h, row_sums, False, 0, np.float32(2.0), dx)
    expected = (prob * row_sums[lab][:, None, :] - hl.transpose(0, 2, 1)) * 2.0
    close(dx, expected)


# ---- SigmoidCrossEntropyLoss -----------------------------------------------------------------

@pytest.mark.parametrize("ignore", [None, 1])
def test_sigmoid_cross_entropy_matches_naive_formula(rng, ignore):
    x = f32(rng.standard_normal(40) * 4)
    t = f32(rng.integers(0, 2, 40))
    has_ignore = ignore is not None
    sig = np.empty_like(x)
    loss, valid = k.sigmoid_cross_entropy_forward(x, t, has_ignore, ignore or 0, sig)
    x64, t64 = x.astype(np.float64), t.astype(np.float64)
    s = 1 / (1 + np.exp(-x64))
    keep = t64 != ignore if has_ignore else np.ones(40, bool)
    naive = -(t64 * np.log(s) + (1 - t64) * np.log(1 - s))
    close(sig, s)
    assert valid == keep.sum()
    np.testing.assert_allclose(loss, naive[keep].sum(), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    dx = np.empty_like(x)
    k.sigmoid_cross_entropy_backward(sig, t, has_ignore, ignore or 0, np.float32(0.25), dx)
    close(dx, (s - t64) * 0.25 * keep)


def test_sigmoid_cross_entropy_does_not_overflow_for_large_scores():
    x = f32([100.0, -100.0])
    sig = np.empty_like(x)
    loss, _ = k.sigmoid_cross_entropy_forward(x, f32([0, 1]), False, 0, sig)
    np.testing.assert_allclose(loss, 200.0, rtol=KERNEL_RTOL)


# ---- Hinge, MultinomialLogistic, Contrastive -------------------------------------------------

@pytest.mark.parametrize("squared", [False, True])
def test_hinge_margins_and_backward_match_reference(rng, squared):
    x = f32(rng.standard_normal((6, 5)) * 2)
    labels = f32(rng.integers(0, 5, 6))
    sign = np.ones((6, 5))
    sign[np.arange(6), labels.astype(int)] = -1
    margins = np.empty_like(x)
    k.hinge_margins(x, labels, margins)
    expected = np.maximum(0, 1 + sign * x)
    close(margins, expected)
    dx = np.empty_like(x)
    k.hinge_backward(margins, labels, squared, np.float32(0.5), dx)
    signed = sign * expected
    close(dx, (signed if squared else np.sign(signed)) * 0.5)


def test_multinomial_logistic_matches_reference(rng):
    p = f32(rng.uniform(0, 1, (5, 4)))
    p[0, 1] = 0.0
    labels = f32([1, 0, 3, 2, 2])
    rows = np.arange(5)
    picked = np.maximum(p[rows, labels.astype(int)].astype(np.float64), k.LOG_THRESHOLD)
    np.testing.assert_allclose(k.multinomial_logistic_forward(p, labels), -np.log(picked).sum(),
                               rtol=KERNEL_RTOL)
    dx = np.empty_like(p)
    k.multinomial_logistic_backward(p, labels, np.float32(-0.2), dx)
    expected = np.zeros((5, 4))
    expected[rows, labels.astype(int)] = -0.2 / picked
    np.testing.assert_allclose(dx, expected, rtol=KERNEL_RTOL)


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_matches_reference(rng, legacy):
    a = f32(rng.standard_normal((8, 3)))
    b = f32(rng.standard_normal((8, 3)))
    sim = f32([1, 0, 0, 1, 0, 0, 1, 0])
    margin = np.float32(1.5)
    diff = np.empty_like(a)
    dist_sq = np.empty(8, np.float32)
    loss = k.contrastive_forward(a, b, sim, margin, legacy, diff, dist_sq)
    d64 = a.astype(np.float64) - b
    d2 = (d64 ** 2).sum(axis=1)
    d = np.sqrt(d2)
    if legacy:
        dissimilar = np.maximum(1.5 - d2, 0)
        beta_factor = -1.0 * (1.5 - d2 > 0)
    else:
        dissimilar = np.maximum(1.5 - d, 0) ** 2
        beta_factor = -(1.5 - d) / (d + k.CONTRASTIVE_EPS) * (1.5 - d > 0)
    close(diff, d64)
    close(dist_sq, d2)
    np.testing.assert_allclose(loss, np.where(sim > 0, d2, dissimilar).sum(), rtol=KERNEL_RTOL)
    dx = np.empty_like(a)
    k.contrastive_backward(diff, dist_sq, sim, margin, legacy, np.float32(0.5), dx)
    factor = np.where(sim > 0, 1.0, beta_factor) * 0.5
    close(dx, factor[:, None] * d64)


# ---- Accuracy --------------------------------------------------------------------------------

def ref_accuracy(x, labels, top_k, ignore):
    outer, c, inner = x.shape
    lab = labels.astype(int).reshape(outer, inner)
    hits = np.zeros(c)
    counts = np.zeros(c)
    for o in range(outer):
        for i in range(inner):
            v = lab[o, i]
            if v == ignore:
                continue
            counts[v] += 1
            hits[v] += (x[o, :, i] >= x[o, v, i]).sum() <= top_k
    per_class = np.divide(hits, counts, out=np.zeros(c), where=counts > 0)
    return (hits.sum() / counts.sum() if counts.sum() else 0.0), per_class


@pytest.mark.parametrize("shape", [(8, 5, 1), (2, 4, 3)], ids=str)
@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("ignore", [None, 1])
def test_accuracy_matches_reference(rng, shape, top_k, ignore):
    outer, c, inner = shape
    x = f32(rng.standard_normal(shape))
    labels = labels_for(rng, outer, c, inner)
    counts = np.empty(c, np.float32)
    per_class = np.empty(c, np.float32)
    acc = k.accuracy_forward(x, labels, top_k, ignore is not None, ignore or 0, counts,
                             per_class)
    expected, expected_per_class = ref_accuracy(x, labels, top_k, ignore)
    np.testing.assert_allclose(acc, expected, rtol=KERNEL_RTOL)
    close(per_class, expected_per_class)


def test_accuracy_counts_ties_against_the_true_class():
    x = f32([[[1.0], [1.0], [0.0]]])
    counts = np.empty(3, np.float32)
    per_class = np.empty(3, np.float32)
    assert k.accuracy_forward(x, f32([0]), 1, False, 0, counts, per_class) == 0.0
    assert k.accuracy_forward(x, f32([0]), 2, False, 0, counts, per_class) == 1.0


def test_accuracy_is_zero_when_every_label_is_ignored():
    x = f32([[[1.0], [0.0]]])
    counts = np.empty(2, np.float32)
    per_class = np.empty(2, np.float32)
    assert k.accuracy_forward(x, f32([1]), 1, True, 1, counts, per_class) == 0.0


# ---- determinism -----------------------------------------------------------------------------

def _run_parallel_kernels(rng):
    shape = (3, 7, 11)
    x = f32(rng.standard_normal(shape))
    labels = labels_for(rng, 3, 7, 11)
    y = np.empty_like(x)
    k.softmax_forward(x, y)
    dx = np.empty_like(x)
    k.softmax_backward(y, x, dx)
    dl = np.empty_like(x)
    k.softmax_loss_backward(y, labels, True, 2, np.float32(0.3), dl)
    a, b = f32(rng.standard_normal((9, 4))), f32(rng.standard_normal((9, 4)))
    diff, dist_sq, dc = np.empty_like(a), np.empty(9, np.float32), np.empty_like(a)
    sim = f32(rng.integers(0, 2, 9))
    loss = k.contrastive_forward(a, b, sim, np.float32(2.0), False, diff, dist_sq)
    k.contrastive_backward(diff, dist_sq, sim, np.float32(2.0), False, np.float32(0.1), dc)
    return [y, dx, dl, dc, np.float32(loss)]


def test_parallel_kernels_do_not_depend_on_thread_count():
    single = on_one_thread(lambda: _run_parallel_kernels(np.random.default_rng(7)))
    multi = _run_parallel_kernels(np.random.default_rng(7))
    for one, many in zip(single, multi):
        np.testing.assert_array_equal(one, many)
