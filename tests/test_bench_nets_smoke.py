"""`bench/run.py --nets` still runs: LeNet's TEST forward through the net-level bench.

Checks the table and the JSON report have the promised structure and that the PyTorch twin of
LeNet has protonet's blob shapes (when torch is installed). Never asserts timings.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TABLE_COLUMNS = ("net", "phase", "batch", "protonet ms", "torch ms", "ratio", "GFLOP/s",
                 "%SGEMM", "net MB", "peak MB", "mem ×", "1st ms")
ROW_KEYS = ("net", "phase", "batch", "protonet_ms", "torch_ms", "ratio", "images_per_s",
            "gflops", "sgemm_fraction", "net_mb", "protonet_mem_mb", "mem_ratio")
HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def nets_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "nets.json"
    command = [sys.executable, str(REPO / "bench" / "run.py"), "--nets", "--quick",
               "--filter", "lenet", "--phase", "test", "--json", str(out)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout, json.loads(out.read_text())


def test_nets_table_has_columns_and_one_lenet_row(nets_run):
    stdout, _ = nets_run
    assert "SGEMM reference" in stdout and "OPENBLAS_CORETYPE" in stdout
    header = next(line for line in stdout.splitlines() if line.startswith("net "))
    positions = [header.index(column) for column in TABLE_COLUMNS]
    assert positions == sorted(positions)
    rows = [line for line in stdout.splitlines() if line.startswith("lenet ")]
    assert len(rows) == 1 and rows[0].split()[1:3] == ["test", "64"]
    if not HAS_TORCH:
        assert "PyTorch column skipped" in stdout


def test_nets_json_row_has_times_memory_and_flops(nets_run):
    _, report = nets_run
    assert report["mode"] == "quick" and report["sgemm_ref_gflops"] > 0
    (row,) = report["rows"]
    assert all(key in row for key in ROW_KEYS)
    proto = row["protonet"]
    assert proto["median_ms"] > 0 and len(proto["times_ms"]) >= 3
    assert proto["first_ms"] > 0 and proto["flops"] == 2 * 64 * (20 * 24 * 24 * 25 + 50 * 64 * 500
                                                                 + 500 * 800 + 10 * 500)
    # A TEST net allocates no diffs: only data counts, and the peak is measured.
    assert proto["diff_bytes"] == 0 and proto["history_bytes"] == 0
    assert proto["total_bytes"] == proto["data_bytes"] > 0
    assert proto["peak_rss_bytes"] >= proto["baseline_rss_bytes"] > 0


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is an optional extra of the bench")
def test_nets_torch_twin_matches_protonet_shapes(nets_run):
    _, report = nets_run
    (row,) = report["rows"]
    assert row["torch"]["shape_mismatches"] == []
    assert row["torch_ms"] > 0 and row["ratio"] > 0
