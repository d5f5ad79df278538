"""The edge to Secrets Manager: JSON secrets by id, read on first use and cached per process.

A warm Lambda keeps the value for `MAX_AGE_SECONDS`, so a rotated signing key reaches every
container within minutes without a redeploy, while a burst of webhooks costs one read.
Values are never logged; errors name the secret id and the AWS error code only.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from chalicelib import aws

MAX_AGE_SECONDS = 300.0

_cache: dict[str, tuple[float, dict[str, Any]]] = {}
_lock = threading.Lock()


class SecretUnavailable(Exception):
    """The secret cannot be read or is not a JSON object; the message never holds its value."""


def get_json(secret_id: str, *, clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """The secret's JSON object, from the cache when it is fresh enough."""
    now = clock()
    with _lock:
        cached = _cache.get(secret_id)
        if cached is not None and now - cached[0] < MAX_AGE_SECONDS:
            return cached[1]
    value = _read(secret_id)
    with _lock:
        _cache[secret_id] = (now, value)
    return value


def _read(secret_id: str) -> dict[str, Any]:
    try:
        response = aws.client("secretsmanager").get_secret_value(SecretId=secret_id)
    except Exception as exc:
        if aws.is_transient(exc):
            # Let the caller fail with a 5xx so the sender retries; nothing was decided yet.
            raise
        raise SecretUnavailable(
            f"cannot read secret {secret_id}: {aws.error_code(exc) or type(exc).__name__}"
        ) from None
    text = response.get("SecretString")
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        # The parse error would quote part of the secret; say only what is wrong.
        raise SecretUnavailable(f"secret {secret_id} is not a JSON object")
    return value


def reset() -> None:
    """Forget cached secrets (tests, and the local stack after it sets new values)."""
    with _lock:
        _cache.clear()
