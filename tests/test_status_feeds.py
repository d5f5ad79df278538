"""Status sources without AWS: parsing every wire format into one model, and change detection."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chalicelib.errors import BadRequest
from chalicelib.status_feeds import (
    Action,
    Component,
    ComponentMap,
    IncidentState,
    Policy,
    Scope,
    StatusFormatError,
    StatusIncident,
    StatusUpdate,
    apply,
    detect,
    from_jsonable,
    infer_status,
    order_actions,
    parse_component_map,
    parse_feed,
    parse_policy,
    parse_signed_webhook,
    parse_statuspage,
    parse_statuspage_incident,
    parse_statuspage_webhook,
    to_jsonable,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "status"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "statuspage"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(),
    reason=f"real Statuspage data not found at {SHARED} (a fresh clone has no ../shared)",
)

T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
MOBILE = ComponentMap({"mobile data": Scope(("mobile",), ("north",))})
AUTO_MAJOR = Policy(mode="auto", auto_min_impact="major")


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def incident(
    *updates: tuple[str, str, float], impact: str = "major", **extra: Any
) -> StatusIncident:
    """An incident whose updates are (id, status, minutes after T0), naming Mobile data."""
    built = tuple(
        StatusUpdate(uid, status, f"{status} text", minutes(at)) for uid, status, at in updates
    )
    base = StatusIncident(
        source_incident_id="inc1",
        name="Mobile data degraded",
        status=built[-1].status if built else "investigating",
        impact=impact,
        updates=built,
    )
    base = replace(base, components=parse_statuspage_incident(_component_stub()).components)
    return replace(base, **extra)


def _component_stub() -> dict[str, Any]:
    return {
        "id": "x",
        "name": "x",
        "status": "investigating",
        "components": [{"id": "cmp0data0001", "name": "Mobile data"}],
    }


def run(
    incidents: list[StatusIncident],
    state: dict[str, IncidentState],
    *,
    now: datetime,
    window_start: datetime | None = T0 - timedelta(minutes=1),
    components: ComponentMap = MOBILE,
    policy: Policy = AUTO_MAJOR,
) -> list[Action]:
    """One poll: detect, then record what was done, as the poller does."""
    actions = []
    for item in incidents:
        actions += detect(
            item,
            state.get(item.source_incident_id),
            components=components,
            policy=policy,
            now=now,
            window_start=window_start,
        )
    for action in order_actions(actions):
        key = action.incident.source_incident_id
        state[key] = apply(state.get(key), action)
    return actions


# -- parsing ---------------------------------------------------------------------------------


def test_statuspage_incidents_parse_oldest_update_first_with_components() -> None:
    feed = parse_statuspage(fixture("statuspage_incidents.json"))
    assert feed.problems == ()
    mobile, tv = feed.incidents
    assert mobile.source_incident_id == "inc0mobile01"
    assert (mobile.status, mobile.impact) == ("resolved", "major")
    assert [u.status for u in mobile.updates] == [
        "investigating",
        "identified",
        "monitoring",
        "resolved",
    ]
    assert mobile.updates[0].display_at == T0
    assert mobile.updates[0].components[0].new_status == "partial_outage"
    assert {"cmp0data0001", "mobile data"} <= mobile.component_keys()
    assert mobile.shortlink == "https://stspg.io/example1"
    assert tv.status == "postmortem"
    assert not mobile.is_maintenance


def test_summary_gives_components_unresolved_incidents_and_maintenance_windows() -> None:
    feed = parse_statuspage(fixture("statuspage_summary.json"))
    assert {c.name: c.status for c in feed.components} == {
        "Mobile data": "partial_outage",
        "TV guide": "operational",
    }
    live, maintenance = feed.incidents
    assert live.status == "investigating"
    assert maintenance.is_maintenance
    assert maintenance.scheduled_for == datetime(2024, 3, 3, 2, tzinfo=UTC)
    assert maintenance.scheduled_until == datetime(2024, 3, 3, 4, tzinfo=UTC)


def test_a_malformed_incident_is_skipped_and_named_while_the_others_parse() -> None:
    data = fixture("statuspage_incidents.json")
    data["incidents"][1]["incident_updates"][1]["status"] = "on fire"
    feed = parse_statuspage(data)
    assert [i.source_incident_id for i in feed.incidents] == ["inc0mobile01"]
    assert len(feed.problems) == 1
    assert "incidents[1].incident_updates[1].status" in feed.problems[0]
    assert "'on fire' is not one of" in feed.problems[0]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "body: expected a JSON object, got list"),
        ({"hello": 1}, "expected Statuspage JSON"),
        ({"incidents": {"id": 1}}, "incidents: expected a list, got dict"),
    ],
)
def test_a_body_of_the_wrong_shape_is_refused_with_a_clear_reason(body: Any, message: str) -> None:
    with pytest.raises(StatusFormatError, match=message):
        parse_statuspage(body)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("display_at", "2024-03-01T10:00:00", "has no time zone offset"),
        ("display_at", "soon", "is not an ISO 8601 time"),
        ("id", "", "expected a non-empty string"),
    ],
)
def test_update_fields_are_validated_with_the_path_to_the_field(
    field: str, value: str, message: str
) -> None:
    data = fixture("statuspage_incidents.json")["incidents"][0]
    data["incident_updates"][2][field] = value
    with pytest.raises(StatusFormatError, match=message) as raised:
        parse_statuspage_incident(data)
    assert "incident.incident_updates[2]" in raised.value.message


def test_statuspage_webhooks_carry_an_incident_or_a_component_update() -> None:
    hook = parse_statuspage_webhook(fixture("statuspage_webhook_incident.json"))
    assert hook.incident is not None
    assert hook.component_update is None
    assert [u.update_id for u in hook.incident.updates] == ["upd0hook0001", "upd0hook0002"]
    # Offsets are honoured: 10:00 at -06:00 is 16:00 UTC.
    assert hook.incident.updates[0].display_at == datetime(2024, 3, 1, 16, tzinfo=UTC)
    component = parse_statuspage_webhook(fixture("statuspage_webhook_component.json"))
    assert component.component_update is not None
    assert component.component_update.name == "Voice"
    assert component.component_update.new_status == "partial_outage"
    with pytest.raises(StatusFormatError, match="'incident' or a 'component_update'"):
        parse_statuspage_webhook({"meta": {}, "page": {}})


def test_the_signed_webhook_body_parses_into_the_same_model() -> None:
    parsed = parse_signed_webhook(fixture("signed_webhook.json"))
    assert parsed.source_incident_id == "noc-2024-0301-1"
    assert parsed.impact == "critical"
    assert [u.update_id for u in parsed.updates] == ["u1", "u2"]
    assert "broadband-east" in parsed.component_keys()
    assert parsed.shortlink == "https://noc.example.net/incidents/noc-2024-0301-1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"updates": []}, "give at least one update"),
        ({"impact": "apocalyptic"}, "incident.impact: 'apocalyptic' is not one of"),
        ({"components": "db"}, "incident.components: expected a list"),
        ({"updates": [{"id": "u", "status": "investigating"}]}, "display_at"),
    ],
)
def test_a_bad_signed_webhook_body_says_what_is_wrong(change: dict[str, Any], message: str) -> None:
    body = fixture("signed_webhook.json")
    body["incident"].update(change)
    with pytest.raises(StatusFormatError, match=message):
        parse_signed_webhook(body)


def test_rss_entries_become_incidents_with_the_status_their_latest_words_give() -> None:
    feed = parse_feed((FIXTURES / "statuspage_history.rss").read_bytes())
    by_name = {i.name: i for i in feed.incidents}
    assert by_name["Mobile data degraded in the north"].status == "resolved"
    assert by_name["Voice mail unavailable"].status == "identified"
    voice = by_name["Voice mail unavailable"]
    assert voice.updates[0].display_at == datetime(2024, 3, 1, 11, tzinfo=UTC)
    assert voice.shortlink == "https://status.example.net/incidents/inc0voice001"


def test_atom_entries_parse_too() -> None:
    (email,) = parse_feed((FIXTURES / "status_history.atom").read_bytes()).incidents
    assert email.name == "Email delivery delayed"
    assert email.status == "monitoring"
    assert email.updates[0].display_at == datetime(2024, 3, 1, 11, 30, tzinfo=UTC)


def test_grouped_feed_entries_form_one_incident_per_event_split_at_its_resolution() -> None:
    feed = parse_feed((FIXTURES / "aws_health.rss").read_bytes(), group_pattern=r"#(.+)_\d+$")
    first, second = sorted(feed.incidents, key=lambda i: i.updates[0].display_at)
    assert first.name == "SMS Delivery Delays"
    assert [u.status for u in first.updates] == ["investigating", "resolved"]
    assert second.name == "Elevated API errors"
    assert second.status == "investigating"
    assert first.source_incident_id != second.source_incident_id
    assert first.source_incident_id.startswith("sns-us-east-1@")


def test_unreadable_feeds_and_entries_are_reported() -> None:
    with pytest.raises(StatusFormatError, match="not a readable RSS or Atom feed"):
        parse_feed(b"\x00\x01 not xml at all <<<")
    partial = parse_feed(
        b"<rss version='2.0'><channel><title>t</title>"
        b"<item><title>No time</title><guid>a</guid></item></channel></rss>"
    )
    assert partial.incidents == ()
    assert partial.problems == ("entries[0]: missing time",)


@pytest.mark.parametrize(
    ("title", "text", "status"),
    [
        ("Service is operating normally: [RESOLVED] SMS delays", "", "resolved"),
        ("Broadband down", "Monitoring - fixed. Investigating - slow.", "monitoring"),
        ("Broadband down", "Identified - a cut cable.", "identified"),
        ("Broadband down", "Customers report issues.", "investigating"),
        ("Postmortem: broadband", "", "postmortem"),
    ],
)
def test_feed_status_comes_from_the_title_first_then_the_newest_words(
    title: str, text: str, status: str
) -> None:
    assert infer_status(title, text) == status


def test_a_model_survives_a_round_trip_through_json() -> None:
    (live, maintenance) = parse_statuspage(fixture("statuspage_summary.json")).incidents
    for item in (live, maintenance):
        assert from_jsonable(json.loads(json.dumps(to_jsonable(item)))) == item


# -- real data -------------------------------------------------------------------------------


@needs_shared
def test_the_real_github_summary_parses_its_components() -> None:
    (path,) = (SHARED / "fixtures").glob("githubstatus_summary_*.json")
    feed = parse_statuspage(json.loads(path.read_text()))
    assert feed.problems == ()
    assert "Git Operations" in {c.name for c in feed.components}
    assert all(c.status == "operational" for c in feed.components)


@needs_shared
def test_the_real_aws_health_item_reads_as_resolved() -> None:
    (path,) = (SHARED / "fixtures").glob("aws_health_rss_item_*.xml")
    item = path.read_text().split("-->", 1)[1]
    document = f"<rss version='2.0'><channel><title>AWS</title>{item}</channel></rss>"
    (parsed,) = parse_feed(document.encode(), group_pattern=r"#(.+)_\d+$").incidents
    assert parsed.status == "resolved"
    assert parsed.name == "SMS Delivery Delays"
    assert parsed.updates[0].display_at == datetime(2022, 1, 14, 22, 44, tzinfo=UTC)


@needs_shared
def test_every_real_github_incident_parses_and_its_updates_come_out_in_time_order() -> None:
    paths = sorted((SHARED / "github_incidents").glob("*.json"))
    assert len(paths) == 1282
    for path in paths:
        parsed = parse_statuspage(json.loads(path.read_text()))
        assert parsed.problems == (), path.name
        (item,) = parsed.incidents
        moments = [u.display_at for u in item.updates]
        assert moments == sorted(moments)
        assert item.updates[-1].status == "resolved"


# -- change detection ------------------------------------------------------------------------


def test_a_new_incident_opens_with_one_initial_notice_for_its_mapped_scope() -> None:
    state: dict[str, IncidentState] = {}
    (action,) = run([incident(("a", "investigating", 0))], state, now=minutes(1))
    assert (action.kind, action.key) == ("open", "initial")
    assert action.scope == Scope(("mobile",), ("north",))
    assert action.auto is True
    assert action.display_at == T0
    assert state["inc1"].tracked


def test_each_update_is_acted_on_once_and_in_display_order() -> None:
    state: dict[str, IncidentState] = {}
    run([incident(("a", "investigating", 0))], state, now=minutes(1))
    # Two new updates in one fetch, listed newest first as Statuspage does.
    later = incident(("a", "investigating", 0), ("c", "monitoring", 9), ("b", "identified", 4))
    actions = run([later], state, now=minutes(10))
    assert [(a.kind, a.key, a.status) for a in actions] == [
        ("update", "update:b", "identified"),
        ("update", "update:c", "monitoring"),
    ]
    assert run([later], state, now=minutes(11)) == []


def test_a_replayed_fetch_changes_nothing() -> None:
    state: dict[str, IncidentState] = {}
    feed = parse_statuspage(fixture("statuspage_summary.json")).incidents[:1]
    assert run(list(feed), state, now=minutes(6))
    snapshot = {k: replace(v, acted=dict(v.acted)) for k, v in state.items()}
    for later in (6, 7, 60):
        assert run(list(feed), state, now=minutes(later)) == []
    assert state == snapshot


def test_resolved_sends_the_all_clear_and_a_postmortem_afterwards_sends_nothing() -> None:
    state: dict[str, IncidentState] = {}
    run([incident(("a", "investigating", 0))], state, now=minutes(1))
    resolved = incident(("a", "investigating", 0), ("r", "resolved", 30))
    (action,) = run([resolved], state, now=minutes(31))
    assert (action.kind, action.status, action.display_at) == ("resolve", "resolved", minutes(30))
    postmortem = incident(
        ("a", "investigating", 0), ("r", "resolved", 30), ("p", "postmortem", 3000)
    )
    assert run([postmortem], state, now=minutes(3001)) == []


def test_an_incident_that_came_and_went_between_two_polls_gets_both_notices() -> None:
    state: dict[str, IncidentState] = {}
    short = incident(("a", "investigating", 0.2), ("b", "identified", 0.5), ("r", "resolved", 0.8))
    actions = run([short], state, now=minutes(1), window_start=T0)
    assert [(a.kind, a.covers) for a in actions] == [("open", ("a", "b")), ("resolve", ("r",))]
    assert actions[0].status == "identified"


def test_resolved_history_is_recorded_without_notices() -> None:
    old = incident(("a", "investigating", 0), ("r", "resolved", 30))
    for window_start in (None, minutes(40)):
        state: dict[str, IncidentState] = {}
        (action,) = run([old], state, now=minutes(41), window_start=window_start)
        assert (action.kind, action.key) == ("record", "history")
        assert run([old], state, now=minutes(42)) == []
    written_up = incident(("r", "resolved", 30))
    assert [a.key for a in run([written_up], {}, now=minutes(31), window_start=T0)] == ["history"]
    backfilled = incident(("a", "investigating", 0), backfilled=True)
    assert [a.key for a in run([backfilled], {}, now=minutes(1))] == ["history"]


def test_updates_already_out_when_first_seen_fold_into_the_initial() -> None:
    state: dict[str, IncidentState] = {}
    ongoing = incident(("a", "investigating", 0), ("b", "identified", 20))
    (action,) = run([ongoing], state, now=minutes(21), window_start=None)
    assert action.kind == "open"
    assert action.covers == ("a", "b")
    assert action.status == "identified"
    assert state["inc1"].acted["update:b"] == "folded"


def test_an_update_older_than_one_already_sent_is_recorded_not_sent_out_of_order() -> None:
    state: dict[str, IncidentState] = {}
    run([incident(("a", "investigating", 0))], state, now=minutes(1))
    run([incident(("a", "investigating", 0), ("c", "identified", 10))], state, now=minutes(11))
    backdated = incident(("a", "investigating", 0), ("b", "identified", 5), ("c", "identified", 10))
    (action,) = run([backdated], state, now=minutes(12))
    assert (action.kind, action.key) == ("record", "late:b")
    assert run([backdated], state, now=minutes(13)) == []


def test_components_map_to_services_and_regions_by_id_or_name() -> None:
    components = parse_component_map(
        {
            "cmp0data0001": {"services": ["mobile"], "regions": ["north"]},
            "TV Guide": {"services": ["tv"], "regions": ["south"]},
            "Voice": {"services": ["mobile"]},
        },
        None,
    )
    tv = parse_statuspage(fixture("statuspage_incidents.json")).incidents[1]
    assert components.scope_for(tv) == Scope(("tv",), ("south",))
    both = replace(tv, components=(*tv.components, *incident().components))
    assert components.scope_for(both) == Scope(("mobile", "tv"), ("north", "south"))
    voice = replace(tv, components=(Component("cmp0voice001", "VOICE"),), updates=())
    # A component mapped without regions affects every region of its services.
    assert components.scope_for(voice) == Scope(("mobile",), ())
    voice_and_tv = replace(both, components=(*both.components, *voice.components))
    assert components.scope_for(voice_and_tv) == Scope(("mobile", "tv"), ())


def test_an_unmapped_incident_is_noted_once_and_opens_when_it_names_a_mapped_component() -> None:
    state: dict[str, IncidentState] = {}
    other = replace(incident(("a", "investigating", 0)), components=())
    assert [a.key for a in run([other], state, now=minutes(1))] == ["unmapped"]
    assert run([other], state, now=minutes(2)) == []
    mapped = incident(("a", "investigating", 0), ("b", "identified", 3))
    (action,) = run([mapped], state, now=minutes(4))
    assert (action.kind, action.covers) == ("open", ("a", "b"))


def test_a_default_scope_catches_incidents_naming_no_mapped_component() -> None:
    components = ComponentMap({}, Scope(("broadband",)))
    (action,) = run(
        [incident(("a", "investigating", 0))], {}, now=minutes(1), components=components
    )
    assert action.scope == Scope(("broadband",))


@pytest.mark.parametrize(
    ("policy", "impact", "auto"),
    [
        (Policy("draft", "minor"), "critical", False),
        (Policy("auto", "major"), "minor", False),
        (Policy("auto", "major"), "major", True),
        (Policy("auto", "minor"), "none", False),
        (Policy("auto", "critical"), "critical", True),
    ],
)
def test_the_policy_sends_automatically_only_at_or_above_its_impact(
    policy: Policy, impact: str, auto: bool
) -> None:
    (action,) = run(
        [incident(("a", "investigating", 0), impact=impact)], {}, now=minutes(1), policy=policy
    )
    assert action.auto is auto


def test_an_incident_that_escalates_stays_automatic_after_it_calms_down() -> None:
    state: dict[str, IncidentState] = {}
    (opened,) = run([incident(("a", "investigating", 0), impact="minor")], state, now=minutes(1))
    assert opened.auto is False
    worse = incident(("a", "investigating", 0), ("b", "identified", 5), impact="major")
    (escalated,) = run([worse], state, now=minutes(6))
    assert escalated.auto is True
    calmer = incident(("a", "investigating", 0), ("b", "identified", 5), ("r", "resolved", 9))
    (resolved,) = run([replace(calmer, impact="minor")], state, now=minutes(10))
    assert resolved.auto is True


def test_policy_and_mapping_configuration_errors_are_clear() -> None:
    assert parse_policy({"mode": "auto", "auto_min_impact": "critical"}).auto_for("critical")
    for bad, message in (
        ({"mode": "yolo"}, 'mode must be "draft" or "auto"'),
        ({"auto_min_impact": "none"}, "auto_min_impact must be minor, major or critical"),
        ({"maintenance_lead_minutes": -5}, "maintenance_lead_minutes"),
        ({"surprise": 1}, "unknown fields surprise"),
    ):
        with pytest.raises(BadRequest, match=message):
            parse_policy(bad)
    with pytest.raises(BadRequest, match=r"components.db.services must name at least one"):
        parse_component_map({"db": {"services": []}}, None)
    with pytest.raises(BadRequest, match="lower-case letters"):
        parse_component_map({"db": {"services": ["Mobile Data"]}}, None)


def test_a_maintenance_heads_up_goes_once_ahead_of_the_window_by_the_lead_time() -> None:
    (maintenance,) = parse_statuspage(fixture("statuspage_summary.json")).incidents[1:]
    starts = datetime(2024, 3, 3, 2, tzinfo=UTC)
    policy = Policy("auto", "major", maintenance_lead=timedelta(hours=2))
    state: dict[str, IncidentState] = {}
    assert run([maintenance], state, now=starts - timedelta(hours=3), policy=policy) == []
    (action,) = run([maintenance], state, now=starts - timedelta(minutes=119), policy=policy)
    assert (action.kind, action.display_at, action.auto) == (
        "headsup",
        starts - timedelta(hours=2),
        True,
    )
    assert action.scope == Scope(("mobile",), ("north",))
    assert run([maintenance], state, now=starts - timedelta(minutes=30), policy=policy) == []
    done = replace(maintenance, status="completed")
    (close,) = run([done], state, now=starts + timedelta(hours=2), policy=policy)
    assert close.kind == "close"
    assert run([done], state, now=starts + timedelta(hours=3), policy=policy) == []


def test_a_maintenance_first_seen_after_it_ended_is_history() -> None:
    (maintenance,) = parse_statuspage(fixture("statuspage_summary.json")).incidents[1:]
    after = datetime(2024, 3, 3, 5, tzinfo=UTC)
    assert [a.key for a in run([maintenance], {}, now=after)] == ["history"]


def test_across_incidents_the_earliest_moment_goes_first() -> None:
    state: dict[str, IncidentState] = {}
    first = replace(incident(("a", "investigating", 3)), source_incident_id="late")
    second = replace(incident(("b", "investigating", 1)), source_incident_id="early")
    actions = run([first, second], state, now=minutes(5))
    assert [a.incident.source_incident_id for a in order_actions(actions)] == ["early", "late"]
