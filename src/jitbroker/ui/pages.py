"""Rendering the approver page: templates, security headers, flash messages, errors as HTML."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from jitbroker.errors import BrokerError, Unauthenticated
from jitbroker.identity.dependencies import get_broker
from jitbroker.ui.dependencies import (
    COOKIE_PATH,
    CSRF_COOKIE,
    CSRF_FIELD,
    DEV_SESSION_COOKIE,
    csrf_token_for,
    dev_mode,
)

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
# No scripts, no external assets; the inline <style> is the only thing a page loads.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
FLASH_MESSAGES = {
    "approved": "You approved {grant}. The workload can now issue its credential.",
    "voted": "Your approval of {grant} is recorded; the request still needs more approvals.",
    "denied": "You denied {grant}. It can no longer be issued.",
    "acknowledged": "You acknowledged the break-glass grant {grant}.",
    "signed_in": "You are signed in.",
    "signed_out": "You are signed out.",
}
GRANT_ID_SHAPE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def format_duration(seconds: int) -> str:
    """`899` → `14m 59s`, `600` → `10m`, `3600` → `1h`."""
    hours, rest = divmod(max(0, int(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    parts = ((hours, "h"), (minutes, "m"), (secs, "s"))
    shown = [f"{value}{unit}" for value, unit in parts if value]
    return " ".join(shown) or "0s"


def format_time(moment: datetime) -> str:
    """A UTC timestamp to the second."""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def sentence(text: str) -> str:
    """A message as a sentence: first letter upper-cased (only), a final full stop."""
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


TEMPLATES.env.filters["duration"] = format_duration
TEMPLATES.env.filters["sentence"] = sentence
TEMPLATES.env.filters["utc"] = format_time


def flash_message(done: str | None, grant_id: str | None) -> str | None:
    """The confirmation for a redirect's `?done=…&grant=…`; only known messages are shown."""
    template = FLASH_MESSAGES.get(done or "")
    if template is None:
        return None
    grant = grant_id if grant_id and GRANT_ID_SHAPE.match(grant_id) else "the request"
    return template.format(grant=grant)


def redirect_with_flash(path: str, done: str, grant_id: str | None = None) -> RedirectResponse:
    """Redirect-after-POST (303) to `path`, carrying the confirmation in the query string."""
    query = f"?done={done}" + (f"&grant={grant_id}" if grant_id else "")
    return RedirectResponse(path + query, status_code=303)


def render(
    request: Request, template: str, context: dict[str, Any], *, status_code: int = 200
) -> Response:
    """Render a page, with the CSRF token in the context and its double-submit cookie set."""
    broker = get_broker(request)
    csrf_token = csrf_token_for(request)
    response = TEMPLATES.TemplateResponse(
        request,
        template,
        {
            **context,
            "csrf_field": CSRF_FIELD,
            "csrf_token": csrf_token,
            "dev_mode": dev_mode(broker),
            "signed_in_via": _signed_in_via(request),
        },
        status_code=status_code,
        headers=PAGE_HEADERS,
    )
    set_ui_cookie(request, response, CSRF_COOKIE, csrf_token)
    return response


def set_ui_cookie(
    request: Request, response: Response, name: str, value: str, max_age: int | None = None
) -> None:
    """HttpOnly, SameSite=Strict, scoped to /ui; Secure whenever the page came over https."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


class PageRoute(APIRoute):
    """A route whose BrokerErrors and form errors render as HTML pages, not problem+json."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except Unauthenticated as exc:
                return render(
                    request,
                    "signed_out.html",
                    {"reason": exc.detail},
                    status_code=exc.status,
                )
            except BrokerError as exc:
                return render(
                    request,
                    "error.html",
                    {"title": exc.title, "detail": exc.detail},
                    status_code=exc.status,
                )
            except RequestValidationError as exc:
                detail = "; ".join(
                    f"{err['loc'][-1]}: {err['msg']}" if err["loc"] else err["msg"]
                    for err in exc.errors()
                )
                return render(
                    request,
                    "error.html",
                    {"title": "The form was not filled in correctly", "detail": detail},
                    status_code=422,
                )

        return page_handler


def _signed_in_via(request: Request) -> str | None:
    if request.headers.get("authorization"):
        return "proxy"
    if request.cookies.get(DEV_SESSION_COOKIE) and dev_mode(get_broker(request)):
        return "dev"
    return None
