"""Errors a caller can act on. Each maps to one HTTP status and a stable code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ForewarnError(Exception):
    status = 400
    code = "bad_request"

    def __init__(
        self, message: str, *, code: str | None = None, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code


class BadRequest(ForewarnError):
    status = 400
    code = "bad_request"


class Unauthorized(ForewarnError):
    status = 401
    code = "unauthorized"


class Forbidden(ForewarnError):
    status = 403
    code = "forbidden"


class NotFound(ForewarnError):
    status = 404
    code = "not_found"


class Conflict(ForewarnError):
    status = 409
    code = "conflict"


class Unprocessable(ForewarnError):
    status = 422
    code = "unprocessable"
