"""Net-level benchmark: whole training iterations and TEST forwards, protonet beside PyTorch.

    .venv/bin/python bench/run.py --nets [--quick] [--json OUT] [--filter lenet,cifar]
    .venv/bin/python bench/nets.py [same options]

Nets (the deploy definitions under models/, at the issue's batch sizes): LeNet 64, CIFAR-10
quick 100, CaffeNet 16 (227×227), GoogLeNet 16, VGG-16 8, ResNet-50 16.

- **Training iteration**: the deploy net with its final Softmax replaced by a SoftmaxWithLoss
  over an Input label, BatchNorm computing batch statistics (``use_global_stats`` cleared),
  run by protonet's SGDSolver: ``solver.step(1)`` = clear param diffs, forward, backward, SGD
  with momentum 0.9 and weight decay 5e-4, ``w -= step``.
  PyTorch: ``zero_grad``, forward, ``CrossEntropyLoss``, backward, ``optim.SGD`` (momentum
  0.9, weight_decay 5e-4).
- **TEST forward**: the deploy net (phase TEST) forward; PyTorch ``eval()`` under
  ``torch.inference_mode()``.

Every (framework, net, phase) runs in its own subprocess (a "worker"), so Numba's and PyTorch's
OpenMP thread pools never share a process and the peak memory is that net's alone. A worker
first builds the net at batch 1 and runs it once (Numba compile or cache load; printed as
"1st ms"), records the RSS as baseline, builds the net at the bench batch, runs warm-up
iterations, resets the RSS high-water mark and times the repeats (median reported). Both
frameworks use every core: Numba and OpenBLAS threads for protonet, ``torch.set_num_threads``
for PyTorch. Weights are He-normal (the deploy files have no fillers), inputs standard normal,
labels uniform over the classes; the same seed for both frameworks.

GFLOP/s counts Convolution and InnerProduct multiply-adds ×2 (forward 2·top count·K; backward
adds the weight gradient and, where the bottom needs it, the data gradient), as bench/layers.py.
"""

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(REPO))

import memory

SEED = 1
SOLVER = {"base_lr": 1e-6, "momentum": 0.9, "weight_decay": 5e-4}


@dataclass(frozen=True)
class NetCase:
    key: str
    path: str           # deploy prototxt under the repo
    batch: int
    quick: bool = False


NETS = (
    NetCase("lenet", "models/lenet/lenet.prototxt", 64, quick=True),
    NetCase("cifar10_quick", "models/cifar10_quick/cifar10_quick.prototxt", 100, quick=True),
    NetCase("caffenet", "models/bvlc_reference_caffenet/deploy.prototxt", 16),
    NetCase("googlenet", "models/bvlc_googlenet/deploy.prototxt", 16),
    NetCase("vgg16", "models/vgg16/deploy.prototxt", 8),
    NetCase("resnet50", "models/resnet50/deploy.prototxt", 16),
)
FULL_REPEATS = {"warmup": 2, "min_runs": 5, "max_runs": 30, "min_seconds": 3.0}
QUICK_REPEATS = {"warmup": 1, "min_runs": 3, "max_runs": 10, "min_seconds": 0.3}


# ---- the nets, as NetParameters ---------------------------------------------------------------

def _deploy(case, batch):
    """The deploy NetParameter with the Input batch set to ``batch``; also its input shapes."""
    from protonet.io.prototxt import read_net

    param = read_net(str(REPO / case.path))
    shapes = {}
    for layer in param.layer:
        if layer.type == "Input":
            for top, shape in zip(layer.top, layer.input_param.shape):
                shape.dim[0] = batch
                shapes[top] = tuple(int(d) for d in shape.dim)
    return param, shapes


def test_param(case, batch):
    return _deploy(case, batch)


def train_param(case, batch):
    """Deploy net → TRAIN net: final Softmax → SoftmaxWithLoss(logits, label); BN batch stats."""
    from protonet.proto import caffe_pb2

    param, shapes = _deploy(case, batch)
    last = param.layer[-1]
    if last.type != "Softmax":
        raise ValueError(f"{case.path}: expected a final Softmax layer, found {last.type}")
    logits = last.bottom[0]
    del param.layer[-1]
    label = caffe_pb2.LayerParameter(name="label", type="Input", top=["label"])
    label.input_param.shape.add().dim.append(batch)
    param.layer.insert(1, label)
    param.layer.add(name="loss", type="SoftmaxWithLoss", bottom=[logits, "label"], top=["loss"])
    for layer in param.layer:
        if layer.type == "BatchNorm":
            layer.batch_norm_param.ClearField("use_global_stats")
    shapes["label"] = (batch,)
    return param, shapes


def _classes(param):
    for layer in reversed(param.layer):
        if layer.type == "InnerProduct":
            return int(layer.inner_product_param.num_output)
    raise ValueError("no InnerProduct layer: cannot tell the number of classes")


def gemm_flops(net, train):
    """Conv/IP FLOPs of one forward (TEST) or one forward + backward (TRAIN)."""
    total = 0
    for record in net.records:
        layer_type = record.param.type
        if layer_type not in ("Convolution", "InnerProduct"):
            continue
        weights = record.layer.blobs[0]
        per_top = 2 * weights.count // int(record.layer.num_output)
        for top in record.tops:
            fwd = per_top * top.count
            total += fwd
            if train and record.need_backward:
                total += fwd                                    # weight gradient
                if any(record.bottom_need_backward):
                    total += fwd                                # data gradient
    return total


# ---- timing -----------------------------------------------------------------------------------

def time_repeats(step, repeats):
    for _ in range(repeats["warmup"]):
        step()
    times = []
    started = time.perf_counter()
    while len(times) < repeats["max_runs"] and (
            len(times) < repeats["min_runs"]
            or time.perf_counter() - started < repeats["min_seconds"]):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def _he_init(net, rng):
    """He-normal fill for all-zero weight blobs (deploy files carry no fillers)."""
    import numpy as np

    for blob in net.learnable_params:
        if blob.data.ndim >= 2 and not np.any(blob.data):
            fan_in = blob.data[0].size
            blob.data[...] = rng.standard_normal(blob.shape, dtype=np.float32) * np.float32(
                (2.0 / fan_in) ** 0.5)


def _feed_protonet(net, shapes, classes, rng):
    import numpy as np

    for name, shape in shapes.items():
        if name == "label":
            net.blobs[name].data[...] = rng.integers(0, classes, shape).astype(np.float32)
        else:
            net.blobs[name].data[...] = rng.standard_normal(shape, dtype=np.float32)


def _protonet_build(case, phase, batch):
    """(step function, net, solver history) for protonet at ``batch``."""
    import numpy as np

    from protonet.net import TEST, Net
    from protonet.proto import caffe_pb2
    from protonet.solvers.solver import SGDSolver

    rng = np.random.default_rng(SEED)
    if phase == "train":
        param, shapes = train_param(case, batch)
        sp = caffe_pb2.SolverParameter(lr_policy="fixed", max_iter=10 ** 9, display=0,
                                       snapshot=0, type="SGD", random_seed=SEED, **SOLVER)
        sp.net_param.CopyFrom(param)
        solver = SGDSolver(sp)
        net = solver.net
        _he_init(net, rng)
        _feed_protonet(net, shapes, _classes(param), rng)
        return (lambda: solver.step(1)), net, solver.history, solver
    param, shapes = test_param(case, batch)
    net = Net(param, phase=TEST)
    _he_init(net, rng)
    _feed_protonet(net, shapes, _classes(param), rng)
    return (lambda: net.forward_from_to()), net, (), net


def _torch_build(case, phase, batch, threads):
    import torch
    import torch_nets

    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    param, shapes = (train_param if phase == "train" else test_param)(case, batch)
    model = torch_nets.TorchNet(param, {k: v for k, v in shapes.items() if k != "label"} |
                                ({"label": shapes["label"]} if "label" in shapes else {}),
                                train=phase == "train")
    torch_nets.init_like_caffe_bench(model, SEED)
    gen = torch.Generator().manual_seed(SEED)
    inputs = {}
    for name, shape in shapes.items():
        if name == "label":
            inputs[name] = torch.randint(0, _classes(param), shape, generator=gen)
        else:
            inputs[name] = torch.randn(shape, generator=gen)
    if phase == "train":
        opt = torch.optim.SGD(model.parameters(), lr=SOLVER["base_lr"],
                              momentum=SOLVER["momentum"], weight_decay=SOLVER["weight_decay"])

        def step():
            opt.zero_grad(set_to_none=False)
            model(inputs)[model.loss_blob].backward()
            opt.step()
        return step, model, param, shapes

    def infer():
        with torch.inference_mode():
            model(inputs)
    return infer, model, param, shapes


def check_torch_shapes(case, phase):
    """Blob names whose PyTorch shape differs from protonet's, at batch 2 (empty when equal)."""
    import torch
    import torch_nets

    from protonet.net import TEST, TRAIN, Net

    param, shapes = (train_param if phase == "train" else test_param)(case, 2)
    net = Net(param, phase=TRAIN if phase == "train" else TEST)
    model = torch_nets.TorchNet(param, shapes, train=False)
    inputs = {k: (torch.zeros(v, dtype=torch.long) if k == "label" else torch.zeros(v))
              for k, v in shapes.items()}
    with torch.inference_mode():
        blobs = model(inputs)
    return [f"{name}: protonet {tuple(net.blobs[name].shape)} torch {tuple(t.shape)}"
            for name, t in blobs.items()
            if name in net.blobs and tuple(net.blobs[name].shape) != tuple(t.shape)]


def run_worker(framework, case, phase, repeats, threads):
    """Everything one subprocess measures; returns a JSON-able dict."""
    t0 = time.perf_counter()
    if framework == "protonet":
        from protonet.log import set_level
        set_level("ERROR")
        build = lambda batch: _protonet_build(case, phase, batch)
    else:
        import torch  # noqa: F401
        build = lambda batch: _torch_build(case, phase, batch, threads)
    import_ms = (time.perf_counter() - t0) * 1e3
    t1 = time.perf_counter()
    step, *_ = build(1)
    t2 = time.perf_counter()
    step()
    first_ms = (time.perf_counter() - t2) * 1e3
    build1_ms = (t2 - t1) * 1e3
    del step, _
    gc.collect()
    baseline = memory.rss_bytes()
    step, obj, extra, _holder = build(case.batch)
    step()
    exact_peak = memory.reset_peak()
    times = time_repeats(step, repeats)
    peak = memory.peak_bytes()
    result = {"framework": framework, "net": case.key, "phase": phase, "batch": case.batch,
              "import_ms": import_ms, "build1_ms": build1_ms, "first_ms": first_ms,
              "times_ms": [t * 1e3 for t in times],
              "median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3,
              "baseline_rss_bytes": baseline, "peak_rss_bytes": peak,
              "peak_is_timed_window": exact_peak, "maxrss_bytes": memory.maxrss_bytes()}
    if framework == "protonet":
        result.update(memory.net_bytes(obj, extra))
        result["flops"] = gemm_flops(obj, phase == "train")
        result.update(_layer_breakdown(obj, len(times)))
    else:
        result["shape_mismatches"] = check_torch_shapes(case, phase)
    return result


def _layer_breakdown(net, iterations):
    """The per-layer loop of ``protonet time`` on the same net, for the "layers ms" column.

    An iteration's median minus this sum is what is not a layer: clearing param diffs and the
    solver's update (training), Python between layers.
    """
    from protonet.commands import time_layers

    timings = time_layers(net, iterations)
    return {"layers_ms": timings["forward"] + timings["backward"],
            "layer_times_ms": timings["layers"]}


# ---- the parent: one worker per (net, phase, framework), then the table ----------------------

def _torch_available():
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def _spawn(framework, case, phase, quick, threads):
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", framework,
               "--net", case.key, "--phase", phase, "--threads", str(threads)]
    if quick:
        command.append("--quick")
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        return {"framework": framework, "net": case.key, "phase": phase,
                "error": " | ".join(tail) or f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ratio(a, b):
    return a / b if a and b else None


def _fmt(value, spec, missing="—"):
    return missing if value is None else format(value, spec)


def combine(case, phase, proto, torch_result, sgemm_gflops):
    row = {"net": case.key, "phase": phase, "batch": case.batch, "protonet": proto,
           "torch": torch_result}
    p_ms = proto.get("median_ms")
    t_ms = torch_result.get("median_ms") if torch_result else None
    row["protonet_ms"], row["torch_ms"] = p_ms, t_ms
    row["ratio"] = _ratio(p_ms, t_ms)
    row["images_per_s"] = case.batch / p_ms * 1e3 if p_ms else None
    row["torch_images_per_s"] = case.batch / t_ms * 1e3 if t_ms else None
    flops = proto.get("flops")
    row["gflops"] = flops / p_ms / 1e6 if p_ms and flops else None
    row["torch_gflops"] = flops / t_ms / 1e6 if t_ms and flops else None
    row["sgemm_fraction"] = _ratio(row["gflops"], sgemm_gflops)
    net_total = proto.get("total_bytes")
    if p_ms:
        row["protonet_mem_mb"] = (proto["peak_rss_bytes"] - proto["baseline_rss_bytes"]) / 2**20
        row["mem_ratio"] = _ratio(row["protonet_mem_mb"] * 2**20, net_total)
    if t_ms:
        row["torch_mem_mb"] = (torch_result["peak_rss_bytes"]
                               - torch_result["baseline_rss_bytes"]) / 2**20
    row["net_mb"] = net_total / 2**20 if net_total else None
    return row


COLUMNS = (("net", "<", 14), ("phase", "<", 5), ("batch", ">", 5), ("protonet ms", ">", 11),
           ("layers ms", ">", 9), ("torch ms", ">", 9), ("ratio", ">", 6), ("target", ">", 6),
           ("img/s", ">", 7),
           ("GFLOP/s", ">", 7), ("%SGEMM", ">", 6), ("net MB", ">", 7), ("peak MB", ">", 8),
           ("mem ×", ">", 5), ("torch MB", ">", 8), ("1st ms", ">", 7))
TARGETS = {("train", "lenet"): 1.0, ("train", "cifar10_quick"): 1.0, ("train", None): 1.3,
           ("test", None): 1.0}


def target(phase, net):
    return TARGETS.get((phase, net), TARGETS[(phase, None)])


def _line(cells):
    return " ".join(f"{c:{a}{w}}" for c, (_, a, w) in zip(cells, COLUMNS)).rstrip()


def row_cells(row):
    goal = target(row["phase"], row["net"])
    ratio = row.get("ratio")
    mark = "" if ratio is None else (" ✓" if ratio <= goal else " ✗")
    return (row["net"], row["phase"], str(row["batch"]), _fmt(row.get("protonet_ms"), ".1f"),
            _fmt(row["protonet"].get("layers_ms"), ".1f"), _fmt(row.get("torch_ms"), ".1f"), _fmt(ratio, ".2f"), f"{goal:.1f}{mark}",
            _fmt(row.get("images_per_s"), ".0f"), _fmt(row.get("gflops"), ".1f"),
            _fmt(None if row.get("sgemm_fraction") is None else 100 * row["sgemm_fraction"],
                 ".0f"),
            _fmt(row.get("net_mb"), ".0f"), _fmt(row.get("protonet_mem_mb"), ".0f"),
            _fmt(row.get("mem_ratio"), ".2f"), _fmt(row.get("torch_mem_mb"), ".0f"),
            _fmt(row["protonet"].get("first_ms"), ".0f"))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="LeNet and CIFAR-10 quick only, fewer repeats")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    parser.add_argument("--filter", default="", metavar="NET[,NET…]",
                        help="only nets whose key contains one of these substrings")
    parser.add_argument("--phase", choices=("train", "test", "both"), default="both")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch column")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for PyTorch (protonet uses Numba's and OpenBLAS's "
                             "defaults: every core)")
    parser.add_argument("--worker", choices=("protonet", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--net", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def select(args):
    filters = [f for f in args.filter.split(",") if f]
    return [c for c in NETS if (c.quick or not args.quick)
            and (not filters or any(f in c.key for f in filters))]


def main(argv=None):
    args = parse_args(argv)
    repeats = QUICK_REPEATS if args.quick else FULL_REPEATS
    if args.worker:
        case = next(c for c in NETS if c.key == args.net)
        phase = "train" if args.phase == "both" else args.phase
        print(json.dumps(run_worker(args.worker, case, phase, repeats, args.threads)))
        return 0
    import sgemm

    start = time.perf_counter()
    cases = select(args)
    if not cases:
        print(f"no net matches --filter {args.filter!r}", file=sys.stderr)
        return 2
    machine = sgemm.measure_machine(quick=True)
    sgemm_ref = machine["sgemm_ref_gflops"]
    with_torch = not args.no_torch and _torch_available()
    load = os.getloadavg()[0]
    print(f"protonet net bench, {'quick' if args.quick else 'full'} run, "
          f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} on {platform.node()} "
          f"({os.cpu_count()} CPUs), 1-minute load {load:.1f} before the run")
    env = {k: v for k, v in sgemm.openblas_environment().items() if v is not None}
    print("WARNING: " + ", ".join(f"{k}={v}" for k, v in env.items()) + " set: OpenBLAS may "
          "run at half speed" if env else "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset "
          "in this run")
    print(f"SGEMM reference (best numpy float32 matmul of bench/sgemm.py's quick shapes): "
          f"{sgemm_ref:.1f} GFLOP/s")
    if not with_torch:
        print("PyTorch column skipped: " + ("--no-torch" if args.no_torch else
              "torch is not installed (optional extra: pip install torch==2.13.0)"))
    else:
        import importlib.metadata
        print(f"PyTorch {importlib.metadata.version('torch')}, {args.threads} threads; each "
              f"(framework, net, phase) runs in its own process")
    print("Times: median of the repeats after warm-up; '1st ms' is protonet's first iteration "
          "at batch 1 (Numba compile or cache load); 'layers ms' is the sum of the per-layer "
          "forward + backward means of protonet time's loop on the same net (the rest of an "
          "iteration is the solver update and clearing diffs); 'peak MB' is the RSS high-water mark "
          "during the timed runs minus the RSS after warm-up at batch 1; 'net MB' is blob "
          "data + diff + params + solver history; 'mem ×' = peak MB / net MB")
    print()
    for line in (_line([c for c, _, _ in COLUMNS]), "-" * len(_line([c for c, _, _ in COLUMNS]))):
        print(line, flush=True)
    phases = ("train", "test") if args.phase == "both" else (args.phase,)
    rows = []
    for case in cases:
        for phase in phases:
            proto = _spawn("protonet", case, phase, args.quick, args.threads)
            torch_result = _spawn("torch", case, phase, args.quick, args.threads) \
                if with_torch else None
            row = combine(case, phase, proto, torch_result, sgemm_ref)
            rows.append(row)
            if "error" in proto:
                print(f"{case.key:<14} {phase:<5} protonet failed: {proto['error']}", flush=True)
                continue
            print(_line(row_cells(row)), flush=True)
            if torch_result and "error" in torch_result:
                print(f"    torch failed: {torch_result['error']}")
            elif torch_result and torch_result["shape_mismatches"]:
                print(f"    WARNING shape mismatch: {torch_result['shape_mismatches'][:3]}")
    total = time.perf_counter() - start
    print()
    met = [r for r in rows if r.get("ratio") is not None and r["ratio"] <= target(r["phase"],
                                                                                   r["net"])]
    print(f"{len(met)} of {len(rows)} rows meet the time target; whole run {total:.0f} s; "
          f"load average now {os.getloadavg()[0]:.1f}")
    if args.json:
        report = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                  "mode": "quick" if args.quick else "full", "host": platform.node(),
                  "cpus": os.cpu_count(), "load_before": load, "machine": machine,
                  "sgemm_ref_gflops": sgemm_ref, "torch": with_torch, "repeats": repeats,
                  "solver": SOLVER, "rows": rows, "total_seconds": total}
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
