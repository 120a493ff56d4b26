"""`flask --app authgateway webhooks ...`: endpoints, their deliveries, and delivery for
cron. Thin wrappers over ``authgateway.webhooks``."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from . import delivery
from . import webhooks as webhooks_module
from .cli import Group, keyring_checked
from .events import TYPES


@click.group("webhooks", cls=Group)
def webhooks() -> None:
    """Signed webhooks (Standard Webhooks) for credential and flow events."""


def _stop_on_error(function, *args):
    try:
        return function(*args)
    except webhooks_module.WebhookError as exc:
        raise click.ClickException(str(exc)) from None


@webhooks.command("add")
@click.argument("url")
@click.option("--events", "event_types", multiple=True, metavar="TYPE",
              type=click.Choice(TYPES),
              help="Send only these event types (repeat the option); default: all.")
@with_appcontext
def webhooks_add(url: str, event_types: tuple[str, ...]) -> None:
    """Send events to URL, signed with a new secret that is printed this once."""
    keyring_checked()
    secret = _stop_on_error(webhooks_module.add_endpoint, url, list(event_types))
    click.echo(secret)
    click.echo("# The signing secret: give it to the receiver now, it is not shown again.",
               err=True)


@webhooks.command("list")
@with_appcontext
def webhooks_list() -> None:
    """Endpoints, the events they get, and their pending and failed deliveries."""
    rows = webhooks_module.list_endpoints()
    if not rows:
        click.echo("No webhook endpoints; add one with `webhooks add URL`.")
    for row, pending, failed in rows:
        click.echo(f"{row.url}  events={row.events or 'all'}  pending={pending}  "
                   f"failed={failed}  added={row.created_at.isoformat(timespec='seconds')}")


@webhooks.command("remove")
@click.argument("url")
@with_appcontext
def webhooks_remove(url: str) -> None:
    """Stop sending to URL and forget its deliveries."""
    _stop_on_error(webhooks_module.remove_endpoint, url)
    click.echo(f"Removed {url}.")


@webhooks.command("test")
@click.argument("url")
@with_appcontext
def webhooks_test(url: str) -> None:
    """Send a signed webhook.ping to the endpoint URL now. Exits 1 unless it answers 2xx."""
    keyring_checked()
    status, error = _stop_on_error(webhooks_module.ping, url)
    if error:
        raise click.ClickException(f"The endpoint did not accept the ping ({error}).")
    click.echo(f"The endpoint answered {status}.")


@webhooks.command("deliveries")
@click.option("--failed", "failed_only", is_flag=True, help="Only those given up.")
@click.option("-n", "--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@with_appcontext
def webhooks_deliveries(failed_only: bool, limit: int) -> None:
    """The newest deliveries, oldest first: id, state, attempts, last answer, event, URL."""
    rows = webhooks_module.recent_deliveries(failed_only=failed_only, limit=limit)
    if not rows:
        click.echo("No deliveries match.")
    for row in rows:
        last = row.last_error or (str(row.last_status) if row.last_status else "-")
        click.echo(f"{row.id:>6}  {row.created_at.isoformat(timespec='seconds')}  "
                   f"{row.state:9}  attempts={row.attempts}  last={last}  "
                   f"{row.event_type}  {row.event_id}  {row.url}")


@webhooks.command("redeliver")
@click.argument("delivery_id", type=int)
@with_appcontext
def webhooks_redeliver(delivery_id: int) -> None:
    """Send a delivery again (same webhook-id), e.g. one that failed."""
    _stop_on_error(webhooks_module.redeliver, delivery_id)
    click.echo(f"Delivery {delivery_id} is due now; a serving process or `webhooks deliver` "
               "sends it.")


@webhooks.command("deliver")
@with_appcontext
def webhooks_deliver() -> None:
    """Send every due delivery and exit: for cron, when AUTH_GATEWAY_WEBHOOK_WORKER is off.
    Safe beside serving processes and other runs."""
    keyring_checked()
    click.echo(f"Delivered {delivery.deliver_due()} events.")


@webhooks.command("purge")
@click.option("--days", type=click.IntRange(1), default=None,
              help="Keep this many days; default AUTH_GATEWAY_WEBHOOK_KEEP_DAYS (7).")
@with_appcontext
def webhooks_purge(days: int | None) -> None:
    """Delete delivered and failed deliveries finished more than --days ago (serving
    processes do this hourly)."""
    days = days or current_app.config["WEBHOOK_KEEP_DAYS"]
    click.echo(f"Purged {webhooks_module.purge(days)} deliveries older than {days} days.")
