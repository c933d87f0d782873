"""PKI, SSH and Redis ACL engines against real OpenBao: issue, use, revoke, prove it is gone."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from jitbroker.config import Settings
from jitbroker.engines.pki import serial_number
from jitbroker.vault import VaultClient

pytestmark = pytest.mark.integration

PKI_GRANT = {"profile": "demo-pki", "scopes": ["read"], "ttl_seconds": 600, "justification": "mtls"}
SSH_GRANT = {"profile": "demo-ssh", "scopes": ["read"], "ttl_seconds": 300, "justification": "ssh"}
REDIS_GRANT = {
    "profile": "demo-redis",
    "scopes": ["read"],
    "ttl_seconds": 300,
    "justification": "cache warm-up",
}


def issue(client: TestClient, auth: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    task = client.post("/v1/tasks", json={"purpose": "engine test"}, headers=auth)
    assert task.status_code == 201, task.text
    grant = client.post(f"/v1/tasks/{task.json()['task_id']}/grants", json=body, headers=auth)
    assert grant.status_code == 201, grant.text
    issued: dict[str, Any] = grant.json()
    return issued


def complete(client: TestClient, auth: dict[str, str], grant: dict[str, Any]) -> dict[str, Any]:
    """Complete the grant's task, waiting for revocation; returns the grant's receipt."""
    done = client.post(f"/v1/tasks/{grant['task_id']}/complete?wait=true", headers=auth)
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "completed", done.text
    (receipt,) = done.json()["receipts"]
    assert receipt["grant_id"] == grant["grant_id"]
    return dict(receipt)


def checks_of(receipt: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {check["name"]: check for check in receipt["checks"]}


# PKI: a server that requires client certificates from the demo CA.


@dataclass
class Handshake:
    """What the server saw: the client's common name, or why it refused the client."""

    common_name: str | None = None
    refused: str | None = None


def server_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for the test server (localhost)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "server.pem", directory / "server-key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def mutual_tls_handshake(
    directory: Path, credential: dict[str, str], *, crl: str | None = None
) -> Handshake:
    """One connection from a client holding `credential` to a 127.0.0.1 server that requires a
    client certificate from the credential's CA (and, given `crl`, checks it)."""
    server_cert, server_key = server_certificate(directory)
    trust = directory / "client-ca.pem"
    trust.write_text(credential["ca_chain"] + (crl or ""))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(server_cert, server_key)
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_verify_locations(cafile=trust)
    if crl is not None:
        server.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    client_cert, client_key = directory / "client.pem", directory / "client-key.pem"
    client_cert.write_text(credential["certificate"])
    client_key.write_text(credential["private_key"])
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cafile=server_cert)
    client.load_cert_chain(client_cert, client_key)

    seen = Handshake()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            connection, _ = listener.accept()
            with server.wrap_socket(connection, server_side=True) as tls:
                peer = tls.getpeercert() or {}
                subject = dict(pair for rdn in peer.get("subject", ()) for pair in rdn)
                seen.common_name = str(subject.get("commonName"))
                tls.sendall(b"welcome\n")
        except (ssl.SSLError, OSError) as exc:
            seen.refused = str(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        address = ("127.0.0.1", listener.getsockname()[1])
        with (
            socket.create_connection(address, timeout=10) as raw,
            client.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.recv(64)
    except (ssl.SSLError, OSError):
        pass  # with TLS 1.3 the refusal reaches the client as an alert; the server says why
    finally:
        thread.join(timeout=15)
        listener.close()
    return seen


def test_client_certificate_is_accepted_by_a_server_trusting_the_ca(
    client: TestClient, pipeline_auth: dict[str, str], tmp_path: Path
) -> None:
    grant = issue(client, pipeline_auth, PKI_GRANT)

    seen = mutual_tls_handshake(tmp_path, grant["credential"])

    assert seen.refused is None
    assert seen.common_name == "demo-pipeline"


def test_client_certificate_lives_exactly_the_grant_ttl(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    grant = issue(client, pipeline_auth, PKI_GRANT)
    pem = grant["credential"]["certificate"].encode()
    certificate = x509.load_pem_x509_certificate(pem)

    remaining = certificate.not_valid_after_utc - datetime.now(UTC)

    assert 590 <= grant["lease_ttl_seconds"] <= 600
    assert timedelta(seconds=585) <= remaining <= timedelta(seconds=600)
    assert serial_number(grant["credential"]["serial"]) == certificate.serial_number


def test_gateway_admits_the_certificate_holder_until_the_task_completes(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    grant = issue(client, pipeline_auth, PKI_GRANT)
    check = {
        "destination": "https://orders.internal:8443/",
        "credential": grant["credential"]["certificate"],
    }
    before = client.post("/v1/authz/check", json=check)

    complete(client, pipeline_auth, grant)

    after = client.post("/v1/authz/check", json=check)
    assert before.json()["allow"] is True
    assert before.json()["grant_id"] == grant["grant_id"]
    assert after.json()["allow"] is False


def test_revoked_client_certificate_is_on_the_crl(
    client: TestClient, pipeline_auth: dict[str, str], demo_openbao: VaultClient
) -> None:
    grant = issue(client, pipeline_auth, PKI_GRANT)
    serial = grant["credential"]["serial"]

    receipt = complete(client, pipeline_auth, grant)

    crl = x509.load_pem_x509_crl(demo_openbao.certificate_revocation_list("pki").encode())
    assert crl.get_revoked_certificate_by_serial_number(serial_number(serial)) is not None
    assert checks_of(receipt)["pki_serial_on_crl"]["status"] == "passed"
    assert checks_of(receipt)["openbao_lease_absent"]["status"] == "passed"


def test_server_checking_the_crl_refuses_a_revoked_certificate(
    client: TestClient,
    pipeline_auth: dict[str, str],
    demo_openbao: VaultClient,
    tmp_path: Path,
) -> None:
    grant = issue(client, pipeline_auth, PKI_GRANT)
    complete(client, pipeline_auth, grant)
    crl = demo_openbao.certificate_revocation_list("pki")

    seen = mutual_tls_handshake(tmp_path, grant["credential"], crl=crl)

    assert seen.common_name is None
    assert "revoked" in (seen.refused or "")


# SSH: certificates for the workload's own key.


@pytest.fixture
def ssh_key(tmp_path: Path) -> Path:
    """An Ed25519 key pair of the workload (the private key never leaves this directory)."""
    if shutil.which("ssh-keygen") is None:
        pytest.fail("ssh-keygen is missing: apt-get install -y openssh-client")
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ci@example", "-f", str(key)],
        check=True,
    )
    return key


@dataclass(frozen=True)
class ListedCertificate:
    """`ssh-keygen -L` of a certificate, the parts a grant decides."""

    key_id: str
    serial: str
    principals: list[str]
    valid_from: datetime
    valid_to: datetime
    signing_ca: str


def ssh_keygen_list(certificate: Path) -> ListedCertificate:
    listing = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(certificate)],
        check=True,
        capture_output=True,
        text=True,
        env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
    ).stdout
    lines = [line.strip() for line in listing.splitlines()]
    field = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    principals_at = lines.index("Principals:") + 1
    principals = lines[principals_at : lines.index("Critical Options: (none)")]
    valid_from, _, valid_to = field["Valid"].removeprefix("from ").partition(" to ")
    return ListedCertificate(
        key_id=field["Key ID"].strip('"'),
        serial=field["Serial"],
        principals=principals,
        valid_from=datetime.fromisoformat(valid_from).replace(tzinfo=UTC),
        valid_to=datetime.fromisoformat(valid_to).replace(tzinfo=UTC),
        signing_ca=field["Signing CA"].split()[1],
    )


def fingerprint(public_key_line: str, directory: Path) -> str:
    path = directory / "ca.pub"
    path.write_text(public_key_line)
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(path)], check=True, capture_output=True, text=True
    )
    return listed.stdout.split()[1]


def signed_certificate(grant: dict[str, Any], key: Path) -> Path:
    path = key.with_name(key.name + "-cert.pub")
    path.write_text(grant["credential"]["certificate"] + "\n")
    return path


def test_ssh_certificate_names_the_workload_and_lives_the_grant_ttl(
    client: TestClient, pipeline_auth: dict[str, str], ssh_key: Path, settings: Settings
) -> None:
    public_key = ssh_key.with_suffix(".pub").read_text()
    asked_at = datetime.now(UTC)

    grant = issue(client, pipeline_auth, {**SSH_GRANT, "public_key": public_key})
    listed = ssh_keygen_list(signed_certificate(grant, ssh_key))

    ca_key = httpx.get(f"{settings.vault_addr}/v1/ssh/public_key").text
    assert listed.principals == ["demo-pipeline"]
    assert listed.key_id == f"jitbroker:{grant['grant_id']}"
    assert listed.serial == grant["credential"]["serial"]
    assert listed.signing_ca == fingerprint(ca_key, ssh_key.parent)
    assert asked_at + timedelta(seconds=298) <= listed.valid_to
    assert listed.valid_to <= datetime.now(UTC) + timedelta(seconds=300)
    assert listed.valid_from <= asked_at
    assert grant["lease_ttl_seconds"] <= 300
    assert "private" not in " ".join(grant["credential"])


def test_ssh_scope_with_principals_certifies_those_principals(
    client: TestClient, pipeline_auth: dict[str, str], ssh_key: Path
) -> None:
    public_key = ssh_key.with_suffix(".pub").read_text()

    grant = issue(
        client, pipeline_auth, {**SSH_GRANT, "scopes": ["write"], "public_key": public_key}
    )

    assert ssh_keygen_list(signed_certificate(grant, ssh_key)).principals == ["deploy"]


def test_ssh_receipt_says_until_when_the_certificate_stays_valid(
    client: TestClient, pipeline_auth: dict[str, str], ssh_key: Path
) -> None:
    public_key = ssh_key.with_suffix(".pub").read_text()
    grant = issue(client, pipeline_auth, {**SSH_GRANT, "public_key": public_key})
    listed = ssh_keygen_list(signed_certificate(grant, ssh_key))

    receipt = complete(client, pipeline_auth, grant)

    check = checks_of(receipt)["ssh_cert_expired_or_krl"]
    assert check["status"] == "bounded"
    assert f"serial {listed.serial}" in check["detail"]
    until = datetime.fromisoformat(check["detail"].split(" until ")[1].split(" ")[0])
    assert timedelta(0) <= until - listed.valid_to <= timedelta(seconds=2)
    assert checks_of(receipt)["route_closed"]["status"] == "passed"


def test_hosts_refuse_a_revoked_ssh_certificate_once_their_krl_lists_its_serial(
    client: TestClient, pipeline_auth: dict[str, str], ssh_key: Path, settings: Settings
) -> None:
    public_key = ssh_key.with_suffix(".pub").read_text()
    grant = issue(client, pipeline_auth, {**SSH_GRANT, "public_key": public_key})
    certificate = signed_certificate(grant, ssh_key)
    complete(client, pipeline_auth, grant)
    ca_key, spec, krl = (ssh_key.parent / name for name in ("ca.pub", "krl-spec", "revoked_keys"))
    ca_key.write_text(httpx.get(f"{settings.vault_addr}/v1/ssh/public_key").text)
    spec.write_text(f"serial: {grant['credential']['serial']}\n")
    subprocess.run(
        ["ssh-keygen", "-k", "-f", str(krl), "-s", str(ca_key), str(spec)],
        check=True,
        capture_output=True,
    )

    queried = subprocess.run(
        ["ssh-keygen", "-Q", "-f", str(krl), str(certificate)], capture_output=True, text=True
    )

    assert queried.returncode == 1
    assert "REVOKED" in queried.stdout


def test_ssh_grant_without_a_public_key_is_refused(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    task = client.post("/v1/tasks", json={"purpose": "no key"}, headers=pipeline_auth).json()

    response = client.post(
        f"/v1/tasks/{task['task_id']}/grants", json=SSH_GRANT, headers=pipeline_auth
    )

    assert response.status_code == 422
    assert "public_key" in response.json()["detail"]


# Redis ACL users, on a Redis of their own (demo_redis), spoken to in plain RESP.


def resp(port: int, *commands: list[str]) -> list[str]:
    """Send commands on one fresh connection; each reply's first line (bulk strings: the value)."""
    replies: list[str] = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        stream = sock.makefile("rb")
        for command in commands:
            parts = [f"*{len(command)}\r\n"] + [f"${len(a.encode())}\r\n{a}\r\n" for a in command]
            sock.sendall("".join(parts).encode())
            line = stream.readline().decode().rstrip("\r\n")
            if line.startswith("$") and line != "$-1":
                line = stream.readline().decode().rstrip("\r\n")
            replies.append(line)
    return replies


@pytest.fixture
def acl_redis(demo_redis: str) -> redis.Redis:
    admin = redis.Redis.from_url(demo_redis, decode_responses=True)
    admin.set("demo:greeting", "hello from redis")
    return admin


def test_redis_user_can_get_until_the_task_completes(
    client: TestClient, pipeline_auth: dict[str, str], acl_redis: redis.Redis
) -> None:
    port = int(acl_redis.connection_pool.connection_kwargs["port"])
    grant = issue(client, pipeline_auth, REDIS_GRANT)
    user, password = grant["credential"]["username"], grant["credential"]["password"]
    assert resp(port, ["AUTH", user, password], ["GET", "demo:greeting"]) == [
        "+OK",
        "hello from redis",
    ]

    receipt = complete(client, pipeline_auth, grant)

    refused = resp(port, ["AUTH", user, password], ["GET", "demo:greeting"])
    assert refused[0].startswith("-WRONGPASS")
    assert refused[1].startswith("-NOAUTH")
    assert acl_redis.acl_getuser(user) is None
    assert checks_of(receipt)["redis_user_absent"]["status"] == "passed"
    assert checks_of(receipt)["redis_sessions_absent"]["status"] == "passed"


def test_revoking_a_redis_user_closes_its_open_connection(
    client: TestClient, pipeline_auth: dict[str, str], acl_redis: redis.Redis
) -> None:
    port = int(acl_redis.connection_pool.connection_kwargs["port"])
    grant = issue(client, pipeline_auth, REDIS_GRANT)
    user, password = grant["credential"]["username"], grant["credential"]["password"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        stream = sock.makefile("rb")
        sock.sendall(f"AUTH {user} {password}\r\n".encode())
        assert stream.readline() == b"+OK\r\n"

        complete(client, pipeline_auth, grant)

        assert stream.readline() == b""  # Redis closed the connection


def test_redis_read_user_cannot_write(
    client: TestClient, pipeline_auth: dict[str, str], acl_redis: redis.Redis
) -> None:
    port = int(acl_redis.connection_pool.connection_kwargs["port"])
    grant = issue(client, pipeline_auth, REDIS_GRANT)
    user, password = grant["credential"]["username"], grant["credential"]["password"]

    replies = resp(port, ["AUTH", user, password], ["SET", "demo:greeting", "overwritten"])

    assert replies[0] == "+OK"
    assert replies[1].startswith("-NOPERM")
    assert acl_redis.get("demo:greeting") == "hello from redis"
