"""The commands that serve until interrupted: ``metrics`` (Prometheus) and
``dashboard`` (the failed-document web UI).

Both read the tracker of ``--redis-url`` with the command's recovery settings, so a
`celery -A tasks docrecovery metrics` counts under the app's own config; the
dashboard's retries go through the command's Celery app, under Celery the one it
loaded, with its broker. Their
credentials come from the environment only (a command line is visible in ``ps``); on
an address beyond loopback without them, each refuses to start (exit 2), as on an
address it cannot listen on (a taken port, a host that does not resolve).
"""

from __future__ import annotations

import click

from recovery.cli.runtime import Session, operation, shared


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=9808, show_default=True)
@shared(data=False)
@operation
def metrics(session: Session, host: str, port: int) -> int:
    """Serve the tracker's Prometheus metrics at /metrics, read from Redis at each
    scrape (basic auth: DOCRECOVERY_METRICS_USER and DOCRECOVERY_METRICS_PASSWORD).

    \b
    Examples:
      docrecovery metrics
      DOCRECOVERY_METRICS_USER=prom DOCRECOVERY_METRICS_PASSWORD=... \\
        docrecovery metrics --host 0.0.0.0 --port 9808
    """
    from recovery import exporter

    exporter.serve(session.url, session.config(), host, port)
    return 0


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=5580, show_default=True)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    metavar="NAME",
    multiple=True,
    envvar="DOCRECOVERY_DASHBOARD_ALLOWED_HOSTS",
    help="A Host name to answer besides 127.0.0.1, localhost, [::1] and --host "
    "(repeat it; *.example.com for a domain); no other is answered, with credentials too.",
)
@shared(data=False)
@operation
def dashboard(session: Session, host: str, port: int, allowed_hosts: tuple[str, ...]) -> int:
    """Serve the failed-document dashboard (the `dashboard` extra). Basic auth:
    DOCRECOVERY_DASHBOARD_USER and DOCRECOVERY_DASHBOARD_PASSWORD; a bearer token for
    scripts: DOCRECOVERY_DASHBOARD_TOKEN.

    \b
    Examples:
      docrecovery dashboard
      docrecovery dashboard --allowed-host dash.internal   # a name of 127.0.0.1
      DOCRECOVERY_DASHBOARD_USER=ops DOCRECOVERY_DASHBOARD_PASSWORD=... \\
        docrecovery dashboard --host 0.0.0.0 --allowed-host dash.example.com
    """
    try:
        from recovery import dashboard as web
    except ImportError as exc:
        raise click.UsageError(
            "the dashboard needs the `dashboard` extra "
            f"(pip install 'docrecovery[dashboard]'): {exc}"
        ) from exc
    web.serve(
        session.url,
        session.config(),
        host,
        port,
        celery_app=session.app(),
        allowed_hosts=allowed_hosts,
    )
    return 0
