"""The process-wide objects a Lambda handler uses, built once per container."""

from __future__ import annotations

import sys
from functools import cache

from chalicelib import aws, queues, secrets, x
from chalicelib.audit import AuditLog
from chalicelib.broadcasts import Services
from chalicelib.config import settings
from chalicelib.signals_store import SignalTables
from chalicelib.store import Store


@cache
def services() -> Services:
    return Services(store=Store(settings().names), settings=settings(), poster=x.x_poster)


@cache
def signals() -> SignalTables:
    return SignalTables(settings().names)


@cache
def audit_log() -> AuditLog:
    return AuditLog(settings().names)


def reset() -> None:
    """Forget cached settings and clients (tests and the local stack change the environment)."""
    services.cache_clear()
    signals.cache_clear()
    audit_log.cache_clear()
    x.reset()
    secrets.reset()
    if "chalicelib.status_sources" in sys.modules:
        sys.modules["chalicelib.status_sources"].reset_secret_cache()
    settings.cache_clear()
    aws.reset_clients()
    queues.forget_queue_urls()
