"""Social posts as the listening flow sees them, whatever source they came from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chalicelib.domain import iso


@dataclass(frozen=True)
class Post:
    """One public post about a watched topic.

    `text` is untrusted: it is stored and shown as-is and escaped wherever it is rendered.
    """

    id: str
    topic: str
    text: str
    created_at: datetime  # timezone-aware, UTC
    author_id: str | None = None
    author_handle: str | None = None
    author_followers: int | None = None
    lang: str | None = None
    place: str | None = None  # the place's full name as the source gave it, e.g. "Dallas, TX"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "topic": self.topic,
            "text": self.text,
            "created_at": iso(self.created_at),
            "author_id": self.author_id,
            "author_handle": self.author_handle,
            "author_followers": self.author_followers,
            "lang": self.lang,
            "place": self.place,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Post:
        followers = data.get("author_followers")
        return cls(
            id=str(data["id"]),
            topic=str(data["topic"]),
            text=str(data["text"]),
            created_at=parse_time(str(data["created_at"])),
            author_id=_opt(data.get("author_id")),
            author_handle=_opt(data.get("author_handle")),
            author_followers=None if followers is None else int(followers),
            lang=_opt(data.get("lang")),
            place=_opt(data.get("place")),
        )


@dataclass(frozen=True)
class Topic:
    """A watched brand: the search query sent to X and where its audience lives."""

    id: str
    query: str
    # Our services whose customers an issue on this topic affects.
    services: tuple[str, ...] = ()
    # Lower-case place names (as X gives them, e.g. "dallas, tx") to our region names, so an
    # issue with located posts can draft a broadcast for the region's customers only.
    places: Mapping[str, str] = field(default_factory=dict)

    def region_of(self, place: str | None) -> str | None:
        return self.places.get(place.strip().lower()) if place else None


def parse_time(text: str) -> datetime:
    """ISO 8601 (with `Z` or an offset) or `2015-02-22 14:14:14 -0800`, as UTC."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    elif len(value) > 6 and value[-6] == " " and value[-5] in "+-":
        value = value[:-6] + value[-5:]  # "... 14:14:14 -0800": fromisoformat wants no space
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a UTC offset: {text!r}")
    return moment.astimezone(UTC)


def _opt(value: object) -> str | None:
    return None if value is None or value == "" else str(value)
