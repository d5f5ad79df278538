"""The whole service on one machine: moto's AWS API server, the resources of `infra/`, the
Chalice app's HTTP API, and its queue consumers and schedules driven as Lambda would.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from forewarn_cli.local import infra
from forewarn_cli.local.seed import demo_customers

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[2]
LOCAL_USERS = {"ops": "olivia.ops", "social": "sam.social", "admin": "ada.admin"}
DEMO_TOPIC = "forewarn-telecom"
OAUTH_KEYS = ("consumer_key", "consumer_secret", "access_token", "access_token_secret")
# Signing keys of the carriers' webhooks, of our outbound return webhook and of unsubscribe
# links, this run only.
WEBHOOK_KEYS = ("easypost", "aftership", "return_webhook", "unsubscribe")
# Listening on a local stack works in one-minute buckets, so that the demo's outage shows
# within minutes, and starts from the demo's two hours of history.
LOCAL_LISTENING = {
    "LISTEN_BUCKET_SECONDS": "60",
    "LISTEN_GRACE_SECONDS": "5",
    "LISTEN_BACKFILL_SECONDS": str(150 * 60),
    "OPS_EMAIL": "ops@forewarn.example",
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def stage_environment(stage: str) -> dict[str, str]:
    """The environment variables `.chalice/config.json` gives the stage, as Lambda would."""
    config = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
    env = dict(config.get("environment_variables", {}))
    env.update(config.get("stages", {}).get(stage, {}).get("environment_variables", {}))
    return {k: str(v) for k, v in env.items()}


@dataclass
class LocalStack:
    host: str = "127.0.0.1"
    api_port: int = 8000
    aws_port: int = 0
    stage: str = "dev"
    customers: int = 300
    concurrency: int = 4
    schedules: bool = True
    token_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    # An AWS API server someone else runs (e.g. moto_server in its own process, so that it
    # does not share this process's GIL); None starts moto in a thread here.
    external_aws_url: str | None = None
    _moto: Any = None
    _http: Any = None
    _http_thread: threading.Thread | None = None
    runner: Any = None
    app_module: ModuleType | None = None
    # The demo's social feed: a local X API server and a scenario in which an outage builds
    # up `outage_after_s` seconds after start (negative: it already happened, so the first
    # scan finds it in the history it backfills).
    social: bool = True
    outage_after_s: float = 60
    x_server: Any = None
    feeder: Any = None
    webhook_secrets: dict[str, str] = field(default_factory=dict)
    # The console's users (LOCAL_USERS) and their passwords, this run only.
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def aws_url(self) -> str:
        if self.external_aws_url:
            return self.external_aws_url.rstrip("/")
        return f"http://{self.host}:{self.aws_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    def start(self, *, serve_http: bool = True) -> None:
        if self.social:
            self.start_x()
        self.start_aws()
        if self.customers:
            self.seed(self.customers)
        self.set_webhook_secrets()
        self.set_console_users()
        if self.social:
            self.start_social()
        if serve_http:
            self.start_api()
        self.start_events()

    def start_aws(self) -> None:
        if self.external_aws_url is None:
            from forewarn_cli.local.awsserver import start_in_process

            self.aws_port = self.aws_port or free_port(self.host)
            self._moto = start_in_process(self.host, self.aws_port)
        os.environ.update(stage_environment(self.stage))
        os.environ.update(
            {
                "FOREWARN_STAGE": self.stage,
                "AWS_ENDPOINT_URL": self.aws_url,
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_REGION": "us-east-1",
                "AUTH_MODE": "local",
                "FOREWARN_TOKEN_SECRET": self.token_secret,
                "PUBLIC_URL": self.api_url,
                **LOCAL_LISTENING,
            }
        )
        if self.x_server is not None:
            os.environ["X_API_URL"] = self.x_server.url
        from chalicelib import aws, runtime

        runtime.reset()
        infra.deploy(
            aws.client,
            stage=self.stage,
            sender_email=os.environ["SENDER_EMAIL"],
            ops_email=os.environ["OPS_EMAIL"],
        )
        stacks = aws.client("cloudformation").describe_stacks(
            StackName=f"{infra.STACK_NAME}-{self.stage}"
        )
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks["Stacks"][0].get("Outputs", [])}
        os.environ["OPS_TOPIC_ARN"] = outputs["OpsTopicArn"]
        os.environ["RETURNS_TOPIC_ARN"] = outputs["ReturnsTopicArn"]
        runtime.reset()

    def start_x(self) -> None:
        from forewarn_cli.local.xserver import XServer

        self.x_server = XServer(bearer_token=secrets.token_urlsafe(24), host=self.host)
        self.x_server.start()

    def set_webhook_secrets(self) -> None:
        from chalicelib import aws
        from chalicelib.config import settings

        self.webhook_secrets = {k: secrets.token_urlsafe(24) for k in WEBHOOK_KEYS}
        aws.client("secretsmanager").put_secret_value(
            SecretId=settings().webhook_secret_id, SecretString=json.dumps(self.webhook_secrets)
        )

    def set_console_users(self) -> None:
        """Seed the console's users with fresh passwords; only their hashes are stored."""
        from chalicelib import aws
        from chalicelib import secrets as secret_cache
        from chalicelib.config import settings
        from chalicelib.signin import hash_password

        self.passwords = {user: secrets.token_urlsafe(12) for user in LOCAL_USERS.values()}
        users = {
            user: {"role": role, "password": hash_password(self.passwords[user])}
            for role, user in LOCAL_USERS.items()
        }
        client, secret_id = aws.client("secretsmanager"), settings().console_users_secret_id
        try:
            client.create_secret(Name=secret_id, SecretString=json.dumps(users))
        except client.exceptions.ResourceExistsException:
            client.put_secret_value(SecretId=secret_id, SecretString=json.dumps(users))
        secret_cache.reset()

    def start_social(self) -> None:
        """Give the stage its X credentials and demo topic, and start the demo's feed."""
        from chalicelib import aws
        from chalicelib.config import settings
        from chalicelib.posts import Topic
        from chalicelib.runtime import signals
        from forewarn_cli.local.xscenario import TOPIC_QUERY, ScenarioFeeder, demo_scenario

        local_keys = {k: secrets.token_urlsafe(12) for k in OAUTH_KEYS}
        aws.client("secretsmanager").put_secret_value(
            SecretId=settings().x_secret_id,
            SecretString=json.dumps({"bearer_token": self.x_server.bearer_token, **local_keys}),
        )
        signals().put_topic(
            Topic(
                DEMO_TOPIC,
                query=TOPIC_QUERY,
                services=("mobile", "broadband"),
                places={"dallas, tx": "south", "fort worth, tx": "south"},
            )
        )
        from chalicelib.domain import utcnow

        scenario = demo_scenario(utcnow(), outage_after_s=self.outage_after_s)
        self.feeder = ScenarioFeeder(self.x_server, scenario)
        self.feeder.start()

    def seed(self, count: int) -> int:
        from chalicelib.customers import MAX_BATCH, validate_batch
        from chalicelib.runtime import services

        rows = list(demo_customers(count))
        store = services().store
        for start in range(0, len(rows), MAX_BATCH):
            customers, rejected = validate_batch(rows[start : start + MAX_BATCH])
            if rejected:
                raise RuntimeError(f"demo data has invalid rows: {rejected[0].to_dict()}")
            store.load_new_customers(customers)
        return len(rows)

    def load_app(self) -> ModuleType:
        if self.app_module is None:
            import app as app_module

            self.app_module = app_module
        return self.app_module

    def start_api(self) -> None:
        from chalice.config import Config
        from chalice.local import create_local_server

        app = self.load_app().app
        config = Config.create(chalice_app=app, chalice_stage=self.stage, app_name="forewarn")
        self._http = create_local_server(app, config, self.host, self.api_port)
        self._http_thread = threading.Thread(
            target=self._http.server.serve_forever, name="chalice-local", daemon=True
        )
        self._http_thread.start()

    def start_events(self) -> None:
        from chalicelib import aws
        from forewarn_cli.local.events import EventRunner

        self.runner = EventRunner(
            self.load_app().app,
            aws.client("sqs"),
            concurrency=self.concurrency,
            schedules=self.schedules,
        )
        self.runner.start()

    def tokens(self) -> dict[str, str]:
        from chalicelib.auth import issue_local_token

        issuer = os.environ.get("TOKEN_ISSUER", "forewarn-local")
        return {
            role: issue_local_token(user, role, secret=self.token_secret, issuer=issuer)
            for role, user in LOCAL_USERS.items()
        }

    def stop(self) -> None:
        # Producers and workers first: a scan or delivery still running must not find the
        # X server or the AWS API server already gone (it would log connection failures).
        if self.feeder is not None:
            self.feeder.stop()
        if self.runner is not None:
            self.runner.stop()
        if self._http is not None:
            self._http.server.shutdown()
            self._http.server.server_close()
        if self.x_server is not None:
            self.x_server.stop()
        if self._moto is not None:
            self._moto.stop()
