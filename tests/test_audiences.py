from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Stack
from factories import customer

from chalicelib import aws
from chalicelib.audiences import Stream, iterate_pages, streams_for
from chalicelib.domain import AudienceSelector
from chalicelib.runtime import services


@pytest.fixture
def no_scans(stack: Stack) -> Iterator[list[str]]:
    """Record every DynamoDB operation; an audience must never be read with a Scan."""
    calls: list[str] = []

    def record(model: Any, **kwargs: Any) -> None:
        calls.append(model.name)

    client = aws.client("dynamodb")
    client.meta.events.register("before-call.dynamodb", record)
    yield calls
    client.meta.events.unregister("before-call.dynamodb", record)
    assert "Scan" not in calls


def audience_ids(selector: AudienceSelector, size: int = 500) -> list[str]:
    ids: list[str] = []
    for page in iterate_pages(services().store, selector=selector, incident_id="-", size=size):
        ids.extend(c.customer_id for c in page.customers)
    return ids


def test_selector_becomes_one_query_per_service_and_region_prefix() -> None:
    selector = AudienceSelector(("mobile", "tv"), ("north",), ("101", "102"))
    assert streams_for(selector) == [
        Stream("mobile", False, "north#101"),
        Stream("mobile", False, "north#102"),
        Stream("tv", False, "north#101"),
        Stream("tv", False, "north#102"),
    ]


def test_postal_prefixes_without_regions_use_the_postal_index() -> None:
    assert streams_for(AudienceSelector(("mobile",), (), ("80",))) == [Stream("mobile", True, "80")]


def test_a_customer_matching_several_streams_is_counted_once(no_scans: list[str]) -> None:
    store = services().store
    store.upsert_customer(
        customer(1, services=[("mobile", "north", "10115"), ("tv", "south", "80331")])
    )
    store.upsert_customer(
        customer(2, services=[("mobile", "north", "10115"), ("mobile", "north", "10117")])
    )
    store.upsert_customer(customer(3, services=[("mobile", "east", "01067")]))
    selector = AudienceSelector(("mobile", "tv"), ("north", "south"), ("101", "1011", "80"))
    assert sorted(audience_ids(selector)) == ["c0001", "c0002"]
    assert "Query" in no_scans


def test_segments_and_postal_prefixes_narrow_the_audience(no_scans: list[str]) -> None:
    store = services().store
    store.upsert_customer(customer(1, services=[("mobile", "north", "10115")], segments=["vip"]))
    store.upsert_customer(customer(2, services=[("mobile", "north", "10117")]))
    store.upsert_customer(customer(3, services=[("mobile", "south", "10115")], segments=["vip"]))
    assert audience_ids(AudienceSelector(("mobile",), segments=("vip",))) == ["c0001", "c0003"]
    assert sorted(audience_ids(AudienceSelector(("mobile",), (), ("10115",)))) == [
        "c0001",
        "c0003",
    ]
    assert audience_ids(AudienceSelector(("mobile",), ("north",), ("10117",))) == ["c0002"]


def test_small_pages_still_yield_every_member_exactly_once(no_scans: list[str]) -> None:
    store = services().store
    for index in range(23):
        regions = [("mobile", "north", "10115"), ("broadband", "north", "10115")]
        store.upsert_customer(customer(index, services=regions[: 1 + index % 2]))
    ids = audience_ids(AudienceSelector(("mobile", "broadband")), size=4)
    assert sorted(ids) == sorted(f"c{i:04d}" for i in range(23))
    assert len(ids) == len(set(ids))
