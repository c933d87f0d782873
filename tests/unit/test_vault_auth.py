"""The broker's own OpenBao token: Kubernetes login, renewal before expiry, login again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jitbroker.config import Settings
from jitbroker.errors import VaultRejected, VaultUnavailable
from jitbroker.vault import TokenKeeper, TokenLease, VaultAuth, VaultClient


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeOpenBao:
    """Hands out numbered tokens; renewals answer what the test queued."""

    def __init__(self, ttl: int = 3600, *, renewable: bool = True) -> None:
        self.ttl = ttl
        self.renewable = renewable
        self.logins = 0
        self.renewals: list[int | Exception] = []
        self.down = False

    def login(self) -> TokenLease:
        if self.down:
            raise VaultUnavailable("OpenBao is unavailable")
        self.logins += 1
        return TokenLease(f"token-{self.logins}", self.ttl, self.renewable)

    def renew(self) -> TokenLease:
        answer = self.renewals.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return TokenLease("ignored", answer, True)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def openbao() -> FakeOpenBao:
    return FakeOpenBao()


@pytest.fixture
def keeper(openbao: FakeOpenBao, clock: Clock) -> TokenKeeper:
    return TokenKeeper(login=openbao.login, renew=openbao.renew, clock=clock)


def test_first_call_logs_in(keeper: TokenKeeper, openbao: FakeOpenBao) -> None:
    assert keeper.token() == "token-1"
    assert keeper.token() == "token-1"
    assert openbao.logins == 1


def test_token_is_renewed_after_two_thirds_of_its_ttl(
    keeper: TokenKeeper, openbao: FakeOpenBao, clock: Clock
) -> None:
    keeper.token()
    clock.now += 2300
    assert keeper.token() == "token-1"
    assert openbao.renewals == []  # not asked yet

    openbao.renewals.append(3600)
    clock.now += 100
    assert keeper.token() == "token-1"
    assert openbao.renewals == []
    assert openbao.logins == 1


def test_renewal_capped_by_max_ttl_logs_in_again(
    keeper: TokenKeeper, openbao: FakeOpenBao, clock: Clock
) -> None:
    keeper.token()
    openbao.renewals.append(600)  # the token's max TTL is near
    clock.now += 2500

    assert keeper.token() == "token-2"
    assert openbao.logins == 2


def test_failed_renewal_keeps_the_token_while_it_is_valid(
    keeper: TokenKeeper, openbao: FakeOpenBao, clock: Clock
) -> None:
    keeper.token()
    openbao.down = True
    openbao.renewals.append(VaultUnavailable("OpenBao is unavailable"))
    clock.now += 2500

    assert keeper.token() == "token-1"

    openbao.down = False
    openbao.renewals.append(3600)
    clock.now += TokenKeeper.RETRY_SECONDS
    assert keeper.token() == "token-1"
    assert openbao.renewals == []


def test_token_openbao_forgot_is_replaced_by_a_new_login(
    keeper: TokenKeeper, openbao: FakeOpenBao, clock: Clock
) -> None:
    keeper.token()
    openbao.renewals.append(VaultRejected("OpenBao refused the request"))
    clock.now += 2500

    assert keeper.token() == "token-2"


def test_expired_token_is_replaced_by_a_new_login(
    keeper: TokenKeeper, openbao: FakeOpenBao, clock: Clock
) -> None:
    keeper.token()
    openbao.renewals.append(VaultRejected("OpenBao refused the request"))
    clock.now += 3700

    assert keeper.token() == "token-2"


def test_expired_token_without_a_new_login_raises(
    keeper: TokenKeeper, openbao: FakeOpenBao, clock: Clock
) -> None:
    keeper.token()
    openbao.down = True
    openbao.renewals.append(VaultUnavailable("OpenBao is unavailable"))
    clock.now += 3700

    with pytest.raises(VaultUnavailable):
        keeper.token()


def test_token_that_does_not_expire_is_never_renewed(clock: Clock) -> None:
    openbao = FakeOpenBao(ttl=0, renewable=False)
    keeper = TokenKeeper(login=openbao.login, renew=openbao.renew, clock=clock)
    keeper.token()
    clock.now += 10**7

    assert keeper.token() == "token-1"
    assert openbao.logins == 1


def test_given_token_is_not_replaced_by_a_login(clock: Clock) -> None:
    openbao = FakeOpenBao(ttl=600, renewable=False)
    keeper = TokenKeeper(
        login=openbao.login, renew=openbao.renew, can_log_in_again=False, clock=clock
    )
    keeper.token()
    clock.now += 500

    assert keeper.token() == "token-1"
    assert openbao.logins == 1


def test_kubernetes_login_reads_the_service_account_token_at_each_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("jwt-one\n")
    client = VaultClient(
        "http://127.0.0.1:1",
        auth=VaultAuth(
            method="kubernetes",
            kubernetes_role="jitbroker",
            kubernetes_mount="k8s",
            kubernetes_token_path=token_file,
        ),
    )
    seen: list[dict[str, Any]] = []

    def login(**kwargs: Any) -> dict[str, Any]:
        seen.append(kwargs)
        n = len(seen)
        return {"auth": {"client_token": f"s.{n}", "lease_duration": 600, "renewable": True}}

    monkeypatch.setattr(client._client.auth.kubernetes, "login", login)

    first = client._login()
    token_file.write_text("jwt-two\n")  # the kubelet rotated the projected token
    second = client._login()

    assert [s["jwt"] for s in seen] == ["jwt-one", "jwt-two"]
    assert seen[0]["role"] == "jitbroker"
    assert seen[0]["mount_point"] == "k8s"
    assert seen[0]["use_token"] is False
    assert (first.token, first.ttl_seconds, first.renewable) == ("s.1", 600, True)
    assert second.token == "s.2"


def test_kubernetes_login_without_a_token_file_says_where_it_looked(tmp_path: Path) -> None:
    client = VaultClient(
        "http://127.0.0.1:1",
        auth=VaultAuth(
            method="kubernetes", kubernetes_role="jitbroker", kubernetes_token_path=tmp_path / "x"
        ),
    )

    with pytest.raises(VaultRejected, match="service-account token at .*/x"):
        client._login()


def test_kubernetes_auth_needs_a_role() -> None:
    with pytest.raises(ValueError, match="JITBROKER_VAULT_KUBERNETES_ROLE"):
        Settings(vault_auth_method="kubernetes")


def test_settings_choose_kubernetes_auth(tmp_path: Path) -> None:
    settings = Settings(
        vault_auth_method="kubernetes",
        vault_kubernetes_role="jitbroker",
        vault_kubernetes_token_path=tmp_path / "token",
    )

    client = VaultClient.from_settings(settings)

    assert client.auth.method == "kubernetes"
    assert client.auth.kubernetes_role == "jitbroker"
    assert client.auth.kubernetes_mount == "kubernetes"
    assert client.auth.kubernetes_token_path == tmp_path / "token"
