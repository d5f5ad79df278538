"""A small X API v2-compatible server, for local stacks, demos and tests.

It answers the calls Forewarn makes, in X's wire format, so that tweepy's real client (with
only its host redirected, see `chalicelib.x.XAdapter`) talks to it as to api.x.com:

* `GET /2/tweets/search/recent`: a useful subset of X's query language (terms ANDed by
  space, `OR`, parentheses, quoted phrases, `@mention`, `#hashtag`, `-negation`, `from:`,
  `to:`, `lang:`, `is:retweet|reply|quote|verified`, `has:...`, `place:`,
  `place_country:`), `since_id`, `until_id`, `start_time`, `end_time`, `max_results`,
  `next_token`, `sort_order`, expansions and field selection. It rejects what X rejects:
  unknown parameters or fields, `max_results` outside 10..100, times outside the last 7 days.
* `POST /2/tweets` (OAuth 1.0a user context) and `DELETE /2/tweets/:id`: what the brand
  account posts is recorded in `created` and is searchable, as on X. Duplicate texts, texts
  over 280 characters (X's weighting) and replies to unknown posts are refused, as on X.

Ids are snowflakes (milliseconds since X's epoch, shifted left 22 bits), so they grow with
`created_at` exactly as X's do. Responses carry X's `x-rate-limit-*` headers; with
`rate_limit=(requests, window_seconds)` the server also enforces them with a 429.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from chalicelib.domain import utcnow
from chalicelib.posts import Post, parse_time

log = logging.getLogger(__name__)

SNOWFLAKE_EPOCH_MS = 1288834974657
SEARCH_WINDOW = timedelta(days=7)
DEFAULT_RATE_LIMIT = (450, 900)  # X's app-auth limit on recent search, per 15 minutes
MAX_QUERY_LENGTH = 512
MAX_TWEET_WEIGHT = 280
SEARCH_PATH = "/2/tweets/search/recent"
TWEETS_PATH = "/2/tweets"


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


TWEET_FIELDS = _names(
    "article attachments author_id card_uri community_id context_annotations conversation_id "
    "created_at display_text_range edit_controls edit_history_tweet_ids entities geo id "
    "in_reply_to_user_id lang media_metadata non_public_metrics note_tweet organic_metrics "
    "possibly_sensitive promoted_metrics public_metrics referenced_tweets reply_settings "
    "scopes source text withheld"
)
USER_FIELDS = _names(
    "affiliation connection_status created_at description entities id is_identity_verified "
    "location most_recent_tweet_id name parody pinned_tweet_id profile_banner_url "
    "profile_image_url protected public_metrics receives_your_dm subscription "
    "subscription_type url username verified verified_followers_count verified_type "
    "withheld"
)
PLACE_FIELDS = _names("contained_within country country_code full_name geo id name place_type")
MEDIA_FIELDS = _names(
    "alt_text duration_ms height media_key non_public_metrics organic_metrics "
    "preview_image_url promoted_metrics public_metrics type url variants width"
)
POLL_FIELDS = _names("duration_minutes end_datetime id options voting_status")
EXPANSIONS = _names(
    "article.cover_media article.media_entities attachments.media_keys "
    "attachments.media_source_tweet attachments.poll_ids author_id edit_history_tweet_ids "
    "entities.mentions.username entities.note.mentions.username geo.place_id "
    "in_reply_to_user_id referenced_tweets.id referenced_tweets.id.attachments.media_keys "
    "referenced_tweets.id.author_id"
)
LIST_PARAMS = {
    "expansions": EXPANSIONS,
    "tweet.fields": TWEET_FIELDS,
    "user.fields": USER_FIELDS,
    "place.fields": PLACE_FIELDS,
    "media.fields": MEDIA_FIELDS,
    "poll.fields": POLL_FIELDS,
}
SEARCH_PARAMS = (
    "query",
    "start_time",
    "end_time",
    "since_id",
    "until_id",
    "max_results",
    "next_token",
    "pagination_token",
    "sort_order",
    *LIST_PARAMS,
)
US_STATES = _names(
    "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH "
    "NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC"
)


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    def __init__(
        self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def invalid_request(message: str, parameter: str | None = None, value: str = "") -> ApiError:
    error: dict[str, Any] = {"message": message}
    if parameter is not None:
        error["parameters"] = {parameter: [value]}
    return ApiError(
        400,
        {
            "errors": [error],
            "title": "Invalid Request",
            "detail": "One or more parameters to your request was invalid.",
            "type": "https://api.twitter.com/2/problems/invalid-request",
        },
    )


def problem(status: int, title: str, detail: str, kind: str = "about:blank") -> ApiError:
    return ApiError(status, {"title": title, "detail": detail, "type": kind, "status": status})


# --------------------------------------------------------------------------- query language


class QueryError(ValueError):
    pass


_WORD = re.compile(r"[@#$]?\w+", re.UNICODE)


def _words(text: str) -> list[str]:
    return [token.lower() for token in _WORD.findall(text)]


@dataclass(frozen=True)
class Doc:
    """What a query sees of a post."""

    words: tuple[str, ...]  # without @, # or $, in order, for keywords and phrases
    mentions: frozenset[str]
    hashtags: frozenset[str]
    lang: str | None
    author: str  # username, lower case
    reply_to_author: str | None
    retweet: bool
    reply: bool
    quote: bool
    verified: bool
    place: tuple[str, ...] | None  # the place's full name as words
    country_code: str | None
    has_links: bool

    @classmethod
    def of(cls, tweet: StoredTweet, user: StoredUser, place: StoredPlace | None) -> Doc:
        tokens = _words(tweet.text)
        return cls(
            words=tuple(token.lstrip("@#$") for token in tokens),
            mentions=frozenset(t[1:] for t in tokens if t.startswith("@")),
            hashtags=frozenset(t[1:] for t in tokens if t.startswith("#")),
            lang=tweet.lang,
            author=user.username.lower(),
            reply_to_author=tweet.in_reply_to_username,
            retweet=tweet.retweet,
            reply=tweet.in_reply_to_tweet_id is not None,
            quote=tweet.quote,
            verified=user.verified,
            place=None if place is None else tuple(_words(place.full_name)),
            country_code=None if place is None else place.country_code,
            has_links="http://" in tweet.text or "https://" in tweet.text,
        )


Matcher = Callable[[Doc], bool]


@dataclass(frozen=True)
class _Term:
    matcher: Matcher
    standalone: bool  # X wants at least one positive standalone term in a query


def _contains(words: tuple[str, ...], phrase: tuple[str, ...]) -> bool:
    size = len(phrase)
    return any(words[i : i + size] == phrase for i in range(len(words) - size + 1))


def _phrase(words: list[str]) -> Matcher:
    phrase = tuple(words)
    return lambda doc: _contains(doc.words, phrase)


def _operator(name: str, value: str) -> _Term:
    value_l = value.lower()
    if name == "from":
        return _Term(lambda d: d.author == value_l.lstrip("@"), True)
    if name == "to":
        return _Term(lambda d: d.reply_to_author == value_l.lstrip("@"), True)
    if name == "lang":
        return _Term(lambda d: (d.lang or "").lower() == value_l, False)
    if name == "place":
        place = tuple(_words(value_l))
        return _Term(lambda d: d.place is not None and _contains(d.place, place), True)
    if name == "place_country":
        return _Term(lambda d: (d.country_code or "").lower() == value_l, True)
    if name == "is":
        flags: dict[str, Matcher] = {
            "retweet": lambda d: d.retweet,
            "reply": lambda d: d.reply,
            "quote": lambda d: d.quote,
            "verified": lambda d: d.verified,
        }
        if value_l not in flags:
            raise QueryError(f"Reference to invalid operator 'is:{value}'")
        return _Term(flags[value_l], False)
    if name == "has":
        checks: dict[str, Matcher] = {
            "links": lambda d: d.has_links,
            "mentions": lambda d: bool(d.mentions),
            "hashtags": lambda d: bool(d.hashtags),
            "geo": lambda d: d.place is not None,
            "media": lambda d: False,
            "images": lambda d: False,
            "videos": lambda d: False,
            "cashtags": lambda d: False,
        }
        if value_l not in checks:
            raise QueryError(f"Reference to invalid operator 'has:{value}'")
        return _Term(checks[value_l], False)
    raise QueryError(f"Reference to invalid operator '{name}'")


_LEX = re.compile(r'\s+|\(|\)|"(?:[^"\\]|\\.)*"|-(?=\S)|[^\s()"]+(?:"(?:[^"\\]|\\.)*")?')


def _lex(query: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    while pos < len(query):
        match = _LEX.match(query, pos)
        if match is None:
            raise QueryError(
                f"There were errors processing your request: unbalanced quote "
                f"(at position {pos + 1})"
            )
        text = match.group()
        if not text.isspace():
            tokens.append(text)
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    # X applies AND (a space) before OR: `a b OR c` means `(a b) OR c`.
    def expr(self) -> _Term:
        parts = [self.conjunction()]
        while self.peek() == "OR":
            self.take()
            parts.append(self.conjunction())
        if len(parts) == 1:
            return parts[0]
        matchers = [p.matcher for p in parts]
        return _Term(lambda d: any(m(d) for m in matchers), all(p.standalone for p in parts))

    def conjunction(self) -> _Term:
        parts: list[_Term] = []
        while (token := self.peek()) is not None and token not in {")", "OR"}:
            parts.append(self.unary())
        if not parts:
            raise QueryError("There were errors processing your request: empty expression")
        if len(parts) == 1:
            return parts[0]
        matchers = [p.matcher for p in parts]
        return _Term(lambda d: all(m(d) for m in matchers), any(p.standalone for p in parts))

    def unary(self) -> _Term:
        if self.peek() == "-":
            self.take()
            if self.peek() in {None, ")", "OR"}:
                raise QueryError("There were errors processing your request: dangling '-'")
            inner = self.unary().matcher
            return _Term(lambda d: not inner(d), False)
        return self.atom()

    def atom(self) -> _Term:
        lexeme = self.take()
        if lexeme == "(":
            inner = self.expr()
            if self.peek() != ")":
                raise QueryError("There were errors processing your request: missing ')'")
            self.take()
            return inner
        if lexeme == ")":
            raise QueryError("There were errors processing your request: unexpected ')'")
        if lexeme.startswith('"'):
            words = _words(lexeme[1:-1])
            if not words:
                raise QueryError("There were errors processing your request: empty phrase")
            return _Term(_phrase(words), True)
        if lexeme.startswith("@") and len(lexeme) > 1:
            handle = lexeme[1:].lower()
            return _Term(lambda d: handle in d.mentions, True)
        if lexeme.startswith("#") and len(lexeme) > 1:
            tag = lexeme[1:].lower()
            return _Term(lambda d: tag in d.hashtags, True)
        name, colon, value = lexeme.partition(":")
        if colon and name.isalpha() and value:
            return _operator(name.lower(), value.strip('"'))
        words = [w.lstrip("@#$") for w in _words(lexeme)]
        if not words:
            return _Term(lambda d: True, False)  # punctuation only: X ignores it
        return _Term(_phrase(words), True)


def parse_query(query: str) -> Matcher:
    """A predicate on `Doc`s for an X search query; `QueryError` with X's message if X would
    refuse the query."""
    if not query.strip():
        raise QueryError("There were errors processing your request: empty query")
    if len(query) > MAX_QUERY_LENGTH:
        raise QueryError(f"Query length exceeds the maximum of {MAX_QUERY_LENGTH} characters")
    parser = _Parser(_lex(query))
    term = parser.expr()
    if parser.peek() is not None:
        raise QueryError("There were errors processing your request: unexpected ')'")
    if not term.standalone:
        raise QueryError(
            "There were errors processing your request: Rules must contain a non-negation "
            "term and at least one standalone operator"
        )
    return term.matcher


# --------------------------------------------------------------------------- text length


def tweet_weight(text: str) -> int:
    """The length X counts against 280: URLs count 23, most non-Latin characters 2."""
    weight = 0
    rest = re.sub(r"https?://\S+", lambda _: "\0", text)
    for char in rest:
        if char == "\0":
            weight += 23
            continue
        code = ord(char)
        light = code <= 4351 or 8192 <= code <= 8205 or 8208 <= code <= 8223 or 8242 <= code <= 8247
        weight += 1 if light else 2
    return weight


# --------------------------------------------------------------------------- the store


@dataclass
class StoredUser:
    id: str
    username: str
    name: str
    followers_count: int = 0
    following_count: int = 0
    tweet_count: int = 0
    verified: bool = False
    created_at: datetime = field(default_factory=lambda: datetime(2015, 1, 1, tzinfo=UTC))


@dataclass(frozen=True)
class StoredPlace:
    id: str
    full_name: str
    country_code: str | None
    country: str | None


@dataclass
class StoredTweet:
    id: str
    text: str
    created_at: datetime
    author_id: str
    lang: str | None = None
    place_id: str | None = None
    retweet: bool = False
    quote: bool = False
    in_reply_to_tweet_id: str | None = None
    in_reply_to_user_id: str | None = None
    in_reply_to_username: str | None = None
    conversation_id: str | None = None
    public_metrics: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CreatedTweet:
    """A post made through `POST /2/tweets`."""

    id: str
    text: str
    created_at: datetime
    in_reply_to_tweet_id: str | None
    body: Mapping[str, Any]


def _stable_number(text: str, digits: int) -> str:
    value = int(hashlib.sha256(text.encode()).hexdigest(), 16) % 10**digits
    return str(value + 10 ** (digits - 1))


def timestamp(moment: datetime) -> str:
    """X's time format: `2026-11-23T10:00:00.000Z`."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def snowflake(moment: datetime, sequence: int = 0) -> int:
    millis = int(moment.timestamp() * 1000)
    return ((millis - SNOWFLAKE_EPOCH_MS) << 22) | sequence


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if number == 0:
            return out


# --------------------------------------------------------------------------- the server


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # a line per request would drown the demo's own output


@dataclass
class _Canned:
    status: int
    body: bytes
    headers: dict[str, str]
    times: int | None


class XServer:
    """The server; `start()` it, `publish()` posts into it, read `created`, `stop()` it."""

    def __init__(
        self,
        bearer_token: str = "local-x-bearer-token",  # noqa: S107 (a local stand-in)
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: tuple[int, float] | None = None,
        clock: Callable[[], datetime] = utcnow,
        account_handle: str = "ForewarnTel",
        account_name: str = "Forewarn Telecom",
    ) -> None:
        self.bearer_token = bearer_token
        self.host = host
        self.port = port
        self._rate_limit_setting = rate_limit
        self.clock = clock
        self.created: list[CreatedTweet] = []
        # The latest requests as (method, path?query), so tests can see what a client sent.
        self.requests: deque[tuple[str, str]] = deque(maxlen=1000)
        self._lock = threading.RLock()
        self._tweets: dict[int, StoredTweet] = {}
        self._ids: list[int] = []  # sorted
        self._users: dict[str, StoredUser] = {}
        self._places: dict[str, StoredPlace] = {}
        self._docs: dict[int, Doc] = {}
        self._windows: dict[str, tuple[float, int]] = {}
        self._canned: dict[tuple[str, str], list[_Canned]] = {}
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.account = self._user(
            _stable_number(account_handle.lower(), 18), account_handle, account_name
        )
        self.account.verified = True

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the X server is not running")
        return f"http://{self.host}:{self._server.server_port}"

    def start(self) -> str:
        if self._server is None:
            self._server = make_server(
                self.host, self.port, self, threaded=True, request_handler=_QuietHandler
            )
            # A short poll interval, so that stop() (and each test) does not wait half a second.
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="x-server",
                daemon=True,
            )
            self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None
            self._thread = None

    def __enter__(self) -> XServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def rate_limit(self) -> tuple[int, float] | None:
        """(requests, window_seconds) enforced per endpoint with a 429; None enforces none."""
        return self._rate_limit_setting

    @rate_limit.setter
    def rate_limit(self, value: tuple[int, float] | None) -> None:
        with self._lock:
            self._rate_limit_setting = value
            self._windows.clear()

    # ------------------------------------------------------------------ content

    def publish(self, *posts: Post | Mapping[str, Any]) -> list[str]:
        """Adds posts; returns the ids X would have given them (from `created_at`).

        A mapping has `text` and optionally `created_at` (datetime or ISO; default now),
        `author_handle`, `author_name`, `author_id`, `author_followers`, `verified`, `lang`
        (default "en"), `place` (full name, e.g. "Dallas, TX"), `country_code`, `retweet`,
        `quote`, `in_reply_to_tweet_id`, `public_metrics`. A `Post`'s own id is not kept.
        """
        ids = []
        with self._lock:
            for post in posts:
                data = post.to_dict() if isinstance(post, Post) else dict(post)
                ids.append(self._add(data).id)
        return ids

    def respond_next(
        self,
        method: str,
        path: str,
        *,
        status: int,
        body: bytes | Mapping[str, Any] = b"",
        headers: Mapping[str, str] | None = None,
        times: int | None = 1,
    ) -> None:
        """Answers the next `times` requests to `path` (None: all) with this response, before
        any check: a recorded X response, or a failure X might give."""
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        all_headers = dict(headers or {})
        all_headers.setdefault("content-type", "application/json; charset=utf-8")
        with self._lock:
            self._canned.setdefault((method.upper(), path), []).append(
                _Canned(status, payload, all_headers, times)
            )

    def tweet(self, tweet_id: str) -> StoredTweet | None:
        with self._lock:
            return self._tweets.get(int(tweet_id)) if tweet_id.isdigit() else None

    def _user(self, user_id: str, username: str, name: str) -> StoredUser:
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = StoredUser(user_id, username, name)
        return user

    def _place(self, full_name: str, country_code: str | None) -> StoredPlace:
        place_id = hashlib.sha256(full_name.lower().encode()).hexdigest()[:16]
        if place_id not in self._places:
            state = full_name.rpartition(", ")[2]
            if country_code is None and state in US_STATES:
                country_code = "US"
            country = "United States" if country_code == "US" else None
            self._places[place_id] = StoredPlace(place_id, full_name, country_code, country)
        return self._places[place_id]

    def _new_id(self, created_at: datetime) -> int:
        sequence = 0
        while (candidate := snowflake(created_at, sequence)) in self._tweets:
            sequence += 1
        return candidate

    def _add(self, data: dict[str, Any]) -> StoredTweet:
        text = data.get("text")
        if not isinstance(text, str):
            raise ValueError("a post needs a text")
        created = data.get("created_at")
        if created is None:
            created_at = self.clock()
        elif isinstance(created, datetime):
            created_at = created.astimezone(UTC)
        else:
            created_at = parse_time(str(created))
        handle = str(data.get("author_handle") or "").lstrip("@") or None
        author_id = data.get("author_id")
        if author_id is None or not str(author_id).isdigit():
            author_id = _stable_number((handle or str(author_id or "anonymous")).lower(), 18)
        user = self._user(
            str(author_id),
            handle or f"user{str(author_id)[-6:]}",
            str(data.get("author_name") or handle or "X user"),
        )
        if data.get("author_followers") is not None:
            user.followers_count = int(data["author_followers"])
        if data.get("verified"):
            user.verified = True
        user.tweet_count += 1
        place = data.get("place")
        place_id = self._place(str(place), data.get("country_code")).id if place else None
        number = self._new_id(created_at)
        reply_to = data.get("in_reply_to_tweet_id")
        parent = self._tweets.get(int(reply_to)) if reply_to and str(reply_to).isdigit() else None
        tweet = StoredTweet(
            id=str(number),
            text=text,
            created_at=created_at,
            author_id=user.id,
            lang=data.get("lang", "en"),
            place_id=place_id,
            retweet=bool(data.get("retweet")) or text.startswith("RT @"),
            quote=bool(data.get("quote")),
            in_reply_to_tweet_id=None if reply_to is None else str(reply_to),
            in_reply_to_user_id=None if parent is None else parent.author_id,
            in_reply_to_username=(
                None if parent is None else self._users[parent.author_id].username.lower()
            ),
            conversation_id=(parent.conversation_id if parent else None) or str(number),
            public_metrics={
                "retweet_count": 0,
                "reply_count": 0,
                "like_count": 0,
                "quote_count": 0,
                "bookmark_count": 0,
                "impression_count": 0,
                **data.get("public_metrics", {}),
            },
        )
        if parent is not None:
            parent.public_metrics["reply_count"] = parent.public_metrics["reply_count"] + 1
        self._tweets[number] = tweet
        self._docs[number] = Doc.of(tweet, user, self._places.get(place_id or ""))
        _insort(self._ids, number)
        return tweet

    # ------------------------------------------------------------------ HTTP

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self._handle(request)
        except ApiError as exc:
            response = _json(exc.status, exc.body, exc.headers)
        except Exception:
            log.exception("X server failed on %s %s", request.method, request.path)
            response = _json(
                500, {"title": "Internal Server Error", "detail": "Internal Server Error"}
            )
        return response(environ, start_response)

    def _handle(self, request: Request) -> Response:
        with self._lock:
            self.requests.append((request.method, request.full_path.rstrip("?")))
            canned = self._take_canned(request.method, request.path)
        if canned is not None:
            return Response(canned.body, status=canned.status, headers=canned.headers)
        if request.path == SEARCH_PATH:
            if request.method != "GET":
                raise _not_found()
            self._require_bearer(request)
            limits = self._rate_limit("search")
            return _json(200, self._search(request.args), limits)
        if request.path == TWEETS_PATH:
            if request.method != "POST":
                raise _not_found()
            self._require_user_context(request)
            limits = self._rate_limit("create")
            return _json(201, self._create(request), limits)
        if request.path.startswith(TWEETS_PATH + "/") and request.method == "DELETE":
            self._require_user_context(request)
            limits = self._rate_limit("delete")
            return _json(200, self._delete(request.path.rpartition("/")[2]), limits)
        raise _not_found()

    def _take_canned(self, method: str, path: str) -> _Canned | None:
        queue = self._canned.get((method, path))
        if not queue:
            return None
        canned = queue[0]
        if canned.times is not None:
            canned.times -= 1
            if canned.times <= 0:
                queue.pop(0)
        return canned

    def _require_bearer(self, request: Request) -> None:
        given = request.headers.get("Authorization", "")
        if given != f"Bearer {self.bearer_token}":
            raise problem(401, "Unauthorized", "Unauthorized")

    def _require_user_context(self, request: Request) -> None:
        given = request.headers.get("Authorization", "")
        if given.startswith("Bearer "):
            raise problem(
                403,
                "Unsupported Authentication",
                "Authenticating with OAuth 2.0 Application-Only is forbidden for this "
                "endpoint.  Supported authentication types are [OAuth 1.0a User Context, "
                "OAuth 2.0 User Context].",
                "https://api.twitter.com/2/problems/unsupported-authentication",
            )
        if not given.startswith("OAuth "):
            raise problem(401, "Unauthorized", "Unauthorized")

    def _rate_limit(self, endpoint: str) -> dict[str, str]:
        limit, window = self.rate_limit or DEFAULT_RATE_LIMIT
        now = self.clock().timestamp()
        with self._lock:
            start, used = self._windows.get(endpoint, (now, 0))
            if now >= start + window:
                start, used = now, 0
            refused = self.rate_limit is not None and used >= limit
            if not refused:
                used += 1
            self._windows[endpoint] = (start, used)
        headers = {
            "x-rate-limit-limit": str(limit),
            "x-rate-limit-remaining": str(max(0, limit - used)),
            "x-rate-limit-reset": str(int(start + window)),
        }
        if refused:
            raise ApiError(
                429,
                {
                    "title": "Too Many Requests",
                    "detail": "Too Many Requests",
                    "type": "about:blank",
                    "status": 429,
                },
                headers,
            )
        return headers

    # ------------------------------------------------------------------ search

    def _search(self, args: Mapping[str, str]) -> dict[str, Any]:
        for name in args:
            if name not in SEARCH_PARAMS:
                raise invalid_request(
                    f"The query parameter [{name}] is not one of [{','.join(SEARCH_PARAMS)}]",
                    name,
                    args[name],
                )
        query = args.get("query")
        if not query:
            raise invalid_request(
                "The `query` query parameter can not be empty", "query", query or ""
            )
        try:
            matcher = parse_query(query)
        except QueryError as exc:
            raise invalid_request(str(exc), "query", query) from None
        max_results = _int_param(args, "max_results", 10)
        if not 10 <= max_results <= 100:
            raise invalid_request(
                f"The `max_results` query parameter value [{max_results}] is not between "
                "10 and 100",
                "max_results",
                str(max_results),
            )
        sort_order = args.get("sort_order", "recency")
        if sort_order not in {"recency", "relevancy"}:
            raise invalid_request(
                f"The `sort_order` query parameter value [{sort_order}] is not one of "
                "[recency,relevancy]",
                "sort_order",
                sort_order,
            )
        selected = {name: _list_param(args, name, allowed) for name, allowed in LIST_PARAMS.items()}
        now = self.clock()
        oldest_allowed = now - SEARCH_WINDOW
        start_time = _time_param(args, "start_time")
        end_time = _time_param(args, "end_time")
        if start_time is not None and start_time < oldest_allowed:
            raise invalid_request(
                f"Invalid 'start_time':'{args['start_time']}'. 'start_time' must be on or "
                f"after {timestamp(oldest_allowed)[:-5]}Z",
                "start_time",
                args["start_time"],
            )
        if end_time is not None and end_time > now - timedelta(seconds=10):
            raise invalid_request(
                f"Invalid 'end_time':'{args['end_time']}'. 'end_time' must be a minimum of "
                "10 seconds prior to the request time.",
                "end_time",
                args["end_time"],
            )
        if start_time is not None and end_time is not None and start_time >= end_time:
            raise invalid_request(
                f"Invalid 'start_time':'{args['start_time']}'. 'start_time' must be before "
                f"'end_time':'{args['end_time']}'",
                "start_time",
                args["start_time"],
            )
        since_id = _id_param(args, "since_id")
        until_id = _id_param(args, "until_id")
        if since_id is not None and since_id < snowflake(oldest_allowed):
            raise invalid_request(
                f"Invalid 'since_id':'{since_id}'. 'since_id' must be a tweet id created "
                f"after {timestamp(oldest_allowed)[:-5]}Z.",
                "since_id",
                str(since_id),
            )
        token_name = "next_token" if "next_token" in args else "pagination_token"
        cursor = _decode_token(args.get(token_name), token_name)
        lower = max(start_time or oldest_allowed, oldest_allowed)
        found: list[StoredTweet] = []
        more = False
        with self._lock:
            for number in reversed(self._ids):
                tweet = self._tweets[number]
                if cursor is not None and number >= cursor:
                    continue
                if until_id is not None and number >= until_id:
                    continue
                if since_id is not None and number <= since_id:
                    break
                if tweet.created_at > now or (end_time and tweet.created_at >= end_time):
                    continue
                if tweet.created_at < lower:
                    break
                if not matcher(self._docs[number]):
                    continue
                if len(found) == max_results:
                    more = True
                    break
                found.append(tweet)
            return self._render(found, more, selected)

    def _render(
        self, found: list[StoredTweet], more: bool, selected: dict[str, frozenset[str]]
    ) -> dict[str, Any]:
        if not found:
            return {"meta": {"result_count": 0}}
        expansions = selected["expansions"]
        tweet_fields = selected["tweet.fields"]
        data = [self._render_tweet(t, tweet_fields, expansions) for t in found]
        includes: dict[str, list[dict[str, Any]]] = {}
        if "author_id" in expansions:
            authors = dict.fromkeys(t.author_id for t in found)
            includes["users"] = [
                _render_user(self._users[a], selected["user.fields"]) for a in authors
            ]
        if "geo.place_id" in expansions:
            place_ids = dict.fromkeys(t.place_id for t in found if t.place_id)
            if place_ids:
                includes["places"] = [
                    _render_place(self._places[p], selected["place.fields"]) for p in place_ids
                ]
        body: dict[str, Any] = {"data": data}
        if includes:
            body["includes"] = includes
        meta: dict[str, Any] = {
            "newest_id": found[0].id,
            "oldest_id": found[-1].id,
            "result_count": len(found),
        }
        if more:
            meta["next_token"] = _encode_token(int(found[-1].id))
        body["meta"] = meta
        return body

    def _render_tweet(
        self, tweet: StoredTweet, fields: frozenset[str], expansions: frozenset[str]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "edit_history_tweet_ids": [tweet.id],
            "id": tweet.id,
            "text": tweet.text,
        }
        # An expansion brings the field it expands, as on X.
        if "author_id" in fields or "author_id" in expansions:
            out["author_id"] = tweet.author_id
        if "created_at" in fields:
            out["created_at"] = timestamp(tweet.created_at)
        if "lang" in fields and tweet.lang:
            out["lang"] = tweet.lang
        if ("geo" in fields or "geo.place_id" in expansions) and tweet.place_id:
            out["geo"] = {"place_id": tweet.place_id}
        if "public_metrics" in fields:
            out["public_metrics"] = dict(tweet.public_metrics)
        if "conversation_id" in fields:
            out["conversation_id"] = tweet.conversation_id
        if "in_reply_to_user_id" in fields and tweet.in_reply_to_user_id:
            out["in_reply_to_user_id"] = tweet.in_reply_to_user_id
        if "referenced_tweets" in fields and tweet.in_reply_to_tweet_id:
            out["referenced_tweets"] = [{"type": "replied_to", "id": tweet.in_reply_to_tweet_id}]
        if "possibly_sensitive" in fields:
            out["possibly_sensitive"] = False
        if "reply_settings" in fields:
            out["reply_settings"] = "everyone"
        return out

    # ------------------------------------------------------------------ posting

    def _create(self, request: Request) -> dict[str, Any]:
        try:
            body = json.loads(request.get_data(as_text=True) or "null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise invalid_request("The request body is not a JSON object")
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise invalid_request("$.text: is missing but it is required", "text", "")
        if tweet_weight(text) > MAX_TWEET_WEIGHT:
            raise problem(
                403,
                "Forbidden",
                "Your Tweet text is too long. For more information on how X determines text "
                "length see https://github.com/twitter/twitter-text.",
            )
        reply = body.get("reply") or {}
        reply_to = reply.get("in_reply_to_tweet_id") if isinstance(reply, dict) else None
        with self._lock:
            if reply_to is not None and self.tweet(str(reply_to)) is None:
                raise problem(
                    403,
                    "Forbidden",
                    "You attempted to reply to a Tweet that is deleted or not visible to you.",
                )
            mine = {c.text for c in self.created}
            if text in mine:
                raise problem(
                    403,
                    "Forbidden",
                    "You are not allowed to create a Tweet with duplicate content.",
                )
            tweet = self._add(
                {
                    "text": text,
                    "created_at": self.clock(),
                    "author_id": self.account.id,
                    "author_handle": self.account.username,
                    "in_reply_to_tweet_id": reply_to,
                }
            )
            self.created.append(
                CreatedTweet(
                    tweet.id,
                    text,
                    tweet.created_at,
                    None if reply_to is None else str(reply_to),
                    body,
                )
            )
        return {"data": {"id": tweet.id, "text": text, "edit_history_tweet_ids": [tweet.id]}}

    def _delete(self, tweet_id: str) -> dict[str, Any]:
        with self._lock:
            tweet = self.tweet(tweet_id)
            if tweet is None or tweet.author_id != self.account.id:
                raise problem(
                    403, "Forbidden", "You are not allowed to delete a Tweet that is not yours."
                )
            number = int(tweet.id)
            del self._tweets[number]
            del self._docs[number]
            self._ids.remove(number)
        return {"data": {"deleted": True}}


def _render_user(user: StoredUser, fields: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": user.id, "name": user.name, "username": user.username}
    if "public_metrics" in fields:
        out["public_metrics"] = {
            "followers_count": user.followers_count,
            "following_count": user.following_count,
            "tweet_count": user.tweet_count,
            "listed_count": 0,
            "like_count": 0,
            "media_count": 0,
        }
    if "created_at" in fields:
        out["created_at"] = timestamp(user.created_at)
    if "verified" in fields:
        out["verified"] = user.verified
    if "protected" in fields:
        out["protected"] = False
    if "description" in fields:
        out["description"] = ""
    return out


def _render_place(place: StoredPlace, fields: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"full_name": place.full_name, "id": place.id}
    if "country_code" in fields and place.country_code:
        out["country_code"] = place.country_code
    if "country" in fields and place.country:
        out["country"] = place.country
    if "name" in fields:
        out["name"] = place.full_name.partition(",")[0]
    if "place_type" in fields:
        out["place_type"] = "city"
    return out


def _json(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False),
        status=status,
        headers=dict(headers or {}),
        content_type="application/json; charset=utf-8",
    )


def _not_found() -> ApiError:
    return ApiError(404, {"errors": [{"message": "Sorry, that page does not exist", "code": 34}]})


def _int_param(args: Mapping[str, str], name: str, default: int) -> int:
    raw = args.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise invalid_request(
            f"The `{name}` query parameter value [{raw}] is not a number", name, raw
        ) from None


def _id_param(args: Mapping[str, str], name: str) -> int | None:
    raw = args.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise invalid_request(
            f"The `{name}` query parameter value [{raw}] does not match ^[0-9]{{1,19}}$", name, raw
        )
    return int(raw)


def _time_param(args: Mapping[str, str], name: str) -> datetime | None:
    raw = args.get(name)
    if raw is None:
        return None
    try:
        return parse_time(raw)
    except ValueError:
        raise invalid_request(
            f"The `{name}` query parameter value [{raw}] is not a valid RFC 3339 date-time",
            name,
            raw,
        ) from None


def _list_param(args: Mapping[str, str], name: str, allowed: frozenset[str]) -> frozenset[str]:
    raw = args.get(name)
    if not raw:
        return frozenset()
    values = [v.strip() for v in raw.split(",") if v.strip()]
    for value in values:
        if value not in allowed:
            raise invalid_request(
                f"The `{name}` query parameter value [{value}] is not one of "
                f"[{','.join(sorted(allowed))}]",
                name,
                value,
            )
    return frozenset(values)


_CURSOR_PREFIX = "fwx1"


def _encode_token(cursor: int) -> str:
    # Opaque like X's, and checked, so that a made-up token is refused as X would.
    check = int(hashlib.sha256(str(cursor).encode()).hexdigest()[:4], 16)
    return _CURSOR_PREFIX + _base36(cursor << 16 | check)


def _decode_token(token: str | None, name: str) -> int | None:
    if token is None:
        return None
    try:
        cursor = int(token.removeprefix(_CURSOR_PREFIX), 36) >> 16
    except ValueError:
        cursor = -1
    if cursor < 0 or _encode_token(cursor) != token:
        raise invalid_request(
            f"The `{name}` query parameter value [{token}] is not valid", name, token
        )
    return cursor


def _insort(ids: list[int], number: int) -> None:
    # Posts mostly arrive in time order: append, and sort only when one is late.
    ids.append(number)
    if len(ids) > 1 and ids[-2] > number:
        ids.sort()
