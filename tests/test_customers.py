"""Customer import validation: JSON rows, batches and CSV files.

Phone numbers come from ranges set aside for fiction (UK 020 7946 0xxx, Australia
0491 570 xxx) or documentation examples; e-mail addresses use example.com.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chalicelib.customers import (
    CSV_COLUMNS,
    MAX_BATCH,
    FieldError,
    InvalidCustomer,
    RowError,
    customer_to_csv_row,
    read_csv,
    validate_batch,
    validate_customer,
)
from chalicelib.domain import Channel, Customer, Subscription
from chalicelib.errors import BadRequest

ROOT = Path(__file__).resolve().parent.parent

UK_PHONE = "+442079460123"
AU_PHONE = "+61491570156"
US_PHONE = "+14155552671"


def row(**changes: Any) -> dict[str, Any]:
    """A valid row, with `changes` applied; a change to None removes the key."""
    base: dict[str, Any] = {
        "customer_id": "cust-001",
        "name": "Ada Example",
        "phone": UK_PHONE,
        "email": "ada@example.com",
        "x_handle": "ada_example",
        "channels": ["sms", "email"],
        "locale": "en-GB",
        "time_zone": "Europe/London",
        "services": [{"service": "mobile", "region": "north", "postal_code": "10115"}],
        "segments": ["vip"],
    }
    base.update(changes)
    return {key: value for key, value in base.items() if value is not None}


def errors_of(raw: object) -> list[FieldError]:
    with pytest.raises(InvalidCustomer) as caught:
        validate_customer(raw)
    return list(caught.value.errors)


def only_error(raw: object) -> FieldError:
    errors = errors_of(raw)
    assert len(errors) == 1, errors
    return errors[0]


def csv_text(*lines: str, newline: str = "\n") -> str:
    return newline.join(lines) + newline


# --- a valid row ---------------------------------------------------------------------------


def test_a_valid_row_becomes_a_customer() -> None:
    customer = validate_customer(row())

    assert customer == Customer(
        customer_id="cust-001",
        name="Ada Example",
        phone=UK_PHONE,
        email="ada@example.com",
        x_handle="ada_example",
        channels=(Channel.SMS, Channel.EMAIL),
        locale="en-GB",
        time_zone="Europe/London",
        services=(Subscription("mobile", "north", "10115"),),
        segments=("vip",),
    )


def test_a_valid_customer_round_trips_through_to_dict() -> None:
    customer = validate_customer(row(channels=["social", "sms"], segments=["vip", "business"]))

    assert validate_customer(customer.to_dict()) == customer


def test_optional_fields_may_be_left_out_and_get_defaults() -> None:
    customer = validate_customer(
        row(
            phone=None,
            x_handle=None,
            channels=["email"],
            locale=None,
            time_zone=None,
            segments=None,
        )
    )

    assert customer.phone is None
    assert customer.x_handle is None
    assert customer.locale == "en"
    assert customer.time_zone == "UTC"
    assert customer.segments == ()


def test_optional_fields_given_as_null_or_blank_count_as_absent() -> None:
    customer = validate_customer(
        {**row(channels=["email"]), "phone": None, "x_handle": "  ", "locale": "", "segments": None}
    )

    assert (customer.phone, customer.x_handle, customer.locale) == (None, None, "en")


def test_text_fields_are_stripped_and_codes_are_normalised() -> None:
    customer = validate_customer(
        row(
            customer_id="  cust-001 ",
            name="  Ada Example\t",
            channels=[" SMS ", "Email"],
            services=[{"service": " Mobile ", "region": "NORTH", "postal_code": " sw1a 1aa "}],
            segments=[" VIP ", "vip", "Business"],
        )
    )

    assert customer.customer_id == "cust-001"
    assert customer.name == "Ada Example"
    assert customer.channels == (Channel.SMS, Channel.EMAIL)
    assert customer.services == (Subscription("mobile", "north", "SW1A 1AA"),)
    assert customer.segments == ("vip", "business")


# --- shape of the row ----------------------------------------------------------------------


@pytest.mark.parametrize("raw", [[], "cust-001", None, 42])
def test_a_row_that_is_not_an_object_is_rejected(raw: object) -> None:
    error = only_error(raw)

    assert error.field == "customer"
    assert "must be an object" in error.message


def test_an_unknown_field_is_rejected_with_a_suggestion_for_the_typo() -> None:
    error = only_error({**row(), "emial": "ada@example.com"})

    assert error == FieldError("emial", "unknown field 'emial'; did you mean 'email'?")


def test_an_unknown_field_without_a_near_match_lists_the_allowed_fields() -> None:
    error = only_error({**row(), "favourite_colour": "teal"})

    assert error.field == "favourite_colour"
    assert "allowed: customer_id, name" in error.message


def test_several_problems_in_one_row_are_all_reported() -> None:
    errors = errors_of(
        row(
            customer_id="bad id!",
            name="",
            phone="0301234567",
            email="not-an-email",
            channels=["sms", "fax"],
            locale="english",
            time_zone="Mars/Olympus_Mons",
            services=[{"service": "mobile", "region": "north", "postal_code": "#1"}],
            segments=["ok", "not ok"],
        )
    )

    assert [error.field for error in errors] == [
        "customer_id",
        "name",
        "phone",
        "email",
        "channels[1]",
        "locale",
        "time_zone",
        "services[0].postal_code",
        "segments[1]",
    ]


def test_invalid_customer_message_joins_the_field_messages() -> None:
    with pytest.raises(InvalidCustomer, match="customer_id is required; name is required"):
        validate_customer(row(customer_id=None, name=None))


@pytest.mark.parametrize(
    "field", ["customer_id", "name", "phone", "email", "x_handle", "locale", "time_zone"]
)
def test_a_text_field_given_as_a_number_is_rejected_with_its_type(field: str) -> None:
    errors = errors_of(row(**{field: 12345}))

    assert FieldError(field, f"{field} must be a string, got a number") in errors


# --- customer_id and name ------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   "])
def test_a_missing_customer_id_is_rejected(value: str | None) -> None:
    assert only_error({**row(), "customer_id": value}) == FieldError(
        "customer_id", "customer_id is required"
    )


@pytest.mark.parametrize("value", ["cust 001", "cust/001", "cüst", "x" * 65])
def test_a_customer_id_with_bad_characters_or_length_is_rejected(value: str) -> None:
    error = only_error(row(customer_id=value))

    assert error.field == "customer_id"
    assert "1-64 characters of A-Z, a-z, 0-9, '_', '.' and '-'" in error.message


def test_a_customer_id_of_64_allowed_characters_is_accepted() -> None:
    customer_id = "A.b_9-" + "x" * 58

    assert validate_customer(row(customer_id=customer_id)).customer_id == customer_id


def test_a_missing_name_is_rejected() -> None:
    assert only_error(row(name=None)) == FieldError("name", "name is required")


def test_a_name_longer_than_200_characters_is_rejected() -> None:
    assert only_error(row(name="A" * 201)) == FieldError(
        "name", "name must be at most 200 characters, got 201"
    )


@pytest.mark.parametrize("value", ["Ada\nExample", "Ada\x00Example", "Ada\u2028Example"])
def test_a_name_with_control_characters_or_line_breaks_is_rejected(value: str) -> None:
    assert only_error(row(name=value)) == FieldError(
        "name", "name must not contain control characters or line breaks"
    )


def test_a_name_in_any_script_is_accepted() -> None:
    assert validate_customer(row(name="Zoë Ōtani-Ñúñez 山田")).name == "Zoë Ōtani-Ñúñez 山田"


# --- phone ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+1 415 555 2671", US_PHONE),
        ("+1 (415) 555-2671", US_PHONE),
        ("+44 20 7946 0123", UK_PHONE),
        ("+61 491 570 156", AU_PHONE),
        ("+33.6.12.34.56.78", "+33612345678"),
        (f"  {UK_PHONE}  ", UK_PHONE),
    ],
)
def test_a_phone_with_spaces_or_punctuation_is_normalised_to_e164(
    value: str, expected: str
) -> None:
    assert validate_customer(row(phone=value)).phone == expected


def test_phone_without_country_code_is_rejected_with_a_clear_message() -> None:
    assert only_error(row(phone="0301234567")) == FieldError(
        "phone", "phone '0301234567' is not in E.164 form (+ country code and number)"
    )


@pytest.mark.parametrize("value", ["+1 800 FLOWERS", "+14155552671 ext 12", "++14155552671"])
def test_a_phone_with_letters_or_extras_is_not_e164(value: str) -> None:
    error = only_error(row(phone=value))

    assert error.field == "phone"
    assert "is not in E.164 form (+ country code and number)" in error.message


def test_a_phone_that_is_not_a_real_number_for_its_country_is_rejected() -> None:
    assert only_error(row(phone="+1 415 555 01")) == FieldError(
        "phone", "phone '+1 415 555 01' is not a valid number for its country code"
    )


def test_a_phone_with_an_unknown_country_code_is_rejected() -> None:
    assert only_error(row(phone="+999123456")) == FieldError(
        "phone", "phone '+999123456' does not start with a known country code"
    )


def test_a_long_rejected_value_is_shortened_in_the_message() -> None:
    error = only_error(row(phone="0" * 1000))

    assert len(error.message) < 120


# --- email and x_handle --------------------------------------------------------------------


def test_an_email_is_stored_normalised() -> None:
    assert validate_customer(row(email="  Ada.Example@EXAMPLE.COM ")).email == (
        "Ada.Example@example.com"
    )


@pytest.mark.parametrize("value", ["ada", "ada@", "ada@example", "a@b@example.com"])
def test_an_invalid_email_is_rejected_with_the_reason(value: str) -> None:
    error = only_error(row(email=value))

    assert error.field == "email"
    assert error.message.startswith(f"email {value!r} is not valid: ")


def test_an_x_handle_is_stored_without_the_at_sign() -> None:
    assert validate_customer(row(x_handle="@Ada_Example")).x_handle == "Ada_Example"


@pytest.mark.parametrize("value", ["ada-example", "a" * 16, "@@ada", "ada example"])
def test_an_invalid_x_handle_is_rejected(value: str) -> None:
    error = only_error(row(x_handle=value))

    assert error.field == "x_handle"
    assert "1-15 letters, digits or '_'" in error.message


# --- channels and contact points -----------------------------------------------------------


def test_missing_channels_are_rejected() -> None:
    assert only_error(row(channels=None)) == FieldError("channels", "channels is required")


def test_an_empty_channel_list_is_rejected() -> None:
    assert only_error(row(channels=[])) == FieldError(
        "channels", "channels must list at least one entry"
    )


def test_channels_given_as_a_string_are_rejected() -> None:
    assert only_error(row(channels="sms")) == FieldError(
        "channels", "channels must be a list, got a string"
    )


def test_an_unknown_channel_is_rejected_naming_the_allowed_ones() -> None:
    assert only_error(row(channels=["sms", "fax"])) == FieldError(
        "channels[1]", "channels[1] 'fax' is not one of: sms, email, social"
    )


def test_a_repeated_channel_is_rejected() -> None:
    assert only_error(row(channels=["sms", "email", "SMS"])) == FieldError(
        "channels[2]", "channels[2] repeats channel 'sms'"
    )


@pytest.mark.parametrize(
    ("channel", "contact"), [("sms", "phone"), ("email", "email"), ("social", "x_handle")]
)
def test_each_channel_needs_its_contact_point(channel: str, contact: str) -> None:
    errors = errors_of(row(channels=[channel], **{contact: None}))

    assert FieldError(contact, f"{contact} is required because channels include {channel}") in (
        errors
    )


def test_an_invalid_contact_point_is_not_also_reported_as_missing_for_its_channel() -> None:
    errors = errors_of(row(channels=["sms"], phone="0301234567"))

    assert [error.field for error in errors] == ["phone"]


def test_a_customer_needs_a_phone_or_an_email() -> None:
    assert only_error(row(phone=None, email=None, channels=["social"])) == FieldError(
        "phone", "a customer needs a phone or an email (or both)"
    )


# --- locale and time zone ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("fr-ca", "fr-CA"), ("EN", "en"), ("pt_br", "pt-BR"), ("de-DE", "de-DE")],
)
def test_a_locale_is_normalised(value: str, expected: str) -> None:
    assert validate_customer(row(locale=value)).locale == expected


@pytest.mark.parametrize("value", ["english", "e", "en-", "en-GBR", "e1", "en-GB-x"])
def test_a_locale_that_is_not_language_or_language_region_is_rejected(value: str) -> None:
    assert only_error(row(locale=value)) == FieldError(
        "locale", f"locale {value!r} must look like 'en' or 'en-GB'"
    )


@pytest.mark.parametrize(
    "value", ["UTC", "America/New_York", "America/Argentina/Buenos_Aires", "Etc/GMT+5"]
)
def test_an_iana_time_zone_is_accepted(value: str) -> None:
    assert validate_customer(row(time_zone=value)).time_zone == value


@pytest.mark.parametrize(
    "value",
    [
        "Mars/Olympus_Mons",
        "europe/london",
        "../etc",
        "../../etc/passwd",
        "/etc/passwd",
        "Europe/../UTC",
        "Europe",
        "localtime",
        "posixrules",
        "posix/Europe/Berlin",
        "UTC\x00",
        "x" * 100,
    ],
)
def test_a_time_zone_that_is_not_an_iana_zone_is_rejected(value: str) -> None:
    error = only_error(row(time_zone=value))

    assert error.field == "time_zone"
    assert "is not an IANA time zone such as 'Europe/Berlin' or 'UTC'" in error.message


# --- services ------------------------------------------------------------------------------


def test_missing_services_are_rejected() -> None:
    assert only_error(row(services=None)) == FieldError("services", "services is required")


def test_an_empty_service_list_is_rejected() -> None:
    assert only_error(row(services=[])) == FieldError(
        "services", "services must list at least one entry"
    )


def test_more_than_twenty_services_are_rejected() -> None:
    services = [{"service": "mobile", "region": "north", "postal_code": str(n)} for n in range(21)]

    assert only_error(row(services=services)) == FieldError(
        "services", "services may list at most 20 entries, got 21"
    )


def test_twenty_services_are_accepted() -> None:
    services = [{"service": "mobile", "region": "north", "postal_code": str(n)} for n in range(20)]

    assert len(validate_customer(row(services=services)).services) == 20


def test_a_service_entry_that_is_not_an_object_shows_the_expected_form() -> None:
    assert only_error(row(services=["mobile:north"])) == FieldError(
        "services[0]",
        "services[0] must be service:region:postal_code, or an object with service, region"
        " and postal_code; got 'mobile:north'",
    )


def test_a_service_entry_missing_its_parts_names_each_one() -> None:
    errors = errors_of(row(services=[{}]))

    assert errors == [
        FieldError("services[0].service", "services[0].service is required"),
        FieldError("services[0].region", "services[0].region is required"),
        FieldError("services[0].postal_code", "services[0].postal_code is required"),
    ]


def test_an_unknown_key_in_a_service_entry_is_rejected() -> None:
    service = {"service": "mobile", "region": "north", "postal_code": "10115", "postcode": "x"}

    assert only_error(row(services=[service])) == FieldError(
        "services[0].postcode", "unknown field 'services[0].postcode'; did you mean 'postal_code'?"
    )


@pytest.mark.parametrize("key", ["service", "region"])
@pytest.mark.parametrize("value", ["-mobile", "mobile_5g", "mo bile", "m" * 41])
def test_a_service_or_region_that_is_not_a_slug_is_rejected(key: str, value: str) -> None:
    service = {"service": "mobile", "region": "north", "postal_code": "10115", key: value}

    error = only_error(row(services=[service]))

    assert error.field == f"services[0].{key}"
    assert "must be 1-40 characters of a-z, 0-9 and '-'" in error.message


@pytest.mark.parametrize("value", ["#10115", "1234567890123", "10115/2", "ÄB12"])
def test_a_bad_postal_code_is_rejected(value: str) -> None:
    service = {"service": "mobile", "region": "north", "postal_code": value}

    assert only_error(row(services=[service])) == FieldError(
        "services[0].postal_code",
        f"services[0].postal_code {value!r} must be 1-12 letters, digits, spaces or hyphens",
    )


def test_a_postal_code_given_as_a_number_is_rejected_because_it_loses_leading_zeros() -> None:
    service = {"service": "mobile", "region": "north", "postal_code": 1067}

    assert only_error(row(services=[service])) == FieldError(
        "services[0].postal_code",
        "services[0].postal_code must be a string, got a number; quote it to keep leading zeros",
    )


def test_a_repeated_service_is_rejected_after_normalisation() -> None:
    services = [
        {"service": "mobile", "region": "north", "postal_code": "sw1a 1aa"},
        {"service": "Mobile", "region": "NORTH", "postal_code": "SW1A 1AA "},
    ]

    assert only_error(row(services=services)) == FieldError(
        "services[1]", "services[1] repeats services[0]"
    )


def test_the_same_service_at_two_postal_codes_is_accepted() -> None:
    services = [
        {"service": "broadband", "region": "north", "postal_code": "10115"},
        {"service": "broadband", "region": "north", "postal_code": "10117"},
    ]

    assert len(validate_customer(row(services=services)).services) == 2


# --- segments ------------------------------------------------------------------------------


def test_more_than_ten_segments_are_rejected() -> None:
    assert only_error(row(segments=[f"s{n}" for n in range(11)])) == FieldError(
        "segments", "segments may list at most 10 entries, got 11"
    )


@pytest.mark.parametrize("value", ["_vip", "v i p", "vip!", "v" * 41])
def test_a_segment_with_bad_characters_is_rejected(value: str) -> None:
    error = only_error(row(segments=[value]))

    assert error.field == "segments[0]"
    assert "must be 1-40 characters of a-z, 0-9, '_' and '-'" in error.message


def test_segments_given_as_a_string_are_rejected() -> None:
    assert only_error(row(segments="vip")) == FieldError(
        "segments", "segments must be a list, got a string"
    )


# --- batches -------------------------------------------------------------------------------


def test_a_batch_returns_the_valid_customers_and_numbered_row_errors() -> None:
    customers, failures = validate_batch(
        [row(customer_id="a"), row(customer_id="b", locale="english"), row(customer_id="c")]
    )

    assert [customer.customer_id for customer in customers] == ["a", "c"]
    assert failures == [
        RowError(2, "b", (FieldError("locale", "locale 'english' must look like 'en' or 'en-GB'"),))
    ]


def test_a_row_error_serialises_to_plain_data() -> None:
    failure = RowError(3, "cust-003", (FieldError("phone", "phone is wrong"),))

    assert failure.to_dict() == {
        "row": 3,
        "customer_id": "cust-003",
        "errors": [{"field": "phone", "message": "phone is wrong"}],
    }


def test_a_repeated_customer_id_in_one_batch_rejects_the_later_rows() -> None:
    customers, failures = validate_batch(
        [row(customer_id="a"), row(customer_id="b"), row(customer_id="a"), row(customer_id=" a ")]
    )

    assert [customer.customer_id for customer in customers] == ["a", "b"]
    assert [(failure.row, failure.customer_id) for failure in failures] == [(3, "a"), (4, "a")]
    assert failures[0].errors == (
        FieldError(
            "customer_id",
            "customer_id 'a' appears more than once in this batch;"
            " only its first row is considered",
        ),
    )


def test_a_repeated_customer_id_is_rejected_even_when_its_first_row_was_invalid() -> None:
    customers, failures = validate_batch([row(customer_id="a", name=None), row(customer_id="a")])

    assert customers == []
    assert [failure.row for failure in failures] == [1, 2]


def test_a_repeated_row_reports_its_own_problems_too() -> None:
    _, failures = validate_batch([row(customer_id="a"), row(customer_id="a", name=None)])

    assert [error.field for error in failures[0].errors] == ["name", "customer_id"]


def test_a_malformed_customer_id_is_not_echoed_as_the_rows_id() -> None:
    _, failures = validate_batch([row(customer_id="bad id"), "not an object"])

    assert [failure.customer_id for failure in failures] == [None, None]


def test_a_batch_of_the_maximum_size_is_accepted() -> None:
    customers, failures = validate_batch([row(customer_id=f"c{n}") for n in range(MAX_BATCH)])

    assert (len(customers), failures) == (MAX_BATCH, [])


def test_a_batch_bigger_than_the_maximum_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="at most 500 customers, got 501"):
        validate_batch([row()] * (MAX_BATCH + 1))


def test_an_empty_batch_has_nothing_to_report() -> None:
    assert validate_batch([]) == ([], [])


# --- CSV -----------------------------------------------------------------------------------

HEADER = ",".join(CSV_COLUMNS)


def test_a_csv_row_is_converted_to_the_json_shape() -> None:
    text = csv_text(
        HEADER,
        f"cust-001,Ada Example,{UK_PHONE},ada@example.com,ada_example,sms;email,en-GB,"
        "Europe/London,mobile:north:10115;broadband:north:10117,vip;business",
    )

    assert read_csv(text) == [
        (
            2,
            {
                "customer_id": "cust-001",
                "name": "Ada Example",
                "phone": UK_PHONE,
                "email": "ada@example.com",
                "x_handle": "ada_example",
                "channels": ["sms", "email"],
                "locale": "en-GB",
                "time_zone": "Europe/London",
                "services": [
                    {"service": "mobile", "region": "north", "postal_code": "10115"},
                    {"service": "broadband", "region": "north", "postal_code": "10117"},
                ],
                "segments": ["vip", "business"],
            },
        )
    ]


def test_empty_csv_cells_leave_their_keys_out() -> None:
    text = csv_text(HEADER, "cust-001,Ada Example,,ada@example.com,,email,,,mobile:north:10115,")

    assert read_csv(text) == [
        (
            2,
            {
                "customer_id": "cust-001",
                "name": "Ada Example",
                "email": "ada@example.com",
                "channels": ["email"],
                "services": [{"service": "mobile", "region": "north", "postal_code": "10115"}],
            },
        )
    ]


def test_only_the_required_csv_columns_are_needed_and_order_does_not_matter() -> None:
    text = csv_text("services,channels,name,customer_id", "mobile:north:10115,email,Ada,c1")

    assert read_csv(text)[0][1]["customer_id"] == "c1"


def test_csv_header_names_are_matched_without_case_or_padding() -> None:
    text = csv_text(" Customer_ID ,NAME,Channels,Services", "c1,Ada,email,mobile:north:10115")

    assert list(read_csv(text)[0][1]) == ["customer_id", "name", "channels", "services"]


def test_a_csv_with_a_byte_order_mark_and_crlf_line_endings_is_read() -> None:
    text = "\ufeff" + csv_text(
        "customer_id,name,email,channels,services",
        "c1,Ada,ada@example.com,email,mobile:north:10115",
        "c2,Bob,bob@example.com,email,mobile:north:10115",
        newline="\r\n",
    )

    rows = read_csv(text)

    assert [(line, data["customer_id"], data["services"]) for line, data in rows] == [
        (2, "c1", [{"service": "mobile", "region": "north", "postal_code": "10115"}]),
        (3, "c2", [{"service": "mobile", "region": "north", "postal_code": "10115"}]),
    ]


def test_csv_line_numbers_count_quoted_newlines_and_blank_lines() -> None:
    text = csv_text(
        "customer_id,name,channels,services",
        "",
        'c1,"Ada\nExample",email,mobile:north:10115',
        "c2,Bob,email,mobile:north:10115",
        ",,,",
        'c3,"Cy\r\nthe\r\nThird",email,mobile:north:10115',
        "c4,Dee,email,mobile:north:10115",
        newline="\r\n",
    )

    assert [(line, data["customer_id"]) for line, data in read_csv(text)] == [
        (3, "c1"),
        (5, "c2"),
        (7, "c3"),
        (10, "c4"),
    ]


def test_a_short_csv_row_is_read_as_if_its_last_cells_were_empty() -> None:
    text = csv_text("customer_id,name,channels,services,segments", "c1,Ada,email,mobile:n:1")

    assert "segments" not in read_csv(text)[0][1]


def test_a_malformed_csv_service_entry_is_reported_by_validation() -> None:
    text = csv_text(
        "customer_id,name,email,channels,services",
        "c1,Ada,ada@example.com,email,mobile:north:10115;mobile-north",
    )
    [(_, data)] = read_csv(text)

    assert only_error(data) == FieldError(
        "services[1]",
        "services[1] must be service:region:postal_code, or an object with service, region"
        " and postal_code; got 'mobile-north'",
    )


@pytest.mark.parametrize("text", ["", "\ufeff", "\n\n", "\r\n", ",,,\n"])
def test_an_empty_csv_is_a_bad_request(text: str) -> None:
    with pytest.raises(BadRequest, match="the CSV file is empty"):
        read_csv(text)


def test_a_csv_with_only_a_header_has_no_rows() -> None:
    assert read_csv(HEADER + "\n") == []


def test_a_csv_header_with_unknown_and_missing_columns_names_them() -> None:
    with pytest.raises(BadRequest) as caught:
        read_csv(csv_text("customer_id,name,phon,channels", "c1,Ada,+1,sms"))

    assert caught.value.message.startswith(
        "CSV header: unknown column(s): 'phon'; missing required column(s): services."
    )
    assert HEADER in caught.value.message


def test_a_csv_header_with_a_repeated_column_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="repeated column\\(s\\): 'name'"):
        read_csv(csv_text("customer_id,name,channels,services,name"))


def test_trailing_empty_csv_header_cells_are_ignored() -> None:
    text = csv_text("customer_id,name,channels,services,,", "c1,Ada,email,mobile:n:1,,")

    assert read_csv(text)[0][0] == 2


def test_a_csv_row_with_more_cells_than_the_header_is_a_bad_request() -> None:
    text = csv_text("customer_id,name,channels,services", "c1,Example, Ada,email,mobile:n:1")

    with pytest.raises(BadRequest, match="CSV line 2 has 5 cells but the header names 4"):
        read_csv(text)


def test_a_csv_with_an_unclosed_quote_is_a_bad_request() -> None:
    text = csv_text("customer_id,name,channels,services", 'c1,"Ada,email,mobile:n:1', "c2,Bob")

    with pytest.raises(BadRequest, match="CSV line 3: unexpected end of data"):
        read_csv(text)


def test_csv_columns_are_the_keys_of_an_exported_row() -> None:
    assert tuple(customer_to_csv_row(validate_customer(row()))) == CSV_COLUMNS


@pytest.mark.parametrize(
    "raw",
    [
        row(
            name='Ada "The Countess", Example',
            channels=["email", "sms", "social"],
            services=[
                {"service": "mobile", "region": "north", "postal_code": "SW1A 1AA"},
                {"service": "broadband", "region": "south-east", "postal_code": "01067"},
            ],
            segments=["vip", "small_business"],
        ),
        row(phone=None, x_handle=None, channels=["email"], segments=None),
    ],
)
def test_a_customer_exported_to_csv_reads_back_unchanged(raw: dict[str, Any]) -> None:
    customer = validate_customer(raw)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerow(customer_to_csv_row(customer))

    [(line, data)] = read_csv(out.getvalue())

    assert line == 2
    assert validate_customer(data) == customer


# --- cold start ----------------------------------------------------------------------------


def test_importing_the_module_does_not_load_phonenumbers_or_email_validator() -> None:
    script = (
        "import sys, chalicelib.customers\n"
        "print(sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('phonenumbers', 'email_validator', 'dns')))\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"
