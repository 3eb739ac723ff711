"""`make bench`: protonet's layers at the classic models' shapes against this machine's roofline.

    .venv/bin/python bench/run.py [--quick] [--json OUT] [--filter SUBSTR[,SUBSTR…]] [--batch N]
                                  [--stat median|min] [--cold-cache]

Measures SGEMM GFLOP/s and copy bandwidth first (bench/sgemm.py), then every layer of
bench/layers.py: first call ("1st ms", includes Numba compile or cache load), then the median
(or, with --stat min, the fastest) of repeated forward and backward calls. Prints one table and,
with --json, writes the same numbers to a file. Targets are printed, never enforced: the exit
status is 0 whenever the bench ran. See bench/README.md for what each column means.

``--nets`` runs the net-level benchmark instead (bench/nets.py: whole training iterations and
TEST forwards beside PyTorch); every other argument is passed on to it, e.g.
``bench/run.py --nets --quick --json nets.json``.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

# Targets: fraction of the SGEMM reference (gemm kind) or of copy bandwidth (memory kind).
TARGETS = {"gemm": (0.60, 0.50), "memory": (0.50, 0.50)}
FULL_REPEATS = (3, 25, 0.5)           # min runs, max runs, seconds of timed calls per direction
QUICK_REPEATS = (2, 10, 0.1)
MAKE_COMMAND = "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python bench/run.py"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a small subset of layers and SGEMM shapes (well under a minute)")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    parser.add_argument("--filter", metavar="SUBSTR", default="",
                        help="only layers whose model/layer name contains SUBSTR (several: "
                             "comma-separated, any matches; a leading ^ anchors at the start), "
                             "e.g. 'resnet50/res2,^lenet/'")
    parser.add_argument("--batch", type=int, metavar="N",
                        help="batch size for every model (default: each model's classic batch)")
    parser.add_argument("--stat", choices=("median", "min"), default="median",
                        help="which repeat the table reports (default median; min is steadier "
                             "on a machine other processes share)")
    parser.add_argument("--cold-cache", action="store_true",
                        help="compile every Numba kernel afresh (empty NUMBA_CACHE_DIR) so that "
                             "'1st ms' shows cold compile time")
    args = parser.parse_args(argv)
    if args.batch is not None and args.batch <= 0:
        parser.error(f"--batch must be positive, got {args.batch}")
    return args


# ---- formatting ----------------------------------------------------------------------------

def _shape(shape):
    return "x".join(str(d) for d in shape)


def _mark(ok):
    return "✓" if ok else "✗"


def describe_environment(machine, args):
    """The header lines: versions, BLAS, the OPENBLAS_* state, the roofline."""
    import numba
    import numpy as np

    lines = []
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    mode = "quick" if args.quick else "full"
    lines.append(f"protonet bench, {mode} run, {now} on {platform.node()} "
                 f"({os.cpu_count()} CPUs, {_cpu_name()})")
    lines.append(f"Python {platform.python_version()}, numpy {np.__version__}, numba "
                 f"{numba.__version__} ({machine['numba_threads']} threads, threading layer "
                 f"{machine['numba_threading_layer']})")
    for pool in machine["blas"]:
        if "note" in pool:
            lines.append(f"BLAS: {pool['note']}")
        else:
            lines.append(f"{pool.get('user_api', '?').upper()}: {pool.get('internal_api')} "
                         f"{pool.get('version')}, kernel {pool.get('architecture')}, "
                         f"{pool.get('num_threads')} threads ({pool.get('prefix')})")
    load, cpus = machine["load_average_before"], os.cpu_count()
    if load > 0.5 * cpus:
        lines.append(f"WARNING: 1-minute load average {load:.1f} on {cpus} CPUs before the run: "
                     f"other processes share the CPUs, so times are pessimistic and noisy")
    else:
        lines.append(f"1-minute load average {load:.1f} on {cpus} CPUs before the run")
    env = machine["openblas_env"]
    set_vars = {k: v for k, v in env.items() if v is not None}
    if set_vars:
        shown = ", ".join(f"{k}={v}" for k, v in set_vars.items())
        lines.append(f"WARNING: {shown} set in this run: OpenBLAS may pick a slower GEMM kernel "
                     f"(about half speed here); `make bench` runs `{MAKE_COMMAND}`")
    else:
        lines.append("OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset in this run (make bench "
                     "unsets them with env -u; tests and CI keep them)")
    lines.append("SGEMM, numpy float32 matmul C(MxN) = A(MxK)·B(KxN), best of several runs:")
    for row in machine["sgemm"]:
        lines.append(f"  {row['label']:<50} {row['gflops']:8.1f} GFLOP/s")
    lines.append(f"  {'reference (best of the above)':<50} "
                 f"{machine['sgemm_ref_gflops']:8.1f} GFLOP/s")
    lines.append(f"Copy bandwidth (read+write, {machine['copy_array_mb']:.0f} MB float32 array): "
                 f"numpy copyto {machine['copy_gbps']:.1f} GB/s (reference); Numba "
                 f"{machine['numba_threads']}-thread copy {machine['numba_copy_gbps']:.1f} GB/s "
                 f"(information)")
    fg, bg = TARGETS["gemm"]
    fm, bm = TARGETS["memory"]
    lines.append(f"Targets: Convolution/InnerProduct forward ≥ {fg:.0%} and backward ≥ "
                 f"{bg:.0%} of SGEMM; memory-bound forward ≥ {fm:.0%} and backward ≥ {bm:.0%} "
                 f"of copy")
    lines.append(f"Times: {args.stat} of the repeats after the first call; '1st ms' is the first "
                 "forward + first backward (Numba compile or cache load included); backward "
                 "computes every bottom and param gradient; 'noise' is how far the median "
                 "sits above the fastest run (worse of fwd/bwd)")
    return lines


def _cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


COLUMNS = (("layer", "<", 30), ("type", "<", 12), ("bottom → top", "<", 34),
           ("geometry", "<", 13), ("fwd ms", ">", 9), ("bwd ms", ">", 9), ("1st ms", ">", 8),
           ("fwd rate", ">", 12), ("bwd rate", ">", 12), ("fwd %", ">", 7), ("bwd %", ">", 7),
           ("noise", ">", 6))


def _row_cells(row):
    unit = "GF/s" if row["kind"] == "gemm" else "GB/s"
    shape = f"{_shape(row['bottom_shapes'][0])} → {_shape(row['top_shapes'][0])}"
    return (row["name"], row["type"], shape, row["geometry"], f"{row['fwd_ms']:.2f}",
            f"{row['bwd_ms']:.2f}", f"{row['first_ms']:.0f}", f"{row['fwd_rate']:.1f} {unit}",
            f"{row['bwd_rate']:.1f} {unit}", f"{row['fwd_pct']:.0f}% {_mark(row['fwd_ok'])}",
            f"{row['bwd_pct']:.0f}% {_mark(row['bwd_ok'])}", f"{row['noise_pct']:.0f}%")


def _format_line(cells):
    parts = [f"{cell:{align}{width}}" for cell, (_, align, width) in zip(cells, COLUMNS)]
    return " ".join(parts).rstrip()


def header_lines():
    header = _format_line([name for name, _, _ in COLUMNS])
    return [header, "-" * len(header)]


def summary_lines(rows, total_seconds):
    met = sum(1 for r in rows if r["fwd_ok"] and r["bwd_ok"])
    first = sum(r["first_ms"] for r in rows) / 1e3
    lines = [f"{met} of {len(rows)} layers meet both targets; first calls took {first:.1f} s in "
             f"all; whole run {total_seconds:.0f} s; load average now {os.getloadavg()[0]:.1f}"]
    worst = sorted(rows, key=lambda r: min(r["fwd_pct"] / r["fwd_target_pct"],
                                           r["bwd_pct"] / r["bwd_target_pct"]))
    misses = [r for r in worst if not (r["fwd_ok"] and r["bwd_ok"])][:8]
    if misses:
        lines.append("Furthest from target (achieved / target):")
        for r in misses:
            lines.append(f"  {r['name']:<30} fwd {r['fwd_pct']:.0f}/{r['fwd_target_pct']:.0f}%  "
                         f"bwd {r['bwd_pct']:.0f}/{r['bwd_target_pct']:.0f}%")
    return lines


# ---- running -------------------------------------------------------------------------------

def result_row(case, timing, machine, stat):
    """One table/JSON row from a case and its timing, with rates, percentages and targets."""
    pick = statistics.median if stat == "median" else min
    fwd = pick(timing.fwd)
    bwd = pick(timing.bwd)
    # Work is FLOPs (gemm) or bytes (memory); both rates are per 1e9 to match the references.
    reference = machine["sgemm_ref_gflops"] if case.kind == "gemm" else machine["copy_gbps"]
    fwd_rate = timing.fwd_work / fwd / 1e9
    bwd_rate = timing.bwd_work / bwd / 1e9
    fwd_target, bwd_target = TARGETS[case.kind]
    return {
        "name": case.name, "model": case.model, "layer": case.param.name, "type": case.type,
        "kind": case.kind, "source": case.source,
        "bottom_shapes": [list(s) for s in case.bottom_shapes],
        "top_shapes": [list(s) for s in timing.top_shapes], "geometry": timing.geometry,
        "stat": stat, "fwd_ms": fwd * 1e3, "bwd_ms": bwd * 1e3,
        "fwd_median_ms": statistics.median(timing.fwd) * 1e3,
        "bwd_median_ms": statistics.median(timing.bwd) * 1e3,
        "fwd_min_ms": min(timing.fwd) * 1e3, "bwd_min_ms": min(timing.bwd) * 1e3,
        # How far the median sits above the fastest run: large when the CPUs are shared.
        "noise_pct": 100 * max(1 - min(timing.fwd) / statistics.median(timing.fwd),
                               1 - min(timing.bwd) / statistics.median(timing.bwd)),
        "fwd_runs_ms": [t * 1e3 for t in timing.fwd], "bwd_runs_ms": [t * 1e3 for t in timing.bwd],
        "first_fwd_ms": timing.first_fwd * 1e3, "first_bwd_ms": timing.first_bwd * 1e3,
        "first_ms": (timing.first_fwd + timing.first_bwd) * 1e3,
        "work_unit": "flop" if case.kind == "gemm" else "byte",
        "fwd_work": timing.fwd_work, "bwd_work": timing.bwd_work,
        "rate_unit": "GFLOP/s" if case.kind == "gemm" else "GB/s",
        "fwd_rate": fwd_rate, "bwd_rate": bwd_rate,
        "fwd_pct": 100 * fwd_rate / reference, "bwd_pct": 100 * bwd_rate / reference,
        "fwd_target_pct": 100 * fwd_target, "bwd_target_pct": 100 * bwd_target,
        "fwd_ok": fwd_rate >= fwd_target * reference, "bwd_ok": bwd_rate >= bwd_target * reference,
    }


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--nets" in argv:
        import nets

        argv.remove("--nets")
        return nets.main(argv)
    args = parse_args(argv)
    if args.cold_cache:
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="protonet-bench-numba-")
    start = time.perf_counter()

    import sgemm
    import layers
    from protonet.log import set_level

    set_level("ERROR")             # model reading notes (legacy input fields) are not news here
    filters = [f for f in args.filter.split(",") if f]
    cases = layers.select_cases(args.quick, filters, args.batch)
    if not cases:
        print(f"no layer matches --filter {args.filter!r}"
              f"{' in the --quick subset' if args.quick else ''}", file=sys.stderr)
        return 2
    machine = sgemm.measure_machine(args.quick)
    for line in describe_environment(machine, args):
        print(line)
    print()
    reps = layers.Repeats(*(QUICK_REPEATS if args.quick else FULL_REPEATS))
    for line in header_lines():
        print(line, flush=True)
    rows = []
    model = None
    for case in cases:
        row = result_row(case, layers.run_case(case, reps), machine, args.stat)
        if model is not None and row["model"] != model:
            print()
        model = row["model"]
        print(_format_line(_row_cells(row)), flush=True)
        rows.append(row)
    total = time.perf_counter() - start
    print()
    for line in summary_lines(rows, total):
        print(line)
    if args.json:
        report = {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "mode": "quick" if args.quick else "full",
            "batch_override": args.batch,
            "filter": filters,
            "cold_cache": args.cold_cache,
            "stat": args.stat,
            "host": platform.node(),
            "cpu": _cpu_name(),
            "cpus": os.cpu_count(),
            "machine": machine,
            "targets": {kind: {"fwd": f, "bwd": b} for kind, (f, b) in TARGETS.items()},
            "layers": rows,
            "total_seconds": total,
        }
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
