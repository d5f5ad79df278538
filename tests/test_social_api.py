"""Topics, emerging issues and flagged posts through the HTTP API, and the hand-off to ops."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from chalice.test import Client
from conftest import Stack
from factories import customer
from listening_factories import TOPIC, PostMaker
from test_api import call

import app as forewarn_app
from chalicelib.emerging import Policy
from chalicelib.listening import Listener, scan
from chalicelib.replay import ReplaySource
from chalicelib.runtime import services, signals

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
POLICY = Policy(bucket_seconds=60)


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    with Client(forewarn_app.app) as test_client:
        yield test_client


@pytest.fixture
def issue_id(client: Client) -> str:
    """An outage scanned into the tables: one open issue with flagged posts."""
    status, _ = call(
        client,
        "PUT",
        "/api/topics/acme",
        {"query": TOPIC.query, "services": ["mobile"], "places": {"Dallas, TX": "south"}},
    )
    assert status == 200
    maker = PostMaker()
    posts = maker.chatter(START, 120) + maker.outage(START + timedelta(minutes=120), 4)
    now = START + timedelta(minutes=126)
    scan(
        Listener(signals(), POLICY),
        signals(),
        ReplaySource(posts, lambda: now),
        backfill_seconds=3 * 3600,
        now=lambda: now,
    )
    issues = signals().issues("open")
    assert issues
    return issues[0].issue_id


def test_topics_are_validated_and_listed_with_their_checkpoint(client: Client) -> None:
    assert call(client, "PUT", "/api/topics/Bad Id", {"query": "x"})[0] == 400
    assert call(client, "PUT", "/api/topics/acme", {"query": ""})[0] == 400
    status, body = call(client, "PUT", "/api/topics/acme", {"query": "x", "places": ["Dallas"]})
    assert status == 400
    assert "places" in body["error"]["message"]
    status, body = call(
        client, "PUT", "/api/topics/acme", {"query": "@AcmeTel", "services": ["tv"]}
    )
    assert status == 200
    assert body["services"] == ["tv"]
    status, body = call(client, "GET", "/api/topics", role="social")
    assert status == 200
    assert [t["topic_id"] for t in body["topics"]] == ["acme"]


def test_the_social_team_lists_and_filters_flags_and_dismisses_one(
    client: Client, issue_id: str
) -> None:
    status, body = call(client, "GET", f"/api/flags?issue={issue_id}", role="social")
    assert status == 200
    flags = body["flags"]
    assert flags
    assert all(f["issue_id"] == issue_id and f["state"] == "open" for f in flags)
    assert call(client, "GET", "/api/flags?sentiment=positive", role="social")[1]["flags"] == []
    assert call(client, "GET", "/api/flags?state=bogus", role="social")[0] == 400
    assert call(client, "GET", "/api/flags?limit=0", role="social")[0] == 400

    post_id = flags[0]["post"]["id"]
    status, body = call(client, "POST", f"/api/flags/{post_id}/dismiss", role="social")
    assert status == 200
    assert body["state"] == "dismissed"
    assert body["decided_by"] == "tester"
    remaining = call(client, "GET", f"/api/flags?issue={issue_id}", role="social")[1]["flags"]
    assert post_id not in [f["post"]["id"] for f in remaining]
    assert call(client, "POST", f"/api/flags/{post_id}/explode", role="social")[0] == 404
    assert call(client, "POST", "/api/flags/nope/handle", role="social")[0] == 404


def test_flags_page_with_a_cursor_without_repeats(client: Client, issue_id: str) -> None:
    seen: list[str] = []
    cursor = ""
    for _ in range(50):
        status, body = call(client, "GET", f"/api/flags?limit=7{cursor}", role="social")
        assert status == 200
        seen += [f["post"]["id"] for f in body["flags"]]
        if not body["next_cursor"]:
            break
        cursor = f"&cursor={body['next_cursor']}"
    assert len(seen) == len(set(seen)) > 7
    assert call(client, "GET", "/api/flags?cursor=garbage", role="social")[0] == 400


def test_an_issue_becomes_an_incident_with_a_drafted_broadcast_once(
    client: Client, issue_id: str
) -> None:
    status, body = call(client, "GET", f"/api/emerging/{issue_id}", role="social")
    assert status == 200
    assert body["region"] == "south"
    status, first = call(client, "POST", f"/api/emerging/{issue_id}/incident")
    assert status == 201
    incident = first["incident"]
    assert incident["services"] == ["mobile"]
    assert incident["regions"] == ["south"]
    assert first["broadcast"]["status"] == "draft"
    assert first["broadcast"]["audience"]["regions"] == ["south"]
    assert first["flags_linked"] > 0
    again = call(client, "POST", f"/api/emerging/{issue_id}/incident")[1]
    assert again["incident"]["incident_id"] == incident["incident_id"]
    assert again["broadcast"]["broadcast_id"] == first["broadcast"]["broadcast_id"]
    linked = call(client, "GET", f"/api/flags?issue={issue_id}", role="social")[1]["flags"]
    assert {f["incident_id"] for f in linked} == {incident["incident_id"]}
    assert (
        call(client, "GET", f"/api/emerging/{issue_id}")[1]["incident_id"]
        == (incident["incident_id"])
    )


def test_the_drafted_broadcast_reaches_only_the_issue_region(client: Client, issue_id: str) -> None:
    store = services().store
    store.load_new_customers(
        [
            customer(1, services=[("mobile", "south", "80331")]),
            customer(2, services=[("mobile", "north", "10115")]),
        ]
    )
    draft = call(client, "POST", f"/api/emerging/{issue_id}/incident")[1]["broadcast"]
    status, preview = call(client, "GET", f"/api/broadcasts/{draft['broadcast_id']}/preview")
    assert status == 200
    assert preview["recipients"]["total"] == 1


def test_a_flag_links_to_an_existing_incident_only(client: Client, issue_id: str) -> None:
    post_id = call(client, "GET", "/api/flags", role="social")[1]["flags"][0]["post"]["id"]
    status, _ = call(
        client, "POST", f"/api/flags/{post_id}/link", {"incident_id": "inc_nope"}, role="social"
    )
    assert status == 404
    incident = call(client, "POST", "/api/incidents", {"title": "Outage", "services": ["mobile"]})
    incident_id = incident[1]["incident_id"]
    status, body = call(
        client, "POST", f"/api/flags/{post_id}/link", {"incident_id": incident_id}, role="social"
    )
    assert status == 200
    assert body["incident_id"] == incident_id
    assert body["state"] == "open"


def test_the_social_team_cannot_promote_an_issue(client: Client, issue_id: str) -> None:
    assert call(client, "POST", f"/api/emerging/{issue_id}/incident", role="social")[0] == 403
