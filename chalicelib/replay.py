"""Recorded posts, for backtests and demos: read from CSV or JSON lines, and served back as a
`PostSource` that a clock reveals bit by bit, so the real scan runs on them unchanged."""

from __future__ import annotations

import bisect
import csv
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from chalicelib.posts import Post, Topic, parse_time
from chalicelib.social_sources import Page

# Optional columns, first match wins: `name` and `tweet_location` are what the
# Twitter US Airline Sentiment data set calls the author's handle and location.
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "author_id": ("author_id",),
    "author_handle": ("author_handle", "name"),
    "author_followers": ("author_followers",),
    "place": ("place", "tweet_location"),
    "lang": ("lang",),
}
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


def read_posts(
    path_or_stream: str | os.PathLike[str] | IO[str],
    *,
    time_col: str = "created_at",
    text_col: str = "text",
    topic_col: str | None = None,
    id_col: str | None = None,
    default_topic: str = "default",
    fmt: str | None = None,
) -> Iterator[Post]:
    """Posts of a CSV file (with a header row) or of JSON lines (one object a line), in file
    order, one row at a time.

    Timestamps need a UTC offset (`2015-02-22 14:14:14 -0800` or ISO 8601). A post's id is
    its `id_col`, else its row number (the first row after the header is 1). A row without a
    time or text raises `ValueError` naming the row. A `.json` file may also be one array.
    """
    kind = fmt or _format_of(path_or_stream)
    if kind not in {"csv", "jsonl"}:
        raise ValueError(f"unknown post file format {kind!r}: use 'csv' or 'jsonl'")
    if isinstance(path_or_stream, str | os.PathLike):
        with open(path_or_stream, encoding="utf-8", newline="") as stream:
            yield from _read(stream, kind, time_col, text_col, topic_col, id_col, default_topic)
    else:
        yield from _read(path_or_stream, kind, time_col, text_col, topic_col, id_col, default_topic)


def _format_of(source: str | os.PathLike[str] | IO[str]) -> str:
    name = source if isinstance(source, str | os.PathLike) else getattr(source, "name", None)
    if not isinstance(name, str | os.PathLike):
        raise ValueError("cannot tell the format of a stream without a name: pass fmt=")
    suffix = Path(name).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot tell the format of {os.fspath(name)!r}: pass fmt=")
    return FORMATS[suffix]


def _read(
    stream: IO[str],
    kind: str,
    time_col: str,
    text_col: str,
    topic_col: str | None,
    id_col: str | None,
    default_topic: str,
) -> Iterator[Post]:
    rows = csv.DictReader(stream) if kind == "csv" else _json_rows(stream)
    for number, row in enumerate(rows, start=1):
        yield _post(row, number, time_col, text_col, topic_col, id_col, default_topic)


def _json_rows(stream: IO[str]) -> Iterator[Mapping[str, Any]]:
    first = _peek(stream)
    if first == "[":
        # An array cannot be read a line at a time; only `.json` files are ever arrays.
        items: Iterable[Any] = json.load(stream)
        for number, item in enumerate(items, start=1):
            yield _as_object(item, number)
        return
    number = 0
    for line in stream:
        if not line.strip():
            continue
        number += 1
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"row {number}: not JSON ({exc})") from None
        yield _as_object(item, number)


def _peek(stream: IO[str]) -> str:
    if stream.seekable():
        start = stream.tell()
        while (char := stream.read(1)) and char.isspace():
            pass
        stream.seek(start)
        return char
    return ""  # unseekable streams are always read as JSON lines


def _as_object(item: Any, number: int) -> Mapping[str, Any]:
    if not isinstance(item, dict):
        raise ValueError(f"row {number}: expected a JSON object, got {type(item).__name__}")
    return item


def _post(
    row: Mapping[str, Any],
    number: int,
    time_col: str,
    text_col: str,
    topic_col: str | None,
    id_col: str | None,
    default_topic: str,
) -> Post:
    time_value = _cell(row, time_col)
    if time_value is None:
        raise ValueError(f"row {number}: no time in column {time_col!r}")
    text = _cell(row, text_col)
    if text is None:
        raise ValueError(f"row {number}: no text in column {text_col!r}")
    try:
        created_at = parse_time(time_value)
    except ValueError as exc:
        raise ValueError(f"row {number}: bad time {time_value!r} ({exc})") from None
    post_id = str(number)
    if id_col is not None:
        given = _cell(row, id_col)
        if given is None:
            raise ValueError(f"row {number}: no id in column {id_col!r}")
        post_id = given
    topic = (_cell(row, topic_col) if topic_col else None) or default_topic
    extra = {name: _first(row, columns) for name, columns in OPTIONAL_COLUMNS.items()}
    followers = extra["author_followers"]
    try:
        author_followers = None if followers is None else int(float(followers))
    except ValueError:
        raise ValueError(f"row {number}: bad author_followers {followers!r}") from None
    return Post(
        id=post_id,
        topic=topic,
        text=text,
        created_at=created_at,
        author_id=extra["author_id"],
        author_handle=extra["author_handle"],
        author_followers=author_followers,
        lang=extra["lang"],
        place=extra["place"],
    )


def _cell(row: Mapping[str, Any], column: str) -> str | None:
    value = row.get(column)
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None


def _first(row: Mapping[str, Any], columns: Sequence[str]) -> str | None:
    for column in columns:
        value = _cell(row, column)
        if value is not None:
            return value.strip()
    return None


class ReplaySource:
    """`PostSource` over recorded posts: a search sees the posts of its topic created by
    `clock()`, as X would have shown them then.

    Ids compare as numbers when both are numeric (X ids and row numbers), else as text;
    `since_id` therefore means "listed after" only for files in time order.
    """

    def __init__(self, posts: Sequence[Post], clock: Callable[[], datetime]) -> None:
        self._clock = clock
        by_topic: dict[str, list[Post]] = {}
        for post in posts:
            by_topic.setdefault(post.topic, []).append(post)
        # Oldest first, so that a search bisects to its newest visible post.
        self._by_topic = {topic: sorted(found, key=_order) for topic, found in by_topic.items()}

    def search(
        self,
        topic: Topic,
        *,
        since_id: str | None,
        next_token: str | None,
        start_time: datetime | None,
        max_results: int = 100,
    ) -> Page:
        if max_results < 1:
            raise ValueError("max_results must be at least 1")
        posts = self._by_topic.get(topic.id, [])
        end = bisect.bisect_right(posts, self._clock(), key=lambda post: post.created_at)
        if next_token is not None:
            end = min(end, bisect.bisect_left(posts, _decode_token(next_token), key=_order))
        since = None if since_id is None else _id_key(since_id)
        found: list[Post] = []
        more = False
        for index in range(end - 1, -1, -1):
            post = posts[index]
            if start_time is not None and post.created_at < start_time:
                break  # all older still
            if since is not None and _id_key(post.id) <= since:
                continue
            if len(found) == max_results:
                more = True
                break
            found.append(post)
        return Page(
            posts=found,
            next_token=_encode_token(_order(found[-1])) if more else None,
            newest_id=found[0].id if found else None,
        )


# Numbers sort before texts, so mixed ids still have one order.
_IdKey = tuple[int, int, str]


def _id_key(post_id: str) -> _IdKey:
    return (0, int(post_id), "") if post_id.isdigit() else (1, 0, post_id)


def _order(post: Post) -> tuple[datetime, _IdKey]:
    return (post.created_at, _id_key(post.id))


def _encode_token(key: tuple[datetime, _IdKey]) -> str:
    moment, (kind, number, text) = key
    return json.dumps([moment.isoformat(), kind, number, text], separators=(",", ":"))


def _decode_token(token: str) -> tuple[datetime, _IdKey]:
    try:
        moment, kind, number, text = json.loads(token)
        return (datetime.fromisoformat(moment), (int(kind), int(number), str(text)))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a next_token of this source: {token!r}") from exc
