from __future__ import annotations

import threading
import time
from contextvars import ContextVar
from functools import partial

import pytest

from chalicelib.concurrency import run_all


def test_every_call_runs_and_no_more_than_the_workers_at_once() -> None:
    lock = threading.Lock()
    running = peak = 0
    done: list[int] = []

    def call(index: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1
            done.append(index)

    run_all([partial(call, i) for i in range(12)], workers=3)
    assert sorted(done) == list(range(12))
    # Twelve calls of 20 ms on three threads overlap; never more than three do.
    assert peak == 3


def test_an_error_is_raised_only_after_every_call_has_ended() -> None:
    ended: list[int] = []

    def fail() -> None:
        raise RuntimeError("SQS refused 3 messages")

    def slow(index: int) -> None:
        time.sleep(0.05)
        ended.append(index)

    with pytest.raises(RuntimeError, match="SQS refused"):
        run_all([fail, *(partial(slow, i) for i in range(4))], workers=5)
    assert sorted(ended) == [0, 1, 2, 3]


def test_one_worker_runs_the_calls_in_order_on_the_callers_thread() -> None:
    seen: list[tuple[int, str]] = []

    def note(index: int) -> None:
        seen.append((index, threading.current_thread().name))

    run_all([partial(note, i) for i in range(3)], workers=1)
    caller = threading.current_thread().name
    assert seen == [(0, caller), (1, caller), (2, caller)]


def test_calls_see_the_callers_context() -> None:
    broadcast: ContextVar[str] = ContextVar("broadcast", default="none")
    broadcast.set("bc_1")
    seen: list[str] = []
    run_all([lambda: seen.append(broadcast.get()) for _ in range(4)], workers=4)
    assert seen == ["bc_1"] * 4
