"""Caffe's legacy-format upgrades, pass by pass (``src/caffe/util/upgrade_proto.cpp``).

Every net read runs the passes below, in Caffe's order (``UpgradeNetAsNeeded``); each runs
only when its ``needs`` test says the file uses the old form:

1. **V0 → V1**: ``layers { layer { type: "conv" kernelsize: 5 ... } }``. V0 "padding" layers
   are folded into the ``pad`` of the conv/pool that consumes them, the lower-case type names
   become V1 enums, and the flat V0 fields move into the per-type ``*_param`` messages (the
   transformation fields into ``transform_param``).
2. **data transform**: V1 DATA/IMAGE_DATA/WINDOW_DATA layers with scale/mean_file/crop_size/
   mirror inside their own param message get them moved into ``transform_param``.
3. **V1 → V2**: ``layers`` (V1LayerParameter, enum types) become ``layer`` (LayerParameter,
   type strings); ``param``/``blob_share_mode``/``blobs_lr``/``weight_decay`` become ParamSpecs.
4. **input fields**: net-level ``input`` + ``input_shape``/``input_dim`` become a first layer
   named "input" of type Input; a bare ``input`` without shapes (old caffemodels) is dropped.
5. **BatchNorm**: a BatchNorm layer declaring exactly three ``param`` specs gets lr_mult and
   decay_mult set to 0 on all three (its blobs are statistics, not learned weights).

Solvers have one pass: the ``solver_type`` enum becomes the ``type`` string. Snapshot-prefix
normalisation (:func:`upgrade_snapshot_prefix`) happens when a solver file is read for
training, as in Caffe's ``ReadSolverParamsFromTextFileOrDie``.

Where Caffe dies (``LOG(FATAL)``/``CHECK``) we raise :class:`ProtonetError` naming the file
(and the layer's line when known). Where Caffe logs an error and continues ("had one or more
problems upgrading ...; continuing anyway") we log the same and continue; the report says the
upgrade was not fully compatible, and the upgrade tools then fail as Caffe's do.
"""

import os
from collections import namedtuple

from ..errors import ProtonetError
from ..log import get_logger
from ..proto import caffe_pb2

log = get_logger(__name__)

V1Layer = caffe_pb2.V1LayerParameter

# V0 lower-case type names → V1 LayerType enum names (UpgradeV0LayerType; 24 names).
# "padding" is not here: padding layers are folded away before types are converted.
V0_LAYER_TYPES = {
    "accuracy": "ACCURACY",
    "bnll": "BNLL",
    "concat": "CONCAT",
    "conv": "CONVOLUTION",
    "data": "DATA",
    "dropout": "DROPOUT",
    "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA",
    "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL",
    "images": "IMAGE_DATA",
    "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT",
    "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS",
    "pool": "POOLING",
    "relu": "RELU",
    "sigmoid": "SIGMOID",
    "softmax": "SOFTMAX",
    "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT",
    "tanh": "TANH",
    "window_data": "WINDOW_DATA",
}

# V1 LayerType enum names → V2 type strings (UpgradeV1LayerType; 39 types plus NONE).
V1_LAYER_TYPES = {
    "NONE": "",
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution",
    "DATA": "Data",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}

# SolverParameter.SolverType enum names → solver type strings (UpgradeSolverType).
SOLVER_TYPES = {
    "SGD": "SGD",
    "NESTEROV": "Nesterov",
    "ADAGRAD": "AdaGrad",
    "RMSPROP": "RMSProp",
    "ADADELTA": "AdaDelta",
    "ADAM": "Adam",
}

# Flat V0 fields that belong to one per-type message, by V0 layer type:
# V0 field → {V0 type: (V1 message field or None for the layer itself, target field)}.
# A field set on a layer type not listed is logged and dropped, as Caffe does.
_CONV = "convolution_param"
_IP = "inner_product_param"
_POOL = "pooling_param"
_LRN = "lrn_param"
_WINDOW = "window_data_param"
_V0_TYPED_FIELDS = {
    "num_output": {"conv": (_CONV, "num_output"), "innerproduct": (_IP, "num_output")},
    "biasterm": {"conv": (_CONV, "bias_term"), "innerproduct": (_IP, "bias_term")},
    "weight_filler": {"conv": (_CONV, "weight_filler"), "innerproduct": (_IP, "weight_filler")},
    "bias_filler": {"conv": (_CONV, "bias_filler"), "innerproduct": (_IP, "bias_filler")},
    "pad": {"conv": (_CONV, "pad"), "pool": (_POOL, "pad")},
    "kernelsize": {"conv": (_CONV, "kernel_size"), "pool": (_POOL, "kernel_size")},
    "group": {"conv": (_CONV, "group")},
    "stride": {"conv": (_CONV, "stride"), "pool": (_POOL, "stride")},
    # V0's PoolMethod numbers MAX/AVE/STOCHASTIC exactly as PoolingParameter's does.
    "pool": {"pool": (_POOL, "pool")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": (_LRN, "local_size")},
    "alpha": {"lrn": (_LRN, "alpha")},
    "beta": {"lrn": (_LRN, "beta")},
    "k": {"lrn": (_LRN, "k")},
    "source": {"data": ("data_param", "source"), "hdf5_data": ("hdf5_data_param", "source"),
               "images": ("image_data_param", "source"), "window_data": (_WINDOW, "source"),
               "infogain_loss": ("infogain_loss_param", "source")},
    "batchsize": {"data": ("data_param", "batch_size"),
                  "hdf5_data": ("hdf5_data_param", "batch_size"),
                  "images": ("image_data_param", "batch_size"),
                  "window_data": (_WINDOW, "batch_size")},
    "rand_skip": {"data": ("data_param", "rand_skip"),
                  "images": ("image_data_param", "rand_skip")},
    "shuffle_images": {"images": ("image_data_param", "shuffle")},
    "new_height": {"images": ("image_data_param", "new_height")},
    "new_width": {"images": ("image_data_param", "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": (_WINDOW, "fg_threshold")},
    "det_bg_threshold": {"window_data": (_WINDOW, "bg_threshold")},
    "det_fg_fraction": {"window_data": (_WINDOW, "fg_fraction")},
    "det_context_pad": {"window_data": (_WINDOW, "context_pad")},
    "det_crop_mode": {"window_data": (_WINDOW, "crop_mode")},
    "hdf5_output_param": {"hdf5_output": (None, "hdf5_output_param")},
}

# Flat V0 fields that move into transform_param whatever the layer type.
_V0_TRANSFORM_FIELDS = {"scale": "scale", "meanfile": "mean_file", "cropsize": "crop_size",
                        "mirror": "mirror"}

# V1 data layers whose own param message once held the transformation fields.
_DATA_TRANSFORM_LAYERS = {"DATA": "data_param", "IMAGE_DATA": "image_data_param",
                          "WINDOW_DATA": "window_data_param"}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")

# Every V1 *_param message has a same-named, same-typed field in LayerParameter (V1 → V2 copies
# them all, as UpgradeV1LayerParameter does one by one).
_V1_PARAM_FIELDS = tuple(f.name for f in V1Layer.DESCRIPTOR.fields if f.name.endswith("_param"))
assert all(caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name[name].message_type
           is V1Layer.DESCRIPTOR.fields_by_name[name].message_type
           for name in _V1_PARAM_FIELDS)

UpgradeReport = namedtuple("UpgradeReport", "upgraded compatible layer_lines")
UpgradeReport.__doc__ = """What :func:`run_net_upgrades` did.

``upgraded``: some pass ran. ``compatible``: no pass had to drop anything (Caffe's
``is_fully_compatible``). ``layer_lines``: the source line of each entry of ``net.layer``,
aligned after padding layers were folded away and the Input layer was put first (``None``
where unknown).
"""


class _Context:
    """One run of the net passes over one file: its name, and the layer → line list."""

    def __init__(self, source, layer_lines, input_line):
        self.source = source
        self.lines = layer_lines
        self.input_line = input_line
        self.compatible = True
        self.pass_ok = True

    def line_of(self, index):
        if self.lines is None or index is None or index >= len(self.lines):
            return None
        return self.lines[index]

    def problem(self, message):
        """A Caffe ``LOG(ERROR)``: the upgrade drops something and carries on."""
        log.error("%s: %s", self.source, message)
        self.compatible = False
        self.pass_ok = False

    def fatal(self, message, index=None):
        """A Caffe ``LOG(FATAL)``: an error the caller raises."""
        return ProtonetError(message, file=self.source, line=self.line_of(index))

    def keep_layers(self, kept):
        if self.lines is not None:
            self.lines = [self.lines[i] if i < len(self.lines) else None for i in kept]

    def put_first(self, line):
        if self.lines is not None:
            self.lines = [line] + self.lines


def _set_field(message, name, value):
    """``message.name = value`` for a scalar, append for a repeated field, copy for a message."""
    field = message.DESCRIPTOR.fields_by_name[name]
    if field.is_repeated:
        getattr(message, name).append(value)
    elif field.message_type is not None:
        getattr(message, name).CopyFrom(value)
    else:
        setattr(message, name, value)


# ---------------------------------------------------------------------------------------------
# V0 → V1
# ---------------------------------------------------------------------------------------------

def net_needs_v0_upgrade(net):
    """Any ``layers`` entry holds a nested V0 ``layer`` (NetNeedsV0ToV1Upgrade)."""
    return any(conn.HasField("layer") for conn in net.layers)


def _fold_v0_padding(net, ctx):
    """UpgradeV0PaddingLayers: drop "padding" layers, giving their pad to the conv/pool after.

    Returns a copy of ``net`` without padding layers; the consumer of a padding layer reads the
    padding layer's input instead and gets ``pad`` set on its V0 parameters.
    """
    folded = caffe_pb2.NetParameter()
    folded.CopyFrom(net)
    folded.ClearField("layers")
    last_producer = {name: None for name in net.input}   # None: a net input
    kept = []
    for i, conn in enumerate(net.layers):
        v0 = conn.layer
        if v0.type != "padding":
            folded.layers.add().CopyFrom(conn)
            kept.append(i)
        for j, blob in enumerate(conn.bottom):
            if blob not in last_producer:
                raise ctx.fatal(f"unknown blob input '{blob}' to layer '{v0.name}'", i)
            producer = last_producer[blob]
            if producer is None or net.layers[producer].layer.type != "padding":
                continue
            padding = net.layers[producer]
            if v0.type not in ("conv", "pool"):
                raise ctx.fatal(f"padding layer '{padding.layer.name}' feeds layer '{v0.name}' "
                                f"of type '{v0.type}'; a V0 padding layer may only feed a "
                                "conv or pool layer", i)
            if len(conn.bottom) != 1 or len(padding.bottom) != 1 or len(padding.top) != 1:
                raise ctx.fatal(f"padding layer '{padding.layer.name}' and its consumer "
                                f"'{v0.name}' must each take a single blob (and the padding "
                                "layer produce one)", i)
            target = folded.layers[-1]
            target.layer.pad = padding.layer.pad
            target.bottom[j] = padding.bottom[0]
        for blob in conn.top:
            last_producer[blob] = i
    ctx.keep_layers(kept)
    return folded


def _upgrade_v0_layer(conn, ctx, index):
    """UpgradeV0LayerParameter: one ``layers { layer { ... } }`` entry → a V1 layer."""
    out = V1Layer()
    out.bottom.extend(conn.bottom)
    out.top.extend(conn.top)
    if not conn.HasField("layer"):
        return out
    v0 = conn.layer
    if v0.HasField("name"):
        out.name = v0.name
    if v0.HasField("type"):
        if v0.type not in V0_LAYER_TYPES:
            raise ctx.fatal(f"unknown V0 layer type '{v0.type}' (layer '{v0.name}'); V0 types "
                            f"are {', '.join(sorted(V0_LAYER_TYPES))}", index)
        out.type = V1Layer.LayerType.Value(V0_LAYER_TYPES[v0.type])
    out.blobs.extend(v0.blobs)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    for field, value in v0.ListFields():
        if field.name in _V0_TRANSFORM_FIELDS:
            _set_field(out.transform_param, _V0_TRANSFORM_FIELDS[field.name], value)
        elif field.name in _V0_TYPED_FIELDS:
            target = _V0_TYPED_FIELDS[field.name].get(v0.type)
            if target is None:
                ctx.problem(f"Unknown parameter {field.name} for layer type {v0.type} "
                            f"(layer '{v0.name}'); dropped")
                continue
            message_name, target_field = target
            message = out if message_name is None else getattr(out, message_name)
            _set_field(message, target_field, value)
    return out


def upgrade_v0_net(net, ctx):
    """UpgradeV0Net: fold padding layers, then convert every layer; keeps name, inputs and
    force_backward (the only net-level fields a V0 file had)."""
    folded = _fold_v0_padding(net, ctx)
    out = caffe_pb2.NetParameter()
    if folded.HasField("name"):
        out.name = folded.name
    for i, conn in enumerate(folded.layers):
        out.layers.add().CopyFrom(_upgrade_v0_layer(conn, ctx, i))
    out.input.extend(folded.input)
    out.input_dim.extend(folded.input_dim)
    if folded.HasField("force_backward"):
        out.force_backward = folded.force_backward
    net.CopyFrom(out)


# ---------------------------------------------------------------------------------------------
# Data-transformation fields
# ---------------------------------------------------------------------------------------------

def _v1_type_name(layer):
    return V1Layer.LayerType.Name(layer.type)


def net_needs_data_upgrade(net):
    """A V1 data layer keeps transformation fields in its own param (NetNeedsDataUpgrade)."""
    for layer in net.layers:
        param_name = _DATA_TRANSFORM_LAYERS.get(_v1_type_name(layer))
        if param_name is None:
            continue
        param = getattr(layer, param_name)
        if any(param.HasField(name) for name in _TRANSFORM_FIELDS):
            return True
    return False


def upgrade_data_transformation(net, ctx):
    """UpgradeNetDataTransformation: move scale/mean_file/crop_size/mirror to transform_param."""
    for layer in net.layers:
        param_name = _DATA_TRANSFORM_LAYERS.get(_v1_type_name(layer))
        if param_name is None:
            continue
        param = getattr(layer, param_name)
        # Caffe quirk: upgrade_proto.cpp calls mutable_*() on both messages, so every layer of
        # these types ends up with them present, even if empty.
        param.SetInParent()
        layer.transform_param.SetInParent()
        for name in _TRANSFORM_FIELDS:
            if param.HasField(name):
                setattr(layer.transform_param, name, getattr(param, name))
                param.ClearField(name)


# ---------------------------------------------------------------------------------------------
# V1 → V2
# ---------------------------------------------------------------------------------------------

def net_needs_v1_upgrade(net):
    """The net has ``layers`` entries (NetNeedsV1ToV2Upgrade)."""
    return len(net.layers) > 0


def _param_spec(layer, index):
    while len(layer.param) <= index:
        layer.param.add()
    return layer.param[index]


def _upgrade_v1_layer(v1, layer, ctx, index):
    """UpgradeV1LayerParameter: one V1 layer → ``layer`` (a fresh LayerParameter)."""
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    if v1.HasField("name"):
        layer.name = v1.name
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        layer.type = V1_LAYER_TYPES[_v1_type_name(v1)]
    layer.blobs.extend(v1.blobs)
    for i, name in enumerate(v1.param):
        _param_spec(layer, i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        mode_name = V1Layer.DimCheckMode.Name(mode)
        _param_spec(layer, i).share_mode = caffe_pb2.ParamSpec.DimCheckMode.Value(mode_name)
    for i, lr in enumerate(v1.blobs_lr):
        _param_spec(layer, i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        _param_spec(layer, i).decay_mult = decay
    layer.loss_weight.extend(v1.loss_weight)
    for field, value in v1.ListFields():
        if field.name in _V1_PARAM_FIELDS:
            getattr(layer, field.name).CopyFrom(value)
    if v1.HasField("layer"):
        ctx.problem(f"Input NetParameter has V0 layer -- ignoring. Upgrade of input layer "
                    f"{index} ('{v1.name}') failed.")


def upgrade_v1_net(net, ctx):
    """UpgradeV1Net: ``layers`` → ``layer``; refuses a file that mixes the two."""
    if len(net.layer) > 0:
        raise ctx.fatal("refusing to upgrade inconsistent NetParameter input: the definition "
                        "includes both 'layer' and 'layers' fields. The current format defines "
                        "'layer' fields with string type like layer { type: 'Layer' ... } and "
                        "not layers { type: LAYER ... }; switch the whole file to the 'layer' "
                        "format (protonet upgrade-net converts a pure 'layers' file)", 0)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    out.ClearField("layers")
    out.ClearField("layer")
    for i, v1 in enumerate(net.layers):
        _upgrade_v1_layer(v1, out.layer.add(), ctx, i)
    net.CopyFrom(out)


# ---------------------------------------------------------------------------------------------
# Input fields → Input layer
# ---------------------------------------------------------------------------------------------

def net_needs_input_upgrade(net):
    """The net uses the net-level ``input`` field (NetNeedsInputUpgrade)."""
    return len(net.input) > 0


def upgrade_net_input(net, ctx):
    """UpgradeNetInput: ``input`` + shapes → a first layer "input" of type Input."""
    has_shape = len(net.input_shape) > 0
    has_dim = len(net.input_dim) > 0
    if has_shape or has_dim:
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        for i, name in enumerate(net.input):
            layer.top.append(name)
            layer.input_param.shape.add().CopyFrom(_input_shape(net, i, has_shape, ctx))
        layers = [layer] + list(net.layer)
        net.ClearField("layer")
        net.layer.extend(layers)
        ctx.put_first(ctx.input_line)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")


def _input_shape(net, index, has_shape, ctx):
    """The BlobShape of input ``index``: its ``input_shape``, else its 4 ``input_dim`` values."""
    name = net.input[index]
    if has_shape:
        if index >= len(net.input_shape):
            raise ProtonetError(f"{len(net.input)} inputs but only {len(net.input_shape)} "
                                f"input_shape entries (none for input '{name}'); give one "
                                "input_shape per input", file=ctx.source, line=ctx.input_line)
        return net.input_shape[index]
    dims = net.input_dim[4 * index:4 * index + 4]
    if len(dims) != 4:
        raise ProtonetError(f"{len(net.input)} inputs need {4 * len(net.input)} input_dim values "
                            f"(4 per input) but the file gives {len(net.input_dim)}",
                            file=ctx.source, line=ctx.input_line)
    return caffe_pb2.BlobShape(dim=dims)


# ---------------------------------------------------------------------------------------------
# BatchNorm with three param specs
# ---------------------------------------------------------------------------------------------

def _is_old_batch_norm(layer):
    return layer.type == "BatchNorm" and len(layer.param) == 3


def net_needs_batch_norm_upgrade(net):
    """A BatchNorm layer declares exactly 3 ``param`` specs (NetNeedsBatchNormUpgrade)."""
    return any(_is_old_batch_norm(layer) for layer in net.layer)


def upgrade_net_batch_norm(net, ctx):
    """UpgradeNetBatchNorm: lr_mult = decay_mult = 0 on all three specs, names kept.

    Caffe quirk: the first version of this pass (a8ec123c0) cleared the three specs; the final
    one (a19357a19, in Caffe 1.0) keeps them, names included, and only zeroes the multipliers.
    We do what the final version does.
    """
    for layer in net.layer:
        if _is_old_batch_norm(layer):
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------

_NetPass = namedtuple("_NetPass", "needs run attempt success failure note")

_V0_NOTE = ("Note that future Caffe releases will not support V0NetParameter; use "
            "`protonet upgrade-net` to upgrade this and any other net protos to the new format.")

# Caffe's order (UpgradeNetAsNeeded), with its log texts.
_NET_PASSES = (
    _NetPass(net_needs_v0_upgrade, upgrade_v0_net,
             "Attempting to upgrade input file specified using deprecated V0LayerParameter: %s",
             "Successfully upgraded file specified using deprecated V0LayerParameter",
             "Warning: had one or more problems upgrading V0NetParameter to NetParameter "
             "(see above); continuing anyway.",
             _V0_NOTE),
    _NetPass(net_needs_data_upgrade, upgrade_data_transformation,
             "Attempting to upgrade input file specified using deprecated transformation "
             "parameters: %s",
             "Successfully upgraded file specified using deprecated data transformation "
             "parameters.",
             None,
             "Note that future Caffe releases will only support transform_param messages for "
             "transformation fields."),
    _NetPass(net_needs_v1_upgrade, upgrade_v1_net,
             "Attempting to upgrade input file specified using deprecated V1LayerParameter: %s",
             "Successfully upgraded file specified using deprecated V1LayerParameter",
             "Warning: had one or more problems upgrading V1LayerParameter (see above); "
             "continuing anyway.",
             None),
    _NetPass(net_needs_input_upgrade, upgrade_net_input,
             "Attempting to upgrade input file specified using deprecated input fields: %s",
             "Successfully upgraded file specified using deprecated input fields.",
             None,
             "Note that future Caffe releases will only support input layers and not input "
             "fields."),
    _NetPass(net_needs_batch_norm_upgrade, upgrade_net_batch_norm,
             "Attempting to upgrade batch norm layers using deprecated params: %s",
             "Successfully upgraded batch norm layers using deprecated params.",
             None,
             None),
)


def net_needs_upgrade(net_param):
    """Whether any upgrade pass would change ``net_param`` (NetNeedsUpgrade)."""
    return any(p.needs(net_param) for p in _NET_PASSES)


def run_net_upgrades(net_param, *, source="<memory>", layer_lines=None, input_line=None):
    """Run every needed pass on ``net_param`` in place, in Caffe's order.

    ``layer_lines`` is the source line of each entry of the layer list the file used
    (``layers`` for V0/V1 files, else ``layer``); ``input_line`` that of the net-level ``input``
    field (it becomes the Input layer's line). Returns an :data:`UpgradeReport`. Raises
    :class:`ProtonetError` (with ``file=source``) where Caffe's upgrade dies.
    """
    ctx = _Context(source, list(layer_lines) if layer_lines is not None else None, input_line)
    upgraded = False
    for upgrade in _NET_PASSES:
        if not upgrade.needs(net_param):
            continue
        upgraded = True
        log.info(upgrade.attempt, source)
        ctx.pass_ok = True
        upgrade.run(net_param, ctx)
        if ctx.pass_ok:
            log.info(upgrade.success)
        else:
            log.error(upgrade.failure)
        if upgrade.note:
            log.warning(upgrade.note)
    lines = ctx.lines if ctx.lines is not None else [None] * len(net_param.layer)
    return UpgradeReport(upgraded, ctx.compatible, lines)


def upgrade_net(net_param, *, source="<memory>"):
    """Upgrade ``net_param`` in place from any legacy form; return whether anything changed."""
    return run_net_upgrades(net_param, source=source).upgraded


# ---------------------------------------------------------------------------------------------
# Solvers
# ---------------------------------------------------------------------------------------------

def solver_needs_upgrade(solver_param):
    """The solver uses the deprecated ``solver_type`` enum (SolverNeedsTypeUpgrade)."""
    return solver_param.HasField("solver_type")


def upgrade_solver(solver_param, *, source="<memory>"):
    """``solver_type`` enum → ``type`` string, in place; return whether anything changed.

    Both set is an error, as in Caffe's UpgradeSolverType.
    """
    if not solver_needs_upgrade(solver_param):
        return False
    log.info("Attempting to upgrade input file specified using deprecated 'solver_type' field "
             "(enum)': %s", source)
    enum_name = caffe_pb2.SolverParameter.SolverType.Name(solver_param.solver_type)
    if solver_param.HasField("type"):
        raise ProtonetError(f"failed to upgrade solver: the old solver_type field (enum, here "
                            f"{enum_name}) and the new type field (string, here "
                            f"\"{solver_param.type}\") cannot both be specified; keep only "
                            "type", file=source)
    solver_param.type = SOLVER_TYPES[enum_name]
    solver_param.ClearField("solver_type")
    log.info("Successfully upgraded file specified using deprecated 'solver_type' field (enum) "
             "to 'type' field (string).")
    log.warning("Note that future Caffe releases will only support 'type' field (string) for a "
                "solver's type.")
    return True


def upgrade_snapshot_prefix(solver_param, solver_path):
    """UpgradeSnapshotPrefixProperty: fill in or complete ``snapshot_prefix``.

    Unset: the solver file's path without its extension (``examples/lenet_solver.prototxt`` →
    ``examples/lenet_solver``). Naming an existing directory (relative to the current
    directory, as in Caffe): that directory joined with the solver file's stem.
    """
    solver_path = os.fspath(solver_path)
    if not solver_param.HasField("snapshot_prefix"):
        solver_param.snapshot_prefix = os.path.splitext(solver_path)[0]
        log.info("snapshot_prefix was not specified and is set to %s",
                 solver_param.snapshot_prefix)
    elif os.path.isdir(solver_param.snapshot_prefix):
        stem = os.path.splitext(os.path.basename(solver_path))[0]
        solver_param.snapshot_prefix = os.path.join(solver_param.snapshot_prefix, stem)
        log.info("snapshot_prefix was a directory and is replaced to %s",
                 solver_param.snapshot_prefix)
