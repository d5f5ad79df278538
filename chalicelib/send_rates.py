"""Send rates: how many messages each channel may send per second, over every worker at once.

SNS (SMS) and SES throttle the whole account, and many delivery Lambdas send concurrently,
so no worker can keep the count alone: it lives in the `send-rates` table. Each channel has a
fixed one-second window, one item keyed `<channel>#<epoch second>` whose `taken` a worker
raises with a conditional ADD that holds only while the window has room for all it asks.
When it has not, the worker reads what is left and asks for that once, so a batch gets part
of what it wanted rather than nothing. A window is never written again once its second has
passed; TTL removes it.

The limits come from `SEND_RATE_SMS` and `SEND_RATE_EMAIL` per stage (`config.SendRateLimits`);
0 means unlimited and costs no DynamoDB call at all.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from chalicelib.config import Names, SendRateLimits, settings
from chalicelib.domain import Channel
from chalicelib.store import Tables, to_dynamo

# Windows are read only during their own second; TTL may delete them any time after this.
WINDOW_TTL_SECONDS = 3600


def window_key(channel: Channel, second: int) -> str:
    return f"{channel.value}#{second}"


def seconds_to_next_window(now: float) -> float:
    """How long until the next window opens (0 < result <= 1): the wait before asking again
    after a grant smaller than wanted."""
    return math.floor(now) + 1 - now


class SendRates(Tables):
    def __init__(
        self, names: Names, dynamodb: Any | None = None, *, limits: SendRateLimits | None = None
    ) -> None:
        super().__init__(names, dynamodb)
        self.limits = limits if limits is not None else settings().send_rates

    def take(self, channel: Channel, wanted: int, *, now: float) -> int:
        """Take up to `wanted` sends from `channel`'s window at `now`; how many were granted
        (0..wanted). The caller sends that many and leaves the rest for a later window."""
        limit = self.limits.of(channel)
        if wanted <= 0:
            return 0
        if limit <= 0:
            return wanted
        second = math.floor(now)
        key = window_key(channel, second)
        asked = min(wanted, limit)
        if self._add(key, asked, limit=limit, second=second):
            return asked
        # Too little room for all of it: ask for what is left, once. A worker that takes
        # the rest first makes this fail too; then nothing is granted in this window.
        item = self._get(self.names.send_rates, {"window_key": key}, consistent=True) or {}
        left = min(asked, limit - int(item.get("taken", 0)))
        if left > 0 and self._add(key, left, limit=limit, second=second):
            return left
        return 0

    def _add(self, key: str, count: int, *, limit: int, second: int) -> bool:
        """Raise the window's `taken` by `count` if it stays within `limit`."""
        return self._write_if(
            "update_item",
            TableName=self.names.send_rates,
            Key=to_dynamo({"window_key": key}),
            UpdateExpression="ADD taken :k SET expires_at = :exp",
            ConditionExpression="attribute_not_exists(taken) OR taken <= :room",
            ExpressionAttributeValues=to_dynamo(
                {":k": count, ":room": limit - count, ":exp": second + WINDOW_TTL_SECONDS}
            ),
        )


MAX_CHUNK = 5


class Pacer:
    """One batch's sends, paced by the shared windows. Tokens are taken a few at a time (a
    quarter of the limit at most, so concurrent workers share a window), and are good only
    in the second they were taken for: a token carried into the next second would let two
    windows' worth of sends land in one. A channel with no token after `max_wait` seconds
    stays closed for the rest of the batch: its jobs go back to the queue rather than hold
    the Lambda until it times out."""

    def __init__(
        self,
        rates: SendRates,
        planned: Mapping[Channel, int],
        *,
        max_wait: float = 3.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rates = rates
        self.wanted = Counter(planned)
        self.held: dict[Channel, tuple[int, int]] = {}  # channel → (second, tokens left)
        self.closed: set[Channel] = set()
        self.max_wait = max_wait
        self.clock = clock
        self.sleep = sleep

    def acquire(self, channel: Channel, cost: int = 1) -> bool:
        """True when a message of `cost` tokens (SMS: its billable parts, which is what SNS
        meters) may go out on `channel` now."""
        limit = self.rates.limits.of(channel)
        if limit <= 0:
            return True
        if channel in self.closed or cost > limit:
            return False
        deadline = self.clock() + self.max_wait
        while True:
            now = self.clock()
            second, left = self.held.get(channel, (-1, 0))
            if second != math.floor(now):
                second, left = math.floor(now), 0
            if left >= cost:
                break
            # A worker sends a dozen or so a second: a bigger chunk would mostly expire
            # unused at the end of the second while other workers wait for it.
            chunk = max(cost - left, min(self.wanted[channel], limit // 4, MAX_CHUNK))
            granted = self.rates.take(channel, chunk, now=now)
            self.held[channel] = (second, left + granted)
            if granted:
                continue
            wait = seconds_to_next_window(now)
            if now + wait > deadline:
                self.closed.add(channel)
                return False
            self.sleep(wait)
        self.held[channel] = (second, left - cost)
        self.wanted[channel] -= 1
        return True
