"""Scaling of data-parallel training over MPI: iterations/s and communication per iteration.

    .venv/bin/python bench/distributed.py [--ranks 1,2,4] [--models lenet,mlp] [--iters N]
                                          [--json OUT]

For each model and rank count, launches ``mpiexec -n R`` on this script (``--worker``), which
trains with protonet.distributed (each rank batch 64, synthetic DummyData, so per-rank work is
fixed: weak scaling) and reports from rank 0: iterations/s, images/s over all ranks, and the
gradient all-reduce's time per iteration — total (pack + start + blocked wait + unpack) and the
part the ranks sat blocked. With 2 or more ranks it runs twice: all-reduce overlapped with
backward (buckets start as their layers finish) and not overlapped (all buckets after backward).

Threads: each rank gets --threads Numba and BLAS threads (default 1; NUMBA_NUM_THREADS,
OMP_NUM_THREADS, OPENBLAS_NUM_THREADS), so R ranks use R cores (4 ranks oversubscribe 2), and the
workers run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset. The exit status is 0 whenever the
bench ran; nothing is enforced.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BATCH = 64
WARMUP = 3
UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

_DUMMY = """layer {{ name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param {{ shape {{ dim: {batch} {shape} }} shape {{ dim: {batch} }}
    data_filler {{ type: "gaussian" std: 1 }} data_filler {{ type: "constant" value: 1 }} }} }}
"""
_IP = """layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}"
  inner_product_param {{ num_output: {out} weight_filler {{ type: "xavier" }} }} }}
"""
_LOSS = """layer { name: "loss" type: "SoftmaxWithLoss" bottom: "out" bottom: "label" top: "loss" }
"""
_LENET_BODY = """layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 50 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
  inner_product_param { num_output: 500 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
"""


def lenet_net(batch):
    """LeNet (431k params, 1.7 MB of gradients) on 1×28×28 gaussian images."""
    return ('name: "lenet"\n' + _DUMMY.format(batch=batch, shape="dim: 1 dim: 28 dim: 28")
            + _LENET_BODY + _IP.format(name="out", bottom="ip1", out=10) + _LOSS)


def mlp_net(batch):
    """An MLP 1024-2048-2048-10 (6.3M params, 25 MB of gradients): communication-heavy."""
    text = 'name: "mlp"\n' + _DUMMY.format(batch=batch, shape="dim: 1024")
    bottom = "data"
    for i in (1, 2):
        text += _IP.format(name=f"ip{i}", bottom=bottom, out=2048)
        text += f'layer {{ name: "relu{i}" type: "ReLU" bottom: "ip{i}" top: "ip{i}" }}\n'
        bottom = f"ip{i}"
    return text + _IP.format(name="out", bottom=bottom, out=10) + _LOSS


MODELS = {"lenet": lenet_net, "mlp": mlp_net}


# ---- one rank ------------------------------------------------------------------------------------
def worker(args):
    """Run under mpiexec: train ``args.iters`` timed iterations; rank 0 prints one JSON line."""
    sys.path.insert(0, str(REPO))
    from google.protobuf import text_format

    from protonet import distributed
    from protonet.proto import caffe_pb2
    from protonet.solvers.parallel import make_parallel_solver

    world = distributed.init_world(threads=False)
    param = caffe_pb2.SolverParameter()
    text_format.Parse('base_lr: 0.01 momentum: 0.9 lr_policy: "fixed" display: 0 '
                      'max_iter: 1000000 snapshot_after_train: false random_seed: 1', param)
    text_format.Parse(MODELS[args.model](BATCH), param.net_param)
    solver = make_parallel_solver(param, world, overlap=args.overlap,
                                  bucket_bytes=args.bucket_bytes)
    solver.step(WARMUP)
    world.barrier("the warm-up barrier")
    reducer = solver.reducer
    for key in reducer.stats:
        reducer.stats[key] = 0.0 if key != "iterations" else 0
    start = time.perf_counter()
    solver.step(args.iters)
    world.barrier("the timing barrier")
    seconds = time.perf_counter() - start
    sync_ms = _allreduce_in_sync_ms(world, reducer) if world.size > 1 else 0.0
    if world.is_root:
        n = max(reducer.stats["iterations"], 1)
        print(json.dumps({
            "model": args.model, "ranks": world.size, "overlap": args.overlap,
            "iters_per_s": args.iters / seconds,
            "images_per_s": args.iters * BATCH * world.size / seconds,
            "comm_ms": 1000 * reducer.seconds_per_iteration() if world.size > 1 else 0.0,
            "wait_ms": 1000 * reducer.stats["wait"] / n if world.size > 1 else 0.0,
            "sync_ms": sync_ms,
            "buckets": len(reducer.buckets),
        }), flush=True)


def _allreduce_in_sync_ms(world, reducer, repeats=10):
    """The gradient all-reduce alone (pack, reduce, unpack), ranks starting together: the
    transfer cost without the waiting for slower ranks that the training numbers include."""
    best = float("inf")
    for _ in range(repeats):
        world.barrier("the all-reduce timing barrier")
        start = time.perf_counter()
        reducer.start_iteration()
        reducer.finish()
        best = min(best, time.perf_counter() - start)
    return 1000 * best


# ---- the driver ----------------------------------------------------------------------------------
def run_config(mpiexec, model, ranks, overlap, iters, bucket_bytes, threads):
    threads = str(threads or max(1, len(os.sched_getaffinity(0)) // ranks))
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(NUMBA_NUM_THREADS=threads, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads,
               PROTONET_LOG_LEVEL="WARNING", PROTONET_MPI_TIMEOUT="120")
    command = [mpiexec, "-n", str(ranks), sys.executable, str(Path(__file__).resolve()),
               "--worker", "--model", model, "--iters", str(iters),
               "--bucket-bytes", str(bucket_bytes)] + ([] if overlap else ["--no-overlap"])
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def table(rows):
    head = ("| model | ranks | overlap | iter/s | images/s | speed-up (images/s) | comm ms/iter "
            "| blocked ms/iter | all-reduce in sync ms |\n|---|---|---|---|---|---|---|---|---|")
    base = {r["model"]: r["images_per_s"] for r in rows if r["ranks"] == 1}
    lines = [head]
    for r in rows:
        overlap = "—" if r["ranks"] == 1 else ("on" if r["overlap"] else "off")
        lines.append(f"| {r['model']} | {r['ranks']} | {overlap} | {r['iters_per_s']:.2f} | "
                     f"{r['images_per_s']:.0f} | {r['images_per_s'] / base[r['model']]:.2f}× | "
                     f"{r['comm_ms']:.2f} | {r['wait_ms']:.2f} | {r['sync_ms']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="lenet", help=argparse.SUPPRESS)
    parser.add_argument("--no-overlap", dest="overlap", action="store_false",
                        help=argparse.SUPPRESS)
    parser.add_argument("--ranks", default="1,2,4", help="rank counts (default 1,2,4)")
    parser.add_argument("--models", default="lenet,mlp", help="of: " + ", ".join(MODELS))
    parser.add_argument("--iters", type=int, default=30, help="timed iterations per run")
    parser.add_argument("--bucket-bytes", type=int, default=4 << 20)
    parser.add_argument("--threads", type=int, default=1,
                        help="Numba/BLAS threads per rank (default 1, so R ranks use R cores; "
                             "0: cores // ranks)")
    parser.add_argument("--json", metavar="OUT", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    mpiexec = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}:"
                                             f"{os.environ.get('PATH', '')}")
    if mpiexec is None:
        raise SystemExit("no mpiexec: install the MPI extra (pip install -e '.[mpi]')")
    cores = len(os.sched_getaffinity(0))
    print(f"# protonet data-parallel scaling: {cores} cores, batch {BATCH} per rank, "
          f"{args.iters} timed iterations after {WARMUP} warm-up, bucket "
          f"{args.bucket_bytes >> 20} MB; Numba/BLAS threads per rank: "
          f"{args.threads or f'max(1, {cores} // ranks)'}; OPENBLAS_CORETYPE and "
          f"OPENBLAS_L2_SIZE are unset for the workers; load average before: "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for model in args.models.split(","):
        for ranks in (int(r) for r in args.ranks.split(",")):
            for overlap in ((True,) if ranks == 1 else (True, False)):
                row = run_config(mpiexec, model, ranks, overlap, args.iters, args.bucket_bytes,
                                 args.threads)
                rows.append(row)
                print(f"# {model} ×{ranks} overlap {'on' if overlap else 'off'}: "
                      f"{row['iters_per_s']:.2f} iter/s, comm {row['comm_ms']:.2f} ms/iter",
                      flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
