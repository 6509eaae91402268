"""Modem identity by TLS client certificate ([gprs] tls_client_ca): over loopback, a GPRS TLS
listener takes only modems whose certificate its CA signed, and only for the modem the
certificate names."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial import unittest

from fep.channels.gprs import GprsChannel, GprsSettings
from fep.channels.modem_identity import _endpoint_args, client_certificate_endpoint
from fep.directory import MeterDirectory
from fep.protocols.dlms.security import InvocationCounterGuard
from tests.channels.test_gprs import IMEI, OTHER_IMEI, Sink, Store, dlms_meter


def _pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(cert.public_bytes(serialization.Encoding.PEM))


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


def issue(common_name: str, issuer: tuple[Any, Any] | None = None,
          ca: bool = False) -> tuple[Any, Any]:
    """A key and a certificate for ``common_name``, signed by ``issuer`` (key, cert) or
    self-signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    signer_key, signer_cert = issuer if issuer is not None else (key, None)
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(signer_cert.subject if signer_cert is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(common_name)]), False)
    return key, builder.sign(signer_key, hashes.SHA256())


class Modem(Protocol):
    def __init__(self, imei: str) -> None:
        self.imei = imei
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(f"ID:{self.imei}\r\n".encode())  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if not self.lost.called:
            self.lost.callback(None)


class ClientCertificateTests(unittest.TestCase):
    timeout = 30

    def setUp(self) -> None:
        tls = Path(self.mktemp())
        tls.mkdir()
        self.ca = issue("fep modem CA", ca=True)
        server = issue("localhost", self.ca)
        (tls / "ca.pem").write_bytes(_pem(self.ca[1]))
        (tls / "key.pem").write_bytes(_key_pem(server[0]))
        (tls / "cert.pem").write_bytes(_pem(server[1]))
        self.store = Store()
        directory = MeterDirectory(self.store)  # type: ignore[arg-type]
        directory.replace([dlms_meter()])
        self.channel = GprsChannel(reactor, GprsSettings(), sink=Sink(), directory=directory,
                                   store=self.store, counters=InvocationCounterGuard())
        endpoint = client_certificate_endpoint(
            reactor, f"ssl:0:interface=127.0.0.1:privateKey={tls / 'key.pem'}:"
            f"certKey={tls / 'cert.pem'}", str(tls / "ca.pem"))
        self.port = self.successResultOf_or_wait(endpoint.listen(self.channel.factory("ssl")))

    def successResultOf_or_wait(self, d: Deferred[Any]) -> Any:
        result = self.successResultOf(d)
        self.addCleanup(result.stopListening)
        return result

    async def dial(self, imei: str, cert: tuple[Any, Any] | None) -> Modem:
        client = None
        if cert is not None:
            client = PrivateCertificate.loadPEM(_pem(cert[1]) + _key_pem(cert[0]))
        options = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(
            _pem(self.ca[1])), clientCertificate=client)
        endpoint = wrapClientTLS(options, TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.port.getHost().port))
        modem = Modem(imei)
        protocol = await connectProtocol(endpoint, modem)
        self.addCleanup(lambda: protocol.transport.abortConnection())
        return modem

    async def until(self, condition: Any, what: str) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await deferLater(reactor, 0.02, lambda: None)

    def states(self) -> dict[str | None, str]:
        return {s.modem: s.state for s in self.channel.sessions()}

    async def test_a_certificate_naming_the_modem_lets_it_in(self) -> None:
        await self.dial(IMEI, issue(IMEI, self.ca))
        await self.until(lambda: self.states().get(f"imei={IMEI}") == "attached",
                         "the modem attached")

    async def test_a_certificate_naming_another_modem_is_refused(self) -> None:
        modem = await self.dial(IMEI, issue(OTHER_IMEI, self.ca))
        await modem.lost
        self.assertEqual(self.channel.stats.proof_failed, 1)
        self.assertEqual(self.channel.stats.identified, 1)

    async def test_no_client_certificate_no_session(self) -> None:
        modem = await self.dial(IMEI, None)
        await modem.lost
        self.assertEqual(self.channel.stats.identified, 0)

    async def test_a_certificate_the_ca_did_not_sign_is_refused(self) -> None:
        modem = await self.dial(IMEI, issue(IMEI))
        await modem.lost
        self.assertEqual(self.channel.stats.identified, 0)


class EndpointStringTests(unittest.TestCase):
    def test_endpoint_arguments(self) -> None:
        self.assertEqual(
            _endpoint_args(r"ssl:4071:privateKey=C\:/k.pem:interface=\:\:1"),
            ("ssl", ["4071"], {"privateKey": "C:/k.pem", "interface": "::1"}),
        )

    def test_bad_listeners(self) -> None:
        for description in ("tcp:4070", "ssl:4071:sslmethod=TLSv1_METHOD", "ssl:x"):
            with self.assertRaises(ValueError):
                client_certificate_endpoint(reactor, description, "/nonexistent")
