"""End to end: `forewarn run` in a subprocess, driven by the `forewarn` CLI and plain HTTP.

One service runs for the whole module. The tests import their own customers into a
service and region nobody else takes ("fibre" in "harbour"), so every audience is exactly
them, and read what the embedded AWS API server delivered from moto's
`/moto-api/data.json`: SNS keeps each SMS, SES each raw email.

Phone numbers are in ranges set aside for fiction or documentation (UK 020 7946 0xxx,
North American 555-01xx, French 01 99 00 xx xx); addresses use example.com.
"""

from __future__ import annotations

import base64
import csv
import email
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import phonenumbers
import pytest

from chalicelib.customers import CSV_COLUMNS
from chalicelib.domain import COUNT_FIELDS

pytestmark = pytest.mark.e2e

FOREWARN = Path(sys.executable).parent / "forewarn"
HOST = "127.0.0.1"
START_TIMEOUT = 60
STOP_TIMEOUT = 30
CLI_TIMEOUT = 120
BRAND = "Forewarn Telecom"

TITLE = "Fibre cable cut near the harbour"
NEXT_UPDATE = "2030-01-01T10:00:00Z"
# '&' must reach SMS and plain text as is and the HTML part escaped.
WORKAROUND = "Use mobile data & restart your router after 18:00."
UPDATE_WORKAROUND = "Public wifi at the library is free until the fix."


# -- the people in the CSV files ------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    customer_id: str
    name: str
    phone: str | None
    email: str | None
    channels: tuple[str, ...]
    locale: str
    time_zone: str
    services: str
    x_handle: str | None = None
    # The local time of NEXT_UPDATE the notices should show this person.
    next_update: str = ""

    @property
    def first_name(self) -> str:
        return self.name.split()[0]

    @property
    def gets(self) -> str | None:
        """The channel an sms+email broadcast reaches this person on, if any."""
        contacts = {"sms": self.phone, "email": self.email}
        return next((c for c in self.channels if contacts.get(c)), None)

    @property
    def french(self) -> bool:
        return self.locale.startswith("fr")

    def csv_row(self) -> dict[str, str]:
        return {
            "customer_id": self.customer_id,
            "name": self.name,
            "phone": self.phone or "",
            "email": self.email or "",
            "x_handle": self.x_handle or "",
            "channels": ";".join(self.channels),
            "locale": self.locale,
            "time_zone": self.time_zone,
            "services": self.services,
        }


IMOGEN = Person(
    "e2e-imogen",
    "Imogen Clarke",
    "+442079460123",
    "imogen.clarke@example.com",
    ("sms", "email"),
    "en-GB",
    "Europe/London",
    # The lowest postal code in the harbour: the preview's sample customer.
    "fibre:harbour:H1 1AA",
    next_update="10:00 GMT",
)
AMELIE = Person(
    "e2e-amelie",
    "Amélie Fournier",
    "+33199001234",
    "amelie.fournier@example.com",
    ("email", "sms"),
    "fr",
    "Europe/Paris",
    "fibre:harbour:H1 2AB",
    next_update="11:00 CET",
)
NOAH = Person(
    "e2e-noah",
    "Noah Becker",
    "+14155550142",
    None,
    ("sms",),
    "en",
    "America/Los_Angeles",
    # Also a customer of a seeded service: the notice must name the affected one.
    "mobile:north:10115;fibre:harbour:H1 3AC",
    next_update="02:00 PST",
)
PRIYA = Person(
    "e2e-priya",
    "Priya Raman",
    None,
    "priya.raman@example.com",
    ("email",),
    "en",
    "UTC",
    "fibre:harbour:H2 1AD",
    next_update="10:00 UTC",
)
LEA = Person(
    "e2e-lea",
    "Léa Tremblay",
    "+14165550123",
    "lea.tremblay@example.com",
    ("sms", "email"),
    "fr-CA",
    "America/Toronto",
    "fibre:harbour:H2 2AE",
    next_update="05:00 EST",
)
# Same service, another region: never in the harbour's audience.
OMAR = Person(
    "e2e-omar",
    "Omar Haddad",
    "+442079460456",
    "omar.haddad@example.com",
    ("sms", "email"),
    "en-GB",
    "Europe/London",
    "fibre:uplands:U1 1AA",
)
# In the audience, but only reachable on social: counted as unreachable, sent nothing.
HUGO = Person(
    "e2e-hugo",
    "Hugo Moreau",
    None,
    "hugo.moreau@example.com",
    ("social",),
    "fr",
    "Europe/Paris",
    "fibre:harbour:H3 1AF",
    x_handle="hugo_e2e",
)
# Imported after the initial broadcast: updates must not reach them.
ZOE = Person(
    "e2e-zoe",
    "Zoe Whitfield",
    "+14155550199",
    "zoe.whitfield@example.com",
    ("email", "sms"),
    "en",
    "America/New_York",
    "fibre:harbour:H1 0AA",
)

GOOD = (IMOGEN, AMELIE, NOAH, PRIYA, LEA, OMAR, HUGO)
AUDIENCE = (IMOGEN, AMELIE, NOAH, PRIYA, LEA, HUGO)
SMS_PEOPLE = tuple(p for p in AUDIENCE if p.gets == "sms")
EMAIL_PEOPLE = tuple(p for p in AUDIENCE if p.gets == "email")
BAD_PHONE = "+44 20 7946"
BAD_EMAIL = "priya.raman.example.com"
BAD_PHONE_ROW = {
    "customer_id": "e2e-badphone",
    "name": "Short Number",
    "phone": BAD_PHONE,
    "channels": "sms",
    "services": "fibre:harbour:H1 4AA",
}
BAD_EMAIL_ROW = {
    "customer_id": "e2e-bademail",
    "name": "No At Sign",
    "email": BAD_EMAIL,
    "channels": "email",
    "services": "fibre:harbour:H1 5AA",
}
# CSV line (the header is line 1) -> row.
CSV_ROWS: dict[int, Mapping[str, str]] = {
    2: IMOGEN.csv_row(),
    3: AMELIE.csv_row(),
    4: BAD_PHONE_ROW,
    5: NOAH.csv_row(),
    6: PRIYA.csv_row(),
    7: BAD_EMAIL_ROW,
    8: LEA.csv_row(),
    9: OMAR.csv_row(),
    10: HUGO.csv_row(),
}


def write_csv(
    path: Path, rows: Sequence[Mapping[str, str]], columns: Sequence[str] = CSV_COLUMNS
) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


# -- the running service --------------------------------------------------------------------


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    workdir: Path
    state_file: Path
    api_url: str
    aws_url: str
    stdout_path: Path
    stderr_path: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def output(self) -> str:
        out = self.stdout_path.read_text(errors="replace")
        err = self.stderr_path.read_text(errors="replace")
        return (
            f"--- stdout of `forewarn run`\n{out}\n--- stderr (last 4000 characters)\n{err[-4000:]}"
        )


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def clean_env() -> dict[str, str]:
    # The CLI must take the URL and tokens from the state file, not from the caller's shell.
    return {k: v for k, v in os.environ.items() if not k.startswith("FOREWARN_")}


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/api/health", timeout=2) as response:
            return bool(response.status == 200 and json.loads(response.read())["status"] == "ok")
    except (OSError, ValueError, KeyError):
        return False


def wait_until_ready(service: Service) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        code = service.process.poll()
        if code is not None:
            pytest.fail(
                f"`forewarn run` exited with code {code} while starting\n{service.output()}"
            )
        if (
            service.state_file.exists()
            and healthy(service.api_url)
            and "Press Ctrl-C to stop." in service.stdout_path.read_text(errors="replace")
        ):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"`forewarn run` was not ready after {START_TIMEOUT} s\n{service.output()}")
        time.sleep(0.2)


def check_banner(service: Service, aws_port: int) -> None:
    banner = service.stdout_path.read_text()
    assert f"Forewarn is running at {service.api_url}\n" in banner
    match = re.search(r"local AWS API server: (http://\S+)", banner)
    assert match, banner
    assert match.group(1) == f"http://{HOST}:{aws_port}"
    shown = dict(re.findall(r"^ +(ops|social|admin) +Authorization: Bearer (\S+)$", banner, re.M))
    assert shown == service.tokens, banner
    assert set(shown) == {"ops", "social", "admin"}
    assert re.search(r"local state lives in memory only", banner, re.I), banner


def stop_cleanly(service: Service) -> None:
    """What Ctrl-C does in the terminal: SIGINT, then everything stops by itself."""
    process = service.process
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"`forewarn run` ignored SIGINT for {STOP_TIMEOUT} s\n{service.output()}")
    assert code == 0, f"`forewarn run` exited with {code} on SIGINT\n{service.output()}"
    out = service.stdout_path.read_text()
    assert "Stopped. All local state is gone." in out, service.output()
    assert not service.state_file.exists(), "the state file with the tokens was left behind"
    assert not healthy(service.api_url)
    err = service.stderr_path.read_text(errors="replace")
    # The traceback itself, wherever it is in a long log: the tail alone may not hold it.
    first = err.find("Traceback")
    assert first < 0, (
        f"`forewarn run` printed a traceback:\n{err[max(0, first - 2000) : first + 4000]}"
    )


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    if not FOREWARN.exists():
        pytest.fail(f"no forewarn script next to {sys.executable}; install the project")
    workdir = tmp_path_factory.mktemp("forewarn-e2e")
    state_file = workdir / "local.json"
    api_port, aws_port = free_ports(2)
    stdout_path, stderr_path = workdir / "run.stdout", workdir / "run.stderr"
    command = [
        str(FOREWARN),
        "--state-file",
        str(state_file),
        "run",
        "--port",
        str(api_port),
        "--aws-port",
        str(aws_port),
        "--customers",
        "40",
        # The demo outage happened before start, so the first scan (a minute in) finds it.
        "--demo-outage-after",
        "-420",
    ]
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=workdir,
            env=clean_env(),
            start_new_session=True,
        )
    running = Service(
        process=process,
        workdir=workdir,
        state_file=state_file,
        api_url=f"http://{HOST}:{api_port}",
        aws_url=f"http://{HOST}:{aws_port}",
        stdout_path=stdout_path,
        stderr_path=stderr_path,
    )
    try:
        wait_until_ready(running)
        state = json.loads(state_file.read_text())
        assert state["api_url"] == running.api_url
        running.tokens = dict(state["tokens"])
        check_banner(running, aws_port)
    except BaseException:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        raise
    yield running
    stop_cleanly(running)


# -- driving it -----------------------------------------------------------------------------


def forewarn(
    service: Service, *args: str, expect: int = 0, role: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would; check its exit code and that it printed no traceback."""
    options = ["--state-file", str(service.state_file)]
    if role:
        options += ["--role", role]
    result = subprocess.run(
        [str(FOREWARN), *options, *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        cwd=service.workdir,
        env=clean_env(),
        check=False,
    )
    shown = f"forewarn {' '.join(args)}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == expect, shown
    assert "Traceback" not in result.stdout + result.stderr, shown
    return result


@dataclass(frozen=True)
class Reply:
    status: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def call(
    service: Service,
    method: str,
    path: str,
    *,
    token: str | None,
    body: object = None,
    raw: bytes | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> Reply:
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(extra_headers or {})}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        service.api_url + path, data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Reply(response.status, response.read().decode())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.read().decode())


def ok(reply: Reply, status: int = 200) -> Any:
    assert reply.status == status, reply
    return reply.json()


def app_error(reply: Reply, status: int, code: str) -> str:
    """Assert the app's error shape, {"error": {"code", "message"}}; return the message."""
    assert reply.status == status, reply
    assert "Traceback" not in reply.text
    body = reply.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"code", "message"} <= set(error), body
    assert error["code"] == code, body
    assert isinstance(error["message"], str), body
    assert error["message"].strip(), body
    return str(error["message"])


# -- what the embedded AWS delivered --------------------------------------------------------


@dataclass(frozen=True)
class Sms:
    id: str
    phone: str
    text: str


@dataclass(frozen=True)
class Mail:
    id: str
    destinations: frozenset[str]
    to: str
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class Outbox:
    sms: tuple[Sms, ...]
    mail: tuple[Mail, ...]

    def since(self, before: Outbox) -> Outbox:
        old_sms, old_mail = {m.id for m in before.sms}, {m.id for m in before.mail}
        return Outbox(
            tuple(m for m in self.sms if m.id not in old_sms),
            tuple(m for m in self.mail if m.id not in old_mail),
        )

    def sms_to(self, person: Person) -> Sms:
        found = [m for m in self.sms if m.phone == person.phone]
        assert len(found) == 1, (person.customer_id, found)
        return found[0]

    def mail_to(self, person: Person) -> Mail:
        found = [m for m in self.mail if m.to == person.email]
        assert len(found) == 1, (person.customer_id, found)
        return found[0]

    def contacts(self) -> set[str]:
        return {m.phone for m in self.sms} | {m.to for m in self.mail}


def parse_mail(record: Mapping[str, Any]) -> Mail:
    message = email.message_from_string(record["raw_data"], policy=policy.default)
    assert isinstance(message, EmailMessage)
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    assert isinstance(plain, EmailMessage), message
    assert isinstance(html, EmailMessage), message
    return Mail(
        id=str(record["id"]),
        destinations=frozenset(record["destinations"]),
        to=str(message["To"]),
        # As a mail client shows it: a long subject is folded onto its own line, and
        # the email package keeps the folding space.
        subject=" ".join(str(message["Subject"]).split()),
        text=plain.get_content(),
        html=html.get_content(),
    )


def outbox(service: Service) -> Outbox:
    with urllib.request.urlopen(f"{service.aws_url}/moto-api/data.json", timeout=30) as response:
        data = json.loads(response.read())
    return Outbox(
        tuple(
            Sms(str(m["message_id"]), str(m["phone_number"]), str(m["message"]))
            for m in data["sns"]["SMS"]
        ),
        tuple(parse_mail(m) for m in data["ses"]["RawMessage"]),
    )


def assert_reached_exactly(
    delivered: Outbox, sms: Sequence[Person], mail: Sequence[Person]
) -> None:
    """One SMS per SMS person, one email per email person, nothing for anyone else."""
    assert Counter(m.phone for m in delivered.sms) == Counter(p.phone for p in sms)
    assert Counter(m.to for m in delivered.mail) == Counter(p.email for p in mail)
    for message in delivered.mail:
        # SES got one destination per message: the customer's own address.
        assert message.destinations == {message.to}, message


# -- CLI output -----------------------------------------------------------------------------

_STATUS_ROW = re.compile(r"^ +(sms|email)((?: +\d+){6})$", re.M)


NOTHING = dict.fromkeys(COUNT_FIELDS, 0)


def status_table(output: str) -> dict[str, dict[str, int]]:
    return {
        channel: dict(zip(COUNT_FIELDS, map(int, numbers.split()), strict=True))
        for channel, numbers in _STATUS_ROW.findall(output)
    }


def recipients(preview_output: str) -> dict[str, int]:
    found = dict(
        re.findall(r"^(Recipients|  sms|  email|  unreachable):? +(\d+)$", preview_output, re.M)
    )
    return {key.strip().lower(): int(value) for key, value in found.items()}


def created_id(output: str, kind: str) -> str:
    match = re.search(rf"^{kind} ((?:inc|bc)_[0-9a-f]+)", output, re.M)
    assert match, output
    return match.group(1)


def new_incident(service: Service, title: str, region: str = "harbour") -> str:
    result = forewarn(
        service,
        "incidents",
        "create",
        "--title",
        title,
        "--service",
        "fibre",
        "--region",
        region,
        "--next-update",
        NEXT_UPDATE,
    )
    assert f"(investigating): {title}" in result.stdout
    return created_id(result.stdout, "incident")


def send_and_wait(service: Service, broadcast_id: str) -> subprocess.CompletedProcess[str]:
    result = forewarn(service, "broadcast", "send", broadcast_id)
    assert f"broadcast {broadcast_id} is sending" in result.stdout
    assert "delivering" in result.stdout  # the progress bar's label
    assert re.search(rf"^broadcast {broadcast_id}: sent ", result.stdout, re.M), result.stdout
    # Every customer accounted for: exit 0, nothing waiting, no gap.
    reconciled = forewarn(service, "broadcast", "reconcile", broadcast_id).stdout
    assert re.search(
        r"audience (\d+) = sent \d+ \+ in a digest 0 \+ suppressed 0 \+ failed 0 \+ "
        r"deferred 0 \+ waiting 0",
        reconciled,
    )
    assert "gap:" not in reconciled
    return result


# -- 1. importing customers -----------------------------------------------------------------


@dataclass(frozen=True)
class Imported:
    csv_file: Path
    first: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def imported(service: Service) -> Imported:
    csv_file = write_csv(
        service.workdir / "harbour.csv", [CSV_ROWS[line] for line in sorted(CSV_ROWS)]
    )
    # Two bad rows: exit code 1, but every good row is written.
    return Imported(csv_file, forewarn(service, "customers", "import", str(csv_file), expect=1))


def test_fixture_numbers_are_valid_and_the_bad_one_is_not() -> None:
    for person in (*GOOD, ZOE):
        if person.phone:
            assert phonenumbers.is_valid_number(phonenumbers.parse(person.phone)), person
    assert not phonenumbers.is_valid_number(phonenumbers.parse(BAD_PHONE))
    assert len({p.phone for p in (*GOOD, ZOE) if p.phone}) == 6
    assert len({p.email for p in (*GOOD, ZOE)}) == len(GOOD) + 1


def test_import_names_bad_rows_by_line_and_writes_the_good_ones(
    service: Service, imported: Imported
) -> None:
    result = imported.first
    assert result.stdout.strip() == "7 created, 0 updated, 0 unchanged, 2 rejected"
    problems = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    assert len(problems) == 2, result.stderr
    assert re.fullmatch(
        r"line 4 \(e2e-badphone\): phone: phone '\+44 20 7946' is not a valid number.*", problems[0]
    ), problems
    assert re.fullmatch(
        rf"line 7 \(e2e-bademail\): email: email '{re.escape(BAD_EMAIL)}' is not valid.*",
        problems[1],
    ), problems

    ops = service.tokens["ops"]
    for person in GOOD:
        stored = ok(call(service, "GET", f"/api/customers/{person.customer_id}", token=ops))
        assert stored["name"] == person.name
        assert stored["phone"] == person.phone
        assert stored["email"] == person.email
        assert stored["channels"] == list(person.channels)
        assert stored["locale"] == person.locale
    for bad in ("e2e-badphone", "e2e-bademail"):
        app_error(call(service, "GET", f"/api/customers/{bad}", token=ops), 404, "not_found")


def test_importing_the_same_file_again_changes_nothing(
    service: Service, imported: Imported
) -> None:
    again = forewarn(service, "customers", "import", str(imported.csv_file), expect=1)
    assert again.stdout.strip() == "0 created, 0 updated, 7 unchanged, 2 rejected"
    assert again.stderr == imported.first.stderr


# -- 2. the initial broadcast ---------------------------------------------------------------


@dataclass(frozen=True)
class Initial:
    incident_id: str
    broadcast_id: str
    preview: str
    preview_french: str
    approve: str
    send: str
    status: str
    delivered: Outbox


@pytest.fixture(scope="module")
def initial(service: Service, imported: Imported) -> Initial:
    incident_id = new_incident(service, TITLE)
    created = forewarn(
        service,
        "broadcast",
        "create",
        "--incident",
        incident_id,
        "--channel",
        "sms",
        "--channel",
        "email",
        "--workaround",
        WORKAROUND,
    )
    broadcast_id = created_id(created.stdout, "broadcast")
    assert "drafted (initial, outage_initial)" in created.stdout
    preview = forewarn(service, "broadcast", "preview", broadcast_id).stdout
    preview_french = forewarn(
        service, "broadcast", "preview", broadcast_id, "--customer", AMELIE.customer_id
    ).stdout
    approve = forewarn(service, "broadcast", "approve", broadcast_id).stdout
    before = outbox(service)
    send = send_and_wait(service, broadcast_id).stdout
    delivered = outbox(service).since(before)
    status = forewarn(service, "broadcast", "status", broadcast_id).stdout
    return Initial(
        incident_id, broadcast_id, preview, preview_french, approve, send, status, delivered
    )


def test_preview_counts_recipients_per_preferred_channel(initial: Initial) -> None:
    assert recipients(initial.preview) == {
        "recipients": len(AUDIENCE),
        "sms": len(SMS_PEOPLE),
        "email": len(EMAIL_PEOPLE),
        "unreachable": 1,  # Hugo only takes social
    }
    assert f"Rendered for {IMOGEN.customer_id} (en-GB):" in initial.preview
    assert re.search(r"^\(GSM-7, \d+ units, [12] segment\(s\)\)$", initial.preview, re.M)
    assert f"Subject: {BRAND}: fibre disruption in harbour" in initial.preview
    assert f"Meanwhile: {WORKAROUND}" in initial.preview
    assert "characters, fits)" in initial.preview  # the social post

    assert f"Rendered for {AMELIE.customer_id} (fr):" in initial.preview_french
    assert f"Subject: {BRAND} : perturbation du service fibre (harbour)" in initial.preview_french
    assert "Bonjour Amélie," in initial.preview_french


def test_send_reports_every_notice_sent(initial: Initial) -> None:
    assert f"broadcast {initial.broadcast_id} approved by olivia.ops" in initial.approve
    expected = {
        "sms": {**NOTHING, "planned": len(SMS_PEOPLE), "sent": len(SMS_PEOPLE)},
        "email": {**NOTHING, "planned": len(EMAIL_PEOPLE), "sent": len(EMAIL_PEOPLE)},
    }
    assert status_table(initial.send) == expected
    assert status_table(initial.status) == expected
    assert f"broadcast {initial.broadcast_id}: sent (initial for incident" in initial.status
    assert "unreachable (no contact for the offered channels): 1" in initial.status


def test_initial_notices_reach_exactly_the_audience_in_their_language(initial: Initial) -> None:
    delivered = initial.delivered
    assert_reached_exactly(delivered, SMS_PEOPLE, EMAIL_PEOPLE)
    assert AMELIE.phone not in {m.phone for m in delivered.sms}  # she prefers email
    assert not {OMAR.phone, OMAR.email, HUGO.email} & delivered.contacts()

    for person in SMS_PEOPLE:
        text = delivered.sms_to(person).text
        assert WORKAROUND in text, text
        if person.french:
            assert text.startswith(f"{BRAND}: incident fibre (harbour), nous y travaillons."), text
            assert f"En attendant : {WORKAROUND}" in text
            assert f"Prochain point à {person.next_update}." in text
            assert text.endswith("Répondez STOP pour vous désabonner.")
        else:
            assert text.startswith(f"{BRAND}: we know fibre in harbour is down"), text
            assert f"Next update by {person.next_update}." in text
            assert text.endswith("Reply STOP to opt out.")

    for person in EMAIL_PEOPLE:
        mail = delivered.mail_to(person)
        if person.french:
            assert mail.subject == f"{BRAND} : perturbation du service fibre (harbour)"
            assert mail.text.startswith(f"Bonjour {person.first_name},\n")
            assert "le service fibre est perturbé dans la zone harbour" in mail.text
            assert f"Ce qui se passe : {TITLE}" in mail.text
            assert f"En attendant, voici ce que vous pouvez faire : {WORKAROUND}" in mail.text
            assert f"un nouveau point d'ici {person.next_update}." in mail.text
            assert f"L'équipe {BRAND}" in mail.text
            assert '<html lang="fr">' in mail.html
        else:
            assert mail.subject == f"{BRAND}: fibre disruption in harbour"
            assert mail.text.startswith(f"Hello {person.first_name},\n")
            assert f"What's happening: {TITLE}" in mail.text
            assert f"What you can do in the meantime: {WORKAROUND}" in mail.text
            assert f"We'll send you an update by {person.next_update}." in mail.text
            assert '<html lang="en">' in mail.html
        assert (
            f"Bonjour {person.first_name}" in mail.html or f"Hello {person.first_name}" in mail.html
        )
        assert WORKAROUND.replace("&", "&amp;") in mail.html
        assert WORKAROUND not in mail.html


# -- 3. update and all-clear ----------------------------------------------------------------


def test_update_and_all_clear_reach_the_frozen_audience_only(
    service: Service, initial: Initial
) -> None:
    # Someone new joins the harbour after the initial notice went out.
    late_csv = write_csv(service.workdir / "late.csv", [ZOE.csv_row()])
    result = forewarn(service, "customers", "import", str(late_csv))
    assert result.stdout.strip() == "1 created, 0 updated, 0 unchanged, 0 rejected"

    phases = {
        "update": ("identified", "outage_update"),
        "resolved": ("resolved", "outage_resolved"),
    }
    delivered: dict[str, Outbox] = {}
    for phase, (incident_status, template) in phases.items():
        moved = forewarn(
            service, "incidents", "update", initial.incident_id, "--status", incident_status
        )
        assert f"incident {initial.incident_id} is {incident_status}" in moved.stdout
        options = ["--workaround", UPDATE_WORKAROUND] if phase == "update" else []
        created = forewarn(
            service,
            "broadcast",
            "create",
            "--incident",
            initial.incident_id,
            "--phase",
            phase,
            "--channel",
            "sms",
            "--channel",
            "email",
            *options,
        )
        assert f"drafted ({phase}, {template})" in created.stdout
        broadcast_id = created_id(created.stdout, "broadcast")
        preview = forewarn(service, "broadcast", "preview", broadcast_id).stdout
        assert recipients(preview) == recipients(initial.preview), preview
        forewarn(service, "broadcast", "approve", broadcast_id)
        before = outbox(service)
        sent = send_and_wait(service, broadcast_id)
        delivered[phase] = outbox(service).since(before)
        assert status_table(sent.stdout) == status_table(initial.send)

    for phase, notices in delivered.items():
        assert_reached_exactly(notices, SMS_PEOPLE, EMAIL_PEOPLE)
        assert not {ZOE.phone, ZOE.email} & notices.contacts(), phase

    update, resolved = delivered["update"], delivered["resolved"]
    for person in SMS_PEOPLE:
        text = update.sms_to(person).text
        assert UPDATE_WORKAROUND in text
        if person.french:
            assert "point sur fibre (harbour): réparation en cours." in text, text
        else:
            assert "update on fibre in harbour: cause found, fix under way." in text, text
        text = resolved.sms_to(person).text
        assert "fonctionne de nouveau" in text if person.french else "is back to normal" in text
    for person in EMAIL_PEOPLE:
        update_mail, resolved_mail = update.mail_to(person), resolved.mail_to(person)
        if person.french:
            assert (
                update_mail.subject
                == f"{BRAND} : point sur la perturbation du service fibre (harbour)"
            )
            assert resolved_mail.subject == f"{BRAND} : le service fibre est rétabli (harbour)"
            assert resolved_mail.text.startswith(f"Bonjour {person.first_name},\n")
        else:
            assert update_mail.subject == f"{BRAND} update: fibre disruption in harbour"
            assert resolved_mail.subject == f"{BRAND}: fibre in harbour is back to normal"
            assert resolved_mail.text.startswith(f"Hello {person.first_name},\n")

    # Over the whole run, each person heard once per phase and Zoe never did.
    everything = outbox(service)
    assert not {ZOE.phone, ZOE.email} & everything.contacts()
    listed = ok(
        call(
            service,
            "GET",
            f"/api/incidents/{initial.incident_id}/broadcasts",
            token=service.tokens["ops"],
        )
    )
    assert [(b["phase"], b["status"]) for b in listed["broadcasts"]] == [
        ("initial", "sent"),
        ("update", "sent"),
        ("resolved", "sent"),
    ]


# -- 4. bad input ---------------------------------------------------------------------------


def draft(service: Service, incident_id: str) -> str:
    body = {"incident_id": incident_id, "channels": ["sms", "email"]}
    reply = call(service, "POST", "/api/broadcasts", token=service.tokens["ops"], body=body)
    return str(ok(reply, 201)["broadcast_id"])


@pytest.fixture(scope="module")
def quiet_incident(service: Service) -> str:
    """An incident nobody is subscribed to, for poking at errors."""
    body = {"title": "Error handling drill", "services": ["fibre"], "regions": ["nowhere"]}
    reply = call(service, "POST", "/api/incidents", token=service.tokens["ops"], body=body)
    return str(ok(reply, 201)["incident_id"])


def test_malformed_requests_get_a_clear_400(service: Service, quiet_incident: str) -> None:
    ops = service.tokens["ops"]

    def post(path: str, **kwargs: Any) -> Reply:
        return call(service, "POST", path, token=ops, **kwargs)

    message = app_error(post("/api/incidents", raw=b'{"title": "x", '), 400, "bad_request")
    assert "not valid JSON" in message
    app_error(post("/api/incidents", raw=b"\xff\xfe"), 400, "bad_request")
    app_error(post("/api/incidents", raw=b""), 400, "bad_request")
    app_error(post("/api/incidents", body=["a", "list"]), 400, "bad_request")
    message = app_error(
        post("/api/incidents", body={"title": "x", "services": ["fibre"], "colour": "red"}),
        400,
        "bad_request",
    )
    assert "colour" in message
    message = app_error(
        post("/api/broadcasts", body={"incident_id": quiet_incident, "urgent": True}),
        400,
        "bad_request",
    )
    assert "urgent" in message
    app_error(
        post(
            "/api/incidents", body={"title": "x", "services": ["fibre"], "next_update_due": "soon"}
        ),
        400,
        "bad_request",
    )
    app_error(post("/api/customers", body={"customers": "all of them"}), 400, "bad_request")
    rejected = post("/api/customers", body={"customers": [{"customer_id": "e2e-empty"}]})
    app_error(rejected, 422, "unprocessable")
    assert rejected.json()["error"]["details"]["rejected"][0]["row"] == 1

    # Updates go to the frozen audience of the initial broadcast; they cannot name their own.
    message = app_error(
        post(
            "/api/broadcasts",
            body={
                "incident_id": quiet_incident,
                "phase": "update",
                "audience": {"services": ["tv"]},
            },
        ),
        400,
        "bad_request",
    )
    assert "audience" in message


def test_unknown_ids_get_404(service: Service) -> None:
    ops = service.tokens["ops"]
    app_error(
        call(service, "GET", "/api/incidents/inc_0000000000000000", token=ops), 404, "not_found"
    )
    app_error(
        call(service, "POST", "/api/broadcasts", token=ops, body={"incident_id": "inc_nope"}),
        404,
        "not_found",
    )
    app_error(call(service, "GET", "/api/broadcasts/bc_nope", token=ops), 404, "not_found")
    app_error(
        call(service, "POST", "/api/broadcasts/bc_nope/approve", token=ops, body={}),
        404,
        "not_found",
    )


def test_out_of_order_steps_get_409(service: Service, quiet_incident: str) -> None:
    ops = service.tokens["ops"]
    first = draft(service, quiet_incident)
    ok(call(service, "POST", f"/api/broadcasts/{first}/approve", token=ops, body={}))
    message = app_error(
        call(service, "POST", f"/api/broadcasts/{first}/approve", token=ops, body={}),
        409,
        "conflict",
    )
    assert "only a draft can be approved" in message
    # One initial broadcast per incident.
    app_error(
        call(service, "POST", "/api/broadcasts", token=ops, body={"incident_id": quiet_incident}),
        409,
        "conflict",
    )

    other_incident = ok(
        call(
            service,
            "POST",
            "/api/incidents",
            token=ops,
            body={"title": "Another drill", "services": ["fibre"], "regions": ["nowhere"]},
        ),
        201,
    )["incident_id"]
    unapproved = draft(service, other_incident)
    message = app_error(
        call(service, "POST", f"/api/broadcasts/{unapproved}/send", token=ops, body={}),
        409,
        "conflict",
    )
    assert "approve it before sending" in message
    assert ok(call(service, "GET", f"/api/broadcasts/{unapproved}", token=ops))["status"] == "draft"


def forged(token: str, **claims: str) -> str:
    """`token` with its claims changed and the original signature kept."""
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(claims)
    encoded = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{encoded}.{signature}"


def test_wrong_role_and_bad_tokens_are_refused(service: Service, quiet_incident: str) -> None:
    social, ops = service.tokens["social"], service.tokens["ops"]
    incident = {"title": "x", "services": ["fibre"]}
    # social may read incidents but not open one or touch broadcasts.
    assert ok(call(service, "GET", f"/api/incidents/{quiet_incident}", token=social))
    for method, path in (
        ("POST", "/api/incidents"),
        ("POST", "/api/broadcasts"),
        ("POST", "/api/customers"),
        ("GET", "/api/customers/e2e-imogen"),
    ):
        reply = call(
            service, method, path, token=social, body=incident if method == "POST" else None
        )
        assert reply.status == 403, (method, path, reply)
        assert "Traceback" not in reply.text

    for token in (None, "", "garbage", forged(ops, role="admin"), forged(social, role="ops")):
        reply = call(service, "POST", "/api/incidents", token=token, body=incident)
        assert reply.status in (401, 403), (token, reply)
        assert "Traceback" not in reply.text
        assert isinstance(reply.json(), dict)
    # Health is public; whoami says who the token belongs to.
    assert ok(call(service, "GET", "/api/whoami", token=social)) == {
        "subject": "sam.social",
        "role": "social",
    }


def test_cli_reports_errors_in_one_line(service: Service, quiet_incident: str) -> None:
    result = forewarn(
        service, "broadcast", "create", "--incident", "inc_0000000000000000", expect=1
    )
    assert result.stderr.strip() == "error: no incident inc_0000000000000000"

    approved = draft(service, new_incident(service, "CLI error drill", region="nowhere"))
    forewarn(service, "broadcast", "approve", approved)
    result = forewarn(service, "broadcast", "approve", approved, expect=1)
    assert result.stderr.strip() == "error: broadcast is approved; only a draft can be approved"

    result = forewarn(
        service,
        "incidents",
        "create",
        "--title",
        "x",
        "--service",
        "fibre",
        role="social",
        expect=1,
    )
    assert result.stderr.startswith("error: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_demo_outage_shows_as_an_emerging_issue_with_flagged_posts(service: Service) -> None:
    deadline = time.monotonic() + 180
    issues: list[dict[str, Any]] = []
    social = service.tokens["social"]
    while time.monotonic() < deadline and not issues:
        issues = ok(call(service, "GET", "/api/emerging", token=social))["issues"]
        if not issues:
            time.sleep(3)
    assert issues, "no emerging issue 3 minutes after start\n" + service.output()
    issue = issues[0]
    assert issue["topic"] == "forewarn-telecom"
    assert issue["region"] == "south"
    assert issue["posts"] >= 5
    flags = ok(call(service, "GET", f"/api/flags?issue={issue['issue_id']}", token=social))
    assert flags["flags"]


RETURNS_TOPIC = "arn:aws:sns:us-east-1:123456789012:forewarn-dev-returns"


def test_a_delivered_return_is_told_to_the_customer_and_to_billing_once(
    service: Service,
) -> None:
    import boto3

    from chalicelib.webhooks import EASYPOST_HEADER, easypost_key

    phone, mail = "+14155550987", "returner@example.com"
    customer = {
        "customer_id": "c-ret-1",
        "name": "Rita Returner",
        "phone": phone,
        "email": mail,
        "channels": ["sms", "email"],
        "locale": "en",
        "time_zone": "America/Chicago",
        "services": [{"service": "mobile", "region": "south", "postal_code": "75201"}],
    }
    ops = service.tokens["ops"]
    ok(call(service, "POST", "/api/customers", token=ops, body={"customers": [customer]}))
    tracking = "9400111899223197420001"
    rows = [
        {
            "tracking_code": tracking,
            "carrier": "USPS",
            "customer_id": "c-ret-1",
            "order_id": "ord-500",
            "direction": "return",
            "promised_date": "",
        }
    ]
    shipments_csv = write_csv(service.workdir / "ret.csv", rows, columns=list(rows[0]))
    forewarn(service, "shipments", "import", str(shipments_csv))

    sqs = boto3.client("sqs", endpoint_url=service.aws_url, region_name="us-east-1")
    sns = boto3.client("sns", endpoint_url=service.aws_url, region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName="billing-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=RETURNS_TOPIC, Protocol="sqs", Endpoint=queue_arn)

    fixture = Path(__file__).parent / "fixtures" / "shipments"
    event = json.loads((fixture / "easypost_tracker_updated_delivered.json").read_text())
    event["result"]["tracking_code"] = tracking
    raw = json.dumps(event).encode()
    secret = json.loads(service.state_file.read_text())["webhook_secrets"]["easypost"]
    digest = hmac.new(easypost_key(secret), raw, hashlib.sha256).hexdigest()
    signed = {EASYPOST_HEADER.lower(): f"hmac-sha256-hex={digest}"}
    forged = {EASYPOST_HEADER: "hmac-sha256-hex=" + "0" * 64}

    def deliver(headers: dict[str, str]) -> Reply:
        return call(
            service, "POST", "/webhooks/easypost", token=None, raw=raw, extra_headers=headers
        )

    assert deliver(forged).status == 401
    assert ok(deliver(signed))["status"] == "applied"
    assert ok(deliver(signed))["status"] == "duplicate"

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sms = [m for m in outbox(service).sms if m.phone == phone]
        if sms:
            break
        time.sleep(1)
    assert len(sms) == 1, outbox(service)
    assert "return" in sms[0].text.lower()
    assert "ord-500" in sms[0].text
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=5)
    bodies = [json.loads(json.loads(m["Body"])["Message"]) for m in messages.get("Messages", [])]
    assert [b["type"] for b in bodies] == ["return.received"]
    assert bodies[0]["order_id"] == "ord-500"
    assert bodies[0]["tracking_code"] == tracking
