"""``python -m bench``: run the benchmarks, write bench/results/<name>.json, regenerate
docs/PERFORMANCE.md from every result file there.

Exits 0 whether or not the goals are met (they are reported, not enforced); exits non-zero
when a benchmark could not measure what it claims, e.g. a fan-out that lost or duplicated
a message.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import report
from bench.result import RESULTS_DIR, BenchResult, load_all, write

BENCHMARKS = (
    "fanout",
    "fault_injection",
    "coldstart",
    "backtest_throughput",
    "sentiment",
    "nab",
    "airline_events",
    "statuspage_replay",
    "scaling",
)


def _runner(name: str, args: argparse.Namespace) -> Callable[[], BenchResult]:
    # Imported here so that `--only coldstart` does not even import the fan-out's needs.
    if name == "fanout":
        from bench import fanout

        return lambda: fanout.run(args.recipients, concurrency=args.concurrency)
    if name == "fault_injection":
        from bench import faults

        return lambda: faults.run(args.recipients, concurrency=args.concurrency)
    if name == "coldstart":
        from bench import coldstart

        return lambda: coldstart.run(args.repetitions)
    if name == "sentiment":
        from bench import sentiment

        return sentiment.run
    if name == "nab":
        from bench import nab

        return nab.run
    if name == "statuspage_replay":
        from bench import statuspage_replay

        return statuspage_replay.run
    if name == "scaling":
        from bench import scaling

        return scaling.run
    from bench import listening

    return listening.run_throughput if name == "backtest_throughput" else listening.run_events


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only", action="append", choices=BENCHMARKS, help="run only this benchmark (repeatable)"
    )
    parser.add_argument("--recipients", type=int, default=10_000, help="fan-out audience size")
    parser.add_argument("--concurrency", type=int, default=4, help="fan-out delivery workers")
    parser.add_argument("--repetitions", type=int, default=15, help="cold-start samples per side")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="result JSON directory")
    parser.add_argument("--doc", type=Path, default=report.DOC_PATH, help="PERFORMANCE.md path")
    parser.add_argument(
        "--report-only", action="store_true", help="only regenerate the doc from --out"
    )
    args = parser.parse_args(argv)
    if args.recipients < 1 or args.repetitions < 1 or args.concurrency < 1:
        parser.error("--recipients, --repetitions and --concurrency must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in () if args.report_only else args.only or BENCHMARKS:
        print(f"bench: running {name} ...", file=sys.stderr, flush=True)
        result = _runner(name, args)()
        path = write(result, args.out)
        verdict = "met" if result.met else "NOT met"
        print(
            f"bench: {name}: ratio {result.ratio:.2f} (goal {result.goal.text()}: {verdict}) "
            f"-> {path}",
            file=sys.stderr,
            flush=True,
        )
    order = {name: index for index, name in enumerate(BENCHMARKS)}
    results = sorted(load_all(args.out), key=lambda r: (order.get(r.name, len(order)), r.name))
    doc = report.write(results, args.doc)
    print(report.table(results))
    print(f"\nbench: wrote {doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
