"""Every layer family; importing this package fills the registry.

Families: data, vision, common, neuron, norm, loss, recurrent, python. Each module registers
its layers with ``@register("<Caffe type>")`` from :mod:`.registry`.
"""

from . import common, data, loss, neuron, norm, python, recurrent, vision  # noqa: F401
from .base import Layer, LossLayer, NeuronLayer  # noqa: F401
from .registry import get_layer_class, layer_type_list, register  # noqa: F401


def __getattr__(name):
    # pycaffe's `caffe.layers.<Type>(...)` is NetSpec's layer factory; no name here clashes
    # with a layer type, so capitalised lookups go there.
    if name[:1].isupper():
        from ..net_spec import layers as spec_layers

        return getattr(spec_layers, name)
    raise AttributeError(f"module 'protonet.layers' has no attribute {name!r}")
