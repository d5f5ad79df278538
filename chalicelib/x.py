"""The edge to X: recent search and posting through tweepy's own `Client`.

Importing this module imports neither tweepy nor requests (about 150 ms of a cold start);
the first search or post does. Credentials live in Secrets Manager only, as JSON with
`bearer_token` (search) and `consumer_key`, `consumer_secret`, `access_token`,
`access_token_secret` (posting, OAuth 1.0a user context). They are read on first use, kept
for the life of the process and never logged: every error raised here is safe to log.

On a local stack `X_API_URL` names an X API v2-compatible server. tweepy fixes its host, so
the one change to its client is a transport adapter on its `requests` session that sends
each request to that server instead (`XAdapter`, which also gives every request a timeout);
the rest is tweepy as in production.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from chalicelib import aws
from chalicelib.config import settings
from chalicelib.domain import utcnow
from chalicelib.posts import Post, Topic
from chalicelib.social_sources import Page, RateLimited, SourceError

if TYPE_CHECKING:
    from requests import PreparedRequest, Response

# Where tweepy 4.17 sends every request (`BaseClient.request`); later releases may use
# api.x.com, so both are redirected.
X_API_HOSTS = ("https://api.twitter.com/", "https://api.x.com/")
# X answers 429 with the reset time; without it, assume the standard 15-minute window.
RATE_LIMIT_FALLBACK = timedelta(minutes=15)
# Recent search covers the last 7 days and rejects an older `start_time` with a 400.
SEARCH_WINDOW = timedelta(days=7) - timedelta(minutes=1)
MIN_RESULTS, MAX_RESULTS = 10, 100
# Seconds to connect and to wait for a response: well inside a scan's time budget.
HTTP_TIMEOUT = (5.0, 20.0)
# X ids are snowflakes: milliseconds since this epoch, shifted left by 22 bits.
SNOWFLAKE_EPOCH_MS = 1288834974657

SEARCH_FIELDS: dict[str, list[str]] = {
    "expansions": ["author_id", "geo.place_id"],
    "tweet_fields": ["created_at", "lang", "author_id", "geo", "public_metrics"],
    "user_fields": ["username", "public_metrics"],
    "place_fields": ["full_name", "country_code"],
}


@dataclass(frozen=True)
class XCredentials:
    # repr=False everywhere: a dataclass repr in a traceback or log line must not leak keys.
    bearer_token: str = field(repr=False)
    consumer_key: str | None = field(default=None, repr=False)
    consumer_secret: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    access_token_secret: str | None = field(default=None, repr=False)
    secret_id: str = ""

    @property
    def can_post(self) -> bool:
        return all(
            (self.consumer_key, self.consumer_secret, self.access_token, self.access_token_secret)
        )

    def values(self) -> list[str]:
        found = (
            self.bearer_token,
            self.consumer_key,
            self.consumer_secret,
            self.access_token,
            self.access_token_secret,
        )
        return [v for v in found if v]

    @classmethod
    def from_secret(cls, secret_string: str, secret_id: str) -> XCredentials:
        try:
            data = json.loads(secret_string)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("bearer_token"), str):
            raise _not_configured(secret_id)

        def opt(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) and value else None

        return cls(
            bearer_token=data["bearer_token"],
            consumer_key=opt("consumer_key"),
            consumer_secret=opt("consumer_secret"),
            access_token=opt("access_token"),
            access_token_secret=opt("access_token_secret"),
            secret_id=secret_id,
        )


def _not_configured(secret_id: str) -> SourceError:
    return SourceError(f"X credentials are not configured (secret {secret_id})")


_credentials: XCredentials | None = None
_credentials_lock = threading.Lock()


def credentials() -> XCredentials:
    """The X credentials of this stage, read from Secrets Manager once per process."""
    global _credentials
    with _credentials_lock:
        if _credentials is None:
            _credentials = _read_secret(settings().x_secret_id)
        return _credentials


def _read_secret(secret_id: str) -> XCredentials:
    try:
        result = aws.client("secretsmanager").get_secret_value(SecretId=secret_id)
    except Exception as exc:
        # botocore's message names the secret and the error, never its value.
        if aws.is_transient(exc):
            raise SourceError(
                f"could not read X credentials (secret {secret_id}): {aws.error_code(exc)}"
            ) from exc
        raise _not_configured(secret_id) from exc
    secret_string = result.get("SecretString")
    if not isinstance(secret_string, str):
        raise _not_configured(secret_id)
    return XCredentials.from_secret(secret_string, secret_id)


def reset() -> None:
    """Forget credentials and clients, so that the next use sees new secrets or settings."""
    global _credentials
    with _credentials_lock:
        _credentials = None
    x_source.cache_clear()
    x_poster.cache_clear()


class XAdapter:
    """The `requests` transport adapter mounted on tweepy's session for the X hosts.

    tweepy sends requests without a timeout, and a hung call would run a scan into its
    Lambda timeout, so this adapter gives every request one. On a local stack (`api_url`)
    it also rewrites each request's scheme and host, keeping path and query. It wraps a stock
    `HTTPAdapter` rather than subclassing it because a subclass would import requests with
    this module.
    """

    def __init__(self, api_url: str | None = None) -> None:
        from requests.adapters import HTTPAdapter

        self._target = None
        if api_url:
            target = urlsplit(api_url.rstrip("/"))
            if target.scheme not in {"http", "https"} or not target.netloc:
                raise ValueError(f"X_API_URL is not an http(s) URL: {api_url!r}")
            self._target = target
        self._inner = HTTPAdapter()

    def rewrite(self, url: str) -> str:
        if self._target is None:
            return url
        original = urlsplit(url)
        return urlunsplit(
            (
                self._target.scheme,
                self._target.netloc,
                self._target.path + original.path,
                original.query,
                "",
            )
        )

    def send(self, request: PreparedRequest, **kwargs: Any) -> Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = HTTP_TIMEOUT
        if self._target is not None:
            from requests.utils import get_environ_proxies

            request.url = self.rewrite(request.url or "")
            # The session chose proxies for the X host; the local server needs its own.
            kwargs["proxies"] = get_environ_proxies(request.url)
        return self._inner.send(request, **kwargs)

    def close(self) -> None:
        self._inner.close()


def mount_adapter(session: Any, api_url: str | None) -> XAdapter:
    adapter = XAdapter(api_url)
    for host in X_API_HOSTS:
        session.mount(host, adapter)
    return adapter


def _tweepy_client(creds: XCredentials, api_url: str | None) -> Any:
    import tweepy

    client = tweepy.Client(
        bearer_token=creds.bearer_token,
        consumer_key=creds.consumer_key,
        consumer_secret=creds.consumer_secret,
        access_token=creds.access_token,
        access_token_secret=creds.access_token_secret,
        # A Lambda must not sleep through a 15-minute window; the scan reschedules instead.
        wait_on_rate_limit=False,
    )
    mount_adapter(client.session, api_url)
    return client


class _XEdge:
    """The lazily built tweepy client and the translation of its failures."""

    def __init__(
        self,
        credentials: XCredentials | None = None,
        *,
        api_url: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """`credentials` default to the stage's secret and `api_url` to `X_API_URL`."""
        creds = credentials
        self._creds = creds
        self._from_secret = creds is None
        self._api_url = api_url
        self._clock = clock
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def credentials(self) -> XCredentials:
        if self._creds is None:
            self._creds = credentials()
        return self._creds

    @property
    def client(self) -> Any:
        """tweepy's `Client`, created on first use."""
        with self._lock:
            if self._client is None:
                api_url = self._api_url if self._api_url is not None else settings().x_api_url
                self._client = _tweepy_client(self.credentials, api_url)
            return self._client

    def _failure(self, exc: Exception, action: str) -> Exception:
        import requests
        import tweepy

        if isinstance(exc, tweepy.TooManyRequests):
            reset_time = exc.reset_time
            if reset_time is None:
                resume_at = self._clock() + RATE_LIMIT_FALLBACK
            else:
                resume_at = datetime.fromtimestamp(int(reset_time), UTC)
            return RateLimited(resume_at, f"X rate limit on {action}; resume at {resume_at}")
        if isinstance(exc, tweepy.HTTPException):
            status = getattr(exc.response, "status_code", "?")
            detail = "; ".join(str(m) for m in exc.api_messages)[:300]
            what = "refused the credentials" if status == 401 else "failed"
            message = self._scrub(
                f"X {action} {what}: HTTP {status}" + (f" ({detail})" if detail else "")
            )
            if status == 401:
                self._forget_credentials()
            return SourceError(message)
        if isinstance(exc, requests.RequestException):
            # The exception text carries the URL; only the kind of failure is worth logging.
            return SourceError(f"X {action} failed: {type(exc).__name__}")
        if isinstance(exc, tweepy.TweepyException):
            return SourceError(self._scrub(f"X {action} failed: {exc}"))
        return exc

    def _forget_credentials(self) -> None:
        # The secret may have been rotated: read it again on the next call rather than
        # failing until this Lambda container is recycled.
        global _credentials
        if self._from_secret:
            with self._lock:
                self._creds = None
                self._client = None
            with _credentials_lock:
                _credentials = None

    def _scrub(self, message: str) -> str:
        # X does not echo credentials, but a message is logged, so make sure of it.
        for value in self._creds.values() if self._creds else []:
            message = message.replace(value, "***")
        return message


class XSource(_XEdge):
    """`PostSource` on X's recent search (app-only bearer token)."""

    def search(
        self,
        topic: Topic,
        *,
        since_id: str | None,
        next_token: str | None,
        start_time: datetime | None,
        max_results: int = 100,
    ) -> Page:
        """See `PostSource.search`. X returns between 10 and 100 posts a page, so
        `max_results` is brought into that range."""
        params: dict[str, Any] = {
            "query": topic.query,
            "max_results": min(MAX_RESULTS, max(MIN_RESULTS, max_results)),
            **SEARCH_FIELDS,
        }
        if since_id is not None:
            params["since_id"] = since_id
        elif start_time is not None:
            # since_id alone bounds a poll; start_time only bounds the first one, and never
            # further back than X keeps (it refuses an older start_time).
            params["start_time"] = max(start_time, self._clock() - SEARCH_WINDOW)
        if next_token is not None:
            params["next_token"] = next_token
        client = self.client
        try:
            response = client.search_recent_tweets(user_auth=False, **params)
        except Exception as exc:
            failure = self._failure(exc, "search")
            if failure is exc:
                raise
            raise failure from None
        meta = response.meta or {}
        return Page(
            posts=_posts(response, topic.id),
            next_token=meta.get("next_token"),
            newest_id=meta.get("newest_id"),
        )


class XPoster(_XEdge):
    """Posts as the brand account (OAuth 1.0a user context)."""

    def post(self, text: str) -> str:
        """Publishes `text`; returns the new post's id."""
        return self._create(text=text)

    def reply(self, text: str, in_reply_to_tweet_id: str) -> str:
        """Publishes `text` as a reply; returns the new post's id."""
        return self._create(text=text, in_reply_to_tweet_id=in_reply_to_tweet_id)

    def _create(self, **params: Any) -> str:
        creds = self.credentials
        if not creds.can_post:
            raise SourceError(
                f"X credentials for posting are not configured (secret {creds.secret_id})"
            )
        client = self.client
        try:
            response = client.create_tweet(user_auth=True, **params)
        except Exception as exc:
            failure = self._failure(exc, "post")
            if failure is exc:
                raise
            raise failure from None
        data = response.data
        if not isinstance(data, dict) or "id" not in data:
            raise SourceError("X post failed: no id in the response")
        return str(data["id"])


def snowflake_time(post_id: int | str) -> datetime:
    """When X created the post with this id (to the millisecond)."""
    millis = (int(post_id) >> 22) + SNOWFLAKE_EPOCH_MS
    return datetime.fromtimestamp(millis / 1000, UTC)


def _posts(response: Any, topic_id: str) -> list[Post]:
    includes = response.includes or {}
    users = {str(user.id): user for user in includes.get("users", [])}
    places = {str(place.id): place for place in includes.get("places", [])}
    posts = []
    for tweet in response.data or []:
        author_id = None if tweet.author_id is None else str(tweet.author_id)
        user = users.get(author_id) if author_id else None
        followers = None
        if user is not None and isinstance(user.public_metrics, dict):
            count = user.public_metrics.get("followers_count")
            followers = None if count is None else int(count)
        place_id = (tweet.geo or {}).get("place_id")
        place = places.get(str(place_id)) if place_id else None
        created_at = tweet.created_at
        posts.append(
            Post(
                id=str(tweet.id),
                topic=topic_id,
                text=tweet.text,
                # Without tweet.fields=created_at the id still tells the time.
                created_at=(
                    snowflake_time(tweet.id) if created_at is None else created_at.astimezone(UTC)
                ),
                author_id=author_id,
                author_handle=None if user is None else user.username,
                author_followers=followers,
                lang=tweet.lang,
                place=None if place is None else place.full_name,
            )
        )
    return posts


@cache
def x_source() -> XSource:
    return XSource()


@cache
def x_poster() -> XPoster:
    return XPoster()
