"""The benchmark harness end to end, tiny: it runs, counts deliveries exactly, and reports.

Nothing here looks at timings; only at the structure of the results and at the delivery
counts, which must be exact whatever the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[1]
RECIPIENTS = 30


def _clean_environment() -> dict[str, str]:
    # The harness sets up its own AWS endpoint and stage; conftest.py's would mislead it.
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("FOREWARN_", "AWS_", "PYTHON"))
    }


def test_bench_harness_runs_and_reports(tmp_path: Path) -> None:
    # A separate process, as `make bench` runs it: the fan-out starts a stack of the dev
    # stage and imports `app` for it, which this test session has imported for another.
    out, doc = tmp_path / "results", tmp_path / "PERFORMANCE.md"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            # The data benchmarks need ../shared/data and take long; their modules are tested
            # on their own.
            "--only",
            "fanout",
            "--only",
            "coldstart",
            "--recipients",
            str(RECIPIENTS),
            "--repetitions",
            "2",
            "--out",
            str(out),
            "--doc",
            str(doc),
        ],
        cwd=PROJECT_DIR,
        env=_clean_environment(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    fanout = _load(out / "fanout.json")
    coldstart = _load(out / "coldstart.json")
    for result in (fanout, coldstart):
        assert set(result) >= {"measured", "baseline", "ratio", "goal", "met", "details"}
        assert result["measured"] > 0
        assert result["baseline"] > 0
        assert isinstance(result["met"], bool)

    details = fanout["details"]
    assert details["recipients"] == RECIPIENTS
    for side in ("forewarn", "baseline"):
        run = details[side]
        assert sum(run["by_channel"].values()) == RECIPIENTS
        assert run["sms_recorded_by_server"] == run["by_channel"].get("sms", 0)
        assert run["sms_recorded_by_server"] + run["emails_recorded_by_server"] == RECIPIENTS
        assert run["duplicates"] == 0
        assert run["lost"] == 0
        assert run["server_cpu_by_action"]
    assert details["forewarn"]["by_channel"] == details["baseline"]["by_channel"]

    cold = coldstart["details"]
    assert cold["repetitions"] == 2
    assert len(cold["app"]["samples_ms"]) == len(cold["boto3"]["samples_ms"]) == 2
    assert set(cold["heavy_modules_after_import_app"]) >= {"boto3", "jinja2", "jwt"}

    text = doc.read_text()
    assert "| Benchmark | Measured | Baseline | Ratio | Goal | Met? |" in text
    assert f"Fan-out to {RECIPIENTS:,} customers" in text
    assert "Cold start" in text


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data
