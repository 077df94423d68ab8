"""Fixtures for the oauth2 tests: a live Authlib authorization server, keys, a token store."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from notifier.oauth2.filestore import FileTokenStore
from tests.authserver import AuthServer

USER = "alice@example.com"
PASSWORD = "correct horse"
REDIRECT = "http://127.0.0.1:9/oauth2/callback"


@dataclass(frozen=True)
class KeyPair:
    private_pem: bytes
    public_pem: bytes
    private_file: Path
    certificate: x509.Certificate
    certificate_file: Path


def _keypair(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, directory: Path) -> KeyPair:
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "notifier test app")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    private_file = directory / "key.pem"
    private_file.write_bytes(private_pem)
    cert_file = directory / "cert.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return KeyPair(private_pem, public_pem, private_file, cert, cert_file)


@pytest.fixture(scope="session")
def rsa_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _keypair(key, tmp_path_factory.mktemp("rsa"))


@pytest.fixture(scope="session")
def ec_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return _keypair(ec.generate_private_key(ec.SECP256R1()), tmp_path_factory.mktemp("ec"))


@pytest.fixture
def authserver() -> Iterator[AuthServer]:
    """A live server with one user; access tokens live an hour unless a test says otherwise."""
    with AuthServer(device_interval_s=0, device_min_poll_s=0.0) as server:
        server.add_user(USER, PASSWORD)
        yield server


@pytest.fixture
def store(tmp_path: Path) -> FileTokenStore:
    return FileTokenStore.open(tmp_path / "data")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client
