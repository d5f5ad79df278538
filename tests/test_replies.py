"""Replying to flagged posts: tweepy's real client posting to the local X API server, with
its credentials in Secrets Manager, and the per-author limit kept in DynamoDB."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from conftest import Stack
from listening_factories import flag_post

from chalicelib import incidents, replies, x
from chalicelib.domain import utcnow
from chalicelib.errors import BadRequest, Conflict, ForewarnError
from chalicelib.runtime import services, signals
from chalicelib.signals_store import REPLIES_KEY, FlagFilter, ReplySlot
from forewarn_cli.local.xserver import XServer

NOW = utcnow().replace(microsecond=0)


def complaint(
    server: XServer, *, handle: str = "kim", text: str = "@ForewarnTel no signal since noon"
) -> str:
    """A post on X, flagged as a scan leaves it; its id."""
    [post_id] = server.publish({"text": text, "author_handle": handle})
    flag_post(post_id, text, handle=handle)
    return post_id


def reply(post_id: str, form: Mapping[str, str], **options: Any) -> dict[str, Any]:
    options.setdefault("actor", "sam@social")
    poster = options.pop("poster", None) or x.x_poster()
    return replies.reply_to_flag(services().store, signals(), poster, post_id, form, **options)


def custom(text: str) -> dict[str, str]:
    return {"template": "custom", "text": text}


def link_incident(post_id: str) -> str:
    incident = incidents.create_incident(
        services().store,
        {"title": "Mobile data outage", "services": ["mobile", "broadband"]},
    )
    signals().set_flag_state(post_id, "open", actor="ops", incident_id=incident.incident_id)
    return incident.incident_id


def test_a_reply_reaches_x_as_a_reply_to_the_post_and_marks_the_flag_handled(
    brand_x: XServer,
) -> None:
    post_id = complaint(brand_x)
    link_incident(post_id)
    form = {"template": "outage_ack", "status_link": "https://status.example.com"}
    expected = (
        "Hi @kim, we know about the outage affecting mobile and broadband and are working on "
        "it. Sorry for the trouble! Updates: https://status.example.com"
    )

    assert replies.preview_reply(services().store, signals(), post_id, form) == expected
    assert brand_x.created == []  # a preview posts nothing
    flag = reply(post_id, form, now=NOW)

    [created] = brand_x.created
    assert created.in_reply_to_tweet_id == post_id
    assert created.text == expected
    assert flag["state"] == "handled"
    assert flag["reply_id"] == created.id
    assert flag["reply_text"] == expected
    assert flag["replied_by"] == flag["decided_by"] == "sam@social"
    assert flag["replied_at"] == NOW.isoformat().replace("+00:00", "Z")
    assert signals().get_flag(post_id) == flag
    # The author's reply counter is no flag: no list of flags shows it.
    for state in ("open", "handled"):
        listed, _ = signals().flags(FlagFilter(state=state))
        assert all(not f["post"]["id"].startswith(REPLIES_KEY) for f in listed)
    assert [f["post"]["id"] for f in signals().flags(FlagFilter(state="handled"))[0]] == [post_id]


def test_a_third_reply_to_the_same_author_within_the_window_is_refused_and_nothing_is_posted(
    brand_x: XServer,
) -> None:
    first, second, third = (complaint(brand_x, text=f"@ForewarnTel down again {i}") for i in "123")
    other_author = complaint(brand_x, handle="lee")
    reply(first, {"template": "dm_us"}, now=NOW)
    reply(second, custom("Hi @{{ handle }}, an engineer is on it."), now=NOW + timedelta(hours=23))

    with pytest.raises(Conflict, match="2 replies within the last 24 hours, the limit"):
        reply(third, custom("Hi again"), now=NOW + timedelta(hours=23, minutes=59))

    assert len(brand_x.created) == 2
    assert signals().get_flag(third)["state"] == "open"
    assert "reply_id" not in signals().get_flag(third)
    # The limit is per author: someone else still gets a reply.
    reply(other_author, {"template": "dm_us"}, now=NOW + timedelta(hours=23, minutes=59))
    # The window slides: the first reply's slot frees 24 hours after it, the second's not yet.
    reply(third, custom("Hi again"), now=NOW + timedelta(hours=24))
    fourth = complaint(brand_x, text="@ForewarnTel down again 4")
    with pytest.raises(Conflict, match="limit per author"):
        reply(fourth, custom("Hi once more"), now=NOW + timedelta(hours=24, minutes=1))
    assert len(brand_x.created) == 4


def run_together(calls: list[Callable[[], object]]) -> list[object]:
    """Start the calls at the same moment on threads; what each returned or raised."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_two_replies_racing_for_the_last_slot_cannot_both_go_out(brand_x: XServer) -> None:
    first, left, right = (complaint(brand_x, text=f"@ForewarnTel outage {i}") for i in "123")
    reply(first, {"template": "dm_us"}, now=NOW)

    results = run_together(
        [
            lambda: reply(left, custom("We are on it, left"), now=NOW),
            lambda: reply(right, custom("We are on it, right"), now=NOW),
        ]
    )

    assert sorted(type(r).__name__ for r in results) == ["Conflict", "dict"]
    assert len(brand_x.created) == 2


def test_the_counter_hands_out_no_more_slots_than_the_limit_to_concurrent_takers(
    stack: Stack,
) -> None:
    tables = signals()

    def take(i: int) -> object:
        return tables.take_reply_slot(
            "u-42", limit=2, window=timedelta(hours=24), now=NOW, token=f"t{i}"
        )

    results = run_together([partial(take, i) for i in range(6)])

    taken = [r for r in results if isinstance(r, ReplySlot)]
    assert results.count(None) == 4
    assert sorted(r.index for r in taken) == [0, 1]
    assert take(7) is None


def test_two_replies_to_the_same_post_at_once_post_one(brand_x: XServer) -> None:
    post_id = complaint(brand_x)

    results = run_together(
        [
            lambda: reply(post_id, custom("Sorry, we are on it"), now=NOW),
            lambda: reply(post_id, custom("Sorry, looking into it"), now=NOW),
        ]
    )

    assert sorted(type(r).__name__ for r in results) == ["Conflict", "dict"]
    assert len(brand_x.created) == 1


@pytest.mark.parametrize(
    ("status", "headers", "error", "code"),
    [
        (503, {}, r"the reply was not posted: X post failed: HTTP 503", "reply_not_sent"),
        (
            429,
            {"x-rate-limit-reset": "4102444800"},
            r"X's rate limit; try again after 2100-01-01T00:00:00Z",
            "x_rate_limited",
        ),
    ],
)
def test_an_x_failure_gives_the_slot_back_and_leaves_the_flag_open(
    brand_x: XServer, status: int, headers: dict[str, str], error: str, code: str
) -> None:
    post_id = complaint(brand_x)
    other = complaint(brand_x, text="@ForewarnTel still nothing")
    brand_x.respond_next(
        "POST", "/2/tweets", status=status, body={"title": "Unavailable"}, headers=headers
    )

    with pytest.raises(replies.ReplyNotSent, match=error) as failed:
        reply(post_id, custom("Sorry about that"), now=NOW)

    assert failed.value.code == code
    assert brand_x.created == []
    flag = signals().get_flag(post_id)
    assert flag["state"] == "open"
    assert "reply_id" not in flag
    # No quota lost and the post is free again: the author still gets both replies.
    reply(post_id, custom("Sorry about that"), now=NOW)
    reply(other, {"template": "dm_us"}, now=NOW)
    assert len(brand_x.created) == 2


@pytest.mark.parametrize(
    ("form", "message"),
    [
        (custom("x" * 281), "the reply is 281 characters; X allows at most 280"),
        (custom("   "), "text is required for a custom reply"),
        (custom("{{ '' }}"), "renders no text"),
        ({"template": "custom"}, "text is required for a custom reply"),
        ({"template": "shout"}, "template must be one of: outage_ack, dm_us, resolved, custom"),
        (custom("Hi {{ nme }}"), "'nme' is undefined; this reply can use: brand, handle"),
        (custom("{% if %}"), "reply template custom"),
        ({"template": "outage_ack"}, "link the flag to an incident"),
        ({"template": "dm_us", "status_link": "javascript:x"}, "status_link must be an http"),
    ],
)
def test_wording_that_does_not_render_or_fit_is_refused_before_anything_is_posted(
    brand_x: XServer, form: dict[str, str], message: str
) -> None:
    post_id = complaint(brand_x)

    with pytest.raises(BadRequest, match=message.replace("(", r"\(")) as preview:
        replies.preview_reply(services().store, signals(), post_id, form)
    with pytest.raises(BadRequest) as refused:
        reply(post_id, form, now=NOW)

    assert refused.value.message == preview.value.message
    assert brand_x.created == []
    # Nothing was claimed or counted: both of the author's replies are still there.
    reply(post_id, custom("x" * 280), now=NOW)
    reply(complaint(brand_x, text="@ForewarnTel again"), {"template": "dm_us"}, now=NOW)
    assert len(brand_x.created[0].text) == 280


def test_a_post_already_replied_to_is_refused(brand_x: XServer) -> None:
    post_id = complaint(brand_x)
    reply(post_id, {"template": "dm_us"}, now=NOW)

    with pytest.raises(Conflict, match=f"post {post_id} was already replied to"):
        reply(post_id, custom("One more thing"), now=NOW)
    assert len(brand_x.created) == 1


def test_template_syntax_in_a_post_or_its_handle_is_data_not_code(brand_x: XServer) -> None:
    post_id = complaint(
        brand_x, handle="{{ 7*7 }}", text="@ForewarnTel {{ 7*7 }} {% for i in range(9) %}"
    )

    flag = reply(post_id, custom("Hi @{{ handle }}, sorry! {{ handle | length }}"), now=NOW)

    assert flag["reply_text"] == "Hi @{{ 7*7 }}, sorry! 9"
    assert brand_x.created[0].text == flag["reply_text"]


def test_a_reply_posted_but_not_recorded_is_never_posted_again(
    brand_x: XServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    post_id = complaint(brand_x)
    tables = signals()

    def broken(*_: object, **__: object) -> None:
        raise ForewarnError("DynamoDB is down")

    with monkeypatch.context() as patch:
        patch.setattr(tables, "record_reply", broken)
        flag = reply(post_id, {"template": "dm_us"}, now=NOW)

    [created] = brand_x.created
    assert flag["reply_id"] == created.id
    assert "do not reply again" in flag["warning"]
    with pytest.raises(Conflict, match="already under way"):
        reply(post_id, custom("Trying again"), now=NOW)
    assert len(brand_x.created) == 1
