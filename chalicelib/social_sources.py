"""Where posts come from, as the listening flow sees it: a search that pages back in time.

X (`chalicelib.x`) and recorded posts (`chalicelib.replay`) both implement `PostSource`, so
the scan, the backtests and the demos run the same code on either. Nothing here imports a
third-party package: the scan's cold start pays only for the source it uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from chalicelib.posts import Post, Topic


@dataclass(frozen=True)
class Page:
    """One page of a search, newest post first.

    `newest_id` is the newest id of this page, as X's `meta.newest_id`: a caller that polls
    with `since_id` keeps the one from the first page of a search, which is the newest of all.
    """

    posts: list[Post]
    next_token: str | None  # more (older) results of the same search; None on the last page
    newest_id: str | None  # None when the search found nothing


class RateLimited(Exception):
    """The source refuses calls until `resume_at`; calling earlier only burns quota."""

    def __init__(self, resume_at: datetime, message: str | None = None) -> None:
        self.resume_at = resume_at.astimezone(UTC)
        super().__init__(message or f"rate limited until {self.resume_at.isoformat()}")


class SourceError(Exception):
    """Any other failure of a source. The message is safe to log: it never holds a secret."""


class PostSource(Protocol):
    def search(
        self,
        topic: Topic,
        *,
        since_id: str | None,
        next_token: str | None,
        start_time: datetime | None,
        max_results: int = 100,
    ) -> Page:
        """Posts matching `topic.query`, newer than `since_id` (or, without it, created at or
        after `start_time`), newest first; `next_token` continues an earlier page of the same
        search. Raises `RateLimited` or `SourceError`."""
        ...
