"""The edge to AWS: boto3 clients, created on first use.

boto3 costs a large share of a cold start, so nothing imports it until a handler needs a
client. `AWS_ENDPOINT_URL` (read by boto3 itself) points every client at the local stack.
"""

from __future__ import annotations

import threading
from typing import Any

from chalicelib.config import settings

_clients: dict[str, Any] = {}
_lock = threading.Lock()

# Error codes after which the same call may succeed later.
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "KMSThrottlingException",
    }
)


def client(service: str) -> Any:
    """A shared client per service; boto3 clients are thread-safe once created."""
    existing = _clients.get(service)
    if existing is not None:
        return existing
    with _lock:
        if service not in _clients:
            import boto3
            from botocore.config import Config

            _clients[service] = boto3.session.Session().client(
                service,
                region_name=settings().region,
                config=Config(
                    retries={"mode": "standard", "max_attempts": 4},
                    max_pool_connections=32,
                    connect_timeout=5,
                    read_timeout=20,
                ),
            )
        return _clients[service]


def reset_clients() -> None:
    """Forget clients, so that the next call sees a changed endpoint or credentials."""
    with _lock:
        _clients.clear()


def error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def is_transient(exc: BaseException) -> bool:
    if error_code(exc) in TRANSIENT_CODES:
        return True
    # Connection and timeout errors from botocore carry no error code.
    return type(exc).__name__ in {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
    }
