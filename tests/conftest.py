"""Shared fixtures: one moto server (a real AWS API server) for the session, and a fresh
set of the resources of `infra/` for every test that asks for `stack`."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from forewarn_cli.local.stack import free_port

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
