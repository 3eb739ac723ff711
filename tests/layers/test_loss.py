"""Softmax, the loss layers and Accuracy: forward against NumPy, gradients, Caffe's checks."""

import numpy as np
import pytest

from protonet.errors import ProtonetError
from protonet.proto import caffe_pb2
from tests.helpers.gradcheck import check_gradient
from tests.helpers.layers import setup_layer
from tests.helpers.tolerances import LAYER_RTOL, conformance_atol

SENTINEL = 7.0


@pytest.fixture
def rng():
    return np.random.default_rng(1701)


def assert_close(ours, ref, what=""):
    np.testing.assert_allclose(ours, ref, rtol=LAYER_RTOL, atol=conformance_atol(ref),
                               err_msg=what)


def run(text, bottoms, n_tops=1):
    """Set up the layer, run one forward; return (layer, bottom blobs, tops)."""
    layer, blobs, tops = setup_layer(text, bottoms, n_tops)
    layer.layer_forward(blobs, tops)
    return layer, blobs, tops


def backward(layer, blobs, tops, propagate_down, top_diff=1.0):
    tops[0].diff[...] = top_diff
    layer.backward(tops, propagate_down, blobs)


def softmax_ref(x, axis=1):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def picked_prob(prob, labels, axis=1):
    """prob at each label along ``axis``; labels have prob's shape without that axis."""
    index = np.expand_dims(labels.astype(int), axis)
    return np.take_along_axis(prob, index, axis=axis).squeeze(axis)


def scores_and_labels(rng, shape, axis=1):
    x = rng.standard_normal(shape).astype(np.float32)
    label_shape = shape[:axis] + shape[axis + 1:]
    labels = rng.integers(0, shape[axis], label_shape).astype(np.float32)
    return x, labels


# ---- Softmax -----------------------------------------------------------------------------------

@pytest.mark.parametrize("axis, shape", [(1, (3, 5)), (1, (2, 3, 4)), (2, (2, 3, 4)),
                                         (-1, (2, 3, 4)), (0, (4, 3))], ids=str)
def test_softmax_forward_matches_numpy_and_gradient_checks(rng, axis, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    text = f'type: "Softmax" softmax_param {{ axis: {axis} }}'
    layer, blobs, tops = run(text, [x])
    assert_close(tops[0].data, softmax_ref(x, axis))
    check_gradient(layer, blobs, tops)


def test_softmax_runs_in_place(rng):
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    layer, blobs, _ = setup_layer('type: "Softmax"', [x])
    layer.layer_forward(blobs, blobs)
    assert_close(blobs[0].data, softmax_ref(x))
    dy = rng.standard_normal(x.shape).astype(np.float32)
    blobs[0].diff[...] = dy
    y = blobs[0].data.astype(np.float64)
    expected = (dy - (dy * y).sum(axis=1, keepdims=True)) * y
    layer.backward(blobs, [True], blobs)
    assert_close(blobs[0].diff, expected)


def test_softmax_rejects_an_axis_beyond_the_blob(rng):
    with pytest.raises(ProtonetError, match="axis 3"):
        setup_layer('type: "Softmax" softmax_param { axis: 3 }', [np.zeros((2, 3), np.float32)])


# ---- SoftmaxWithLoss ---------------------------------------------------------------------------

def softmax_loss_ref(x, labels, mode, ignore=None, axis=1):
    prob = softmax_ref(x, axis)
    logp = -np.log(np.maximum(picked_prob(prob, labels, axis), np.finfo(np.float32).tiny))
    keep = np.ones(labels.shape, bool) if ignore is None else labels != ignore
    outer = int(np.prod(x.shape[:axis]))
    normalizer = {"FULL": labels.size, "VALID": keep.sum(), "BATCH_SIZE": outer, "NONE": 1}[mode]
    return logp[keep].sum() / max(1, normalizer)


@pytest.mark.parametrize("mode", ["FULL", "VALID", "BATCH_SIZE", "NONE"])
@pytest.mark.parametrize("ignore", [None, 0])
def test_softmax_with_loss_normalizations_match_numpy(rng, mode, ignore):
    x, labels = scores_and_labels(rng, (2, 3, 2, 2))
    ignore_text = "" if ignore is None else f"ignore_label: {ignore}"
    text = f'type: "SoftmaxWithLoss" loss_param {{ normalization: {mode} {ignore_text} }}'
    layer, blobs, tops = run(text, [x, labels])
    assert_close(tops[0].data, softmax_loss_ref(x, labels, mode, ignore))
    check_gradient(layer, blobs, tops, check_bottoms=[0])


@pytest.mark.parametrize("loss_param, mode", [
    ("normalize: false", "BATCH_SIZE"),
    ("normalize: true", "VALID"),
    ("normalize: false normalization: VALID", "VALID"),
    ("normalize: true normalization: NONE", "NONE"),
    ("", "VALID"),
])
def test_softmax_with_loss_normalization_beats_legacy_normalize(rng, loss_param, mode):
    x, labels = scores_and_labels(rng, (4, 3, 2))
    text = f'type: "SoftmaxWithLoss" loss_param {{ ignore_label: 2 {loss_param} }}'
    _, _, tops = run(text, [x, labels])
    assert_close(tops[0].data, softmax_loss_ref(x, labels, mode, ignore=2))


def test_softmax_with_loss_along_axis2_and_second_top_are_probabilities(rng):
    x, labels = scores_and_labels(rng, (2, 3, 4), axis=2)
    text = 'type: "SoftmaxWithLoss" softmax_param { axis: 2 }'
    layer, blobs, tops = run(text, [x, labels], n_tops=2)
    assert_close(tops[0].data, softmax_loss_ref(x, labels, "VALID", axis=2))
    assert_close(tops[1].data, softmax_ref(x, axis=2))
    check_gradient(layer, blobs, tops, check_bottoms=[0], top_indices=[0])


def test_softmax_with_loss_scales_gradient_by_loss_weight(rng):
    x, labels = scores_and_labels(rng, (3, 4))
    layer, blobs, tops = run('type: "SoftmaxWithLoss"', [x, labels])
    backward(layer, blobs, tops, [True, False], top_diff=2.0)
    onehot = np.eye(4)[labels.astype(int)]
    assert_close(blobs[0].diff, 2.0 * (softmax_ref(x) - onehot) / 3)


def test_softmax_with_loss_is_zero_when_every_label_is_ignored(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    labels = np.full(3, 1, np.float32)
    layer, blobs, tops = run('type: "SoftmaxWithLoss" loss_param { ignore_label: 1 }',
                             [x, labels])
    assert tops[0].data == 0.0
    backward(layer, blobs, tops, [True, False])
    np.testing.assert_array_equal(blobs[0].diff, 0.0)


@pytest.mark.parametrize("bad", [4.0, -1.0, np.nan])
def test_softmax_with_loss_rejects_labels_out_of_range(rng, bad):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    labels = np.array([0, bad, 1], np.float32)
    layer, blobs, tops = setup_layer('type: "SoftmaxWithLoss"', [x, labels])
    with pytest.raises(ProtonetError, match=r"position 1 is out of range.*\[0, 3\]"):
        layer.layer_forward(blobs, tops)


def test_softmax_with_loss_rejects_a_label_count_mismatch(rng):
    with pytest.raises(ProtonetError, match="number of labels must match"):
        setup_layer('type: "SoftmaxWithLoss"', [np.zeros((2, 3, 4), np.float32),
                                                 np.zeros((2, 3), np.float32)])


def test_loss_layers_refuse_backward_into_labels(rng):
    x, labels = scores_and_labels(rng, (3, 4))
    layer, blobs, tops = run('type: "SoftmaxWithLoss"', [x, labels])
    with pytest.raises(ProtonetError, match="cannot backpropagate to label inputs"):
        backward(layer, blobs, tops, [True, True])
    assert not layer.allow_force_backward(1)


def test_loss_layers_leave_unrequested_diffs_and_bottoms_untouched(rng):
    x, labels = scores_and_labels(rng, (3, 4))
    layer, blobs, tops = run('type: "SoftmaxWithLoss"', [x, labels])
    np.testing.assert_array_equal(blobs[0].data, x)
    blobs[0].diff[...] = SENTINEL
    backward(layer, blobs, tops, [False, False])
    np.testing.assert_array_equal(blobs[0].diff, SENTINEL)


# ---- InfogainLoss ------------------------------------------------------------------------------

def infogain_ref(x, labels, h, axis=1):
    prob = np.moveaxis(softmax_ref(x, axis), axis, -1)
    rows = h.astype(np.float64)[labels.astype(int)]
    return -(rows * np.log(np.maximum(prob, 1e-20))).sum() / labels.size


def write_blob_proto(path, array, legacy):
    proto = caffe_pb2.BlobProto()
    if legacy:
        proto.num, proto.channels = 1, 1
        proto.height, proto.width = array.shape
    else:
        proto.shape.dim.extend(array.shape)
    proto.data.extend(array.reshape(-1).tolist())
    path.write_bytes(proto.SerializeToString())


def test_infogain_loss_with_h_bottom_matches_numpy_and_gradient_checks(rng):
    x, labels = scores_and_labels(rng, (4, 3))
    h = rng.uniform(0, 2, (1, 1, 3, 3)).astype(np.float32)
    layer, blobs, tops = run('type: "InfogainLoss"', [x, labels, h])
    assert_close(tops[0].data, infogain_ref(x, labels, h.reshape(3, 3)))
    check_gradient(layer, blobs, tops, check_bottoms=[0])


@pytest.mark.parametrize("legacy", [True, False])
def test_infogain_loss_reads_h_from_a_binaryproto_source(rng, tmp_path, legacy):
    x, labels = scores_and_labels(rng, (2, 3, 2), axis=2)
    h = rng.uniform(0, 2, (2, 2)).astype(np.float32)
    source = tmp_path / "H.binaryproto"
    write_blob_proto(source, h, legacy)
    text = f'type: "InfogainLoss" infogain_loss_param {{ source: "{source}" axis: 2 }}'
    layer, blobs, tops = run(text, [x, labels], n_tops=2)
    assert_close(tops[0].data, infogain_ref(x, labels, h, axis=2))
    assert_close(tops[1].data, softmax_ref(x, axis=2))
    check_gradient(layer, blobs, tops, check_bottoms=[0], top_indices=[0])


@pytest.mark.parametrize("text, bottoms, message", [
    ('type: "InfogainLoss"', 2, "source must be specified"),
    ('type: "InfogainLoss" loss_param { normalize: true }', 3, "normalize is deprecated"),
    ('type: "InfogainLoss" infogain_loss_param { source: "/nonexistent/H.binaryproto" }', 2,
     "cannot read infogain matrix"),
])
def test_infogain_loss_refuses_bad_configurations(text, bottoms, message):
    arrays = [np.zeros((2, 3), np.float32), np.zeros(2, np.float32),
              np.zeros((3, 3), np.float32)][:bottoms]
    with pytest.raises(ProtonetError, match=message):
        setup_layer(text, arrays)


def test_infogain_loss_rejects_a_wrong_size_h_and_backward_into_h(rng):
    x, labels = scores_and_labels(rng, (2, 3))
    with pytest.raises(ProtonetError, match="must be 3x3"):
        setup_layer('type: "InfogainLoss"', [x, labels, np.ones((2, 2), np.float32)])
    layer, blobs, tops = run('type: "InfogainLoss"', [x, labels, np.ones((3, 3), np.float32)])
    with pytest.raises(ProtonetError, match="infogain matrix input"):
        backward(layer, blobs, tops, [True, False, True])


# ---- EuclideanLoss -----------------------------------------------------------------------------

def test_euclidean_loss_matches_numpy_and_gradient_checks_both_bottoms(rng):
    a = rng.standard_normal((3, 4, 2)).astype(np.float32)
    b = rng.standard_normal((3, 8)).astype(np.float32)
    layer, blobs, tops = run('type: "EuclideanLoss"', [a, b])
    d = a.reshape(3, 8).astype(np.float64) - b
    assert_close(tops[0].data, (d ** 2).sum() / 3 / 2)
    check_gradient(layer, blobs, tops, check_bottoms=[0, 1])
    assert layer.allow_force_backward(1)


def test_euclidean_loss_rejects_different_dimensions():
    with pytest.raises(ProtonetError, match="same dimension"):
        setup_layer('type: "EuclideanLoss"', [np.zeros((3, 4), np.float32),
                                               np.zeros((3, 5), np.float32)])


def test_euclidean_loss_rejects_different_batch_sizes():
    with pytest.raises(ProtonetError, match="first axes"):
        setup_layer('type: "EuclideanLoss"', [np.zeros((3, 4), np.float32),
                                               np.zeros((2, 4), np.float32)])


# ---- SigmoidCrossEntropyLoss -------------------------------------------------------------------

def sigmoid_xent_ref(x, t, mode, ignore=None):
    s = 1 / (1 + np.exp(-x.astype(np.float64)))
    loss = -(t * np.log(s) + (1 - t) * np.log(1 - s))
    keep = np.ones(t.shape, bool) if ignore is None else t.astype(int) != ignore
    normalizer = {"FULL": t.size, "VALID": keep.sum(), "BATCH_SIZE": x.shape[0], "NONE": 1}[mode]
    return loss[keep].sum() / max(1, normalizer)


@pytest.mark.parametrize("loss_param, mode, ignore", [
    ("", "BATCH_SIZE", None),
    ("normalization: FULL", "FULL", None),
    ("normalize: true ignore_label: 1", "VALID", 1),
    ("normalization: NONE ignore_label: 0", "NONE", 0),
])
def test_sigmoid_cross_entropy_loss_matches_numpy_and_gradient_checks(rng, loss_param, mode,
                                                                      ignore):
    x = (rng.standard_normal((4, 5)) * 3).astype(np.float32)
    t = rng.integers(0, 2, (4, 5)).astype(np.float32)
    text = f'type: "SigmoidCrossEntropyLoss" loss_param {{ {loss_param} }}'
    layer, blobs, tops = run(text, [x, t])
    assert_close(tops[0].data, sigmoid_xent_ref(x, t, mode, ignore))
    check_gradient(layer, blobs, tops, check_bottoms=[0])


def test_sigmoid_cross_entropy_loss_accepts_soft_targets(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    t = rng.uniform(0, 1, (3, 4)).astype(np.float32)
    layer, blobs, tops = run('type: "SigmoidCrossEntropyLoss"', [x, t])
    assert_close(tops[0].data, sigmoid_xent_ref(x, t, "BATCH_SIZE"))
    check_gradient(layer, blobs, tops, check_bottoms=[0])


def test_sigmoid_cross_entropy_loss_rejects_a_count_mismatch():
    with pytest.raises(ProtonetError, match="same count"):
        setup_layer('type: "SigmoidCrossEntropyLoss"', [np.zeros((3, 4), np.float32),
                                                         np.zeros((3, 5), np.float32)])


# ---- HingeLoss ---------------------------------------------------------------------------------

def hinge_inputs(rng):
    """Scores away from the hinge's kinks at ±1 (further than the gradient-check step)."""
    x = rng.uniform(-0.8, 0.8, (5, 4)).astype(np.float32)
    x[rng.random((5, 4)) < 0.3] = 2.0
    labels = rng.integers(0, 4, 5).astype(np.float32)
    return x, labels


@pytest.mark.parametrize("norm, power", [("L1", 1), ("L2", 2)])
def test_hinge_loss_matches_numpy_and_gradient_checks(rng, norm, power):
    x, labels = hinge_inputs(rng)
    sign = np.ones((5, 4))
    sign[np.arange(5), labels.astype(int)] = -1
    expected = (np.maximum(0, 1 + sign * x) ** power).sum() / 5
    layer, blobs, tops = run(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}',
                             [x, labels])
    assert_close(tops[0].data, expected)
    check_gradient(layer, blobs, tops, check_bottoms=[0])


def test_hinge_loss_rejects_a_label_beyond_dim(rng):
    layer, blobs, tops = setup_layer('type: "HingeLoss"', [np.zeros((2, 3), np.float32),
                                                           np.array([0, 3], np.float32)])
    with pytest.raises(ProtonetError, match=r"label 3 at position 1.*\[0, 2\]"):
        layer.layer_forward(blobs, tops)


# ---- MultinomialLogisticLoss -------------------------------------------------------------------

def test_multinomial_logistic_loss_matches_numpy_and_gradient_checks(rng):
    p = rng.uniform(0.3, 1.0, (4, 5, 1, 1)).astype(np.float32)
    labels = np.array([1, 0, 4, 2], np.float32)
    layer, blobs, tops = run('type: "MultinomialLogisticLoss"', [p, labels])
    expected = -np.log(p.reshape(4, 5)[np.arange(4), labels.astype(int)]).sum() / 4
    assert_close(tops[0].data, expected)
    check_gradient(layer, blobs, tops, check_bottoms=[0])


def test_multinomial_logistic_loss_clamps_zero_probability(rng):
    p = np.zeros((2, 3), np.float32)
    _, _, tops = run('type: "MultinomialLogisticLoss"', [p, np.zeros(2, np.float32)])
    assert_close(tops[0].data, -np.log(np.float32(1e-20)))


def test_multinomial_logistic_loss_requires_one_label_per_sample():
    with pytest.raises(ProtonetError, match="labels must have shape"):
        setup_layer('type: "MultinomialLogisticLoss"', [np.zeros((2, 3), np.float32),
                                                         np.zeros((2, 3), np.float32)])


# ---- ContrastiveLoss ---------------------------------------------------------------------------

def contrastive_inputs(rng):
    """Pairs at distances away from both kinks for margin 1.5 (d = 1.5 and d² = 1.5)."""
    a = rng.standard_normal((6, 3)).astype(np.float32)
    direction = rng.standard_normal((6, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    distance = np.array([0.4, 0.8, 2.5, 0.6, 3.0, 0.9])[:, None]
    b = (a + direction * distance).astype(np.float32)
    sim = np.array([1, 0, 0, 1, 1, 0], np.float32)
    return a.reshape(6, 3, 1, 1), b.reshape(6, 3, 1, 1), sim.reshape(6, 1, 1, 1)


@pytest.mark.parametrize("legacy", ["false", "true"])
def test_contrastive_loss_matches_numpy_and_gradient_checks(rng, legacy):
    a, b, sim = contrastive_inputs(rng)
    text = (f'type: "ContrastiveLoss" contrastive_loss_param {{ margin: 1.5 '
            f'legacy_version: {legacy} }}')
    layer, blobs, tops = run(text, [a, b, sim])
    d2 = ((a.astype(np.float64) - b) ** 2).reshape(6, 3).sum(axis=1)
    if legacy == "true":
        dissimilar = np.maximum(1.5 - d2, 0)
    else:
        dissimilar = np.maximum(1.5 - np.sqrt(d2), 0) ** 2
    expected = np.where(sim.reshape(6) > 0, d2, dissimilar).sum() / 6 / 2
    assert_close(tops[0].data, expected)
    check_gradient(layer, blobs, tops, check_bottoms=[0, 1])


def test_contrastive_loss_checks_shapes_and_refuses_backward_into_similarity(rng):
    a, b, sim = contrastive_inputs(rng)
    with pytest.raises(ProtonetError, match=r"shape \(num, C, 1, 1\)"):
        setup_layer('type: "ContrastiveLoss"', [a.reshape(6, 1, 3, 1), b, sim])
    with pytest.raises(ProtonetError, match="one value per pair"):
        setup_layer('type: "ContrastiveLoss"', [a, b, sim[:4]])
    layer, blobs, tops = run('type: "ContrastiveLoss"', [a, b, sim])
    assert not layer.allow_force_backward(2)
    with pytest.raises(ProtonetError, match="similarity input"):
        backward(layer, blobs, tops, [True, True, True])


# ---- Accuracy ----------------------------------------------------------------------------------

def accuracy_ref(x, labels, top_k, ignore=None, axis=1):
    scores = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
    labels = labels.reshape(-1).astype(int)
    keep = np.ones(labels.shape, bool) if ignore is None else labels != ignore
    true_score = scores[np.arange(len(labels)), labels]
    hit = (scores >= true_score[:, None]).sum(axis=1) <= top_k
    per_class = np.array([hit[keep & (labels == c)].mean() if (keep & (labels == c)).any()
                          else 0.0 for c in range(x.shape[axis])])
    return hit[keep].mean() if keep.any() else 0.0, per_class


@pytest.mark.parametrize("param, top_k, ignore, axis, shape", [
    ("", 1, None, 1, (8, 5)),
    ("top_k: 2 ignore_label: 3", 2, 3, 1, (10, 4)),
    ("axis: 2 top_k: 3", 3, None, 2, (2, 3, 6)),
    ("ignore_label: 0", 1, 0, 1, (2, 4, 3)),
])
def test_accuracy_matches_numpy_with_per_class_top(rng, param, top_k, ignore, axis, shape):
    x, labels = scores_and_labels(rng, shape, axis)
    _, _, tops = run(f'type: "Accuracy" accuracy_param {{ {param} }}', [x, labels], n_tops=2)
    expected, per_class = accuracy_ref(x, labels, top_k, ignore, axis)
    assert_close(tops[0].data, expected)
    assert_close(tops[1].data, per_class)


def test_accuracy_rejects_top_k_above_class_count_and_has_no_backward(rng):
    x, labels = scores_and_labels(rng, (4, 3))
    with pytest.raises(ProtonetError, match="top_k"):
        setup_layer('type: "Accuracy" accuracy_param { top_k: 4 }', [x, labels])
    layer, blobs, tops = run('type: "Accuracy"', [x, labels])
    assert not layer.allow_force_backward(0)
    with pytest.raises(ProtonetError, match="no gradient"):
        layer.backward(tops, [True, False], blobs)


def test_accuracy_rejects_labels_out_of_range(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    layer, blobs, tops = setup_layer('type: "Accuracy"', [x, np.array([0, 1, 9], np.float32)])
    with pytest.raises(ProtonetError, match="label 9 at position 2"):
        layer.layer_forward(blobs, tops)


def test_loss_layers_reshape_to_a_new_batch_size(rng):
    layer, blobs, tops = run('type: "SoftmaxWithLoss"', list(scores_and_labels(rng, (3, 4))))
    x, labels = scores_and_labels(rng, (5, 4))
    blobs[0].reshape(x.shape)
    blobs[0].data[...] = x
    blobs[1].reshape(labels.shape)
    blobs[1].data[...] = labels
    layer.layer_forward(blobs, tops)
    assert_close(tops[0].data, softmax_loss_ref(x, labels, "VALID"))
    assert tops[0].shape == ()
