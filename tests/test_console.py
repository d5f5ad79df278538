"""The console through Chalice's test client: sign-in, sessions, CSRF, roles, escaping and
the audit log. What a browser does with the pages is in tests/browser/."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from chalice.test import Client
from conftest import Stack
from listening_factories import HOSTILE_TEXTS, flag_post
from test_api import call, concrete, token
from test_social_api import issue_id  # noqa: F401 (a fixture: an open issue with flags)

import app as forewarn_app
from chalicelib import aws
from chalicelib.console import csrf_token
from chalicelib.runtime import audit_log, services, signals
from chalicelib.signin import hash_password

PASSWORDS = {"olivia.ops": "ops-password-1", "sam.social": "social-password-1"}
ROLES = {"olivia.ops": "ops", "sam.social": "social"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@functools.cache
def hashed() -> str:
    users = {
        user: {"role": ROLES[user], "password": hash_password(password)}
        for user, password in PASSWORDS.items()
    }
    return json.dumps(users)


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    aws.client("secretsmanager").create_secret(
        Name="forewarn/test/console-users", SecretString=hashed()
    )
    with Client(forewarn_app.app) as test_client:
        yield test_client


def cookies_of(response: Any) -> dict[str, str]:
    """name -> the whole Set-Cookie line."""
    lines = response.headers.get("Set-Cookie") or []
    lines = [lines] if isinstance(lines, str) else lines
    return {line.split("=", 1)[0]: line for line in lines}


def sign_in(client: Client, user: str, password: str | None = None, next_: str = "") -> Any:
    page = client.http.get("/console/sign-in")
    nonce = cookies_of(page)["fw_signin"].split(";")[0].split("=", 1)[1]
    form = {
        "csrf": csrf_token(nonce),
        "username": user,
        "password": PASSWORDS[user] if password is None else password,
        "next": next_,
    }
    return client.http.post(
        "/console/sign-in",
        headers={**FORM, "Cookie": f"fw_signin={nonce}"},
        body=urlencode(form).encode(),
    )


def session(client: Client, user: str) -> str:
    response = sign_in(client, user)
    assert response.status_code == 303, response.body
    return cookies_of(response)["fw_session"].split(";")[0].split("=", 1)[1]


def get(client: Client, path: str, session_token: str | None) -> Any:
    headers = {"Cookie": f"fw_session={session_token}"} if session_token else {}
    return client.http.get(path, headers=headers)


def post(client: Client, path: str, session_token: str, form: dict[str, str]) -> Any:
    return client.http.post(
        path,
        headers={**FORM, "Cookie": f"fw_session={session_token}"},
        body=urlencode(form).encode(),
    )


def text(response: Any) -> str:
    body = response.body.decode()
    assert "Traceback" not in body
    return str(body)


# -- signing in -------------------------------------------------------------------------------


def test_signing_in_sets_an_httponly_samesite_session_and_goes_where_it_was_asked(
    client: Client,
) -> None:
    response = sign_in(client, "sam.social", next_="/console/flags")
    assert response.status_code == 303
    assert response.headers["Location"] == "/console/flags"
    cookie = cookies_of(response)["fw_session"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    # Served over plain http locally: a Secure cookie would never come back.
    assert "Secure" not in cookie
    assert audit_log().recent()[0].action == "sign in"


def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(client: Client) -> None:
    wrong = sign_in(client, "sam.social", password="guess")
    assert wrong.status_code == 401
    assert "wrong username or password" in text(wrong)
    assert "fw_session" not in cookies_of(wrong)
    PASSWORDS["nobody"] = "guess"
    try:
        unknown = sign_in(client, "nobody")
    finally:
        del PASSWORDS["nobody"]
    assert unknown.status_code == 401
    assert "wrong username or password" in text(unknown)


def test_sign_in_without_its_form_token_is_refused(client: Client) -> None:
    form = {"username": "sam.social", "password": PASSWORDS["sam.social"]}
    response = client.http.post("/console/sign-in", headers=FORM, body=urlencode(form).encode())
    assert response.status_code == 400
    assert "fw_session" not in cookies_of(response)


def test_a_next_address_on_another_site_is_ignored(client: Client) -> None:
    for target in ("https://evil.example/", "//evil.example/console", "/api/whoami"):
        response = sign_in(client, "sam.social", next_=target)
        assert response.headers["Location"] == "/console", target


def test_signing_out_clears_the_session(client: Client) -> None:
    token_ = session(client, "sam.social")
    response = post(client, "/console/sign-out", token_, {"csrf": csrf_token(token_)})
    assert response.status_code == 303
    assert "Max-Age=0" in cookies_of(response)["fw_session"]


# -- every page is guarded --------------------------------------------------------------------


def console_routes() -> list[tuple[str, str, tuple[str, ...]]]:
    return [
        (path, method, roles)
        for path, by_method in forewarn_app.console.roles.items()
        for method, roles in by_method.items()
    ]


def test_every_console_route_is_either_guarded_or_deliberately_public() -> None:
    registered = {p for p in forewarn_app.app.routes if p.startswith("/console")}
    console = set(forewarn_app.console.roles) | forewarn_app.console.public
    assert registered == {p for p in console if p.startswith("/console")}
    # Each authenticates otherwise: a password, the session itself, nothing to hide, or an
    # unsubscribe token signed for one address (tests/test_suppressions.py).
    assert forewarn_app.console.public == {
        "/console/sign-in",
        "/console/sign-out",
        "/console/static/{name}",
        "/unsubscribe",
    }


@pytest.mark.parametrize(("path", "method", "roles"), console_routes())
def test_every_console_page_sends_a_visitor_without_a_session_to_sign_in(
    client: Client, path: str, method: str, roles: tuple[str, ...]
) -> None:
    forged = token("ops") + "x"
    for cookie in (None, forged, "nonsense"):
        headers = {**FORM, **({"Cookie": f"fw_session={cookie}"} if cookie else {})}
        response = client.http.request(method, concrete(path), headers=headers, body=b"")
        assert response.status_code == 303, (method, path, cookie)
        assert response.headers["Location"].startswith("/console/sign-in")


@pytest.mark.parametrize(("path", "method", "roles"), console_routes())
def test_every_console_page_refuses_a_role_it_does_not_admit(
    client: Client, path: str, method: str, roles: tuple[str, ...]
) -> None:
    for user, role in ROLES.items():
        if role in roles:
            continue
        token_ = session(client, user)
        response = client.http.request(
            method,
            concrete(path),
            headers={**FORM, "Cookie": f"fw_session={token_}"},
            body=urlencode({"csrf": csrf_token(token_)}).encode(),
        )
        assert response.status_code == 403, (method, path, role)
        assert "needs the role" in text(response)


def test_pages_forbid_inline_scripts_and_framing(client: Client) -> None:
    response = get(client, "/console", session(client, "olivia.ops"))
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "'unsafe-inline'" not in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["Content-Type"].startswith("text/html")


def test_static_files_are_served_and_nothing_else(client: Client) -> None:
    css = client.http.get("/console/static/console.css")
    assert css.status_code == 200
    assert css.headers["Content-Type"].startswith("text/css")
    for name in ("layout.html.j2", "..%2Flayout.html.j2", "console.py"):
        assert client.http.get(f"/console/static/{name}").status_code == 404, name


# -- flagged posts ----------------------------------------------------------------------------


def test_post_text_is_shown_escaped(client: Client) -> None:
    for index, hostile in enumerate(HOSTILE_TEXTS):
        flag_post(f"90{index}", hostile, handle='"><b>handle')
    page = text(get(client, "/console/flags", session(client, "sam.social")))
    assert "<script>window" not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;window.__pwned" in page
    assert "&lt;img src=x onerror=" in page
    assert '"><b>handle' not in page


def test_dismissing_a_post_needs_the_form_token_and_is_audited(client: Client) -> None:
    flag_post("901", "@AcmeTel no signal since noon")
    token_ = session(client, "sam.social")
    refused = post(client, "/console/flags/901/dismiss", token_, {"csrf": "stale"})
    assert refused.status_code == 400
    assert signals().get_flag("901")["state"] == "open"

    back = "/console/flags?sentiment=negative"
    done = post(
        client, "/console/flags/901/dismiss", token_, {"csrf": csrf_token(token_), "back": back}
    )
    assert done.status_code == 303
    assert done.headers["Location"] == "/console/flags?sentiment=negative&done=dismissed"
    flag = signals().get_flag("901")
    assert (flag["state"], flag["decided_by"]) == ("dismissed", "sam.social")
    entry = audit_log().recent()[0]
    assert (entry.actor, entry.action, entry.target, entry.outcome) == (
        "sam.social",
        "POST /console/flags/{post_id}/{action}",
        "action=dismiss, post_id=901",
        "ok",
    )
    assert "Dismissed." in text(get(client, done.headers["Location"], token_))


def test_linking_a_post_to_an_unknown_incident_shows_why_and_changes_nothing(
    client: Client,
) -> None:
    flag_post("902", "@AcmeTel down again")
    token_ = session(client, "sam.social")
    form = {"csrf": csrf_token(token_), "incident_id": "inc_missing"}
    response = post(client, "/console/flags/902/link", token_, form)
    assert response.status_code == 404
    assert "no incident inc_missing" in text(response)
    assert signals().get_flag("902").get("incident_id") is None
    assert audit_log().recent()[0].outcome == "refused: not_found"


def test_filters_narrow_the_queue(client: Client) -> None:
    flag_post("903", "@AcmeTel meh", handle="small", followers=10)
    flag_post("904", "@AcmeTel down for everyone", handle="big", followers=50_000)
    token_ = session(client, "sam.social")
    page = text(get(client, "/console/flags?min_followers=1000", token_))
    assert "@big" in page
    assert "@small" not in page
    bad = get(client, "/console/flags?min_followers=lots", token_)
    assert bad.status_code == 400
    assert "min_followers must be a whole number" in text(bad)


# -- dashboard and audit ------------------------------------------------------------------------


def test_the_dashboard_lists_open_incidents_and_not_resolved_ones(client: Client) -> None:
    status, _ = call(client, "POST", "/api/incidents", {"title": "Fibre cut", "services": ["tv"]})
    assert status == 201
    _, gone = call(client, "POST", "/api/incidents", {"title": "Old outage", "services": ["tv"]})
    call(client, "PATCH", f"/api/incidents/{gone['incident_id']}", {"status": "resolved"})
    page = text(get(client, "/console", session(client, "olivia.ops")))
    assert "Fibre cut" in page
    assert "Old outage" not in page


def test_api_changes_are_audited_with_who_and_what_but_no_body(client: Client) -> None:
    call(client, "POST", "/api/incidents", {"title": "Secret title", "services": ["tv"]})
    call(client, "PATCH", "/api/incidents/inc_missing", {"status": "resolved"})
    entries = audit_log().recent()
    assert [(e.action, e.outcome) for e in entries[:2]] == [
        ("PATCH /api/incidents/{incident_id}", "refused: not_found"),
        ("POST /api/incidents", "ok"),
    ]
    assert entries[0].target == "incident_id=inc_missing"
    assert all("Secret title" not in json.dumps(e.to_dict()) for e in entries)
    page = text(get(client, "/console/audit", session(client, "olivia.ops")))
    assert re.search(r"POST /api/incidents</td>", page)


def test_a_reply_too_long_for_x_is_explained_before_anything_is_posted(client: Client) -> None:
    flag_post("905", "@AcmeTel down")
    token_ = session(client, "sam.social")
    query = urlencode({"template": "custom", "text": "Hi {{ handle }}! " + "x" * 300})
    page = text(get(client, f"/console/flags/905/reply?{query}", token_))
    assert "X allows at most 280" in page
    assert "Reply on X</button>" not in page
    fine = text(get(client, "/console/flags/905/reply?template=dm_us", token_))
    assert "Hi @kim," in fine
    assert "Reply on X</button>" in fine


def test_the_incident_page_shows_an_overdue_update_and_the_notices_timeline(
    client: Client,
) -> None:
    _, incident = call(
        client,
        "POST",
        "/api/incidents",
        {"title": "Fibre cut", "services": ["tv"], "next_update_due": "2020-01-01T10:00:00Z"},
    )
    incident_id = incident["incident_id"]
    status, draft = call(client, "POST", "/api/broadcasts", {"incident_id": incident_id})
    assert status == 201
    page = text(get(client, f"/console/incidents/{incident_id}", session(client, "sam.social")))
    assert re.search(r'class="overdue"[^>]*>overdue by \d+ h', page)
    assert "initial notice drafted by tester" in page
    assert f"/console/broadcasts/{draft['broadcast_id']}" in page
    # The social team reads it; only ops change it.
    assert 'aria-label="Update the incident"' not in page


def test_ops_moves_an_incident_forward_from_its_page(client: Client) -> None:
    _, incident = call(client, "POST", "/api/incidents", {"title": "Fibre cut", "services": ["tv"]})
    path = f"/console/incidents/{incident['incident_id']}"
    token_ = session(client, "olivia.ops")
    form = {"csrf": csrf_token(token_), "status": "monitoring", "next_update_due": ""}
    done = post(client, path, token_, form)
    assert done.status_code == 303
    assert call(client, "GET", f"/api/incidents/{incident['incident_id']}")[1]["status"] == (
        "monitoring"
    )
    back = post(client, path, token_, {**form, "status": "investigating"})
    assert back.status_code == 409
    assert "cannot go back" in text(back)


def test_the_ivr_finds_a_caller_through_the_api_and_ops_only(client: Client) -> None:
    from factories import customer

    from chalicelib.runtime import services

    services().store.upsert_customer(customer(42))
    status, found = call(client, "GET", "/api/lookup?q=%2B1%20415%20555%200042")
    assert status == 200
    assert found["customer"]["customer_id"] == "c0042"
    assert call(client, "GET", "/api/lookup?q=c9999")[0] == 404
    assert call(client, "GET", "/api/lookup?q=")[0] == 400
    assert call(client, "GET", "/api/lookup?q=c0042", role="social")[0] == 403


def test_the_incident_timeline_shows_what_a_status_source_said_and_the_api_cannot_forge_it(
    client: Client,
) -> None:
    from chalicelib import broadcasts
    from chalicelib.runtime import services

    _, incident = call(client, "POST", "/api/incidents", {"title": "Fibre cut", "services": ["tv"]})
    said = {
        "source": "carrier",
        "status": "identified",
        "body": "Engineers found <the> fault",
        "display_at": "2026-03-02T09:05:00Z",
    }
    broadcasts.create_broadcast(
        services(),
        {"incident_id": incident["incident_id"]},
        actor="source:carrier",
        source_update=said,
    )
    page = text(
        get(client, f"/console/incidents/{incident['incident_id']}", session(client, "olivia.ops"))
    )
    assert "carrier said (identified): Engineers found &lt;the&gt; fault" in page
    status, body = call(
        client,
        "POST",
        "/api/broadcasts",
        {"incident_id": incident["incident_id"], "source_update": said},
    )
    assert status == 400
    assert "unknown fields: source_update" in body["error"]["message"]


def test_the_dashboard_charts_an_issue_and_the_incident_it_opened(
    client: Client,
    issue_id: str,  # noqa: F811
) -> None:
    status, promoted = call(client, "POST", f"/api/emerging/{issue_id}/incident", {})
    assert status == 201
    # The lead time starts at the issue's opening, before the incident existed.
    incident = services().store.get_incident(promoted["incident"]["incident_id"])
    assert incident is not None
    assert incident.first_signal_at == signals().get_issue(issue_id).opened_at
    assert incident.first_signal_at < incident.created_at
    page = text(get(client, "/console", session(client, "olivia.ops")))
    assert page.count("<svg") == 2
    assert f"Complaints on X: {promoted['incident']['title']}" in page
