"""``type: "Python"`` layers: a user's class, found on the Python path, run as a layer.

The contract is pycaffe's: ``python_param { module: "my_layers" layer: "MyLayer"
param_str: "..." }`` imports ``my_layers`` and instantiates ``MyLayer``, a subclass of
``protonet.Layer`` (``caffe.Layer`` when scripts do ``import protonet as caffe``), whose
``setup(bottom, top)``, ``reshape(bottom, top)``, ``forward(bottom, top)`` and
``backward(top, propagate_down, bottom)`` are called as for any layer; ``self.param_str``,
``self.phase`` and ``self.blobs`` (with ``add_blob``) are set.

Security: loading a net with a Python layer imports and runs the named module, as in Caffe. Only
load such nets from people you trust; ``allow_python_layers(False)`` (the CLI's
``--no-python-layers``) refuses them. Weights files never execute code.
"""

import importlib

from ..errors import ProtonetError
from .base import Layer
from .registry import register

_POLICY = {"allowed": True}


def allow_python_layers(allowed):
    """Allow or refuse ``type: "Python"`` layers for nets built after this call."""
    _POLICY["allowed"] = bool(allowed)


def _load_class(param):
    spec = param.python_param
    if not _POLICY["allowed"]:
        raise ProtonetError(f"Python layers are disabled (--no-python-layers); this net would "
                            f"import and run module '{spec.module}'", layer=param.name,
                            layer_type="Python")
    if not spec.module or not spec.layer:
        raise ProtonetError("python_param needs both 'module' and 'layer'", layer=param.name,
                            layer_type="Python")
    try:
        module = importlib.import_module(spec.module)
    except ImportError as err:
        raise ProtonetError(f"cannot import Python layer module '{spec.module}': {err} (is its "
                            f"folder on PYTHONPATH?)", layer=param.name,
                            layer_type="Python") from None
    cls = getattr(module, spec.layer, None)
    if not isinstance(cls, type):
        raise ProtonetError(f"module '{spec.module}' has no class '{spec.layer}'",
                            layer=param.name, layer_type="Python")
    if not issubclass(cls, Layer):
        # A class written against another Caffe binding: give it our base's plumbing.
        cls = type(cls.__name__, (cls, Layer), {})
    return cls


@register("Python")
class PythonLayer(Layer):
    """Factory: constructing it returns an instance of the user's class, set up as a layer."""

    def __new__(cls, param, phase=None, blobs=None):
        user_cls = _load_class(param)
        instance = object.__new__(user_cls)
        Layer.__init__(instance, param, phase, blobs)
        instance.type = "Python"
        return instance
