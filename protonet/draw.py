"""Draw a NetParameter as a Graphviz graph (pycaffe's ``caffe.draw``, without pydot).

We write the DOT text ourselves: layers are boxes (coloured by type as pycaffe does: red
convolutions, orange pooling, purple inner products, green in-place neuron layers), blobs are
grey octagons, edges out of a layer carry its batch size or ``num_output``. ``.dot`` (or
``.gv``/``.raw``) files are that text and need nothing else; ``.png``/``.svg``/``.pdf``/... are
rendered by Graphviz's ``dot`` program when it is installed.
"""

import shutil
import subprocess

from .errors import ProtonetError
from .proto import caffe_pb2

__all__ = ["draw_net", "draw_net_to_file", "get_dot_text", "get_pydot_graph", "get_edge_label",
           "get_layer_label", "get_layer_lr_mult", "choose_color_by_layertype",
           "get_pooling_types_dict", "TEXT_FORMATS"]

LAYER_STYLE_DEFAULT = {"shape": "record", "fillcolor": "#6495ED", "style": "filled"}
NEURON_LAYER_STYLE = {"shape": "record", "fillcolor": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}
_TYPE_COLORS = {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
                "InnerProduct": "#CC33FF"}
# Extensions written as DOT text, without Graphviz.
TEXT_FORMATS = ("dot", "gv", "raw")
_LEARNING_TYPES = ("Convolution", "Deconvolution", "InnerProduct")
_INSTALL_HINT = "install Graphviz (apt-get install graphviz) or write .dot"


def get_pooling_types_dict():
    """Pooling method number → name (0 → 'MAX', ...)."""
    desc = caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR
    return {v.number: name for name, v in desc.values_by_name.items()}


def get_edge_label(layer):
    """Label for the edges out of ``layer``: batch size for Data, num_output for conv/IP."""
    if layer.type == "Data":
        return f"Batch {layer.data_param.batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return ""


def get_layer_lr_mult(layer):
    """(weight lr_mult, bias lr_mult) of a Convolution, Deconvolution or InnerProduct layer."""
    if layer.type not in _LEARNING_TYPES:
        raise ProtonetError(f"{layer.type} layers do not have a learning rate multiplier")
    mults = [spec.lr_mult for spec in layer.param]
    if len(mults) > 2:
        raise ProtonetError(f"layer '{layer.name}' has {len(mults)} param specs; expected at "
                            f"most 2")
    return tuple(mults + [1.0] * (2 - len(mults)))


def get_layer_label(layer, rankdir, display_lrm=False):
    """The text of a layer's node: name, (type), kernel/stride/pad, optionally lr mults."""
    # Vertical layouts have room across: one line; horizontal ones stack words.
    separator = " " if rankdir in ("TB", "BT") else "\n"
    descriptors = [layer.name]
    if layer.type == "Pooling":
        pool = get_pooling_types_dict()[layer.pooling_param.pool]
        descriptors.append(f"({layer.type} {pool})")
    else:
        descriptors.append(f"({layer.type})")
    if layer.type == "Pooling":
        p = layer.pooling_param
        spatial = (p.kernel_size, p.stride, p.pad)
    elif layer.type in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        spatial = (p.kernel_size[0] if len(p.kernel_size) else 1,
                   p.stride[0] if len(p.stride) else 1, p.pad[0] if len(p.pad) else 0)
    else:
        spatial = None
    if spatial is not None:
        descriptors.append(separator.join([f"kernel size: {spatial[0]}", f"stride: {spatial[1]}",
                                           f"pad: {spatial[2]}"]))
    if display_lrm and layer.type in _LEARNING_TYPES:
        lrm0, lrm1 = get_layer_lr_mult(layer)
        if lrm0 or lrm1:
            descriptors.append(f"lr mult: {lrm0:.1f}, {lrm1:.1f}")
    return separator.join(descriptors)


def choose_color_by_layertype(layertype):
    """Node colour for a layer type (pycaffe's palette)."""
    return _TYPE_COLORS.get(layertype, LAYER_STYLE_DEFAULT["fillcolor"])


def _included(layer, phase):
    """pycaffe's phase filter: include rules name phases to keep, exclude rules phases to drop."""
    if phase is None:
        return True
    if layer.include and layer.exclude:
        raise ProtonetError(f"layer '{layer.name}' has both include and exclude rules")
    included = not layer.include
    for rule in layer.include:
        included = included or rule.phase == phase
    for rule in layer.exclude:
        included = included and rule.phase != phase
    return included


def _quote(text):
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _attrs(**attrs):
    return "[" + ", ".join(f"{k}={_quote(str(v))}" for k, v in attrs.items()) + "]"


def get_dot_text(net_param, rankdir="LR", label_edges=True, phase=None, display_lrm=False):
    """The Graphviz DOT text of ``net_param`` (a NetParameter).

    ``phase`` (``protonet.TRAIN``/``TEST``) keeps only that phase's layers; ``None`` keeps all.
    """
    if rankdir not in ("LR", "RL", "TB", "BT"):
        raise ProtonetError(f"rankdir {rankdir!r} must be one of LR, RL, TB, BT")
    nodes = {}        # node id → attributes; later definitions of a blob replace earlier ones
    edges = []
    for layer in net_param.layer:
        if not _included(layer, phase):
            continue
        node = f"{layer.name}_{layer.type}"
        label = get_layer_label(layer, rankdir, display_lrm=display_lrm)
        in_place = (len(layer.bottom) == 1 and len(layer.top) == 1
                    and layer.bottom[0] == layer.top[0])
        style = dict(NEURON_LAYER_STYLE if in_place else LAYER_STYLE_DEFAULT)
        if not in_place:
            style["fillcolor"] = choose_color_by_layertype(layer.type)
        nodes[node] = dict(label=label, **style)
        for bottom in layer.bottom:
            nodes[bottom + "_blob"] = dict(label=bottom, **BLOB_STYLE)
            edges.append((bottom + "_blob", node, ""))
        edge_label = get_edge_label(layer) if label_edges else ""
        for top in layer.top:
            nodes[top + "_blob"] = dict(label=top, **BLOB_STYLE)
            edges.append((node, top + "_blob", edge_label))
    lines = [f"digraph {_quote(net_param.name or 'Net')} {{", f"  rankdir={rankdir};"]
    lines += [f"  {_quote(node)} {_attrs(**attrs)};" for node, attrs in nodes.items()]
    lines += [f"  {_quote(src)} -> {_quote(dst)} {_attrs(label=label)};"
              for src, dst, label in edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _render(dot_text, ext):
    dot = shutil.which("dot")
    if dot is None:
        raise ProtonetError(f"drawing to .{ext} needs Graphviz's 'dot' program, which is not "
                            f"installed; {_INSTALL_HINT}")
    result = subprocess.run([dot, f"-T{ext}"], input=dot_text.encode("utf-8"),
                            capture_output=True, check=False)
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip()
        raise ProtonetError(f"Graphviz 'dot -T{ext}' failed: {message}")
    return result.stdout


def draw_net(caffe_net, rankdir="LR", ext="png", phase=None, display_lrm=False):
    """The drawing of ``caffe_net`` as bytes in format ``ext`` (DOT text for dot/gv/raw)."""
    text = get_dot_text(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
    ext = ext.lower().lstrip(".")
    if ext in TEXT_FORMATS:
        return text.encode("utf-8")
    return _render(text, ext)


def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False):
    """Draw ``caffe_net`` into ``filename``; the extension picks the format."""
    filename = str(filename)
    if "." not in filename.rsplit("/", 1)[-1]:
        raise ProtonetError(f"'{filename}' has no extension; use .dot, .png, .svg or .pdf")
    ext = filename.rsplit(".", 1)[-1]
    data = draw_net(caffe_net, rankdir, ext, phase, display_lrm)
    from .io.files import atomic_write_bytes

    atomic_write_bytes(filename, data)


def get_pydot_graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """pycaffe's pydot graph, built from our DOT text; needs the optional ``pydot`` package."""
    try:
        import pydot
    except ImportError:
        raise ProtonetError("get_pydot_graph needs the pydot package (pip install pydot); "
                            "get_dot_text gives the same graph as DOT text") from None
    text = get_dot_text(caffe_net, rankdir, label_edges, phase, display_lrm)
    return pydot.graph_from_dot_data(text)[0]
