"""The failed-document dashboard: what Flower cannot show or do for failed documents.

::

    from recovery.dashboard import serve
    serve("redis://localhost:6379/0", RecoveryConfig.from_env())   # http://127.0.0.1:5580

Pages: the overview (totals, recovery metrics, breakers, failures by age, category,
worker and query, recoveries over time), error groups (one row per signature, retry
or delete a group), documents (failed / waiting / dead tabs with filters and cursor
paging, a page per document) and the dry-run preview. Every action — retry, delete,
purge dead, run recovery now — is a confirmed, CSRF-protected POST that calls the same
manager operation as the CLI and is logged with who did it. ``/api/`` serves the same
data and actions as JSON.

Built on Starlette, Jinja2 and uvicorn (the ``dashboard`` extra). Charts are drawn on
the server as SVG and CSS bars, and the live refresh is a small script in the package:
the pages work offline, with nothing fetched from a CDN. Credentials come from the
environment (:mod:`recovery.dashboard.auth`); :func:`serve` refuses to listen beyond
loopback without them, and answers only requests addressed to a name of this machine,
its address or an allowed host (against DNS rebinding), with them too.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable

from celery import Celery

from recovery.access import Credentials, require_private
from recovery.config import RecoveryConfig
from recovery.errors import CannotListen

from .app import create_app
from .auth import VARIABLES, trusted_hosts

__all__ = ["create_app", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5580


def serve(
    redis_url: str,
    config: RecoveryConfig,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    celery_app: Celery | None = None,
    allowed_hosts: Iterable[str] = (),
) -> None:
    """Serve the dashboard with uvicorn until interrupted; its actions send through
    ``celery_app`` when given, and it answers requests addressed to a loopback name,
    ``host`` or one of ``allowed_hosts`` (see :func:`create_app`). Raises ConfigError,
    before listening, on a non-loopback ``host`` without credentials in the
    environment or a bad allowed host, and CannotListen when it cannot bind."""
    import uvicorn

    credentials = Credentials.from_env(VARIABLES)
    require_private(host, credentials, VARIABLES, "the dashboard can retry and delete")
    app = create_app(
        redis_url,
        config,
        credentials=credentials,
        celery_app=celery_app,
        host=host,
        allowed_hosts=allowed_hosts,
    )
    sockets = _listen(host, port)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    log = logging.getLogger("recovery.dashboard")
    log.setLevel(logging.INFO)
    for sock in sockets:  # uvicorn says where it listens only on sockets it binds itself
        name, bound = sock.getsockname()[:2]
        log.info(
            "docrecovery dashboard on http://%s:%d/ (%s; press CTRL+C to quit)",
            f"[{name}]" if sock.family == socket.AF_INET6 else name,
            bound,
            "credentials required" if credentials.required else "no credentials, loopback only",
        )
    # any other name gets 400 "Invalid host header": say which names, and how to add one
    log.info(
        "docrecovery dashboard answers requests addressed to %s"
        " (add names with --allowed-host or DOCRECOVERY_DASHBOARD_ALLOWED_HOSTS)",
        ", ".join(trusted_hosts(host, allowed_hosts)),
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", proxy_headers=False))
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass  # uvicorn has shut down; Ctrl-C is how this server is meant to stop
    finally:
        for sock in sockets:
            sock.close()


def _listen(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address ``host`` resolves to, as uvicorn would bind them;
    bound here so a taken port or an unknown host is a CannotListen naming the address,
    where uvicorn logs it and exits 3."""
    sockets: list[socket.socket] = []
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        # an IPv6 socket beside an IPv4 one takes IPv6 only, or the two would clash;
        # alone (``::``) it keeps the system's dual stack, as uvicorn's would
        both = {family for family, *_ in found} >= {socket.AF_INET, socket.AF_INET6}
        for family, kind, proto, _, address in dict.fromkeys(found):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and both:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise CannotListen(host, port, exc) from exc
    return sockets
