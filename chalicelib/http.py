"""HTTP plumbing for the JSON API: routes with roles, bodies, and errors as JSON.

Each route names the roles it admits. The authorizer turns that table into the API
Gateway policy for the caller's role (so a wrong-role request stops at the gateway), and
every handler checks the role again in code.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from chalice.app import AuthResponse, AuthRoute, Chalice, Request, Response

from chalicelib import auth
from chalicelib.audit import AuditLog, audited
from chalicelib.config import settings
from chalicelib.errors import BadRequest, ForewarnError, Unauthorized

log = logging.getLogger(__name__)

# Policies name resources with wildcards where routes have parameters. A wildcard also
# matches deeper paths, which is why every handler checks the role again in code.
_PATH_PARAM = re.compile(r"\{[^}]+\}")

MAX_BODY_BYTES = 1_000_000
JSON_HEADERS: dict[str, str | list[str]] = {
    "Content-Type": "application/json",
    "Cache-Control": "no-store",
}

Handler = Callable[..., Any]
SignedHandler = Callable[..., Any]


def error_response(
    status: int, code: str, message: str, details: Mapping[str, Any] | None = None
) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return Response(
        body=json.dumps({"error": error}),
        status_code=status,
        headers=JSON_HEADERS,
    )


def json_response(body: object, status: int = 200) -> Response:
    return Response(body=json.dumps(body, default=str), status_code=status, headers=JSON_HEADERS)


class Api:
    def __init__(self, app: Chalice, authorizer: Any, audit: Callable[[], AuditLog]) -> None:
        self.app = app
        self.authorizer = authorizer
        self.audit = audit
        self.roles: dict[str, dict[str, tuple[str, ...]]] = {}
        # Routes that callers outside (carriers, status pages) reach without a bearer token;
        # each authenticates the request itself, by a signature or a secret in the URL.
        self.signed: set[str] = set()

    def signed_route(self, path: str) -> Callable[[SignedHandler], SignedHandler]:
        """Register a POST webhook: the handler gets the raw body and headers, and must
        verify them before it trusts a byte of either."""

        def register(handler: SignedHandler) -> SignedHandler:
            self.signed.add(path)

            @functools.wraps(handler)
            def view(**params: Any) -> Response:
                request = self.request
                try:
                    body = request.raw_body or b""
                    if len(body) > MAX_BODY_BYTES:
                        raise BadRequest(f"request body is larger than {MAX_BODY_BYTES} bytes")
                    return json_response(handler(body, request.headers, **params))
                except ForewarnError as exc:
                    return error_response(exc.status, exc.code, exc.message, exc.details)
                except Exception as exc:
                    # A 5xx makes the sender retry, which is what an unexpected failure needs.
                    log_unexpected(handler.__name__, exc)
                    return error_response(500, "internal", "something went wrong; it is logged")

            self.app.route(path, methods=["POST"], content_types=["application/json"])(view)
            return handler

        return register

    def route(
        self,
        path: str,
        *,
        methods: tuple[str, ...] = ("GET",),
        roles: tuple[str, ...],
        status: int = 200,
    ) -> Callable[[Handler], Handler]:
        """Register a JSON route; the handler gets the caller's Principal first."""

        def register(handler: Handler) -> Handler:
            for method in methods:
                self.roles.setdefault(path, {})[method] = roles

            @functools.wraps(handler)
            def view(**params: Any) -> Response:
                try:
                    principal = self.principal()
                    principal.require(roles)
                    return json_response(self._call(handler, path, principal, params), status)
                except ForewarnError as exc:
                    return error_response(exc.status, exc.code, exc.message, exc.details)
                except Exception as exc:
                    log_unexpected(handler.__name__, exc)
                    return error_response(500, "internal", "something went wrong; it is logged")

            self.app.route(path, methods=list(methods), authorizer=self.authorizer)(view)
            return handler

        return register

    def _call(
        self, handler: Handler, path: str, principal: auth.Principal, params: dict[str, Any]
    ) -> Any:
        """Run the handler; every change (any method but GET) is audited, refused or not."""
        method = self.request.method
        if method == "GET":
            return handler(principal, **params)
        return audited(
            self.audit, principal, f"{method} {path}", params, lambda: handler(principal, **params)
        )

    @property
    def request(self) -> Request:
        return current_request(self.app)

    def principal(self) -> auth.Principal:
        context = (self.request.context or {}).get("authorizer") or {}
        subject, role = context.get("principalId"), context.get("role")
        if not subject or role not in auth.ROLES:
            raise Unauthorized("no authenticated caller")
        return auth.Principal(subject=str(subject), role=str(role))

    def body(self, *, optional: bool = False) -> Any:
        """The JSON body; None for an empty body when the route can do without one."""
        raw = self.request.raw_body or b""
        if len(raw) > MAX_BODY_BYTES:
            raise BadRequest(f"request body is larger than {MAX_BODY_BYTES} bytes")
        if not raw.strip():
            if optional:
                return None
            raise BadRequest("request body is empty; send a JSON object")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("request body is not valid JSON") from None

    def query(self, name: str) -> str | None:
        params = self.request.query_params
        value = params.get(name) if params else None
        return str(value) if value else None

    def authorize(self, token_header: str | None) -> AuthResponse:
        """Allow exactly the routes the caller's role may use; deny everything on a bad token."""
        try:
            principal = auth.verify(token_header, settings())
        except ForewarnError:
            return AuthResponse(routes=[], principal_id="anonymous")
        allowed = [
            AuthRoute(
                _PATH_PARAM.sub("*", path),
                [m for m, roles in by_method.items() if _admits(roles, principal.role)],
            )
            for path, by_method in self.roles.items()
        ]
        return AuthResponse(
            routes=[r for r in allowed if r.methods],
            principal_id=principal.subject,
            context={"role": principal.role},
        )


def current_request(app: Chalice) -> Request:
    request = app.current_request
    if request is None:
        raise RuntimeError("no request is being handled")
    return request


def _admits(roles: tuple[str, ...], role: str) -> bool:
    return role == auth.ADMIN or role in roles


def log_unexpected(handler: str, exc: Exception) -> None:
    # Where it broke, without the exception's message: messages can carry customer data.
    frames = [
        f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}"
        for f in traceback.extract_tb(exc.__traceback__)
    ]
    log.error("unhandled %s in %s at %s", type(exc).__name__, handler, " <- ".join(frames[::-1]))
