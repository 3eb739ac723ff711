"""Net: the graph of layers and blobs built from a NetParameter, as Caffe builds it (net.cpp).

Building is a pipeline of passes: read and upgrade the file → filter layers by NetState →
insert Split layers → create layers and wire blobs (in-place tops share the bottom's blob) →
set layers up (shape inference) → wire params (sharing by ParamSpec name) → decide which layers
need backward → collect outputs. Every user mistake on the way is a ProtonetError naming the
file, the line and the layer.
"""

from collections import OrderedDict

import numpy as np

from . import threads
from .blob import Blob
from .errors import ProtonetError
from .graph import filter_net, insert_splits, make_state
from .layers import get_layer_class
from .layers.workspace import Workspace
from .log import get_logger
from .proto import caffe_pb2

log = get_logger(__name__)

f32 = np.float32

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST


def _phase_value(phase):
    if isinstance(phase, str):
        try:
            return caffe_pb2.Phase.Value(phase.upper())
        except ValueError:
            raise ProtonetError(f"unknown phase {phase!r}; use TRAIN or TEST") from None
    return int(phase)


def _mean_abs(array):
    """Caffe's ``asum / count`` in float32 (net.cpp's debug lines)."""
    return f32(np.abs(array, dtype=np.float64).sum()) / f32(max(array.size, 1))


def _fmt(value):
    """A number as ``LOG(INFO) << value`` prints it (C++ stream default: %g, 6 digits)."""
    return f"{float(value):g}"


def _nonfinite_kind(array):
    """"NaN" or "Inf" for an array with a non-finite value, None if all values are finite."""
    if np.isfinite(array).all():
        return None
    return "NaN" if np.isnan(array).any() else "Inf"


def shape_string(shape):
    count = int(np.prod(shape)) if shape else 1
    return " ".join(str(d) for d in shape) + f" ({count})"


class LayerRecord:
    """Where a layer sits in the net: its blobs and what backward it needs."""

    def __init__(self, layer, param, line):
        self.layer = layer
        self.param = param
        self.line = line
        self.bottoms = []
        self.bottom_ids = []
        self.tops = []
        self.top_ids = []
        self.bottom_need_backward = []
        self.need_backward = False
        self.param_ids = []         # net param id of each of the layer's param blobs


class Net:
    """A built network: layers in file order, blobs, params, forward and backward.

    ``Net(model, phase)`` with ``model`` a prototxt path or a NetParameter; also pycaffe's
    ``Net(model, weights, phase)`` and the keywords ``level``, ``stages``, ``weights``,
    ``lenient``. Attributes follow pycaffe: ``blobs``, ``params``, ``layers``, ``inputs``,
    ``outputs``, ``_layer_names``, ``layer_dict``, ``top_names``, ``bottom_names``. ``workspace``
    (keyword) lends another net's scratch memory (layers/workspace.py) to this one.

    ``set_debug_info(True)`` (or ``debug_info: true`` in the file) logs Caffe's per-layer
    ``[Forward]``/``[Backward]`` lines; ``set_check_nan(True)`` raises a ProtonetError at the first
    layer whose output or gradient holds a NaN or an infinity. ``close()`` (or ``with Net(...)
    as net:``) stops the data layers' prefetch threads; a later forward restarts them.
    """

    def __init__(self, model, *args, phase=None, level=0, stages=(), weights=None,
                 lenient=False, state=None, workspace=None):
        if args:
            if isinstance(args[0], str) and len(args) >= 2:   # Net(model, weights, phase)
                weights, phase = args[0], args[1]
            else:
                phase = args[0]
                if len(args) > 1:
                    raise TypeError("Net(model, phase) or Net(model, weights, phase)")
        self.source = None
        lines = None
        if isinstance(model, caffe_pb2.NetParameter):
            net_param = model
        else:
            from .io.prototxt import read_net_with_lines

            self.source = str(model)
            net_param, lines = read_net_with_lines(self.source, lenient=lenient)
        if state is None:
            phase = _phase_value(phase) if phase is not None else None
            state = make_state(phase=phase, level=level, stages=stages, base=net_param.state)
        self.phase = state.phase
        self.name = net_param.name
        self.state = state
        self.debug_info = bool(net_param.debug_info)
        self.check_nan = False
        # Scratch shared by every layer (see layers/workspace.py); given by a solver to its
        # test nets so that they reuse the train net's.
        self.workspace = workspace if workspace is not None else Workspace()
        filtered, lines = filter_net(net_param, state, lines)
        try:
            self.param, self._lines = insert_splits(filtered, lines)
        except ProtonetError as err:
            raise err.with_context(file=self.source)
        self._build()
        if weights:
            self.copy_from(weights)

    # ---- building ----------------------------------------------------------------------
    def _fail(self, message, index):
        param = self.param.layer[index]
        return ProtonetError(message, file=self.source, line=self._lines[index],
                             layer=param.name, layer_type=param.type)

    def _build(self):
        self.records = []
        self._blobs = []            # Blob objects in creation order
        self._blob_names = []
        self._blob_need_backward = []
        blob_index = {}
        available = []              # names produced and not yet consumed, in order
        self.input_ids = []
        self._start_params()
        memory = 0
        for index, param in enumerate(self.param.layer):
            if not param.HasField("phase"):
                param.phase = self.phase
            record = self._create_layer(index, param)
            self._wire_bottoms(index, record, blob_index, available)
            self._wire_tops(index, record, blob_index, available)
            self._setup_layer(index, record)
            for top, top_id in zip(record.tops, record.top_ids):
                memory += top.count
            self._set_param_backward(index, record)
            self.records.append(record)
            self._wire_params(index, record)
            if record.need_backward:
                for top_id in record.top_ids:
                    self._blob_need_backward[top_id] = True
        self.memory_used = memory * 4
        log.info("Memory required for data: %d", self.memory_used)
        self._decide_backward()
        if self.param.force_backward:
            self._force_backward()
        for record in self.records:
            # Lets a layer skip what only its backward reads (an in-place input copy).
            record.layer.needs_backward = record.need_backward
        # Caffe quirk: outputs come from a std::set, so they are sorted by name (net.cpp).
        available = sorted(available)
        self.output_ids = [blob_index[name] for name in available]
        for name in available:
            log.info("This network produces output %s", name)
        self._index()
        log.info("Network initialization done.")

    def _create_layer(self, index, param):
        if len(param.propagate_down) not in (0, len(param.bottom)):
            raise self._fail(f"propagate_down must be given 0 or {len(param.bottom)} times "
                             f"(once per bottom), got {len(param.propagate_down)}", index)
        try:
            cls = get_layer_class(param.type)
            layer = cls(param, param.phase)
            layer.workspace = self.workspace
        except ProtonetError as err:
            raise err.with_context(file=self.source, line=self._lines[index], layer=param.name,
                                   layer_type=param.type)
        if param.blobs:
            from .io.blobproto import blobproto_to_array

            for i, proto in enumerate(param.blobs):
                array = blobproto_to_array(proto, where=f"layer '{param.name}' blob {i}")
                blob = Blob(array.shape)
                blob.data[...] = array
                layer.blobs.append(blob)
        log.info("Creating Layer %s", param.name)
        return LayerRecord(layer, param, self._lines[index])

    def _wire_bottoms(self, index, record, blob_index, available):
        param = record.param
        for j, name in enumerate(param.bottom):
            if name not in available:
                raise self._fail(f"unknown bottom blob '{name}' (bottom index {j}): no earlier "
                                 f"layer produces it", index)
            blob_id = blob_index[name]
            available.remove(name)
            need = self._blob_need_backward[blob_id]
            if param.propagate_down:
                need = bool(param.propagate_down[j])
            record.bottoms.append(self._blobs[blob_id])
            record.bottom_ids.append(blob_id)
            record.bottom_need_backward.append(need)
            record.need_backward |= self._blob_need_backward[blob_id]
            log.info("%s <- %s", param.name, name)

    def _wire_tops(self, index, record, blob_index, available):
        param, layer = record.param, record.layer
        names = list(param.top)
        if layer.auto_tops:
            needed = max(layer.min_tops or 0, layer.exact_tops or 0)
            names += [None] * max(0, needed - len(names))
        for j, name in enumerate(names):
            if name is not None and j < len(param.bottom) and name == param.bottom[j]:
                if not layer.allow_in_place:
                    raise self._fail(f"cannot run in place (top '{name}' is also its bottom); "
                                     f"give the top a new name", index)
                blob_id = blob_index[name]
                log.info("%s -> %s (in-place)", param.name, name)
            elif name is not None and name in blob_index:
                raise self._fail(f"top blob '{name}' is produced by multiple sources; give it a "
                                 f"new name", index)
            else:
                blob_id = len(self._blobs)
                self._blobs.append(Blob())
                self._blob_names.append(name if name is not None else "(automatic)")
                self._blob_need_backward.append(False)
                if name is not None:
                    blob_index[name] = blob_id
                log.info("%s -> %s", param.name, name)
            record.tops.append(self._blobs[blob_id])
            record.top_ids.append(blob_id)
            if name is not None:
                available.append(name)
            if param.type == "Input" and name is not None:
                self.input_ids.append(blob_id)

    def _setup_layer(self, index, record):
        try:
            record.layer.layer_setup(record.bottoms, record.tops)
        except ProtonetError as err:
            raise err.with_context(file=self.source, line=record.line, layer=record.param.name,
                                   layer_type=record.param.type)
        log.info("Setting up %s", record.param.name)
        for j, top in enumerate(record.tops):
            log.info("Top shape: %s", shape_string(top.shape))
            weight = record.layer.loss_weights[j] if j < len(record.layer.loss_weights) else 0
            if weight:
                log.info("    with loss weight %g", weight)

    def _set_param_backward(self, index, record):
        param, layer = record.param, record.layer
        if len(param.param) > len(layer.blobs):
            raise self._fail(f"{len(param.param)} param specs given but the layer has "
                             f"{len(layer.blobs)} param blobs", index)
        for j in range(len(layer.blobs)):
            lr_mult = param.param[j].lr_mult if j < len(param.param) else 1.0
            need = lr_mult != 0
            record.need_backward |= need
            while len(layer.param_propagate_down) <= j:
                layer.param_propagate_down.append(True)
            layer.param_propagate_down[j] = need

    def _decide_backward(self):
        under_loss, skip = set(), set()
        for record in reversed(self.records):
            names = [self._blob_names[t] for t in record.top_ids]
            weights = record.layer.loss_weights
            contributes = any((j < len(weights) and weights[j]) or names[j] in under_loss
                              for j in range(len(names)))
            skip_down = all(name in skip for name in names)
            if record.need_backward and skip_down:
                record.need_backward = False
                record.bottom_need_backward = [False] * len(record.bottoms)
            if not contributes:
                record.need_backward = False
            log.info("%s %s backward computation.", record.param.name,
                     "needs" if record.need_backward else "does not need")
            for j, blob_id in enumerate(record.bottom_ids):
                name = self._blob_names[blob_id]
                if contributes:
                    under_loss.add(name)
                else:
                    record.bottom_need_backward[j] = False
                if not record.bottom_need_backward[j]:
                    skip.add(name)

    def _force_backward(self):
        for record in self.records:
            record.need_backward = True
            for j, blob_id in enumerate(record.bottom_ids):
                need = record.bottom_need_backward[j] or record.layer.allow_force_backward(j)
                record.bottom_need_backward[j] = need
                self._blob_need_backward[blob_id] = self._blob_need_backward[blob_id] or need
            record.layer.param_propagate_down = [True] * len(record.layer.blobs)

    def _start_params(self):
        self.learnable_params = []   # owner blobs, one per learnable param
        self.params_lr = []
        self.params_weight_decay = []
        self.param_owners = []       # per (layer, param): index into learnable_params
        self.param_display_names = []
        self._param_layer_indices = []   # per net param id: (layer index, index in the layer)
        self._param_owner_ids = []       # per learnable param: the net param id of its owner
        self._has_lr, self._has_decay, self._named_params = [], [], {}

    def _wire_params(self, index, record):
        """A layer's params join the net; a ParamSpec name seen before shares the owner's blob."""
        param = record.param
        record.param_shared = [False] * len(record.layer.blobs)
        for j, blob in enumerate(record.layer.blobs):
            spec = param.param[j] if j < len(param.param) else caffe_pb2.ParamSpec()
            name = spec.name
            self.param_display_names.append(name or str(j))
            self._param_layer_indices.append((index, j))
            record.param_ids.append(len(self.param_display_names) - 1)
            if not name or name not in self._named_params:
                owner = len(self.learnable_params)
                if name:
                    self._named_params[name] = (owner, index, j)
                self.learnable_params.append(blob)
                self._param_owner_ids.append(len(self.param_display_names) - 1)
                self.params_lr.append(spec.lr_mult)
                self.params_weight_decay.append(spec.decay_mult)
                self._has_lr.append(spec.HasField("lr_mult"))
                self._has_decay.append(spec.HasField("decay_mult"))
                self.param_owners.append(owner)
                continue
            owner, owner_layer, owner_j = self._named_params[name]
            owner_blob = self.learnable_params[owner]
            self._check_share(index, j, name, blob, owner_blob, owner_layer, spec)
            for flags, values, what in ((self._has_lr, self.params_lr, "lr_mult"),
                                        (self._has_decay, self.params_weight_decay,
                                         "decay_mult")):
                if spec.HasField(what):
                    value = getattr(spec, what)
                    if flags[owner] and values[owner] != value:
                        raise self._fail(f"shared param '{name}' has mismatched {what} "
                                         f"({value} here, {values[owner]} in its owner)", index)
                    flags[owner], values[owner] = True, value
            blob.share(owner_blob)
            record.param_shared[j] = True
            self.param_owners.append(owner)
            log.info("Sharing parameters '%s' owned by layer '%s', param index %d", name,
                     self.records[owner_layer].param.name, owner_j)

    def _check_share(self, index, j, name, blob, owner_blob, owner_layer, spec):
        owner_name = self.records[owner_layer].param.name
        if spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE:
            if blob.count != owner_blob.count:
                raise self._fail(f"cannot share param '{name}' owned by layer '{owner_name}': "
                                 f"count mismatch, owner shape {owner_blob.shape}, this layer's "
                                 f"shape {blob.shape}", index)
        elif tuple(blob.shape) != tuple(owner_blob.shape):
            raise self._fail(f"cannot share param '{name}' owned by layer '{owner_name}': shape "
                             f"mismatch, owner shape {owner_blob.shape}, this layer expects "
                             f"{blob.shape} (use share_mode: PERMISSIVE to compare counts only)",
                             index)

    def _index(self):
        self.layers = [r.layer for r in self.records]
        self._layer_names = [r.param.name for r in self.records]
        self.layer_dict = OrderedDict(zip(self._layer_names, self.layers))
        self._layer_index = {name: i for i, name in enumerate(self._layer_names)}
        self.blobs = OrderedDict()
        for name, blob in zip(self._blob_names, self._blobs):
            self.blobs.setdefault(name, blob)
        self._blob_index = {name: i for i, name in enumerate(self._blob_names)}
        self.params = OrderedDict((r.param.name, r.layer.blobs) for r in self.records
                                  if r.layer.blobs)
        self.inputs = [self._blob_names[i] for i in self.input_ids]
        self.outputs = [self._blob_names[i] for i in self.output_ids]
        self.top_names = OrderedDict((r.param.name, [self._blob_names[t] for t in r.top_ids])
                                     for r in self.records)
        self.bottom_names = OrderedDict((r.param.name,
                                         [self._blob_names[b] for b in r.bottom_ids])
                                        for r in self.records)
        self.blob_loss_weights = OrderedDict((name, 0.0) for name in self.blobs)
        for r in self.records:
            for j, t in enumerate(r.top_ids):
                if j < len(r.layer.loss_weights):
                    self.blob_loss_weights[self._blob_names[t]] = r.layer.loss_weights[j]
        self._blob_names_list = list(self._blob_names)

    # ---- running -----------------------------------------------------------------------
    def _layer_position(self, name, default):
        if name is None:
            return default
        if name not in self._layer_index:
            raise ProtonetError(f"no layer named '{name}' in net '{self.name}'")
        return self._layer_index[name]

    def set_debug_info(self, flag):
        """Log Caffe's per-layer debug lines on every forward and backward (Net::set_debug_info)."""
        self.debug_info = bool(flag)

    def set_check_nan(self, flag):
        """Check every layer's tops after forward and its gradients after backward."""
        self.check_nan = bool(flag)

    def forward_from_to(self, start=0, end=None):
        """Run layers start..end inclusive; return the total weighted loss.

        OpenBLAS is held to one thread meanwhile (protonet/threads.py): the GEMM-bound layers
        run their pieces on protonet's worker threads."""
        end = len(self.records) - 1 if end is None else end
        loss = 0.0
        with threads.serial_blas():
            for i in range(start, end + 1):
                record = self.records[i]
                loss += record.layer.layer_forward(record.bottoms, record.tops)
                if self.debug_info:
                    self._forward_debug_info(i)
                if self.check_nan:
                    self.check_forward_finite(i)
        return loss

    def backward_from_to(self, start=None, end=0):
        """Run backward for layers start down to end inclusive (only those that need it)."""
        start = len(self.records) - 1 if start is None else start
        with threads.serial_blas():
            for i in range(start, end - 1, -1):
                record = self.records[i]
                if not record.need_backward:
                    continue
                record.layer.layer_backward(record.tops, record.bottom_need_backward,
                                            record.bottoms)
                if self.debug_info:
                    self._backward_debug_info(i)
                if self.check_nan:
                    self.check_backward_finite(i)

    def full_backward(self):
        """Caffe's Net::Backward: every layer, then (with debug_info) the params' norms."""
        self.backward_from_to()
        if not self.debug_info:
            return
        sums = np.zeros(4, dtype=np.float64)
        for blob in self.learnable_params:
            data, diff = blob.data.astype(np.float64), blob.diff.astype(np.float64)
            sums += (np.abs(data).sum(), np.abs(diff).sum(), (data * data).sum(),
                     (diff * diff).sum())
        # Caffe quirk: this one line is logged at ERROR level (net.cpp Backward).
        log.error("    [Backward] All net params (data, diff): L1 norm = (%s, %s); L2 norm = "
                  "(%s, %s)", _fmt(f32(sums[0])), _fmt(f32(sums[1])),
                  _fmt(np.sqrt(f32(sums[2]))), _fmt(np.sqrt(f32(sums[3]))))

    # ---- debug_info and NaN checks -----------------------------------------------------
    def _forward_debug_info(self, i):
        """Caffe's ForwardDebugInfo: mean |x| of each top and each param blob of layer i."""
        record = self.records[i]
        name = record.param.name
        for top, top_id in zip(record.tops, record.top_ids):
            log.info("    [Forward] Layer %s, top blob %s data: %s", name,
                     self._blob_names[top_id], _fmt(_mean_abs(top.data)))
        for blob, param_id in zip(record.layer.blobs, record.param_ids):
            log.info("    [Forward] Layer %s, param blob %s data: %s", name,
                     self.param_display_names[param_id], _fmt(_mean_abs(blob.data)))

    def _backward_debug_info(self, i):
        """Caffe's BackwardDebugInfo: mean |diff| of the bottoms and params that got one."""
        record = self.records[i]
        name = record.param.name
        for need, bottom, bottom_id in zip(record.bottom_need_backward, record.bottoms,
                                           record.bottom_ids):
            if need:
                log.info("    [Backward] Layer %s, bottom blob %s diff: %s", name,
                         self._blob_names[bottom_id], _fmt(_mean_abs(bottom.diff)))
        for j, blob in enumerate(record.layer.blobs):
            if record.layer.param_propagate_down[j]:
                log.info("    [Backward] Layer %s, param blob %d diff: %s", name, j,
                         _fmt(_mean_abs(blob.diff)))

    def update_debug_info(self):
        """Caffe's UpdateDebugInfo for every param, before ``w -= diff`` (the diff is the step).

        An owner logs ``[Update] Layer L, param P data: |w|; diff: |step|``; a shared param
        names its owner instead.
        """
        for param_id, (layer_index, j) in enumerate(self._param_layer_indices):
            record = self.records[layer_index]
            blob = record.layer.blobs[j]
            name = record.param.name
            display = self.param_display_names[param_id]
            if not record.param_shared[j]:
                log.info("    [Update] Layer %s, param %s data: %s; diff: %s", name, display,
                         _fmt(_mean_abs(blob.data)), _fmt(_mean_abs(blob.diff)))
                continue
            owner_id = self._param_owner_ids[self.param_owners[param_id]]
            owner_layer = self.records[self._param_layer_indices[owner_id][0]].param.name
            log.info("    [Update] Layer %s, param blob %s (owned by layer %s, param %s) diff: %s",
                     name, display, owner_layer, self.param_display_names[owner_id],
                     _fmt(_mean_abs(blob.diff)))

    def _nonfinite_error(self, i, message):
        record = self.records[i]
        bad = [str(j) for j, blob in enumerate(record.layer.blobs)
               if _nonfinite_kind(blob.data) is not None]
        if bad:
            message += f" (its param blob {', '.join(bad)} holds non-finite weights)"
        return ProtonetError(message + "; this is the first layer where it appears: check its "
                             "input data and weights, lower base_lr or set clip_gradients",
                             file=self.source, line=record.line, layer=record.param.name,
                             layer_type=record.param.type)

    def check_forward_finite(self, i):
        """Raise a ProtonetError if a top of layer ``i`` holds a NaN or an infinity."""
        record = self.records[i]
        for top, top_id in zip(record.tops, record.top_ids):
            kind = _nonfinite_kind(top.data)
            if kind is not None:
                raise self._nonfinite_error(
                    i, f"forward produced {kind} in top blob '{self._blob_names[top_id]}'")

    def check_backward_finite(self, i):
        """Raise a ProtonetError if a bottom or param diff that layer ``i`` wrote is not finite."""
        record = self.records[i]
        for need, bottom, bottom_id in zip(record.bottom_need_backward, record.bottoms,
                                           record.bottom_ids):
            kind = _nonfinite_kind(bottom.diff) if need else None
            if kind is not None:
                raise self._nonfinite_error(i, f"backward produced {kind} in the diff of "
                                               f"bottom blob '{self._blob_names[bottom_id]}'")
        for j, blob in enumerate(record.layer.blobs):
            kind = _nonfinite_kind(blob.diff) if record.layer.param_propagate_down[j] else None
            if kind is not None:
                raise self._nonfinite_error(i, f"backward produced {kind} in the diff of param "
                                               f"blob {j}")

    def forward(self, blobs=None, start=None, end=None, **inputs):
        """pycaffe's forward: set inputs, run start..end, return {output name: data}."""
        blobs = list(blobs or [])
        start_index = self._layer_position(start, 0)
        end_index = self._layer_position(end, len(self.records) - 1)
        outputs = set((self.top_names[end] if end is not None else self.outputs) + blobs)
        if inputs:
            if set(inputs) != set(self.inputs):
                raise ProtonetError(f"input blob arguments {sorted(inputs)} do not match the "
                                    f"net's inputs {self.inputs}")
            for name, array in inputs.items():
                if np.shape(array)[0] != self.blobs[name].shape[0]:
                    raise ProtonetError(f"input '{name}' has batch size {np.shape(array)[0]}, "
                                        f"the net expects {self.blobs[name].shape[0]}")
                self.blobs[name].data[...] = array
        self.forward_from_to(start_index, end_index)
        return {name: self.blobs[name].data for name in outputs}

    def backward(self, diffs=None, start=None, end=None, **top_diffs):
        """pycaffe's backward: set output diffs, run start..end, return {input name: diff}."""
        diffs = list(diffs or [])
        start_index = self._layer_position(start, len(self.records) - 1)
        end_index = self._layer_position(end, 0)
        outputs = set((self.bottom_names[end] if end is not None else self.inputs) + diffs)
        if top_diffs:
            names = self.top_names[start] if start is not None else self.outputs
            if set(top_diffs) != set(names):
                raise ProtonetError(f"top diff arguments {sorted(top_diffs)} do not match the "
                                    f"net's outputs {names}")
            for name, array in top_diffs.items():
                self.blobs[name].diff[...] = array
        self.backward_from_to(start_index, end_index)
        return {name: self.blobs[name].diff for name in outputs}

    def forward_all(self, blobs=None, **inputs):
        """pycaffe's forward_all: run all rows of the inputs in batches; {blob: all rows}."""
        from .pycaffe import forward_all

        return forward_all(self, blobs=blobs, **inputs)

    def forward_backward_all(self, blobs=None, diffs=None, **inputs):
        """pycaffe's forward_backward_all: forward and backward over all rows, in batches."""
        from .pycaffe import forward_backward_all

        return forward_backward_all(self, blobs=blobs, diffs=diffs, **inputs)

    def _batch(self, blobs):
        from .pycaffe import batch

        return batch(self, blobs)

    def forward_backward(self):
        """One forward and full backward; returns the loss (Caffe's ForwardBackward)."""
        loss = self.forward_from_to()
        self.full_backward()
        return loss

    def reshape(self):
        """Propagate input shape changes through every layer."""
        for record in self.records:
            record.layer.reshape(record.bottoms, record.tops)

    def clear_param_diffs(self):
        for blob in self.learnable_params:
            blob.diff[...] = 0

    def loss_outputs(self):
        """(name, blob, loss weight) for each net output, in order."""
        return [(name, self.blobs[name], self.blob_loss_weights[name]) for name in self.outputs]

    # ---- resources ---------------------------------------------------------------------
    def close(self):
        """Stop the data layers' background threads (``layer.close()`` where a layer has one).

        The net stays usable: a data layer's next forward restarts its prefetch where it was.
        """
        for layer in self.layers:
            close = getattr(layer, "close", None)
            if callable(close):
                close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False

    # ---- weights -----------------------------------------------------------------------
    def copy_from(self, path):
        """Copy weights by layer name from a .caffemodel or .caffemodel.h5 (pycaffe copy_from)."""
        from .io.weights import copy_trained_layers_from

        copy_trained_layers_from(self, path)

    def share_with(self, other):
        """Use ``other``'s param blobs for every layer of the same name (ShareTrainedLayersWith)."""
        for name, source in other.layer_dict.items():
            target = self.layer_dict.get(name)
            if target is None:
                continue
            if len(target.blobs) != len(source.blobs):
                raise ProtonetError(f"layer '{name}': {len(source.blobs)} param blobs in the "
                                    f"source net, {len(target.blobs)} here")
            for i, (mine, theirs) in enumerate(zip(target.blobs, source.blobs)):
                if tuple(mine.shape) != tuple(theirs.shape):
                    raise ProtonetError(f"layer '{name}' param {i}: shape {theirs.shape} in the "
                                        f"source net, {mine.shape} here")
                mine.share_data(theirs)

    def to_proto(self, write_diff=False):
        """A NetParameter with every layer and its param blobs (what a .caffemodel holds)."""
        from .io.blobproto import fill_blobproto

        out = caffe_pb2.NetParameter()
        out.name = self.name
        for record in self.records:
            layer_param = out.layer.add()
            layer_param.CopyFrom(record.param)
            del layer_param.blobs[:]
            for blob in record.layer.blobs:
                fill_blobproto(layer_param.blobs.add(), blob.data,
                               blob.diff if write_diff else None)
        return out

    def save(self, path, write_diff=False):
        """Write a .caffemodel (binary) or, for a path ending in .h5, Caffe's HDF5 layout."""
        from .io.weights import save_weights

        save_weights(self, path, write_diff=write_diff)

    def save_hdf5(self, path, write_diff=False):
        from .io.weights import save_weights_hdf5

        save_weights_hdf5(self, path, write_diff=write_diff)

    def load_hdf5(self, path):
        from .io.weights import copy_trained_layers_from

        copy_trained_layers_from(self, path)

    def set_input_arrays(self, data, labels):
        """Feed a MemoryData layer (the first one in the net), as pycaffe does."""
        for layer in self.layers:
            if layer.type == "MemoryData":
                layer.set_input_arrays(data, labels)
                return
        raise ProtonetError("set_input_arrays needs a MemoryData layer; this net has none")
