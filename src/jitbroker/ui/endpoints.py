"""The approver page at /ui: pending requests, break-glass reviews, and the dev sign-in."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse

from jitbroker.approvals import service
from jitbroker.errors import InvalidRequest, NotFound
from jitbroker.grants.schemas import GrantState
from jitbroker.identity.dependencies import BrokerDep
from jitbroker.identity.dev_issuer import DevIssuer
from jitbroker.ui.dependencies import (
    COOKIE_PATH,
    DEV_SESSION_COOKIE,
    ApproverContextDep,
    ApproverDep,
    dev_mode,
    verify_csrf,
)
from jitbroker.ui.pages import (
    PageRoute,
    flash_message,
    redirect_with_flash,
    render,
    set_ui_cookie,
)

APPROVALS_PAGE = "/ui/approvals"
DEV_SIGN_IN_PAGE = "/ui/dev/sign-in"
DEV_SESSION_SECONDS = 3600
Comment = Annotated[str, Form(max_length=1000)]


def require_dev_mode(broker: BrokerDep) -> None:
    """The dev sign-in exists only in the dev stack; elsewhere it is a 404."""
    if not dev_mode(broker):
        raise NotFound("the dev sign-in exists only when JITBROKER_DEV_ISSUER_DIR is set")


router = APIRouter(prefix="/ui", include_in_schema=False, route_class=PageRoute)
dev_router = APIRouter(
    prefix="/dev", route_class=PageRoute, dependencies=[Depends(require_dev_mode)]
)


@router.get("")
def ui_home() -> RedirectResponse:
    """The approver page is the only page."""
    return RedirectResponse(APPROVALS_PAGE, status_code=303)


@router.get("/approvals")
def approvals_page(
    request: Request,
    broker: BrokerDep,
    approver: ApproverDep,
    done: str | None = None,
    grant: str | None = None,
) -> Response:
    """Requests waiting for the approver's groups and break-glass grants awaiting review."""
    return render(
        request,
        "approvals.html",
        {
            "approver": approver,
            "pending": service.list_for_approver(broker, approver=approver, state="pending"),
            "review": service.list_for_approver(broker, approver=approver, state="review"),
            "workloads": broker.config.workloads,
            "flash": flash_message(done, grant),
        },
    )


@router.post("/approvals/{grant_id}/approve", dependencies=[Depends(verify_csrf)])
def approve(
    grant_id: str,
    broker: BrokerDep,
    approver: ApproverDep,
    context: ApproverContextDep,
    comment: Comment = "",
) -> RedirectResponse:
    """Approve the request as requested (TTL and scopes unchanged)."""
    grant = service.approve(
        broker,
        approver=approver,
        grant_id=grant_id,
        comment=comment.strip(),
        ttl_seconds=None,
        scopes=None,
        context=context,
    )
    done = "approved" if grant.state == GrantState.approved else "voted"
    return redirect_with_flash(APPROVALS_PAGE, done, grant_id)


@router.post("/approvals/{grant_id}/deny", dependencies=[Depends(verify_csrf)])
def deny(
    grant_id: str,
    broker: BrokerDep,
    approver: ApproverDep,
    context: ApproverContextDep,
    comment: Comment = "",
) -> RedirectResponse:
    """Deny the request; a denial needs a comment saying why."""
    if not comment.strip():
        raise InvalidRequest("say why you deny the request: a denial needs a comment")
    service.deny(
        broker, approver=approver, grant_id=grant_id, comment=comment.strip(), context=context
    )
    return redirect_with_flash(APPROVALS_PAGE, "denied", grant_id)


@router.post("/approvals/{grant_id}/acknowledge", dependencies=[Depends(verify_csrf)])
def acknowledge(
    grant_id: str,
    broker: BrokerDep,
    approver: ApproverDep,
    context: ApproverContextDep,
    comment: Comment = "",
) -> RedirectResponse:
    """Acknowledge a break-glass grant after the fact."""
    service.acknowledge_break_glass(
        broker, approver=approver, grant_id=grant_id, comment=comment.strip(), context=context
    )
    return redirect_with_flash(APPROVALS_PAGE, "acknowledged", grant_id)


@dev_router.get("/sign-in")
def dev_sign_in_page(request: Request, broker: BrokerDep, done: str | None = None) -> Response:
    """Dev stack only: pick one of the configured dev humans to approve as."""
    return render(
        request,
        "dev_sign_in.html",
        {"humans": list(broker.config.dev_humans.values()), "flash": flash_message(done, None)},
    )


@dev_router.post("/sign-in", dependencies=[Depends(verify_csrf)])
def dev_sign_in(
    request: Request, broker: BrokerDep, subject: Annotated[str, Form(max_length=200)]
) -> RedirectResponse:
    """Mint a dev human token for `subject` and keep it in an HttpOnly session cookie."""
    if subject not in broker.config.dev_humans:
        raise NotFound(f"no dev human {subject!r}")
    assert broker.settings.dev_issuer_dir is not None
    token = DevIssuer(broker.settings.dev_issuer_dir).human_token(
        broker.config, subject, ttl_seconds=DEV_SESSION_SECONDS
    )
    response = redirect_with_flash(APPROVALS_PAGE, "signed_in")
    set_ui_cookie(request, response, DEV_SESSION_COOKIE, token, max_age=DEV_SESSION_SECONDS)
    return response


@dev_router.post("/sign-out", dependencies=[Depends(verify_csrf)])
def dev_sign_out(request: Request) -> RedirectResponse:
    """Forget the dev session cookie."""
    response = redirect_with_flash(DEV_SIGN_IN_PAGE, "signed_out")
    response.delete_cookie(
        DEV_SESSION_COOKIE,
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


router.include_router(dev_router)
