"""Layer registry: Caffe's type string → layer class.

``@register("ReLU")`` adds a class; registering a name twice fails at import. An unknown type
raises a ProtonetError naming the closest registered types. Caffe's ``engine`` fields
(DEFAULT/CAFFE/CUDNN) are parsed and ignored: protonet has one CPU engine per layer.
"""

import difflib

from ..errors import ProtonetError

_REGISTRY = {}


def register(type_name):
    """Class decorator that registers a layer class under Caffe's type string."""

    def decorate(cls):
        if type_name in _REGISTRY:
            raise RuntimeError(f"layer type {type_name!r} registered twice "
                               f"({_REGISTRY[type_name].__name__} and {cls.__name__})")
        _REGISTRY[type_name] = cls
        cls.type = type_name
        return cls

    return decorate


def get_layer_class(type_name):
    """The class registered for ``type_name``; a ProtonetError with suggestions otherwise."""
    try:
        return _REGISTRY[type_name]
    except KeyError:
        pass
    names = sorted(_REGISTRY)
    close = difflib.get_close_matches(type_name, names, n=3, cutoff=0.5)
    lowered = [n for n in names if n.lower() == str(type_name).lower()]
    suggestions = list(dict.fromkeys(lowered + close))
    hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
    raise ProtonetError(f"unknown layer type {type_name!r}{hint} "
                        f"(run `protonet layers` for the {len(names)} known types)")


def layer_type_list():
    """Every registered type string, sorted (pycaffe's ``caffe.layer_type_list()``)."""
    return sorted(_REGISTRY)
