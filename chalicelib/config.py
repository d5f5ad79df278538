"""Settings read from the environment that `.chalice/config.json` sets per stage."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache


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
    def planner_queue(self) -> str:
        return f"forewarn-{self.stage}-planner"

    @property
    def delivery_queue(self) -> str:
        return f"forewarn-{self.stage}-deliveries"


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
    plan_page_size: int
    delivery_lease_seconds: int


def stage() -> str:
    return os.environ.get("FOREWARN_STAGE", "dev")


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
        plan_page_size=int(env.get("PLAN_PAGE_SIZE", "500")),
        delivery_lease_seconds=int(env.get("DELIVERY_LEASE_SECONDS", "60")),
    )
