"""Environment templates of the PKI, SSH and Redis ACL engines."""

from __future__ import annotations

from jitbroker.client.environment import credential_environment

PKI_FIELDS = {
    "certificate": "-----BEGIN CERTIFICATE-----\nleaf\n-----END CERTIFICATE-----\n",
    "private_key": "-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n",
    "ca_chain": "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n",
    "serial": "2f:1a:07",
    "not_after": "2026-11-23T04:00:00+00:00",
}
REDIS_FIELDS = {"username": "V_TOKEN_DEMO-REDIS-RO_X_1", "password": "p@ss/word"}


def test_pki_credential_becomes_pem_strings() -> None:
    env = credential_environment("pki", PKI_FIELDS, "https://orders.internal:8443/")

    assert env == {
        "JITBROKER_TLS_CERT": PKI_FIELDS["certificate"],
        "JITBROKER_TLS_KEY": PKI_FIELDS["private_key"],
        "JITBROKER_TLS_CA": PKI_FIELDS["ca_chain"],
        "JITBROKER_TLS_SERIAL": "2f:1a:07",
    }


def test_ssh_credential_becomes_the_certificate_and_its_principals() -> None:
    fields = {"certificate": "ssh-ed25519-cert-v01@openssh.com AAAA", "principals": "deploy"}

    env = credential_environment("ssh", {**fields, "serial": "42"}, "ssh://bastion.internal")

    assert env == {
        "JITBROKER_SSH_CERT": fields["certificate"],
        "JITBROKER_SSH_PRINCIPALS": "deploy",
        "JITBROKER_SSH_SERIAL": "42",
    }


def test_redis_credential_becomes_a_url_with_the_user_quoted() -> None:
    env = credential_environment("redis", REDIS_FIELDS, "redis://127.0.0.1:6380/0")

    assert env["REDIS_URL"] == "redis://V_TOKEN_DEMO-REDIS-RO_X_1:p%40ss%2Fword@127.0.0.1:6380/0"
    assert env["REDIS_USERNAME"] == REDIS_FIELDS["username"]
    assert env["REDISCLI_AUTH"] == REDIS_FIELDS["password"]


def test_redis_destination_that_is_no_url_sets_only_the_user() -> None:
    env = credential_environment("redis", REDIS_FIELDS, "cache")

    assert set(env) == {"REDIS_USERNAME", "REDIS_PASSWORD", "REDISCLI_AUTH"}
