"""The approver page: what it lists, who may see it, and how its forms are protected."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from jitbroker.bootstrap import Broker
from jitbroker.identity.dev_issuer import DevIssuer

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
PAGE = "/ui/approvals"


def csrf_from(html: str) -> str:
    match = CSRF_FIELD.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def open_page(client: TestClient, auth: dict[str, str]) -> str:
    """Load the page (which sets the jb_csrf cookie) and return the token its forms carry."""
    page = client.get(PAGE, headers=auth)
    assert page.status_code == 200, page.text
    return csrf_from(page.text)


def grant_state(client: TestClient, grant_id: str, auth: dict[str, str]) -> str:
    return str(client.get(f"/v1/grants/{grant_id}", headers=auth).json()["state"])


def test_dba_sees_the_pending_request_with_everything_needed_to_decide(
    client: TestClient, alice_auth: dict[str, str], pending_grant_id: str, task_id: str
) -> None:
    page = client.get(PAGE, headers=alice_auth)

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for shown in (
        pending_grant_id,
        "demo-pipeline",
        "schema migration",
        task_id,
        "demo-db",
        "write",
        "10m",
        "add an index to orders for the Q3 report",
        "demo-db-elevated",
        "need a DBA&#39;s approval",
        "14m 59s left",
    ):
        assert shown in page.text, shown
    assert "Signed in as <strong>alice</strong>" in page.text


def test_request_is_hidden_from_a_person_outside_the_approver_groups(
    client: TestClient, developer_auth: dict[str, str], pending_grant_id: str
) -> None:
    page = client.get(PAGE, headers=developer_auth)

    assert page.status_code == 200
    assert pending_grant_id not in page.text
    assert "Nothing waits for you" in page.text


def test_approve_form_with_its_csrf_token_approves_and_confirms(
    client: TestClient,
    alice_auth: dict[str, str],
    pipeline_auth: dict[str, str],
    pending_grant_id: str,
) -> None:
    csrf = open_page(client, alice_auth)

    response = client.post(
        f"/ui/approvals/{pending_grant_id}/approve",
        data={"csrf_token": csrf, "comment": "index looks fine"},
        headers=alice_auth,
        follow_redirects=False,
    )
    confirmation = client.get(response.headers["location"], headers=alice_auth)

    assert response.status_code == 303
    assert response.headers["location"] == f"{PAGE}?done=approved&grant={pending_grant_id}"
    assert f"You approved {pending_grant_id}" in confirmation.text
    assert grant_state(client, pending_grant_id, pipeline_auth) == "approved"


def test_approve_form_without_csrf_token_is_refused(
    client: TestClient,
    alice_auth: dict[str, str],
    pipeline_auth: dict[str, str],
    pending_grant_id: str,
) -> None:
    open_page(client, alice_auth)

    response = client.post(
        f"/ui/approvals/{pending_grant_id}/approve",
        data={"comment": "forged"},
        headers=alice_auth,
        follow_redirects=False,
    )

    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "security token did not match" in response.text
    assert grant_state(client, pending_grant_id, pipeline_auth) == "pending_approval"


def test_approve_form_with_a_token_other_than_the_cookie_is_refused(
    client: TestClient,
    alice_auth: dict[str, str],
    pipeline_auth: dict[str, str],
    pending_grant_id: str,
) -> None:
    open_page(client, alice_auth)

    response = client.post(
        f"/ui/approvals/{pending_grant_id}/approve",
        data={"csrf_token": "A" * 43},
        headers=alice_auth,
        follow_redirects=False,
    )

    assert response.status_code == 403
    assert grant_state(client, pending_grant_id, pipeline_auth) == "pending_approval"


def test_deny_form_denies_with_the_comment(
    client: TestClient,
    alice_auth: dict[str, str],
    pipeline_auth: dict[str, str],
    pending_grant_id: str,
) -> None:
    csrf = open_page(client, alice_auth)

    response = client.post(
        f"/ui/approvals/{pending_grant_id}/deny",
        data={"csrf_token": csrf, "comment": "not during the freeze"},
        headers=alice_auth,
        follow_redirects=False,
    )

    assert response.status_code == 303
    assert "done=denied" in response.headers["location"]
    assert grant_state(client, pending_grant_id, pipeline_auth) == "denied"


def test_deny_without_a_comment_explains_on_the_page(
    client: TestClient,
    alice_auth: dict[str, str],
    pipeline_auth: dict[str, str],
    pending_grant_id: str,
) -> None:
    csrf = open_page(client, alice_auth)

    response = client.post(
        f"/ui/approvals/{pending_grant_id}/deny",
        data={"csrf_token": csrf, "comment": "  "},
        headers=alice_auth,
    )

    assert response.status_code == 422
    assert response.headers["content-type"].startswith("text/html")
    assert "a denial needs a comment" in response.text
    assert grant_state(client, pending_grant_id, pipeline_auth) == "pending_approval"


def test_service_refusal_renders_as_a_page_not_problem_json(
    client: TestClient, alice_auth: dict[str, str], pending_grant_id: str
) -> None:
    csrf = open_page(client, alice_auth)
    form = {"csrf_token": csrf, "comment": "ok"}
    client.post(f"/ui/approvals/{pending_grant_id}/approve", data=form, headers=alice_auth)

    again = client.post(f"/ui/approvals/{pending_grant_id}/approve", data=form, headers=alice_auth)

    assert again.status_code == 409
    assert again.headers["content-type"].startswith("text/html")
    assert f"Request {pending_grant_id} is approved, not pending approval" in again.text
    assert "Back to approvals" in again.text


def test_break_glass_grant_can_be_acknowledged_from_the_page(
    client: TestClient, alice_auth: dict[str, str], pipeline_auth: dict[str, str], task_id: str
) -> None:
    issued = client.post(
        f"/v1/tasks/{task_id}/grants",
        json={
            "profile": "demo-db",
            "scopes": ["write"],
            "ttl_seconds": 300,
            "justification": "orders table is corrupt, fixing it right now",
            "break_glass": True,
        },
        headers=pipeline_auth,
    )
    grant_id = issued.json()["grant_id"]
    csrf = open_page(client, alice_auth)
    listed = client.get(PAGE, headers=alice_auth)

    response = client.post(
        f"/ui/approvals/{grant_id}/acknowledge",
        data={"csrf_token": csrf, "comment": "checked the incident ticket"},
        headers=alice_auth,
    )

    assert issued.status_code == 201, issued.text
    assert 'Break-glass grants awaiting review <span class="count">1</span>' in listed.text
    assert "Acknowledge" in listed.text
    assert f"You acknowledged the break-glass grant {grant_id}" in response.text
    assert f'id="grant-{grant_id}"' not in response.text


def test_workload_token_gets_a_forbidden_page(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    page = client.get(PAGE, headers=pipeline_auth)

    assert page.status_code == 403
    assert page.headers["content-type"].startswith("text/html")
    assert "the approver page is for people" in page.text.lower()


def test_page_without_credential_explains_how_to_sign_in(client: TestClient) -> None:
    page = client.get(PAGE)

    assert page.status_code == 401
    assert "Authorization: Bearer" in page.text
    assert "/ui/dev/sign-in" not in page.text


def test_invalid_bearer_token_is_named_on_the_sign_in_page(client: TestClient) -> None:
    page = client.get(PAGE, headers={"Authorization": "Bearer not-a-jwt"})

    assert page.status_code == 401
    assert "Token is malformed" in page.text


def test_pages_forbid_framing_scripts_and_caching(
    client: TestClient, alice_auth: dict[str, str]
) -> None:
    page = client.get(PAGE, headers=alice_auth)

    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src" not in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text


def test_csrf_cookie_is_http_only_and_same_site_strict(
    client: TestClient, alice_auth: dict[str, str]
) -> None:
    page = client.get(PAGE, headers=alice_auth)

    cookie = page.headers["set-cookie"].lower()
    assert cookie.startswith("jb_csrf=")
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/ui" in cookie


def test_dev_sign_in_is_not_found_outside_dev_mode(client: TestClient) -> None:
    page = client.get("/ui/dev/sign-in")
    form = client.post("/ui/dev/sign-in", data={"subject": "alice"})

    assert page.status_code == 404
    assert form.status_code == 404


def test_dev_session_cookie_is_ignored_outside_dev_mode(
    client: TestClient, broker: Broker, dev_issuer: DevIssuer
) -> None:
    client.cookies.set("jb_dev_session", dev_issuer.human_token(broker.config, "alice"))

    page = client.get(PAGE)

    assert page.status_code == 401


def test_page_without_credential_links_the_dev_sign_in_in_dev_mode(
    dev_client: TestClient,
) -> None:
    page = dev_client.get(PAGE)

    assert page.status_code == 401
    assert 'href="/ui/dev/sign-in"' in page.text


def test_dev_sign_in_sets_a_session_cookie_the_page_accepts(dev_client: TestClient) -> None:
    sign_in_page = dev_client.get("/ui/dev/sign-in")

    response = dev_client.post(
        "/ui/dev/sign-in",
        data={"csrf_token": csrf_from(sign_in_page.text), "subject": "alice"},
        follow_redirects=False,
    )
    page = dev_client.get(response.headers["location"])

    assert "Sign in as alice" in sign_in_page.text
    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert cookie.startswith("jb_dev_session=")
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert page.status_code == 200
    assert "Signed in as <strong>alice</strong>" in page.text
    assert "You are signed in." in page.text


def test_dev_sign_in_without_csrf_token_is_refused(dev_client: TestClient) -> None:
    dev_client.get("/ui/dev/sign-in")

    response = dev_client.post("/ui/dev/sign-in", data={"subject": "alice"})

    assert response.status_code == 403
    assert "jb_dev_session" not in dev_client.cookies


def test_dev_sign_in_refuses_someone_not_in_dev_humans(dev_client: TestClient) -> None:
    csrf = csrf_from(dev_client.get("/ui/dev/sign-in").text)

    response = dev_client.post("/ui/dev/sign-in", data={"csrf_token": csrf, "subject": "eve"})

    assert response.status_code == 404
    assert "jb_dev_session" not in dev_client.cookies


def test_sign_out_clears_the_dev_session_cookie(dev_client: TestClient) -> None:
    csrf = csrf_from(dev_client.get("/ui/dev/sign-in").text)
    dev_client.post("/ui/dev/sign-in", data={"csrf_token": csrf, "subject": "alice"})

    response = dev_client.post(
        "/ui/dev/sign-out", data={"csrf_token": csrf}, follow_redirects=False
    )
    page = dev_client.get(PAGE)

    assert response.status_code == 303
    assert "jb_dev_session" not in dev_client.cookies
    assert page.status_code == 401
