"""Unsubscribe links in every email: `<public url>/unsubscribe?t=<token>`.

The token is the address and an HMAC-SHA256 of it under the `unsubscribe` key of the
webhooks secret, so a link works without a lookup and cannot be made for someone else. The
link's page asks before it acts (mail scanners open links); mail clients that offer one-click
unsubscribing POST to the same address (RFC 8058, `List-Unsubscribe-Post`), which acts at once.
Either way the address joins the suppressions, exactly as a complaint would put it there.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from urllib.parse import urlencode

from chalicelib.config import Settings
from chalicelib.domain import Channel
from chalicelib.errors import BadRequest, Unauthorized
from chalicelib.suppressions import Suppressions
from chalicelib.webhooks import signing_secret

log = logging.getLogger(__name__)

KEY_NAME = "unsubscribe"
PATH = "/unsubscribe"


def _signature(key: str, address: str) -> str:
    digest = hmac.new(key.encode(), f"email#{address}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:20]).decode().rstrip("=")


def link(settings: Settings, address: str) -> str | None:
    """The address's unsubscribe link; None (logged) when the stage has no key for it."""
    try:
        key = signing_secret(KEY_NAME)
    except Unauthorized:
        log.error("emails go out without an unsubscribe link: no %r key", KEY_NAME)
        return None
    normal = address.strip().lower()
    encoded = base64.urlsafe_b64encode(normal.encode()).decode().rstrip("=")
    token = f"{encoded}.{_signature(key, normal)}"
    return f"{settings.public_url}{PATH}?{urlencode({'t': token})}"


def address_of(token: str | None) -> str:
    """The address a token was made for; BadRequest for anything we did not sign."""
    encoded, _, signature = (token or "").partition(".")
    try:
        address = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("this unsubscribe link is broken; use the one in the email") from None
    try:
        expected = _signature(signing_secret(KEY_NAME), address)
    except Unauthorized:
        raise BadRequest("unsubscribing is not available right now; try again later") from None
    if not address or not hmac.compare_digest(signature, expected):
        raise BadRequest("this unsubscribe link is broken; use the one in the email")
    return address


def unsubscribe(settings: Settings, token: str | None) -> str:
    """Suppress the token's address (again is fine); the address, for the page to show."""
    address = address_of(token)
    Suppressions(settings.names).suppress(Channel.EMAIL, address, reason="unsubscribed")
    return address
