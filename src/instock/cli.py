"""The `instock` command: serve, migrate, seed, token, audit, worker."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup

from instock.platform.auth import Role

if TYPE_CHECKING:
    from instock.app import Container

T = TypeVar("T")

# The command groups of other modules, each imported only when it is called (or listed by
# --help): a command is a process of its own, and `instock fleet canary` or `instock sandbox
# payments` need not import the whole app (seconds of CPU at every start) to run.
LAZY_GROUPS = {
    "recs": ("instock.recommendations.cli", "recs_app"),
    "analytics": ("instock.analytics.cli", "analytics_app"),
    "reconcile": ("instock.reconciliation.cli", "reconcile_app"),
    "privacy": ("instock.privacy.cli", "privacy_app"),
    "bench": ("instock.bench.cli", "bench_app"),
    "fleet": ("instock.fleet.cli", "fleet_app"),  # HAProxy, API processes, workers: make fleet
}


class _LazyGroups(TyperGroup):
    """The root command: LAZY_GROUPS mounted as they are asked for."""

    def list_commands(self, ctx: Any) -> list[str]:
        """In the order they were mounted in before: the lazy ones after `worker`."""
        names = [name for name in super().list_commands(ctx) if name not in LAZY_GROUPS]
        at = names.index("worker") + 1 if "worker" in names else len(names)
        return [*names[:at], *LAZY_GROUPS, *names[at:]]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in LAZY_GROUPS and cmd_name not in self.commands:
            module, attribute = LAZY_GROUPS[cmd_name]
            mounted = typer.Typer()  # as app.add_typer(sub_app, name=...) mounted it
            mounted.add_typer(getattr(importlib.import_module(module), attribute), name=cmd_name)
            root: Any = typer.main.get_command(mounted)
            self.add_command(root.commands[cmd_name], cmd_name)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(help="instock: inventory that is never oversold, live.", no_args_is_help=True,
                  cls=_LazyGroups)
seed_app = typer.Typer(help="Load data.", no_args_is_help=True)
audit_app = typer.Typer(help="Prove the ledger.", no_args_is_help=True)
worker_app = typer.Typer(help="Background workers.", no_args_is_help=True)
events_app = typer.Typer(help="The event backbone: schemas, replays.", no_args_is_help=True)
dlq_app = typer.Typer(help="Events consumers gave up on.", no_args_is_help=True)
events_app.add_typer(dlq_app, name="dlq")
app.add_typer(events_app, name="events")
app.add_typer(seed_app, name="seed")
app.add_typer(audit_app, name="audit")
app.add_typer(worker_app, name="worker")
# Local stand-ins for the outside world (payments, marketplaces), each its own process.
sandbox_app = typer.Typer(help="Local simulators of outside services.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")
mail_app = typer.Typer(help="Mail in the local SMTP sink (`instock sandbox smtp`).",
                       no_args_is_help=True)
app.add_typer(mail_app, name="mail")
channels_app = typer.Typer(help="Marketplace channels.", no_args_is_help=True)
app.add_typer(channels_app, name="channels")

err = Console(stderr=True)
console = Console()


def with_container(work: Callable[[Container], Awaitable[T]]) -> T:
    """Run one async command against freshly built adapters, disposing of them after."""
    async def main() -> T:
        from instock.app import build

        container = build()
        try:
            return await work(container)
        finally:
            await container.close()

    return asyncio.run(main())


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from instock.config import get_settings
    from instock.migrate import upgrade

    upgrade(get_settings().database_url)
    err.print("[green]database migrated[/green]")


@seed_app.command("demo")
def seed_demo() -> str:
    """Load the demo catalogue (a streetwear drop and a cosmetics line in lots) and schedule
    its queue drop unless one is live. Idempotent. Returns the drop's id."""
    from instock.config import get_settings
    from instock.migrate import upgrade
    from instock.seed import seed_demo as seed
    from instock.seed import seed_demo_drop

    upgrade(get_settings().database_url)
    created = with_container(seed)
    err.print("[green]demo data loaded[/green]" if created else "demo data already present")
    drop = with_container(seed_demo_drop)
    err.print(f"demo queue drop {drop.id} ({', '.join(drop.skus)}) opens at "
              f"{drop.starts_at.isoformat()}")
    return drop.id


@app.command()
def token(role: Role = typer.Option(..., "--role", help="the role the token carries"),
          subject: str | None = typer.Option(None, "--subject", help="user or customer id")
          ) -> None:
    """Print a bearer token for the configured key (the bare token alone on stdout)."""
    from instock.app import build

    container = build()
    typer.echo(container.tokens.mint(role, subject))


@app.command()
def serve(host: str | None = typer.Option(None, "--host"),
          port: int | None = typer.Option(None, "--port"),
          demo: bool = typer.Option(False, "--demo", help="load the demo catalogue first"),
          workers: int = typer.Option(1, "--workers", help="API processes"),
          certfile: Path | None = typer.Option(
              None, "--certfile", help="serve HTTPS with this PEM certificate (chain)"),
          keyfile: Path | None = typer.Option(
              None, "--keyfile", help="the certificate's PEM private key"),
          services: str | None = typer.Option(
              None, "--services", help="only these contexts, e.g. inventory,catalog,live "
              "(INSTOCK_SERVICES; default all)")) -> None:
    """Serve the API (migrating first); over TLS with --certfile and --keyfile."""
    if (certfile is None) != (keyfile is None):
        raise typer.BadParameter("give both --certfile and --keyfile, or neither",
                                 param_hint="--certfile/--keyfile")
    only(services)
    from instock.config import get_settings
    from instock.platform import serving
    from instock.services import describe

    if demo and "INSTOCK_OUTBOUND_ALLOW_LOOPBACK" not in os.environ:
        # The demo's sandboxes (a marketplace, webhook receivers) listen on this machine.
        os.environ["INSTOCK_OUTBOUND_ALLOW_LOOPBACK"] = "true"
        get_settings.cache_clear()
    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    drop_id = None
    if demo:
        drop_id = seed_demo()
    elif settings.migrate_on_start:  # off: migrated already (`instock fleet up` does it once)
        migrate()
    from instock.app import build

    container = build()
    admin = container.tokens.mint(Role.ADMIN, "admin")
    scheme = "https" if certfile else "http"
    err.print(f"instock on [bold]{scheme}://{host}:{port}[/bold]  ·  API docs: "
              f"[bold]{scheme}://{host}:{port}/docs[/bold]  ·  database: {container.db.backend}"
             f"  ·  services: {describe(settings.served)}",
              soft_wrap=True)
    err.print(f"admin token (valid {settings.jwt_ttl_seconds // 3600} h):")
    typer.echo(admin, err=True)  # unwrapped, so it can be copied whole
    shopper = container.tokens.mint(Role.CUSTOMER, "demo-shopper")
    err.print("the drop storefront, signed in as a shopper, and the operations console:")
    typer.echo(f"{scheme}://{host}:{port}/#token={shopper}", err=True)
    typer.echo(f"{scheme}://{host}:{port}/ops#token={admin}", err=True)
    if drop_id is not None:
        err.print("watch the drop open (its waiting room, as the demo shopper):")
        typer.echo(f"{scheme}://{host}:{port}/drops/{drop_id}#token={shopper}", err=True)
    err.print(f"GraphQL (GraphiQL in a browser): [bold]{scheme}://{host}:{port}/graphql[/bold]",
              soft_wrap=True)
    with contextlib.ExitStack() as beside:
        if demo and settings.payment_provider == "sandbox":
            from instock.sandbox.payments import beside_the_demo

            if beside.enter_context(beside_the_demo(
                    settings.payments_url, f"{scheme}://{host}:{port}/v1/webhooks/payments/sandbox",
                    settings.payments_webhook_secret)):
                err.print(f"payment sandbox on [bold]{settings.payments_url}[/bold]")
        if demo:
            from instock.sandbox.smtp import beside_the_demo as smtp_beside

            if beside.enter_context(smtp_beside(settings.smtp_url, mail_dir())):
                err.print(f"SMTP sink on [bold]{settings.smtp_url}[/bold]: mail lands in "
                          f"{mail_dir()}; read it with `instock mail list` / "
                          "`instock mail show N`")
        # proxy_headers off: the app's own middleware trusts only INSTOCK_TRUSTED_PROXIES.
        # Stopped by SIGTERM it drains first (platform/serving.py): out of the balancer's
        # rotation, live clients sent away with a reconnect hint, requests in flight finished.
        serving.run("instock.app:create_app", host=host, port=port,
                    workers=workers, log_level="warning", access_log=False,
                    proxy_headers=False,
                    timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
                    timeout_keep_alive=settings.keep_alive_seconds,
                    ssl_certfile=str(certfile) if certfile else None,
                    ssl_keyfile=str(keyfile) if keyfile else None)


@audit_app.command("verify")
def audit_verify() -> None:
    """Re-fold the whole ledger: it must equal the stock levels, every chain unbroken."""
    report = with_container(lambda c: c.inventory.audit())
    if report.ok:
        err.print(f"[green]ledger verified[/green]: {report.entries} entries, "
                  f"{report.levels} stock levels, every chain intact")
        return
    err.print(f"[red]ledger check FAILED[/red]: {len(report.problems)} problems")
    for problem in report.problems[:200]:
        err.print(f"  - {problem}")
    sys.exit(1)


def only(services: str | None) -> None:
    """`--services`: this process (and the API processes it starts) serve only these."""
    if services is None:
        return
    from instock import services as names
    from instock.config import get_settings

    try:
        names.parse(services)
    except names.UnknownService as exc:
        raise typer.BadParameter(str(exc), param_hint="--services") from None
    os.environ["INSTOCK_SERVICES"] = services
    get_settings.cache_clear()


@worker_app.command("all")
def worker_all(services: str | None = typer.Option(
        None, "--services", help="only these contexts' work, e.g. orders,payments "
        "(INSTOCK_SERVICES; default all)")) -> None:
    """Everything an API process does behind the API (relay, consumers, sweeper, sagas,
    webhook delivery, channels, reconciliation; INSTOCK_RUN_* turn parts off), forever: for a
    fleet whose API processes run with those off and serve requests only."""
    only(services)
    from instock.platform.drain import run_until_signalled
    from instock.workers import worker_duties

    async def work(container: Container) -> None:
        duties = worker_duties(container)
        if not duties:
            err.print("[yellow]nothing to do: every INSTOCK_RUN_* duty is off[/yellow]")
            return
        # SIGTERM (or Ctrl-C): the batches in hand finish, then the duties stop; what is
        # received and not yet acked is redelivered to the other workers anyway.
        await run_until_signalled(duties, container.settings.shutdown_timeout_seconds)

    with_container(work)


@worker_app.command("sweeper")
def worker_sweeper(interval: float = typer.Option(1.0, "--interval")) -> None:
    """Expire overdue reservations and lots, forever (several may run)."""
    from instock.workers import run_sweeper

    with_container(lambda c: run_sweeper(c.inventory, interval))


@worker_app.command("relay")
def worker_relay() -> None:
    """Publish the outbox to the bus, forever (several may run: one leads, others stand by)."""
    with_container(lambda c: c.relay().run())


@worker_app.command("sagas")
def worker_sagas(poll: float = typer.Option(0.5, "--poll", help="seconds between rounds")) -> None:
    """Run due checkout, cancellation and return sagas, forever (several may run: each saga
    is leased to one; one whose runner died is taken over when its lease runs out)."""
    from instock.workers import run_sagas

    with_container(lambda c: run_sagas(c.orders.runner, poll))


@worker_app.command("webhooks")
def worker_webhooks() -> None:
    """Deliver outbound webhooks, forever (several may run: each claims its own deliveries)."""
    from instock.workers import run_webhook_delivery

    with_container(lambda c: run_webhook_delivery(c.webhooks))


@worker_app.command("notifications")
def worker_notifications() -> None:
    """Send due notifications and back-in-stock waves, forever (several may run: each claims
    its own notifications, each SKU's wave is sent by one)."""
    from instock.workers import run_notifications

    async def both(c: Container) -> None:
        await asyncio.gather(run_notifications(c.notifications), c.waitlist.run_waves())

    with_container(both)


@worker_app.command("reconcile")
def worker_reconcile() -> None:
    """Reconcile stock against its ledger, reservations and outbox every
    INSTOCK_RECONCILE_INTERVAL_SECONDS, forever (several may run: one leads at a time)."""
    with_container(lambda c: c.reconciliation.run())


@worker_app.command("channels")
def worker_channels() -> None:
    """Push channel stock to marketplaces and carry out marketplace orders, forever (several
    may run: one pushes to a channel at a time, each order is claimed by one)."""
    from instock.workers import run_channel_worker

    with_container(run_channel_worker)


@sandbox_app.command("marketplace")
def sandbox_marketplace(
        webhook_url: str = typer.Option(..., "--webhook-url",
                                        help="where order webhooks go (instock's "
                                             "/v1/webhooks/marketplaces/{channel})"),
        webhook_secret: str = typer.Option(..., "--webhook-secret"),
        api_key: str | None = typer.Option(None, "--api-key",
                                           help="require this bearer key on the seller API"),
        host: str = typer.Option("127.0.0.1", "--host"),
        port: int = typer.Option(8200, "--port")) -> None:
    """Run the marketplace simulator (listings, orders, signed webhooks; /_sim controls)."""
    from instock.sandbox.marketplace import serve as serve_marketplace

    err.print(f"marketplace simulator on [bold]http://{host}:{port}[/bold] -> {webhook_url}")
    serve_marketplace(host, port, webhook_url, webhook_secret, api_key)


def mail_dir() -> Path:
    from instock.config import get_settings

    settings = get_settings()
    return settings.mail_dir or settings.state_dir / "mail"


@sandbox_app.command("smtp")
def sandbox_smtp(port: int = typer.Option(8025, "--port"),
                 host: str = typer.Option("127.0.0.1", "--host"),
                 directory: Path | None = typer.Option(
                     None, "--dir", help="where messages are kept (INSTOCK_MAIL_DIR, else "
                                         "<state dir>/mail)")) -> None:
    """Run the local SMTP sink: every message received is kept as a file (`instock mail`)."""
    from instock.sandbox.smtp import serve as serve_smtp

    where = directory or mail_dir()
    err.print(f"SMTP sink on [bold]smtp://{host}:{port}[/bold], mail kept in {where}")
    serve_smtp(host, port, where)


@sandbox_app.command("sms")
def sandbox_sms(port: int = typer.Option(8026, "--port"),
                host: str = typer.Option("127.0.0.1", "--host")) -> None:
    """Run the SMS provider sandbox (POST /messages; faults set via /_sandbox/config)."""
    from instock.sandbox.messages import serve as serve_messages

    err.print(f"SMS sandbox on [bold]http://{host}:{port}[/bold] (INSTOCK_SMS_URL)")
    serve_messages("sms", host, port)


@sandbox_app.command("slack")
def sandbox_slack(port: int = typer.Option(8027, "--port"),
                  host: str = typer.Option("127.0.0.1", "--host")) -> None:
    """Run a Slack incoming-webhook sandbox (POST /webhook; faults via /_sandbox/config)."""
    from instock.sandbox.messages import serve as serve_messages

    err.print(f"Slack sandbox on [bold]http://{host}:{port}/webhook[/bold] "
              "(INSTOCK_SLACK_WEBHOOK_URL)")
    serve_messages("slack", host, port)


@mail_app.command("list")
def mail_list(directory: Path | None = typer.Option(None, "--dir"),
              last: int = typer.Option(20, "--last", help="how many of the newest")) -> None:
    """The newest messages in the local SMTP sink: number, date, to, subject."""
    from rich.table import Table

    from instock.sandbox.smtp import received

    found = received(directory or mail_dir())
    table = Table("#", "date", "to", "subject")
    for number, item in list(enumerate(found, 1))[-last:]:
        table.add_row(str(number), str(item.message["Date"]), str(item.message["To"]),
                      str(item.message["Subject"]))
    console.print(table)
    err.print(f"{len(found)} messages in {directory or mail_dir()}")


@mail_app.command("show")
def mail_show(number: int = typer.Argument(..., help="as `instock mail list` numbers them"),
              directory: Path | None = typer.Option(None, "--dir"),
              html: bool = typer.Option(False, "--html", help="the HTML part, not the text")
              ) -> None:
    """Print one message of the local SMTP sink: its headers and its text (or HTML) part."""
    from instock.sandbox.smtp import received

    found = received(directory or mail_dir())
    if not 1 <= number <= len(found):
        err.print(f"[red]no message {number}[/red] ({len(found)} in the sink)")
        raise typer.Exit(1)
    item = found[number - 1]
    for name in ("Date", "From", "To", "Subject", "Message-ID", "List-Unsubscribe",
                 "List-Unsubscribe-Post"):
        if item.message[name]:
            typer.echo(f"{name}: {item.message[name]}")
    typer.echo("")
    typer.echo(item.body("html" if html else "plain"))


@sandbox_app.command("payments")
def sandbox_payments(
        port: int = typer.Option(8100, "--port"),
        host: str = typer.Option("127.0.0.1", "--host"),
        latency_ms: float = typer.Option(0, "--latency-ms", help="added to every API answer"),
        webhook_url: str | None = typer.Option(
            None, "--webhook-url",
            help="where events go (instock's /v1/webhooks/payments/sandbox)"),
        webhook_secret: str = typer.Option("whsec_instock_sandbox", "--webhook-secret")) -> None:
    """Run the payment provider sandbox (Stripe's wire format; faults set via /_sandbox/config)."""
    from instock.sandbox.payments import Config, serve

    err.print(f"payment sandbox on [bold]http://{host}:{port}[/bold]"
              + (f" -> {webhook_url}" if webhook_url else ""))
    serve(host, port, Config(latency_ms=latency_ms, webhook_url=webhook_url,
                             webhook_secret=webhook_secret))


@channels_app.command("reconcile")
def channels_reconcile(
        channel: str = typer.Argument(..., help="the channel (with a marketplace connection)"),
        repair: bool = typer.Option(True, "--repair/--dry-run",
                                    help="push our ATS where the marketplace differs"),
        as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Compare a marketplace's listings with our available-to-sell; repair the drift."""
    from rich.table import Table

    from instock.channels.connector import ConnectorError
    from instock.platform.errors import InstockError

    try:
        report = with_container(lambda c: c.channels.reconcile(channel, repair))
    except (InstockError, ConnectorError) as exc:  # no channel, no connection, marketplace down
        err.print(f"[red]reconcile failed[/red]: {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
        return
    table = Table(title=f"{channel}: {len(report.drift)} of {report.checked} SKUs drifted"
                        + (" (dry run)" if report.dry_run else ""))
    for column in ("sku", "ours", "theirs", "repaired"):
        table.add_column(column)
    for row in report.as_dict()["drift"]:
        table.add_row(row["sku"], str(row["ours"]),
                      "-" if row["theirs"] is None else str(row["theirs"]),
                      "yes" if row["repaired"] else "no")
    Console().print(table)


def _consumer_name(container: Container, name: str) -> str:
    if name not in container.consumer_specs():
        err.print(f"[red]unknown consumer {name!r}[/red]; known: "
                  f"{', '.join(sorted(container.consumer_specs()))}")
        raise typer.Exit(2)
    return name


@worker_app.command("consume")
def worker_consume(name: str = typer.Argument(..., help="the consumer to run")) -> None:
    """Run one durable consumer forever (several processes may run the same one)."""
    from instock.workers import run_consumer

    with_container(lambda c: run_consumer(c.consumer(_consumer_name(c, name))))


@events_app.command("schemas")
def events_schemas(directory: Path = typer.Option(Path("docs/events"), "--dir"),
                   check: bool = typer.Option(False, "--check",
                                              help="fail if a schema file is stale")) -> None:
    """Write the JSON Schema of every event type (generated from the models)."""
    from instock.platform.bus import schemas

    if check:
        stale = schemas.check_schemas(directory)
        for name in stale:
            err.print(f"[red]stale[/red] {name}")
        raise typer.Exit(1 if stale else 0)
    written = schemas.write_schemas(directory)
    err.print(f"[green]{len(written)} schemas written[/green] to {directory}")


@events_app.command("replay")
def events_replay(consumer: str = typer.Option(..., "--consumer"),
                  since: datetime = typer.Option(..., "--since", help="RFC 3339 time (UTC)"),
                  ) -> None:
    """Make a consumer process again every event the bus keeps from a point in time."""
    async def work(c: Container) -> dict[str, int]:
        return await c.consumer(_consumer_name(c, consumer)).replay(_utc(since))

    typer.echo(json.dumps(with_container(work)))


@dlq_app.command("list")
def dlq_list(consumer: str | None = typer.Option(None, "--consumer"),
             replayed: bool = typer.Option(False, "--replayed", help="include replayed ones"),
             limit: int = typer.Option(100, "--limit")) -> None:
    """Dead letters as JSON lines: the consumer, the event, why it failed."""
    from instock.platform.bus import inbox

    async def work(c: Container) -> list[inbox.DeadLetter]:
        async with c.db.read() as conn:
            return await inbox.list_dead(conn, consumer, replayed, limit)

    for letter in with_container(work):
        typer.echo(json.dumps({"id": letter.id, "consumer": letter.consumer,
                               "event_id": letter.event_id, "type": letter.type,
                               "error": letter.error, "attempts": letter.attempts,
                               "failed_at": letter.failed_at.isoformat(),
                               "replayed_at": letter.replayed_at.isoformat()
                               if letter.replayed_at else None}))


@dlq_app.command("replay")
def dlq_replay(consumer: str | None = typer.Option(None, "--consumer"),
               letter_id: str | None = typer.Option(None, "--id", help="one dead letter")) -> None:
    """Run dead-lettered events through their consumer again; prints each outcome."""
    from instock.platform.bus import inbox

    async def work(c: Container) -> list[dict[str, str]]:
        async with c.db.read() as conn:
            letters = await inbox.list_dead(conn, consumer, limit=10_000)
        outcomes = []
        for letter in letters:
            if letter_id and letter.id != letter_id:
                continue
            outcome = await c.consumer(_consumer_name(c, letter.consumer)).replay_dead(letter)
            outcomes.append({"id": letter.id, "event_id": letter.event_id, "outcome": outcome})
        return outcomes

    for outcome in with_container(work):
        typer.echo(json.dumps(outcome))


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def main() -> None:
    app()
