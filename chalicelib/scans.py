"""The scheduled social scan, assembled from its parts: X, DynamoDB, and the ops notifier."""

from __future__ import annotations

import logging
import time
from typing import Any

from chalicelib import lanes, observability
from chalicelib.config import Settings, settings
from chalicelib.domain import utcnow
from chalicelib.emerging import Policy
from chalicelib.handoff import OpsNotifier
from chalicelib.listening import Listener, scan
from chalicelib.runtime import services, signals

log = logging.getLogger(__name__)

# Time kept back from the Lambda timeout for judging buckets and saving state after the last
# page fetched: a scan stops paging, checkpoints, and the next scan continues.
SAFETY_SECONDS = 20.0
# Webhooks for the last minutes of an hour can still be in flight when it closes.
LANE_GRACE_SECONDS = 300


def policy(config: Settings) -> Policy:
    return Policy(bucket_seconds=config.listen_bucket_seconds)


def scheduled_scan(lambda_context: Any) -> dict[str, Any]:
    """One scan, stopping well before the function's timeout (the context says when)."""
    from chalicelib.x import x_source

    remaining_ms = getattr(lambda_context, "get_remaining_time_in_millis", lambda: 60_000)()
    config = settings()
    listener = Listener(
        signals(),
        policy(config),
        high_reach_followers=config.high_reach_followers,
        # With the incidents and issues at hand, a new issue whose cause already has an open
        # incident is linked to it before ops are told.
        notifier=OpsNotifier(config, services=services(), signals=signals()),
        grace_seconds=config.listen_grace_seconds,
    )
    deadline = time.monotonic() + max(1.0, remaining_ms / 1000 - SAFETY_SECONDS)
    report = scan(
        listener,
        signals(),
        x_source(),
        backfill_seconds=config.listen_backfill_seconds,
        deadline=deadline,
    )
    # Carrier lanes ride on the same schedule; their hourly buckets make most runs a no-op.
    lane_report = lanes.judge_lanes(
        services(), signals(), OpsNotifier(config), utcnow(), grace_seconds=LANE_GRACE_SECONDS
    )
    report.opened += lane_report.opened
    report.closed += lane_report.closed
    observability.count("PostsScanned", report.fetched)
    observability.count("IssuesOpened", len(report.opened))
    observability.count("ScanErrors", len(report.errors))
    log.info(
        "scan: %d topics, %d new posts, %d buckets, opened %s, rate-limited %s, errors %s",
        report.topics,
        report.new_posts,
        report.buckets,
        report.opened,
        report.rate_limited,
        sorted(report.errors),
    )
    return report.to_dict()
