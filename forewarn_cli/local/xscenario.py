"""The demo's social feed: ordinary chatter about the brand, a viral marketing moment that is
not an outage, then an outage in Dallas that builds within minutes.

`demo_scenario` is deterministic for a seed; `ScenarioFeeder` publishes its posts into an
`XServer` as their time comes, so the real scan (tweepy against the local X API) finds them.
Time is compressed: the outage goes from a couple of posts a minute to about twenty in three
minutes, which in life would take a quarter of an hour.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from chalicelib.domain import utcnow

BRAND_PHRASE = "Forewarn Telecom"
OUTAGE_TAG = "#ForewarnDown"

CHATTER = "chatter"
HOSTILE = "hostile"
BRAND = "brand"
VIRAL = "viral"
RETWEET = "retweet"
OUTAGE = "outage"

HISTORY = timedelta(hours=2)
VIRAL_AFTER_S = 30
VIRAL_SECONDS = 25
RAMP_SECONDS = 180
PEAK_SECONDS = 120
CHATTER_AFTER_PEAK_SECONDS = 120
OUTAGE_START_PER_MINUTE = 2.0
OUTAGE_PEAK_PER_MINUTE = 22.0


def topic_query(brand_handle: str = "ForewarnTel") -> str:
    # Parenthesised: X applies AND before OR, so without them `-is:retweet` would bind to
    # the last alternative only and let retweets of the other two through.
    return f'(@{brand_handle} OR "{BRAND_PHRASE}" OR {OUTAGE_TAG}) -is:retweet'


TOPIC_QUERY = topic_query()


@dataclass(frozen=True)
class ScheduledPost:
    publish_at: datetime  # when the feeder makes it visible
    created_at: datetime  # what X says; before `publish_at` only for the history
    text: str
    kind: str  # CHATTER, HOSTILE, BRAND, VIRAL, RETWEET or OUTAGE
    author_handle: str
    author_name: str
    author_followers: int
    place: str | None = None
    lang: str = "en"
    retweet: bool = False
    quote: bool = False

    def to_publish(self) -> dict[str, Any]:
        """The mapping `XServer.publish` takes."""
        return {
            "text": self.text,
            "created_at": self.created_at,
            "author_handle": self.author_handle,
            "author_name": self.author_name,
            "author_followers": self.author_followers,
            "place": self.place,
            "lang": self.lang,
            "retweet": self.retweet,
            "quote": self.quote,
        }


# --------------------------------------------------------------------------- people

FIRST = (
    "Ana", "Ben", "Carla", "Dev", "Elena", "Femi", "Grace", "Hank", "Imani", "Jorge", "Kayla",
    "Luis", "Maya", "Nate", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tasha", "Uma", "Vic",
    "Wes", "Xin", "Yara", "Zack",
)  # fmt: skip
LAST = (
    "Reyes", "Patel", "Nguyen", "Johnson", "Okafor", "Kim", "Garcia", "Brooks", "Haddad",
    "Miller", "Silva", "Wright", "Lopez", "Chen", "Davis",
)  # fmt: skip
# Accounts with a large following, whose complaints reach many people.
INFLUENCERS = (
    ("DFWNewsDesk", "DFW News Desk", 182_000),
    ("NTXTraffic", "North Texas Traffic", 64_500),
    ("GadgetGwen", "Gwen | gadgets", 51_200),
    ("dallas_dan", "Dan from Dallas", 88_000),
)


@dataclass(frozen=True)
class _Author:
    handle: str
    name: str
    followers: int


def _people(rng: random.Random, count: int) -> list[_Author]:
    people: dict[str, _Author] = {}
    while len(people) < count:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        style = rng.randrange(3)
        handle = (
            f"{first}{last}{rng.randrange(10, 99)}"
            if style == 0
            else f"{first.lower()}_{last.lower()}"
            if style == 1
            else f"{first[0].lower()}{last.lower()}{rng.randrange(1, 999)}"
        )
        # Most people have a few hundred followers; the tail is long.
        followers = int(min(40_000, rng.lognormvariate(5.3, 1.2)))
        people[handle] = _Author(handle, f"{first} {last}", followers)
    return list(people.values())


def _author(rng: random.Random, people: Sequence[_Author], influencer_share: float) -> _Author:
    if rng.random() < influencer_share:
        return _Author(*rng.choice(INFLUENCERS))
    return rng.choice(people)


# --------------------------------------------------------------------------- texts

CITIES = ("Austin, TX", "Houston, TX", "San Antonio, TX", "Dallas, TX", "Tulsa, OK", "Denver, CO")
DFW = ("Dallas", "Fort Worth", "Plano", "Irving", "Arlington", "Garland")
CHATTER_TEMPLATES = (
    # questions
    "{b} does the Unlimited Plus plan include hotspot?",
    "{b} how do I move my plan to a new address in {city}?",
    "{b} is fiber coming to {city} this year?",
    "Thinking about switching to {brand}. Anyone in {city} using them?",
    "{b} can I keep my number if I port from another carrier?",
    "{b} what time does the store on Main St open on Saturdays?",
    # praise
    "Switched to {brand} last month and the speeds in {city} are great {happy}",
    "{b} shoutout to Jess in support, fixed my billing in 5 minutes {happy}",
    "{b} the new app update is really smooth, nice work",
    "Honestly {brand} has been solid for me for {years} years",
    "{b} thanks for the quick install today, tech was super friendly",
    # mild gripes, none of them about service being down
    "{b} my bill went up ${dollars} again, why?",
    "{b} the app keeps logging me out every time I open it",
    "{b} why is the paperless discount only ${dollars}? {meh}",
    "{b} waited {minutes} minutes in the store for a SIM swap {meh}",
    "{b} please stop sending me promo texts at 8am",
)
HAPPY = ("🙌", "!", "👍", "10/10", "😊", "")
MEH = ("🙄", "meh", "come on", "", "smh")
HOSTILE_TEXTS = (
    "{b} <script>alert(1)</script> is your chat widget supposed to show this?",
    "lol {b} your help page rendered <img src=x onerror=alert(1)> for me",
    '{b} "><svg onload=alert(document.cookie)> asking for a friend',
)
MARKETING = (
    "Big news: Forewarn Fiber 2 Gig is now live in 40 more cities, same price. 🚀 #ForewarnFiber"
)
PRAISE_TEMPLATES = (
    "This is huge!! {b} 2 gig fiber in my city {happy}",
    "finally! great move {b}, signing up tonight",
    "{brand} just keeps getting better {happy}",
    "{b} same price for 2 gig?? take my money {happy}",
    "Love this from {b}. Fiber 2 Gig in {city} {happy}",
    "{b} best telecom news this year, well done",
    "congrats {b}, my upload speeds are about to be amazing {happy}",
    "wow {brand} 2 gig fiber, that's a great deal {happy}",
)
OUTAGE_TEMPLATES = (
    "{b} no signal in {area} since {minutes} min",
    "is {b} down?? no internet {tail}",
    "still no service, on hold for {minutes} minutes {b}",
    "{b} internet AND phone both dead in {area} {tail}",
    "{tag} whole neighborhood offline in {area}",
    "anyone else in {area} lose {brand}? no signal at all",
    "{b} outage?? router light is red, {minutes} min now",
    "{b} my {device} says No Service. {area}. {tail}",
    "{brand} down in {area}?? can't work from home {tail}",
    "{b} no internet since {clock}. what is going on",
    "{b} support line says {minutes} min wait. internet is out in {area}",
    "{b} is there an outage near {area}? everything dropped",
    "{tag} no bars, no wifi, nothing. {area} {tail}",
    "{b} {minutes} minutes without service in {area}, any ETA?",
)
INFLUENCER_OUTAGE = (
    "Reports of a {b} outage across {area}: many customers say they have no service. {tag}",
    "Heads up {area}: {brand} customers reporting no signal and no internet right now",
)
TAILS = ("", "!!", "😤", "ugh", "seriously", "help", "🙃", "again??", "wtf")
DEVICES = ("phone", "iPhone", "Pixel", "router", "modem", "tablet")


class _Texts:
    """Fills templates so that no text repeats verbatim, as real posts rarely do."""

    def __init__(self, rng: random.Random, brand_handle: str) -> None:
        self.rng = rng
        self.brand_handle = brand_handle
        self.seen: set[str] = set()

    def make(self, templates: Sequence[str], **slots: str) -> str:
        rng = self.rng
        for attempt in range(50):
            values = {
                "b": f"@{self.brand_handle}",
                "brand": BRAND_PHRASE,
                "tag": OUTAGE_TAG,
                "city": rng.choice(CITIES).partition(",")[0],
                "area": rng.choice(DFW),
                "happy": rng.choice(HAPPY),
                "meh": rng.choice(MEH),
                "tail": rng.choice(TAILS),
                "device": rng.choice(DEVICES),
                "minutes": str(rng.randrange(5, 65)),
                "dollars": str(rng.randrange(3, 25)),
                "years": str(rng.randrange(2, 12)),
                "clock": f"{rng.randrange(7, 11)}:{rng.randrange(0, 60):02d}",
                **slots,
            }
            text = " ".join(rng.choice(templates).format(**values).split())
            if attempt > 20:
                text = f"{text} ({attempt})"  # templates exhausted; a human would add noise
            if text not in self.seen:
                self.seen.add(text)
                return text
        raise RuntimeError("could not make a new text")


# --------------------------------------------------------------------------- the scenario


def demo_scenario(
    now: datetime,
    *,
    brand_handle: str = "ForewarnTel",
    outage_after_s: float = 60,
    seed: int = 7,
) -> list[ScheduledPost]:
    """The demo's posts, ordered by `publish_at`.

    * The last two hours of chatter (1-3 posts a minute: questions, praise, mild gripes, and
      two or three texts with HTML in them), all published at `now`; chatter goes on at the
      same rate until the end.
    * From 30 s: the brand's marketing post goes viral for about 25 s: praise and plain
      retweets (which the topic query excludes), many posts but no complaints.
    * From `outage_after_s`: an outage in Dallas-Fort Worth, from 2 to about 22 posts a
      minute over 3 minutes, then 2 minutes at that rate. Most posts are placed in
      "Dallas, TX", some in "Fort Worth, TX", the rest have no place; a few come from
      accounts with 50k+ followers.
    """
    rng = random.Random(seed)
    texts = _Texts(rng, brand_handle)
    people = _people(rng, 160)
    posts: list[ScheduledPost] = []

    def add(
        at: datetime,
        text: str,
        kind: str,
        author: _Author,
        *,
        place: str | None = None,
        published: datetime | None = None,
        retweet: bool = False,
        quote: bool = False,
    ) -> None:
        posts.append(
            ScheduledPost(
                publish_at=published or at,
                created_at=at,
                text=text,
                kind=kind,
                author_handle=author.handle,
                author_name=author.name,
                author_followers=author.followers,
                place=place,
                retweet=retweet,
                quote=quote,
            )
        )

    outage_start = now + timedelta(seconds=outage_after_s)
    end = outage_start + timedelta(seconds=RAMP_SECONDS + PEAK_SECONDS + CHATTER_AFTER_PEAK_SECONDS)

    # Chatter, past and ongoing.
    minute = now - HISTORY
    while minute < end:
        for _ in range(rng.randint(1, 3)):
            at = minute + timedelta(seconds=rng.uniform(0, 60))
            if at >= end:
                continue
            place = rng.choice(CITIES) if rng.random() < 0.3 else None
            add(
                at,
                texts.make(CHATTER_TEMPLATES),
                CHATTER,
                _author(rng, people, 0.02),
                place=place,
                published=max(at, now),
            )
        minute += timedelta(minutes=1)

    for index, template in enumerate(HOSTILE_TEXTS):
        at = now - HISTORY * (0.8 - 0.3 * index) + timedelta(seconds=rng.uniform(0, 30))
        add(at, texts.make((template,)), HOSTILE, rng.choice(people), published=now)

    # The viral moment: the brand's post, retweets and praise.
    brand = _Author(brand_handle, BRAND_PHRASE, 250_000)
    viral_start = now + timedelta(seconds=VIRAL_AFTER_S)
    add(viral_start, MARKETING, BRAND, brand)
    for _ in range(44):
        at = viral_start + timedelta(seconds=rng.uniform(1, VIRAL_SECONDS))
        author = _author(rng, people, 0.05)
        if rng.random() < 0.5:
            text = f"RT @{brand_handle}: {MARKETING}"
            add(at, text, RETWEET, author, retweet=True)
        else:
            place = rng.choice(CITIES) if rng.random() < 0.3 else None
            add(at, texts.make(PRAISE_TEMPLATES), VIRAL, author, place=place, quote=True)

    # The outage, in 5-second slots with a Poisson count each.
    slot = 5.0
    elapsed = 0.0
    while elapsed < RAMP_SECONDS + PEAK_SECONDS:
        per_minute = OUTAGE_START_PER_MINUTE + (
            OUTAGE_PEAK_PER_MINUTE - OUTAGE_START_PER_MINUTE
        ) * min(1.0, elapsed / RAMP_SECONDS)
        for _ in range(_poisson(rng, per_minute * slot / 60)):
            at = outage_start + timedelta(seconds=elapsed + rng.uniform(0, slot))
            roll = rng.random()
            place = "Dallas, TX" if roll < 0.6 else "Fort Worth, TX" if roll < 0.75 else None
            area = place.partition(",")[0] if place else rng.choice(DFW)
            author = _author(rng, people, 0.0)
            templates: Sequence[str] = OUTAGE_TEMPLATES
            if rng.random() < 0.06:
                author = _Author(*rng.choice(INFLUENCERS))
                templates = INFLUENCER_OUTAGE
            add(at, texts.make(templates, area=area), OUTAGE, author, place=place)
        elapsed += slot

    posts.sort(key=lambda post: (post.publish_at, post.created_at))
    return posts


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method; the means here are small.
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


# --------------------------------------------------------------------------- the feeder


class Publisher(Protocol):
    def publish(self, *posts: Any) -> list[str]: ...


class ScenarioFeeder:
    """Publishes each post of a scenario into the server once `clock()` reaches its time."""

    def __init__(
        self,
        server: Publisher,
        scenario: Sequence[ScheduledPost],
        clock: Callable[[], datetime] = utcnow,
        *,
        poll_seconds: float = 0.1,
    ) -> None:
        self.server = server
        self.clock = clock
        self.poll_seconds = poll_seconds
        self._pending = sorted(scenario, key=lambda post: post.publish_at)
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.done = threading.Event()
        if not self._pending:
            self.done.set()

    @property
    def published(self) -> int:
        return self._next

    def publish_due(self, now: datetime | None = None) -> int:
        """Publishes what is due by `now` (default `clock()`); returns how many."""
        moment = self.clock() if now is None else now
        with self._lock:
            start = self._next
            end = start
            while end < len(self._pending) and self._pending[end].publish_at <= moment:
                end += 1
            if end > start:
                self.server.publish(*(post.to_publish() for post in self._pending[start:end]))
                self._next = end
            if self._next == len(self._pending):
                self.done.set()
            return end - start

    def start(self) -> ScenarioFeeder:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="x-scenario", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set() and not self.done.is_set():
            self.publish_due()
            # The clock may be compressed or frozen, so poll it rather than sleep until due.
            self._stop.wait(self.poll_seconds)
