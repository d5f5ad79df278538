"""Token verification: local HS256 tokens, and Cognito RS256 tokens checked against a JWKS
served over HTTP on this machine, as a user pool serves it."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from chalicelib import auth
from chalicelib.config import settings
from chalicelib.errors import Forbidden, Unauthorized

SECRET = "local-signing-key-of-at-least-32-bytes!"


@pytest.fixture
def local_settings() -> Any:
    return replace(
        settings(), auth_mode="local", token_secret=SECRET, token_issuer="forewarn-local"
    )


def test_a_local_token_names_its_subject_and_role(local_settings: Any) -> None:
    token = auth.issue_local_token("olivia", "ops", secret=SECRET, issuer="forewarn-local")
    assert auth.verify(f"Bearer {token}", local_settings) == auth.Principal("olivia", "ops")


@pytest.mark.parametrize(
    "header",
    [None, "", "Basic abc", "Bearer", "Bearer not.a.jwt"],
)
def test_malformed_authorization_headers_are_refused(
    local_settings: Any, header: str | None
) -> None:
    with pytest.raises(Unauthorized):
        auth.verify(header, local_settings)


def test_expired_foreign_and_roleless_tokens_are_refused(local_settings: Any) -> None:
    now = int(time.time())
    claims = {"sub": "x", "role": "ops", "iss": "forewarn-local", "iat": now}
    for bad in (
        {**claims, "exp": now - 10},
        {**claims, "exp": now + 60, "iss": "someone-else"},
        {**claims, "exp": now + 60, "role": "root"},
    ):
        with pytest.raises(Unauthorized):
            auth.verify(f"Bearer {jwt.encode(bad, SECRET, algorithm='HS256')}", local_settings)


def test_an_unsigned_token_is_refused(local_settings: Any) -> None:
    claims = {"sub": "x", "role": "admin", "iss": "forewarn-local", "exp": int(time.time()) + 60}

    # Built by hand: an "alg": "none" token with the signature left empty.
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    unsigned = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."
    with pytest.raises(Unauthorized):
        auth.verify(f"Bearer {unsigned}", local_settings)


def test_admin_passes_every_role_check_and_others_only_their_own() -> None:
    auth.Principal("a", "admin").require(("ops",))
    auth.Principal("o", "ops").require(("ops", "social"))
    with pytest.raises(Forbidden):
        auth.Principal("s", "social").require(("ops",))


@pytest.fixture
def user_pool() -> Iterator[tuple[str, Any]]:
    """A user pool's JWKS endpoint on loopback, and its signing key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = json.dumps({"keys": [{**public, "kid": "k1", "alg": "RS256", "use": "sig"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path.endswith("/.well-known/jwks.json") else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/us-east-1_pool", key
    server.shutdown()


def cognito_token(key: Any, issuer: str, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "sub": "user-1",
        "iss": issuer,
        "token_use": "id",
        "aud": "client-1",
        "cognito:groups": ["social"],
        "iat": now,
        "exp": now + 300,
        **claims,
    }
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})


def test_cognito_tokens_are_verified_against_the_pool_keys(user_pool: tuple[str, Any]) -> None:
    issuer, key = user_pool
    cognito = replace(
        settings(), auth_mode="cognito", cognito_issuer=issuer, cognito_client_id="client-1"
    )
    groups = ["social", "ops"]
    token = cognito_token(key, issuer, **{"cognito:groups": groups})
    assert auth.verify(f"Bearer {token}", cognito) == auth.Principal("user-1", "ops")
    access = cognito_token(key, issuer, token_use="access", client_id="client-1", aud=None)
    assert auth.verify(f"Bearer {access}", cognito).role == "social"
    for bad in (
        cognito_token(key, issuer, aud="another-client"),
        cognito_token(key, "https://evil.example/pool"),
        cognito_token(key, issuer, exp=int(time.time()) - 5),
        cognito_token(key, issuer, **{"cognito:groups": ["customers"]}),
        cognito_token(rsa.generate_private_key(public_exponent=65537, key_size=2048), issuer),
    ):
        with pytest.raises(Unauthorized):
            auth.verify(f"Bearer {bad}", cognito)
