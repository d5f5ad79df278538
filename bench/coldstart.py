"""Cold start: ``import app`` in a fresh interpreter, against ``import boto3`` measured alike.

Each sample is a new Python process, started in the project root with the environment the
dev stage's Lambda functions get, and with no bytecode cache to reuse: a new empty
``PYTHONPYCACHEPREFIX`` per process and ``PYTHONDONTWRITEBYTECODE=1``, so every module
imported is compiled from source, as on a container's first import. The process times
only the import statement itself, so interpreter start-up is left out of both sides.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.result import BenchResult, Goal

NAME = "coldstart"
GOAL = Goal("at_most", 1.2)
REPETITIONS = 15
PROJECT_DIR = Path(__file__).resolve().parents[1]
# Modules worth knowing about when `import app` is slow: the SDK, and the libraries only
# some handlers need (rendering, tokens, phone numbers, email addresses).
HEAVY_MODULES = (
    "boto3",
    "botocore",
    "jinja2",
    "jwt",
    "cryptography",
    "phonenumbers",
    "email_validator",
    "chalice",
)

_PROBE = """
import json, sys, time
before = len(sys.modules)
started = time.perf_counter()
import {module}
seconds = time.perf_counter() - started
heavy = {heavy!r}
print(json.dumps({{
    "seconds": seconds,
    "modules_imported": len(sys.modules) - before,
    "heavy_loaded": [name for name in heavy if name in sys.modules],
}}))
"""


def lambda_environment() -> dict[str, str]:
    """What a dev-stage function sees: the stage's variables and Lambda's own, nothing of ours.

    Built from scratch rather than copied from os.environ: a benchmark run earlier in this
    process (fan-out) points AWS_ENDPOINT_URL and friends at its local server.
    """
    from forewarn_cli.local.stack import stage_environment

    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "LAMBDA_TASK_ROOT": str(PROJECT_DIR),
        "AWS_LAMBDA_FUNCTION_NAME": "forewarn-dev",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    env.update(stage_environment("dev"))
    env["FOREWARN_STAGE"] = "dev"
    return env


def sample(module: str) -> dict[str, Any]:
    """Import `module` once in a new process with an empty bytecode cache."""
    with tempfile.TemporaryDirectory(prefix="forewarn-pycache-") as cache:
        env = {
            **lambda_environment(),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPYCACHEPREFIX": cache,
        }
        completed = subprocess.run(
            [sys.executable, "-c", _PROBE.format(module=module, heavy=HEAVY_MODULES)],
            cwd=PROJECT_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if completed.returncode != 0:
        raise RuntimeError(f"import {module} failed:\n{completed.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return data


def run(repetitions: int = REPETITIONS) -> BenchResult:
    # One untimed import of each first, so that both sides read their files from the page
    # cache rather than whichever goes first paying for the disk.
    sample("app")
    sample("boto3")
    app: list[dict[str, Any]] = []
    boto3: list[dict[str, Any]] = []
    for index in range(repetitions):
        # Interleaved, alternating which goes first, so drift in machine load hits both.
        order = ((app, "app"), (boto3, "boto3"))
        for samples, module in order if index % 2 == 0 else reversed(order):
            samples.append(sample(module))
    app_seconds = [s["seconds"] for s in app]
    boto3_seconds = [s["seconds"] for s in boto3]
    return BenchResult(
        name=NAME,
        title="Cold start: `import app`",
        unit="s (median)",
        measured=statistics.median(app_seconds),
        baseline=statistics.median(boto3_seconds),
        goal=GOAL,
        details={
            "repetitions": repetitions,
            "app": _summary(app),
            "boto3": _summary(boto3),
            "heavy_modules_after_import_app": {
                name: name in app[-1]["heavy_loaded"] for name in HEAVY_MODULES
            },
        },
    )


def _summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = [s["seconds"] for s in samples]
    return {
        "median_s": round(statistics.median(seconds), 4),
        "min_s": round(min(seconds), 4),
        "max_s": round(max(seconds), 4),
        "samples_ms": [round(s * 1000, 1) for s in seconds],
        "modules_imported": samples[-1]["modules_imported"],
    }
