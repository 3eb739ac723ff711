"""The Layer contract shared by every built-in layer and by users' Python layers.

A subclass declares its blob counts as class attributes and implements four methods, with the
names pycaffe's Python layers use:

- ``setup(bottoms, tops)``: read proto fields into plain attributes once, check them, create
  param blobs (only when ``self.blobs`` is empty; otherwise check their shapes).
- ``reshape(bottoms, tops)``: set top shapes from bottom shapes; allocate scratch buffers.
- ``forward(bottoms, tops)``: write the tops.
- ``backward(tops, propagate_down, bottoms)``: overwrite the diff of each bottom ``i`` with
  ``propagate_down[i]``; *accumulate* (``+=``) into the diff of each param blob ``j`` with
  ``self.param_propagate_down[j]``. The solver zeroes param diffs.

The base class does what Caffe's ``Layer::SetUp``/``Forward`` wrappers do: checks blob counts,
runs setup then reshape, sets loss weights, and computes the weighted loss of the tops.
"""

import contextlib

import numpy as np

from ..errors import ProtonetError
from ..blob import Blob
from .workspace import Workspace


class BlobVec(list):
    """A layer's param blobs: a list of Blob with pycaffe's ``add_blob(*shape)``."""

    def add_blob(self, *shape):
        self.append(Blob(*shape))


class Layer:
    """Base class of all layers. Do not override ``__init__``: override ``setup``."""

    type = "Layer"
    exact_bottoms = None
    min_bottoms = None
    max_bottoms = None
    exact_tops = None
    min_tops = None
    max_tops = None
    equal_bottoms_tops = False
    auto_tops = False
    # Caffe's LossLayer adds loss_weight 1 to the first top when none is given.
    is_loss = False
    # A layer that can run with top[i] being bottom[i] says so (neuron layers, BatchNorm, ...).
    allow_in_place = False

    def __init__(self, param, phase=None, blobs=None):
        self.param = param
        self.name = param.name if param is not None else ""
        self.phase = phase if phase is not None else (param.phase if param is not None else 1)
        self.blobs = BlobVec(blobs or [])
        self.param_propagate_down = []
        self.loss_weights = []
        self.param_str = param.python_param.param_str if param is not None else ""
        # Scratch shared with the other layers of the net (the Net replaces this one).
        self.workspace = Workspace()
        # Whether backward may run; the Net sets it once it knows (a TEST net: mostly not).
        self.needs_backward = True

    # ---- the four methods subclasses implement ------------------------------------------
    def setup(self, bottoms, tops):
        """Read parameters and create param blobs. Default: nothing to set up."""

    def reshape(self, bottoms, tops):
        """Set top shapes. Subclasses must implement it."""
        raise NotImplementedError(f"{type(self).__name__}.reshape")

    def forward(self, bottoms, tops):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, tops, propagate_down, bottoms):
        """Default: a layer with no gradient (data layers, Accuracy, ArgMax...)."""

    def allow_force_backward(self, bottom_index):
        """Whether force_backward may send a gradient into bottom ``bottom_index``."""
        return True

    # ---- helpers for subclasses -----------------------------------------------------------
    def fail(self, message):
        """Raise a ProtonetError naming this layer."""
        raise ProtonetError(message, layer=self.name, layer_type=self.type)

    @contextlib.contextmanager
    def naming_errors(self):
        """A ProtonetError raised inside the block (a file or record it read) names this layer."""
        try:
            yield
        except ProtonetError as err:
            raise err.with_context(layer=self.name, layer_type=self.type)

    def add_param_blob(self, shape):
        """Append a zero-filled param blob of ``shape`` and return it."""
        blob = Blob(shape)
        self.blobs.append(blob)
        return blob

    def check_param_shapes(self, shapes):
        """Check blobs loaded from a file against the shapes this layer expects."""
        if len(self.blobs) != len(shapes):
            self.fail(f"expected {len(shapes)} param blobs, got {len(self.blobs)}")
        for i, (blob, shape) in enumerate(zip(self.blobs, shapes)):
            if tuple(blob.shape) != tuple(shape):
                self.fail(f"param blob {i}: expected shape {tuple(shape)}, "
                          f"got {tuple(blob.shape)}")

    # ---- what the net calls ---------------------------------------------------------------
    def layer_setup(self, bottoms, tops):
        """Caffe's Layer::SetUp: check counts, setup, reshape, loss weights."""
        self._check_blob_counts(bottoms, tops)
        self.setup(bottoms, tops)
        while len(self.param_propagate_down) < len(self.blobs):
            self.param_propagate_down.append(True)
        self.reshape(bottoms, tops)
        self._set_loss_weights(tops)

    def layer_forward(self, bottoms, tops):
        """Caffe's Layer::Forward: reshape, forward, return Σ loss_weight · Σ top."""
        self.reshape(bottoms, tops)
        self.forward(bottoms, tops)
        loss = 0.0
        for weight, top in zip(self.loss_weights, tops):
            if weight:
                loss += weight * float(np.sum(top.data, dtype=np.float64))
        return loss

    def layer_backward(self, tops, propagate_down, bottoms):
        for weight, top in zip(self.loss_weights, tops):
            if weight:
                top.diff[...] = weight
        self.backward(tops, propagate_down, bottoms)

    def _check_blob_counts(self, bottoms, tops):
        nb, nt = len(bottoms), len(tops)
        checks = [
            (self.exact_bottoms is not None and nb != self.exact_bottoms,
             f"takes exactly {self.exact_bottoms} bottom blob(s), got {nb}"),
            (self.min_bottoms is not None and nb < self.min_bottoms,
             f"takes at least {self.min_bottoms} bottom blob(s), got {nb}"),
            (self.max_bottoms is not None and nb > self.max_bottoms,
             f"takes at most {self.max_bottoms} bottom blob(s), got {nb}"),
            (self.exact_tops is not None and nt != self.exact_tops,
             f"produces exactly {self.exact_tops} top blob(s), got {nt}"),
            (self.min_tops is not None and nt < self.min_tops,
             f"produces at least {self.min_tops} top blob(s), got {nt}"),
            (self.max_tops is not None and nt > self.max_tops,
             f"produces at most {self.max_tops} top blob(s), got {nt}"),
            (self.equal_bottoms_tops and nb != nt,
             f"needs as many tops as bottoms, got {nb} bottoms and {nt} tops"),
        ]
        for bad, message in checks:
            if bad:
                self.fail(message)

    def _set_loss_weights(self, tops):
        weights = list(self.param.loss_weight) if self.param is not None else []
        if not weights and self.is_loss:
            weights = [1.0]
        if weights and len(weights) != len(tops):
            if not (self.is_loss and len(self.param.loss_weight) == 0):
                self.fail(f"loss_weight given {len(weights)} times for {len(tops)} tops; give "
                          f"one per top")
        self.loss_weights = [float(w) for w in weights] + [0.0] * (len(tops) - len(weights))
        for weight, top in zip(self.loss_weights, tops):
            if weight:
                top.diff[...] = weight


class NeuronLayer(Layer):
    """One bottom, one top of the same shape; may run in place."""

    exact_bottoms = 1
    exact_tops = 1
    allow_in_place = True

    def reshape(self, bottoms, tops):
        tops[0].reshape(bottoms[0].shape)


class LossLayer(Layer):
    """Two or more bottoms (predictions, labels...), a scalar top with loss_weight 1 by default.

    Caffe quirk: LossLayer refuses force_backward into its label bottom (loss_layer.hpp).
    """

    min_bottoms = 2
    max_bottoms = 2
    min_tops = 1
    max_tops = 1
    is_loss = True

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def reshape(self, bottoms, tops):
        if bottoms[0].shape[:1] != bottoms[1].shape[:1]:
            self.fail(f"the first axes of the bottoms must match: {bottoms[0].shape} vs "
                      f"{bottoms[1].shape}")
        tops[0].reshape(())
