"""Watched topics: what the scan asks X for, and which customers an issue on it concerns."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from chalicelib.errors import BadRequest
from chalicelib.posts import Topic
from chalicelib.signals_store import SignalTables

TOPIC_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MAX_QUERY = 512  # X's limit for a recent-search query


def parse_topic(topic_id: str, payload: object) -> Topic:
    if not TOPIC_ID.match(topic_id):
        raise BadRequest("topic id must be 1 to 63 lower-case letters, digits or dashes")
    if not isinstance(payload, Mapping):
        raise BadRequest("request body must be a JSON object")
    unknown = sorted(set(payload) - {"query", "services", "places"})
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(map(str, unknown))}")
    query = payload.get("query")
    if not isinstance(query, str) or not 1 <= len(query.strip()) <= MAX_QUERY:
        raise BadRequest(f"query must be a string of 1 to {MAX_QUERY} characters")
    services = payload.get("services", [])
    if not isinstance(services, list) or not all(isinstance(s, str) and s for s in services):
        raise BadRequest("services must be a list of service names")
    places = payload.get("places", {})
    if not isinstance(places, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in places.items()
    ):
        raise BadRequest('places must map place names to regions, e.g. {"Dallas, TX": "south"}')
    return Topic(
        id=topic_id,
        query=query.strip(),
        services=tuple(dict.fromkeys(services)),
        places={k.strip().lower(): v for k, v in places.items()},
    )


def topic_view(topic: Topic, state: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "topic_id": topic.id,
        "query": topic.query,
        "services": list(topic.services),
        "places": dict(topic.places),
        "checkpoint": dict(state.get("checkpoint") or {}),
    }


def put_topic(signals: SignalTables, topic_id: str, payload: object) -> dict[str, Any]:
    topic = parse_topic(topic_id, payload)
    signals.put_topic(topic)
    return topic_view(topic, signals.topic_state(topic.id))


def list_topics(signals: SignalTables) -> dict[str, Any]:
    return {"topics": [topic_view(t, signals.topic_state(t.id)) for t in signals.topics()]}
