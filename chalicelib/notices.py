"""Turn an incident into the words a customer reads: jinja2 templates per kind, channel and locale.

Templates live in `templates/<kind>/<locale>/<part>`; the locale folder `default` is English.
Everything renders in a jinja2 sandbox because operators may supply their own wording.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from chalicelib.domain import Channel, Customer, Incident, Phase, zone
from chalicelib.errors import BadRequest

if TYPE_CHECKING:
    from jinja2 import Template
    from jinja2.sandbox import SandboxedEnvironment

# jinja2 is imported inside functions only: importing it costs tens of milliseconds of Lambda
# cold start, and many handlers that import this module never render anything.
_ENV: SandboxedEnvironment | None = None

MAX_CUSTOM_SOURCE_CHARS = 4000
MAX_CUSTOM_OUTPUT_CHARS = 20000
# A notice never needs long loops; a low cap keeps a careless custom template cheap.
MAX_TEMPLATE_RANGE = 1000
# Bounds `a ** b` by the size of the result, so `10 ** 10000000` cannot stall a worker.
MAX_POWER_BITS = 10_000

DEFAULT_LOCALE = "default"
OPT_OUT_SMS = "Reply STOP to opt out."

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_KIND_RE = re.compile(r"[a-z][a-z0-9_]*")
# language[-Script][-REGION], with `_` accepted because some systems store `fr_CA`.
_LOCALE_RE = re.compile(r"([a-z]{2,3})(?:-([a-z]{4}))?(?:-([a-z]{2}|[0-9]{3}))?", re.IGNORECASE)

_KIND_BY_PHASE = {
    Phase.INITIAL: "outage_initial",
    Phase.UPDATE: "outage_update",
    Phase.RESOLVED: "outage_resolved",
}

# (context key the part fills, template file) for each channel, in rendering order.
_PARTS: dict[Channel, tuple[tuple[str, str], ...]] = {
    Channel.SMS: (("text", "sms.txt.j2"),),
    Channel.EMAIL: (
        ("subject", "email_subject.txt.j2"),
        ("text", "email.txt.j2"),
        ("html", "email.html.j2"),
    ),
    Channel.SOCIAL: (("text", "social.txt.j2"),),
}

# GSM 03.38 default alphabet, in table order (0x00-0x7F). 0x1B is the escape to the
# extension table, not a character, so it is left out.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Characters reached through the escape, so each costs two septets.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True)
class RenderedNotice:
    channel: Channel
    text: str
    subject: str | None = None
    html: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "channel": self.channel.value,
            "text": self.text,
            "subject": self.subject,
            "html": self.html,
        }


@dataclass(frozen=True)
class SmsSegments:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int
    segments: int

    def to_dict(self) -> dict[str, str | int]:
        return asdict(self)


def sms_segments(text: str) -> SmsSegments:
    """How many billable SMS parts `text` needs, and in which encoding."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        costs = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
        return SmsSegments("GSM-7", sum(costs), _count_segments(costs, GSM7_SINGLE, GSM7_PART))
    # Characters outside the Basic Multilingual Plane (emoji) are surrogate pairs in UTF-16.
    costs = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return SmsSegments("UCS-2", sum(costs), _count_segments(costs, UCS2_SINGLE, UCS2_PART))


def _count_segments(costs: list[int], single: int, part: int) -> int:
    total = sum(costs)
    if total <= single:
        return 1 if total else 0
    # Handsets cannot rejoin an escape sequence or a surrogate pair split across parts, so
    # senders move the whole character to the next part; a plain ceil() would undercount.
    segments, used = 1, 0
    for cost in costs:
        if used + cost > part:
            segments, used = segments + 1, 0
        used += cost
    return segments


def kind_for_phase(phase: Phase) -> str:
    return _KIND_BY_PHASE[Phase(phase)]


def template_dirs() -> list[str]:
    """Where templates are looked up, first match wins.

    The deployment package carries a copy inside chalicelib; in the source tree they sit at
    the project root.
    """
    candidates = [
        os.path.join(_PACKAGE_DIR, "templates"),
        os.path.join(os.path.dirname(_PACKAGE_DIR), "templates"),
    ]
    return [path for path in candidates if os.path.isdir(path)]


def available_kinds() -> list[str]:
    kinds: set[str] = set()
    for root in template_dirs():
        for entry in os.listdir(root):
            # Folders starting with `_` hold shared layouts, not notices.
            if _KIND_RE.fullmatch(entry) and os.path.isdir(os.path.join(root, entry)):
                kinds.add(entry)
    return sorted(kinds)


def locale_chain(locale: str) -> list[str]:
    """The locale folders to try, most specific first: "fr-CA" → ["fr-CA", "fr", "default"]."""
    match = _LOCALE_RE.fullmatch(locale.strip().replace("_", "-"))
    if not match:
        return [DEFAULT_LOCALE]
    language, script, region = match.groups()
    base = language.lower()
    chain: list[str] = []
    if script:
        scripted = f"{base}-{script.title()}"
        if region:
            chain.append(f"{scripted}-{region.upper()}")
        chain.append(scripted)
    elif region:
        chain.append(f"{base}-{region.upper()}")
    chain.append(base)
    chain.append(DEFAULT_LOCALE)
    return chain


def notice_context(
    customer: Customer,
    incident: Incident,
    variables: Mapping[str, str],
    *,
    brand: str,
    unsubscribe_url: str | None = None,
) -> dict[str, object]:
    """The variables every notice template may use, for one customer and one incident."""
    service, region = _affected_service_and_region(customer, incident)
    return {
        "first_name": customer.first_name,
        "name": customer.name,
        "brand": brand,
        "title": incident.title,
        "status": incident.status.value,
        "service": service,
        "region": region,
        "workaround": variables.get("workaround", ""),
        "status_link": variables.get("status_link", ""),
        "next_update": _local_time(incident.next_update_due, customer.time_zone),
        "opt_out_sms": OPT_OUT_SMS,
        "unsubscribe_url": unsubscribe_url,
        **window_context(
            variables.get("window_start"),
            variables.get("window_end"),
            time_zone=customer.time_zone,
            locale=customer.locale,
        ),
    }


def _affected_service_and_region(customer: Customer, incident: Incident) -> tuple[str, str]:
    affected = [
        sub
        for sub in customer.services
        if sub.service in incident.services
        and (not incident.regions or sub.region in incident.regions)
    ]
    if affected:
        services = dict.fromkeys(sub.service for sub in affected)
        return ", ".join(services), affected[0].region
    if customer.services:
        return customer.services[0].service, customer.services[0].region
    # A customer picked by hand may hold no subscription; the incident still names the scope.
    return ", ".join(incident.services), ", ".join(incident.regions)


def _local_time(moment: str | None, time_zone: str) -> str:
    when = _parse_moment(moment)
    if when is None:
        return ""
    return when.astimezone(zone(time_zone)).strftime("%H:%M %Z")


def _parse_moment(moment: str | None) -> datetime | None:
    if not moment:
        return None
    try:
        when = datetime.fromisoformat(moment)
    except ValueError:
        # A malformed time should cost the notice one sentence, not the whole delivery.
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


# Month and weekday names for the window of a maintenance notice. Hand-written rather than
# from a locale library: the deployment package carries no CLDR data, and three languages
# do not justify it. The index is datetime.month - 1 and datetime.weekday().
_MONTHS: dict[str, tuple[str, ...]] = {
    "en": (
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
    ),
    "fr": (
        "janvier", "février", "mars", "avril", "mai", "juin",
        "juillet", "août", "septembre", "octobre", "novembre", "décembre",
    ),
    "es": (
        "enero", "febrero", "marzo", "abril", "mayo", "junio",
        "julio", "agosto", "septiembre", "octubre", "noviembre", "diciembre",
    ),
}  # fmt: skip
_WEEKDAYS: dict[str, tuple[str, ...]] = {
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "fr": ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"),
    "es": ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"),
}
# Long form for email; the day comes before the month in all three languages.
_LONG_DATE = {
    "en": "{weekday} {day} {month}",
    "fr": "{weekday} {day} {month}",
    "es": "{weekday} {day} de {month}",
}


def _date_language(locale: str) -> str:
    """The first language of the locale's fallback chain that has date names; English if
    none, which matches the template the `default` folder supplies."""
    for candidate in locale_chain(locale):
        if candidate in _MONTHS:
            return candidate
    return "en"


def _zone_label(when: datetime) -> str:
    name = when.tzname() or "UTC"
    # Zones without a common abbreviation report a bare offset ("-03"); alone it reads
    # like a typo, so say what it is an offset from.
    return f"UTC{name}" if name[:1] in "+-" else name


def _long_moment(when: datetime, language: str) -> str:
    date = _LONG_DATE[language].format(
        weekday=_WEEKDAYS[language][when.weekday()],
        day=when.day,
        month=_MONTHS[language][when.month - 1],
    )
    return f"{date}, {when:%H:%M} {_zone_label(when)}"


def _short_date(when: datetime, language: str) -> str:
    # Digits in French and Spanish: some month names ("août") fall outside GSM-7, and one
    # such character turns a whole SMS into UCS-2 at well under half the length.
    if language == "en":
        return f"{when.day} {_MONTHS['en'][when.month - 1][:3]}"
    return f"{when:%d/%m}"


def _short_range(start: datetime, end: datetime | None, language: str) -> str:
    """Compact and GSM-7 only: "3 Mar 02:00-04:00 CET", "03/03 23:00 - 04/03 01:00 CET"."""
    first = f"{_short_date(start, language)} {start:%H:%M}"
    start_zone = _zone_label(start)
    if end is None:
        return f"{first} {start_zone}"
    end_zone = _zone_label(end)
    same_day = end.date() == start.date()
    last = f"{end:%H:%M}" if same_day else f"{_short_date(end, language)} {end:%H:%M}"
    separator = "-" if same_day else " - "
    if end_zone == start_zone:
        return f"{first}{separator}{last} {end_zone}"
    # The clocks change inside the window: each end keeps its own zone label.
    return f"{first} {start_zone}{separator}{last} {end_zone}"


def window_context(
    window_start: str | None, window_end: str | None, *, time_zone: str, locale: str
) -> dict[str, str]:
    """A maintenance window as the customer reads it: in their zone and language.

    `window_start` and `window_end` (email) are each a full weekday, date, time and zone;
    `window` (SMS, social, subjects) is the compact range. All are empty without a start,
    so a template can fall back to other words.
    """
    start = _parse_moment(window_start)
    if start is None:
        return {"window_start": "", "window_end": "", "window": ""}
    where = zone(time_zone)
    start = start.astimezone(where)
    end = _parse_moment(window_end)
    end = end.astimezone(where) if end is not None and end > start else None
    language = _date_language(locale)
    return {
        "window_start": _long_moment(start, language),
        "window_end": _long_moment(end, language) if end is not None else "",
        "window": _short_range(start, end, language),
    }


def render_notice(
    kind: str, channel: Channel, locale: str, context: Mapping[str, object]
) -> RenderedNotice:
    """Render every part `channel` needs, each from the most specific locale that has it."""
    if not _KIND_RE.fullmatch(kind):
        raise _unknown_kind(kind)
    chain = locale_chain(locale)
    return _render_parts(Channel(channel), lambda part: _select(kind, part, chain), context)


def _render_parts(
    channel: Channel, select: Callable[[str], Template], context: Mapping[str, object]
) -> RenderedNotice:
    parts: dict[str, str] = {}
    for key, part in _PARTS[channel]:
        template = select(part)
        parts[key] = _render(template, str(template.name), context).strip()
    subject = parts.get("subject")
    return RenderedNotice(
        channel=channel,
        text=parts["text"],
        # Mail headers are one line; a stray newline in a subject template would break them.
        subject=" ".join(subject.split()) if subject is not None else None,
        html=parts.get("html"),
    )


def render_custom(source: str, channel: Channel, context: Mapping[str, object]) -> str:
    """Render operator-supplied wording in the same sandbox as the stock templates.

    Custom wording is plain text on every channel, so nothing is autoescaped.
    """
    if len(source) > MAX_CUSTOM_SOURCE_CHARS:
        raise BadRequest(
            f"custom template is {len(source)} characters; the limit is {MAX_CUSTOM_SOURCE_CHARS}"
        )
    name = f"custom {Channel(channel).value} template"
    template = _compile_custom(source, name)
    chunks: list[str] = []
    size = 0
    # Streaming lets a runaway template stop at the limit instead of filling memory first.
    for chunk in _generate(template, name, context):
        size += len(chunk)
        if size > MAX_CUSTOM_OUTPUT_CHARS:
            raise BadRequest(
                f"{name} renders more than {MAX_CUSTOM_OUTPUT_CHARS} characters; shorten it"
            )
        chunks.append(chunk)
    return "".join(chunks).strip()


@lru_cache(maxsize=64)
def _compile_custom(source: str, name: str) -> Template:
    # A broadcast renders the same custom source once per customer; compile it once.
    try:
        return _environment().from_string(source)
    except Exception as exc:
        raise _template_error(name, exc) from None


def render_under(
    folder: str, channel: Channel, locale: str, context: Mapping[str, object]
) -> RenderedNotice:
    """Render a notice that is not a broadcast kind (parcel notices, digests) from
    `templates/<folder>/<locale>/`, with the broadcast renderer's parts, sandbox, error
    wording and locale fallback, so every kind of notice behaves the same way."""
    from jinja2 import TemplateNotFound

    chain = locale_chain(locale)

    def select(part: str) -> Template:
        names = [f"{folder}/{loc}/{part}" for loc in chain]
        try:
            return _environment().select_template(names)
        except TemplateNotFound:
            raise BadRequest(
                f"template {folder}/{{{','.join(chain)}}}/{part}: no such template in any locale"
            ) from None
        except Exception as exc:
            raise _template_error(names[0], exc) from None

    return _render_parts(channel, select, context)


def _select(kind: str, part: str, chain: list[str]) -> Template:
    from jinja2 import TemplateNotFound

    names = [f"{kind}/{locale}/{part}" for locale in chain]
    try:
        return _environment().select_template(names)
    except TemplateNotFound:
        if kind not in available_kinds():
            raise _unknown_kind(kind) from None
        raise BadRequest(
            f"template {kind}/{{{','.join(chain)}}}/{part}: no such template in any locale"
        ) from None
    except Exception as exc:
        raise _template_error(names[0], exc) from None


def _render(template: Template, name: str, context: Mapping[str, object]) -> str:
    return "".join(_generate(template, name, context))


def _generate(template: Template, name: str, context: Mapping[str, object]) -> Iterator[str]:
    try:
        yield from template.generate(dict(context))
    except Exception as exc:
        # Template code is input from operators and translators: whatever it raises is a
        # mistake in that input, and the caller needs a message, not a stack trace.
        raise _template_error(name, exc) from None


def _unknown_kind(kind: str) -> BadRequest:
    return BadRequest(
        f"unknown notice kind {kind!r}; available: {', '.join(available_kinds()) or 'none'}"
    )


def _template_error(name: str, exc: Exception) -> BadRequest:
    from jinja2 import TemplateError, TemplateNotFound, TemplateSyntaxError

    if isinstance(exc, TemplateSyntaxError):
        # The broken file may be a layout or import rather than the template asked for.
        return BadRequest(f"template {exc.name or name}: {exc.message} (line {exc.lineno})")
    if isinstance(exc, TemplateNotFound):
        return BadRequest(f"template {name}: template {exc.name!r} not found")
    if isinstance(exc, TemplateError):
        return BadRequest(f"template {name}: {exc.message}")
    return BadRequest(f"template {name}: {type(exc).__name__}: {exc}")


def _environment() -> SandboxedEnvironment:
    global _ENV
    if _ENV is None:
        _ENV = _build_environment(template_dirs())
    return _ENV


def _build_environment(search_path: list[str]) -> SandboxedEnvironment:
    from jinja2 import FileSystemLoader, StrictUndefined
    from jinja2.exceptions import SecurityError
    from jinja2.runtime import Context
    from jinja2.sandbox import SandboxedEnvironment

    class NoticeEnvironment(SandboxedEnvironment):
        # The sandbox blocks attribute tricks but lets arithmetic build huge values; these
        # operators are the cheap ways to do that from a one-line template.
        intercepted_binops = frozenset({"**", "*"})

        def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
            if (
                operator == "**"
                and isinstance(left, int)
                and isinstance(right, int)
                and right > 0
                and left.bit_length() * right > MAX_POWER_BITS
            ):
                raise SecurityError("the result of ** is too large for a notice template")
            if operator == "*":
                for seq, count in ((left, right), (right, left)):
                    if (
                        isinstance(seq, str | list | tuple)
                        and isinstance(count, int)
                        and len(seq) * count > MAX_CUSTOM_OUTPUT_CHARS
                    ):
                        raise SecurityError("repeating a value that often is not allowed")
            return super().call_binop(context, operator, left, right)

    def capped_range(*args: int) -> range:
        numbers = range(*args)
        if len(numbers) > MAX_TEMPLATE_RANGE:
            raise SecurityError(f"range() is limited to {MAX_TEMPLATE_RANGE} items in templates")
        return numbers

    def autoescape(template_name: str | None) -> bool:
        # Only HTML needs escaping; escaping SMS or social text would show `&amp;` to people.
        return bool(template_name and template_name.endswith(".html.j2"))

    env = NoticeEnvironment(
        loader=FileSystemLoader(search_path),
        undefined=StrictUndefined,
        autoescape=autoescape,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
        # Packaged templates do not change while a Lambda runs; skip the per-render stat().
        auto_reload=False,
    )
    env.globals["range"] = capped_range
    return env
