"""What the social team and ops do in the console, in chromium."""

from __future__ import annotations

import re
from typing import Any

from listening_factories import HOSTILE_TEXTS, flag_post

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
