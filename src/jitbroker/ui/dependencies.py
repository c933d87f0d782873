"""Who is at the approver page (proxy bearer token or dev session cookie) and CSRF checks."""

from __future__ import annotations

import hmac
import re
import secrets
from typing import Annotated

from fastapi import Depends, Form, Request

from jitbroker.audit.events import RequestContext
from jitbroker.bootstrap import Broker
from jitbroker.errors import Forbidden, Unauthenticated
from jitbroker.identity.dependencies import BrokerDep, verify_presented_token
from jitbroker.identity.schemas import HumanIdentity

CSRF_COOKIE = "jb_csrf"
CSRF_FIELD = "csrf_token"
DEV_SESSION_COOKIE = "jb_dev_session"
COOKIE_PATH = "/ui"
CSRF_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def dev_mode(broker: Broker) -> bool:
    """The dev sign-in and its cookie exist only when the dev issuer directory is configured."""
    return broker.settings.dev_issuer_dir is not None


def signed_in_approver(request: Request, broker: BrokerDep) -> HumanIdentity:
    """The person behind the proxy's bearer token or, in dev mode only, the dev session cookie."""
    principal = verify_presented_token(request, broker, lambda: _presented_token(request, broker))
    if not isinstance(principal, HumanIdentity):
        raise Forbidden("the approver page is for people; a workload token was presented")
    return principal


ApproverDep = Annotated[HumanIdentity, Depends(signed_in_approver)]


def approver_context(request: Request, _: ApproverDep) -> RequestContext:
    """The request context including the approver token's `jti`."""
    context: RequestContext = request.state.context
    return context


ApproverContextDep = Annotated[RequestContext, Depends(approver_context)]


def csrf_token_for(request: Request) -> str:
    """The browser's CSRF token if it has a well-formed one, else a fresh random one."""
    current = request.cookies.get(CSRF_COOKIE, "")
    return current if CSRF_TOKEN_SHAPE.match(current) else secrets.token_urlsafe(32)


def verify_csrf(request: Request, csrf_token: Annotated[str, Form(max_length=100)] = "") -> None:
    """Double-submit check: the form field must equal the `jb_csrf` cookie."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), csrf_token.encode()):
        raise Forbidden(
            "the form's security token did not match; reload the page and submit it again"
        )


def _presented_token(request: Request, broker: Broker) -> str:
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the Authorization header must use the Bearer scheme")
        return token.strip()
    cookie = request.cookies.get(DEV_SESSION_COOKIE)
    if cookie and dev_mode(broker):
        return cookie
    raise Unauthenticated("you are not signed in")
