"""Every layer family; importing this package fills the registry.

Families: data, vision, common, neuron, norm, loss, recurrent, python. Each module registers
its layers with ``@register("<Caffe type>")`` from :mod:`.registry`.
"""

from . import common, data, loss, neuron, norm, python, recurrent, vision  # noqa: F401
from .base import Layer, LossLayer, NeuronLayer  # noqa: F401
from .registry import get_layer_class, layer_type_list, register  # noqa: F401
