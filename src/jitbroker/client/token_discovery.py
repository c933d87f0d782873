"""Finding the workload's identity token: a file, JITBROKER_TOKEN, or the CI system's own OIDC.

Order: an explicit token file (or JITBROKER_TOKEN_FILE), JITBROKER_TOKEN, GitHub Actions (the
runner's OIDC endpoint), GitLab CI (`JITBROKER_ID_TOKEN` from `id_tokens:`, or the older
`CI_JOB_JWT_V2`), the Kubernetes projected service-account token file.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import httpx

from jitbroker.client.errors import IdentityTokenUnavailable

KUBERNETES_TOKEN_FILE = Path("/var/run/secrets/tokens/jitbroker")
DEFAULT_AUDIENCE = "jitbroker"
GITLAB_TOKEN_VARIABLES = ("JITBROKER_ID_TOKEN", "CI_JOB_JWT_V2")
REFRESH_MARGIN_SECONDS = 60.0
GITHUB_FETCH_TIMEOUT_SECONDS = 10.0


class TokenProvider(Protocol):
    """Returns a current identity token on each call; `source` says where it comes from."""

    source: str

    def __call__(self) -> str: ...


class StaticToken:
    """A token handed over once (an environment variable)."""

    def __init__(self, token: str, *, source: str) -> None:
        self._token = token
        self.source = source

    def __call__(self) -> str:
        return self._token


class FileToken:
    """A token file, read on every call: Kubernetes rotates projected tokens in place."""

    def __init__(self, path: Path, *, source: str) -> None:
        self.path = path
        self.source = source

    def __call__(self) -> str:
        try:
            token = self.path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise IdentityTokenUnavailable(f"cannot read {self.path}: {exc.strerror}") from None
        if not token:
            raise IdentityTokenUnavailable(f"{self.path} is empty")
        return token


class GitHubActionsToken:
    """An OIDC token from the runner's endpoint for `audience`, fetched again before it expires."""

    def __init__(
        self,
        request_url: str,
        request_token: str,
        *,
        audience: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = f"GitHub Actions OIDC (audience {audience})"
        self._url = request_url + ("&" if "?" in request_url else "?")
        self._url += f"audience={quote(audience, safe='')}"
        self._request_token = request_token
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0

    def __call__(self) -> str:
        with self._lock:
            now = self._clock()
            if self._token is None or now >= self._refresh_at:
                self._token = self._fetch()
                expires_at = token_expiry(self._token)
                if expires_at is None:
                    self._refresh_at = now + REFRESH_MARGIN_SECONDS
                else:
                    left = expires_at - now
                    self._refresh_at = now + max(left / 2, left - REFRESH_MARGIN_SECONDS)
            return self._token

    def _fetch(self) -> str:
        try:
            response = httpx.get(
                self._url,
                headers={
                    "Authorization": f"bearer {self._request_token}",
                    "Accept": "application/json",
                },
                timeout=GITHUB_FETCH_TIMEOUT_SECONDS,
            )
        except httpx.HTTPError as exc:
            raise IdentityTokenUnavailable(
                f"the GitHub Actions token endpoint did not answer: {type(exc).__name__}"
            ) from None
        if response.status_code != 200:
            raise IdentityTokenUnavailable(
                f"the GitHub Actions token endpoint answered {response.status_code}; "
                "does the job have `permissions: id-token: write`?"
            )
        try:
            value = response.json().get("value")
        except (ValueError, AttributeError):
            value = None
        if not isinstance(value, str) or not value:
            raise IdentityTokenUnavailable("the GitHub Actions token endpoint sent no token")
        return value


def discover_token(
    *,
    token_file: Path | None = None,
    audience: str | None = None,
    environ: Mapping[str, str] | None = None,
    kubernetes_token_file: Path = KUBERNETES_TOKEN_FILE,
) -> TokenProvider:
    """The first identity token source available here, in the module's documented order."""
    env = os.environ if environ is None else environ
    file_from_env = env.get("JITBROKER_TOKEN_FILE", "").strip()
    if token_file is None and file_from_env:
        token_file = Path(file_from_env)
    if token_file is not None:
        return FileToken(token_file, source=f"token file {token_file}")
    if env.get("JITBROKER_TOKEN", "").strip():
        return StaticToken(env["JITBROKER_TOKEN"].strip(), source="JITBROKER_TOKEN")
    request_url = env.get("ACTIONS_ID_TOKEN_REQUEST_URL", "")
    request_token = env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "")
    if request_url and request_token:
        return GitHubActionsToken(
            request_url,
            request_token,
            audience=audience or env.get("JITBROKER_AUDIENCE") or DEFAULT_AUDIENCE,
        )
    for name in GITLAB_TOKEN_VARIABLES:
        if env.get(name, "").strip():
            return StaticToken(env[name].strip(), source=f"GitLab CI ({name})")
    if kubernetes_token_file.is_file():
        return FileToken(
            kubernetes_token_file,
            source=f"Kubernetes projected token {kubernetes_token_file}",
        )
    raise IdentityTokenUnavailable(
        "no identity token found: pass --token-file, set JITBROKER_TOKEN, or run in GitHub "
        "Actions with `permissions: id-token: write`, in GitLab CI with an `id_tokens:` entry "
        f"named JITBROKER_ID_TOKEN, or in Kubernetes with a projected token at "
        f"{kubernetes_token_file}"
    )


def token_expiry(token: str) -> float | None:
    """The `exp` of a JWT (read, not verified: the broker verifies), or None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    return float(exp) if isinstance(exp, int | float) else None
