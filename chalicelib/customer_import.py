"""Importing customers: every valid row is upserted, every invalid row is reported whole."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from chalicelib.customers import FieldError, RowError, validate_batch
from chalicelib.errors import BadRequest, Conflict, NotFound, Unprocessable
from chalicelib.store import Store


def import_customers(store: Store, payload: object) -> dict[str, Any]:
    """Upsert a batch. Idempotent: importing the same rows again reports them unchanged."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("customers"), list):
        raise BadRequest('request body must be {"customers": [...]}')
    rows: list[object] = payload["customers"]
    customers, rejected = validate_batch(rows)
    row_of = _row_numbers(rows, rejected)
    outcomes: Counter[str] = Counter()
    for customer in customers:
        try:
            outcomes[store.upsert_customer(customer)] += 1
        except Conflict as exc:
            rejected.append(
                RowError(
                    row_of.get(customer.customer_id, 0),
                    customer.customer_id,
                    (FieldError("customer_id", exc.message),),
                )
            )
    result = {
        "created": outcomes["created"],
        "updated": outcomes["updated"],
        "unchanged": outcomes["unchanged"],
        "rejected": [r.to_dict() for r in sorted(rejected, key=lambda r: r.row)],
    }
    if rows and not customers:
        raise RejectedBatch(result)
    return result


class RejectedBatch(Unprocessable):
    """Every row was invalid: nothing was written, and the report says why per row."""

    def __init__(self, report: dict[str, Any]) -> None:
        super().__init__(
            f"all {len(report['rejected'])} rows were rejected; nothing was written",
            details=report,
        )


def _row_numbers(rows: list[object], rejected: list[RowError]) -> dict[str, int]:
    bad = {r.row for r in rejected}
    return {
        str(row["customer_id"]): index
        for index, row in enumerate(rows, start=1)
        if index not in bad and isinstance(row, Mapping) and "customer_id" in row
    }


def get_customer(store: Store, customer_id: str) -> dict[str, Any]:
    customer = store.get_customer(customer_id)
    if customer is None:
        raise NotFound(f"no customer {customer_id}")
    return customer.to_dict()
