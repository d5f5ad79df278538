from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from chalicelib import broadcasts, notices
from chalicelib.domain import Channel, Customer, Incident, IncidentStatus, Phase, Subscription
from chalicelib.errors import BadRequest
from chalicelib.notices import (
    RenderedNotice,
    SmsSegments,
    available_kinds,
    kind_for_phase,
    locale_chain,
    notice_context,
    render_custom,
    render_notice,
    sms_segments,
    template_dirs,
    window_context,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
KINDS = ["outage_initial", "outage_update", "outage_resolved"]
LOCALES = ["en", "fr", "es"]
HOSTILE = "<script>alert(1)</script>"
MAINTENANCE = "maintenance_headsup"


@pytest.fixture
def customer() -> Customer:
    return Customer(
        customer_id="c-1",
        name="Amélie Dupont",
        phone="+33612345678",
        email="amelie@example.com",
        x_handle="@amelie",
        channels=(Channel.SMS, Channel.EMAIL),
        locale="fr-CA",
        time_zone="Europe/Paris",
        services=(
            Subscription("mobile", "Paris", "75001"),
            Subscription("broadband", "Lyon", "69001"),
            Subscription("tv", "Lyon", "69001"),
        ),
    )


@pytest.fixture
def incident() -> Incident:
    return Incident(
        incident_id="i-1",
        title="Fibre cut near Lyon Part-Dieu",
        status=IncidentStatus.IDENTIFIED,
        services=("broadband",),
        regions=("Lyon",),
        created_at="2026-11-23T13:00:00Z",
        updated_at="2026-11-23T13:30:00Z",
        next_update_due="2026-11-23T14:00:00Z",
    )


@pytest.fixture
def context(customer: Customer, incident: Incident) -> dict[str, object]:
    """A full context with values the size real notices carry."""
    return notice_context(
        customer,
        incident,
        {"workaround": "", "status_link": "https://nw.example/status"},
        brand="Northwind",
        unsubscribe_url="https://nw.example/unsubscribe?c=c-1&t=abc",
    )


@pytest.fixture
def isolated_templates(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the renderer at an empty template tree; the cached environment is restored after."""
    monkeypatch.setattr(notices, "template_dirs", lambda: [str(tmp_path)])
    monkeypatch.setattr(notices, "_ENV", None)
    return tmp_path


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# --- SMS segments -------------------------------------------------------------------------


def test_empty_text_needs_no_segments() -> None:
    assert sms_segments("") == SmsSegments("GSM-7", 0, 0)


@pytest.mark.parametrize(
    ("length", "segments"), [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)]
)
def test_gsm7_text_fits_160_alone_and_153_per_part(length: int, segments: int) -> None:
    assert sms_segments("a" * length) == SmsSegments("GSM-7", length, segments)


def test_every_basic_gsm7_character_counts_once() -> None:
    text = "".join(sorted(notices.GSM7_BASIC))
    assert len(notices.GSM7_BASIC) == 127
    assert sms_segments(text) == SmsSegments("GSM-7", 127, 1)


@pytest.mark.parametrize("char", list("^{}\\[~]|€\f"))
def test_extension_table_characters_count_double(char: str) -> None:
    assert sms_segments(char) == SmsSegments("GSM-7", 2, 1)


def test_eighty_euro_signs_fill_one_message_and_one_more_character_splits_it() -> None:
    assert sms_segments("€" * 80) == SmsSegments("GSM-7", 160, 1)
    assert sms_segments("€" * 80 + "a") == SmsSegments("GSM-7", 161, 2)


def test_an_escape_sequence_is_never_split_across_parts() -> None:
    # 306 septets would fit two parts, but the € cannot straddle the boundary at 153.
    text = "a" * 152 + "€" + "a" * 152
    assert sms_segments(text) == SmsSegments("GSM-7", 306, 3)


@pytest.mark.parametrize(("length", "segments"), [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3)])
def test_ucs2_text_fits_70_alone_and_67_per_part(length: int, segments: int) -> None:
    assert sms_segments("ж" * length) == SmsSegments("UCS-2", length, segments)


def test_one_character_outside_gsm7_switches_the_whole_message_to_ucs2() -> None:
    # A typographic apostrophe is the classic accident that triples the cost of a notice.
    assert sms_segments("a" * 69 + "\u2019") == SmsSegments("UCS-2", 70, 1)
    assert sms_segments("a" * 70 + "\u2019") == SmsSegments("UCS-2", 71, 2)
    assert sms_segments("ç").encoding == "UCS-2"


def test_emoji_count_as_two_utf16_units() -> None:
    assert sms_segments("😀" * 35) == SmsSegments("UCS-2", 70, 1)
    assert sms_segments("😀" * 35 + "a") == SmsSegments("UCS-2", 71, 2)


def test_a_surrogate_pair_is_never_split_across_parts() -> None:
    text = "ж" * 66 + "😀" + "ж" * 66
    assert sms_segments(text) == SmsSegments("UCS-2", 134, 3)


def test_segments_serialise_to_a_plain_dict() -> None:
    assert sms_segments("hi").to_dict() == {"encoding": "GSM-7", "units": 2, "segments": 1}


# --- kinds, locales and template lookup ---------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "kind"),
    [
        (Phase.INITIAL, "outage_initial"),
        (Phase.UPDATE, "outage_update"),
        (Phase.RESOLVED, "outage_resolved"),
    ],
)
def test_each_phase_has_its_own_notice_kind(phase: Phase, kind: str) -> None:
    assert kind_for_phase(phase) == kind


def test_available_kinds_lists_the_outage_kinds_but_not_layouts() -> None:
    # Outside KINDS: kinds whose text names no service (tested with their own feature), and
    # the maintenance heads-up (tested below with its window).
    assert available_kinds() == sorted([*KINDS, "lane_disruption", MAINTENANCE])


def test_template_dirs_include_the_source_tree_templates() -> None:
    dirs = template_dirs()
    assert str(PROJECT_ROOT / "templates") in dirs
    assert all(os.path.isdir(d) for d in dirs)


@pytest.mark.parametrize(
    ("locale", "chain"),
    [
        ("fr-CA", ["fr-CA", "fr", "default"]),
        ("fr_ca", ["fr-CA", "fr", "default"]),
        ("en", ["en", "default"]),
        ("ES", ["es", "default"]),
        ("es-419", ["es-419", "es", "default"]),
        ("zh-Hant-TW", ["zh-Hant-TW", "zh-Hant", "zh", "default"]),
        ("", ["default"]),
        ("default", ["default"]),
        ("../../etc", ["default"]),
        ("english please", ["default"]),
    ],
)
def test_locale_chain_goes_from_most_specific_to_default(locale: str, chain: list[str]) -> None:
    assert locale_chain(locale) == chain


def test_french_canadian_customer_falls_back_to_french(context: dict[str, object]) -> None:
    canadian = render_notice("outage_initial", Channel.EMAIL, "fr-CA", context)
    french = render_notice("outage_initial", Channel.EMAIL, "fr", context)
    assert canadian == french
    assert canadian.html is not None
    assert '<html lang="fr">' in canadian.html
    assert canadian.text.startswith("Bonjour Amélie,")


def test_unknown_locale_gets_the_english_default(context: dict[str, object]) -> None:
    rendered = render_notice("outage_initial", Channel.SMS, "xx-YY", context)
    assert rendered.text.startswith("Northwind: we know broadband in Lyon is down")


def test_each_part_falls_back_on_its_own(
    isolated_templates: Path, context: dict[str, object]
) -> None:
    write(isolated_templates, "kind_a/default/email_subject.txt.j2", "Subject {{ brand }}")
    write(isolated_templates, "kind_a/default/email.txt.j2", "Default text")
    write(isolated_templates, "kind_a/default/email.html.j2", "<p>Default</p>")
    write(isolated_templates, "kind_a/fr/email.txt.j2", "Texte français")
    rendered = render_notice("kind_a", Channel.EMAIL, "fr-CA", context)
    assert rendered == RenderedNotice(
        Channel.EMAIL, text="Texte français", subject="Subject Northwind", html="<p>Default</p>"
    )


def test_a_part_missing_in_every_locale_is_a_bad_request(
    isolated_templates: Path, context: dict[str, object]
) -> None:
    write(isolated_templates, "kind_a/default/sms.txt.j2", "hi")
    with pytest.raises(BadRequest, match=r"social\.txt\.j2: no such template in any locale"):
        render_notice("kind_a", Channel.SOCIAL, "en", context)


def test_email_subject_is_collapsed_to_one_line(
    isolated_templates: Path, context: dict[str, object]
) -> None:
    write(isolated_templates, "kind_a/default/email_subject.txt.j2", "  One\n  two\n\n")
    write(isolated_templates, "kind_a/default/email.txt.j2", "\n\n  body  \n\n")
    write(isolated_templates, "kind_a/default/email.html.j2", "<p>x</p>\n")
    rendered = render_notice("kind_a", Channel.EMAIL, "en", context)
    assert rendered.subject == "One two"
    assert rendered.text == "body"


@pytest.mark.parametrize("kind", ["outage_unknown", "../templates", "_layouts", "Outage_Initial"])
def test_unknown_kind_is_a_bad_request_listing_the_kinds(
    kind: str, context: dict[str, object]
) -> None:
    with pytest.raises(BadRequest) as caught:
        render_notice(kind, Channel.SMS, "en", context)
    assert "unknown notice kind" in caught.value.message
    for known in KINDS:
        assert known in caught.value.message


# --- context --------------------------------------------------------------------------------


def test_context_describes_the_customers_affected_subscription(
    customer: Customer, incident: Incident
) -> None:
    context = notice_context(customer, incident, {}, brand="Northwind")
    assert context == {
        "first_name": "Amélie",
        "name": "Amélie Dupont",
        "brand": "Northwind",
        "title": "Fibre cut near Lyon Part-Dieu",
        "status": "identified",
        "service": "broadband",
        "region": "Lyon",
        "workaround": "",
        "status_link": "",
        "next_update": "15:00 CET",
        "opt_out_sms": "Reply STOP to opt out.",
        "unsubscribe_url": None,
        "window_start": "",
        "window_end": "",
        "window": "",
    }


def test_several_affected_services_are_joined(customer: Customer, incident: Incident) -> None:
    both = replace(incident, services=("tv", "broadband"))
    context = notice_context(customer, both, {}, brand="Northwind")
    assert context["service"] == "broadband, tv"
    assert context["region"] == "Lyon"


def test_a_customer_outside_the_incident_gets_their_first_subscription(
    customer: Customer, incident: Incident
) -> None:
    elsewhere = replace(incident, regions=("Marseille",))
    context = notice_context(customer, elsewhere, {}, brand="Northwind")
    assert (context["service"], context["region"]) == ("mobile", "Paris")


def test_next_update_is_shown_in_the_customers_time_zone(
    customer: Customer, incident: Incident
) -> None:
    summer = replace(incident, next_update_due="2026-07-01T08:30:00Z")
    assert notice_context(customer, summer, {}, brand="B")["next_update"] == "10:30 CEST"
    new_york = replace(customer, time_zone="America/New_York")
    assert notice_context(new_york, incident, {}, brand="B")["next_update"] == "09:00 EST"


def test_unknown_time_zone_falls_back_to_utc(customer: Customer, incident: Incident) -> None:
    lost = replace(customer, time_zone="Mars/Olympus_Mons")
    assert notice_context(lost, incident, {}, brand="B")["next_update"] == "14:00 UTC"


def test_no_next_update_due_leaves_it_empty(customer: Customer, incident: Incident) -> None:
    open_ended = replace(incident, next_update_due=None)
    assert notice_context(customer, open_ended, {}, brand="B")["next_update"] == ""


def test_variables_supply_the_workaround_and_status_link(
    customer: Customer, incident: Incident
) -> None:
    variables = {"workaround": "Use mobile data.", "status_link": "https://s.example"}
    context = notice_context(customer, incident, variables, brand="B")
    assert context["workaround"] == "Use mobile data."
    assert context["status_link"] == "https://s.example"


# --- rendering every stock template -------------------------------------------------------


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("channel", list(Channel))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("workaround", ["", "Use mobile data until then."])
def test_every_kind_channel_and_locale_renders(
    kind: str, channel: Channel, locale: str, workaround: str, context: dict[str, object]
) -> None:
    rendered = render_notice(kind, channel, locale, {**context, "workaround": workaround})
    assert rendered.channel is channel
    assert rendered.text
    assert rendered.text == rendered.text.strip()
    assert "{{" not in rendered.text
    assert "broadband" in rendered.text
    if workaround and kind != "outage_resolved":
        assert workaround in rendered.text
    if channel is Channel.EMAIL:
        assert rendered.subject
        assert "\n" not in rendered.subject
        assert rendered.html is not None
        assert rendered.html.startswith("<!DOCTYPE html>")
        assert "Northwind" in rendered.html
        assert "https://nw.example/unsubscribe?c=c-1&amp;t=abc" in rendered.html
        assert "https://nw.example/unsubscribe?c=c-1&t=abc" in rendered.text
    else:
        assert rendered.subject is None
        assert rendered.html is None
    assert rendered.to_dict()["channel"] == channel.value


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", list(IncidentStatus))
def test_sms_fits_one_gsm7_message_with_typical_values(
    kind: str, locale: str, status: IncidentStatus, context: dict[str, object]
) -> None:
    rendered = render_notice(kind, Channel.SMS, locale, {**context, "status": status.value})
    assert sms_segments(rendered.text) == SmsSegments("GSM-7", len(rendered.text), 1)
    opt_out = {"en": "Reply STOP to opt out.", "fr": "Répondez STOP pour vous désabonner."}
    assert rendered.text.endswith(opt_out.get(locale, "Responde STOP para la baja."))


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", KINDS)
def test_social_posts_fit_and_carry_no_personal_data(
    kind: str, locale: str, customer: Customer, context: dict[str, object]
) -> None:
    full = {**context, "workaround": "Use mobile data or a Northwind Wi-Fi hotspot until then."}
    text = render_notice(kind, Channel.SOCIAL, locale, full).text
    assert len(text) <= 280
    for personal in ("Dupont", customer.phone, customer.email, customer.x_handle, "unsubscribe"):
        assert personal
        assert personal not in text


def test_update_notice_says_how_far_along_the_fix_is(context: dict[str, object]) -> None:
    monitoring = {**context, "status": "monitoring"}
    assert "fix in place" in render_notice("outage_update", Channel.SMS, "en", monitoring).text
    assert "sous surveillance" in render_notice("outage_update", Channel.SMS, "fr", monitoring).text


def test_html_escapes_hostile_values_but_sms_keeps_them_verbatim(
    context: dict[str, object],
) -> None:
    hostile = {**context, "workaround": HOSTILE, "title": HOSTILE}
    email = render_notice("outage_initial", Channel.EMAIL, "en", hostile)
    assert email.html is not None
    assert HOSTILE not in email.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    assert HOSTILE in email.text
    assert HOSTILE in render_notice("outage_initial", Channel.SMS, "en", hostile).text


def test_unsubscribe_link_appears_only_when_there_is_one(context: dict[str, object]) -> None:
    without = render_notice(
        "outage_resolved", Channel.EMAIL, "en", {**context, "unsubscribe_url": None}
    )
    assert without.html is not None
    assert "Unsubscribe" not in without.html
    assert "nw.example/unsubscribe" not in without.text


def test_missing_variable_is_a_bad_request_naming_the_template(
    context: dict[str, object],
) -> None:
    incomplete = {k: v for k, v in context.items() if k != "workaround"}
    with pytest.raises(BadRequest) as caught:
        render_notice("outage_update", Channel.SMS, "en", incomplete)
    assert caught.value.message == (
        "template outage_update/default/sms.txt.j2: 'workaround' is undefined"
    )


def test_syntax_error_in_a_template_file_is_a_bad_request(
    isolated_templates: Path, context: dict[str, object]
) -> None:
    write(isolated_templates, "kind_a/default/sms.txt.j2", "{{ brand ")
    with pytest.raises(BadRequest, match=r"^template kind_a/default/sms\.txt\.j2: .*\(line 1\)$"):
        render_notice("kind_a", Channel.SMS, "en", context)


def test_missing_layout_is_a_bad_request(
    isolated_templates: Path, context: dict[str, object]
) -> None:
    write(isolated_templates, "kind_a/default/social.txt.j2", '{% extends "_layouts/gone.j2" %}')
    with pytest.raises(BadRequest, match=r"template '_layouts/gone\.j2' not found"):
        render_notice("kind_a", Channel.SOCIAL, "en", context)


# --- the maintenance heads-up and its window ------------------------------------------------

# 01:00-03:00 UTC on Sunday 3 March 2024: 02:00-04:00 in Paris, 20:00-22:00 the evening before
# in New York.
WINDOW = {"window_start": "2024-03-03T01:00:00Z", "window_end": "2024-03-03T03:00:00Z"}
# What a status source passes: its shortlink, and the window.
HEADSUP_VARIABLES = {"status_link": "https://stspg.io/7x2kq9m", **WINDOW}


def headsup_context(
    customer: Customer, incident: Incident, locale: str, **variables: str
) -> dict[str, object]:
    return notice_context(
        replace(customer, locale=locale),
        incident,
        {**HEADSUP_VARIABLES, **variables},
        # The longest brand the tests use (the local stack's), so the SMS budget is honest.
        brand="Forewarn Telecom",
        unsubscribe_url="https://nw.example/unsubscribe?c=c-1&t=abc",
    )


@pytest.mark.parametrize(
    ("locale", "start", "end", "window"),
    [
        ("en", "Sunday 3 March, 02:00 CET", "Sunday 3 March, 04:00 CET", "3 Mar 02:00-04:00 CET"),
        ("fr", "dimanche 3 mars, 02:00 CET", "dimanche 3 mars, 04:00 CET", "03/03 02:00-04:00 CET"),
        (
            "es",
            "domingo 3 de marzo, 02:00 CET",
            "domingo 3 de marzo, 04:00 CET",
            "03/03 02:00-04:00 CET",
        ),
    ],
)
def test_the_window_is_shown_in_the_customers_zone_and_language(
    customer: Customer, locale: str, start: str, end: str, window: str
) -> None:
    shown = window_context(**WINDOW, time_zone=customer.time_zone, locale=locale)
    assert shown == {"window_start": start, "window_end": end, "window": window}


def test_a_window_across_midnight_and_a_clock_change_names_both_days_and_zones() -> None:
    # New York leaves daylight time at 02:00 on Sunday 3 November 2024.
    shown = window_context(
        "2024-11-03T03:30:00Z", "2024-11-03T08:00:00Z", time_zone="America/New_York", locale="en"
    )
    assert shown == {
        "window_start": "Saturday 2 November, 23:30 EDT",
        "window_end": "Sunday 3 November, 03:00 EST",
        "window": "2 Nov 23:30 EDT - 3 Nov 03:00 EST",
    }


def test_a_window_falls_back_to_utc_for_an_unknown_zone_and_says_so() -> None:
    shown = window_context(**WINDOW, time_zone="Mars/Olympus_Mons", locale="fr-CA")
    assert shown["window_start"] == "dimanche 3 mars, 01:00 UTC"
    assert shown["window"] == "03/03 01:00-03:00 UTC"


def test_a_zone_without_an_abbreviation_is_labelled_as_an_offset_from_utc() -> None:
    shown = window_context(**WINDOW, time_zone="America/Sao_Paulo", locale="es-419")
    assert shown["window"] == "02/03 22:00 - 03/03 00:00 UTC-03"


def test_without_a_start_there_is_no_window_and_a_bad_end_is_left_out() -> None:
    empty = {"window_start": "", "window_end": "", "window": ""}
    assert window_context(None, None, time_zone="UTC", locale="en") == empty
    assert window_context("not a time", "2024-03-03T03:00:00Z", time_zone="UTC", locale="en") == (
        empty
    )
    backwards = window_context(
        "2024-03-03T03:00:00Z", "2024-03-03T01:00:00Z", time_zone="UTC", locale="en"
    )
    assert backwards == {
        "window_start": "Sunday 3 March, 03:00 UTC",
        "window_end": "",
        "window": "3 Mar 03:00 UTC",
    }


def test_a_locale_without_date_names_gets_english_like_its_default_template() -> None:
    assert window_context(**WINDOW, time_zone="UTC", locale="de-AT")["window"] == (
        "3 Mar 01:00-03:00 UTC"
    )


@pytest.mark.parametrize(
    ("locale", "time_zone", "sms", "email_lines"),
    [
        (
            "en",
            "America/New_York",
            "Forewarn Telecom: planned broadband maintenance in Lyon, 2 Mar 20:00-22:00 EST. "
            "Brief outages possible. https://stspg.io/7x2kq9m Reply STOP to opt out.",
            ["Starts: Saturday 2 March, 20:00 EST", "Ends: Saturday 2 March, 22:00 EST"],
        ),
        (
            "fr-CA",
            "America/Toronto",
            "Forewarn Telecom: maintenance broadband (Lyon) prévue 02/03 20:00-22:00 EST, "
            "coupures possibles. https://stspg.io/7x2kq9m Répondez STOP pour vous désabonner.",
            ["Début : samedi 2 mars, 20:00 EST", "Fin : samedi 2 mars, 22:00 EST"],
        ),
        (
            "es",
            "Europe/Madrid",
            "Forewarn Telecom: mantenimiento de broadband (Lyon) previsto 03/03 02:00-04:00 CET. "
            "Puede haber cortes. https://stspg.io/7x2kq9m Responde STOP para la baja.",
            ["Inicio: domingo 3 de marzo, 02:00 CET", "Fin: domingo 3 de marzo, 04:00 CET"],
        ),
    ],
)
def test_the_heads_up_tells_each_customer_when_in_their_own_zone_and_language(
    customer: Customer,
    incident: Incident,
    locale: str,
    time_zone: str,
    sms: str,
    email_lines: list[str],
) -> None:
    context = headsup_context(replace(customer, time_zone=time_zone), incident, locale)
    assert render_notice(MAINTENANCE, Channel.SMS, locale, context).text == sms
    email = render_notice(MAINTENANCE, Channel.EMAIL, locale, context)
    assert email.html is not None
    for line in email_lines:
        assert line in email.text.splitlines()
        label, value = line.split(":", 1)
        assert f"<strong>{label}:</strong>{value}" in email.html
    assert email.subject is not None
    assert email.subject.endswith(f", {context['window']}")
    social = render_notice(MAINTENANCE, Channel.SOCIAL, locale, context).text
    assert str(context["window"]) in social


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("channel", list(Channel))
@pytest.mark.parametrize("window", [WINDOW, {"window_start": "", "window_end": ""}])
@pytest.mark.parametrize("workaround", ["", "Use mobile data until then."])
def test_every_heads_up_channel_and_locale_renders_with_or_without_a_window(
    customer: Customer,
    incident: Incident,
    locale: str,
    channel: Channel,
    window: dict[str, str],
    workaround: str,
) -> None:
    context = headsup_context(customer, incident, locale, workaround=workaround, **window)
    rendered = render_notice(MAINTENANCE, channel, locale, context)
    assert rendered.text == rendered.text.strip()
    assert "{{" not in rendered.text
    assert "broadband" in rendered.text
    # The customer hears about maintenance, never that the service is down now.
    for outage in ("is down", "disrupted", "incidencia", "perturbé"):
        assert outage not in rendered.text
    if window["window_start"]:
        assert str(context["window"]) in (rendered.subject or rendered.text)
    if workaround and channel is not Channel.SMS:
        assert workaround in rendered.text
    if channel is Channel.EMAIL:
        assert rendered.subject
        assert rendered.html is not None
        assert rendered.html.startswith("<!DOCTYPE html>")
        assert "https://nw.example/unsubscribe?c=c-1&amp;t=abc" in rendered.html
        assert "https://nw.example/unsubscribe?c=c-1&t=abc" in rendered.text
        if window["window_start"]:
            assert str(context["window_start"]) in rendered.text
            assert str(context["window_end"]) in rendered.text


@pytest.mark.parametrize("locale", LOCALES)
def test_the_heads_up_sms_fits_one_gsm7_message_with_typical_values(
    customer: Customer, incident: Incident, locale: str
) -> None:
    rendered = render_notice(
        MAINTENANCE, Channel.SMS, locale, headsup_context(customer, incident, locale)
    )
    assert sms_segments(rendered.text) == SmsSegments("GSM-7", len(rendered.text), 1)


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("month", range(1, 13))
def test_the_heads_up_sms_stays_gsm7_whatever_the_date(
    customer: Customer, incident: Incident, locale: str, month: int
) -> None:
    # Every month and weekday name, a window across midnight, and one across a clock change
    # (the worst case for length): never UCS-2, never more than two parts.
    windows = [
        (f"2024-{month:02d}-{day:02d}T21:30:00Z", f"2024-{month:02d}-{day + 1:02d}T02:00:00Z")
        for day in range(1, 8)
    ]
    windows.append(("2024-10-27T00:30:00Z", "2024-10-27T03:00:00Z"))
    for start, end in windows:
        context = headsup_context(customer, incident, locale, window_start=start, window_end=end)
        text = render_notice(MAINTENANCE, Channel.SMS, locale, context).text
        segments = sms_segments(text)
        assert segments.encoding == "GSM-7", text
        assert segments.segments <= 2, text


@pytest.mark.parametrize("locale", LOCALES)
def test_heads_up_social_posts_fit_and_carry_no_personal_data(
    customer: Customer, incident: Incident, locale: str
) -> None:
    context = headsup_context(
        customer,
        incident,
        locale,
        workaround="Use mobile data or a Northwind Wi-Fi hotspot until then.",
        window_start="2024-10-26T21:30:00Z",
        window_end="2024-10-27T03:00:00Z",
    )
    text = render_notice(MAINTENANCE, Channel.SOCIAL, locale, context).text
    assert len(text) <= 280
    for personal in ("Dupont", customer.phone, customer.email, customer.x_handle, "unsubscribe"):
        assert personal
        assert personal not in text


def test_window_variables_are_normalised_to_utc() -> None:
    checked = broadcasts._variables(
        {"window_start": "2024-03-03T02:00:00+01:00", "window_end": " 2024-03-03T03:00:00.000Z "}
    )
    assert checked == {"window_start": "2024-03-03T01:00:00Z", "window_end": "2024-03-03T03:00:00Z"}


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"window_start": "Sunday 2am"}, "variables.window_start must be an ISO 8601"),
        ({"window_start": "2024-03-03T01:00:00"}, "window_start must include a time zone"),
        (
            {"window_start": "2024-03-03T01:00:00Z", "window_end": "tomorrow"},
            "variables.window_end must be an ISO 8601",
        ),
        ({"window_end": "2024-03-03T01:00:00Z"}, "window_end needs variables.window_start"),
        (
            {"window_start": "2024-03-03T03:00:00Z", "window_end": "2024-03-03T03:00:00Z"},
            "window_end must be after variables.window_start",
        ),
        (
            {"window_start": "2024-03-03T03:00:00Z", "window_end": "2024-03-03T01:00:00Z"},
            "window_end must be after variables.window_start",
        ),
    ],
)
def test_a_window_that_cannot_be_shown_is_refused(variables: dict[str, str], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        broadcasts._variables(variables)


# --- custom wording ------------------------------------------------------------------------


def test_custom_wording_renders_as_plain_text(context: dict[str, object]) -> None:
    source = "  Hi {{ first_name }}, {{ service }} <b>&</b> {{ region }} is slow.\n\n"
    text = render_custom(source, Channel.EMAIL, context)
    assert text == "Hi Amélie, broadband <b>&</b> Lyon is slow."


def test_custom_wording_may_use_loops_and_conditions(context: dict[str, object]) -> None:
    source = "{% for i in range(3) %}{{ i }}{% endfor %}{% if workaround %}!{% endif %}"
    assert render_custom(source, Channel.SMS, context) == "012"


def test_custom_wording_cannot_reach_python_internals(context: dict[str, object]) -> None:
    with pytest.raises(BadRequest, match=r"^template custom sms template: access to attribute"):
        render_custom("{{ ''.__class__.__mro__ }}", Channel.SMS, context)


def test_custom_wording_with_an_undefined_name_is_a_bad_request(
    context: dict[str, object],
) -> None:
    with pytest.raises(BadRequest, match="'surname' is undefined"):
        render_custom("Dear {{ surname }}", Channel.SOCIAL, context)


def test_custom_wording_with_a_syntax_error_is_a_bad_request(context: dict[str, object]) -> None:
    with pytest.raises(BadRequest, match=r"\(line 2\)$") as caught:
        render_custom("fine\n{% if %}", Channel.SMS, context)
    assert "Traceback" not in caught.value.message


def test_oversize_custom_source_is_refused(context: dict[str, object]) -> None:
    render_custom("x" * 4000, Channel.SMS, context)
    with pytest.raises(BadRequest, match="4001 characters; the limit is 4000"):
        render_custom("x" * 4001, Channel.SMS, context)


@pytest.mark.timeout(10)
def test_a_huge_range_is_refused_instead_of_hanging(context: dict[str, object]) -> None:
    with pytest.raises(BadRequest, match=r"range\(\) is limited"):
        render_custom("{% for i in range(10**9) %}x{% endfor %}", Channel.SMS, context)


@pytest.mark.timeout(10)
def test_oversize_custom_output_is_refused(context: dict[str, object]) -> None:
    source = "{% for i in range(1000) %}{{ first_name }}, {{ service }} is fine now. {% endfor %}"
    with pytest.raises(BadRequest, match="more than 20000 characters"):
        render_custom(source, Channel.SMS, context)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "source", ["{{ 10 ** 10000000 }}", "{{ 'x' * 10 ** 9 }}", "{{ [0] * 10 ** 9 }}"]
)
def test_arithmetic_bombs_are_refused(source: str, context: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        render_custom(source, Channel.SMS, context)


def test_runtime_errors_in_custom_wording_are_bad_requests(context: dict[str, object]) -> None:
    with pytest.raises(BadRequest, match="ZeroDivisionError"):
        render_custom("{{ 1 / 0 }}", Channel.SMS, context)


# --- cold start ----------------------------------------------------------------------------


def test_importing_notices_does_not_import_jinja2() -> None:
    probe = (
        "import sys, chalicelib.notices as n\n"
        "n.sms_segments('hi'); n.locale_chain('fr-CA'); n.available_kinds()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jinja2', 'markupsafe')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"
