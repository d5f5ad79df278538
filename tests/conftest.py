"""Shared fixtures: one moto server (a real AWS API server) for the session, and a fresh
set of the resources of `infra/` for every test that asks for `stack`."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from forewarn_cli.local.stack import LocalStack, free_port

AWS_PORT = free_port()
AWS_URL = f"http://127.0.0.1:{AWS_PORT}"
TOKEN_SECRET = "test-signing-key-for-local-tokens-only"

# Set before any test module imports `app`: the app reads its stage and queue names at import.
os.environ.update(
    {
        "FOREWARN_STAGE": "test",
        "AWS_ENDPOINT_URL": AWS_URL,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AUTH_MODE": "local",
        "TOKEN_ISSUER": "forewarn-local",
        "FOREWARN_TOKEN_SECRET": TOKEN_SECRET,
        "SENDER_EMAIL": "alerts@forewarn.example",
        "BRAND_NAME": "Forewarn Telecom",
        "PLAN_PAGE_SIZE": "500",
    }
)


@pytest.fixture(scope="session")
def aws_server() -> Iterator[str]:
    from forewarn_cli.local.awsserver import start_in_process

    server = start_in_process("127.0.0.1", AWS_PORT)
    yield AWS_URL
    server.stop()


@dataclass
class Stack:
    """The test's view of the embedded AWS: fresh resources, and what was delivered."""

    url: str

    def delivered(self) -> dict[str, list[dict[str, Any]]]:
        with urllib.request.urlopen(f"{self.url}/moto-api/data.json") as response:
            data = json.loads(response.read())
        return {"sms": data["sns"]["SMS"], "email": data["ses"]["RawMessage"]}


@pytest.fixture
def stack(aws_server: str) -> Iterator[Stack]:
    from chalicelib import aws, runtime
    from forewarn_cli.local import infra

    request = urllib.request.Request(f"{aws_server}/moto-api/reset", method="POST")
    urllib.request.urlopen(request).close()
    runtime.reset()
    infra.deploy(aws.client, stage="test", sender_email="alerts@forewarn.example")
    yield Stack(aws_server)
    runtime.reset()


@pytest.fixture
def run_queues(stack: Stack) -> Iterator[Any]:
    """Drive the app's queue consumers as Lambda would; call it to wait until all is done."""
    import app
    from chalicelib import aws
    from forewarn_cli.local.events import EventRunner

    runner = EventRunner(
        app.app, aws.client("sqs"), concurrency=2, poll_wait_seconds=0, schedules=False
    )
    runner.start()

    def drain(timeout: float = 60) -> EventRunner:
        assert runner.drain(timeout), "queues did not drain"
        return runner

    yield drain
    runner.stop()


# -- the brand's X account on the local X server -------------------------------------------------

X_BEARER = "test-bearer-AAAAAAAAAAAAAAAAAAAAAFAKE"
X_SECRET = {
    "bearer_token": X_BEARER,
    "consumer_key": "test-consumer-key",
    "consumer_secret": "test-consumer-secret",
    "access_token": "test-access-token",
    "access_token_secret": "test-access-token-secret",
}


@pytest.fixture
def brand_x(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The local X server, named by `X_API_URL`, and the stage's X secret, so that
    `x.x_poster()` reaches it as on a local stack."""
    from chalicelib import aws, runtime
    from chalicelib.config import settings
    from forewarn_cli.local.xserver import XServer

    server = XServer(bearer_token=X_BEARER)
    server.start()
    monkeypatch.setenv("X_API_URL", server.url)
    runtime.reset()
    aws.client("secretsmanager").put_secret_value(
        SecretId=settings().x_secret_id, SecretString=json.dumps(X_SECRET)
    )
    yield server
    server.stop()
    monkeypatch.undo()
    runtime.reset()


# -- the console in a browser ----------------------------------------------------------------
# Debian's chromium driven by Playwright, against the stack `make run` starts (moto, the
# Chalice local server, the queue workers), run in this process so that tests can put data in
# its tables directly. Screenshots of every browser test are kept in test-artifacts/browser/.

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
BROWSER_APPROVAL_THRESHOLD = 3


@pytest.fixture(scope="module")
def local_stack(aws_server: str) -> Iterator[LocalStack]:
    from chalicelib import runtime

    saved = dict(os.environ)
    # moto keeps one state per process: start from an empty one, as `make run` does.
    request = urllib.request.Request(f"{aws_server}/moto-api/reset", method="POST")
    urllib.request.urlopen(request).close()
    # The stage the app was imported with: its queue names were fixed at import.
    stack = LocalStack(
        external_aws_url=aws_server,
        stage=os.environ["FOREWARN_STAGE"],
        api_port=free_port(),
        customers=5,
        # The local X server and the brand's credentials, for replies; the demo outage is
        # scheduled far beyond any test.
        social=True,
        outage_after_s=1800,
        schedules=False,
    )
    # Small enough that the browser tests meet the second-approval rule with a few customers.
    os.environ["SECOND_APPROVAL_THRESHOLD"] = str(BROWSER_APPROVAL_THRESHOLD)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        os.environ.clear()
        os.environ.update(saved)
        runtime.reset()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no chromium at {CHROMIUM}: run `make test`, which installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context()
    opened = context.new_page()
    errors: list[str] = []
    dialogs: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))

    def answer(dialog: Any) -> None:
        # Recorded, then accepted: the console asks before it sends or stops a broadcast.
        dialogs.append(dialog.message)
        dialog.accept()

    opened.on("dialog", answer)
    opened.errors = errors
    opened.dialogs = dialogs
    yield opened
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    opened.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
