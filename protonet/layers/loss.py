"""Softmax, the loss layers and Accuracy.

Loss layers write a scalar top (shape ``()``) and scale their gradient by that top's diff, which
holds the loss weight (Caffe's convention: 1 by default for top 0 of a loss layer). Layers that
take class labels check them before any kernel runs: every label that is not ``ignore_label``
must truncate to an integer in ``[0, classes)``. The normalisation of SoftmaxWithLoss,
SigmoidCrossEntropyLoss and InfogainLoss goes through one table, :data:`_NORMALIZERS`.
"""

import numpy as np

from ..blob import Blob
from ..errors import ProtonetError
from ..io.blobproto import read_blobproto
from ..kernels import softmax as kernels
from ..proto import caffe_pb2
from .base import Layer, LossLayer
from .registry import register

_LOSS = caffe_pb2.LossParameter
_HINGE = caffe_pb2.HingeLossParameter


# ---- shared helpers ----------------------------------------------------------------------------

# Normaliser of the summed loss, by LossParameter.NormalizationMode, from (outer, inner, valid):
# outer · inner positions of which `valid` carry a label that is not ignored.
_NORMALIZERS = {
    _LOSS.FULL: lambda outer, inner, valid: outer * inner,
    _LOSS.VALID: lambda outer, inner, valid: valid,
    _LOSS.BATCH_SIZE: lambda outer, inner, valid: outer,
    _LOSS.NONE: lambda outer, inner, valid: 1,
}


def _normalizer(mode, outer, inner, valid):
    """The float32 divisor of the loss for ``mode``.

    Caffe quirk: the divisor is clamped to at least 1, so a batch whose labels are all ignored
    gives loss 0 rather than NaN (softmax_loss_layer.cpp ``get_normalizer``).
    """
    return np.float32(max(1, _NORMALIZERS[mode](outer, inner, valid)))


def _normalization_mode(layer, default):
    """LossParameter's mode with Caffe's precedence: ``normalization`` if given, else the
    deprecated ``normalize`` (true ⇒ VALID, false ⇒ BATCH_SIZE), else the layer's default."""
    loss_param = layer.param.loss_param
    if loss_param.HasField("normalization"):
        mode = loss_param.normalization
    elif loss_param.HasField("normalize"):
        mode = _LOSS.VALID if loss_param.normalize else _LOSS.BATCH_SIZE
    else:
        mode = default
    if mode not in _NORMALIZERS:
        layer.fail(f"unknown loss_param.normalization {mode}; expected one of FULL, VALID, "
                   f"BATCH_SIZE, NONE")
    return mode


def _ignore_label(message):
    """(has_ignore, ignore_label) from a message with an optional ``ignore_label`` field."""
    if message.HasField("ignore_label"):
        return True, int(message.ignore_label)
    return False, 0


def _check_labels(layer, labels, num_classes, has_ignore=False, ignore_label=0):
    """Fail unless every non-ignored label is an integer in [0, num_classes); return their count."""
    valid, bad = kernels.check_labels(labels, num_classes, has_ignore, ignore_label)
    if bad >= 0:
        ignored = f", or the ignore_label {ignore_label}" if has_ignore else ""
        layer.fail(f"label {labels[bad]:g} at position {bad} is out of range: expected an "
                   f"integer in [0, {num_classes - 1}]{ignored}")
    return valid


def _split_at_axis(blob, axis):
    """(axis, outer, classes, inner) of ``blob`` around the canonical ``axis``."""
    axis = blob.canonical_axis(axis)
    return axis, blob.count_axes(0, axis), blob.shape[axis], blob.count_axes(axis + 1)


def _read_blob_proto(layer, path):
    """A Blob holding the BlobProto stored in ``path`` (the infogain matrix)."""
    try:
        array = read_blobproto(path)
    except ProtonetError as err:
        layer.fail(f"cannot read infogain matrix source: {err}")
    blob = Blob(array.shape)
    blob.data[...] = array
    return blob


class _LabelLossLayer(LossLayer):
    """A loss whose bottom 1 holds labels: refuses to backpropagate into them, as Caffe does."""

    def _refuse_label_backward(self, propagate_down):
        if propagate_down[1]:
            self.fail("cannot backpropagate to label inputs (bottom 1); set propagate_down: "
                      "false for it")

    def _loss_weight(self, tops):
        return tops[0].diff[()]


# ---- Softmax -----------------------------------------------------------------------------------

@register("Softmax")
class SoftmaxLayer(Layer):
    """y = exp(x − max x) / Σ exp(x − max x) along one axis; every other axis is independent.

    softmax_param: axis (1; negative counts from the end), engine (ignored).
    Bottom: x, any shape with the axis. Top: y, the shape of x. No param blobs. In-place allowed.
    """

    exact_bottoms = 1
    exact_tops = 1
    allow_in_place = True

    def setup(self, bottoms, tops):
        self.axis = int(self.param.softmax_param.axis)

    def reshape(self, bottoms, tops):
        _, outer, classes, inner = _split_at_axis(bottoms[0], self.axis)
        self._dims = (outer, classes, inner)
        tops[0].reshape(bottoms[0].shape)

    def forward(self, bottoms, tops):
        kernels.softmax_forward(bottoms[0].data.reshape(self._dims),
                                tops[0].data.reshape(self._dims))

    def backward(self, tops, propagate_down, bottoms):
        if propagate_down[0]:
            kernels.softmax_backward(tops[0].data.reshape(self._dims),
                                     tops[0].diff.reshape(self._dims),
                                     bottoms[0].diff.reshape(self._dims))


class _SoftmaxLabelLossLayer(_LabelLossLayer):
    """Shared by SoftmaxWithLoss and InfogainLoss: a softmax of bottom 0 along ``self.axis``,
    one label per position, an optional second top holding the probabilities."""

    max_tops = 2

    def reshape(self, bottoms, tops):
        super().reshape(bottoms, tops)
        axis, outer, classes, inner = _split_at_axis(bottoms[0], self.axis)
        if outer * inner != bottoms[1].count:
            self.fail(f"number of labels must match number of predictions: {bottoms[1].count} "
                      f"labels for scores of shape {bottoms[0].shape} with axis {axis} "
                      f"({outer * inner} positions); with axis 1 and scores (N, C, H, W) give "
                      f"N·H·W labels, integers in [0, C-1]")
        self._dims = (outer, classes, inner)
        # Caffe quirk: the second top shares the internal softmax output (ShareData in
        # softmax_loss_layer.cpp), so the probabilities are computed straight into it.
        self._prob = tops[1] if len(tops) > 1 else self._own_prob
        self._prob.reshape(bottoms[0].shape)

    def _forward_softmax(self, bottoms):
        """Softmax of bottom 0 into the probability blob; returns its (outer, c, inner) view."""
        prob = self._prob.data.reshape(self._dims)
        kernels.softmax_forward(bottoms[0].data.reshape(self._dims), prob)
        return prob

    def _checked_labels(self, bottoms):
        """The flat labels, checked; returns (labels, number of non-ignored labels)."""
        labels = bottoms[1].data.reshape(-1)
        valid = _check_labels(self, labels, self._dims[1], self.has_ignore, self.ignore_label)
        return labels, valid

    def _scaled(self, loss, valid):
        outer, _, inner = self._dims
        return np.float32(loss) / _normalizer(self.normalization, outer, inner, valid)


@register("SoftmaxWithLoss")
class SoftmaxWithLossLayer(_SoftmaxLabelLossLayer):
    """loss = −Σ log(max(softmax(x)[label], FLT_MIN)) / normaliser, over non-ignored positions.

    softmax_param: axis (1), engine (ignored). loss_param: ignore_label (unset), normalization
    (VALID; FULL, BATCH_SIZE = outer, NONE), normalize (deprecated; used only when normalization
    is unset: false ⇒ BATCH_SIZE, true ⇒ VALID).
    Bottoms: scores (…, C, …), labels (outer · inner values, integers in [0, C-1]). Tops: loss
    (), optional probabilities (shape of scores). No param blobs. Not in place. Gradient only to
    the scores.
    """

    def setup(self, bottoms, tops):
        self.axis = int(self.param.softmax_param.axis)
        self.has_ignore, self.ignore_label = _ignore_label(self.param.loss_param)
        self.normalization = _normalization_mode(self, _LOSS.VALID)
        self._own_prob = Blob()

    def forward(self, bottoms, tops):
        prob = self._forward_softmax(bottoms)
        labels, valid = self._checked_labels(bottoms)
        loss = kernels.softmax_loss_forward(prob, labels, self.has_ignore, self.ignore_label)
        tops[0].data[...] = self._scaled(loss, valid)

    def backward(self, tops, propagate_down, bottoms):
        self._refuse_label_backward(propagate_down)
        if not propagate_down[0]:
            return
        labels, valid = self._checked_labels(bottoms)
        scale = self._scaled(self._loss_weight(tops), valid)
        kernels.softmax_loss_backward(self._prob.data.reshape(self._dims), labels,
                                      self.has_ignore, self.ignore_label, scale,
                                      bottoms[0].diff.reshape(self._dims))


@register("InfogainLoss")
class InfogainLossLayer(_SoftmaxLabelLossLayer):
    """loss = −Σ_l H[label, l] · log(max(softmax(x)_l, 1e-20)) / normaliser, over positions.

    infogain_loss_param: source (binaryproto C×C matrix H; required without a third bottom),
    axis (1). loss_param: ignore_label (unset), normalization (VALID); the deprecated normalize
    is refused, as Caffe refuses it.
    Bottoms: scores (…, C, …), labels (outer · inner values in [0, C-1]), optional H (C·C
    values). Tops: loss (), optional probabilities (shape of scores). No param blobs. Not in
    place. Gradient only to the scores.
    """

    max_bottoms = 3

    def setup(self, bottoms, tops):
        infogain_param = self.param.infogain_loss_param
        self.axis = int(infogain_param.axis)
        self.has_ignore, self.ignore_label = _ignore_label(self.param.loss_param)
        # Caffe quirk: unlike the other losses, InfogainLoss refuses the deprecated normalize
        # (infogain_loss_layer.cpp).
        if self.param.loss_param.HasField("normalize"):
            self.fail('loss_param.normalize is deprecated for InfogainLoss; use '
                      '"normalization" instead')
        self.normalization = _normalization_mode(self, _LOSS.VALID)
        self._own_prob = Blob()
        self._source_h = None
        if len(bottoms) < 3:
            if not infogain_param.HasField("source"):
                self.fail("infogain matrix source must be specified: set "
                          "infogain_loss_param.source or give H as a third bottom")
            self._source_h = _read_blob_proto(self, infogain_param.source)
        self._h_row_sums = np.zeros(0, dtype=np.float32)

    def reshape(self, bottoms, tops):
        super().reshape(bottoms, tops)
        classes = self._dims[1]
        h = self._h_blob(bottoms)
        if h.count != classes * classes:
            self.fail(f"infogain matrix H has {h.count} values (shape {h.shape}); it must be "
                      f"{classes}x{classes} for {classes} classes")
        if self._h_row_sums.shape != (classes,):
            self._h_row_sums = np.zeros(classes, dtype=np.float32)
        if self._source_h is not None:
            np.sum(self._h_matrix(bottoms), axis=1, out=self._h_row_sums)

    def _h_blob(self, bottoms):
        return bottoms[2] if len(bottoms) > 2 else self._source_h

    def _h_matrix(self, bottoms):
        classes = self._dims[1]
        return self._h_blob(bottoms).data.reshape(classes, classes)

    def forward(self, bottoms, tops):
        prob = self._forward_softmax(bottoms)
        labels, valid = self._checked_labels(bottoms)
        loss = kernels.infogain_loss_forward(prob, labels, self._h_matrix(bottoms),
                                             self.has_ignore, self.ignore_label)
        tops[0].data[...] = self._scaled(loss, valid)

    def backward(self, tops, propagate_down, bottoms):
        self._refuse_label_backward(propagate_down)
        if len(propagate_down) > 2 and propagate_down[2]:
            self.fail("cannot backpropagate to the infogain matrix input (bottom 2); set "
                      "propagate_down: false for it")
        if not propagate_down[0]:
            return
        h = self._h_matrix(bottoms)
        if self._source_h is None:
            # H is a bottom and may change between passes: sum its rows every time, as Caffe.
            np.sum(h, axis=1, out=self._h_row_sums)
        labels, valid = self._checked_labels(bottoms)
        scale = self._scaled(self._loss_weight(tops), valid)
        kernels.infogain_loss_backward(self._prob.data.reshape(self._dims), labels, h,
                                       self._h_row_sums, self.has_ignore, self.ignore_label,
                                       scale, bottoms[0].diff.reshape(self._dims))


# ---- losses on raw values ----------------------------------------------------------------------

@register("EuclideanLoss")
class EuclideanLossLayer(LossLayer):
    """loss = Σ (a − b)² / (2 · num).

    No layer parameters. Bottoms: a, b (same first axis, same count). Top: loss (). No param
    blobs. Not in place. Gradient to both bottoms, which force_backward may reach.
    """

    def setup(self, bottoms, tops):
        self._diff = Blob()

    def allow_force_backward(self, bottom_index):
        return True

    def reshape(self, bottoms, tops):
        super().reshape(bottoms, tops)
        if bottoms[0].count_axes(1) != bottoms[1].count_axes(1):
            self.fail(f"inputs must have the same dimension: {bottoms[0].shape} vs "
                      f"{bottoms[1].shape}")
        self._num = bottoms[0].num
        self._diff.reshape(bottoms[0].shape)

    def forward(self, bottoms, tops):
        diff = self._diff.data.reshape(-1)
        np.subtract(bottoms[0].data.reshape(-1), bottoms[1].data.reshape(-1), out=diff)
        tops[0].data[...] = np.dot(diff, diff) / np.float32(self._num) / np.float32(2)

    def backward(self, tops, propagate_down, bottoms):
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                alpha = np.float32(sign) * tops[0].diff[()] / np.float32(self._num)
                np.multiply(self._diff.data.reshape(-1), alpha, out=bottoms[i].diff.reshape(-1))


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLossLayer(_LabelLossLayer):
    """loss = −Σ [t · log σ(x) + (1 − t) · log(1 − σ(x))] / normaliser, over non-ignored targets.

    loss_param: ignore_label (unset; compared with the truncated target), normalization
    (BATCH_SIZE for this layer when unset, "for historical reasons" in caffe.proto), normalize
    (deprecated; used only when normalization is unset: true ⇒ VALID, false ⇒ BATCH_SIZE).
    Bottoms: scores x, targets t in [0, 1] (same count). Top: loss (). No param blobs. Not in
    place. Gradient only to the scores.
    """

    def setup(self, bottoms, tops):
        self.has_ignore, self.ignore_label = _ignore_label(self.param.loss_param)
        # Caffe quirk: the default is BATCH_SIZE, not VALID (sigmoid_cross_entropy_loss_layer.cpp).
        self.normalization = _normalization_mode(self, _LOSS.BATCH_SIZE)
        self._sigmoid = Blob()
        self._normalizer_value = np.float32(1)

    def reshape(self, bottoms, tops):
        super().reshape(bottoms, tops)
        if bottoms[0].count != bottoms[1].count:
            self.fail(f"scores and targets must have the same count: {bottoms[0].shape} vs "
                      f"{bottoms[1].shape}")
        self._outer = bottoms[0].shape[0]
        self._inner = bottoms[0].count_axes(1)
        self._sigmoid.reshape(bottoms[0].shape)

    def forward(self, bottoms, tops):
        loss, valid = kernels.sigmoid_cross_entropy_forward(
            bottoms[0].data.reshape(-1), bottoms[1].data.reshape(-1), self.has_ignore,
            self.ignore_label, self._sigmoid.data.reshape(-1))
        # Caffe quirk: backward reuses the normaliser of the last forward
        # (sigmoid_cross_entropy_loss_layer.cpp keeps it in normalizer_).
        self._normalizer_value = _normalizer(self.normalization, self._outer, self._inner, valid)
        tops[0].data[...] = np.float32(loss) / self._normalizer_value

    def backward(self, tops, propagate_down, bottoms):
        self._refuse_label_backward(propagate_down)
        if propagate_down[0]:
            scale = self._loss_weight(tops) / self._normalizer_value
            kernels.sigmoid_cross_entropy_backward(
                self._sigmoid.data.reshape(-1), bottoms[1].data.reshape(-1), self.has_ignore,
                self.ignore_label, scale, bottoms[0].diff.reshape(-1))


# ---- losses on per-sample labels ---------------------------------------------------------------

class _RowLabelLossLayer(_LabelLossLayer):
    """A loss over bottom 0 viewed as (num, dim) with one label per row, in [0, dim)."""

    def reshape(self, bottoms, tops):
        super().reshape(bottoms, tops)
        self._num = bottoms[0].num
        self._dim = bottoms[0].count // self._num if self._num else 0

    def _rows(self, array):
        return array.reshape(self._num, self._dim)

    def _checked_labels(self, bottoms):
        labels = bottoms[1].data.reshape(-1)[:self._num]
        _check_labels(self, labels, self._dim)
        return labels


# HingeLoss by norm: (loss from the flat margins, gradient factor, squared?).
_HINGE_NORMS = {
    _HINGE.L1: (lambda margins: np.sum(margins), 1, False),
    _HINGE.L2: (lambda margins: np.dot(margins, margins), 2, True),
}


@register("HingeLoss")
class HingeLossLayer(_RowLabelLossLayer):
    """loss = Σ_ij max(0, 1 + s_ij · x_ij)^p / num; s = −1 at j = label_i, else +1; p = 1 or 2.

    hinge_loss_param: norm (L1; L1 or L2). Bottoms: scores (num, …) viewed as (num, dim), labels
    (num, …; the first num values are used, integers in [0, dim-1]). Top: loss (). No param
    blobs. Not in place. Gradient only to the scores.
    """

    def setup(self, bottoms, tops):
        norm = self.param.hinge_loss_param.norm
        if norm not in _HINGE_NORMS:
            self.fail(f"unknown hinge_loss_param.norm {norm}; expected L1 or L2")
        self._loss_of, self._factor, self._squared = _HINGE_NORMS[norm]
        self._margins = Blob()

    def reshape(self, bottoms, tops):
        super().reshape(bottoms, tops)
        self._margins.reshape(bottoms[0].shape)

    def forward(self, bottoms, tops):
        labels = self._checked_labels(bottoms)
        # Caffe quirk (not copied): hinge_loss_layer.cpp keeps the margins in bottom 0's diff
        # between forward and backward; we keep our own buffer so forward never writes a diff.
        kernels.hinge_margins(self._rows(bottoms[0].data), labels, self._rows(self._margins.data))
        loss = self._loss_of(self._margins.data.reshape(-1))
        tops[0].data[...] = np.float32(loss) / np.float32(self._num)

    def backward(self, tops, propagate_down, bottoms):
        self._refuse_label_backward(propagate_down)
        if propagate_down[0]:
            labels = self._checked_labels(bottoms)
            scale = self._loss_weight(tops) * np.float32(self._factor) / np.float32(self._num)
            kernels.hinge_backward(self._rows(self._margins.data), labels, self._squared, scale,
                                   self._rows(bottoms[0].diff))


@register("MultinomialLogisticLoss")
class MultinomialLogisticLossLayer(_RowLabelLossLayer):
    """loss = −Σ_i log(max(p[i, label_i], 1e-20)) / num, on probabilities (no softmax inside).

    No layer parameters. Bottoms: probabilities (num, …) viewed as (num, dim), labels (num, 1,
    1, 1 or fewer axes; integers in [0, dim-1]). Top: loss (). No param blobs. Not in place.
    Gradient only to the probabilities.
    """

    def reshape(self, bottoms, tops):
        super().reshape(bottoms, tops)
        label = bottoms[1]
        if (label.channels, label.height, label.width) != (1, 1, 1):
            self.fail(f"labels must have shape (num, 1, 1, 1) or (num,); got {label.shape}")

    def forward(self, bottoms, tops):
        labels = self._checked_labels(bottoms)
        loss = kernels.multinomial_logistic_forward(self._rows(bottoms[0].data), labels)
        tops[0].data[...] = np.float32(loss) / np.float32(self._num)

    def backward(self, tops, propagate_down, bottoms):
        self._refuse_label_backward(propagate_down)
        if propagate_down[0]:
            labels = self._checked_labels(bottoms)
            scale = -self._loss_weight(tops) / np.float32(self._num)
            kernels.multinomial_logistic_backward(self._rows(bottoms[0].data), labels, scale,
                                                  self._rows(bottoms[0].diff))


@register("ContrastiveLoss")
class ContrastiveLossLayer(LossLayer):
    """loss = Σ_i [s_i d_i² + (1 − s_i) max(margin − d_i, 0)²] / (2 · num), d_i = ‖a_i − b_i‖.

    contrastive_loss_param: margin (1.0), legacy_version (false; true uses max(margin − d², 0)
    for dissimilar pairs, the original Caffe formula). Bottoms: a, b (num, C, 1, 1), similar
    (num, 1, 1, 1; nonzero after truncation means similar). Top: loss (). No param blobs. Not
    in place. Gradient to a and b, which force_backward may reach; never to similar.
    """

    min_bottoms = 3
    max_bottoms = 3

    def setup(self, bottoms, tops):
        contrastive_param = self.param.contrastive_loss_param
        self.margin = np.float32(contrastive_param.margin)
        self.legacy_version = bool(contrastive_param.legacy_version)
        self._diff = Blob()
        self._dist_sq = Blob()

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottoms, tops):
        super().reshape(bottoms, tops)
        a, b, similar = bottoms
        shapes = f"a {a.shape}, b {b.shape}, similar {similar.shape}"
        if a.channels != b.channels or (a.height, a.width, b.height, b.width) != (1, 1, 1, 1):
            self.fail(f"a and b must both have shape (num, C, 1, 1); got {shapes}")
        if (similar.channels, similar.height, similar.width) != (1, 1, 1):
            self.fail(f"similar must have shape (num, 1, 1, 1); got {shapes}")
        if similar.num != a.num:
            self.fail(f"similar must have one value per pair ({a.num}); got {shapes}")
        self._num, self._channels = a.num, a.channels
        self._diff.reshape((self._num, self._channels))
        self._dist_sq.reshape((self._num,))

    def forward(self, bottoms, tops):
        a = bottoms[0].data.reshape(self._num, self._channels)
        b = bottoms[1].data.reshape(self._num, self._channels)
        loss = kernels.contrastive_forward(a, b, bottoms[2].data.reshape(-1), self.margin,
                                           self.legacy_version, self._diff.data,
                                           self._dist_sq.data)
        tops[0].data[...] = np.float32(loss) / np.float32(self._num) / np.float32(2)

    def backward(self, tops, propagate_down, bottoms):
        if propagate_down[2]:
            self.fail("cannot backpropagate to the similarity input (bottom 2); set "
                      "propagate_down: false for it")
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                alpha = np.float32(sign) * tops[0].diff[()] / np.float32(self._num)
                kernels.contrastive_backward(
                    self._diff.data, self._dist_sq.data, bottoms[2].data.reshape(-1),
                    self.margin, self.legacy_version, alpha,
                    bottoms[i].diff.reshape(self._num, self._channels))


# ---- metrics -----------------------------------------------------------------------------------

@register("Accuracy")
class AccuracyLayer(Layer):
    """accuracy = #{positions whose label is among the top_k scores} / #{non-ignored positions}.

    accuracy_param: top_k (1), axis (1; the class axis), ignore_label (unset).
    Bottoms: scores (…, C, …), labels (outer · inner values, integers in [0, C-1]). Tops:
    accuracy (), optional per-class accuracy (C,) (0 for a class with no labels). No param
    blobs. Not in place. No backward.
    """

    exact_bottoms = 2
    min_tops = 1
    max_tops = 2

    def setup(self, bottoms, tops):
        accuracy_param = self.param.accuracy_param
        self.top_k = int(accuracy_param.top_k)
        self.axis = int(accuracy_param.axis)
        self.has_ignore, self.ignore_label = _ignore_label(accuracy_param)
        self._class_counts = Blob()
        self._class_accuracy = Blob()

    def allow_force_backward(self, bottom_index):
        # Caffe dies with NOT_IMPLEMENTED when force_backward reaches an Accuracy layer; we keep
        # force_backward away from it instead, so such nets run.
        return False

    def reshape(self, bottoms, tops):
        scores, labels = bottoms
        if labels.count == 0 or self.top_k > scores.count // labels.count:
            self.fail(f"top_k ({self.top_k}) must be less than or equal to the number of "
                      f"classes: scores {scores.shape}, labels {labels.shape}")
        axis, outer, classes, inner = _split_at_axis(scores, self.axis)
        if outer * inner != labels.count:
            self.fail(f"number of labels must match number of predictions: {labels.count} "
                      f"labels for scores of shape {scores.shape} with axis {axis} "
                      f"({outer * inner} positions); with axis 1 and scores (N, C, H, W) give "
                      f"N·H·W labels, integers in [0, C-1]")
        self._dims = (outer, classes, inner)
        tops[0].reshape(())
        self._class_counts.reshape((classes,))
        per_class = tops[1] if len(tops) > 1 else self._class_accuracy
        per_class.reshape((classes,))

    def forward(self, bottoms, tops):
        labels = bottoms[1].data.reshape(-1)
        _check_labels(self, labels, self._dims[1], self.has_ignore, self.ignore_label)
        per_class = tops[1] if len(tops) > 1 else self._class_accuracy
        tops[0].data[...] = kernels.accuracy_forward(
            bottoms[0].data.reshape(self._dims), labels, self.top_k, self.has_ignore,
            self.ignore_label, self._class_counts.data, per_class.data)

    def backward(self, tops, propagate_down, bottoms):
        if any(propagate_down):
            self.fail("Accuracy has no gradient; it cannot be used as a loss (set "
                      "propagate_down: false, or loss_weight: 0)")
