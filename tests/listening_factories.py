"""Posts for listening tests: ordinary chatter, an outage that builds up, a viral burst."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from chalicelib.posts import Post, Topic

TOPIC = Topic(
    "acme",
    query="@AcmeTel OR #AcmeDown",
    services=("mobile",),
    places={"dallas, tx": "south", "fort worth, tx": "south"},
)

CHATTER = (
    "@AcmeTel what time does the store on Main St open?",
    "@AcmeTel how do I change my plan online",
    "@AcmeTel thanks, the new phone arrived today",
    "@AcmeTel is there a family discount this month?",
    "@AcmeTel love the new app update",
    "@AcmeTel can I keep my number if I move states",
)
OUTAGE = (
    "@AcmeTel no signal in Dallas for an hour, is the network down?",
    "@AcmeTel network outage again?? no service at all, this is terrible",
    "@AcmeTel still no signal and on hold for 40 minutes. awful",
    "is @AcmeTel down? no internet and no signal since noon, so frustrating",
    "@AcmeTel outage in my area, phone says no service. useless",
)
VIRAL = (
    "@AcmeTel this ad is amazing, best commercial ever!",
    "love the new @AcmeTel commercial, so funny and sweet",
    "@AcmeTel great ad, made my day :)",
)


class PostMaker:
    def __init__(self, topic: Topic = TOPIC, seed: int = 3) -> None:
        self.topic = topic
        self.rng = random.Random(seed)
        self.next_id = 1_000_000

    def post(
        self,
        at: datetime,
        text: str,
        *,
        followers: int = 120,
        place: str | None = None,
        author: str | None = None,
    ) -> Post:
        self.next_id += 1
        return Post(
            id=str(self.next_id),
            topic=self.topic.id,
            text=text,
            created_at=at,
            author_id=f"u{self.next_id}",
            author_handle=author or f"user{self.next_id % 997}",
            author_followers=followers,
            lang="en",
            place=place,
        )

    def burst(
        self,
        start: datetime,
        minutes: int,
        per_minute: int,
        texts: tuple[str, ...],
        places: tuple[str | None, ...] = (None,),
    ) -> list[Post]:
        return [
            self.post(
                start + timedelta(minutes=m, seconds=self.rng.randrange(60)),
                self.rng.choice(texts),
                place=self.rng.choice(places),
            )
            for m in range(minutes)
            for _ in range(per_minute)
        ]

    def chatter(self, start: datetime, minutes: int, per_minute: int = 2) -> list[Post]:
        return self.burst(start, minutes, per_minute, CHATTER)

    def outage(self, start: datetime, minutes: int, per_minute: int = 12) -> list[Post]:
        places = ("Dallas, TX", "Dallas, TX", "Fort Worth, TX", None)
        return self.burst(start, minutes, per_minute, OUTAGE, places)

    def viral(self, start: datetime, minutes: int, per_minute: int = 25) -> list[Post]:
        return self.burst(start, minutes, per_minute, VIRAL)


HOSTILE_TEXTS = (
    '@AcmeTel <script>window.__pwned = 1; alert("x")</script> no signal',
    '@AcmeTel <img src=x onerror="window.__pwned = 1"> still down',
)


def flag_post(
    post_id: str,
    text: str,
    *,
    handle: str = "kim",
    followers: int = 120,
    label: str = "negative",
    reason: str = "complaint",
    issue_id: str | None = None,
) -> None:
    """A flagged post in the tables, as a scan leaves it."""
    from chalicelib.emerging import ScoredPost
    from chalicelib.runtime import signals
    from chalicelib.sentiment import Sentiment

    post = Post(
        id=post_id,
        topic=TOPIC.id,
        text=text,
        created_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        author_id=f"u-{handle}",
        author_handle=handle,
        author_followers=followers,
    )
    signals().flag(ScoredPost(post, Sentiment(label, -0.6, ("down",))), reason, issue_id)
