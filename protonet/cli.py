"""The ``protonet`` command: a table of small commands over the library, as Caffe's tool.

Flags keep Caffe's names and accept both ``-solver`` and ``--solver``. ``main`` catches only
ProtonetError: it prints the message on one line to stderr and returns 1.
"""

import argparse
import sys

from .errors import ProtonetError

VERSION = "0.1.0"


def _flag(parser, name, **kwargs):
    """An option reachable as --name and -name (Caffe's gflags accept both)."""
    parser.add_argument(f"--{name}", f"-{name}", **kwargs)


def _net_args(parser, phase_default="TEST"):
    _flag(parser, "phase", default=phase_default, choices=["TRAIN", "TEST"])
    _flag(parser, "level", type=int, default=0)
    _flag(parser, "stage", default="", help="comma-separated NetState stages")
    parser.add_argument("--lenient", action="store_true",
                        help="drop fields BVLC Caffe does not know (from Caffe forks), warning "
                             "once per field")


def _check_nan_flag(parser):
    _flag(parser, "check_nan", action="store_true",
          help="check every layer's outputs and gradients for NaN/Inf and stop at the first "
               "layer that produces one (default: check only the loss)")


def _no_python_layers_flag(parser):
    _flag(parser, "no-python-layers", dest="python_layers", action="store_false",
          help='refuse nets with type: "Python" layers (they import and run the module they '
               "name, as in Caffe); weights files never run code")


def _python_layer_policy(args):
    from .layers.python import allow_python_layers

    allow_python_layers(getattr(args, "python_layers", True))


def _stages(text):
    return tuple(s for s in text.split(",") if s)


# ---- commands -----------------------------------------------------------------------------
def cmd_info(args):
    from .info import format_summary
    from .net import Net

    _python_layer_policy(args)
    net = Net(args.model, phase=args.phase, level=args.level, stages=_stages(args.stage),
              lenient=args.lenient)
    print(f"net '{net.name}' ({args.phase})")
    print(format_summary(net))
    return 0


def cmd_layers(args):
    from .layers import layer_type_list

    print("\n".join(layer_type_list()))
    return 0


def cmd_upgrade_net(args):
    from .io.prototxt import upgrade_net_file

    upgrade_net_file(args.input, args.output, binary=args.binary, lenient=args.lenient)
    return 0


def cmd_upgrade_solver(args):
    from .io.prototxt import upgrade_solver_file

    upgrade_solver_file(args.input, args.output, lenient=args.lenient)
    return 0


def cmd_train(args):
    from . import commands, distributed

    _python_layer_policy(args)
    train, extra = commands.train, {"progress": args.progress,
                                    "snapshot_failure": args.snapshot_failure}
    if args.distributed or distributed.launched_size() > 1:
        train, extra = distributed.train, {"timeout": args.mpi_timeout}
    train(args.solver, weights=args.weights, snapshot=args.snapshot,
          iterations=args.iterations, sigint_effect=args.sigint_effect,
          sighup_effect=args.sighup_effect, sigterm_effect=args.sigterm_effect,
          level=args.level, stages=_stages(args.stage), check_nan=args.check_nan, **extra)
    return 0


def cmd_test(args):
    from . import commands

    _python_layer_policy(args)
    commands.test_model(args.model, args.weights, iterations=args.iterations, phase=args.phase,
                        level=args.level, stages=_stages(args.stage), check_nan=args.check_nan)
    return 0


def cmd_time(args):
    from . import commands

    _python_layer_policy(args)
    commands.time_model(args.model, iterations=args.iterations, phase=args.phase,
                        level=args.level, stages=_stages(args.stage), check_nan=args.check_nan)
    return 0


def cmd_parse_log(args):
    from . import commands

    commands.write_log_csv(args.log, args.output_dir)
    return 0


def cmd_plot_log(args):
    from . import commands

    commands.plot_log(args.log, args.output)
    return 0


def _parser_info(p):
    p.add_argument("model")
    _net_args(p)
    _no_python_layers_flag(p)


def _parser_upgrade_net(p):
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--binary", action="store_true", help="write a binary NetParameter")
    p.add_argument("--lenient", action="store_true", help="drop fields from Caffe forks")


def _parser_upgrade_solver(p):
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--lenient", action="store_true", help="drop fields from Caffe forks")


def _parser_train(p):
    _flag(p, "solver", required=True)
    _flag(p, "weights", default=None, help="comma-separated .caffemodel files to start from")
    _flag(p, "snapshot", default=None, help=".solverstate to resume from")
    _flag(p, "iterations", type=int, default=None, help="override max_iter")
    _flag(p, "sigint_effect", default="stop", choices=["snapshot", "stop", "none"])
    _flag(p, "sighup_effect", default="snapshot", choices=["snapshot", "stop", "none"])
    _flag(p, "sigterm_effect", default="stop", choices=["snapshot", "stop", "none"])
    _flag(p, "level", type=int, default=0)
    _flag(p, "stage", default="")
    _check_nan_flag(p)
    _no_python_layers_flag(p)
    _flag(p, "snapshot_failure", default="stop", choices=["stop", "keep"],
          help="when a snapshot cannot be written (full disk, read-only directory): stop with "
               "an error (default; the previous snapshot is intact) or log it and keep training")
    _flag(p, "progress", nargs="?", const="on", default="auto", choices=["auto", "on", "off"],
          help="a progress line (iteration, iter/s, ETA) on a terminal; auto (default): only "
               "when stderr is a terminal; never when stderr is redirected")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel training over MPI, one rank per process: run under "
                        "mpiexec/mpirun (implied when an MPI launcher starts more than one "
                        "rank); see docs/distributed.md")
    _flag(p, "mpi_timeout", type=float, default=None,
          help="with --distributed: seconds a rank waits for the others before aborting the "
               "job (default: $PROTONET_MPI_TIMEOUT or 600)")


def _parser_test(p):
    _flag(p, "model", required=True)
    _flag(p, "weights", required=True)
    _flag(p, "iterations", type=int, default=50)
    _net_args(p)
    _check_nan_flag(p)
    _no_python_layers_flag(p)


def _parser_time(p):
    _flag(p, "model", required=True)
    _flag(p, "iterations", type=int, default=50)
    _net_args(p, phase_default="TRAIN")
    _check_nan_flag(p)
    _no_python_layers_flag(p)


def _parser_parse_log(p):
    p.add_argument("log")
    p.add_argument("output_dir", nargs="?", default=".")


def _parser_plot_log(p):
    p.add_argument("log")
    p.add_argument("output")


def cmd_bench(args):
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "run.py"
    if not script.is_file():
        raise ProtonetError("protonet bench runs from a source checkout (bench/run.py is not "
                            "installed with the package); run `make bench` there")
    saved = sys.argv
    sys.argv = [str(script)] + list(args.bench_args)
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        sys.argv = saved
    return 0


def _parser_bench(p):
    p.add_argument("bench_args", nargs=argparse.REMAINDER,
                   help="arguments for bench/run.py (--quick, --nets, --json OUT, --filter ...)")


# name → (help, argument builder, command)
COMMANDS = {
    "train": ("train or fine-tune a model from a solver file", _parser_train, cmd_train),
    "test": ("score a model over --iterations batches", _parser_test, cmd_test),
    "time": ("time forward and backward, per layer", _parser_time, cmd_time),
    "info": ("per-layer table: shapes, params, activation memory", _parser_info, cmd_info),
    "layers": ("list the layer types protonet knows", lambda p: None, cmd_layers),
    "upgrade-net": ("upgrade a V0/V1 net file to the current format", _parser_upgrade_net,
                    cmd_upgrade_net),
    "upgrade-solver": ("upgrade an old solver file", _parser_upgrade_solver,
                       cmd_upgrade_solver),
    "bench": ("per-layer or whole-net benchmark (bench/run.py; see bench/README.md)",
              _parser_bench, cmd_bench),
    "parse-log": ("training log → CSV of train and test rows", _parser_parse_log,
                  cmd_parse_log),
    "plot-log": ("training log → PNG of loss and accuracy curves", _parser_plot_log,
                 cmd_plot_log),
}


def cmd_data(args):
    from .data.mnist import prepare_mnist

    prepare_mnist(from_dir=args.from_dir, out_dir=args.out, overwrite=args.force)
    return 0


def _parser_data(p):
    p.add_argument("dataset", choices=["mnist"], help="the data set to prepare")
    p.add_argument("--from", dest="from_dir", default=None,
                   help="a folder with the full MNIST idx files (plain or .gz); default: the "
                        "5,000 real digits bundled at set-up time")
    p.add_argument("--out", default="data/mnist")
    p.add_argument("--force", action="store_true", help="rebuild existing databases")


TOOL_HELP = {
    "convert_imageset": "image list → LMDB of Datum records (Caffe's convert_imageset)",
    "compute_image_mean": "LMDB → mean.binaryproto (Caffe's compute_image_mean)",
    "convert_mnist": "MNIST idx files → LMDB (Caffe's convert_mnist_data)",
    "convert_cifar": "CIFAR-10 binary batches → LMDB (Caffe's convert_cifar_data)",
    "extract_features": "a net's blobs for each input → LMDB of Datums or HDF5 (Caffe's "
                        "extract_features)",
}


def _register_extra_commands():
    """Commands that live beside their library code: data tools, drawing, pictures."""
    from .data import tools as data_tools

    COMMANDS.setdefault("data", ("prepare a bundled data set (LMDB)", _parser_data, cmd_data))
    for name, (add_arguments, run) in data_tools.TOOLS.items():
        COMMANDS.setdefault(name, (TOOL_HELP.get(name, name), add_arguments, run))
    try:
        from . import cli_tools
    except ImportError:  # drawing and pictures need only Pillow; absent in minimal installs
        return
    for name, entry in cli_tools.CLI_COMMANDS.items():
        COMMANDS.setdefault(name, entry)


def build_parser():
    _register_extra_commands()
    parser = argparse.ArgumentParser(
        prog="protonet", description="Train and run Caffe models, unchanged, on the CPU.")
    parser.add_argument("--version", action="version", version=f"protonet {VERSION}")
    parser.add_argument("--log-level", default=None,
                        help="DEBUG, INFO (default), WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, build, _) in COMMANDS.items():
        build(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 1
    if args.log_level:
        from .log import set_level

        set_level(args.log_level)
    try:
        return COMMANDS[args.command][2](args) or 0
    except ProtonetError as err:
        print(f"protonet: error: {err}", file=sys.stderr)
        return 1
    except MemoryError:
        # Blob shapes are checked against the machine's memory before allocating; this is
        # what is left (a layer's scratch buffer, a ulimit): still one line, not a traceback.
        print("protonet: error: out of memory; lower batch_size or the input size, or check "
              "the net's shapes (protonet info MODEL)", file=sys.stderr)
        return 1
