"""Sending one rendered notice on one channel: SMS through SNS, email through SES."""

from __future__ import annotations

import email.policy
import logging
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

from chalicelib import aws
from chalicelib.domain import Channel
from chalicelib.notices import RenderedNotice

log = logging.getLogger(__name__)

# Errors that say this recipient can never be reached this way: retrying cannot help.
PERMANENT_CODES = frozenset({"InvalidParameter", "InvalidParameterValue", "MessageRejected"})


class SendError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientSendError(SendError):
    """The provider may accept the same send later (throttling, outage)."""


class PermanentSendError(SendError):
    """The provider will never accept this send (invalid number, rejected address)."""


def build_email(
    *,
    sender: str,
    brand: str,
    to: str,
    notice: RenderedNotice,
    unsubscribe_url: str | None,
) -> bytes:
    # RFC 5322's own line limit: at 78, a long List-Unsubscribe URL, which has no space to
    # fold at, would be encoded as RFC 2047 words that mail clients do not read as a link.
    # 7-bit: non-ASCII bodies stay quoted-printable or base64, as SES wants them.
    message = EmailMessage(policy=email.policy.default.clone(max_line_length=998, cte_type="7bit"))
    message["From"] = formataddr((brand, sender))
    message["To"] = to
    message["Subject"] = notice.subject or brand
    message["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1])
    if unsubscribe_url:
        message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(notice.text)
    if notice.html:
        message.add_alternative(notice.html, subtype="html")
    return message.as_bytes()


def _classify(exc: Exception) -> SendError:
    code = aws.error_code(exc) or type(exc).__name__
    if code in PERMANENT_CODES:
        return PermanentSendError(f"{code}: {_safe_message(exc)}")
    return TransientSendError(code)


def _safe_message(exc: Exception) -> str:
    # Provider messages can echo the phone number or address back; keep only the gist.
    message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", ""))
    return "".join(ch for ch in message if not ch.isdigit() and ch != "@")[:120]


def send_sms(phone: str, text: str) -> str:
    try:
        response = aws.client("sns").publish(
            PhoneNumber=phone,
            Message=text,
            MessageAttributes={
                "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}
            },
        )
    except Exception as exc:
        raise _classify(exc) from None
    return str(response["MessageId"])


def send_email(raw: bytes, *, sender: str, to: str) -> str:
    try:
        response = aws.client("ses").send_raw_email(
            Source=sender, Destinations=[to], RawMessage={"Data": raw}
        )
    except Exception as exc:
        raise _classify(exc) from None
    return str(response["MessageId"])


def send(
    channel: Channel,
    contact: str,
    notice: RenderedNotice,
    *,
    sender: str,
    brand: str,
    unsubscribe_url: str | None = None,
) -> str:
    """Send and return the provider's message id, or raise a SendError."""
    if channel is Channel.SMS:
        return send_sms(contact, notice.text)
    if channel is Channel.EMAIL:
        raw = build_email(
            sender=sender, brand=brand, to=contact, notice=notice, unsubscribe_url=unsubscribe_url
        )
        return send_email(raw, sender=sender, to=contact)
    raise PermanentSendError(f"channel {channel.value} has no per-customer delivery")
