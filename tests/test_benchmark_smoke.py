"""The benchmark still runs: ``benchmarks/run.py --quick --db sqlite`` into a temporary folder.

It asserts the shape of what the benchmark writes and that SIPp registered someone,
never a speed: speed is what the benchmark prints, not what a test may time
(benchmarks/README.md).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp is not installed (apt-get install sip-tester)"),
]


def test_the_quick_benchmark_writes_its_results(tmp_path):
    env = dict(os.environ)
    # The benchmark makes its own databases; none of the suite's must leak into it.
    for name in ("DATABASE_URL", "TEST_DATABASE_NAME", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    completed = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--db", "sqlite", "--out", str(tmp_path)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]

    report = json.loads((tmp_path / "results.json").read_text())
    assert {"machine", "databases", "args", "total_s"} <= report.keys()
    assert {"nproc", "cpu_model", "ram_mib", "python", "sqlite"} <= report["machine"].keys()
    (sqlite,) = report["databases"]
    assert sqlite["database"] == "sqlite"
    assert "error" not in sqlite
    assert {"setup", "ramp", "highest_clean_rate", "memory", "avalanche"} <= sqlite.keys()
    assert len(sqlite["ramp"]) >= 1
    for step in sqlite["ramp"]:
        assert {"rate", "completed", "failed", "unfinished", "retransmissions", "server_cpu_pct", "db_cpu_pct",
                "latency", "clean"} <= step.keys()
        assert {"p50_ms", "p99_ms", "flows", "failures"} <= step["latency"].keys()
    assert sqlite["ramp"][0]["completed"] > 0
    assert sqlite["ramp"][0]["latency"]["flows"] > 0
    assert sqlite["memory"]["users_loaded"]["rss_mib"] > 0
    assert sqlite["avalanche"]["completed"] > 0

    markdown = (tmp_path / "results.md").read_text()
    assert "## sqlite" in markdown and "Highest clean rate" in markdown
