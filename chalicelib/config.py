"""Settings read from the environment that `.chalice/config.json` sets per stage."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from chalicelib.domain import Channel
from chalicelib.quiet_hours import QuietHours


@dataclass(frozen=True)
class Names:
    """Resource names, derived from the stage exactly as `infra/` names them."""

    stage: str

    def table(self, name: str) -> str:
        return f"forewarn-{self.stage}-{name}"

    @property
    def customers(self) -> str:
        return self.table("customers")

    @property
    def subscriptions(self) -> str:
        return self.table("subscriptions")

    @property
    def incidents(self) -> str:
        return self.table("incidents")

    @property
    def broadcasts(self) -> str:
        return self.table("broadcasts")

    @property
    def audiences(self) -> str:
        return self.table("audiences")

    @property
    def deliveries(self) -> str:
        return self.table("deliveries")

    @property
    def topics(self) -> str:
        return self.table("topics")

    @property
    def posts(self) -> str:
        return self.table("posts")

    @property
    def signals(self) -> str:
        return self.table("signals")

    @property
    def emerging(self) -> str:
        return self.table("emerging")

    @property
    def flags(self) -> str:
        return self.table("flags")

    @property
    def suppressions(self) -> str:
        return self.table("suppressions")

    @property
    def audit(self) -> str:
        return self.table("audit")

    @property
    def sources(self) -> str:
        return self.table("sources")

    @property
    def shipments(self) -> str:
        return self.table("shipments")

    @property
    def webhook_events(self) -> str:
        return self.table("webhook-events")

    @property
    def send_rates(self) -> str:
        return self.table("send-rates")

    @property
    def digests(self) -> str:
        return self.table("digests")

    @property
    def notice_queue(self) -> str:
        return f"forewarn-{self.stage}-notices"

    @property
    def planner_queue(self) -> str:
        return f"forewarn-{self.stage}-planner"

    @property
    def feedback_queue(self) -> str:
        return f"forewarn-{self.stage}-feedback"

    @property
    def delivery_queue(self) -> str:
        return f"forewarn-{self.stage}-deliveries"


# Outage notices: a customer would rather know at night that their line is down.
DEFAULT_QUIET_HOURS_OVERRIDE = "outage_initial,outage_update,outage_resolved"


@dataclass(frozen=True)
class SendRateLimits:
    """Messages per second each channel may send, summed over every delivery worker, to stay
    under the account's quotas (SNS SMS, SES); 0 means unlimited. `send_rates.py` keeps them."""

    sms: int = 0
    email: int = 0

    def of(self, channel: Channel) -> int:
        # Posts on X are not notices the workers send; X enforces its own limits.
        return {Channel.SMS: self.sms, Channel.EMAIL: self.email}.get(channel, 0)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SendRateLimits:
        return cls(sms=_rate(env, "SEND_RATE_SMS"), email=_rate(env, "SEND_RATE_EMAIL"))


def _rate(env: Mapping[str, str], variable: str) -> int:
    text = env.get(variable, "").strip()
    if not text:
        return 0
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        # Fail when settings are read, naming the setting: a typo must not mean "unlimited".
        raise ValueError(
            f"{variable} must be a whole number of messages per second "
            f"(0 or unset: unlimited), not {text!r}"
        )
    return value


DEFAULT_PLAN_CONCURRENCY = 8


@dataclass(frozen=True)
class Settings:
    names: Names
    region: str
    sender_email: str
    brand: str
    public_url: str
    auth_mode: str
    token_secret: str | None
    token_issuer: str
    cognito_issuer: str | None
    cognito_client_id: str | None
    # Where the pool's signing keys are; None means `<issuer>/.well-known/jwks.json`.
    cognito_jwks_url: str | None
    # Local stacks only: the console's users and their password hashes (see signin.py).
    console_users_secret_id: str
    plan_page_size: int
    # How many of a planner step's writes and sends are in flight at once (`PLAN_CONCURRENCY`).
    plan_concurrency: int
    # A broadcast reaching more customers than this needs a second person to approve it.
    second_approval_threshold: int
    # When parcel notices wait, in each customer's zone (`QUIET_HOURS=21:00-08:00`); None: never.
    quiet_hours: QuietHours | None
    # Broadcast templates that may go out inside quiet hours (`QUIET_HOURS_OVERRIDE`); the
    # rest wait for the window's end.
    quiet_hours_override: frozenset[str]
    # Sends per second per channel over all workers (`SEND_RATE_SMS`, `SEND_RATE_EMAIL`).
    send_rates: SendRateLimits
    # The frequency cap's window (`DIGEST_WINDOW_SECONDS`); 0: no cap.
    digest_window_seconds: int
    delivery_lease_seconds: int
    # Secrets Manager id of the X credentials (JSON: bearer_token, and for posting
    # consumer_key, consumer_secret, access_token, access_token_secret).
    x_secret_id: str
    # Local stacks only: where the X API v2-compatible server listens; None means api.x.com.
    x_api_url: str | None
    # Listening: bucket width, how long after a bucket ends it is judged (X's search lags
    # a little), how much history a new topic starts from, and who counts as high-reach.
    listen_bucket_seconds: int
    listen_grace_seconds: int
    listen_backfill_seconds: int
    high_reach_followers: int
    # Where ops hear about new emerging issues: an SNS topic (email subscriptions are made in
    # infra/) and an address the service emails directly.
    ops_topic_arn: str | None
    ops_email: str | None
    # Inbound webhooks and outbound return events: the secret with the signing keys (JSON),
    # the SNS topic for `return.received`, and an optional partner URL to POST it to, signed.
    webhook_secret_id: str
    returns_topic_arn: str | None
    return_webhook_url: str | None


def stage() -> str:
    return os.environ.get("FOREWARN_STAGE", "dev")


def scan_rate_minutes() -> int:
    """How often the social scan runs. Read when the app is imported, which for AWS is when
    `chalice package` runs: `SCAN_RATE_MINUTES=5 make package` bakes in five minutes."""
    return max(1, int(os.environ.get("SCAN_RATE_MINUTES", "1")))


@cache
def settings() -> Settings:
    env = os.environ
    return Settings(
        names=Names(stage()),
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        sender_email=env.get("SENDER_EMAIL", "alerts@forewarn.example"),
        brand=env.get("BRAND_NAME", "Forewarn Telecom"),
        public_url=env.get("PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/"),
        auth_mode=env.get("AUTH_MODE", "local"),
        token_secret=env.get("FOREWARN_TOKEN_SECRET"),
        token_issuer=env.get("TOKEN_ISSUER", "forewarn-local"),
        cognito_issuer=env.get("COGNITO_ISSUER"),
        cognito_client_id=env.get("COGNITO_CLIENT_ID"),
        cognito_jwks_url=env.get("COGNITO_JWKS_URL") or None,
        console_users_secret_id=env.get("CONSOLE_USERS_SECRET_ID")
        or f"forewarn/{stage()}/console-users",
        plan_page_size=int(env.get("PLAN_PAGE_SIZE", "500")),
        plan_concurrency=max(1, int(env.get("PLAN_CONCURRENCY", str(DEFAULT_PLAN_CONCURRENCY)))),
        second_approval_threshold=int(env.get("SECOND_APPROVAL_THRESHOLD", "1000")),
        quiet_hours=QuietHours.parse(env.get("QUIET_HOURS")),
        quiet_hours_override=frozenset(
            kind.strip()
            for kind in env.get("QUIET_HOURS_OVERRIDE", DEFAULT_QUIET_HOURS_OVERRIDE).split(",")
            if kind.strip()
        ),
        send_rates=SendRateLimits.from_env(env),
        digest_window_seconds=int(env.get("DIGEST_WINDOW_SECONDS", "0")),
        delivery_lease_seconds=int(env.get("DELIVERY_LEASE_SECONDS", "60")),
        x_secret_id=env.get("X_SECRET_ID") or f"forewarn/{stage()}/x",
        x_api_url=env.get("X_API_URL") or None,
        listen_bucket_seconds=int(env.get("LISTEN_BUCKET_SECONDS", "300")),
        listen_grace_seconds=int(env.get("LISTEN_GRACE_SECONDS", "60")),
        listen_backfill_seconds=int(env.get("LISTEN_BACKFILL_SECONDS", str(6 * 3600))),
        high_reach_followers=int(env.get("HIGH_REACH_FOLLOWERS", "10000")),
        ops_topic_arn=env.get("OPS_TOPIC_ARN") or None,
        ops_email=env.get("OPS_EMAIL") or None,
        webhook_secret_id=env.get("WEBHOOK_SECRET_ID") or f"forewarn/{stage()}/webhooks",
        returns_topic_arn=env.get("RETURNS_TOPIC_ARN") or None,
        return_webhook_url=env.get("RETURN_WEBHOOK_URL") or None,
    )
