"""`make bench` still runs: bench/run.py --quick on two tiny LeNet layers, in a subprocess.

Checks the table and the JSON report have the promised structure. Never asserts timings: CI
machines are shared and noisy, and the bench reports rather than enforces its targets.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("lenet/ip1", "lenet/relu1")          # one GEMM-bound, one memory-bound layer
TABLE_COLUMNS = ("layer", "type", "bottom → top", "geometry", "fwd ms", "bwd ms", "1st ms",
                 "fwd rate", "bwd rate", "fwd %", "bwd %")
ROW_KEYS = ("name", "model", "layer", "type", "kind", "bottom_shapes", "top_shapes", "fwd_ms",
            "bwd_ms", "first_fwd_ms", "first_bwd_ms", "first_ms", "fwd_work", "bwd_work",
            "fwd_rate", "bwd_rate", "fwd_pct", "bwd_pct", "fwd_ok", "bwd_ok")


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    command = [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--batch", "2",
               "--filter", ",".join(LAYERS), "--json", str(out)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout, json.loads(out.read_text())


def test_bench_quick_prints_roofline_and_one_row_per_layer(bench_run):
    stdout, _ = bench_run
    assert "GFLOP/s" in stdout and "reference (best of the above)" in stdout
    assert "Copy bandwidth" in stdout
    assert "OPENBLAS_CORETYPE" in stdout          # the run says whether the slow kernel is forced
    header = next(line for line in stdout.splitlines() if line.startswith("layer "))
    positions = [header.index(column) for column in TABLE_COLUMNS]
    assert positions == sorted(positions)
    rows = [line for line in stdout.splitlines() if line.startswith(LAYERS)]
    assert [row.split()[0] for row in rows] == list(LAYERS)
    assert "GF/s" in rows[0] and "GB/s" in rows[1]
    assert all(("✓" in row or "✗" in row) for row in rows)


def test_bench_quick_json_has_machine_numbers_and_layer_rows(bench_run):
    _, report = bench_run
    assert report["mode"] == "quick" and report["batch_override"] == 2
    machine = report["machine"]
    assert machine["sgemm_ref_gflops"] == max(r["gflops"] for r in machine["sgemm"])
    for value in (machine["sgemm_ref_gflops"], machine["copy_gbps"]):
        assert math.isfinite(value) and value > 0
    assert set(machine["openblas_env"]) == {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"}
    rows = report["layers"]
    assert [row["name"] for row in rows] == list(LAYERS)
    for row in rows:
        assert set(ROW_KEYS) <= set(row)
        assert row["bottom_shapes"][0][0] == 2
    ip, relu = rows
    assert (ip["type"], ip["kind"], ip["rate_unit"]) == ("InnerProduct", "gemm", "GFLOP/s")
    assert (relu["type"], relu["kind"], relu["rate_unit"]) == ("ReLU", "memory", "GB/s")
    # LeNet ip1 at batch 2: M=2, K=800, N=500; backward is data + weight gradients.
    assert ip["fwd_work"] == 2 * 2 * 500 * 800 and ip["bwd_work"] == 2 * ip["fwd_work"]
    # ReLU over 2x500 float32: forward reads x and writes y, backward reads y, dy, writes dx.
    assert relu["fwd_work"] == 2 * 1000 * 4 and relu["bwd_work"] == 3 * 1000 * 4
    assert ip["top_shapes"] == [[2, 500]] and relu["top_shapes"] == [[2, 500]]
