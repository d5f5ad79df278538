"""The local AWS server keeps AWS's guarantees under concurrent requests."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import Stack

from chalicelib import aws


@pytest.fixture
def table(stack: Stack) -> str:
    name = "forewarn-test-broadcasts"
    aws.client("dynamodb").put_item(
        TableName=name, Item={"broadcast_id": {"S": "b1"}, "n": {"N": "0"}}
    )
    return name


def test_concurrent_counter_updates_are_all_counted(table: str) -> None:
    db = aws.client("dynamodb")

    def add_one(_: int) -> Any:
        return db.update_item(
            TableName=table,
            Key={"broadcast_id": {"S": "b1"}},
            UpdateExpression="ADD n :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(add_one, range(400)))
    item = db.get_item(TableName=table, Key={"broadcast_id": {"S": "b1"}}, ConsistentRead=True)
    assert item["Item"]["n"] == {"N": "400"}


def test_a_cancelled_transaction_changes_nothing(table: str) -> None:
    db = aws.client("dynamodb")
    db.put_item(TableName=table, Item={"broadcast_id": {"S": "b2"}, "n": {"N": "0"}})
    with pytest.raises(db.exceptions.TransactionCanceledException):
        db.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": table,
                        "Key": {"broadcast_id": {"S": "b2"}},
                        "UpdateExpression": "ADD n :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
                {
                    "Put": {
                        "TableName": table,
                        "Item": {"broadcast_id": {"S": "b1"}, "n": {"N": "99"}},
                        "ConditionExpression": "attribute_not_exists(broadcast_id)",
                    }
                },
            ]
        )
    for key in ("b1", "b2"):
        item = db.get_item(TableName=table, Key={"broadcast_id": {"S": key}}, ConsistentRead=True)
        assert item["Item"]["n"] == {"N": "0"}
