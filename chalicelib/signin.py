"""Signing in to the console: a username and password become a session token.

The session token is the same kind of token the API takes as a bearer token, so
`auth.verify` checks both the same way:

- `AUTH_MODE=cognito` (AWS): the user pool checks the password (`USER_PASSWORD_AUTH`) and
  its ID token, which carries the user's groups, is the session.
- `AUTH_MODE=local`: the users `forewarn run` seeds sit in a Secrets Manager secret as
  scrypt hashes (`{"<username>": {"role": "ops", "password": "scrypt$..."}}`), and the
  session is a local token signed with the stage's key.

Every refusal says the same thing, whether the user exists or not.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os

from chalicelib import aws, secrets
from chalicelib.auth import ROLES, issue_local_token
from chalicelib.config import Settings
from chalicelib.errors import Unauthorized

SESSION_SECONDS = 8 * 3600
WRONG = "wrong username or password"
MAX_USERNAME = 128
MAX_PASSWORD = 256
# OWASP's minimum for scrypt is N=2^17, r=8, p=1 (128 MiB of memory); this is one of its
# listed equivalents that needs 32 MiB, which suits a small Lambda.
_N, _R, _P = 2**15, 8, 3
_MAXMEM = 64 * 1024 * 1024


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAXMEM, dklen=32
    )
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def password_matches(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        actual = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_MAXMEM,
            dklen=len(bytes.fromhex(digest)),
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual.hex(), digest)


@functools.cache
def _decoy() -> str:
    # Checked against when the user does not exist, so that the answer takes as long.
    return hash_password("no such user", salt=bytes(16))


def sign_in(username: str, password: str, settings: Settings) -> str:
    """The session token for these credentials; Unauthorized when they are wrong."""
    username = username.strip()
    if not username or not password:
        raise Unauthorized("enter your username and password")
    if len(username) > MAX_USERNAME or len(password) > MAX_PASSWORD:
        raise Unauthorized(WRONG)
    if settings.auth_mode == "cognito":
        return _cognito(username, password, settings)
    if settings.auth_mode == "local":
        return _local(username, password, settings)
    raise Unauthorized("sign-in is not configured for this stage")


def _local(username: str, password: str, settings: Settings) -> str:
    if not settings.token_secret:
        raise Unauthorized("local sign-in is not set up: no signing key is configured")
    try:
        users = secrets.get_json(settings.console_users_secret_id)
    except secrets.SecretUnavailable:
        raise Unauthorized(
            "local sign-in is not set up: start the service with `forewarn run`"
        ) from None
    user = users.get(username)
    encoded = user.get("password") if isinstance(user, dict) else None
    role = user.get("role") if isinstance(user, dict) else None
    matches = password_matches(password, encoded if isinstance(encoded, str) else _decoy())
    if not (matches and isinstance(encoded, str) and role in ROLES):
        raise Unauthorized(WRONG)
    return issue_local_token(
        username,
        str(role),
        secret=settings.token_secret,
        issuer=settings.token_issuer,
        ttl=SESSION_SECONDS,
    )


def _cognito(username: str, password: str, settings: Settings) -> str:
    if not settings.cognito_client_id:
        raise Unauthorized("sign-in is not configured: COGNITO_CLIENT_ID is missing")
    try:
        response = aws.client("cognito-idp").initiate_auth(
            AuthFlow="USER_PASSWORD_AUTH",
            ClientId=settings.cognito_client_id,
            AuthParameters={"USERNAME": username, "PASSWORD": password},
        )
    except Exception as exc:
        code = aws.error_code(exc)
        if code in {"NotAuthorizedException", "UserNotFoundException"}:
            raise Unauthorized(WRONG) from None
        if code in {"PasswordResetRequiredException", "UserNotConfirmedException"}:
            raise Unauthorized(
                "this account must be reset by an admin before it can sign in"
            ) from None
        raise
    if response.get("ChallengeName"):
        # A first sign-in with a temporary password, or MFA: done in Cognito's hosted UI.
        raise Unauthorized(
            f"this account must first complete {response['ChallengeName']} with an admin"
        )
    token: str = response["AuthenticationResult"]["IdToken"]
    return token
