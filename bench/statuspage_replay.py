"""Status page replay: GitHub's real incident history, served from a local Statuspage-compatible
server in simulated time, polled by Forewarn's real poller against moto.

Every update of the 1,282 real incidents becomes visible on the local page at its `display_at`.
The clock jumps from one poll tick to the next where something changed (ticks are whole
minutes, the poll interval), plus the tick after each such tick, where the page answers 304;
nothing sleeps. At each tick `status_sources.poll_due_sources` runs exactly as the schedule
would run it: conditional GETs, change detection, incidents and broadcasts in DynamoDB, sends
through SQS, the planner and delivery workers (the local EventRunner) to SNS, all on a moto
server in its own process.

What is expected of each incident comes from its timeline alone (`expected_phases`), not from
the code under test: a notice for the first live update (`initial`), one per later live update
(`update`, unless it was already public when the initial went out, which then reports it),
and the all-clear (`resolved`). Incidents published already resolved (GitHub's history before
2019 was imported that way) owe no notice. The policy is auto-send from `minor` impact, so
the incidents of impact `none` are owed drafts instead.

Baseline: the same detection fed by `summary.json`, which lists unresolved incidents only (a
common way to watch a status page): an incident's resolution is seen as its disappearance,
so an update posted shortly before the resolution, and any incident shorter than a poll
interval, is never seen.
"""

from __future__ import annotations

import logging
import math
import re
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.motoserver import MotoProcess
from bench.result import BenchResult, Goal
from forewarn_cli.local.statuspage_server import (
    SimulatedClock,
    StatuspageServer,
    load_incidents,
    parse_time,
)

log = logging.getLogger(__name__)

NAME = "statuspage_replay"
TITLE = "Status page replay: GitHub incident history"
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "statuspage"
POLL_SECONDS = 60
SOURCE_ID = "github"
LIVE = ("investigating", "identified", "monitoring")
PHASES = ("initial", "update", "resolved", "maintenance")
GOAL = Goal("at_least", 1.0, on="measured")
# Not a component of the service: GitHub's pointer to its status page.
IGNORED_COMPONENTS = ("visit www.githubstatus.com",)


class BenchError(RuntimeError):
    """The replay did not measure what it claims to."""


# -- what the history owes -------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    incident: str
    phase: str  # initial | update | resolved
    update_id: str
    display_at: datetime
    auto: bool
    folded: bool = False  # public before the initial went out: the initial reports it


def tick_after(moment: datetime, poll: int = POLL_SECONDS) -> datetime:
    """The first poll tick at or after `moment` (ticks are whole multiples of the interval)."""
    seconds = math.ceil(moment.timestamp() / poll) * poll
    return datetime.fromtimestamp(seconds, UTC)


def _updates(incident: Mapping[str, Any]) -> list[tuple[datetime, str, str]]:
    return sorted(
        (parse_time(str(u["display_at"])), str(u["id"]), str(u["status"]))
        for u in incident.get("incident_updates") or []
    )


def expected_phases(incidents: Iterable[Mapping[str, Any]]) -> tuple[list[Expected], int]:
    """(the notices the timelines call for, how many incidents owe none)."""
    owed: list[Expected] = []
    history = 0
    for incident in incidents:
        updates = _updates(incident)
        resolution = next((u for u in updates if u[2] in ("resolved", "postmortem")), None)
        live = [
            u for u in updates if u[2] in LIVE and (resolution is None or u[0] <= resolution[0])
        ]
        if not live:
            history += 1
            continue
        auto = incident.get("impact") in ("minor", "major", "critical")
        opened = tick_after(live[0][0])
        incident_id = str(incident["id"])
        owed.append(Expected(incident_id, "initial", live[0][1], live[0][0], auto))
        for moment, update_id, _ in live[1:]:
            owed.append(
                Expected(incident_id, "update", update_id, moment, auto, folded=moment <= opened)
            )
        if resolution is not None:
            owed.append(Expected(incident_id, "resolved", resolution[1], resolution[0], auto))
    return owed, history


def poll_ticks(incidents: Iterable[Mapping[str, Any]]) -> list[datetime]:
    changes = {tick_after(moment) for incident in incidents for moment, _, _ in _updates(incident)}
    quiet = {t + timedelta(seconds=POLL_SECONDS) for t in changes}
    return sorted(changes | quiet)


def component_map(incidents: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """Each GitHub component is one of our services (in every region)."""
    names = {
        str(c["name"])
        for incident in incidents
        for c in incident.get("components") or []
        if not str(c["name"]).lower().startswith(IGNORED_COMPONENTS)
    }
    return {name: {"services": [slug(name)]} for name in sorted(names)}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]


DEFAULT_SCOPE = {"services": ["github"]}


# -- what a poller did -----------------------------------------------------------------------


@dataclass
class Notice:
    incident: str
    kind: str  # open | update | resolve
    outcome: str  # sent | draft | joined:<id> | awaiting_send | ...
    at: datetime
    covers: tuple[str, ...]
    broadcast_id: str | None


@dataclass
class Observed:
    notices: list[Notice] = field(default_factory=list)
    polls: int = 0
    not_modified: int = 0
    errors: list[str] = field(default_factory=list)
    wall_seconds: list[float] = field(default_factory=list)
    # Wall seconds of the polls that acted on something, and of those that did not.
    acting_seconds: list[float] = field(default_factory=list)
    idle_seconds: list[float] = field(default_factory=list)
    waited: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _notices(report: Mapping[str, Any], observed: Observed) -> None:
    sent_later = {w["broadcast_id"]: parse_time(w["at"]) for w in report.get("sent_waiting", [])}
    for action in report.get("actions", []):
        if action["kind"] not in ("open", "update", "resolve"):
            continue
        observed.notices.append(
            Notice(
                incident=action["incident"],
                kind=action["kind"],
                outcome=action["outcome"],
                at=parse_time(action["at"]),
                covers=tuple(action["covers"]),
                broadcast_id=action.get("broadcast_id"),
            )
        )
        if action["outcome"] == "awaiting_send":
            observed.waited += 1
    # A notice that waited for its initial's audience went out when the flush sent it.
    pending = {n.broadcast_id: n for n in observed.notices if n.outcome == "awaiting_send"}
    for broadcast_id, moment in sent_later.items():
        if broadcast_id in pending:
            pending[broadcast_id].outcome, pending[broadcast_id].at = "sent", moment


def replay_forewarn(incidents: list[dict[str, Any]], ticks: Sequence[datetime]) -> Observed:
    """The real poller on a moto server in its own process."""
    from chalicelib import aws, status_sources
    from chalicelib.runtime import services
    from forewarn_cli.local.events import EventRunner
    from forewarn_cli.local.stack import LocalStack, free_port

    observed = Observed()
    clock = SimulatedClock(ticks[0] - timedelta(minutes=1))
    with MotoProcess() as moto, StatuspageServer(incidents, clock=clock) as page:
        stack = LocalStack(
            api_port=free_port(),
            customers=0,
            schedules=False,
            concurrency=2,
            external_aws_url=moto.url,
            social=False,
        )
        stack.start_aws()
        try:
            customers = _seed(component_map(incidents))
            pump = QueuePump(
                EventRunner(
                    stack.load_app().app, aws.client("sqs"), poll_wait_seconds=0, schedules=False
                )
            )
            status_sources.create_source(
                services(),
                {
                    "source_id": SOURCE_ID,
                    "kind": "statuspage",
                    "name": "GitHub",
                    "url": page.url,
                    "poll_seconds": POLL_SECONDS,
                    "components": component_map(incidents),
                    "default": DEFAULT_SCOPE,
                    "policy": {"mode": "auto", "auto_min_impact": "minor"},
                    "channels": ["sms"],
                },
            )
            for index, now in enumerate(ticks):
                clock.set(now)
                started = time.perf_counter()
                # While the poller waits for an initial's audience, the planner runs.
                report = status_sources.poll_due_sources(
                    services(), now, time.monotonic() + 50, sleep=lambda _: pump.run()
                )
                pump.run()
                elapsed = time.perf_counter() - started
                observed.wall_seconds.append(elapsed)
                acted = any(a["kind"] != "record" for a in report["actions"])
                (observed.acting_seconds if acted else observed.idle_seconds).append(elapsed)
                observed.polls += 1
                observed.not_modified += report["polled"].get(SOURCE_ID) == "not_modified"
                observed.errors += [f"{k}: {v}" for k, v in report["errors"].items()]
                _notices(report, observed)
                if index % 500 == 0:
                    log.warning("replay: %d/%d ticks (%s)", index, len(ticks), now.date())
            observed.extra = _audit(services(), observed, customers, moto)
        finally:
            stack.stop()
    return observed


class QueuePump:
    """The app's queue consumers run in this thread until the queues are empty, with the
    EventRunner's own batching, handler invocation and deletion (`batchItemFailures`
    honoured). Background pollers would hit the AWS server ten times a second each between
    ticks; this costs one empty receive per queue per tick, and is deterministic."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def run(self) -> None:
        for _ in range(10_000):
            moved = False
            for source in self.runner._resolved_sources():
                messages = self.runner._receive_batch(source)
                if messages:
                    self.runner._process_batch(source, messages)
                    moved = True
            if not moved:
                return
        raise BenchError("the queues never emptied")


def _seed(components: Mapping[str, Mapping[str, list[str]]]) -> int:
    """One SMS customer per service, so every notice is really delivered, and countable."""
    from chalicelib.customers import validate_customer
    from chalicelib.runtime import services

    names = sorted({s for scope in components.values() for s in scope["services"]} | {"github"})
    for index, service in enumerate(names):
        services().store.upsert_customer(
            validate_customer(
                {
                    "customer_id": f"gh{index:03d}",
                    "name": f"Dev {service}",
                    "phone": f"+1415556{index:04d}",
                    "email": f"{service}@example.com",
                    "channels": ["sms"],
                    "locale": "en",
                    "time_zone": "UTC",
                    "services": [{"service": service, "region": "north", "postal_code": "10115"}],
                    "segments": [],
                }
            )
        )
    return len(names)


def _audit(services: Any, observed: Observed, customers: int, moto: MotoProcess) -> dict[str, Any]:
    """What DynamoDB and the AWS server say, against what the poller reported."""
    from chalicelib.domain import BroadcastStatus

    store = services.store
    reported = [n.broadcast_id for n in observed.notices if n.broadcast_id]
    if len(reported) != len(set(reported)):
        raise BenchError("a broadcast was reported for two notices")
    by_incident: dict[str, list[Any]] = defaultdict(list)
    for broadcast_id in reported:
        broadcast = store.get_broadcast(broadcast_id)
        if broadcast is None:
            raise BenchError(f"reported broadcast {broadcast_id} does not exist")
        by_incident[broadcast.incident_id].append(broadcast)
    in_table = 0
    planned = sent = unsent = 0
    for incident_id, reported_here in by_incident.items():
        stored = store.broadcasts_for_incident(incident_id)
        in_table += len(stored)
        if {b.broadcast_id for b in stored} != {b.broadcast_id for b in reported_here}:
            raise BenchError(f"incident {incident_id} holds broadcasts nobody reported")
        for broadcast in stored:
            counts = broadcast.counts.values()
            planned += sum(c.planned for c in counts)
            sent += sum(c.sent for c in counts)
            if broadcast.status not in (BroadcastStatus.SENT, BroadcastStatus.DRAFT):
                unsent += 1
    sms, emails = moto.sent_messages()
    if sms + emails != sent or planned != sent:
        raise BenchError(f"planned {planned}, counted sent {sent}, server recorded {sms + emails}")
    return {
        "customers": customers,
        "incidents_with_broadcasts": len(by_incident),
        "broadcasts_in_table": in_table,
        "broadcasts_reported": len(reported),
        "broadcasts_not_finished": unsent,
        "messages_planned": planned,
        "messages_recorded_by_server": sms + emails,
    }


def replay_pure(
    incidents: list[dict[str, Any]], ticks: Sequence[datetime], *, summary_only: bool
) -> Observed:
    """The detection alone with state in memory: on `incidents.json` (to cross-check the
    DynamoDB run, or stand in for it) or on `summary.json` only (the baseline)."""
    from chalicelib import status_feeds as sf

    server = StatuspageServer(incidents)  # used for its views only; never started
    components = sf.parse_component_map(component_map(incidents), DEFAULT_SCOPE)
    policy = sf.Policy("auto", "minor")
    states: dict[str, sf.IncidentState] = {}
    open_models: dict[str, sf.StatusIncident] = {}
    observed = Observed()
    last: datetime | None = None
    for now in ticks:
        views = server.incidents_at(now)
        if summary_only:
            views = [v for v in views if v["status"] not in ("resolved", "postmortem")]
        parsed = list(sf.parse_statuspage({"incidents": views}).incidents)
        if summary_only:
            seen = {i.source_incident_id for i in parsed}
            # Gone from the unresolved list: the only sign of a resolution summary.json gives.
            for gone in set(open_models) - seen:
                model = open_models.pop(gone)
                marker = sf.StatusUpdate(f"gone@{gone}", "resolved", "", now)
                parsed.append(
                    sf.StatusIncident(
                        model.source_incident_id,
                        model.name,
                        "resolved",
                        model.impact,
                        (*model.updates, marker),
                        model.components,
                    )
                )
            open_models.update({i.source_incident_id: i for i in parsed if i.status in LIVE})
        actions: list[sf.Action] = []
        for incident in parsed:
            actions += sf.detect(
                incident,
                states.get(incident.source_incident_id),
                components=components,
                policy=policy,
                now=now,
                window_start=last,
            )
        for action in sf.order_actions(actions):
            key = action.incident.source_incident_id
            states[key] = sf.apply(states.get(key), action)
            if action.kind in ("open", "update", "resolve"):
                observed.notices.append(
                    Notice(
                        key,
                        action.kind,
                        "sent" if action.auto else "draft",
                        now,
                        action.covers,
                        None,
                    )
                )
        observed.polls += 1
        last = now
    return observed


# -- scoring ---------------------------------------------------------------------------------


@dataclass
class PhaseScore:
    count: int = 0
    sent: int = 0
    drafted: int = 0
    joined: int = 0
    folded: int = 0
    wrong: int = 0
    missing: int = 0
    duplicates: int = 0
    late: int = 0
    lags: list[float] = field(default_factory=list)

    @property
    def on_time(self) -> int:
        return self.count - self.wrong - self.missing - self.duplicates - self.late

    def to_dict(self) -> dict[str, Any]:
        lags = sorted(self.lags)
        return {
            "count": self.count,
            "sent": self.sent,
            "drafted": self.drafted,
            "joined": self.joined,
            "folded_into_initial": self.folded,
            "wrong": self.wrong,
            "missing": self.missing,
            "duplicates": self.duplicates,
            "later_than_one_interval": self.late,
            "on_time": self.on_time,
            "lag_p50_s": round(_quantile(lags, 0.5), 1) if lags else None,
            "lag_p95_s": round(_quantile(lags, 0.95), 1) if lags else None,
            "lag_max_s": round(lags[-1], 1) if lags else None,
        }


def _quantile(values: Sequence[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


_KIND = {"initial": "open", "update": "update", "resolved": "resolve"}


def score(expected: Sequence[Expected], observed: Observed) -> tuple[dict[str, PhaseScore], int]:
    """Per phase, and the notices the history did not call for."""
    covering: dict[tuple[str, str], list[Notice]] = defaultdict(list)
    for notice in observed.notices:
        for update_id in notice.covers:
            covering[(notice.incident, update_id)].append(notice)
    scores = {phase: PhaseScore() for phase in PHASES}
    owed = {(e.incident, e.update_id) for e in expected}
    for item in expected:
        result = scores[item.phase]
        result.count += 1
        found = covering.get((item.incident, item.update_id), [])
        if item.phase == "resolved":
            # The baseline infers a resolution from the incident's disappearance.
            found = found + covering.get((item.incident, f"gone@{item.incident}"), [])
        if not found:
            result.missing += 1
            continue
        if len(found) > 1:
            result.duplicates += 1
            continue
        (notice,) = found
        want = "open" if item.folded else _KIND[item.phase]
        if notice.kind != want or not _right_outcome(notice, item):
            result.wrong += 1
            continue
        lag = (notice.at - item.display_at).total_seconds()
        result.lags.append(lag)
        if lag > POLL_SECONDS or lag < 0:
            result.late += 1
        if item.folded:
            result.folded += 1
        elif notice.outcome.startswith("joined:"):
            result.joined += 1
        elif notice.outcome.startswith("draft"):
            result.drafted += 1
        else:
            result.sent += 1
    owed |= {(e.incident, f"gone@{e.incident}") for e in expected if e.phase == "resolved"}
    uncalled = sum(
        1
        for notice in observed.notices
        if not any((notice.incident, u) in owed for u in notice.covers)
    )
    return scores, uncalled


def _right_outcome(notice: Notice, item: Expected) -> bool:
    if notice.outcome.startswith("joined:"):
        return item.phase == "initial"
    if item.auto:
        return notice.outcome.startswith("sent")
    return notice.outcome.startswith("draft")


def share_on_time(scores: Mapping[str, PhaseScore]) -> float:
    total = sum(s.count for s in scores.values())
    return sum(s.on_time for s in scores.values()) / total if total else float("nan")


# -- the benchmark ---------------------------------------------------------------------------


def run(data_dir: Path = DATA_DIR) -> BenchResult:
    folder = data_dir / "github_incidents"
    if not folder.is_dir():
        raise RuntimeError(
            f"GitHub incident history not found at {folder} "
            "(the shared data folder next to the repository; see its README.md)"
        )
    incidents = load_incidents(folder)
    expected, history = expected_phases(incidents)
    ticks = poll_ticks(incidents)
    started = time.perf_counter()
    forewarn = replay_forewarn(incidents, ticks)
    forewarn_seconds = time.perf_counter() - started
    pure = replay_pure(incidents, ticks, summary_only=False)
    baseline = replay_pure(incidents, ticks, summary_only=True)
    scores, uncalled = score(expected, forewarn)
    pure_scores, _ = score(expected, pure)
    base_scores, base_uncalled = score(expected, baseline)
    if forewarn.errors:
        raise BenchError(f"the poller reported errors: {forewarn.errors[:3]}")
    if sum(s.duplicates for s in scores.values()):
        raise BenchError("a phase was notified twice")
    measured = share_on_time(scores)
    details = {
        "incidents": len(incidents),
        "incidents_owing_no_notice": history,
        "poll_seconds": POLL_SECONDS,
        "ticks": len(ticks),
        "polls": forewarn.polls,
        "answered_304": forewarn.not_modified,
        "waited_for_initial_audience": forewarn.waited,
        "uncalled_notices": uncalled,
        "phases": {phase: s.to_dict() for phase, s in scores.items()},
        "pure_detection_share": round(share_on_time(pure_scores), 4),
        "baseline_phases": {phase: s.to_dict() for phase, s in base_scores.items()},
        "baseline_uncalled_notices": base_uncalled,
        "wall_seconds": round(forewarn_seconds, 1),
        "poll_wall_p50_ms": round(statistics.median(forewarn.wall_seconds) * 1000, 1),
        "poll_wall_p95_ms": round(_quantile(sorted(forewarn.wall_seconds), 0.95) * 1000, 1),
        "audit": forewarn.extra,
    }
    details["method_markdown"] = METHOD
    details["details_markdown"] = details_markdown(details, measured, share_on_time(base_scores))
    return BenchResult(
        name=NAME,
        title=TITLE,
        unit="",
        measured=measured,
        baseline=share_on_time(base_scores),
        goal=GOAL,
        details=details,
    )


METHOD = """\
**Data.** The 1,282 real incidents of githubstatus.com (2010 to 2023) in Statuspage API v2
form, from `../shared/data/statuspage/github_incidents/` (read, never copied). 839 of them
(2010 to 2018, imported into Statuspage after the fact) consist of one `resolved` update and
owe no notice; the other 443 have a live timeline.

**Measured.** A local Statuspage-compatible server (`forewarn_cli/local/statuspage_server.py`)
serves `/api/v2/incidents.json` and `/api/v2/scheduled-maintenances.json` in simulated time:
each update appears at its `display_at`, with ETag/Last-Modified and 304s. The clock jumps to
every one-minute poll tick at which something became visible, and to the tick after it; no
sleeping. At each tick the real `status_sources.poll_due_sources` runs against a moto server in
its own process, with the whole flow behind it (incidents, broadcasts, the planner and delivery
workers through SQS, SMS through SNS; one customer per GitHub component). Policy: send
automatically from impact `minor`, so incidents of impact `none` get drafts. Each component is
its own service; incidents that name none go to a `github` service.

**Scored.** What each incident owes is derived from its timeline alone: a notice for its first
live update (`initial`), for each later live update (`update`), unless it was already public
at the poll tick that opened the incident, when the initial reports it (`folded`), and the
all-clear (`resolved`). A phase counts when exactly one notice covers it, of the right kind
(sent, or drafted for impact `none`; an initial may instead join an open incident on the same
services) and within one poll interval of its `display_at`. Duplicates (two notices for one
update) and notices nobody owed are counted separately, and the run fails if DynamoDB holds a
broadcast the poller did not report, or the AWS server recorded a different number of SMS than
the broadcasts planned.

**Baseline.** The same detection fed by `summary.json`, which lists unresolved incidents only:
a resolution shows only as the incident's disappearance, so an incident shorter than a poll
interval, and any update posted in the interval before the resolution, are never seen.
"""


def details_markdown(d: Mapping[str, Any], measured: float, baseline: float) -> str:
    rows = [
        "| Phase | Owed | Sent | Drafted | Joined | Folded | Missing | Wrong | Duplicates "
        "| > 1 interval | Lag p50 | p95 | max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for phase, s in d["phases"].items():
        lags = [s["lag_p50_s"], s["lag_p95_s"], s["lag_max_s"]]
        cells = ["—" if v is None else f"{v:.0f} s" for v in lags]
        rows.append(
            f"| {phase} | {s['count']} | {s['sent']} | {s['drafted']} | {s['joined']} "
            f"| {s['folded_into_initial']} | {s['missing']} | {s['wrong']} | {s['duplicates']} "
            f"| {s['later_than_one_interval']} | {' | '.join(cells)} |"
        )
    base = d["baseline_phases"]
    audit = d["audit"]
    return "\n".join(
        [
            f"{d['incidents']:,} incidents, {d['incidents_owing_no_notice']:,} owing no notice; "
            f"{d['polls']:,} polls at a {d['poll_seconds']} s interval, "
            f"{d['answered_304']:,} of them answered 304. On time, exactly once: "
            f"**{measured:.1%}** of phases (the detection alone with state in memory: "
            f"{d['pure_detection_share']:.1%}); the summary.json baseline "
            f"{baseline:.1%}.",
            "",
            *rows,
            "",
            "The scheduled maintenance phase has no rows: the GitHub history holds none "
            "(maintenance heads-ups are covered by the tests).",
            "",
            "Baseline (summary.json only): missing "
            + ", ".join(f"{p} {base[p]['missing']}" for p in ("initial", "update", "resolved"))
            + f"; wrong {sum(s['wrong'] for s in base.values())}; later than one interval "
            + f"{sum(s['later_than_one_interval'] for s in base.values())}.",
            "",
            f"Audit: {audit['broadcasts_reported']:,} broadcasts reported and "
            f"{audit['broadcasts_in_table']:,} in DynamoDB for "
            f"{audit['incidents_with_broadcasts']:,} incidents; "
            f"{audit['messages_planned']:,} SMS planned, "
            f"{audit['messages_recorded_by_server']:,} recorded by the AWS server. "
            f"{d['waited_for_initial_audience']} notices waited for their initial's audience "
            f"to freeze. Notices nobody owed: {d['uncalled_notices']}.",
            "",
            f"Wall time {d['wall_seconds']:,.0f} s; per poll (including draining the queues) "
            f"median {d['poll_wall_p50_ms']:,.0f} ms, p95 {d['poll_wall_p95_ms']:,.0f} ms. "
            "Lag is simulated time from an update's `display_at` to the poll that acted on it "
            "(or to the flush that sent a notice that waited); it cannot be below zero or, "
            "when the poller acts at its first chance, above one interval.",
        ]
    )


def summarise(observed: Observed) -> Counter[str]:
    """For debugging: notices by kind and outcome."""
    return Counter(f"{n.kind}:{n.outcome.split(':')[0]}" for n in observed.notices)
