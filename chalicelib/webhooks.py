"""Signed webhooks: checking the carriers' signatures, and signing our own outbound events.

- EasyPost: `X-Hmac-Signature: hmac-sha256-hex=<hex>`, an HMAC-SHA256 of the raw body keyed
  with the NFKD-normalised webhook secret (as EasyPost's own client libraries compute it).
- AfterShip: `aftership-hmac-sha256: <base64>`, an HMAC-SHA256 of the raw body.
- Forewarn (our `return.received` POST): `X-Forewarn-Signature: sha256=<hex>`.

Signatures are checked on the raw bytes, before any parsing: a body re-serialised after
parsing is not the body that was signed. Header names are matched case-insensitively (API
Gateway lower-cases them). Every failure raises `Unauthorized` with a message that says what
was wrong with the request, never the secret or the signature we expected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import unicodedata
from collections.abc import Mapping

from chalicelib import secrets
from chalicelib.config import settings
from chalicelib.errors import Unauthorized

log = logging.getLogger(__name__)

EASYPOST_HEADER = "X-Hmac-Signature"
EASYPOST_PREFIX = "hmac-sha256-hex="
AFTERSHIP_HEADER = "aftership-hmac-sha256"
FOREWARN_HEADER = "X-Forewarn-Signature"
FOREWARN_PREFIX = "sha256="

# Names of the keys in the webhooks secret (JSON).
EASYPOST = "easypost"
AFTERSHIP = "aftership"
RETURN_WEBHOOK = "return_webhook"

_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header `name`, whatever the case of its name; None when absent."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _digest(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()


def easypost_key(secret: str) -> bytes:
    # EasyPost normalises the secret before keying the HMAC, so a secret typed with
    # composed characters (é) and one with decomposed ones (e + accent) sign alike.
    return unicodedata.normalize("NFKD", secret).encode("utf-8")


def _hex_signature(value: str | None, *, name: str, prefix: str) -> bytes:
    """The digest a `<prefix><64 hex digits>` header carries, or Unauthorized saying why not."""
    if value is None or not value.strip():
        raise Unauthorized(f"missing {name} header; the request must be signed")
    text = value.strip()
    if not text.lower().startswith(prefix):
        raise Unauthorized(f"{name} must have the form {prefix}<hex HMAC-SHA256 of the body>")
    hex_part = text[len(prefix) :]
    if not _HEX_DIGEST.fullmatch(hex_part):
        raise Unauthorized(f"{name} must carry 64 hexadecimal digits after {prefix!r}")
    return bytes.fromhex(hex_part)


def _check(expected: bytes, given: bytes, *, name: str) -> None:
    if not hmac.compare_digest(expected, given):
        raise Unauthorized(f"{name} does not match the body; the request is refused")


def verify_easypost(raw_body: bytes, headers: Mapping[str, str], secret: str) -> None:
    given = _hex_signature(
        header(headers, EASYPOST_HEADER), name=EASYPOST_HEADER, prefix=EASYPOST_PREFIX
    )
    _check(_digest(easypost_key(secret), raw_body), given, name=EASYPOST_HEADER)


def verify_aftership(raw_body: bytes, headers: Mapping[str, str], secret: str) -> None:
    value = header(headers, AFTERSHIP_HEADER)
    if value is None or not value.strip():
        raise Unauthorized(f"missing {AFTERSHIP_HEADER} header; the request must be signed")
    try:
        given = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Unauthorized(f"{AFTERSHIP_HEADER} must be base64") from None
    if len(given) != hashlib.sha256().digest_size:
        raise Unauthorized(f"{AFTERSHIP_HEADER} must be a base64 HMAC-SHA256 (32 bytes)")
    _check(_digest(secret.encode("utf-8"), raw_body), given, name=AFTERSHIP_HEADER)


def sign_forewarn(raw_body: bytes, secret: str) -> str:
    """The `X-Forewarn-Signature` value for an outbound body."""
    return FOREWARN_PREFIX + _digest(secret.encode("utf-8"), raw_body).hex()


def verify_forewarn(raw_body: bytes, headers: Mapping[str, str], secret: str) -> None:
    """What a receiver of our signed events runs; used by the tests and partner examples."""
    given = _hex_signature(
        header(headers, FOREWARN_HEADER), name=FOREWARN_HEADER, prefix=FOREWARN_PREFIX
    )
    _check(_digest(secret.encode("utf-8"), raw_body), given, name=FOREWARN_HEADER)


def signing_secret(name: str) -> str:
    """Key `name` of the webhooks secret (settings().webhook_secret_id).

    A missing or empty key fails closed: nothing can be verified, so nothing is accepted.
    The operator learns why from the log; the caller only hears that it was refused.
    """
    secret_id = settings().webhook_secret_id
    try:
        value = secrets.get_json(secret_id).get(name)
    except secrets.SecretUnavailable as exc:
        log.error("webhook signing secrets unavailable: %s", exc)
        raise Unauthorized("the signature cannot be verified; the request is refused") from None
    if not isinstance(value, str) or not value:
        log.error("webhook signing secret %r is not set in %s", name, secret_id)
        raise Unauthorized("the signature cannot be verified; the request is refused")
    return value
