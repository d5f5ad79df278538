"""The edge to X: tweepy's real client, redirected to the local X API server, with its
credentials read from Secrets Manager on the test session's AWS server."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from chalicelib import aws, x
from chalicelib.config import settings
from chalicelib.posts import Topic
from chalicelib.social_sources import RateLimited, SourceError
from forewarn_cli.local.xserver import XServer

BEARER = "test-bearer-AAAAAAAAAAAAAAAAAAAAAFAKE"
SECRET = {
    "bearer_token": BEARER,
    "consumer_key": "test-consumer-key",
    "consumer_secret": "test-consumer-secret",
    "access_token": "test-access-token",
    "access_token_secret": "test-access-token-secret",
}
CREDENTIALS = x.XCredentials(**SECRET, secret_id="inline")
TOPIC = Topic("forewarn", '(@ForewarnTel OR "Forewarn Telecom" OR #ForewarnDown) -is:retweet')
PROJECT = Path(__file__).resolve().parents[1]
CASSETTES = Path(__file__).resolve().parents[2] / "shared" / "data" / "x-api" / "cassettes"


@pytest.fixture
def xserver() -> Iterator[XServer]:
    server = XServer(bearer_token=BEARER)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def local_x(xserver: XServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[XServer]:
    """`X_API_URL` names the local server, as on a local stack."""
    monkeypatch.setenv("X_API_URL", xserver.url)
    settings.cache_clear()
    x.reset()
    yield xserver
    monkeypatch.undo()
    settings.cache_clear()
    x.reset()


@pytest.fixture
def x_secret(aws_server: str) -> Iterator[str]:
    manager = aws.client("secretsmanager")
    secret_id = settings().x_secret_id
    try:
        manager.create_secret(Name=secret_id, SecretString=json.dumps(SECRET))
    except manager.exceptions.ResourceExistsException:  # a deployed stack made it
        manager.put_secret_value(SecretId=secret_id, SecretString=json.dumps(SECRET))
    x.reset()
    yield secret_id
    manager.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
    x.reset()


def source(server: XServer, **overrides: Any) -> x.XSource:
    creds = overrides.pop("credentials", CREDENTIALS)
    return x.XSource(creds, api_url=server.url, **overrides)


def search(src: x.XSource, **kwargs: Any) -> Any:
    params: dict[str, Any] = {"since_id": None, "next_token": None, "start_time": None}
    params.update(kwargs)
    return src.search(TOPIC, **params)


def sent_params(server: XServer) -> dict[str, list[str]]:
    _, target = server.requests[-1]
    return parse_qs(urlsplit(target).query)


def publish_chatter(server: XServer, count: int, *, end: datetime | None = None) -> list[str]:
    end = end or datetime.now(UTC) - timedelta(seconds=1)
    return server.publish(
        *(
            {
                "text": f"@ForewarnTel question number {i}",
                "created_at": end - timedelta(seconds=count - i),
                "author_handle": f"person{i % 4}",
            }
            for i in range(count)
        )
    )


def test_the_scan_source_reads_its_credentials_from_secrets_manager_and_maps_expansions(
    local_x: XServer, x_secret: str
) -> None:
    created = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    local_x.publish(
        {
            "text": "is @ForewarnTel down?? no internet",
            "created_at": created,
            "author_handle": "DFWNewsDesk",
            "author_name": "DFW News Desk",
            "author_followers": 182_000,
            "place": "Dallas, TX",
            "lang": "en",
        },
        {"text": "Forewarn Telecom works fine here", "created_at": created, "lang": "es"},
        {"text": "RT @ForewarnTel: big news", "author_handle": "fan"},  # excluded by the query
        {"text": "nothing about us", "author_handle": "other"},
    )

    page = search(x.x_source(), start_time=created - timedelta(minutes=1))

    assert [p.text for p in page.posts] == [
        "Forewarn Telecom works fine here",
        "is @ForewarnTel down?? no internet",
    ]
    placed = page.posts[1]
    assert placed.topic == TOPIC.id
    assert placed.author_handle == "DFWNewsDesk"
    assert placed.author_followers == 182_000
    assert placed.place == "Dallas, TX"
    assert placed.lang == "en"
    assert placed.created_at == created
    assert placed.created_at.tzinfo == UTC
    assert placed.author_id
    assert placed.author_id.isdigit()
    assert page.posts[0].place is None
    assert page.posts[0].lang == "es"
    assert page.newest_id == page.posts[0].id
    assert page.next_token is None
    params = sent_params(local_x)
    assert params["expansions"] == ["author_id,geo.place_id"]
    assert params["user.fields"] == ["username,public_metrics"]
    assert "start_time" in params
    assert "since_id" not in params


def test_pages_follow_next_token_newest_first(xserver: XServer) -> None:
    ids = publish_chatter(xserver, 25)
    src = source(xserver)
    start = datetime.now(UTC) - timedelta(hours=1)

    pages = [search(src, start_time=start, max_results=10)]
    while pages[-1].next_token:
        pages.append(search(src, start_time=start, max_results=10, next_token=pages[-1].next_token))

    assert [len(p.posts) for p in pages] == [10, 10, 5]
    seen = [post.id for page in pages for post in page.posts]
    assert seen == sorted(ids, key=int, reverse=True)
    assert pages[0].newest_id == max(ids, key=int)


def test_since_id_returns_only_newer_posts_and_drops_start_time(xserver: XServer) -> None:
    first = publish_chatter(xserver, 12, end=datetime.now(UTC) - timedelta(minutes=5))
    src = source(xserver)
    newest = search(src, start_time=datetime.now(UTC) - timedelta(hours=1)).newest_id
    assert newest == max(first, key=int)

    later = publish_chatter(xserver, 3)
    page = search(src, since_id=newest, start_time=datetime.now(UTC) - timedelta(hours=1))

    assert sorted(p.id for p in page.posts) == sorted(later)
    params = sent_params(xserver)
    assert params["since_id"] == [newest]
    assert "start_time" not in params


def test_max_results_and_start_time_are_kept_within_what_x_accepts(xserver: XServer) -> None:
    publish_chatter(xserver, 15)
    page = search(source(xserver), start_time=datetime.now(UTC) - timedelta(days=30), max_results=3)
    assert len(page.posts) == 10
    assert sent_params(xserver)["max_results"] == ["10"]


def test_a_429_raises_rate_limited_until_the_reset_header(xserver: XServer) -> None:
    xserver.rate_limit = (2, 900)
    src = source(xserver)
    before = datetime.now(UTC)
    search(src)
    search(src)
    with pytest.raises(RateLimited) as caught:
        search(src)
    expected = before + timedelta(seconds=900)
    assert abs((caught.value.resume_at - expected).total_seconds()) <= 2

    reset = int(datetime(2030, 1, 1, 12, 0, tzinfo=UTC).timestamp())
    xserver.respond_next(
        "GET",
        "/2/tweets/search/recent",
        status=429,
        body={"title": "Too Many Requests", "detail": "Too Many Requests", "status": 429},
        headers={"x-rate-limit-reset": str(reset)},
    )
    with pytest.raises(RateLimited) as exact:
        search(source(xserver))
    assert exact.value.resume_at == datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def test_a_429_without_a_reset_header_waits_the_standard_window(xserver: XServer) -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    xserver.respond_next("GET", "/2/tweets/search/recent", status=429, body={"status": 429})
    with pytest.raises(RateLimited) as caught:
        search(source(xserver, clock=lambda: now))
    assert caught.value.resume_at == now + timedelta(minutes=15)


def test_a_wrong_token_is_a_source_error_that_does_not_show_the_token(xserver: XServer) -> None:
    wrong = x.XCredentials("wrong-secret-token-value", secret_id="inline")
    with pytest.raises(SourceError) as caught:
        search(source(xserver, credentials=wrong))
    message = str(caught.value)
    assert "401" in message
    assert "wrong-secret-token-value" not in message
    assert BEARER not in message
    assert "wrong-secret-token-value" not in repr(wrong)


def test_a_rotated_secret_is_read_again_after_a_401(local_x: XServer, x_secret: str) -> None:
    local_x.bearer_token = "rotated-bearer-token"
    src = x.XSource()
    with pytest.raises(SourceError, match="401"):
        search(src)
    aws.client("secretsmanager").put_secret_value(
        SecretId=x_secret,
        SecretString=json.dumps({**SECRET, "bearer_token": "rotated-bearer-token"}),
    )
    assert search(src).posts == []


def test_server_and_network_failures_are_source_errors(xserver: XServer) -> None:
    xserver.respond_next(
        "GET", "/2/tweets/search/recent", status=503, body={"title": "Service Unavailable"}
    )
    with pytest.raises(SourceError, match="503"):
        search(source(xserver))

    src = source(xserver)
    xserver.stop()
    with pytest.raises(SourceError, match="ConnectionError"):
        search(src)


def test_an_invalid_query_is_a_source_error_with_xs_reason(xserver: XServer) -> None:
    bad = Topic("bad", "-is:retweet")
    with pytest.raises(SourceError, match=r"400.*non-negation"):
        source(xserver).search(bad, since_id=None, next_token=None, start_time=None)


def test_a_missing_secret_says_which_secret(
    local_x: XServer, aws_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_id = "forewarn/test/x-that-nobody-made"
    monkeypatch.setenv("X_SECRET_ID", secret_id)
    settings.cache_clear()
    x.reset()
    with pytest.raises(SourceError) as caught:
        search(x.XSource())
    assert str(caught.value) == f"X credentials are not configured (secret {secret_id})"


@pytest.mark.parametrize("secret", ["not json", json.dumps({"consumer_key": "k"})])
def test_an_invalid_secret_is_not_configured(secret: str) -> None:
    with pytest.raises(SourceError, match=r"not configured \(secret s1\)"):
        x.XCredentials.from_secret(secret, "s1")


def test_replies_and_posts_go_out_with_user_context(local_x: XServer, x_secret: str) -> None:
    [complaint] = local_x.publish({"text": "@ForewarnTel no signal", "author_handle": "ana"})

    reply_id = x.x_poster().reply("@ana We're on it, sorry!", complaint)
    post_id = x.x_poster().post("Service in Dallas is restored.")

    assert [c.id for c in local_x.created] == [reply_id, post_id]
    assert local_x.created[0].in_reply_to_tweet_id == complaint
    assert local_x.created[0].body == {
        "text": "@ana We're on it, sorry!",
        "reply": {"in_reply_to_tweet_id": complaint},
    }
    assert local_x.created[1].in_reply_to_tweet_id is None


def test_posting_needs_the_oauth_keys(xserver: XServer) -> None:
    poster = x.XPoster(x.XCredentials(BEARER, secret_id="s1"), api_url=xserver.url)
    with pytest.raises(SourceError, match=r"posting are not configured \(secret s1\)"):
        poster.post("hello")
    assert xserver.created == []


def test_x_refusing_a_post_is_a_source_error(xserver: XServer) -> None:
    poster = x.XPoster(CREDENTIALS, api_url=xserver.url)
    poster.post("Service restored")
    with pytest.raises(SourceError, match=r"403.*duplicate"):
        poster.post("Service restored")


def test_the_adapter_keeps_path_and_query() -> None:
    adapter = x.XAdapter("http://127.0.0.1:9999/")
    assert (
        adapter.rewrite("https://api.twitter.com/2/tweets/search/recent?query=a%20b&x=1")
        == "http://127.0.0.1:9999/2/tweets/search/recent?query=a%20b&x=1"
    )
    with pytest.raises(ValueError, match="not an http"):
        x.XAdapter("127.0.0.1:9999")


def test_a_request_without_a_timeout_gets_one_and_production_urls_are_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    adapter = x.XAdapter(None)
    url = "https://api.twitter.com/2/tweets/search/recent?query=a"
    assert adapter.rewrite(url) == url
    seen: dict[str, Any] = {}

    def send(request: Any, **kwargs: Any) -> str:
        seen.update(kwargs, url=request.url)
        return "response"

    monkeypatch.setattr(adapter._inner, "send", send)

    class Request:
        pass

    request = Request()
    request.url = url  # type: ignore[attr-defined]
    response: Any = adapter.send(request, timeout=None)  # type: ignore[arg-type]
    assert response == "response"
    assert seen["timeout"] == x.HTTP_TIMEOUT
    assert seen["url"] == url


def test_importing_the_module_loads_neither_tweepy_nor_requests() -> None:
    code = (
        "import sys, chalicelib.x\n"
        "loaded = {'tweepy', 'requests'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT, check=True, timeout=60)


# --------------------------------------------------------------------------- a real response


def _cassette(name: str) -> list[dict[str, Any]]:
    if not CASSETTES.is_dir():
        pytest.skip(f"recorded X responses are not available ({CASSETTES} is absent)")
    yaml = pytest.importorskip("yaml")
    interactions: list[dict[str, Any]] = yaml.safe_load((CASSETTES / name).read_text())[
        "interactions"
    ]
    return interactions


def _body(interaction: dict[str, Any]) -> bytes:
    raw = interaction["response"]["body"]["string"]
    data = raw if isinstance(raw, bytes) else raw.encode()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def test_a_recorded_x_search_response_maps_every_post(xserver: XServer) -> None:
    [interaction] = _cassette("test_client_search_recent_tweets.yaml")
    recorded = json.loads(_body(interaction))
    headers = {k: v[0] for k, v in interaction["response"]["headers"].items()}
    wire = interaction["response"]["body"]["string"]  # gzip, exactly as X sent it
    xserver.respond_next(
        "GET",
        "/2/tweets/search/recent",
        status=200,
        body=wire,
        headers={
            k: headers[k]
            for k in (
                "content-type",
                "content-encoding",
                "x-rate-limit-limit",
                "x-rate-limit-reset",
            )
        },
    )

    page = search(source(xserver), max_results=10)

    assert [(p.id, p.text) for p in page.posts] == [(t["id"], t["text"]) for t in recorded["data"]]
    assert page.next_token == recorded["meta"]["next_token"]
    assert page.newest_id == recorded["meta"]["newest_id"]
    for post in page.posts:
        # The texts were written at the time they were posted: the ids tell the same time.
        written = datetime.fromisoformat(post.text.removesuffix(" tweepy")).replace(tzinfo=UTC)
        assert abs((post.created_at - written).total_seconds()) < 1
        assert post.author_handle is None
        assert post.place is None


def test_the_local_server_answers_in_the_recorded_shape(xserver: XServer) -> None:
    [interaction] = _cassette("test_client_search_recent_tweets.yaml")
    recorded = json.loads(_body(interaction))
    now = datetime.now(UTC)
    xserver.publish(
        *({"text": f"tweepy {i}", "created_at": now - timedelta(minutes=i)} for i in range(12))
    )
    request = urlsplit(interaction["request"]["uri"])  # exactly what tweepy asked X
    response = requests.get(
        xserver.url + request.path + "?" + request.query,
        headers={"Authorization": f"Bearer {BEARER}"},
        timeout=10,
    )
    ours = response.json()

    assert response.status_code == interaction["response"]["status"]["code"]
    assert ours.keys() == recorded.keys()
    assert ours["meta"].keys() == recorded["meta"].keys()
    assert {frozenset(t) for t in ours["data"]} == {frozenset(t) for t in recorded["data"]}
    assert len(ours["data"]) == len(recorded["data"])
    for name in ("x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-reset"):
        assert response.headers[name].isdigit()

    [create, _delete] = _cassette("test_client_create_and_delete_tweet.yaml")
    recorded_created = json.loads(_body(create))
    made = requests.post(
        xserver.url + urlsplit(create["request"]["uri"]).path,
        data=create["request"]["body"],
        headers={
            "Authorization": 'OAuth oauth_consumer_key="k"',
            "Content-Type": "application/json",
        },
        timeout=10,
    )
    assert made.status_code == create["response"]["status"]["code"]
    assert made.json()["data"].keys() >= recorded_created["data"].keys()
