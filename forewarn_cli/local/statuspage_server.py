"""A small Statuspage-compatible server, for the local stack, tests and the replay benchmark.

It serves Statuspage's public API v2 (`/api/v2/summary.json`, `status.json`,
`incidents.json`, `incidents/unresolved.json`, `scheduled-maintenances.json`,
`scheduled-maintenances/upcoming.json`, `scheduled-maintenances/active.json`) from an
in-memory list of incidents in Statuspage's own form. What it shows follows a clock, which
may be simulated: an incident appears when its first update's `display_at` has passed, each
update when its own has, and the incident's `status`, `updated_at`, `monitoring_at` and
`resolved_at` are those of the updates visible so far. (Impact and components are served as
recorded: the history keeps only their final values.)

Like Statuspage it answers `ETag` and `Last-Modified`, and 304 to `If-None-Match` (which takes
precedence) or `If-Modified-Since`. `incidents.json` lists every unresolved incident and then
the most recent others, `limit` (50) in all. For tests it can be told to fail: the next N
requests answer an HTTP error or hang for a while (a client timeout), or it can stay down.
"""

from __future__ import annotations

import bisect
import copy
import email.utils
import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

Clock = Callable[[], datetime]


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SimulatedClock:
    """A clock that only moves when told to (thread-safe)."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, moment: datetime) -> None:
        with self._lock:
            self._now = moment

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now


def load_incidents(directory: Path) -> list[dict[str, Any]]:
    """Every `<id>.json` of `directory` in `/api/v2/incidents/<id>.json` form, unwrapped."""
    found = []
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        found.append(data.get("incident", data))
    return found


@dataclass
class _Entry:
    raw: dict[str, Any]
    updates: list[tuple[datetime, dict[str, Any]]]  # oldest first
    appears_at: datetime
    maintenance: bool

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> _Entry:
        updates = sorted(
            (
                (parse_time(str(u.get("display_at") or u["created_at"])), dict(u))
                for u in raw.get("incident_updates") or []
            ),
            key=lambda pair: (pair[0], str(pair[1].get("id"))),
        )
        maintenance = bool(raw.get("scheduled_for"))
        if maintenance:
            appears = parse_time(str(raw.get("created_at") or raw["scheduled_for"]))
        elif updates:
            appears = updates[0][0]
        else:
            appears = parse_time(str(raw["created_at"]))
        return cls(dict(raw), updates, appears, maintenance)

    def resolved_by(self, now: datetime) -> bool:
        return any(
            at <= now and u.get("status") in ("resolved", "postmortem") for at, u in self.updates
        )

    def view(self, now: datetime) -> dict[str, Any] | None:
        """The incident as the page showed it at `now`; None before it appeared."""
        if now < self.appears_at:
            return None
        visible = [(at, u) for at, u in self.updates if at <= now]
        item = copy.deepcopy(self.raw)
        item["incident_updates"] = [copy.deepcopy(u) for _, u in reversed(visible)]
        if self.maintenance:
            item["status"] = self._maintenance_status(now, visible)
        elif visible:
            item["status"] = visible[-1][1]["status"]
        first = {u["status"]: at for at, u in reversed(visible)}
        item["updated_at"] = _iso(visible[-1][0]) if visible else item.get("created_at")
        if not self.maintenance:
            item["monitoring_at"] = _iso(first["monitoring"]) if "monitoring" in first else None
            resolved = first.get("resolved") or first.get("postmortem")
            item["resolved_at"] = _iso(resolved) if resolved else None
        return item

    def _maintenance_status(
        self, now: datetime, visible: list[tuple[datetime, dict[str, Any]]]
    ) -> str:
        if visible:
            return str(visible[-1][1]["status"])
        starts = parse_time(str(self.raw["scheduled_for"]))
        until = self.raw.get("scheduled_until")
        if now < starts:
            return "scheduled"
        if until and now >= parse_time(str(until)):
            return "completed"
        return "in_progress"


@dataclass
class _Fault:
    remaining: int
    status: int | None  # an HTTP error, or None to hang
    seconds: float = 0.0
    path: str | None = None


@dataclass
class RequestRecord:
    path: str
    status: int
    if_none_match: str | None
    if_modified_since: str | None
    at: datetime


@dataclass
class _State:
    incidents: list[_Entry] = field(default_factory=list)
    appear: list[datetime] = field(default_factory=list)
    maintenances: list[_Entry] = field(default_factory=list)


DEFAULT_PAGE = {
    "id": "localpage0001",
    "name": "Local status page",
    "url": "http://127.0.0.1",
    "time_zone": "Etc/UTC",
}


class StatuspageServer:
    def __init__(
        self,
        incidents: Iterable[Mapping[str, Any]] = (),
        *,
        clock: Clock | None = None,
        page: Mapping[str, Any] | None = None,
        components: Iterable[Mapping[str, Any]] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        limit: int = 50,
    ) -> None:
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.page = dict(page or DEFAULT_PAGE)
        self.components = [dict(c) for c in components]
        self.limit = limit
        self.requests: list[RequestRecord] = []
        self._state = _State()
        self._faults: list[_Fault] = []
        self._down: int | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.add(incidents)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per request drowns a test's output

        self._http = ThreadingHTTPServer((host, port), Handler)
        self._http.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- content ---------------------------------------------------------------------------

    def add(self, incidents: Iterable[Mapping[str, Any]]) -> None:
        """Add incidents or scheduled maintenances (those with `scheduled_for`)."""
        with self._lock:
            for raw in incidents:
                entry = _Entry.of(raw)
                if entry.maintenance:
                    self._state.maintenances.append(entry)
                    continue
                index = bisect.bisect_right(self._state.appear, entry.appears_at)
                self._state.appear.insert(index, entry.appears_at)
                self._state.incidents.insert(index, entry)

    def incidents_at(self, now: datetime) -> list[dict[str, Any]]:
        """Unresolved first (newest first), then the most recent others, `limit` in all."""
        with self._lock:
            visible = self._state.incidents[: bisect.bisect_right(self._state.appear, now)]
        newest_first = visible[::-1]
        unresolved = [e for e in newest_first if not e.resolved_by(now)]
        chosen = unresolved + [e for e in newest_first[: self.limit] if e.resolved_by(now)]
        chosen = chosen[: max(self.limit, len(unresolved))]
        return [v for entry in chosen if (v := entry.view(now)) is not None]

    def maintenances_at(self, now: datetime) -> list[dict[str, Any]]:
        with self._lock:
            entries = list(self._state.maintenances)
        views = [v for entry in entries if (v := entry.view(now)) is not None]
        views.sort(key=lambda v: str(v["scheduled_for"]), reverse=True)
        return views[: self.limit]

    # -- faults ----------------------------------------------------------------------------

    def fail_next(self, count: int = 1, *, status: int = 500, path: str | None = None) -> None:
        with self._lock:
            self._faults.append(_Fault(count, status, path=path))

    def hang_next(self, count: int = 1, *, seconds: float = 5.0, path: str | None = None) -> None:
        with self._lock:
            self._faults.append(_Fault(count, None, seconds, path))

    def go_down(self, status: int = 503) -> None:
        self._down = status

    def come_back(self) -> None:
        self._down = None

    def _fault_for(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and (fault.path is None or fault.path == path):
                    fault.remaining -= 1
                    return fault
        return None

    # -- HTTP ------------------------------------------------------------------------------

    def _document(self, path: str, now: datetime) -> dict[str, Any] | None:
        document = self._content(path, now)
        if document is not None:
            # As on Statuspage, the page changes when its content does, not on every request.
            modified = self._last_modified(document, now)
            document = {"page": {**self.page, "updated_at": _iso(modified)}, **document}
        return document

    def _content(self, path: str, now: datetime) -> dict[str, Any] | None:
        if path == "/api/v2/incidents.json":
            return {"incidents": self.incidents_at(now)}
        if path == "/api/v2/incidents/unresolved.json":
            incidents = self.incidents_at(now)
            return {
                "incidents": [
                    i for i in incidents if i["status"] not in ("resolved", "postmortem")
                ],
            }
        if path.startswith("/api/v2/scheduled-maintenances"):
            wanted = {
                "/api/v2/scheduled-maintenances.json": None,
                "/api/v2/scheduled-maintenances/upcoming.json": ("scheduled",),
                "/api/v2/scheduled-maintenances/active.json": ("in_progress", "verifying"),
            }
            if path not in wanted:
                return None
            statuses = wanted[path]
            items = [
                m for m in self.maintenances_at(now) if statuses is None or m["status"] in statuses
            ]
            return {"scheduled_maintenances": items}
        if path in ("/api/v2/summary.json", "/api/v2/status.json"):
            unresolved = [
                i for i in self.incidents_at(now) if i["status"] not in ("resolved", "postmortem")
            ]
            indicator = max(
                (i.get("impact") or "none" for i in unresolved),
                key=("none", "minor", "major", "critical").index,
                default="none",
            )
            status = {
                "indicator": indicator,
                "description": "All Systems Operational" if indicator == "none" else "Degraded",
            }
            if path.endswith("status.json"):
                return {"status": status}
            active = [m for m in self.maintenances_at(now) if m["status"] != "completed"]
            return {
                "components": self._components(unresolved),
                "incidents": unresolved,
                "scheduled_maintenances": active,
                "status": status,
            }
        return None

    def _components(self, unresolved: list[dict[str, Any]]) -> list[dict[str, Any]]:
        current: dict[str, str] = {}
        for incident in reversed(unresolved):
            for update in reversed(incident.get("incident_updates") or []):
                for change in update.get("affected_components") or []:
                    key = str(change.get("code") or change.get("id"))
                    current[key] = str(change.get("new_status") or "operational")
        return [
            {**c, "status": current.get(str(c.get("id")), c.get("status", "operational"))}
            for c in self.components
        ]

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        now = self.clock()
        inm = request.headers.get("If-None-Match")
        ims = request.headers.get("If-Modified-Since")
        fault = self._fault_for(path)
        status = self._down
        if fault is not None and fault.status is None:
            self._stopping.wait(fault.seconds)
            status = 504
        elif fault is not None:
            status = fault.status
        document = None if status else self._document(path, now)
        if status is None and document is None:
            status = 404
        if status is not None:
            self._record(path, status, inm, ims, now)
            self._send(request, status, b'{"error": "unavailable"}', {})
            return
        assert document is not None
        body = json.dumps(document, separators=(",", ":")).encode()
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        modified = self._last_modified(document, now)
        headers = {
            "ETag": etag,
            "Last-Modified": email.utils.format_datetime(modified, usegmt=True),
        }
        not_modified = False
        if inm is not None:
            not_modified = etag in [t.strip() for t in inm.split(",")] or inm.strip() == "*"
        elif ims is not None:
            try:
                not_modified = modified <= email.utils.parsedate_to_datetime(ims)
            except (TypeError, ValueError):
                not_modified = False
        self._record(path, 304 if not_modified else 200, inm, ims, now)
        self._send(request, 304 if not_modified else 200, b"" if not_modified else body, headers)

    @staticmethod
    def _last_modified(document: Mapping[str, Any], now: datetime) -> datetime:
        times = [
            parse_time(str(item["updated_at"]))
            for key in ("incidents", "scheduled_maintenances")
            for item in document.get(key) or []
            if item.get("updated_at")
        ]
        # HTTP dates have whole seconds; round up so that a later change is always later.
        latest = max(times, default=datetime(2000, 1, 1, tzinfo=UTC))
        return latest.replace(microsecond=0) + timedelta(seconds=1 if latest.microsecond else 0)

    def _record(
        self, path: str, status: int, inm: str | None, ims: str | None, now: datetime
    ) -> None:
        with self._lock:
            self.requests.append(RequestRecord(path, status, inm, ims, now))

    @staticmethod
    def _send(
        request: BaseHTTPRequestHandler, status: int, body: bytes, headers: Mapping[str, str]
    ) -> None:
        try:
            request.send_response(status)
            for name, value in headers.items():
                request.send_header(name, value)
            if status != 304:
                request.send_header("Content-Type", "application/json; charset=utf-8")
                request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            if status != 304:
                request.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> StatuspageServer:
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="statuspage-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._http.shutdown()
        self._http.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> StatuspageServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
