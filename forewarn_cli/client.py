"""A small client for Forewarn's JSON API, used by the CLI."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_STATE_FILE = Path(".forewarn") / "local.json"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details


@dataclass(frozen=True)
class ApiClient:
    base_url: str
    token: str
    timeout: float = 60.0

    @classmethod
    def resolve(
        cls,
        *,
        api_url: str | None,
        token: str | None,
        role: str,
        state_file: Path = DEFAULT_STATE_FILE,
    ) -> ApiClient:
        """Flags first, then FOREWARN_API_URL/FOREWARN_TOKEN, then what `forewarn run` wrote."""
        state: dict[str, Any] = {}
        if state_file.exists():
            state = json.loads(state_file.read_text())
        url = api_url or os.environ.get("FOREWARN_API_URL") or state.get("api_url")
        bearer = token or os.environ.get("FOREWARN_TOKEN") or state.get("tokens", {}).get(role)
        if not url or not bearer:
            raise ApiError(
                0,
                "not_configured",
                "no API URL or token: start `forewarn run`, or set FOREWARN_API_URL and "
                "FOREWARN_TOKEN (or pass --api-url and --token)",
            )
        return cls(str(url).rstrip("/"), str(bearer))

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the URL is the operator's own API
            self.base_url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _api_error(exc.code, exc.read()) from None
        except urllib.error.URLError as exc:
            raise ApiError(
                0, "unreachable", f"cannot reach {self.base_url}: {exc.reason}"
            ) from None

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, {} if body is None else body)

    def patch(self, path: str, body: Any) -> Any:
        return self.call("PATCH", path, body)


def _api_error(status: int, raw: bytes) -> ApiError:
    try:
        payload = json.loads(raw)
    except ValueError:
        return ApiError(status, "http_error", raw.decode(errors="replace")[:200])
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return ApiError(
            status, str(error.get("code")), str(error.get("message")), error.get("details")
        )
    # API Gateway's own refusals (a bad token) have their own shape.
    message = (
        payload.get("Message") or payload.get("message") if isinstance(payload, dict) else None
    )
    return ApiError(status, "gateway", str(message or payload))
