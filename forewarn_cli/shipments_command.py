"""``forewarn shipments import FILE.csv`` and ``forewarn shipments show TRACKING``.

The CSV has a header row with the columns
``tracking_code,carrier,customer_id,order_id,direction`` and optionally ``promised_date``
(ISO ``2025-11-23``), ``region`` and ``postal_code`` (where the parcel goes, for carrier
lanes); ``direction`` is ``outbound`` or ``return``. Rows go to
``POST /api/shipments`` in batches of 500; each rejected row is reported with its file line.

This module does not import ``forewarn_cli.main`` (which registers it), so either can be
imported first.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from forewarn_cli.client import DEFAULT_STATE_FILE, ApiClient, ApiError

IMPORT_BATCH = 500


def _client(ctx: click.Context) -> ApiClient:
    options = ctx.find_root().obj or {}
    try:
        return ApiClient.resolve(
            api_url=options.get("api_url"),
            token=options.get("token"),
            role=options.get("role", "ops"),
            state_file=options.get("state_file") or DEFAULT_STATE_FILE,
        )
    except ApiError as exc:
        raise click.ClickException(exc.message) from None


def _print_row_error(row: dict[str, Any]) -> None:
    where = f"line {row['line']}" if row.get("line") else f"row {row.get('row')}"
    which = f" ({row['tracking_code']})" if row.get("tracking_code") else ""
    for error in row.get("errors", []):
        click.secho(f"  {where}{which}: {error['field']}: {error['message']}", fg="red", err=True)


@click.group()
def shipments() -> None:
    """Shipments: the registry of tracking numbers, and their status."""


@shipments.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def import_shipments(ctx: click.Context, csv_file: Path) -> None:
    """Import (upsert) shipments from a CSV file; each bad row is reported with its line."""
    from chalicelib.errors import ForewarnError
    from chalicelib.shipments import read_csv

    try:
        rows = read_csv(csv_file.read_text(encoding="utf-8-sig"))
    except (ForewarnError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{csv_file}: {getattr(exc, 'message', exc)}") from None
    client = _client(ctx)
    totals = {"created": 0, "updated": 0, "unchanged": 0, "rejected": 0}
    for start in range(0, len(rows), IMPORT_BATCH):
        chunk = rows[start : start + IMPORT_BATCH]
        try:
            report = client.post("/api/shipments", {"shipments": [row for _, row in chunk]})
        except ApiError as exc:
            # An all-rejected batch answers 422 with the same per-row report.
            if not isinstance(exc.details, dict):
                raise click.ClickException(exc.message) from None
            report = exc.details
        for key in ("created", "updated", "unchanged"):
            totals[key] += int(report.get(key, 0))
        for row in report.get("rejected", []):
            totals["rejected"] += 1
            row["line"] = chunk[int(row["row"]) - 1][0] if row.get("row") else None
            _print_row_error(row)
    click.echo(
        f"{totals['created']} created, {totals['updated']} updated, "
        f"{totals['unchanged']} unchanged, {totals['rejected']} rejected"
    )
    if totals["rejected"]:
        sys.exit(1)


@shipments.command("show")
@click.argument("tracking_code")
@click.pass_context
def show_shipment(ctx: click.Context, tracking_code: str) -> None:
    """Show one shipment: who it is for, where it is, and the notices it caused."""
    try:
        found = _client(ctx).get(f"/api/shipments/{quote(tracking_code, safe='')}")
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
    click.secho(f"shipment {found['tracking_code']} ({found['direction']})", bold=True)
    for label, key in (
        ("carrier", "carrier"),
        ("customer", "customer_id"),
        ("order", "order_id"),
        ("status", "status"),
        ("detail", "status_detail"),
        ("promised", "promised_date"),
        ("region", "region"),
        ("postal code", "postal_code"),
        ("estimated", "est_delivery"),
        ("last scan", "last_event_at"),
        ("delivered", "delivered_at"),
        ("return event published", "return_published_at"),
        ("return event posted", "return_webhook_at"),
    ):
        if found.get(key):
            click.echo(f"  {label:<24}{found[key]}")
    counts = found.get("notice_counts") or {}
    if counts:
        click.echo("  notices: " + ", ".join(f"{kind} x{n}" for kind, n in sorted(counts.items())))
    if found.get("pending_jobs"):
        click.echo("  not yet queued: " + ", ".join(found["pending_jobs"]))
