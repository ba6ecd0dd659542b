"""`instock serve --certfile --keyfile` (issue 20): the API over TLS with a self-signed
certificate made here, its answers carrying Strict-Transport-Security; plain HTTP to that port
gets no answer from the API."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from instock.bench.local import free_port
from instock.platform.auth import Role
from tests.e2e.harness import ServerFactory, bearer

pytestmark = pytest.mark.slow


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "instock test")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_the_api_serves_https_with_hsts(servers: ServerFactory, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    server = servers.worker("serve", "--host", "127.0.0.1", "--port", str(port),
                            "--certfile", str(cert), "--keyfile", str(key), port=port)
    base = f"https://127.0.0.1:{port}"
    trusting = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(base_url=base, verify=trusting, timeout=10) as https:
        deadline = time.monotonic() + 60
        while True:
            try:
                ready = await https.get("/readyz")
                break
            except httpx.TransportError:
                assert server.alive(), server.log_tail()
                assert time.monotonic() < deadline, server.log_tail()
                await asyncio.sleep(0.2)
        assert ready.status_code == 200, ready.text
        assert ready.headers["strict-transport-security"].startswith("max-age=")
        made = await https.post("/v1/locations", headers=bearer(Role.ADMIN),
                                json={"id": "wh-tls", "name": "tls", "kind": "warehouse"})
        assert made.status_code == 201, made.text
    # A client that does not trust the certificate is refused by TLS itself.
    async with httpx.AsyncClient(base_url=base, timeout=10) as untrusting:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.get("/readyz")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as plain:
        with pytest.raises(httpx.RemoteProtocolError):  # plain HTTP gets no answer
            await plain.get("/readyz")
