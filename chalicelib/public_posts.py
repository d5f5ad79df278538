"""A broadcast's public post on the brand's X account, and the thread its follow-ups make.

When a broadcast asks for it (`public_post`), the planner's first step posts the notice's
social text once: an initial notice as a new post, an update or the all-clear as a reply to
the incident's latest public post, so that the story reads as one thread.

Customers' own notices never wait for X: the post goes out after the first page of
deliveries is queued, and a failure is recorded on the broadcast (`public_post_error`) for
ops to see, never retried on its own: a post that timed out may have been published, and a
duplicate public post is worse than a missing one. A claim on the broadcast item keeps two
planner steps from posting twice.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from chalicelib.broadcasts import SOCIAL_LIMIT, Services, placeholder_customer, render_for
from chalicelib.domain import Broadcast, Channel
from chalicelib.incidents import get_incident
from chalicelib.store import Tables, to_dynamo

log = logging.getLogger(__name__)

MAX_ERROR = 300


class PublicPosts(Tables):
    """The public-post attributes of broadcast items: claim, post id, error."""

    def claim(self, broadcast_id: str, token: str) -> bool:
        return self._write_if(
            "update_item",
            TableName=self.names.broadcasts,
            Key=to_dynamo({"broadcast_id": broadcast_id}),
            UpdateExpression="SET public_post_claim = :t",
            ConditionExpression=(
                "attribute_exists(broadcast_id) AND attribute_not_exists(public_post_id) "
                "AND attribute_not_exists(public_post_claim) "
                "AND attribute_not_exists(public_post_error)"
            ),
            ExpressionAttributeValues=to_dynamo({":t": token}),
        )

    def record(self, broadcast_id: str, token: str, post_id: str) -> bool:
        return self._write_if(
            "update_item",
            TableName=self.names.broadcasts,
            Key=to_dynamo({"broadcast_id": broadcast_id}),
            UpdateExpression="SET public_post_id = :p REMOVE public_post_claim",
            ConditionExpression="public_post_claim = :t",
            ExpressionAttributeValues=to_dynamo({":p": post_id, ":t": token}),
        )

    def fail(self, broadcast_id: str, token: str, reason: str) -> bool:
        return self._write_if(
            "update_item",
            TableName=self.names.broadcasts,
            Key=to_dynamo({"broadcast_id": broadcast_id}),
            UpdateExpression="SET public_post_error = :e REMOVE public_post_claim",
            ConditionExpression="public_post_claim = :t",
            ExpressionAttributeValues=to_dynamo({":e": reason[:MAX_ERROR], ":t": token}),
        )


def social_text(services: Services, broadcast: Broadcast) -> str:
    """The post's text: the notice's social rendering, which names no customer."""
    incident = get_incident(services.store, broadcast.incident_id)
    sample = placeholder_customer(incident)
    return render_for(services.settings, broadcast, incident, sample, Channel.SOCIAL).text


def thread_parent(services: Services, broadcast: Broadcast) -> str | None:
    """The incident's latest public post before this broadcast: what a follow-up replies to."""
    posted = [
        b.public_post_id
        for b in services.store.broadcasts_for_incident(broadcast.incident_id)
        if b.public_post_id and b.broadcast_id != broadcast.broadcast_id
    ]
    # X's ids grow with time, finer than our timestamps, which are whole seconds.
    return max(posted, key=int, default=None)


def publish(services: Services, broadcast: Broadcast) -> str | None:
    """Post the broadcast publicly, once; the new post's id, or None if nothing was posted."""
    if not broadcast.public_post or broadcast.public_post_id or services.poster is None:
        return None
    posts = PublicPosts(services.settings.names, services.store.db)
    token = uuid.uuid4().hex
    if not posts.claim(broadcast.broadcast_id, token):
        return None  # posted, failed before, or another step is posting it now
    try:
        text = social_text(services, broadcast)
        if len(text) > SOCIAL_LIMIT:
            raise ValueError(f"the post is {len(text)} characters; X allows {SOCIAL_LIMIT}")
        parent = thread_parent(services, broadcast)
        poster: Any = services.poster()
        post_id = str(poster.reply(text, parent) if parent else poster.post(text))
    except Exception as exc:
        reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        log.warning("public post of %s failed: %s", broadcast.broadcast_id, type(exc).__name__)
        posts.fail(broadcast.broadcast_id, token, f"not posted: {reason}")
        return None
    if not posts.record(broadcast.broadcast_id, token, post_id):
        log.error("public post %s of %s not recorded", post_id, broadcast.broadcast_id)
    return post_id
