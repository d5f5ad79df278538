"""What the social team and ops do in the console, in chromium."""

from __future__ import annotations

import re
from typing import Any

from listening_factories import HOSTILE_TEXTS, flag_post
from playwright.sync_api import expect

from forewarn_cli.local.stack import LOCAL_USERS, LocalStack


def sign_in(page: Any, stack: LocalStack, role: str, next_path: str = "/console") -> None:
    user = LOCAL_USERS[role]
    page.goto(f"{stack.api_url}{next_path}")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(stack.passwords[user])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{stack.api_url}{next_path}*")


def test_the_social_team_reviews_and_dismisses_a_flagged_post(
    local_stack: LocalStack, page: Any
) -> None:
    flag_post("7001", "@AcmeTel no signal in Dallas since noon", handle="dallas_kim")
    flag_post("7002", "@AcmeTel my bill doubled?!", handle="billing_bo")
    sign_in(page, local_stack, "social", "/console/flags")
    posts = page.get_by_role("article")
    assert posts.filter(has_text="no signal in Dallas").count() == 1
    kim = posts.filter(has_text="@dallas_kim")
    kim.get_by_role("button", name="Dismiss").click()
    page.wait_for_url(re.compile(r"done=dismissed"))
    assert page.get_by_role("status").inner_text() == "Dismissed."
    assert page.get_by_role("article").filter(has_text="@dallas_kim").count() == 0
    assert page.get_by_role("article").filter(has_text="@billing_bo").count() == 1
    assert page.errors == []


def test_hostile_post_text_shows_as_text_and_runs_nothing(
    local_stack: LocalStack, page: Any
) -> None:
    for index, text in enumerate(HOSTILE_TEXTS):
        flag_post(f"71{index}", text, handle=f"hostile{index}")
    sign_in(page, local_stack, "social", "/console/flags")
    for text in HOSTILE_TEXTS:
        shown = page.locator("blockquote.post-text", has_text=text[:20])
        assert shown.inner_text() == text
    assert page.locator("blockquote.post-text img, blockquote.post-text script").count() == 0
    assert page.evaluate("window.__pwned === undefined")
    assert page.errors == []
    assert page.dialogs == []


def test_a_user_of_the_wrong_role_is_refused(local_stack: LocalStack, page: Any) -> None:
    sign_in(page, local_stack, "social")
    response = page.goto(f"{local_stack.api_url}/console/audit")
    assert response.status == 403
    assert "needs the role ops" in page.get_by_role("alert").inner_text()
    assert page.get_by_role("link", name="Audit log").count() == 0


def test_a_visitor_without_a_session_signs_in_first_and_a_wrong_password_says_so(
    local_stack: LocalStack, page: Any
) -> None:
    page.goto(f"{local_stack.api_url}/console/flags")
    assert "/console/sign-in" in page.url
    page.get_by_label("Username").fill(LOCAL_USERS["ops"])
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "wrong username or password"
    assert "/console/sign-in" in page.url


def test_sign_in_and_the_queue_work_from_the_keyboard_at_phone_width(
    local_stack: LocalStack, page: Any
) -> None:
    page.set_viewport_size({"width": 375, "height": 740})
    flag_post("7201", "@AcmeTel " + "outage " * 40, handle="long_post")
    page.goto(f"{local_stack.api_url}/console/flags")
    assert page.evaluate("document.activeElement.id") == "username"
    page.keyboard.type(LOCAL_USERS["social"])
    page.keyboard.press("Tab")
    page.keyboard.type(local_stack.passwords[LOCAL_USERS["social"]])
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/console/flags$"))
    assert page.get_by_role("heading", name="Flagged posts").is_visible()
    # Nothing wider than the phone: no sideways scrolling to read a post or reach a button.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert page.get_by_role("article").filter(has_text="@long_post").is_visible()


def test_signing_out_ends_the_session(local_stack: LocalStack, page: Any) -> None:
    sign_in(page, local_stack, "ops")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/console/sign-in"))
    page.goto(f"{local_stack.api_url}/console")
    assert "/console/sign-in" in page.url


# -- ops: compose, preview, second approval, send, watch, stop ---------------------------------


def harbour_incident(customers: int) -> str:
    """An incident whose audience is exactly `customers` customers seeded here."""
    from factories import customer

    from chalicelib import incidents
    from chalicelib.runtime import services

    store = services().store
    for index in range(customers):
        store.upsert_customer(
            customer(500 + index, services=(("fibre", "harbour", "10115"),), channels=("sms",))
        )
    payload = {"title": "Fibre cut at the harbour", "services": ["fibre"], "regions": ["harbour"]}
    return incidents.create_incident(store, payload).incident_id


def delivered_sms(stack: LocalStack) -> list[dict[str, Any]]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{stack.aws_url}/moto-api/data.json") as response:
        return list(json.loads(response.read())["sns"]["SMS"])


def sign_out(page: Any) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/console/sign-in"))


def test_ops_composes_previews_gets_a_second_approval_sends_and_watches_it_finish(
    local_stack: LocalStack, page: Any
) -> None:
    incident_id = harbour_incident(4)  # more than the threshold of 3
    already = len(delivered_sms(local_stack))
    sign_in(page, local_stack, "ops", f"/console/broadcasts/new?incident_id={incident_id}")
    count = page.locator("#recipient-count")
    expect(count).to_have_text("4 customers")
    page.get_by_label("Regions").fill("nowhere")
    expect(count).to_have_text("0 customers")
    page.get_by_label("Regions").fill("harbour")
    expect(count).to_have_text("4 customers")
    page.get_by_label("Workaround").fill("Use mobile data & restart the router")
    page.get_by_label("Also post it on the brand's X account").check()
    page.get_by_role("button", name="Save draft and preview").click()
    page.wait_for_url(re.compile(r"/console/broadcasts/bc_\w+\?done=created"))
    broadcast_url = page.url.split("?")[0]
    sms = page.get_by_role("article", name="sms preview")
    assert "Use mobile data & restart the router" in sms.inner_text()
    assert "SMS segment" in sms.inner_text()
    assert re.search(
        r"\d+ of 280 characters", page.get_by_role("article", name="social preview").inner_text()
    )
    # The author may not approve a broadcast of this size.
    assert "someone other than you must approve it" in page.locator("#second-person").inner_text()
    assert page.get_by_role("button", name="Approve").count() == 0

    page.get_by_role("link", name="Dry run").click()
    assert (
        "Nothing was sent. 4 customers would be reached" in page.get_by_role("status").inner_text()
    )
    assert len(delivered_sms(local_stack)) == already

    sign_out(page)
    page.goto(broadcast_url)
    page.get_by_label("Username").fill(LOCAL_USERS["admin"])
    page.get_by_label("Password").fill(local_stack.passwords[LOCAL_USERS["admin"]])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(broadcast_url)
    page.get_by_role("button", name="Approve").click()
    assert page.get_by_role("status").inner_text() == "Approved."
    page.get_by_role("button", name="Send", exact=True).click()
    assert page.dialogs == ["Send to 4 customers now?"]
    # The page reloads itself while the broadcast sends.
    expect(page.locator("#broadcast-status")).to_have_text("sent", timeout=60_000)
    assert "4 of 4 settled" in page.get_by_role("region", name="Delivery").inner_text()
    assert len(delivered_sms(local_stack)) == already + 4
    [public] = [t for t in local_stack.x_server.created if "harbour" in t.text]
    assert f"posted (id {public.id})" in page.locator("#public-post").inner_text()
    page.get_by_role("link", name="Dashboard").click()
    row = page.get_by_role("row").filter(has_text="Fibre cut at the harbour").first
    assert re.search(r"4 / 4\s+0\s+\d+ min", row.inner_text())
    assert page.errors == []


def test_ops_stops_an_approved_broadcast_with_the_kill_switch(
    local_stack: LocalStack, page: Any
) -> None:
    from chalicelib import broadcasts
    from chalicelib.runtime import services

    incident_id = harbour_incident(2)
    draft = broadcasts.create_broadcast(services(), {"incident_id": incident_id}, actor="oscar")
    broadcasts.approve(services(), draft.broadcast_id, actor="olga")
    sign_in(page, local_stack, "ops", f"/console/broadcasts/{draft.broadcast_id}")
    page.get_by_role("button", name="Stop sending").click()
    assert page.dialogs == ["Stop this broadcast for good?"]
    assert "Nothing more goes out" in page.get_by_role("status").inner_text()
    assert page.locator("#broadcast-status").inner_text() == "halted"
    assert page.get_by_role("button", name="Send", exact=True).count() == 0


def test_the_social_team_replies_to_a_flagged_post_on_x(local_stack: LocalStack, page: Any) -> None:
    x_server = local_stack.x_server
    [post_id] = x_server.publish({"text": "@ForewarnTel no signal at all", "author_handle": "rita"})
    flag_post(post_id, "@ForewarnTel no signal at all", handle="rita")
    sign_in(page, local_stack, "social", "/console/flags")
    post = page.get_by_role("article").filter(has_text="@rita")
    post.get_by_label("Reply").select_option("dm_us")
    post.get_by_role("button", name="Preview reply").click()
    reply_text = page.locator("#reply-text").inner_text()
    assert reply_text.startswith("Hi @rita,")
    before = len(x_server.created)  # the ops test's public post may be there
    assert [t for t in x_server.created if t.in_reply_to_tweet_id == post_id] == []
    page.get_by_role("button", name="Reply on X").click()
    assert page.dialogs == ["Post this reply on X?"]
    assert page.get_by_role("status").inner_text() == "Replied on X."
    [reply] = x_server.created[before:]
    assert (reply.in_reply_to_tweet_id, reply.text) == (post_id, reply_text)
    assert page.get_by_role("article").filter(has_text="@rita").count() == 0  # handled


def test_an_overdue_update_shows_red_and_ops_set_the_next_one(
    local_stack: LocalStack, page: Any
) -> None:
    from chalicelib import incidents
    from chalicelib.runtime import services

    payload = {
        "title": "Late update",
        "services": ["tv"],
        "next_update_due": "2020-01-01T10:00:00Z",
    }
    incident = incidents.create_incident(services().store, payload)
    sign_in(page, local_stack, "ops", f"/console/incidents/{incident.incident_id}")
    timer = page.locator("#next-update")
    assert timer.inner_text().startswith("overdue by")
    assert timer.evaluate("e => getComputedStyle(e).color") == "rgb(179, 38, 30)"
    page.get_by_label("Status").select_option("identified")
    page.get_by_label("Next update due").fill("2099-01-01T10:00:00Z")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Incident updated.")
    expect(timer).to_have_text(re.compile(r"^in \d+ h"))
    assert "identified" in page.locator(".badge").inner_text()


def test_an_agent_looks_up_a_caller_by_phone_and_sees_the_outage_and_the_notice(
    local_stack: LocalStack, page: Any
) -> None:
    import time

    from factories import customer

    from chalicelib import broadcasts, incidents
    from chalicelib.domain import BroadcastStatus
    from chalicelib.runtime import services

    store = services().store
    store.upsert_customer(customer(777, services=(("tv", "bay", "94110"),), channels=("sms",)))
    payload = {"title": "TV outage in the bay", "services": ["tv"], "regions": ["bay"]}
    incident = incidents.create_incident(store, payload)
    draft = broadcasts.create_broadcast(
        services(), {"incident_id": incident.incident_id}, actor="o"
    )
    broadcasts.approve(services(), draft.broadcast_id, actor="p")
    broadcasts.send(services(), draft.broadcast_id)
    deadline = time.monotonic() + 30
    while broadcasts.get_broadcast(store, draft.broadcast_id).status is not BroadcastStatus.SENT:
        assert time.monotonic() < deadline, "the broadcast was not delivered"
        time.sleep(0.2)

    sign_in(page, local_stack, "ops", "/console/customers")
    page.get_by_label("Phone number, email address or customer id").fill("(415) 555-0777")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Kim Tester777 (c0777)")).to_be_visible()
    active = page.get_by_role("region", name="Active incidents affecting them").inner_text()
    assert "TV outage in the bay" in active
    assert "told" in active
    notices = page.get_by_role("region", name="Notices sent to them").inner_text()
    assert re.search(r"initial notice: TV outage in the bay\s+sms\s+sent", notices)
    page.get_by_label("Phone number, email address or customer id").fill("+1 212 555 0000")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("no customer with that phone number")


def test_the_social_team_filters_the_queue_and_links_a_post_to_an_incident(
    local_stack: LocalStack, page: Any
) -> None:
    from chalicelib import incidents
    from chalicelib.runtime import services, signals

    payload = {"title": "Mobile network down in Dallas", "services": ["mobile"]}
    incident = incidents.create_incident(services().store, payload)
    flag_post("7301", "@AcmeTel whole city has no signal", handle="big_reach", followers=90_000)
    flag_post("7302", "@AcmeTel no signal here either", handle="small_reach", followers=12)
    sign_in(page, local_stack, "social", "/console/flags")
    page.get_by_label("Reach at least").fill("50000")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"min_followers=50000"))
    posts = page.get_by_role("article")
    expect(posts.filter(has_text="@big_reach")).to_have_count(1)
    expect(posts.filter(has_text="@small_reach")).to_have_count(0)
    big = posts.filter(has_text="@big_reach")
    big.get_by_label("Incident").select_option(label="Mobile network down in Dallas")
    big.get_by_role("button", name="Link").click()
    expect(page.get_by_role("status")).to_have_text("Linked to the incident.")
    assert "min_followers=50000" in page.url  # back to the same filtered queue
    assert signals().get_flag("7301")["incident_id"] == incident.incident_id


def test_ops_preview_a_notice_as_a_french_speaking_customer_and_read_the_audit_log(
    local_stack: LocalStack, page: Any
) -> None:
    from factories import customer

    from chalicelib import broadcasts, incidents
    from chalicelib.runtime import services

    store = services().store
    store.upsert_customer(customer(880, services=(("tv", "lake", "60601"),), locale="fr-CA"))
    payload = {"title": "TV outage by the lake", "services": ["tv"], "regions": ["lake"]}
    incident = incidents.create_incident(store, payload)
    draft = broadcasts.create_broadcast(
        services(), {"incident_id": incident.incident_id}, actor="o"
    )
    flag_post("7401", "@AcmeTel thanks, all good now", handle="happy_hal", label="positive")

    sign_in(page, local_stack, "ops", f"/console/broadcasts/{draft.broadcast_id}")
    page.get_by_label("As customer").fill("c0880")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_text("For customer c0880, locale fr-CA")).to_be_visible()
    assert "travaillons" in page.get_by_role("article", name="sms preview").inner_text()

    page.goto(f"{local_stack.api_url}/console/flags?sentiment=positive")
    page.get_by_role("article").filter(has_text="@happy_hal").get_by_role(
        "button", name="Mark handled"
    ).click()
    expect(page.get_by_role("status")).to_have_text("Marked as handled.")
    page.get_by_role("link", name="Audit log").click()
    first = page.get_by_role("row").nth(1).inner_text()
    assert "olivia.ops" in first
    assert "POST /console/flags/{post_id}/{action}" in first
    assert "action=handle, post_id=7401" in first
