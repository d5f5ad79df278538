"""What a benchmark hands back, and its JSON file under ``bench/results``.

Every benchmark measures Forewarn and a baseline in the same run on the same machine and
reports their ratio: absolute times depend on the machine, the ratio much less so.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

RESULTS_DIR = Path(__file__).resolve().parent / "results"

Direction = Literal["at_least", "at_most"]


@dataclass(frozen=True)
class Goal:
    """What a benchmark should reach: ``at_least`` for speeds, ``at_most`` for times.

    Speeds and times are judged on the ratio to the baseline; quality scores (an F1, a NAB
    score) have absolute goals and are judged on the measured value (``on="measured"``).
    """

    direction: Direction
    value: float
    on: Literal["ratio", "measured"] = "ratio"

    def met(self, value: float) -> bool:
        return value >= self.value if self.direction == "at_least" else value <= self.value

    def text(self) -> str:
        sign = "≥" if self.direction == "at_least" else "≤"
        return f"{sign} {self.value:g}" + (" (measured)" if self.on == "measured" else "")


@dataclass(frozen=True)
class BenchResult:
    name: str
    title: str
    unit: str
    measured: float
    baseline: float
    goal: Goal
    # How the numbers were made and anything worth checking later; must be JSON-ready.
    details: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=lambda: machine_info())
    recorded_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds")
    )

    @property
    def ratio(self) -> float:
        return self.measured / self.baseline if self.baseline else float("nan")

    @property
    def met(self) -> bool:
        return self.goal.met(self.measured if self.goal.on == "measured" else self.ratio)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "unit": self.unit,
            "measured": round(self.measured, 4),
            "baseline": round(self.baseline, 4),
            "ratio": round(self.ratio, 3),
            "goal": {
                "direction": self.goal.direction,
                "value": self.goal.value,
                "on": self.goal.on,
            },
            "met": self.met,
            "details": self.details,
            "machine": self.machine,
            "recorded_at": self.recorded_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        goal = data["goal"]
        return cls(
            name=str(data["name"]),
            title=str(data["title"]),
            unit=str(data["unit"]),
            measured=float(data["measured"]),
            baseline=float(data["baseline"]),
            goal=Goal(goal["direction"], float(goal["value"]), goal.get("on", "ratio")),
            details=dict(data.get("details", {})),
            machine=dict(data.get("machine", {})),
            recorded_at=str(data.get("recorded_at", "")),
        )


def machine_info() -> dict[str, Any]:
    """Enough to tell two result files from different machines apart, nothing personal."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "system": f"{platform.system()} {platform.machine()}",
    }


def write(result: BenchResult, out_dir: Path = RESULTS_DIR) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result.name}.json"
    path.write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return path


def load_all(out_dir: Path = RESULTS_DIR) -> list[BenchResult]:
    return [
        BenchResult.from_dict(json.loads(path.read_text()))
        for path in sorted(out_dir.glob("*.json"))
    ]
