"""The local X API server answers as X does, and the demo scenario has the shape the demo
needs: chatter, a harmless viral burst, then an outage that builds."""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from forewarn_cli.local.xscenario import (
    CHATTER,
    HOSTILE,
    OUTAGE,
    RETWEET,
    TOPIC_QUERY,
    VIRAL,
    ScenarioFeeder,
    ScheduledPost,
    demo_scenario,
)
from forewarn_cli.local.xserver import SEARCH_PATH, XServer, snowflake, timestamp

BEARER = "local-test-bearer"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def server(clock: Clock) -> Iterator[XServer]:
    with XServer(bearer_token=BEARER, clock=clock) as running:
        yield running


def get(server: XServer, token: str = BEARER, **params: Any) -> requests.Response:
    return requests.get(
        server.url + SEARCH_PATH,
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def texts(server: XServer, query: str, **params: Any) -> list[str]:
    response = get(server, query=query, max_results=100, **params)
    assert response.status_code == 200, response.text
    return [t["text"] for t in response.json().get("data", [])]


POSTS: list[dict[str, Any]] = [
    {"text": "@ForewarnTel no signal in Dallas", "place": "Dallas, TX"},
    {"text": "Is Forewarn Telecom down? #ForewarnDown", "lang": "en"},
    {"text": "Forewarn rocks, Telecom is great", "lang": "en"},
    {"text": "RT @ForewarnTel: big news", "author_handle": "fan"},
    {"text": "@forewarntel hola, no hay señal", "lang": "es"},
    {"text": "#forewarndown again", "author_handle": "grumpy"},
    {"text": "mentions ForewarnTel without the at", "author_handle": "plain"},
]


@pytest.fixture
def corpus(server: XServer) -> list[str]:
    return server.publish(
        *(
            {"created_at": NOW - timedelta(minutes=len(POSTS) - i), **post}
            for i, post in enumerate(POSTS)
        )
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("@ForewarnTel", [4, 3, 0]),
        ("@ForewarnTel -is:retweet", [4, 0]),
        ('"Forewarn Telecom"', [1]),
        ("Forewarn Telecom", [2, 1]),  # both words, anywhere
        ("#ForewarnDown", [5, 1]),
        ("#ForewarnDown -again", [1]),
        ("@ForewarnTel lang:es", [4]),
        ("signal OR señal", [4, 0]),
        ("Dallas OR (hola lang:es)", [4, 0]),
        ("down great OR rocks", [2]),  # AND binds tighter than OR, as on X
        ('(@ForewarnTel OR "Forewarn Telecom" OR #ForewarnDown) -is:retweet', [5, 4, 1, 0]),
        ('@ForewarnTel OR "Forewarn Telecom" OR #ForewarnDown -is:retweet', [5, 4, 3, 1, 0]),
        ("from:grumpy OR from:plain", [6, 5]),
        ("ForewarnTel", [6, 4, 3, 0]),
        ("place:Dallas", [0]),
        ("forewarn -(telecom OR great)", []),
    ],
)
def test_query_syntax(server: XServer, corpus: list[str], query: str, expected: list[int]) -> None:
    assert texts(server, query) == [POSTS[i]["text"] for i in expected]


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("-is:retweet", "non-negation"),
        ("lang:en", "non-negation"),
        ("(a OR b", "missing"),
        ('"unclosed', "quote"),
        ("foo:bar", "invalid operator"),
        ("a" * 513, "length"),
    ],
)
def test_queries_x_refuses_are_refused(server: XServer, query: str, reason: str) -> None:
    response = get(server, query=query)
    assert response.status_code == 400
    body = response.json()
    assert body["title"] == "Invalid Request"
    assert reason in body["errors"][0]["message"]


def test_only_requested_fields_come_back(server: XServer, corpus: list[str]) -> None:
    bare = get(server, query="@ForewarnTel").json()
    assert set(bare) == {"data", "meta"}
    assert {frozenset(t) for t in bare["data"]} == {
        frozenset({"id", "text", "edit_history_tweet_ids"})
    }

    full = get(
        server,
        query="Dallas",
        expansions="author_id,geo.place_id",
        **{
            "tweet.fields": "created_at,lang,public_metrics",
            "user.fields": "username,public_metrics",
            "place.fields": "full_name,country_code",
        },
    ).json()
    [tweet] = full["data"]
    assert tweet["created_at"] == timestamp(NOW - timedelta(minutes=7))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", tweet["created_at"])
    assert tweet["author_id"] == full["includes"]["users"][0]["id"]
    assert tweet["geo"] == {"place_id": full["includes"]["places"][0]["id"]}
    assert set(tweet["public_metrics"]) >= {"retweet_count", "reply_count", "like_count"}
    [user] = full["includes"]["users"]
    assert set(user) == {"id", "name", "username", "public_metrics"}
    assert "followers_count" in user["public_metrics"]
    assert full["includes"]["places"] == [
        {"id": tweet["geo"]["place_id"], "full_name": "Dallas, TX", "country_code": "US"}
    ]
    assert full["meta"] == {
        "newest_id": tweet["id"],
        "oldest_id": tweet["id"],
        "result_count": 1,
    }


def test_an_empty_result_has_only_a_count(server: XServer, corpus: list[str]) -> None:
    assert get(server, query="nothing").json() == {"meta": {"result_count": 0}}


def test_ids_grow_with_time_like_snowflakes(server: XServer) -> None:
    early, late, same = server.publish(
        {"text": "a", "created_at": NOW - timedelta(minutes=2)},
        {"text": "b", "created_at": NOW - timedelta(minutes=1)},
        {"text": "c", "created_at": NOW - timedelta(minutes=1)},
    )
    assert int(early) < int(late) < int(same)
    assert int(late) >> 22 == snowflake(NOW - timedelta(minutes=1)) >> 22


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"max_results": 5}, "max_results"),
        ({"max_results": 101}, "max_results"),
        ({"max_results": "ten"}, "max_results"),
        ({"since_id": "abc"}, "since_id"),
        ({"next_token": "made-up"}, "next_token"),
        ({"tweet.fields": "created_at,colour"}, "tweet.fields"),
        ({"expansions": "everything"}, "expansions"),
        ({"start_time": "yesterday"}, "start_time"),
        ({"start_time": "2026-11-01T00:00:00Z"}, "start_time"),  # older than 7 days
        ({"end_time": "2026-11-23T09:59:55Z"}, "end_time"),  # not 10 s before now
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_parameters_are_400s_in_xs_format(
    server: XServer, params: dict[str, Any], parameter: str
) -> None:
    response = get(server, query="@ForewarnTel", **params)
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "https://api.twitter.com/2/problems/invalid-request"
    assert parameter in body["errors"][0]["parameters"]


def test_paging_and_time_bounds(server: XServer) -> None:
    ids = server.publish(
        *(
            {"text": f"#ForewarnDown {i}", "created_at": NOW - timedelta(minutes=i)}
            for i in range(25)
        )
    )
    seen: list[str] = []
    token = None
    while True:
        params: dict[str, Any] = {"max_results": 10}
        if token:
            params["next_token"] = token
        body = get(server, query="#ForewarnDown", **params).json()
        seen += [t["id"] for t in body["data"]]
        token = body["meta"].get("next_token")
        if token is None:
            break
    assert seen == ids  # newest first

    assert len(texts(server, "#ForewarnDown", since_id=ids[5])) == 5
    assert len(texts(server, "#ForewarnDown", until_id=ids[20])) == 4
    window = texts(
        server,
        "#ForewarnDown",
        start_time=timestamp(NOW - timedelta(minutes=10)),
        end_time=timestamp(NOW - timedelta(minutes=5)),
    )
    assert window == [f"#ForewarnDown {i}" for i in range(6, 11)]


def test_future_posts_stay_hidden_until_their_time(server: XServer, clock: Clock) -> None:
    server.publish({"text": "#ForewarnDown later", "created_at": NOW + timedelta(minutes=1)})
    assert texts(server, "#ForewarnDown") == []
    clock.now = NOW + timedelta(minutes=2)
    assert texts(server, "#ForewarnDown") == ["#ForewarnDown later"]


def test_search_needs_the_bearer_token(server: XServer) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "OAuth x"}):
        response = requests.get(
            server.url + SEARCH_PATH, params={"query": "a"}, headers=headers, timeout=10
        )
        assert response.status_code == 401
        assert response.json() == {
            "title": "Unauthorized",
            "detail": "Unauthorized",
            "type": "about:blank",
            "status": 401,
        }


def post_tweet(server: XServer, body: dict[str, Any], auth: str = "OAuth k=1") -> Any:
    return requests.post(
        server.url + "/2/tweets", json=body, headers={"Authorization": auth}, timeout=10
    )


def test_posting_needs_user_context_and_is_recorded(server: XServer, corpus: list[str]) -> None:
    assert post_tweet(server, {"text": "hi"}, auth="").status_code == 401
    assert post_tweet(server, {"text": "hi"}, auth=f"Bearer {BEARER}").status_code == 403

    made = post_tweet(server, {"text": "@ana On it!", "reply": {"in_reply_to_tweet_id": corpus[0]}})
    assert made.status_code == 201
    data = made.json()["data"]
    assert data == {"id": data["id"], "text": "@ana On it!", "edit_history_tweet_ids": [data["id"]]}
    [created] = server.created
    assert created.id == data["id"]
    assert created.in_reply_to_tweet_id == corpus[0]
    # What the brand posts is public, so a search finds it like any post.
    assert texts(server, "from:ForewarnTel") == ["@ana On it!"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"text": ""}, 400),
        ({"text": "x" * 281}, 403),
        ({"text": "🙂" * 141}, 403),  # emoji count twice
        ({"text": "ok", "reply": {"in_reply_to_tweet_id": "1"}}, 403),
    ],
)
def test_posts_x_would_refuse_are_refused(
    server: XServer, body: dict[str, Any], status: int
) -> None:
    assert post_tweet(server, body).status_code == status
    assert server.created == []


def test_a_duplicate_post_is_refused(server: XServer) -> None:
    assert post_tweet(server, {"text": "Restored."}).status_code == 201
    again = post_tweet(server, {"text": "Restored."})
    assert again.status_code == 403
    assert "duplicate" in again.json()["detail"]


def test_rate_limit_headers_and_429(server: XServer) -> None:
    ok = get(server, query="a")
    assert ok.headers["x-rate-limit-limit"] == "450"
    assert ok.headers["x-rate-limit-remaining"] == "449"
    server.rate_limit = (1, 60)  # a new limit starts a new window
    assert get(server, query="a").status_code == 200
    limited = get(server, query="a")
    assert limited.status_code == 429
    assert limited.headers["x-rate-limit-remaining"] == "0"
    assert int(limited.headers["x-rate-limit-reset"]) == int(NOW.timestamp()) + 60


def test_a_canned_response_is_served_once(server: XServer) -> None:
    server.respond_next("GET", SEARCH_PATH, status=503, body={"title": "Service Unavailable"})
    assert get(server, query="a").status_code == 503
    assert get(server, query="a").status_code == 200


# --------------------------------------------------------------------------- the scenario

OUTAGE_WORDS = re.compile(
    r"\b(down|outage|offline|(no|without) (signal|service|internet|bars)|dead|dropped|out)\b",
    re.I,
)


@pytest.fixture(scope="module")
def scenario() -> list[ScheduledPost]:
    return demo_scenario(NOW, outage_after_s=60, seed=7)


def per_minute(posts: list[ScheduledPost]) -> dict[int, int]:
    counts = Counter(int((p.created_at - NOW).total_seconds() // 60) for p in posts)
    return dict(sorted(counts.items()))


def test_the_scenario_is_deterministic(scenario: list[ScheduledPost]) -> None:
    assert demo_scenario(NOW, outage_after_s=60, seed=7) == scenario
    assert demo_scenario(NOW, outage_after_s=60, seed=8) != scenario


def test_two_hours_of_chatter_are_published_at_the_start(scenario: list[ScheduledPost]) -> None:
    past = [p for p in scenario if p.created_at < NOW]
    assert all(p.publish_at == NOW for p in past)
    assert {p.kind for p in past} == {CHATTER, HOSTILE}
    assert min(p.created_at for p in past) >= NOW - timedelta(hours=2)
    rates = per_minute([p for p in past if p.kind == CHATTER])
    assert len(rates) == 120
    assert set(rates.values()) <= {1, 2, 3}
    assert all(p.publish_at == p.created_at for p in scenario if p.created_at >= NOW)
    assert scenario == sorted(scenario, key=lambda p: p.publish_at)


def test_the_outage_starts_on_time_and_builds(scenario: list[ScheduledPost]) -> None:
    outage = [p for p in scenario if p.kind == OUTAGE]
    assert min(p.created_at for p in outage) >= NOW + timedelta(seconds=60)
    rates = list(per_minute(outage).values())
    assert rates[0] <= 5
    assert 15 <= max(rates) <= 30
    assert rates.index(max(rates)) >= 2
    places = Counter(p.place for p in outage)
    assert places["Dallas, TX"] > len(outage) / 2
    assert places["Fort Worth, TX"] > 0
    assert places[None] > 0
    assert any(p.author_followers >= 50_000 for p in outage)
    assert len({p.author_handle for p in outage}) > len(outage) / 2
    assert len({p.text for p in outage}) == len(outage)
    assert all(OUTAGE_WORDS.search(p.text) for p in outage)


def test_the_viral_burst_comes_first_and_is_praise(scenario: list[ScheduledPost]) -> None:
    burst = [p for p in scenario if p.kind in {VIRAL, RETWEET}]
    outage_start = min(p.created_at for p in scenario if p.kind == OUTAGE)
    assert len(burst) >= 30
    assert all(NOW + timedelta(seconds=25) <= p.created_at < outage_start for p in burst)
    assert not [p.text for p in burst if OUTAGE_WORDS.search(p.text)]
    praise = [p for p in burst if p.kind == VIRAL]
    assert all(re.search(r"great|love|best|huge|finally|better|wow|congrats|take my", p.text,
                         re.I) for p in praise)  # fmt: skip
    assert all(p.retweet and p.text.startswith("RT @ForewarnTel: ") for p in burst
               if p.kind == RETWEET)  # fmt: skip


def test_hostile_texts_are_among_the_chatter(scenario: list[ScheduledPost]) -> None:
    hostile = " ".join(p.text for p in scenario if p.kind == HOSTILE)
    assert "<script>alert(1)</script>" in hostile
    assert "<img src=x onerror=alert(1)>" in hostile


def test_the_topic_query_finds_all_but_retweets(clock: Clock) -> None:
    end = NOW + timedelta(minutes=10)
    clock.now = end
    scenario = demo_scenario(NOW, outage_after_s=60, seed=7)
    with XServer(bearer_token=BEARER, clock=clock) as server:
        ScenarioFeeder(server, scenario, clock).publish_due(end)
        found: set[str] = set()
        token = None
        while True:
            params: dict[str, Any] = {"max_results": 100}
            if token:
                params["next_token"] = token
            body = get(server, query=TOPIC_QUERY, **params).json()
            found |= {t["text"] for t in body["data"]}
            token = body["meta"].get("next_token")
            if token is None:
                break
    wanted = {p.text for p in scenario if p.kind in {CHATTER, HOSTILE, VIRAL, OUTAGE}}
    assert found == wanted


def test_the_feeder_publishes_posts_when_their_time_comes(scenario: list[ScheduledPost]) -> None:
    published: list[Any] = []

    class Sink:
        def publish(self, *posts: Any) -> list[str]:
            published.extend(posts)
            return [str(i) for i in range(len(posts))]

    clock = Clock(NOW)
    feeder = ScenarioFeeder(Sink(), scenario, clock, poll_seconds=0.01).start()
    try:
        _wait(lambda: feeder.published == sum(p.publish_at <= NOW for p in scenario))
        clock.now = NOW + timedelta(seconds=90)
        _wait(lambda: feeder.published == sum(p.publish_at <= clock.now for p in scenario))
        assert all(p["created_at"] <= clock.now for p in published)
        clock.now = NOW + timedelta(hours=1)
        assert feeder.done.wait(5)
    finally:
        feeder.stop()
    assert len(published) == len(scenario)


def _wait(condition: Any, timeout: float = 5) -> None:
    event = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        event.wait(0.01)
    raise AssertionError("condition not reached")
