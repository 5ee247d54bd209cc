"""The dashboard's routes: HTML pages, their confirmed actions, and the JSON API.

Pages (GET) only read. Every action is a POST that names what it acts on — ids, an
error group, or the documents page's filters — and, from a page, is answered first
with a confirmation that shows what it would touch; only the confirmed POST acts,
through the same manager operation as the CLI (``retry``, ``delete``, ``purge``, a
locked run, the dry-run ``preview``), and is logged with who asked
(:mod:`recovery.dashboard.actions`). ``/api/`` takes the same filters and actions as
JSON, for scripts.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from celery import Celery
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from recovery.access import Credentials
from recovery.config import RecoveryConfig
from recovery.errors import TrackerError
from recovery.manager import RecoveryManager
from recovery.summaries import Preview

from . import filters, views
from .actions import ACTIONS, Actions, api_fields
from .auth import (
    CSRF_COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    VARIABLES,
    CsrfTokens,
    cross_origin,
    trusted_hosts,
)
from .filters import BadRequest
from .replies import as_json, field, own_page, plain, timestamp

FLOWER_ENV = "DOCRECOVERY_FLOWER_URL"
#: Documents a confirmation page names one by one; the rest are counted.
CONFIRM_SHOWN = 20
#: Seconds between refreshes of the overview and error groups.
REFRESH_SECONDS = 10
#: Methods that only read: the ones another site's page may send.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Forbidden(Exception):
    """Raised when a POST lacks a CSRF token matching the browser's cookie."""


class NotFound(Exception):
    """Raised when a request names a document or action that does not exist."""


class Dashboard:
    """The handlers, around one manager (one Redis connection pool, one sender app)."""

    def __init__(
        self, manager: RecoveryManager, credentials: Credentials, flower_url: str | None
    ) -> None:
        self.manager = manager
        self.credentials = credentials
        self.flower_url = flower_url
        self.actions = Actions(manager)
        self.csrf = CsrfTokens()
        env = Environment(
            loader=PackageLoader("recovery.dashboard", "templates"),
            autoescape=select_autoescape(default=True),
        )
        env.filters["ts"] = timestamp
        env.filters["pct"] = lambda value: f"{float(value):.0%}"
        self.templates = Jinja2Templates(env=env)

    # --- plumbing --------------------------------------------------------------------

    async def guard(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        """Refuse a POST from another site's page, authenticate, hand the request its
        CSRF token, set the cookie when new."""
        if request.method not in SAFE_METHODS:
            source = cross_origin(request.headers)
            if source is not None:
                return plain(
                    request,
                    f"cross-origin request refused: it comes from {source!r}, not from a page"
                    f" of this dashboard ({request.headers.get('host', '')})",
                    403,
                )
        if self.credentials.required:
            found = self.credentials.who(request.headers.get("authorization"))
            if found is None:
                return self._refuse(request)
            request.state.who, request.state.bearer = found
        else:
            host = request.client.host if request.client else "unknown"
            request.state.who, request.state.bearer = f"anonymous@{host}", False
        token = self.csrf.read(request.cookies.get(CSRF_COOKIE))
        request.state.cookie_token = token
        cookie = None
        if token is None:
            token, cookie = self.csrf.issue()
        request.state.csrf = token
        response = await call_next(request)
        if cookie is not None:
            response.set_cookie(CSRF_COOKIE, cookie, httponly=True, samesite="strict")
        return response

    def _refuse(self, request: Request) -> Response:
        message = "authentication required: this dashboard needs its credentials"
        headers = {"WWW-Authenticate": self.credentials.challenge("docrecovery")}
        return plain(request, message, 401, headers)

    async def check_csrf(self, request: Request, given: str | None) -> None:
        if request.state.bearer:
            return  # a bearer token is never sent by a browser on its own
        if not given:
            raise Forbidden(
                f"missing CSRF token: send the {CSRF_FIELD!r} field of the dashboard's own"
                f" form (or the X-CSRF-Token header from /api/csrf); reload the page"
            )
        expected = request.state.cookie_token
        if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
            raise Forbidden(
                "CSRF token does not match this browser's dashboard cookie: reload the page"
                " and try again"
            )

    def page(
        self, request: Request, name: str, context: dict[str, Any], status: int = 200
    ) -> Response:
        context = {
            "who": request.state.who,
            "csrf_token": request.state.csrf,
            "csrf_field": CSRF_FIELD,
            "refresh": 0,
            **context,
        }
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking store or manager call off the event loop."""
        return await run_in_threadpool(fn, *args)

    # --- pages -------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        filters.check_known(request.query_params, ())
        data = await self.call(views.overview, self.manager)
        shown = views.charts(data)
        return self.page(
            request,
            "overview.html",
            {
                "nav": "overview",
                "refresh": REFRESH_SECONDS,
                "charts": shown,
                "series": shown["series"],
                **data,
            },
        )

    async def groups(self, request: Request) -> Response:
        filters.check_known(request.query_params, ())
        data = await self.call(views.groups, self.manager)
        return self.page(
            request, "groups.html", {"nav": "groups", "refresh": REFRESH_SECONDS, "groups": data}
        )

    async def documents(self, request: Request) -> Response:
        params = dict(request.query_params)
        listing = filters.listing(params)
        data = await self.call(views.documents, self.manager, listing)
        keep = {k: v for k, v in params.items() if k not in ("after", "tab") and v}
        return self.page(
            request,
            "documents.html",
            {"nav": "documents", "params": keep, "tabs": filters.TABS, **data},
        )

    async def document(self, request: Request) -> Response:
        data = await self._detail(request)
        return self.page(request, "document.html", {"nav": "documents", **data})

    async def _detail(self, request: Request) -> dict[str, Any]:
        doc_id = filters.doc_ids([request.path_params["doc_id"]])[0]
        data: dict[str, Any] | None = await self.call(
            views.detail, self.manager, doc_id, self.flower_url
        )
        if data is None:
            raise NotFound(f"no tracked document {doc_id!r} (recovered, deleted or never failed)")
        return data

    async def preview(self, request: Request) -> Response:
        filters.check_known(request.query_params, ())
        plan: Preview = await self.call(self.manager.preview)
        return self.page(request, "preview.html", {"nav": "preview", "plan": plan})

    async def action(self, request: Request) -> Response:
        action = self._action(request)
        form = await request.form()
        await self.check_csrf(request, field(form.get(CSRF_FIELD)))
        fields = {k: field(v) or "" for k, v in form.multi_items() if k != "ids"}
        fields["ids"] = [field(v) or "" for v in form.getlist("ids")]  # type: ignore[assignment]
        target = await self.call(self.actions.target, action, fields)
        if fields.get("confirm") != "yes":
            shown = await self.call(
                self.manager.tracker.reports.get_records, target.ids[:CONFIRM_SHOWN]
            )
            return self.page(
                request,
                "confirm.html",
                {
                    "action": action,
                    "target": target,
                    "shown": shown,
                    "fields": fields,
                    "back": own_page(fields.get("back")),
                    "nav": "",
                },
            )
        result = await self.call(self.actions.act, action, target, request.state.who)
        back = own_page(fields.get("back"))
        return self.page(
            request,
            "done.html",
            {"action": action, "target": target, "result": result, "back": back, "nav": ""},
        )

    def _action(self, request: Request) -> str:
        action = str(request.path_params["action"])
        if action not in ACTIONS:
            raise NotFound(f"no action {action!r}; actions: {', '.join(ACTIONS)}")
        return action

    # --- API -----------------------------------------------------------------------------

    async def api_overview(self, request: Request) -> Response:
        filters.check_known(request.query_params, ())
        return as_json(await self.call(views.overview, self.manager))

    async def api_groups(self, request: Request) -> Response:
        filters.check_known(request.query_params, ())
        return as_json({"groups": await self.call(views.groups, self.manager)})

    async def api_documents(self, request: Request) -> Response:
        listing = filters.listing(dict(request.query_params))
        return as_json(await self.call(views.documents, self.manager, listing))

    async def api_document(self, request: Request) -> Response:
        return as_json(await self._detail(request))

    async def api_preview(self, request: Request) -> Response:
        filters.check_known(request.query_params, ())
        preview: Preview = await self.call(self.manager.preview)
        return as_json(preview.to_dict())

    async def api_csrf(self, request: Request) -> Response:
        return as_json({"csrf_token": request.state.csrf, "header": "X-CSRF-Token"})

    async def api_action(self, request: Request) -> Response:
        action = self._action(request)
        await self.check_csrf(request, request.headers.get(CSRF_HEADER))
        raw = await request.body()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise BadRequest('the body must be a JSON object, e.g. {"ids": [...]}')
        fields = api_fields(action, body)
        target = await self.call(self.actions.target, action, fields)
        result = await self.call(self.actions.act, action, target, request.state.who)
        return as_json({"action": action, "target": target.description, **result})


def _errors(
    dashboard: Dashboard,
) -> dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]]:
    """Each error as a clear status and message: JSON under /api/, a page elsewhere."""

    def handler(status: int) -> Callable[[Request, Exception], Awaitable[Response]]:
        async def handle(request: Request, exc: Exception) -> Response:
            message = str(exc)
            if status >= 500:
                message = f"the tracker's Redis did not answer: {exc}"
            if request.url.path.startswith("/api/"):
                return as_json({"error": message}, status)
            return dashboard.page(
                request, "error.html", {"status": status, "message": message, "nav": ""}, status
            )

        return handle

    return {
        BadRequest: handler(400),
        Forbidden: handler(403),
        NotFound: handler(404),
        TrackerError: handler(503),
    }


def create_app(
    redis_url: str,
    config: RecoveryConfig,
    *,
    credentials: Credentials | None = None,
    flower_url: str | None = None,
    manager: RecoveryManager | None = None,
    celery_app: Celery | None = None,
    host: str | None = None,
    allowed_hosts: Iterable[str] = (),
) -> Starlette:
    """The dashboard as an ASGI app over the tracker at ``redis_url``. Credentials
    default to the environment's (see :mod:`recovery.dashboard.auth`), the Flower
    link to ``DOCRECOVERY_FLOWER_URL``. Retries are sent through ``celery_app`` (the
    app ``celery -A`` loaded, with its broker), else a sender app of the environment's
    broker. It answers requests addressed to a loopback name, ``host`` (the address it
    listens on) or one of ``allowed_hosts``, whatever the credentials: see
    :func:`recovery.dashboard.auth.trusted_hosts`."""
    credentials = Credentials.from_env(VARIABLES) if credentials is None else credentials
    names = trusted_hosts(host, allowed_hosts)
    manager = manager or RecoveryManager(redis_url, config, app=celery_app)
    dashboard = Dashboard(manager, credentials, flower_url or os.environ.get(FLOWER_ENV) or None)
    d = dashboard
    routes = [
        Route("/", d.overview),
        Route("/groups", d.groups),
        Route("/documents", d.documents),
        Route("/documents/{doc_id}", d.document),
        Route("/preview", d.preview),
        Route("/actions/{action}", d.action, methods=["POST"]),
        Route("/api/overview", d.api_overview),
        Route("/api/groups", d.api_groups),
        Route("/api/documents", d.api_documents),
        Route("/api/documents/{doc_id}", d.api_document),
        Route("/api/preview", d.api_preview),
        Route("/api/csrf", d.api_csrf),
        Route("/api/{action}", d.api_action, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("recovery.dashboard", "static")]), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=names, www_redirect=False),
            Middleware(BaseHTTPMiddleware, dispatch=dashboard.guard),
        ],
        exception_handlers=_errors(dashboard),
    )
    app.state.dashboard = dashboard
    return app
