"""A throwaway certificate authority and an HTTPS server for a made-up name, on the host.

The server presents a certificate for one name (``api.example.test``) signed by a CA made for
this test session only, and records the SNI name and ``Host`` header of every request, so a
test can check that a client in the sandbox kept the real name end to end.

Usage::

    ca = Authority.create()
    with HttpsSite(ca, "api.example.test", bind="127.0.0.1") as site:
        site.port, ca.pem  # give the CA to the client; site.seen lists (sni, host) pairs
"""

from __future__ import annotations

import datetime
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Key = ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: str, key: Key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)))


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class Authority:
    """A CA that exists only in memory for one test session."""

    key: Key
    cert: x509.Certificate

    @classmethod
    def create(cls) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (_builder("opsbot test CA", "opsbot test CA", key)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    @property
    def pem(self) -> str:
        return _pem(self.cert)

    def issue(self, host: str) -> tuple[str, str]:
        """(certificate PEM, private key PEM) for ``host``."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (_builder(host, "opsbot test CA", key)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
                .sign(self.key, hashes.SHA256()))
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return _pem(cert), key_pem.decode()


def server_context(ca: Authority, host: str) -> ssl.SSLContext:
    cert, key = ca.issue(host)
    with tempfile.TemporaryDirectory() as scratch:  # ssl loads chains from files only
        (Path(scratch) / "cert.pem").write_text(cert)
        (Path(scratch) / "key.pem").write_text(key)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(Path(scratch) / "cert.pem", Path(scratch) / "key.pem")
    return context


@dataclass
class HttpsSite:
    """A threaded HTTPS server answering ``hello from <host>`` to every GET."""

    ca: Authority
    host: str
    bind: str = "127.0.0.1"
    seen: list[tuple[str | None, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        context = server_context(self.ca, self.host)
        snis: dict[int, str | None] = {}
        context.sni_callback = lambda sock, name, ctx: snis.__setitem__(id(sock), name)
        self._server = ThreadingHTTPServer((self.bind, 0), _handler(self, snis))
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def __enter__(self) -> Self:
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(site: HttpsSite, snis: dict[int, str | None]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            site.seen.append((snis.get(id(self.connection)), self.headers.get("Host")))
            body = f"hello from {site.host}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
