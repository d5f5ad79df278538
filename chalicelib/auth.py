"""Bearer tokens and roles.

Locally (AUTH_MODE=local) tokens are HS256 JWTs signed with a per-run key that the local
stack prints. In AWS (AUTH_MODE=cognito) they are Cognito user pool tokens: RS256,
verified against the pool's JWKS (cached), issuer, audience/client and expiry; the role
is the highest of the user's groups.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from chalicelib.config import Settings
from chalicelib.errors import Forbidden, Unauthorized

OPS, SOCIAL, ADMIN = "ops", "social", "admin"
ROLES = (OPS, SOCIAL, ADMIN)
# Highest privilege first: a user in several groups acts with the highest.
_PRECEDENCE = (ADMIN, OPS, SOCIAL)
LOCAL_TOKEN_TTL = 12 * 3600

_jwks_clients: dict[str, Any] = {}


@dataclass(frozen=True)
class Principal:
    subject: str
    role: str

    def require(self, roles: tuple[str, ...]) -> None:
        """Admins may do everything; everyone else only what their role allows."""
        if self.role != ADMIN and self.role not in roles:
            raise Forbidden(f"this needs the role {' or '.join(roles)}; you are {self.role}")


def issue_local_token(
    subject: str, role: str, *, secret: str, issuer: str, ttl: int = LOCAL_TOKEN_TTL
) -> str:
    import jwt

    if role not in ROLES:
        raise ValueError(f"unknown role {role}")
    now = int(time.time())
    return jwt.encode(
        {"sub": subject, "role": role, "iss": issuer, "iat": now, "exp": now + ttl},
        secret,
        algorithm="HS256",
    )


def bearer_token(header: str | None) -> str:
    if not header:
        raise Unauthorized("missing Authorization header (Bearer token)")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    return token.strip()


def verify(header: str | None, settings: Settings) -> Principal:
    token = bearer_token(header)
    if settings.auth_mode == "local":
        claims = _verify_local(token, settings)
        role = claims.get("role")
    elif settings.auth_mode == "cognito":
        claims = _verify_cognito(token, settings)
        groups = claims.get("cognito:groups") or []
        role = next((r for r in _PRECEDENCE if r in groups), None)
    else:
        raise Unauthorized("authentication is not configured for this stage")
    # A Cognito user's name rather than their opaque `sub`: audit rows must name a person.
    subject = claims.get("cognito:username") or claims.get("username") or claims.get("sub")
    if role not in ROLES or not isinstance(subject, str):
        raise Unauthorized("token carries no Forewarn role")
    return Principal(subject=subject, role=str(role))


def _verify_local(token: str, settings: Settings) -> dict[str, Any]:
    import jwt

    if not settings.token_secret:
        raise Unauthorized("local tokens are not accepted: no signing key is configured")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.token_secret,
            algorithms=["HS256"],
            issuer=settings.token_issuer,
            options={"require": ["exp", "sub", "iss"]},
        )
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid token: {exc}") from None
    return claims


def _verify_cognito(token: str, settings: Settings) -> dict[str, Any]:
    import jwt

    issuer, client_id = settings.cognito_issuer, settings.cognito_client_id
    if not issuer or not client_id:
        raise Unauthorized("Cognito verification is not configured (COGNITO_ISSUER, client id)")
    jwks_url = settings.cognito_jwks_url or f"{issuer}/.well-known/jwks.json"
    jwks = _jwks_clients.get(jwks_url)
    if jwks is None:
        jwks = _jwks_clients[jwks_url] = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=3600)
    try:
        key = jwks.get_signing_key_from_jwt(token)
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=["RS256"],
            issuer=issuer,
            options={"require": ["exp", "sub", "iss", "token_use"], "verify_aud": False},
        )
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid token: {exc}") from None
    # ID tokens name the app client in `aud`, access tokens in `client_id`.
    audience = claims.get("aud") if claims.get("token_use") == "id" else claims.get("client_id")
    if audience != client_id:
        raise Unauthorized("token was issued for another application")
    return claims
