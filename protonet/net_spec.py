"""pycaffe's net specification: write nets in Python, get a NetParameter.

    from protonet.net_spec import NetSpec, layers as L, params as P

    n = NetSpec()
    n.data, n.label = L.Data(source="train_lmdb", backend=P.Data.LMDB, batch_size=64, ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20)
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.loss = L.SoftmaxWithLoss(n.conv1, n.label)
    print(n.to_proto())

Behaviour follows pycaffe exactly: ``L.<Type>(*bottoms, ntop=1, in_place=False, **kwargs)``
returns a Top (a tuple of Tops when ``ntop > 1``, the Function when ``ntop == 0``). A keyword
whose name ends in ``param`` goes to that LayerParameter field; any other keyword goes to the
type's ``<type>_param`` message when that message has such a field, else to the
LayerParameter itself (``loss_weight``, ``include``, ``propagate_down``...). Dicts become
messages, lists repeated fields, and a scalar given for a repeated field becomes a one-element
list. Tops named by assignment to a NetSpec keep those names; the others, and the layers, are
named ``<Type><k>`` in the order they are first met. A layer is named after its first top.

One addition to pycaffe: types whose parameters live in another type's message
(Deconvolution → ``convolution_param``, LSTM/RNN → ``recurrent_param``) route keywords there;
pycaffe made you spell those messages out.
"""

from collections import Counter, OrderedDict

from .proto import caffe_pb2

__all__ = ["NetSpec", "Top", "Function", "layers", "params", "to_proto", "assign_proto",
           "param_name_dict", "L", "P"]

# Types whose parameters are another message (no <Type>Parameter of their own).
_SHARED_PARAM_MESSAGES = {"Deconvolution": "convolution", "LSTM": "recurrent", "RNN": "recurrent"}


def param_name_dict():
    """Layer type name → name of its ``<name>_param`` field, from the LayerParameter schema.

    ``ConvolutionParameter convolution_param`` gives ``'Convolution': 'convolution'``.
    """
    layer = caffe_pb2.LayerParameter()
    mapping = {}
    for field in layer.DESCRIPTOR.fields:
        if not field.name.endswith("_param") or field.message_type is None:
            continue
        type_name = field.message_type.name
        if type_name.endswith("Parameter"):
            mapping[type_name[:-len("Parameter")]] = field.name[:-len("_param")]
    return mapping


def to_proto(*tops):
    """A NetParameter holding every layer needed to compute ``tops`` (names automatic).

    A Function (a layer made with ``ntop=0``) may be passed as well as Tops.
    """
    layers_ = OrderedDict()
    autonames = Counter()
    for top in tops:
        top._to_proto(layers_, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers_.values())
    return net


def _is_repeated(proto, name):
    return hasattr(getattr(proto, name), "extend")


def assign_proto(proto, name, val):
    """Assign a Python value to field ``name`` of ``proto``, recursing into dicts and lists."""
    if _is_repeated(proto, name) and not isinstance(val, list):
        val = [val]
    if isinstance(val, list):
        if val and isinstance(val[0], dict):
            for item in val:
                proto_item = getattr(proto, name).add()
                for k, v in item.items():
                    assign_proto(proto_item, k, v)
        else:
            getattr(proto, name).extend(val)
    elif isinstance(val, dict):
        for k, v in val.items():
            assign_proto(getattr(proto, name), k, v)
    else:
        setattr(proto, name, val)


class Top:
    """One output blob of a layer: output ``n`` of Function ``fn``."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def to_proto(self):
        """A NetParameter with every layer needed to compute this top."""
        return to_proto(self)

    def _to_proto(self, layers_, names, autonames):
        return self.fn._to_proto(layers_, names, autonames)


class Function:
    """A layer: its type, its bottoms (Tops of earlier layers) and its parameters."""

    def __init__(self, type_name, inputs, params_):
        self.type_name = type_name
        for index, inp in enumerate(inputs):
            if not isinstance(inp, Top):
                raise TypeError(f"{type_name} input {index} is not a Top (type is "
                                f"{type(inp).__name__})")
        self.inputs = inputs
        self.params = params_
        # ntop and in_place are ours, not layer parameters: take them out of params.
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_name(self, names, autonames):
        if self not in names and self.ntop > 0:
            names[self] = self._get_top_name(self.tops[0], names, autonames)
        elif self not in names:
            autonames[self.type_name] += 1
            names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    def _get_top_name(self, top, names, autonames):
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _to_proto(self, layers_, names, autonames):
        if self in layers_:
            return
        bottom_names = []
        for inp in self.inputs:
            inp._to_proto(layers_, names, autonames)
            bottom_names.append(layers_[inp.fn].top[inp.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottom_names)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            for top in self.tops:
                layer.top.append(self._get_top_name(top, names, autonames))
        layer.name = self._get_name(names, autonames)
        for k, v in self.params.items():
            self._assign(layer, k, v)
        layers_[self] = layer

    def _assign(self, layer, k, v):
        if k.endswith("param"):      # generic *param fields: param, transform_param, ...
            assign_proto(layer, k, v)
            return
        param_name = _SHARED_PARAM_MESSAGES.get(self.type_name, _PARAM_NAMES.get(self.type_name))
        if param_name is not None:
            message = getattr(layer, param_name + "_param")
            if k in message.DESCRIPTOR.fields_by_name:
                assign_proto(message, k, v)
                return
        assign_proto(layer, k, v)


class NetSpec:
    """Tops assigned as attributes (or items); ``to_proto`` names each by its attribute."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top named {name!r}") from None

    def __setitem__(self, key, value):
        self.__setattr__(key, value)

    def __getitem__(self, item):
        return self.tops[item]

    def __contains__(self, name):
        return name in self.tops

    def to_proto(self):
        """A NetParameter with every layer needed to compute the assigned tops."""
        names = {v: k for k, v in self.tops.items()}
        autonames = Counter()
        layers_ = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers_, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers_.values())
        return net


class Layers:
    """``layers.<Type>(*bottoms, **params)`` specifies a layer of that type."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def layer_fn(*args, **kwargs):
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops
        layer_fn.__name__ = name
        return layer_fn


class _ParamEnums:
    """The enum values of ``<name>Parameter``: ``params.Pooling.MAX``."""

    def __init__(self, name):
        self._message = getattr(caffe_pb2, name + "Parameter")

    def __getattr__(self, param_name):
        return getattr(self._message, param_name)


class Parameters:
    """``params.<Type>.<ENUM>``: constants for layer parameters, e.g. ``params.Pooling.MAX``."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _ParamEnums(name)


_PARAM_NAMES = param_name_dict()
layers = Layers()
params = Parameters()
L = layers
P = params
