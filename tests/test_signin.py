"""Signing in: password hashes, the local users' secret, and Cognito's user pool (the one
infra/ defines, on moto, with its real tokens and signing keys)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import Stack

from chalicelib import auth, aws, runtime, signin
from chalicelib.config import settings
from chalicelib.errors import Unauthorized


def test_a_password_matches_its_hash_and_nothing_else() -> None:
    encoded = signin.hash_password("correct horse")
    assert encoded.startswith("scrypt$")
    assert signin.password_matches("correct horse", encoded)
    assert not signin.password_matches("correct horsE", encoded)
    assert signin.hash_password("correct horse") != encoded  # a fresh salt each time
    for broken in ("", "scrypt$1$2", "md5$x$y$z$00$00", encoded.replace("scrypt", "bcrypt")):
        assert not signin.password_matches("correct horse", broken)


@pytest.fixture
def local_users(stack: Stack) -> dict[str, str]:
    users = {
        "olivia.ops": {"role": "ops", "password": signin.hash_password("ops-pass")},
        "no.role": {"role": "superuser", "password": signin.hash_password("pass")},
    }
    aws.client("secretsmanager").create_secret(
        Name=settings().console_users_secret_id, SecretString=json.dumps(users)
    )
    return {"olivia.ops": "ops-pass"}


def test_a_local_user_gets_a_session_the_api_accepts(local_users: dict[str, str]) -> None:
    token = signin.sign_in(" olivia.ops ", "ops-pass", settings())
    principal = auth.verify(f"Bearer {token}", settings())
    assert (principal.subject, principal.role) == ("olivia.ops", "ops")


@pytest.mark.parametrize(
    ("user", "password"),
    [("olivia.ops", "wrong"), ("nobody", "ops-pass"), ("no.role", "pass"), ("x" * 500, "p")],
)
def test_every_refused_local_sign_in_says_the_same(
    local_users: dict[str, str], user: str, password: str
) -> None:
    with pytest.raises(Unauthorized, match=r"^wrong username or password$"):
        signin.sign_in(user, password, settings())


def test_local_sign_in_without_the_users_secret_says_how_to_set_it_up(stack: Stack) -> None:
    with pytest.raises(Unauthorized, match="forewarn run"):
        signin.sign_in("olivia.ops", "ops-pass", settings())


@dataclass
class Pool:
    pool_id: str
    client_id: str


@pytest.fixture
def cognito(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pool]:
    idp = aws.client("cognito-idp")
    pools = idp.list_user_pools(MaxResults=10)["UserPools"]
    [pool] = [p for p in pools if p["Name"] == "forewarn-test-console"]
    [client] = idp.list_user_pool_clients(UserPoolId=pool["Id"], MaxResults=10)["UserPoolClients"]
    groups = {g["GroupName"] for g in idp.list_groups(UserPoolId=pool["Id"])["Groups"]}
    assert groups == {"ops", "social", "admin"}
    for user, group in (("sam", "social"), ("ada", "admin"), ("nogroup", None)):
        idp.admin_create_user(UserPoolId=pool["Id"], Username=user, MessageAction="SUPPRESS")
        idp.admin_set_user_password(
            UserPoolId=pool["Id"], Username=user, Password="Correct-Horse-1", Permanent=True
        )
        if group:
            idp.admin_add_user_to_group(UserPoolId=pool["Id"], Username=user, GroupName=group)
    monkeypatch.setenv("AUTH_MODE", "cognito")
    monkeypatch.setenv(
        "COGNITO_ISSUER", f"https://cognito-idp.us-east-1.amazonaws.com/{pool['Id']}"
    )
    monkeypatch.setenv("COGNITO_CLIENT_ID", client["ClientId"])
    monkeypatch.setenv("COGNITO_JWKS_URL", f"{stack.url}/{pool['Id']}/.well-known/jwks.json")
    runtime.reset()
    yield Pool(pool["Id"], client["ClientId"])
    runtime.reset()


def test_a_cognito_user_signs_in_with_the_role_of_their_group(cognito: Pool) -> None:
    for user, role in (("sam", "social"), ("ada", "admin")):
        token = signin.sign_in(user, "Correct-Horse-1", settings())
        principal = auth.verify(f"Bearer {token}", settings())
        assert (principal.subject, principal.role) == (user, role)


def test_a_cognito_user_with_a_wrong_password_or_no_group_is_refused(cognito: Pool) -> None:
    with pytest.raises(Unauthorized, match=r"^wrong username or password$"):
        signin.sign_in("sam", "Wrong-Horse-1", settings())
    with pytest.raises(Unauthorized, match=r"^wrong username or password$"):
        signin.sign_in("nobody", "Correct-Horse-1", settings())
    token = signin.sign_in("nogroup", "Correct-Horse-1", settings())
    with pytest.raises(Unauthorized, match="no Forewarn role"):
        auth.verify(f"Bearer {token}", settings())


def test_a_token_from_another_app_client_is_refused(
    cognito: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = signin.sign_in("sam", "Correct-Horse-1", settings())
    monkeypatch.setenv("COGNITO_CLIENT_ID", "another-client")
    runtime.reset()
    with pytest.raises(Unauthorized, match="another application"):
        auth.verify(f"Bearer {token}", settings())
