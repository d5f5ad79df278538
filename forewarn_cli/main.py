"""The `forewarn` command: run the stack locally, import customers, drive broadcasts."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from forewarn_cli.client import DEFAULT_STATE_FILE, ApiClient, ApiError

IMPORT_BATCH = 500


def _client(ctx: click.Context) -> ApiClient:
    options = ctx.find_root().obj
    return ApiClient.resolve(
        api_url=options["api_url"],
        token=options["token"],
        role=options["role"],
        state_file=options["state_file"],
    )


def _fail(exc: ApiError) -> None:
    click.secho(f"error: {exc.message}", fg="red", err=True)
    if isinstance(exc.details, dict):
        for row in exc.details.get("rejected", []):
            _print_row_error(row)
    sys.exit(1)


def api_command(func: Callable[..., None]) -> Callable[..., None]:
    """Turn API errors into one readable line and a non-zero exit, never a traceback."""

    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except ApiError as exc:
            _fail(exc)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


@click.group()
@click.option("--api-url", envvar="FOREWARN_API_URL", help="Base URL of the Forewarn API.")
@click.option("--token", envvar="FOREWARN_TOKEN", help="Bearer token.")
@click.option(
    "--role",
    default="ops",
    show_default=True,
    type=click.Choice(["ops", "social", "admin"]),
    help="Which local token to use (from the file `forewarn run` writes).",
)
@click.option(
    "--state-file",
    type=click.Path(path_type=Path),
    default=DEFAULT_STATE_FILE,
    show_default=True,
    help="Where `forewarn run` writes the local URL and tokens.",
)
@click.pass_context
def cli(
    ctx: click.Context, api_url: str | None, token: str | None, role: str, state_file: Path
) -> None:
    """Forewarn: tell customers about outages before they call."""
    ctx.obj = {"api_url": api_url, "token": token, "role": role, "state_file": state_file}


# -- run ------------------------------------------------------------------------------------


@cli.command()
@click.option("--port", default=8000, show_default=True, help="Port of the HTTP API.")
@click.option("--aws-port", default=0, help="Port of the local AWS API server (0: any free).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--customers", default=300, show_default=True, help="Demo customers to seed.")
@click.option("--no-schedules", is_flag=True, help="Do not run the scheduled functions.")
@click.option(
    "--demo-outage-after",
    default=60.0,
    show_default=True,
    help="Seconds after start when the demo's outage begins on the local X server "
    "(negative: it already happened, so the first scan finds it).",
)
@click.pass_context
def run(
    ctx: click.Context,
    port: int,
    aws_port: int,
    host: str,
    customers: int,
    no_schedules: bool,
    demo_outage_after: float,
) -> None:
    """Run the whole service locally on an embedded AWS API server."""
    from forewarn_cli.local.stack import LocalStack

    state_file: Path = ctx.find_root().obj["state_file"]
    stack = LocalStack(
        host=host,
        api_port=port,
        aws_port=aws_port,
        customers=customers,
        schedules=not no_schedules,
        outage_after_s=demo_outage_after,
    )
    click.echo("Starting the local AWS API server and creating the resources of infra/ ...")
    try:
        stack.start()
    except OSError as exc:
        stack.stop()
        raise click.ClickException(
            f"cannot start: {exc} (is port {port} in use? try --port)"
        ) from None
    tokens = stack.tokens()
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state = {"api_url": stack.api_url, "tokens": tokens, "webhook_secrets": stack.webhook_secrets}
    state_file.write_text(json.dumps(state, indent=2))
    os.chmod(state_file, 0o600)
    _print_banner(stack.api_url, stack.aws_url, tokens, stack.passwords, customers, state_file)
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    stopping.wait()
    click.echo("\nStopping ...")
    stack.stop()
    state_file.unlink(missing_ok=True)
    click.echo("Stopped. All local state is gone.")


def _print_banner(
    api_url: str,
    aws_url: str,
    tokens: dict[str, str],
    passwords: dict[str, str],
    customers: int,
    state_file: Path,
) -> None:
    click.secho(f"\nForewarn is running at {api_url}", fg="green", bold=True)
    click.echo(f"  local AWS API server: {aws_url}  (moto; resources from infra/forewarn.json)")
    click.echo(f"  demo customers seeded: {customers}")
    click.echo(
        "  social listening: a local X API server plays a demo feed; an outage builds up "
        "in Dallas and shows as an emerging issue within a few minutes "
        f"(GET {api_url}/api/emerging)"
    )
    click.echo("\nAuthenticate with a bearer token per role (valid 12 hours, this run only):")
    for role, token in tokens.items():
        click.echo(f"  {role:<7} Authorization: Bearer {token}")
    click.echo(f"\nConsole: {api_url}/console  (sign in; passwords valid for this run only)")
    for user, password in passwords.items():
        click.echo(f"  {user:<11} password: {password}")
    click.echo(f"\nTry:  curl -H 'Authorization: Bearer <ops token>' {api_url}/api/whoami")
    click.echo(f"The forewarn CLI in another terminal picks the tokens up from {state_file}.")
    click.secho(
        "Warning: local state lives in memory only; it is gone when this process stops.",
        fg="yellow",
    )
    click.echo("Press Ctrl-C to stop.", nl=True)
    sys.stdout.flush()


# -- customers ------------------------------------------------------------------------------


@cli.group()
def customers() -> None:
    """Customer records."""


@customers.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
@api_command
def import_customers(ctx: click.Context, csv_file: Path) -> None:
    """Import (upsert) customers from a CSV file; each bad row is reported with its line."""
    from chalicelib.customers import read_csv
    from chalicelib.errors import ForewarnError

    client = _client(ctx)
    try:
        rows = read_csv(csv_file.read_text(encoding="utf-8-sig"))
    except (ForewarnError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{csv_file}: {getattr(exc, 'message', exc)}") from None
    totals = {"created": 0, "updated": 0, "unchanged": 0, "rejected": 0}
    for start in range(0, len(rows), IMPORT_BATCH):
        chunk = rows[start : start + IMPORT_BATCH]
        try:
            report = client.post("/api/customers", {"customers": [row for _, row in chunk]})
        except ApiError as exc:
            if not isinstance(exc.details, dict):
                raise
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


def _print_row_error(row: dict[str, Any]) -> None:
    where = f"line {row['line']}" if row.get("line") else f"row {row.get('row')}"
    who = f" ({row['customer_id']})" if row.get("customer_id") else ""
    for error in row.get("errors", []):
        click.secho(f"  {where}{who}: {error['field']}: {error['message']}", fg="red", err=True)


# -- incidents ------------------------------------------------------------------------------


@cli.group()
def incidents() -> None:
    """Incidents: what is broken and where."""


@incidents.command("create")
@click.option("--title", required=True)
@click.option("--service", "services", multiple=True, required=True)
@click.option("--region", "regions", multiple=True)
@click.option("--next-update", help="When the next update is due (ISO 8601, with Z or offset).")
@click.pass_context
@api_command
def create_incident(
    ctx: click.Context,
    title: str,
    services: tuple[str, ...],
    regions: tuple[str, ...],
    next_update: str | None,
) -> None:
    """Open an incident."""
    body: dict[str, Any] = {"title": title, "services": list(services), "regions": list(regions)}
    if next_update:
        body["next_update_due"] = next_update
    incident = _client(ctx).post("/api/incidents", body)
    click.echo(f"incident {incident['incident_id']} ({incident['status']}): {incident['title']}")


@incidents.command("update")
@click.argument("incident_id")
@click.option(
    "--status", type=click.Choice(["investigating", "identified", "monitoring", "resolved"])
)
@click.option("--next-update")
@click.pass_context
@api_command
def update_incident(
    ctx: click.Context, incident_id: str, status: str | None, next_update: str | None
) -> None:
    """Move an incident's status forward or set when the next update is due."""
    body: dict[str, Any] = {}
    if status:
        body["status"] = status
    if next_update:
        body["next_update_due"] = next_update
    incident = _client(ctx).patch(f"/api/incidents/{incident_id}", body)
    click.echo(f"incident {incident['incident_id']} is {incident['status']}")


# -- dead-letter queues -----------------------------------------------------------------------


@cli.group()
def deliveries() -> None:
    """Delivery queues."""


@deliveries.command("redrive")
@click.option(
    "--queue",
    default="deliveries",
    show_default=True,
    type=click.Choice(["planner", "deliveries", "notices", "feedback"]),
    help="Which queue's dead-letter queue to move back.",
)
@click.pass_context
@api_command
def redrive(ctx: click.Context, queue: str) -> None:
    """Move what landed in a dead-letter queue back to its queue, once its cause is fixed."""
    result = _client(ctx).post(f"/api/queues/{queue}/redrive")
    click.echo(
        f"{result['moved']} message(s) moved back to {queue}; "
        f"{result['left_in_dead_letter_queue']} left in its dead-letter queue"
    )


# -- broadcasts -----------------------------------------------------------------------------


@cli.group()
def broadcast() -> None:
    """Outage broadcasts: create, preview, approve, send, status."""


@broadcast.command("create")
@click.option("--incident", "incident_id", required=True)
@click.option("--phase", type=click.Choice(["initial", "update", "resolved"]), default="initial")
@click.option("--channel", "channels", multiple=True, type=click.Choice(["sms", "email", "social"]))
@click.option("--service", "services", multiple=True, help="Audience: service (repeatable).")
@click.option("--region", "regions", multiple=True, help="Audience: region (repeatable).")
@click.option("--postal-prefix", "postal_prefixes", multiple=True)
@click.option("--segment", "segments", multiple=True)
@click.option("--template", help="Template kind (default: from the phase).")
@click.option("--workaround")
@click.option("--status-link")
@click.pass_context
@api_command
def create_broadcast(
    ctx: click.Context,
    incident_id: str,
    phase: str,
    channels: tuple[str, ...],
    services: tuple[str, ...],
    regions: tuple[str, ...],
    postal_prefixes: tuple[str, ...],
    segments: tuple[str, ...],
    template: str | None,
    workaround: str | None,
    status_link: str | None,
) -> None:
    """Draft a broadcast for an incident."""
    body: dict[str, Any] = {"incident_id": incident_id, "phase": phase}
    if channels:
        body["channels"] = list(channels)
    if services:
        body["audience"] = {
            "services": list(services),
            "regions": list(regions),
            "postal_prefixes": list(postal_prefixes),
            "segments": list(segments),
        }
    if template:
        body["template"] = template
    variables = {"workaround": workaround, "status_link": status_link}
    body["variables"] = {k: v for k, v in variables.items() if v}
    created = _client(ctx).post("/api/broadcasts", body)
    click.echo(
        f"broadcast {created['broadcast_id']} drafted ({created['phase']}, {created['template']})"
    )


@broadcast.command("preview")
@click.argument("broadcast_id")
@click.option("--customer", "customer_id", help="Render for this customer instead of a sample.")
@click.pass_context
@api_command
def preview_broadcast(ctx: click.Context, broadcast_id: str, customer_id: str | None) -> None:
    """Show every channel rendered for a sample customer, and the recipient counts."""
    query = f"?customer_id={customer_id}" if customer_id else ""
    result = _client(ctx).get(f"/api/broadcasts/{broadcast_id}/preview{query}")
    recipients = result["recipients"]
    click.secho(f"Recipients: {recipients['total']}", bold=True)
    for channel, count in recipients["by_channel"].items():
        click.echo(f"  {channel:<6} {count}")
    click.echo(f"  unreachable {recipients['unreachable']}")
    click.secho(f"\nRendered for {result['sample_customer_id']} ({result['locale']}):", bold=True)
    for channel, notice in result["rendered"].items():
        click.secho(f"\n[{channel}]", fg="cyan")
        if notice.get("subject"):
            click.echo(f"Subject: {notice['subject']}")
        click.echo(notice["text"])
        if "segments" in notice:
            seg = notice["segments"]
            click.echo(f"({seg['encoding']}, {seg['units']} units, {seg['segments']} segment(s))")
        if "length" in notice:
            fits = "fits" if notice["fits"] else "TOO LONG for X"
            click.echo(f"({notice['length']} characters, {fits})")


@broadcast.command("approve")
@click.argument("broadcast_id")
@click.pass_context
@api_command
def approve_broadcast(ctx: click.Context, broadcast_id: str) -> None:
    """Approve a draft."""
    approved = _client(ctx).post(f"/api/broadcasts/{broadcast_id}/approve")
    click.echo(f"broadcast {broadcast_id} approved by {approved['approved_by']}")


@broadcast.command("send")
@click.argument("broadcast_id")
@click.option("--no-wait", is_flag=True, help="Return once sending has started.")
@click.option("--timeout", default=600, show_default=True, help="Seconds to wait for delivery.")
@click.pass_context
@api_command
def send_broadcast(ctx: click.Context, broadcast_id: str, no_wait: bool, timeout: int) -> None:
    """Send an approved broadcast, with a progress bar until every notice is settled."""
    client = _client(ctx)
    client.post(f"/api/broadcasts/{broadcast_id}/send")
    click.echo(f"broadcast {broadcast_id} is sending")
    if no_wait:
        return
    final = _watch(client, broadcast_id, timeout)
    _print_status(final)
    if final["status"] != "sent":
        sys.exit(1)


@broadcast.command("halt")
@click.argument("broadcast_id")
@click.pass_context
@api_command
def halt_broadcast(ctx: click.Context, broadcast_id: str) -> None:
    """The kill switch: stop an approved or sending broadcast for good."""
    halted = _client(ctx).post(f"/api/broadcasts/{broadcast_id}/halt")
    planned, settled = _totals(halted)
    click.echo(
        f"broadcast {broadcast_id} halted by {halted['halted_by']}: {settled} of {planned} settled"
    )


@broadcast.command("reconcile")
@click.argument("broadcast_id")
@click.pass_context
@api_command
def reconcile_broadcast(ctx: click.Context, broadcast_id: str) -> None:
    """Account for every customer: sent, suppressed, failed with reasons, held for quiet
    hours, waiting; exits 1 and names the gap when the counts do not add up."""
    r = _client(ctx).get(f"/api/broadcasts/{broadcast_id}/reconcile")
    click.echo(
        f"broadcast {broadcast_id} ({r['status']}): audience {r['audience']} = "
        f"sent {r['sent']} + in a digest {r['digested']} + suppressed {r['suppressed']} + "
        f"failed {r['failed']} + "
        f"deferred {r['deferred']} + waiting {r['waiting']} + unreachable {r['unreachable']}"
    )
    if r["fell_back"]:
        click.echo(f"  ({r['fell_back']} carried by a fallback channel, counted once)")
    for reason, count in r["reasons"].items():
        click.echo(f"  {count:>6}  {reason}")
    for gap in r["gaps"]:
        click.secho(f"gap: {gap}", fg="red")
    if r["gaps"]:
        sys.exit(1)


def _totals(state: dict[str, Any]) -> tuple[int, int]:
    counts = state["counts"].values()
    planned = sum(c["planned"] for c in counts)
    settled = sum(
        c["sent"] + c["failed"] + c["suppressed"] + c["fell_back"] + c["digested"] for c in counts
    )
    return planned, settled


def _watch(client: ApiClient, broadcast_id: str, timeout: int) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = client.get(f"/api/broadcasts/{broadcast_id}")
    with click.progressbar(length=max(1, _totals(state)[0]), label="delivering") as bar:
        shown = 0
        while time.monotonic() < deadline:
            planned, settled = _totals(state)
            bar.length = max(1, planned)
            bar.update(settled - shown)
            shown = settled
            if state["status"] in ("sent", "halted"):
                break
            time.sleep(0.5)
            state = client.get(f"/api/broadcasts/{broadcast_id}")
    return state


@broadcast.command("status")
@click.argument("broadcast_id")
@click.pass_context
@api_command
def broadcast_status(ctx: click.Context, broadcast_id: str) -> None:
    """Show a broadcast's status and its counts per channel."""
    _print_status(_client(ctx).get(f"/api/broadcasts/{broadcast_id}"))


def _print_status(state: dict[str, Any]) -> None:
    click.secho(
        f"broadcast {state['broadcast_id']}: {state['status']} "
        f"({state['phase']} for incident {state['incident_id']})",
        bold=True,
    )
    columns = (
        ("planned", 9),
        ("sent", 9),
        ("failed", 9),
        ("suppressed", 12),
        ("fell_back", 11),
        ("digested", 10),
    )
    click.echo(f"  {'channel':<8}" + "".join(f"{name:>{width}}" for name, width in columns))
    for channel, c in state["counts"].items():
        click.echo(f"  {channel:<8}" + "".join(f"{c[name]:>{width}}" for name, width in columns))
    if state.get("unreachable"):
        click.echo(f"  unreachable (no contact for the offered channels): {state['unreachable']}")


# -- package --------------------------------------------------------------------------------


@cli.command()
@click.option("--stage", default="dev", show_default=True)
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("build/dev"), show_default=True
)
@click.option(
    "--wheelhouse-only",
    is_flag=True,
    help="Only fill wheelhouse/ from PyPI (when missing or stale for requirements.txt) "
    "with the wheels the stage's Lambda runtime loads, then stop.",
)
def package(stage: str, out: Path, wheelhouse_only: bool) -> None:
    """Build the deployable CloudFormation template and zip (templates and compiled bytecode
    included), offline: dependencies come from wheelhouse/ (`make wheelhouse`, or
    --wheelhouse-only)."""
    from forewarn_cli import packaging

    target = packaging.lambda_target(stage)
    where = packaging.shown(target.wheelhouse)
    try:
        if wheelhouse_only:
            if packaging.fill_wheelhouse(target):
                wheels = packaging.platform_wheels(target.wheelhouse)
                click.echo(f"{where} filled for {target.runtime} {target.architecture}")
                click.echo("platform wheels: " + (", ".join(wheels) or "none"))
            else:
                click.echo(f"{where} is up to date with requirements.txt")
            return
        zip_path = packaging.build_package(stage, out)
    except packaging.PackagingError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"package written to {zip_path} and {out / 'sam.json'}")


def _register_analysis_commands() -> None:
    from forewarn_cli.backtest import backtest
    from forewarn_cli.sentiment_command import sentiment
    from forewarn_cli.shipments_command import shipments

    cli.add_command(backtest)
    cli.add_command(sentiment)
    cli.add_command(shipments)


_register_analysis_commands()


def main() -> None:
    cli(prog_name="forewarn")
