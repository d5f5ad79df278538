"""Recorded posts: reading CSV and JSON lines, and serving them as a search would."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chalicelib.posts import Post, Topic
from chalicelib.replay import ReplaySource, read_posts

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TOPIC = Topic("acme", "@acme")

AIRLINE_CSV = """\
tweet_id,airline_sentiment,airline,name,text,tweet_created,tweet_location
570306133677760513,neutral,Virgin America,cairdin,@VirginAmerica What @dhepburn said.,\
2015-02-24 11:35:52 -0800,
570301130888122368,negative,United,jnardino,"@united flight delayed, again",\
2015-02-24 11:15:59 -0500,"Lower East Side, NY"
"""


def test_a_csv_with_utc_offsets_reads_as_utc(tmp_path: Path) -> None:
    path = tmp_path / "tweets.csv"
    path.write_text(AIRLINE_CSV)

    posts = list(read_posts(path, time_col="tweet_created", topic_col="airline", id_col="tweet_id"))

    assert [p.id for p in posts] == ["570306133677760513", "570301130888122368"]
    assert posts[0].created_at == datetime(2015, 2, 24, 19, 35, 52, tzinfo=UTC)
    assert posts[1].created_at == datetime(2015, 2, 24, 16, 15, 59, tzinfo=UTC)
    assert [p.topic for p in posts] == ["Virgin America", "United"]
    assert posts[1].text == "@united flight delayed, again"
    assert posts[0].author_handle == "cairdin"
    assert posts[0].place is None
    assert posts[1].place == "Lower East Side, NY"


def test_without_an_id_column_ids_are_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "tweets.csv"
    path.write_text(AIRLINE_CSV)
    posts = list(read_posts(path, time_col="tweet_created", default_topic="airlines"))
    assert [p.id for p in posts] == ["1", "2"]
    assert {p.topic for p in posts} == {"airlines"}


def test_json_lines_use_the_same_columns(tmp_path: Path) -> None:
    rows = [
        {
            "id": 17,
            "created_at": "2026-03-02T09:00:00Z",
            "text": "is @acme down?",
            "author_handle": "ana",
            "author_followers": 52000,
            "place": "Dallas, TX",
            "lang": "en",
        },
        {"id": 18, "created_at": "2026-03-02T10:00:00+01:00", "text": "all good"},
    ]
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")

    posts = list(read_posts(path, id_col="id", default_topic="acme"))

    assert posts[0] == Post(
        id="17",
        topic="acme",
        text="is @acme down?",
        created_at=START,
        author_handle="ana",
        author_followers=52000,
        place="Dallas, TX",
        lang="en",
    )
    assert posts[1].created_at == START
    assert posts[1].author_followers is None


def test_a_json_array_and_a_stream_with_a_format(tmp_path: Path) -> None:
    path = tmp_path / "posts.json"
    path.write_text(json.dumps([{"created_at": "2026-03-02T09:00:00Z", "text": "hi"}]))
    assert [p.id for p in read_posts(path)] == ["1"]

    stream = io.StringIO('{"created_at": "2026-03-02T09:00:00Z", "text": "hi"}\n')
    assert [p.text for p in read_posts(stream, fmt="jsonl")] == ["hi"]
    with pytest.raises(ValueError, match="pass fmt="):
        list(read_posts(io.StringIO("")))


def test_reading_is_lazy(tmp_path: Path) -> None:
    path = tmp_path / "posts.csv"
    path.write_text("created_at,text\n2026-03-02T09:00:00Z,first\nnot a time,second\n")
    posts = read_posts(path)
    assert next(posts).text == "first"  # the bad row further down is not read yet
    with pytest.raises(ValueError, match="row 2"):
        next(posts)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("created_at,text\n2026-03-02T09:00:00Z,ok\n,no time\n", "row 2: no time"),
        ("created_at,text\n2026-03-02T09:00:00Z,ok\n2026-03-02T09:00:00Z,\n", "row 2: no text"),
        ("created_at,text\n2026-03-02 09:00:00,no offset\n", "row 1: bad time"),
        ("created_at,text,author_followers\n2026-03-02T09:00:00Z,x,many\n", "row 1: bad author"),
        ("text\nhello\n", "row 1: no time in column 'created_at'"),
    ],
)
def test_bad_rows_name_their_row(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "posts.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        list(read_posts(path))


def test_bad_json_lines_name_their_row() -> None:
    stream = io.StringIO('{"created_at": "2026-03-02T09:00:00Z", "text": "ok"}\n[1]\n')
    with pytest.raises(ValueError, match="row 2: expected a JSON object"):
        list(read_posts(stream, fmt="jsonl"))
    with pytest.raises(ValueError, match="row 1: not JSON"):
        list(read_posts(io.StringIO("{oops\n"), fmt="jsonl"))


# --------------------------------------------------------------------------- the source


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def chatter(count: int, *, topic: str = "acme") -> list[Post]:
    return [
        Post(
            id=str(100 + i), topic=topic, text=f"post {i}", created_at=START + timedelta(minutes=i)
        )
        for i in range(count)
    ]


def search(
    source: ReplaySource,
    *,
    since_id: str | None = None,
    next_token: str | None = None,
    start_time: datetime | None = None,
    max_results: int = 100,
) -> list[str]:
    page = source.search(
        TOPIC,
        since_id=since_id,
        next_token=next_token,
        start_time=start_time,
        max_results=max_results,
    )
    return [p.id for p in page.posts]


def test_the_clock_reveals_posts_newest_first() -> None:
    clock = Clock(START + timedelta(minutes=2))
    source = ReplaySource([*chatter(10), *chatter(3, topic="other")], clock)
    assert search(source) == ["102", "101", "100"]
    clock.now = START + timedelta(minutes=4, seconds=30)
    assert search(source) == ["104", "103", "102", "101", "100"]


def test_pages_follow_next_token_and_since_id_bounds_them() -> None:
    clock = Clock(START + timedelta(hours=1))
    source = ReplaySource(chatter(25), clock)

    first = source.search(TOPIC, since_id=None, next_token=None, start_time=None, max_results=10)
    assert first.newest_id == "124"
    pages = [first]
    while pages[-1].next_token:
        pages.append(
            source.search(
                TOPIC,
                since_id=None,
                next_token=pages[-1].next_token,
                start_time=None,
                max_results=10,
            )
        )
    assert [len(p.posts) for p in pages] == [10, 10, 5]
    assert [post.id for page in pages for post in page.posts] == [
        str(i) for i in range(124, 99, -1)
    ]
    assert pages[-1].next_token is None

    assert search(source, since_id="119", max_results=3) == ["124", "123", "122"]
    assert search(source, since_id="124") == []
    # Numeric ids compare as numbers: "99" is older than "100".
    assert len(search(source, since_id="99")) == 25


def test_a_page_token_stays_valid_while_new_posts_arrive() -> None:
    clock = Clock(START + timedelta(minutes=9, seconds=30))
    source = ReplaySource(chatter(20), clock)
    first = source.search(TOPIC, since_id=None, next_token=None, start_time=None, max_results=4)
    clock.now = START + timedelta(hours=1)  # ten more posts appear
    assert search(source, next_token=first.next_token, max_results=4) == [
        "105",
        "104",
        "103",
        "102",
    ]


def test_start_time_bounds_a_first_sweep() -> None:
    source = ReplaySource(chatter(10), Clock(START + timedelta(hours=1)))
    assert search(source, start_time=START + timedelta(minutes=7)) == ["109", "108", "107"]


def test_an_unknown_token_is_refused() -> None:
    source = ReplaySource(chatter(3), Clock(START + timedelta(hours=1)))
    with pytest.raises(ValueError, match="next_token"):
        search(source, next_token="garbage")
