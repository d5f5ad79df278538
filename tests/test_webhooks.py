"""Webhook signatures: EasyPost (hex, NFKD-keyed), AfterShip (base64), and our own outbound one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import unicodedata
from collections.abc import Iterator

import pytest
from conftest import Stack

from chalicelib import aws, secrets, webhooks
from chalicelib.errors import Unauthorized

BODY = b'{"id":"evt_1","description":"tracker.updated","result":{"tracking_code":"EZ1000000001"}}'
# "ﬁ" (a ligature) and a composed "é" both change under NFKD; EasyPost keys with the result.
SECRET = "ﬁnance-sécret"


def easypost_signature(body: bytes, key: bytes) -> str:
    return "hmac-sha256-hex=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def nfkd(secret: str) -> bytes:
    return unicodedata.normalize("NFKD", secret).encode()


def aftership_signature(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


# --- EasyPost ------------------------------------------------------------------------------


def test_easypost_accepts_a_body_signed_with_the_nfkd_normalised_secret() -> None:
    headers = {"X-Hmac-Signature": easypost_signature(BODY, nfkd(SECRET))}
    webhooks.verify_easypost(BODY, headers, SECRET)


def test_easypost_rejects_a_signature_keyed_with_the_raw_unnormalised_secret() -> None:
    assert nfkd(SECRET) != SECRET.encode(), "the secret must change under NFKD for this test"
    headers = {"X-Hmac-Signature": easypost_signature(BODY, SECRET.encode())}
    with pytest.raises(Unauthorized):
        webhooks.verify_easypost(BODY, headers, SECRET)


def test_easypost_accepts_the_same_secret_typed_in_composed_or_decomposed_form() -> None:
    composed = unicodedata.normalize("NFC", SECRET)
    decomposed = unicodedata.normalize("NFD", SECRET)
    headers = {"X-Hmac-Signature": easypost_signature(BODY, nfkd(composed))}
    webhooks.verify_easypost(BODY, headers, composed)
    webhooks.verify_easypost(BODY, headers, decomposed)


def test_easypost_rejects_a_forged_body_and_does_not_echo_the_secret_or_expected_signature() -> (
    None
):
    headers = {"X-Hmac-Signature": easypost_signature(BODY, nfkd(SECRET))}
    forged = BODY.replace(b"EZ1000000001", b"EZ2000000002")
    with pytest.raises(Unauthorized) as caught:
        webhooks.verify_easypost(forged, headers, SECRET)
    expected = hmac.new(nfkd(SECRET), forged, hashlib.sha256).hexdigest()
    assert SECRET not in caught.value.message
    assert expected not in caught.value.message
    assert "does not match" in caught.value.message


def test_easypost_rejects_a_missing_signature_header() -> None:
    with pytest.raises(Unauthorized, match="missing X-Hmac-Signature"):
        webhooks.verify_easypost(BODY, {"Content-Type": "application/json"}, SECRET)


@pytest.mark.parametrize(
    "value",
    [
        # base64 where hex belongs
        "hmac-sha256-hex="
        + base64.b64encode(hmac.new(b"k", BODY, hashlib.sha256).digest()).decode(),
        # no prefix
        hmac.new(b"k", BODY, hashlib.sha256).hexdigest(),
        # truncated
        "hmac-sha256-hex=abc123",
        "",
    ],
)
def test_easypost_rejects_a_signature_in_the_wrong_encoding(value: str) -> None:
    with pytest.raises(Unauthorized):
        webhooks.verify_easypost(BODY, {"X-Hmac-Signature": value}, SECRET)


@pytest.mark.parametrize("name", ["x-hmac-signature", "X-HMAC-SIGNATURE", "X-Hmac-Signature"])
def test_easypost_finds_the_signature_header_in_any_case(name: str) -> None:
    webhooks.verify_easypost(BODY, {name: easypost_signature(BODY, nfkd(SECRET))}, SECRET)


def test_easypost_accepts_upper_case_hex_digits() -> None:
    value = easypost_signature(BODY, nfkd(SECRET))
    prefix, digits = value.split("=", 1)
    webhooks.verify_easypost(BODY, {"X-Hmac-Signature": f"{prefix}={digits.upper()}"}, SECRET)


# --- AfterShip -----------------------------------------------------------------------------


def test_aftership_accepts_a_base64_hmac_of_the_body() -> None:
    webhooks.verify_aftership(
        BODY, {"aftership-hmac-sha256": aftership_signature(BODY, "as-secret")}, "as-secret"
    )


def test_aftership_finds_the_header_whatever_its_case() -> None:
    webhooks.verify_aftership(
        BODY, {"Aftership-Hmac-Sha256": aftership_signature(BODY, "as-secret")}, "as-secret"
    )


def test_aftership_rejects_a_signature_made_with_another_secret() -> None:
    with pytest.raises(Unauthorized, match="does not match"):
        webhooks.verify_aftership(
            BODY, {"aftership-hmac-sha256": aftership_signature(BODY, "guess")}, "as-secret"
        )


def test_aftership_rejects_a_missing_header() -> None:
    with pytest.raises(Unauthorized, match="missing aftership-hmac-sha256"):
        webhooks.verify_aftership(BODY, {}, "as-secret")


@pytest.mark.parametrize(
    "value",
    [
        hmac.new(b"as-secret", BODY, hashlib.sha256).hexdigest(),  # hex where base64 belongs
        "not base64 at all!",
        base64.b64encode(b"too short").decode(),
    ],
)
def test_aftership_rejects_a_signature_in_the_wrong_encoding(value: str) -> None:
    with pytest.raises(Unauthorized):
        webhooks.verify_aftership(BODY, {"aftership-hmac-sha256": value}, "as-secret")


# --- our outbound signature ----------------------------------------------------------------


def test_forewarn_signature_round_trips_and_names_the_algorithm() -> None:
    signature = webhooks.sign_forewarn(BODY, "partner-secret")
    assert signature.startswith("sha256=")
    assert signature == "sha256=" + hmac.new(b"partner-secret", BODY, hashlib.sha256).hexdigest()
    webhooks.verify_forewarn(BODY, {"x-forewarn-signature": signature}, "partner-secret")


def test_forewarn_signature_rejects_a_changed_body() -> None:
    signature = webhooks.sign_forewarn(BODY, "partner-secret")
    with pytest.raises(Unauthorized):
        webhooks.verify_forewarn(BODY + b" ", {"X-Forewarn-Signature": signature}, "partner-secret")


# --- signing secrets from Secrets Manager ----------------------------------------------------


@pytest.fixture
def fresh_secrets(stack: Stack) -> Iterator[None]:
    secrets.reset()
    yield
    secrets.reset()


def put_webhook_secret(value: dict[str, str]) -> None:
    aws.client("secretsmanager").put_secret_value(
        SecretId="forewarn/test/webhooks", SecretString=json.dumps(value)
    )


def test_signing_secrets_are_read_from_secrets_manager_and_cached_until_reset(
    fresh_secrets: None,
) -> None:
    put_webhook_secret({"easypost": "first"})
    assert webhooks.signing_secret("easypost") == "first"
    put_webhook_secret({"easypost": "second"})
    assert webhooks.signing_secret("easypost") == "first"
    secrets.reset()
    assert webhooks.signing_secret("easypost") == "second"


def test_a_cached_secret_is_read_again_once_it_is_old(fresh_secrets: None) -> None:
    put_webhook_secret({"aftership": "old"})
    assert secrets.get_json("forewarn/test/webhooks", clock=lambda: 0.0)["aftership"] == "old"
    put_webhook_secret({"aftership": "rotated"})
    later = secrets.MAX_AGE_SECONDS + 1
    assert secrets.get_json("forewarn/test/webhooks", clock=lambda: later)["aftership"] == (
        "rotated"
    )


def test_an_unset_signing_secret_refuses_every_request(fresh_secrets: None) -> None:
    # infra/ creates the secret as "{}": until an operator sets the keys, nothing is accepted.
    with pytest.raises(Unauthorized, match="cannot be verified"):
        webhooks.signing_secret("easypost")


def test_a_secret_that_is_not_json_refuses_requests_without_quoting_it(
    fresh_secrets: None, caplog: pytest.LogCaptureFixture
) -> None:
    aws.client("secretsmanager").put_secret_value(
        SecretId="forewarn/test/webhooks", SecretString="easypost=hunter2"
    )
    with pytest.raises(Unauthorized) as caught:
        webhooks.signing_secret("easypost")
    assert "hunter2" not in caught.value.message
    assert "hunter2" not in caplog.text
