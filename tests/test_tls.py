"""HTTPS on the edges: ``scr serve --tls-cert/--tls-key`` (or ``server.tls_cert``/``tls_key``),
with a CA and a server certificate for 127.0.0.1 that the test makes itself."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support import ServerProcess, ServerTls, create_key, make_event, run_scr

CERT_VALID_DAYS = 2
LOOPBACK = "127.0.0.1"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    ))


def make_tls_files(folder: Path) -> ServerTls:
    """A self-signed CA, and a server certificate for 127.0.0.1 it signs (PEM files in ``folder``)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(_name("scr test CA")).issuer_name(_name("scr test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder().subject_name(_name(LOOPBACK)).issuer_name(ca_cert.subject)
        .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    tls = ServerTls(folder / "server.pem", folder / "server.key", folder / "ca.pem")
    tls.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    tls.cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(server_key, tls.key)
    return tls


@pytest.fixture
def tls_files(tmp_path: Path) -> ServerTls:
    return make_tls_files(tmp_path / "tls")


@pytest.fixture
def https_server(tmp_path: Path, tls_files: ServerTls) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "data", tls=tls_files).start()
    try:
        yield server
    finally:
        server.stop()


def test_a_client_trusting_the_ca_is_answered_over_https(https_server: ServerProcess) -> None:
    key = create_key(https_server.data, role="admin")
    auth = {"authorization": f"Bearer {key}"}
    assert https_server.url.startswith("https://")
    with httpx.Client(base_url=https_server.url, verify=https_server.verify) as client:
        assert client.post("/v1/events", json=make_event("evt_tls"), headers=auth).status_code == 202
        read = client.get("/v1/events/evt_tls", headers=auth)  # answered by the writer, via the edge
        assert read.status_code == 200 and read.json()["event"]["event_id"] == "evt_tls"
        assert client.get("/healthz").json()["status"] == "ok"


def test_a_client_with_default_trust_refuses_the_unknown_ca(https_server: ServerProcess) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{https_server.url}/healthz", verify=ssl.create_default_context())
    assert httpx.get(f"{https_server.url}/healthz", verify=https_server.verify).status_code == 200


def test_plain_http_to_the_tls_port_gets_no_answer(https_server: ServerProcess) -> None:
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
        httpx.get(f"http://{LOOPBACK}:{https_server.port}/healthz", timeout=10)
    assert httpx.get(f"{https_server.url}/healthz", verify=https_server.verify).status_code == 200


def test_the_config_keys_serve_https_too(tmp_path: Path, tls_files: ServerTls) -> None:
    config = tmp_path / "scr.yaml"
    config.write_text(
        "session_completion_runtime:\n  server:\n"
        f"    tls_cert: {tls_files.cert}\n    tls_key: {tls_files.key}\n"
    )
    server = ServerProcess(tmp_path / "data", config, tls=dataclasses.replace(tls_files, flags=False))
    assert server.url.startswith("https://")
    server.start()
    try:
        assert httpx.get(f"{server.url}/readyz", verify=server.verify).status_code == 200
    finally:
        server.stop()


def _serve_fails(tmp_path: Path, *args: str) -> str:
    """``scr serve`` with ``args`` exits 2 at start-up (nothing served); its stderr."""
    result = run_scr("serve", "--data", str(tmp_path / "data"), "--port", "1", *args, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "scr serving on" not in result.stdout + result.stderr
    return result.stderr


def test_a_missing_certificate_is_a_start_up_error(tmp_path: Path, tls_files: ServerTls) -> None:
    missing = tmp_path / "nowhere.pem"
    stderr = _serve_fails(tmp_path, "--tls-cert", str(missing), "--tls-key", str(tls_files.key))
    assert "server.tls_cert" in stderr and "nowhere.pem" in stderr


def test_an_unreadable_key_is_a_start_up_error(tmp_path: Path, tls_files: ServerTls) -> None:
    folder = tmp_path / "a_folder.key"  # a folder: unreadable as a file, for root too
    folder.mkdir()
    stderr = _serve_fails(tmp_path, "--tls-cert", str(tls_files.cert), "--tls-key", str(folder))
    assert "server.tls_key" in stderr and "a_folder.key" in stderr


def test_a_key_of_another_certificate_is_a_start_up_error(tmp_path: Path, tls_files: ServerTls) -> None:
    other = make_tls_files(tmp_path / "other")
    stderr = _serve_fails(tmp_path, "--tls-cert", str(tls_files.cert), "--tls-key", str(other.key))
    assert "server.tls_key" in stderr and "not a PEM certificate and its" in stderr


def test_a_certificate_file_that_is_not_pem_is_a_start_up_error(tmp_path: Path, tls_files: ServerTls) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    stderr = _serve_fails(tmp_path, "--tls-cert", str(garbage), "--tls-key", str(tls_files.key))
    assert "not a PEM certificate and its" in stderr


def test_a_certificate_without_its_key_is_refused(tmp_path: Path, tls_files: ServerTls) -> None:
    stderr = _serve_fails(tmp_path, "--tls-cert", str(tls_files.cert))
    assert "tls_key" in stderr and "needs" in stderr
    config = tmp_path / "scr.yaml"
    config.write_text(f"session_completion_runtime:\n  server:\n    tls_key: {tls_files.key}\n")
    checked = run_scr("config", "check", str(config), check=False)
    assert checked.returncode == 1 and "line 3" in checked.stderr and "tls_cert" in checked.stderr
