"""benchmarks/distributed.py --json: the rows the docs read instead of typed figures (real gloo processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "distributed.py"


@pytest.mark.slow
@pytest.mark.skipif(not BENCH.exists(), reason="benchmarks/distributed.py is not in this checkout")
def test_json_rows_match_the_printed_table(tmp_path):
    out = tmp_path / "distributed.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(BENCH), "--shapes", "4x3x2x2", "--repeats", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["nproc"] == 2 and data["repeats"] == 1 and data["stat"] == "median" and data["backend"] == "gloo"
    assert data["date"] and data["cpus"] == os.cpu_count() and len(data["loadavg"]) == 3
    rows = data["rows"]
    assert [r["layout"] for r in rows] == ["NCHW", "CL"] and all(r["shape"] == [4, 3, 2, 2] for r in rows)
    table = [line.split() for line in done.stdout.splitlines() if line.startswith(("NCHW ", "CL "))]
    assert len(table) == 2
    for r, printed in zip(rows, table, strict=True):
        assert r["local_ms"] > 0 and r["sync_ms"] > 0 and len(r["faults_per_call"]) == 2
        assert r["ratio"] == pytest.approx(r["sync_ms"] / r["local_ms"])
        # the printed milliseconds and ratios are the JSON's, rounded (columns after the layout, the 4-part shape
        # and MB/rank: local ms, sync ms, ratio, cpu ratio, the two fault counts, torch ms, sync/torch)
        local_ms, sync_ms, ratio, cpu_ratio = (float(v) for v in printed[6:10])
        assert (local_ms, sync_ms) == (round(r["local_ms"], 2), round(r["sync_ms"], 2))
        assert (ratio, cpu_ratio) == (round(r["ratio"], 2), round(r["cpu_ratio"], 2))
        # the anchor a CPU user has: torch's per-process BN on the same shard, in the same turns
        torch_ms, ratio_torch = (float(v) for v in printed[12:14])
        assert r["torch_ms"] > 0 and r["ratio_torch"] == pytest.approx(r["sync_ms"] / r["torch_ms"])
        assert (torch_ms, ratio_torch) == (round(r["torch_ms"], 2), round(r["ratio_torch"], 2))
        assert len(printed) == 14
