"""The small pieces every handler answers with: JSON and plain replies, a posted
form's values and its way back, and how a time is shown."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


def own_page(back: str | None) -> str:
    """Where a Cancel or Back link of a posted form leads: ``back`` when it is a path
    of this dashboard, else the overview. The form is the poster's to fill, so this
    refuses a ``javascript:`` URL, another site, and what a browser reads as one
    (``//host``, ``/\\host``, a tab or newline it drops)."""
    if not back or not back.startswith("/") or back.startswith("//"):
        return "/"
    if "\\" in back or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in back):
        return "/"
    return back


def plain(
    request: Request, message: str, status: int, headers: dict[str, str] | None = None
) -> Response:
    """A refusal before any page can be drawn: JSON under /api/, plain text elsewhere."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status, headers=headers)
    return Response(message + "\n", status, headers=headers, media_type="text/plain")


def field(value: Any) -> str | None:
    """A form field's text; an uploaded file in its place counts as absent."""
    return value if isinstance(value, str) else None


def as_json(data: Any, status: int = 200) -> Response:
    """``data`` as JSON, the summaries' dataclasses as objects."""
    return Response(json.dumps(data, default=_jsonable), status, media_type="application/json")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return vars(value)
    return str(value)


def timestamp(value: Any) -> str:
    """A stored time as UTC for the pages; none yet as a dash."""
    if value in (None, "", 0):
        return "—"
    return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
