"""Checking customer records before import, from the API (JSON rows) or a CSV upload.

Nothing here stores anything: the functions turn untrusted rows into `Customer` values,
or into errors precise enough for the person who made the file to fix it in one pass.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
import unicodedata
import zoneinfo
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from chalicelib.domain import Channel, Customer, Subscription
from chalicelib.errors import BadRequest

__all__ = [
    "CSV_COLUMNS",
    "MAX_BATCH",
    "FieldError",
    "InvalidCustomer",
    "RowError",
    "customer_to_csv_row",
    "read_csv",
    "validate_batch",
    "validate_customer",
]

MAX_BATCH = 500
MAX_SERVICES = 20
MAX_SEGMENTS = 10
# Only three channels exist, but a few repeats or typos are better reported one by one.
MAX_CHANNEL_ENTRIES = 10
MAX_NAME_LENGTH = 200
DEFAULT_LOCALE = "en"
DEFAULT_TIME_ZONE = "UTC"

CUSTOMER_FIELDS = (
    "customer_id",
    "name",
    "phone",
    "email",
    "x_handle",
    "channels",
    "locale",
    "time_zone",
    "services",
    "segments",
)
SERVICE_FIELDS = ("service", "region", "postal_code")

CSV_COLUMNS: tuple[str, ...] = CUSTOMER_FIELDS
REQUIRED_CSV_COLUMNS = ("customer_id", "name", "channels", "services")
CSV_LIST_SEPARATOR = ";"
CSV_SERVICE_SEPARATOR = ":"

CUSTOMER_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_X_HANDLE = re.compile(r"@?([A-Za-z0-9_]{1,15})")
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_SEGMENT = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_POSTAL_CODE = re.compile(r"[A-Z0-9 -]{1,12}")
_LOCALE = re.compile(r"([A-Za-z]{2})(?:[-_]([A-Za-z]{2}))?")
# Separators people type between digits; anything else (letters, extensions) is not E.164.
_PHONE_SHAPE = re.compile(r"\+[0-9][0-9 ().-]*")
_ZONE_SHAPE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+){0,2}")
# Keys ZoneInfo resolves from a system zoneinfo tree that are not IANA zones: host-dependent
# aliases, duplicate trees, and the placeholder zone whose abbreviation means "unknown".
_NOT_ZONES = frozenset({"localtime", "posixrules", "posix", "right", "Factory"})
# Control characters and line breaks would corrupt an SMS or a CSV export of the name.
_FORBIDDEN_IN_NAME = frozenset({"Cc", "Zl", "Zp"})

_CONTACT_FOR_CHANNEL = {Channel.SMS: "phone", Channel.EMAIL: "email", Channel.SOCIAL: "x_handle"}
_CHANNEL_NAMES = ", ".join(channel.value for channel in Channel)


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


@dataclass(frozen=True)
class RowError:
    row: int
    customer_id: str | None
    errors: tuple[FieldError, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "row": self.row,
            "customer_id": self.customer_id,
            "errors": [error.to_dict() for error in self.errors],
        }


class InvalidCustomer(Exception):
    def __init__(self, errors: Iterable[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(error.message for error in self.errors))


# --- one customer --------------------------------------------------------------------------


def validate_customer(raw: object) -> Customer:
    """The customer `raw` describes, or InvalidCustomer listing every problem in it."""
    if not isinstance(raw, Mapping):
        raise InvalidCustomer(
            [FieldError("customer", f"a customer must be an object, got {_kind(raw)}")]
        )
    errors: list[FieldError] = []
    _reject_unknown_keys(raw, CUSTOMER_FIELDS, "", errors)
    customer = Customer(
        customer_id=_customer_id(raw.get("customer_id"), errors),
        name=_name(raw.get("name"), errors),
        phone=_phone(raw.get("phone"), errors),
        email=_email(raw.get("email"), errors),
        x_handle=_x_handle(raw.get("x_handle"), errors),
        channels=_channels(raw.get("channels"), _contacts_given(raw), errors),
        locale=_locale(raw.get("locale"), errors),
        time_zone=_time_zone(raw.get("time_zone"), errors),
        services=_services(raw.get("services"), errors),
        segments=_segments(raw.get("segments"), errors),
    )
    if not (_given(raw.get("phone")) or _given(raw.get("email"))):
        errors.append(FieldError("phone", "a customer needs a phone or an email (or both)"))
    if errors:
        raise InvalidCustomer(errors)
    return customer


def _reject_unknown_keys(
    data: Mapping[object, object], allowed: Sequence[str], prefix: str, errors: list[FieldError]
) -> None:
    # Unknown keys are almost always typos ("phon", "postcode"); ignoring them would
    # silently drop the data the sender meant to give us.
    for key in data:
        if key in allowed:
            continue
        name = str(key)
        guess = difflib.get_close_matches(name, allowed, n=1)
        hint = f"did you mean {guess[0]!r}?" if guess else f"allowed: {', '.join(allowed)}"
        errors.append(FieldError(prefix + name, f"unknown field {prefix + name!r}; {hint}"))


def _customer_id(value: object, errors: list[FieldError]) -> str:
    text = _required_text(value, "customer_id", errors)
    if text is None:
        return ""
    if not CUSTOMER_ID.fullmatch(text):
        errors.append(
            FieldError(
                "customer_id",
                f"customer_id {_shown(text)} must be 1-64 characters of"
                " A-Z, a-z, 0-9, '_', '.' and '-'",
            )
        )
    return text


def _name(value: object, errors: list[FieldError]) -> str:
    text = _required_text(value, "name", errors)
    if text is None:
        return ""
    if len(text) > MAX_NAME_LENGTH:
        errors.append(
            FieldError(
                "name", f"name must be at most {MAX_NAME_LENGTH} characters, got {len(text)}"
            )
        )
    if any(unicodedata.category(char) in _FORBIDDEN_IN_NAME for char in text):
        errors.append(FieldError("name", "name must not contain control characters or line breaks"))
    return text


def _phone(value: object, errors: list[FieldError]) -> str | None:
    text = _optional_text(value, "phone", errors)
    if text is None:
        return None
    if not _PHONE_SHAPE.fullmatch(text):
        errors.append(
            FieldError(
                "phone", f"phone {_shown(text)} is not in E.164 form (+ country code and number)"
            )
        )
        return None
    normalized, problem = e164(text)
    if problem:
        errors.append(FieldError("phone", f"phone {_shown(text)} {problem}"))
    return normalized


def e164(text: str, region: str | None = None) -> tuple[str | None, str | None]:
    """(+E.164 form, None) for a real number, else (None, why not). A number without "+" is
    read in `region` (None: it must have its country code)."""
    # Imported here so a cold start that never validates a phone does not load the metadata.
    import phonenumbers

    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as error:
        if error.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            return None, "does not start with a known country code"
        return None, "is not a phone number"
    if not phonenumbers.is_valid_number(number):
        return None, "is not a valid number for its country code"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


def _email(value: object, errors: list[FieldError]) -> str | None:
    text = _optional_text(value, "email", errors)
    if text is None:
        return None
    # Imported here for the same cold-start reason as phonenumbers.
    from email_validator import EmailNotValidError, validate_email

    try:
        # Deliverability would mean a DNS lookup per row; a bad address shows up as a bounce.
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as error:
        errors.append(FieldError("email", f"email {_shown(text)} is not valid: {error}"))
        return None


def _x_handle(value: object, errors: list[FieldError]) -> str | None:
    text = _optional_text(value, "x_handle", errors)
    if text is None:
        return None
    match = _X_HANDLE.fullmatch(text)
    if not match:
        errors.append(
            FieldError(
                "x_handle",
                f"x_handle {_shown(text)} must be 1-15 letters, digits or '_',"
                " optionally after '@'",
            )
        )
        return None
    return match.group(1)


def _contacts_given(data: Mapping[object, object]) -> set[str]:
    # A contact that was given but is invalid already has its own error; saying it is
    # also "missing" for a channel would only add noise.
    return {field for field in _CONTACT_FOR_CHANNEL.values() if _given(data.get(field))}


def _channels(value: object, contacts: set[str], errors: list[FieldError]) -> tuple[Channel, ...]:
    items = _list(value, "channels", required=True, limit=MAX_CHANNEL_ENTRIES, errors=errors)
    chosen: list[Channel] = []
    for index, item in enumerate(items):
        field = f"channels[{index}]"
        text = _required_text(item, field, errors)
        if text is None:
            continue
        try:
            channel = Channel(text.lower())
        except ValueError:
            errors.append(
                FieldError(field, f"{field} {_shown(text)} is not one of: {_CHANNEL_NAMES}")
            )
            continue
        if channel in chosen:
            errors.append(FieldError(field, f"{field} repeats channel {channel.value!r}"))
            continue
        chosen.append(channel)
        contact = _CONTACT_FOR_CHANNEL[channel]
        if contact not in contacts:
            errors.append(
                FieldError(
                    contact, f"{contact} is required because channels include {channel.value}"
                )
            )
    return tuple(chosen)


def _locale(value: object, errors: list[FieldError]) -> str:
    text = _optional_text(value, "locale", errors)
    if text is None:
        return DEFAULT_LOCALE
    match = _LOCALE.fullmatch(text)
    if not match:
        errors.append(FieldError("locale", f"locale {_shown(text)} must look like 'en' or 'en-GB'"))
        return DEFAULT_LOCALE
    language, region = match.group(1), match.group(2)
    return language.lower() + (f"-{region.upper()}" if region else "")


def _time_zone(value: object, errors: list[FieldError]) -> str:
    text = _optional_text(value, "time_zone", errors)
    if text is None:
        return DEFAULT_TIME_ZONE
    if not _is_time_zone(text):
        errors.append(
            FieldError(
                "time_zone",
                f"time_zone {_shown(text)} is not an IANA time zone"
                " such as 'Europe/Berlin' or 'UTC'",
            )
        )
        return DEFAULT_TIME_ZONE
    return text


@lru_cache(maxsize=512)
def _is_time_zone(name: str) -> bool:
    # ZoneInfo caches the zones it finds but not the misses, and each miss searches every
    # TZPATH directory; a batch tends to repeat the same few names, good or bad.
    # The shape check comes first so paths such as "../etc" never reach the file system.
    if len(name) > 64 or not _ZONE_SHAPE.fullmatch(name) or name.split("/")[0] in _NOT_ZONES:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _services(value: object, errors: list[FieldError]) -> tuple[Subscription, ...]:
    items = _list(value, "services", required=True, limit=MAX_SERVICES, errors=errors)
    first_seen: dict[Subscription, int] = {}
    for index, item in enumerate(items):
        field = f"services[{index}]"
        subscription = _subscription(item, field, errors)
        if subscription is None:
            continue
        if subscription in first_seen:
            errors.append(
                FieldError(field, f"{field} repeats services[{first_seen[subscription]}]")
            )
            continue
        first_seen[subscription] = index
    return tuple(first_seen)


def _subscription(value: object, field: str, errors: list[FieldError]) -> Subscription | None:
    if not isinstance(value, Mapping):
        errors.append(
            FieldError(
                field,
                f"{field} must be service:region:postal_code, or an object with service, region"
                f" and postal_code; got {_described(value)}",
            )
        )
        return None
    _reject_unknown_keys(value, SERVICE_FIELDS, f"{field}.", errors)
    service = _slug(value.get("service"), f"{field}.service", errors)
    region = _slug(value.get("region"), f"{field}.region", errors)
    postal_code = _postal_code(value.get("postal_code"), f"{field}.postal_code", errors)
    if service is None or region is None or postal_code is None:
        return None
    return Subscription(service, region, postal_code)


def _slug(value: object, field: str, errors: list[FieldError]) -> str | None:
    text = _required_text(value, field, errors)
    if text is None:
        return None
    slug = text.lower()
    if not _SLUG.fullmatch(slug):
        errors.append(
            FieldError(
                field,
                f"{field} {_shown(text)} must be 1-40 characters of a-z, 0-9 and '-',"
                " starting with a letter or digit",
            )
        )
        return None
    return slug


def _postal_code(value: object, field: str, errors: list[FieldError]) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        # A number has already lost any leading zero ("01067" -> 1067), so it can't be trusted.
        errors.append(
            FieldError(
                field, f"{field} must be a string, got a number; quote it to keep leading zeros"
            )
        )
        return None
    text = _required_text(value, field, errors)
    if text is None:
        return None
    code = text.upper()
    if not _POSTAL_CODE.fullmatch(code):
        errors.append(
            FieldError(
                field, f"{field} {_shown(text)} must be 1-12 letters, digits, spaces or hyphens"
            )
        )
        return None
    return code


def _segments(value: object, errors: list[FieldError]) -> tuple[str, ...]:
    items = _list(value, "segments", required=False, limit=MAX_SEGMENTS, errors=errors)
    # A segment listed twice means the same thing as once, so keep one rather than refuse.
    segments: dict[str, None] = {}
    for index, item in enumerate(items):
        field = f"segments[{index}]"
        text = _required_text(item, field, errors)
        if text is None:
            continue
        segment = text.lower()
        if not _SEGMENT.fullmatch(segment):
            errors.append(
                FieldError(
                    field,
                    f"{field} {_shown(text)} must be 1-40 characters of a-z, 0-9, '_' and '-',"
                    " starting with a letter or digit",
                )
            )
            continue
        segments[segment] = None
    return tuple(segments)


# --- shared checks ---------------------------------------------------------------------------


def _given(value: object) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _required_text(value: object, field: str, errors: list[FieldError]) -> str | None:
    """`value` stripped, or None after recording why it is missing or not a string."""
    if not _given(value):
        errors.append(FieldError(field, f"{field} is required"))
        return None
    return _optional_text(value, field, errors)


def _optional_text(value: object, field: str, errors: list[FieldError]) -> str | None:
    """`value` stripped, None when absent or blank, or None after recording a wrong type."""
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append(FieldError(field, f"{field} must be a string, got {_kind(value)}"))
        return None
    return value.strip() or None


def _list(
    value: object, field: str, *, required: bool, limit: int, errors: list[FieldError]
) -> Sequence[object]:
    """The items of a list field, or () after recording why there are none to check."""
    if value is None:
        if required:
            errors.append(FieldError(field, f"{field} is required"))
        return ()
    if not isinstance(value, list | tuple):
        errors.append(FieldError(field, f"{field} must be a list, got {_kind(value)}"))
        return ()
    if required and not value:
        errors.append(FieldError(field, f"{field} must list at least one entry"))
    if len(value) > limit:
        # Checking each item of an oversized list would bury this one useful message.
        errors.append(
            FieldError(field, f"{field} may list at most {limit} entries, got {len(value)}")
        )
        return ()
    return value


def _kind(value: object) -> str:
    """What a JSON sender would call the type of `value`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _described(value: object) -> str:
    return _shown(value) if isinstance(value, str) else _kind(value)


def _shown(text: str, limit: int = 40) -> str:
    # Error reports are returned to the caller and may be logged; don't echo megabytes.
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


# --- batches ---------------------------------------------------------------------------------


def validate_batch(rows: Sequence[object]) -> tuple[list[Customer], list[RowError]]:
    """The valid customers and, for each bad row (numbered from 1), all of its problems."""
    if len(rows) > MAX_BATCH:
        raise BadRequest(
            f"a batch may hold at most {MAX_BATCH} customers, got {len(rows)};"
            " split it into smaller batches"
        )
    customers: list[Customer] = []
    failures: list[RowError] = []
    seen_ids: set[str] = set()
    for row, raw in enumerate(rows, start=1):
        result = _validate_row(row, raw, seen_ids)
        if isinstance(result, RowError):
            failures.append(result)
        else:
            customers.append(result)
    return customers, failures


def _validate_row(row: int, raw: object, seen_ids: set[str]) -> Customer | RowError:
    customer_id = _well_formed_id(raw)
    errors: list[FieldError] = []
    customer: Customer | None = None
    try:
        customer = validate_customer(raw)
    except InvalidCustomer as invalid:
        errors.extend(invalid.errors)
    if customer_id is not None:
        # Later rows lose even if the first one is invalid: importing "the second c-1"
        # would be a guess about which row the sender meant.
        if customer_id in seen_ids:
            errors.append(
                FieldError(
                    "customer_id",
                    f"customer_id {customer_id!r} appears more than once in this batch;"
                    " only its first row is considered",
                )
            )
        seen_ids.add(customer_id)
    if errors or customer is None:
        return RowError(row, customer_id, tuple(errors))
    return customer


def _well_formed_id(raw: object) -> str | None:
    # Only an id that could be valid is echoed back; a malformed one is quoted in its error.
    value = raw.get("customer_id") if isinstance(raw, Mapping) else None
    if not isinstance(value, str) or not CUSTOMER_ID.fullmatch(value.strip()):
        return None
    return value.strip()


# --- CSV -------------------------------------------------------------------------------------


def read_csv(text: str) -> list[tuple[int, dict[str, object]]]:
    """(file line number, JSON-shaped row) for each record of a CSV file with a header."""
    # Excel writes a byte order mark at the start of "CSV UTF-8" files.
    text = text.removeprefix("\ufeff")
    records = _csv_records(text)
    first = next(records, None)
    if first is None:
        raise BadRequest(f"the CSV file is empty; it needs a header line: {','.join(CSV_COLUMNS)}")
    header = _csv_header(first[1])
    return [(line, _csv_row(header, cells, line)) for line, cells in records]


def _csv_records(text: str) -> Iterator[tuple[int, list[str]]]:
    """Non-blank records with the line each starts on."""
    # strict mode turns an unclosed quote into an error, instead of one cell that swallows
    # the rest of the file.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    # line_num counts physical lines read so far, and a quoted cell may span several, so a
    # record starts on the line after the previous record ended.
    end = 0
    try:
        for cells in reader:
            start, end = end + 1, reader.line_num
            if any(cell.strip() for cell in cells):
                yield start, cells
    except csv.Error as error:
        raise BadRequest(f"CSV line {reader.line_num}: {error}") from None


def _csv_header(cells: list[str]) -> list[str]:
    names = [cell.strip().lower() for cell in cells]
    # Spreadsheets often save trailing empty columns; they carry nothing.
    while names and not names[-1]:
        names.pop()
    unknown = [name for name in names if name not in CSV_COLUMNS]
    repeated = sorted({name for name in names if names.count(name) > 1})
    missing = [name for name in REQUIRED_CSV_COLUMNS if name not in names]
    problems = []
    if unknown:
        problems.append(f"unknown column(s): {', '.join(map(repr, unknown))}")
    if repeated:
        problems.append(f"repeated column(s): {', '.join(map(repr, repeated))}")
    if missing:
        problems.append(f"missing required column(s): {', '.join(missing)}")
    if problems:
        raise BadRequest(
            f"CSV header: {'; '.join(problems)}. The columns are: {','.join(CSV_COLUMNS)}"
        )
    return names


def _csv_row(header: list[str], cells: list[str], line: int) -> dict[str, object]:
    if any(cell.strip() for cell in cells[len(header) :]):
        raise BadRequest(
            f"CSV line {line} has {len(cells)} cells but the header names {len(header)} columns;"
            " quote cells that contain commas"
        )
    # A short row is a row whose last cells are empty, as spreadsheets write them.
    return {
        column: _csv_value(column, cell)
        for column, cell in zip(header, cells, strict=False)
        if cell.strip()
    }


def _csv_value(column: str, cell: str) -> object:
    if column in ("channels", "segments"):
        return _csv_list(cell)
    if column == "services":
        return [_csv_service(entry) for entry in _csv_list(cell)]
    return cell


def _csv_list(cell: str) -> list[str]:
    return [part.strip() for part in cell.split(CSV_LIST_SEPARATOR) if part.strip()]


def _csv_service(entry: str) -> object:
    parts = entry.split(CSV_SERVICE_SEPARATOR)
    if len(parts) != len(SERVICE_FIELDS):
        # Left as text so validate_customer reports it with the expected form.
        return entry
    return dict(zip(SERVICE_FIELDS, parts, strict=True))


def customer_to_csv_row(customer: Customer) -> dict[str, str]:
    """The CSV cells for `customer`, readable back by read_csv; keys are CSV_COLUMNS."""
    join = CSV_LIST_SEPARATOR.join
    return {
        "customer_id": customer.customer_id,
        "name": customer.name,
        "phone": customer.phone or "",
        "email": customer.email or "",
        "x_handle": customer.x_handle or "",
        "channels": join(channel.value for channel in customer.channels),
        "locale": customer.locale,
        "time_zone": customer.time_zone,
        "services": join(
            CSV_SERVICE_SEPARATOR.join((s.service, s.region, s.postal_code))
            for s in customer.services
        ),
        "segments": join(customer.segments),
    }
