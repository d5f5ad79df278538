"""The HTTP API through Chalice's test client: the authorizer runs as API Gateway runs it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.test import Client
from conftest import TOKEN_SECRET, Stack
from factories import customer_record

import app as forewarn_app
from chalicelib.auth import issue_local_token

PUBLIC_ROUTES = {("/api/health", "GET")}


def token(role: str, subject: str = "tester") -> str:
    return issue_local_token(subject, role, secret=TOKEN_SECRET, issuer="forewarn-local")


def headers(role: str | None = "ops") -> dict[str, str]:
    result = {"Content-Type": "application/json"}
    if role:
        result["Authorization"] = f"Bearer {token(role)}"
    return result


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    with Client(forewarn_app.app) as test_client:
        yield test_client


def call(
    client: Client, method: str, path: str, body: Any = None, role: str | None = "ops"
) -> tuple[int, Any]:
    raw = (
        body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
    )
    response = client.http.request(method, path, headers=headers(role), body=raw)
    text = response.body.decode()
    assert "Traceback" not in text
    return response.status_code, json.loads(text) if text else None


def every_route() -> list[tuple[str, str, tuple[str, ...]]]:
    routes = []
    console = set(forewarn_app.console.roles) | forewarn_app.console.public
    for path, methods in forewarn_app.app.routes.items():
        if path in console:
            continue  # cookie sessions, not bearer tokens: tests/test_console.py
        for method in methods:
            roles = forewarn_app.api.roles.get(path, {}).get(method, ())
            routes.append((path, method, roles))
    return routes


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


@pytest.mark.parametrize(("path", "method", "roles"), every_route())
def test_every_route_refuses_a_missing_or_forged_token(
    client: Client, path: str, method: str, roles: tuple[str, ...]
) -> None:
    if (path, method) in PUBLIC_ROUTES:
        assert call(client, method, concrete(path), role=None)[0] == 200
        return
    if path in forewarn_app.api.signed:
        # Webhooks: no bearer token, but nothing without the sender's signature or secret.
        response = client.http.request(
            method, concrete(path), headers={"Content-Type": "application/json"}, body=b"{}"
        )
        assert response.status_code == 401, (method, path)
        return
    assert roles, f"{method} {path} is not registered through api.route, so it has no roles"
    for forged in (None, "Bearer nonsense", f"Bearer {token('ops')}x"):
        hdrs = {"Authorization": forged} if forged else {}
        response = client.http.request(method, concrete(path), headers=hdrs, body=b"{}")
        assert response.status_code in (401, 403), (method, path, forged)


@pytest.mark.parametrize(("path", "method", "roles"), every_route())
def test_every_route_refuses_a_role_it_does_not_admit(
    client: Client, path: str, method: str, roles: tuple[str, ...]
) -> None:
    for role in {"ops", "social"} - set(roles):
        if (path, method) in PUBLIC_ROUTES or path in forewarn_app.api.signed:
            continue
        status, _ = call(client, method, concrete(path), {}, role=role)
        assert status == 403, (method, path, role)


def test_a_token_signed_with_another_key_is_refused(client: Client) -> None:
    forged = issue_local_token(
        "mallory",
        "admin",
        secret="a-different-key-that-is-long-enough-32b",
        issuer="forewarn-local",
    )
    response = client.http.get("/api/whoami", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 403


def test_admin_may_use_every_role_route(client: Client) -> None:
    assert call(client, "GET", "/api/whoami", role="admin") == (
        200,
        {"subject": "tester", "role": "admin"},
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty"),
        (b"\xff\xfe", "not valid JSON"),
        ({"title": "x", "services": ["mobile"], "colour": "red"}, "unknown fields"),
        ({"title": "", "services": ["mobile"]}, "title"),
        ({"title": "x", "services": []}, "services"),
        ({"title": "x", "services": ["mobile"], "next_update_due": "tomorrow"}, "ISO 8601"),
        ({"title": "x", "services": ["mobile"], "status": "panicking"}, "status"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_incident_requests_get_a_clear_400(client: Client, body: Any, message: str) -> None:
    status, payload = call(client, "POST", "/api/incidents", body)
    assert status == 400
    assert payload["error"]["code"] == "bad_request"
    assert message in payload["error"]["message"]


def test_incident_status_moves_forward_only(client: Client) -> None:
    status, incident = call(
        client, "POST", "/api/incidents", {"title": "Outage", "services": ["mobile"]}
    )
    assert status == 201
    path = f"/api/incidents/{incident['incident_id']}"
    assert call(client, "PATCH", path, {"status": "monitoring"})[1]["status"] == "monitoring"
    status, payload = call(client, "PATCH", path, {"status": "investigating"})
    assert status == 409
    assert "cannot go back" in payload["error"]["message"]
    assert call(client, "GET", "/api/incidents/inc_missing")[0] == 404


def test_customer_import_writes_good_rows_and_reports_each_bad_row(client: Client) -> None:
    bad_phone = {**customer_record(2), "phone": "0301234567"}
    bad_email = {**customer_record(3), "email": "not-an-address"}
    body = {"customers": [customer_record(1), bad_phone, bad_email]}
    status, report = call(client, "POST", "/api/customers", body)
    assert status == 200
    assert report["created"] == 1
    assert [(r["row"], r["errors"][0]["field"]) for r in report["rejected"]] == [
        (2, "phone"),
        (3, "email"),
    ]
    assert call(client, "GET", "/api/customers/c0002")[0] == 404
    assert call(client, "GET", "/api/customers/c0001")[1]["phone"] == "+14155550001"
    again = call(client, "POST", "/api/customers", {"customers": [customer_record(1)]})[1]
    assert (again["created"], again["unchanged"]) == (0, 1)


def test_a_batch_of_only_bad_rows_is_422_with_the_report(client: Client) -> None:
    status, payload = call(client, "POST", "/api/customers", {"customers": [{"customer_id": "x"}]})
    assert status == 422
    assert payload["error"]["details"]["rejected"][0]["row"] == 1


def test_an_oversize_batch_is_refused(client: Client) -> None:
    rows = [customer_record(i) for i in range(501)]
    status, payload = call(client, "POST", "/api/customers", {"customers": rows})
    assert status == 400
    assert "500" in payload["error"]["message"]


def test_an_unexpected_failure_is_a_500_without_details(
    client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret customer data +14155550001")

    monkeypatch.setattr("chalicelib.incidents.get_incident", explode)
    status, payload = call(client, "GET", "/api/incidents/inc_1")
    assert status == 500
    assert payload == {
        "error": {"code": "internal", "message": "something went wrong; it is logged"}
    }
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "RuntimeError in get_incident" in logged
    assert "+14155550001" not in logged
