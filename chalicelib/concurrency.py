"""Independent calls at once, on threads: for I/O-bound steps that make many AWS calls.

A Lambda at 1769 MB has one vCPU, but a planner step spends its time waiting on DynamoDB
and SQS, not computing: 40 BatchWriteItem and 10 SendMessageBatch calls for a page of
1,000 made one after another took a step about a second, which made planning a million
recipients take 15 minutes (docs/SCALING.md); 8 at a time, 6.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor


def run_all(calls: Sequence[Callable[[], object]], *, workers: int) -> None:
    """Run every call, at most `workers` at a time, and return when all have ended.

    The first error is raised once every call has ended, so a failed step never leaves
    calls running behind it. Each call runs in a copy of the caller's context: log lines
    keep their correlation ids.
    """
    if workers <= 1 or len(calls) <= 1:
        for call in calls:
            call()
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(calls))) as pool:
        futures = [pool.submit(contextvars.copy_context().run, call) for call in calls]
    for future in futures:
        future.result()
