"""CLI commands for pictures of nets: ``draw``, ``show-filters``, ``show-activations``.

``CLI_COMMANDS`` maps each command name to ``(help, build_parser, command)``, the shape of
``protonet.cli.COMMANDS``, which merges it. Each command only parses and calls the library
(:mod:`protonet.draw`, :mod:`protonet.visualize`).

    protonet draw MODEL OUT.(dot|png|svg|pdf) [--rankdir LR] [--phase TRAIN|TEST|ALL]
    protonet show-filters MODEL WEIGHTS LAYER OUT.png
    protonet show-activations MODEL WEIGHTS IMAGE LAYER OUT.png
"""

from .errors import ProtonetError
from .log import get_logger

log = get_logger(__name__)


def _float_list(text):
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ProtonetError(f"expected comma-separated numbers, got {text!r}") from None


def _load_mean(text):
    """A mean: comma-separated per-channel values, a .binaryproto image, or a .npy array."""
    import numpy as np

    if text is None:
        return None
    if text.endswith(".binaryproto"):
        from .io.blobproto import read_blobproto

        mean = read_blobproto(text)
        return mean.reshape(mean.shape[-3:]) if mean.ndim == 4 else mean
    if text.endswith(".npy"):
        try:
            return np.load(text)
        except (OSError, ValueError) as err:
            raise ProtonetError(f"cannot read mean ({err})", file=text) from None
    return np.array(_float_list(text), dtype=np.float32)


# ---- draw ------------------------------------------------------------------------------------
def _parser_draw(p):
    p.add_argument("model", help="net prototxt")
    p.add_argument("output", help="output file: .dot (no Graphviz needed), .png, .svg, .pdf")
    p.add_argument("--rankdir", "-rankdir", default="LR", choices=["LR", "RL", "TB", "BT"],
                   help="direction of the layout (default LR: left to right)")
    p.add_argument("--phase", "-phase", default="ALL", choices=["TRAIN", "TEST", "ALL"],
                   help="draw only the layers of this phase (default ALL)")
    p.add_argument("--display-lrm", "--display_lrm", action="store_true",
                   help="show the learning rate multipliers of learning layers")


def cmd_draw(args):
    from .draw import draw_net_to_file
    from .io.prototxt import read_net
    from .proto import caffe_pb2

    net_param = read_net(args.model)
    phase = None if args.phase == "ALL" else caffe_pb2.Phase.Value(args.phase)
    draw_net_to_file(net_param, args.output, args.rankdir, phase, args.display_lrm)
    log.info("Drawing net to %s", args.output)
    return 0


# ---- show-filters ----------------------------------------------------------------------------
def _parser_show_filters(p):
    p.add_argument("model", help="net prototxt (a deploy net)")
    p.add_argument("weights", help=".caffemodel or .caffemodel.h5")
    p.add_argument("layer", help="name of a layer with weights, e.g. conv1")
    p.add_argument("output", help="output .png")
    p.add_argument("--scale", type=int, default=None, help="magnify each tile this many times")


def cmd_show_filters(args):
    from .visualize import show_filters

    image = show_filters(args.model, args.weights, args.layer, args.output, scale=args.scale)
    log.info("Wrote %s (%dx%d)", args.output, image.width, image.height)
    return 0


# ---- show-activations ------------------------------------------------------------------------
def _parser_show_activations(p):
    p.add_argument("model", help="net prototxt (a deploy net with an Input layer)")
    p.add_argument("weights", help=".caffemodel or .caffemodel.h5")
    p.add_argument("image", help="image file (JPEG, PNG, ...)")
    p.add_argument("layer", help="layer (its first top) or blob to draw")
    p.add_argument("output", help="output .png")
    p.add_argument("--raw-scale", type=float, default=255.0,
                   help="multiply [0,1] pixels by this (default 255, as Caffe's ImageNet nets)")
    p.add_argument("--channel-swap", default="2,1,0",
                   help="channel order, default 2,1,0 (RGB → BGR); 'none' keeps RGB")
    p.add_argument("--mean", default=None,
                   help="mean to subtract: per-channel values '104,117,123', a .binaryproto "
                        "or a .npy")
    p.add_argument("--scale", type=int, default=None, help="magnify each tile this many times")


def cmd_show_activations(args):
    from .visualize import show_activations

    swap = None if args.channel_swap.lower() == "none" else \
        tuple(int(v) for v in _float_list(args.channel_swap))
    image = show_activations(args.model, args.weights, args.image, args.layer, args.output,
                             raw_scale=args.raw_scale, channel_swap=swap,
                             mean=_load_mean(args.mean), scale=args.scale)
    log.info("Wrote %s (%dx%d)", args.output, image.width, image.height)
    return 0


# name → (help, argument builder, command), merged into protonet.cli.COMMANDS
CLI_COMMANDS = {
    "draw": ("draw a net as a graph (.dot text, or .png/.svg/.pdf with Graphviz)", _parser_draw,
             cmd_draw),
    "show-filters": ("draw a layer's learned filters as a PNG grid", _parser_show_filters,
                     cmd_show_filters),
    "show-activations": ("draw a layer's activation maps for one image as a PNG grid",
                         _parser_show_activations, cmd_show_activations),
}
