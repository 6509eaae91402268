"""Who may log in to the SSH console, as whom and with which role: the authorized_keys file
with fep's operator and role in each key's comment, the public-key checker that accepts only
modern signatures (Ed25519, ECDSA, RSA with SHA-2), and the console's host keys.

An authorized_keys line is an OpenSSH one whose comment names the operator and the role::

    ssh-ed25519 AAAAC3Nz... alice role=operator
    ecdsa-sha2-nistp256 AAAAE2Vj... operator=bob role=admin laptop key
    ssh-rsa AAAAB3Nz... carol

The operator is ``operator=NAME`` or else the comment's first word without ``=``; without
one the operator is the key itself (``key:SHA256:...``), so two unnamed keys are never the
same person. The role is ``role=viewer|operator|admin``; none given: ``viewer``. OpenSSH
options before the key type are allowed and ignored. A line with an unknown role, a bad
operator name, a DSA key or a key that does not parse is skipped with a logged error (it
grants nothing). The SSH user name a client sends is never the operator.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.keys import BadKeyError, FingerprintFormats, Key
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from fep.errors import ConfigError
from fep.operator.commands import ROLES

log = Logger(namespace="fep.operator.manhole")

DEFAULT_ROLE = "viewer"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}\Z")

# Key types in authorized_keys lines (to find where the key starts after any options).
_KEY_TYPES = frozenset({
    "ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ecdsa-sha2-nistp256@openssh.com",
    "sk-ssh-ed25519@openssh.com",
})
# Signature algorithm -> the key type it signs with. ssh-rsa (RSA with SHA-1) and ssh-dss
# (DSA) are refused; so are security-key types (not supported by this console).
SIGNATURES: dict[bytes, bytes] = {
    b"ssh-ed25519": b"ssh-ed25519",
    b"ecdsa-sha2-nistp256": b"ecdsa-sha2-nistp256",
    b"ecdsa-sha2-nistp384": b"ecdsa-sha2-nistp384",
    b"ecdsa-sha2-nistp521": b"ecdsa-sha2-nistp521",
    b"rsa-sha2-512": b"ssh-rsa",
    b"rsa-sha2-256": b"ssh-rsa",
}
MIN_RSA_BITS = 2048


def openssh_fingerprint(key: Key) -> str:
    """A key's fingerprint as ``ssh-keygen -l`` prints it: ``SHA256:`` and unpadded
    base64."""
    return "SHA256:" + key.fingerprint(FingerprintFormats.SHA256_BASE64).rstrip("=")


@attrs.frozen
class ConsoleKey:
    """One authorized key: whose it is and what it may do."""

    key: Key = attrs.field(eq=False)
    operator: str
    role: str
    fingerprint: str

    def avatar_id(self) -> bytes:
        return f"{self.operator} {self.role} {self.fingerprint}".encode()


def identity(avatar_id: bytes) -> tuple[str, str, str]:
    """(operator, role, fingerprint) of an avatar id made by :meth:`ConsoleKey.avatar_id`."""
    operator, role, fingerprint = avatar_id.decode("utf-8", "replace").split(" ", 2)
    return operator, role, fingerprint


def parse_line(line: str) -> ConsoleKey:
    """One authorized_keys line (not blank, not a comment); ConfigError says what is
    wrong with it."""
    words = line.split()
    start = next((i for i, w in enumerate(words) if w in _KEY_TYPES), None)
    if start is None or start + 1 >= len(words):
        raise ConfigError("no key type and key (ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa)")
    kind = words[start]
    if kind == "ssh-dss":
        raise ConfigError("DSA keys are refused: use an Ed25519, ECDSA or RSA key")
    if kind.startswith("sk-"):
        raise ConfigError(f"{kind} (security key) is not supported by the console")
    try:
        key = Key.fromString(f"{kind} {words[start + 1]}".encode())
    except (BadKeyError, ValueError, IndexError) as e:
        raise ConfigError(f"not a public key: {e}") from None
    if key.type() == "RSA" and key.size() < MIN_RSA_BITS:
        raise ConfigError(f"RSA key of {key.size()} bits; at least {MIN_RSA_BITS} needed")
    fingerprint = openssh_fingerprint(key)
    operator = role = None
    for word in words[start + 2:]:
        name, eq, value = word.partition("=")
        if eq and name == "role":
            role = value
        elif eq and name == "operator":
            operator = value
        elif not eq and operator is None:
            operator = word
    role = role if role is not None else DEFAULT_ROLE
    if role not in ROLES:
        raise ConfigError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if operator is None:
        operator = f"key:{fingerprint}"
    elif not _NAME.match(operator):
        raise ConfigError(f"operator name {operator!r}: letters, digits and . _ @ + - only")
    return ConsoleKey(key, operator, role, fingerprint)


def parse_authorized_keys(lines: Iterable[str], file: str = "<authorized_keys>"
                          ) -> list[ConsoleKey]:
    """The usable keys of an authorized_keys text; bad lines are logged and skipped."""
    found = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(parse_line(line))
        except ConfigError as e:
            log.error("{file} line {line}: {error}; the line is ignored", file=file,
                      line=number, error=e.message)
    return found


class AuthorizedOperators:
    """The authorized_keys file, read at each login (removing a line takes effect at
    once)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def keys(self) -> list[ConsoleKey]:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            log.error("cannot read {path}: {error}", path=str(self.path), error=e.strerror)
            return []
        return parse_authorized_keys(text.splitlines(), str(self.path))

    def find(self, key: Key) -> ConsoleKey | None:
        """The first entry for this key."""
        return next((entry for entry in self.keys() if entry.key == key), None)


@implementer(ICredentialsChecker)
class OperatorKeyChecker:
    """Public-key login with a key of the authorized_keys file and a modern signature;
    the avatar id names the key's operator, role and fingerprint."""

    credentialInterfaces = (ISSHPrivateKey,)

    def __init__(self, keys: AuthorizedOperators) -> None:
        self.keys = keys

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes | tuple[()]]:
        try:
            return succeed(self._check(credentials))
        except ValidPublicKey:
            return fail()
        except UnauthorizedLogin as e:
            log.warn("console login refused for {user} with key {fingerprint}: {why}",
                     user=credentials.username.decode("utf-8", "replace"),
                     fingerprint=getattr(e, "fingerprint", "?"), why=str(e))
            return fail()

    def _check(self, credentials: Any) -> bytes:
        try:
            key = Key.fromString(credentials.blob)
        except (BadKeyError, ValueError) as e:
            raise UnauthorizedLogin(f"not a public key: {e}") from None

        def refuse(why: str) -> UnauthorizedLogin:
            error = UnauthorizedLogin(why)
            error.fingerprint = openssh_fingerprint(key)  # type: ignore[attr-defined]
            return error

        algorithm = credentials.algName
        if SIGNATURES.get(algorithm) != key.sshType():
            raise refuse(f"signature algorithm {algorithm.decode('ascii', 'replace')} with a "
                         f"{key.sshType().decode('ascii', 'replace')} key is not accepted")
        entry = self.keys.find(key)
        if entry is None:
            raise refuse("key not authorized")
        if not credentials.signature:
            raise ValidPublicKey()
        try:
            signed_with = getNS(credentials.signature)[0]
        except Exception:
            raise refuse("malformed signature") from None
        if signed_with != algorithm:
            raise refuse(f"signature of type {signed_with.decode('ascii', 'replace')} for "
                         f"algorithm {algorithm.decode('ascii', 'replace')}")
        try:
            good = key.verify(credentials.signature, credentials.sigData)
        except Exception:
            good = False
        if not good:
            raise refuse("bad signature")
        return entry.avatar_id()


# -- host keys ---------------------------------------------------------------------------------

# File suffix -> how to make that key. The Ed25519 key keeps the configured name (as before);
# the RSA and ECDSA keys sit next to it.
_HOST_KEYS: dict[str, Any] = {
    "": lambda: ed25519.Ed25519PrivateKey.generate(),
    "_ecdsa": lambda: ec.generate_private_key(ec.SECP256R1()),
    "_rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=3072),
}


def host_key_file(path: Path, make: Any) -> Key:
    """A host key file, made (mode 0600) if it does not exist yet; refused if others may
    read it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Key(make())
        data = key.toString("OPENSSH")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        log.info("made the console host key {path} ({fingerprint})", path=str(path),
                 fingerprint=openssh_fingerprint(key))
        return key
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"the host key is readable by others (mode {mode:o}); chmod 600 it",
                          file=str(path), section="manhole", key="host_key")
    try:
        return Key.fromFile(str(path))
    except (BadKeyError, ValueError) as e:
        raise ConfigError(f"not a private key: {e}", file=str(path), section="manhole",
                          key="host_key") from None


def host_keys(path: Path) -> dict[bytes, Key]:
    """The console's host keys by SSH key type: Ed25519 at ``path``, ECDSA (P-256) at
    ``path_ecdsa`` and RSA (3072 bits) at ``path_rsa``, each made at first start. All three
    are held so that clients may use keys of each type (conch advertises server-sig-algs
    from the host keys it has)."""
    keys: dict[bytes, Key] = {}
    for suffix, make in _HOST_KEYS.items():
        key = host_key_file(path.with_name(path.name + suffix), make)
        keys.setdefault(key.sshType(), key)
    return keys


def signature_algorithms(keys: Iterable[Key]) -> list[bytes]:
    """The host key / user signature algorithms to advertise: those of the keys held, less
    ssh-rsa (SHA-1) and ssh-dss."""
    out: list[bytes] = []
    for key in keys:
        out.extend(a for a in key.supportedSignatureAlgorithms() if a in SIGNATURES)
    return out
