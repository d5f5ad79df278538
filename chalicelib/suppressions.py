"""Who must not be sent to: numbers that texted STOP, addresses that bounced or complained.

Feedback arrives on one SQS queue, subscribed to two SNS topics: the two-way SMS topic (an
inbound text, `originationNumber` and `messageBody`) and SES's bounce and complaint topic
(`notificationType`). A suppression is one item of the `suppressions` table keyed
`<channel>#<address>`; the delivery worker reads them per batch and settles a suppressed
recipient as `suppressed`, counted on the broadcast, never silently dropped.

Keywords are the carriers' and AWS's: STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT opt out;
START, UNSTOP, YES opt back in; HELP answers. A confirmation goes out once per change (a
second STOP from a number already opted out answers nothing), and never to a number that
has just opted out of anything but that confirmation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from chalicelib import channels, queues
from chalicelib.broadcasts import Services
from chalicelib.domain import Channel, iso, utcnow
from chalicelib.store import Tables, to_dynamo

log = logging.getLogger(__name__)

OPT_OUT = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN = frozenset({"START", "UNSTOP", "YES"})
HELP = frozenset({"HELP", "INFO"})


def key(channel: Channel, address: str) -> str:
    return f"{channel.value}#{address.strip().lower() if channel is Channel.EMAIL else address}"


class Suppressions(Tables):
    def suppress(self, channel: Channel, address: str, *, reason: str) -> bool:
        """True when the address was not suppressed before."""
        return self._write_if(
            "put_item",
            TableName=self.names.suppressions,
            Item=to_dynamo(
                {"address": key(channel, address), "reason": reason, "since": iso(utcnow())}
            ),
            ConditionExpression="attribute_not_exists(address)",
        )

    def lift(self, channel: Channel, address: str) -> bool:
        """True when the address was suppressed."""
        return self._write_if(
            "delete_item",
            TableName=self.names.suppressions,
            Key=to_dynamo({"address": key(channel, address)}),
            ConditionExpression="attribute_exists(address)",
        )

    def reason(self, channel: Channel, address: str) -> str | None:
        """Why the address is suppressed; None when it is not."""
        item = self._get(self.names.suppressions, {"address": key(channel, address)})
        return str(item.get("reason", "")) if item else None

    def reasons(self, addresses: Iterable[tuple[Channel, str]]) -> dict[str, str]:
        """`key(channel, address)` → why, for those of `addresses` that are suppressed."""
        keys = [{"address": key(c, a)} for c, a in dict.fromkeys(addresses)]
        items = self._get_many(self.names.suppressions, keys) if keys else []
        return {str(item["address"]): str(item.get("reason", "")) for item in items}


def handle_batch(services: Services, messages: Sequence[queues.QueueMessage]) -> list[str]:
    """Apply each feedback message; the ids SQS must deliver again."""
    table = Suppressions(services.settings.names, services.store.db)
    failed: list[str] = []
    for message in messages:
        try:
            apply(services, table, _unwrap(message.body))
        except ValueError:
            # Not feedback we understand: retrying will not help; the DLQ keeps it for a person.
            log.error("unreadable feedback message %s", message.message_id)
            failed.append(message.message_id)
        except Exception as exc:
            log.error("feedback message %s failed: %s", message.message_id, type(exc).__name__)
            failed.append(message.message_id)
    return failed


def _unwrap(body: str) -> dict[str, Any]:
    """The SNS notification's own message (SNS wraps it in an envelope on its way to SQS)."""
    envelope = json.loads(body)
    inner = envelope.get("Message") if envelope.get("Type") == "Notification" else envelope
    data = json.loads(inner) if isinstance(inner, str) else inner
    if not isinstance(data, dict):
        raise ValueError("feedback is not a JSON object")
    return data


def apply(services: Services, table: Suppressions, data: Mapping[str, Any]) -> str:
    """What the feedback did: `opted_out`, `opted_in`, `help`, `suppressed`, or `ignored`."""
    # SES says `notificationType` for an identity's feedback topic and `eventType` for a
    # configuration set's event destination (which infra/ uses); the bodies are alike.
    if "notificationType" in data or "eventType" in data:
        return _email_feedback(table, data)
    if "originationNumber" in data:
        return _inbound_sms(services, table, data)
    raise ValueError("neither an inbound SMS nor an SES notification")


def _inbound_sms(services: Services, table: Suppressions, data: Mapping[str, Any]) -> str:
    number = str(data["originationNumber"])
    words = str(data.get("messageBody", "")).strip().upper().split()
    keyword = words[0].strip(".!") if words else ""
    brand = services.settings.brand
    if keyword in OPT_OUT:
        if table.suppress(Channel.SMS, number, reason=f"texted {keyword}"):
            # Carriers require this one message after an opt-out; then nothing more.
            _reply(number, f"{brand}: you will get no more texts from us. Reply START to resume.")
            return "opted_out"
        return "ignored"
    if keyword in OPT_IN:
        if table.lift(Channel.SMS, number):
            _reply(number, f"{brand}: texts are back on. Reply STOP to end, HELP for help.")
            return "opted_in"
        return "ignored"
    if keyword in HELP:
        _reply(
            number,
            f"{brand} service alerts: outage and delivery notices. "
            "Reply STOP to end, START to resume. Msg&data rates may apply.",
        )
        return "help"
    return "ignored"


def _email_feedback(table: Suppressions, data: Mapping[str, Any]) -> str:
    kind = data.get("notificationType") or data.get("eventType")
    if kind == "Bounce":
        bounce = data.get("bounce") or {}
        if bounce.get("bounceType") != "Permanent":
            return "ignored"  # mailbox full and the like: the next notice may well arrive
        recipients = bounce.get("bouncedRecipients") or []
        reason = "hard bounce"
    elif kind == "Complaint":
        recipients = (data.get("complaint") or {}).get("complainedRecipients") or []
        reason = "marked as spam"
    else:
        return "ignored"
    addresses = [str(r["emailAddress"]) for r in recipients if r.get("emailAddress")]
    for address in addresses:
        table.suppress(Channel.EMAIL, address, reason=reason)
    return "suppressed" if addresses else "ignored"


def _reply(number: str, text: str) -> None:
    try:
        channels.send_sms(number, text)
    except channels.SendError as exc:
        # The opt-out itself stands; a lost confirmation must not undo or repeat it.
        log.warning("keyword reply not sent: %s", exc.reason)
