"""Who may hold a modem's name on the GPRS listeners: the policy for a second connection that
claims a name a live session holds (an identity conflict), and the proofs of identity a
modem can be asked for: a per-modem secret in its registration, its source network, a TLS
client certificate signed by the operator's CA.

Sans-IO apart from the TLS listener builder at the end (docs/channels/gprs.md, "Modem
identity"; docs/security.md).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import attrs

from fep.model import Meter

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorSSL

# keep: the incumbent keeps the name while it lives; a newcomer is held, then closed.
# replace-when-silent: a newcomer replaces an incumbent silent past its heartbeat window.
CONFLICT_POLICIES: Final = ("keep", "replace-when-silent")

# The meter metadata key of the modem's secret (see modem_secret).
SECRET_KEY: Final = "modem_secret"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def modem_secret(meter: Meter) -> str | None:
    """The secret the modem of ``meter`` must give in its registration (``SECRET=...`` of
    the ASCII registration, tag 05 of the binary one), None when it need not prove itself.

    The one place the channel reads it: today from the meter's metadata (``modem_secret``);
    an encrypted secret store replaces this function. Never log what it returns."""
    value = meter.metadata.get(SECRET_KEY)
    return value or None


def proof_matches(proof: str | None, secrets: Iterable[str]) -> bool:
    """Whether ``proof`` equals every configured secret (a modem's meters may each name
    one; they must agree). Compared in constant time; no secret configured: True."""
    wanted = set(secrets)
    if not wanted:
        return True
    if proof is None:
        return False
    given = proof.encode("utf-8")
    ok = True
    for secret in wanted:
        ok &= hmac.compare_digest(given, secret.encode("utf-8"))
    return ok


@attrs.frozen
class SourceNetworks:
    """Networks a modem may connect from: ``default`` for every listener, ``listeners`` for
    the listeners named there (their list replaces the default). No network listed: any
    source."""

    default: tuple[Network, ...] = ()
    listeners: tuple[tuple[str, tuple[Network, ...]], ...] = ()

    def for_listener(self, listener: str) -> tuple[Network, ...]:
        for name, networks in self.listeners:
            if name == listener:
                return networks
        return self.default

    def allows(self, listener: str, host: str) -> bool:
        networks = self.for_listener(listener)
        if not networks:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False  # not an IP peer (a UNIX socket): nothing to match
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in networks)


def parse_source_networks(text: str) -> SourceNetworks:
    """``[gprs] allow``: CIDR networks separated by spaces or commas; ``LISTENER=CIDR`` (e.g.
    ``tcp:4070=10.64.0.0/10``) limits one listener (named as in ``fep sessions``) instead.
    ValueError names a bad item."""
    default: list[Network] = []
    per: dict[str, list[Network]] = {}
    for item in re.split(r"[\s,]+", text.strip()):
        if not item:
            continue
        listener, sep, cidr = item.rpartition("=")
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not a network (CIDR, e.g. 10.64.0.0/10)") from None
        if sep:
            if not listener:
                raise ValueError(f"{item!r}: name the listener before '='")
            per.setdefault(listener, []).append(network)
        else:
            default.append(network)
    return SourceNetworks(
        tuple(default), tuple((name, tuple(nets)) for name, nets in per.items())
    )


def certificate_names(transport: Any) -> set[str] | None:
    """The names a TLS peer's client certificate gives (its subject's common names and its
    DNS and URI subject-alternative names), None when the transport has none (not TLS, or
    a listener that asks for no client certificate). The TLS layer verified it already."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    getter = getattr(transport, "getPeerCertificate", None)
    if getter is None:
        return None
    try:
        peer = getter()
    except Exception:
        return None
    if peer is None:
        return None
    cert = peer.to_cryptography()
    names = {
        str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    }
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return names
    names.update(san.get_values_for_type(x509.DNSName))
    names.update(san.get_values_for_type(x509.UniformResourceIdentifier))
    return names


def certificate_names_modem(names: set[str], identity_keys: Iterable[tuple[str, str]]) -> bool:
    """Whether a certificate's ``names`` name the modem: one of them is one of its identity
    values (``356938035643809``) or ``key=value`` names (``imei=356938035643809``)."""
    return any(value in names or f"{key}={value}" in names for key, value in identity_keys)


# -- TLS listeners that require a client certificate --------------------------------------

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----",
                       re.DOTALL)
_TLS_ARGS: Final = frozenset({"port", "privateKey", "certKey", "interface", "backlog",
                              "extraCertChain"})


def _endpoint_args(description: str) -> tuple[str, list[str], dict[str, str]]:
    """``prefix:positional:key=value`` as Twisted's endpoint strings write them (``\\:``
    escapes a colon)."""
    parts = [p.replace("\\:", ":") for p in re.split(r"(?<!\\):", description)]
    prefix, rest = parts[0], parts[1:]
    positional = [p for p in rest if "=" not in p]
    keywords = dict(p.split("=", 1) for p in rest if "=" in p)
    return prefix, positional, keywords


def _certificates(path: str) -> list[Any]:
    from twisted.internet import ssl

    with open(path, "rb") as f:
        blocks = _PEM_CERT.findall(f.read())
    if not blocks:
        raise ValueError(f"{path}: no PEM certificate")
    return [ssl.Certificate.loadPEM(block) for block in blocks]


def client_certificate_endpoint(reactor: IReactorSSL, description: str, ca_file: str) -> Any:
    """The server endpoint of an ``ssl:`` listener string (``ssl:4071:privateKey=...:
    certKey=...[:interface=...][:backlog=...][:extraCertChain=...]``) that requires every
    modem to present a client certificate signed by a CA of ``ca_file`` (PEM, one or
    more). Twisted's own ``ssl:`` strings cannot ask for client certificates. ValueError
    or OSError when the description or a file is wrong."""
    from twisted.internet import ssl
    from twisted.internet.endpoints import SSL4ServerEndpoint

    prefix, positional, kw = _endpoint_args(description)
    if prefix != "ssl":
        raise ValueError(f"{description!r}: client certificates need an ssl: listener")
    unknown = set(kw) - _TLS_ARGS
    if unknown:
        raise ValueError(
            f"{description!r}: {', '.join(sorted(unknown))} not supported on a listener "
            "with client certificates")
    port = kw.get("port") or (positional[0] if positional else "")
    if not port.isdigit():
        raise ValueError(f"{description!r}: no port")
    key_file = kw.get("privateKey", "server.pem")
    with open(kw.get("certKey", key_file), "rb") as f:
        cert_pem = f.read()
    with open(key_file, "rb") as f:
        key_pem = f.read()
    server = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
    chain = [c.original for c in _certificates(kw["extraCertChain"])] if (
        "extraCertChain" in kw) else None
    options = ssl.CertificateOptions(
        privateKey=server.privateKey.original,
        certificate=server.original,
        extraCertChain=chain,
        trustRoot=ssl.trustRootFromCertificates(_certificates(ca_file)),
    )
    return SSL4ServerEndpoint(
        reactor, int(port), options, backlog=int(kw.get("backlog", 50)),
        interface=kw.get("interface", ""))
