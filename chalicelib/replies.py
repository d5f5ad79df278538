"""Reply to a flagged post on X as the brand, from a stock template or the operator's own
words, at most `REPLIES_PER_AUTHOR` times per author within `REPLY_WINDOW`.

The wording renders in the notices' jinja2 sandbox (`notices.render_custom`) with the
post's author handle and the linked incident as *variables*: whatever a post or a handle
contains is data, never template code.

A reply is sent once: the flag is claimed for the attempt (`reply_claim`), one of the
author's reply slots is taken (a conditional write; see `SignalTables.take_reply_slot`),
then X is called. If X refuses or cannot be reached, slot and claim are given back and the
flag stays as it was. If X posted but recording the reply fails, nothing is posted again
(a second public reply is worse than a flag left unmarked): the claim stays, so the post
cannot be replied to twice, and the failure is logged without the post or its author.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from chalicelib.config import settings
from chalicelib.domain import Channel, iso, utcnow
from chalicelib.errors import BadRequest, Conflict, ForewarnError
from chalicelib.signals_store import ReplySlot, SignalTables
from chalicelib.social_sources import RateLimited, SourceError
from chalicelib.store import Item, Store

log = logging.getLogger(__name__)

# No more than this many replies to one author (over all their posts) within the window,
# so that the brand never piles onto one person.
REPLIES_PER_AUTHOR = 2
REPLY_WINDOW = timedelta(hours=24)
# X's limit. X weighs some characters double and every URL as 23; plain length is the rule
# here, and X itself refuses anything its own count puts over.
MAX_REPLY_CHARS = 280
MAX_STATUS_LINK_CHARS = 500
CUSTOM = "custom"

REPLY_TEMPLATES: dict[str, str] = {
    "outage_ack": (
        "Hi @{{ handle }}, we know about the outage affecting {{ service }} and are working "
        "on it. Sorry for the trouble!{% if status_link %} Updates: {{ status_link }}{% endif %}"
    ),
    "dm_us": (
        "Hi @{{ handle }}, sorry to hear that. Please send us a DM with a few details and "
        "we will look into it for you."
    ),
    "resolved": (
        "Hi @{{ handle }}, the problem affecting {{ service }} is fixed. Thank you for your "
        "patience!{% if status_link %} Details: {{ status_link }}{% endif %}"
    ),
}


class ReplyPoster(Protocol):
    """What posting a reply needs; `chalicelib.x.XPoster` is one."""

    def reply(self, text: str, in_reply_to_tweet_id: str) -> str: ...


class ReplyNotSent(ForewarnError):
    """X refused the reply or could not be reached; nothing was posted or counted."""

    status = 502
    code = "reply_not_sent"


class ReplyRateLimited(ReplyNotSent):
    status = 429
    code = "x_rate_limited"


def preview_reply(store: Store, signals: SignalTables, post_id: str, form: object) -> str:
    """The text a reply to the flagged post would have: rendered and within X's limit."""
    return _render(store, signals.get_flag(post_id), _fields(form))


def reply_to_flag(
    store: Store,
    signals: SignalTables,
    poster: ReplyPoster,
    post_id: str,
    form: object,
    *,
    actor: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Post the reply on X and mark the flag handled; the updated flag.

    Conflict when the post was replied to (or a reply to it is under way) or its author had
    `REPLIES_PER_AUTHOR` replies within `REPLY_WINDOW`; BadRequest for wording that does not
    render or does not fit; `ReplyNotSent` when X did not post it.
    """
    now = now or utcnow()
    flag = signals.get_flag(post_id)
    if flag.get("reply_id"):
        raise _already_replied(post_id)
    text = _render(store, flag, _fields(form))
    author = _author(flag["post"])
    token = uuid.uuid4().hex
    if not signals.claim_reply(post_id, token, actor=actor, now=now):
        if signals.get_flag(post_id).get("reply_id"):
            raise _already_replied(post_id)
        raise Conflict(
            f"a reply to post {post_id} is already under way, or was posted without being "
            "recorded: it is not sent twice; check X, then mark the flag handled or dismissed"
        )
    slot = signals.take_reply_slot(
        author, limit=REPLIES_PER_AUTHOR, window=REPLY_WINDOW, now=now, token=token
    )
    if slot is None:
        _give_back(signals, post_id, token, None)
        raise Conflict(
            f"this author already had {REPLIES_PER_AUTHOR} replies within the last "
            f"{_hours(REPLY_WINDOW)} hours, the limit per author; try again later",
            code="reply_limit",
        )
    try:
        reply_id = poster.reply(text, post_id)
    except RateLimited as exc:
        _give_back(signals, post_id, token, slot)
        raise ReplyRateLimited(
            f"the reply was not posted: X's rate limit; try again after {iso(exc.resume_at)}"
        ) from None
    except SourceError as exc:
        _give_back(signals, post_id, token, slot)
        # x.py makes these messages safe to show: no credentials, no URLs.
        raise ReplyNotSent(f"the reply was not posted: {exc}") from None
    except Exception:
        _give_back(signals, post_id, token, slot)
        raise
    try:
        return signals.record_reply(
            post_id, token, reply_id=reply_id, text=text, actor=actor, now=now
        )
    except Exception as exc:
        # Posted: never post again. The claim stays on the flag, so no one can either.
        log.error(
            "reply %s was posted but recording it on its flag failed (%s); not retried",
            reply_id,
            type(exc).__name__,
        )
        return {
            **flag,
            "reply_id": reply_id,
            "reply_text": text,
            "replied_by": actor,
            "replied_at": iso(now),
            "warning": "the reply was posted on X but could not be recorded on the flag; "
            "do not reply again",
        }


def _fields(form: object) -> Mapping[str, str]:
    if not isinstance(form, Mapping):
        raise BadRequest("the reply must be an object: template, and text for a custom reply")
    return form


def _render(store: Store, flag: Item, form: Mapping[str, str]) -> str:
    from chalicelib.notices import render_custom

    name, source = _source(form)
    context = _context(store, flag, form)
    try:
        text = render_custom(source, Channel.SOCIAL, context)
    except BadRequest as exc:
        message = f"reply template {name}: {exc.message}"
        if "undefined" in exc.message:
            message += f"; this reply can use: {', '.join(sorted(context))}"
            if "title" not in context:
                message += " (link the flag to an incident for title, status and service)"
        raise BadRequest(message) from None
    if not text:
        raise BadRequest(f"reply template {name} renders no text; a reply needs some")
    if len(text) > MAX_REPLY_CHARS:
        raise BadRequest(f"the reply is {len(text)} characters; X allows at most {MAX_REPLY_CHARS}")
    return text


def _source(form: Mapping[str, str]) -> tuple[str, str]:
    name = form.get("template")
    if name == CUSTOM:
        text = form.get("text")
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("text is required for a custom reply, and must not be empty")
        return CUSTOM, text
    if not isinstance(name, str) or name not in REPLY_TEMPLATES:
        raise BadRequest(f"template must be one of: {', '.join([*REPLY_TEMPLATES, CUSTOM])}")
    return name, REPLY_TEMPLATES[name]


def _context(store: Store, flag: Item, form: Mapping[str, str]) -> dict[str, object]:
    """The variables a reply may use. Untrusted text (the handle) only ever goes in here."""
    post = flag["post"]
    context: dict[str, object] = {"brand": settings().brand}
    if post.get("author_handle"):
        context["handle"] = str(post["author_handle"])
    incident_id = flag.get("incident_id")
    incident = store.get_incident(str(incident_id)) if incident_id else None
    link = _status_link(form.get("status_link"))
    if incident is not None:
        context.update(
            title=incident.title,
            status=incident.status.value,
            service=_join(incident.services),
            services=list(incident.services),
            regions=list(incident.regions),
        )
        link = link or _incident_status_link(store, incident.incident_id)
    context["status_link"] = link
    return context


def _status_link(value: object) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise BadRequest("status_link must be an http(s) URL")
    if len(value) > MAX_STATUS_LINK_CHARS:
        raise BadRequest(f"status_link must be at most {MAX_STATUS_LINK_CHARS} characters")
    return value.strip()


def _incident_status_link(store: Store, incident_id: str) -> str:
    """The status link of the incident's latest broadcast that has one."""
    found = [
        b for b in store.broadcasts_for_incident(incident_id) if b.variables.get("status_link")
    ]
    latest = max(found, key=lambda b: (b.created_at, b.broadcast_id), default=None)
    return latest.variables["status_link"] if latest else ""


def _join(names: Sequence[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _author(post: Mapping[str, Any]) -> str:
    """Whose reply slots a reply to the post takes: X's user id, else the handle."""
    if post.get("author_id"):
        return str(post["author_id"])
    if post.get("author_handle"):
        return "@" + str(post["author_handle"]).lower()
    raise BadRequest("the post has no known author, so its reply limit cannot be kept")


def _give_back(signals: SignalTables, post_id: str, token: str, slot: ReplySlot | None) -> None:
    """Nothing was posted: free the author's slot and the post for another attempt."""
    try:
        if slot is not None:
            signals.give_back_reply_slot(slot)
        signals.release_reply(post_id, token)
    except Exception as exc:
        # The caller's error matters more; the slot comes back when the window passes.
        log.error("giving back a reply claim failed (%s)", type(exc).__name__)


def _already_replied(post_id: str) -> Conflict:
    return Conflict(f"post {post_id} was already replied to; it gets one reply only")


def _hours(window: timedelta) -> int:
    return int(window.total_seconds() // 3600)
