"""Secrets at rest: the master key and the AES-GCM envelope that seals each secret.

Each secret gets its own random 256-bit data key; the value is sealed with AES-256-GCM under
the data key, and the data key is wrapped (AES-256-GCM too) under the master key. Both are
bound to the secret's meter and name (associated data), so a ciphertext copied to another
row does not open. Rotating the master key re-wraps the data keys; the ciphertexts of the
values stay as they are.

The master key (32 bytes, 64 hex digits or base64) comes from a file that only its owner
may read (``file:PATH``, mode 0600 or stricter, like the console's host key), an
environment variable (``env:NAME``) or a systemd credential (``credential:NAME``, read from
``$CREDENTIALS_DIRECTORY/NAME``). A master key is known by its id (a hash of it, safe to
show); a secret by its fingerprint (an HMAC of its value under a key derived from the
master key: safe to show even for a short password, and equal for equal values under one
master key).

No Twisted here: the store's persistence is fep.store.secrets.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fep.errors import ConfigError, FepError
from fep.model import Meter

MASTER_KEY_SIZE = 32
NONCE_SIZE = 12
DEFAULT_MASTER_KEY_FILE = "master.key"

# Meter metadata keys whose values are secrets: kept in the secret store, never in the
# meter list in clear. The protocol sessions read them from the meter's metadata as before;
# the meter directory puts them there, in memory only, at job time.
METER_SECRETS = (
    "dlms_ek",  # DLMS global unicast encryption key (hex)
    "dlms_ak",  # DLMS authentication key (hex)
    "dlms_kek",  # DLMS master key (key encryption key) for key transfer (hex)
    "dlms_password",  # DLMS LLS password
    "c12_password",  # ANSI C12.18 security password
    "c12_auth_key",  # ANSI C12.21 DES authentication key
    "dlt645_password",  # DL/T 645 password (level + 6 digits)
    "iec_password",  # IEC 62056-21 programming-mode password (P1)
    "gprs_secret",  # a modem's registration secret (proof of identity)
    "modem_secret",  # the same, as fep.channels.modem_identity names it
    "sim_pin",  # a meter modem's SIM PIN
    "terminal_password",  # a GPRS terminal's configuration password (terminal-config)
)

# The meter id under which secrets of the configuration (``secret:NAME``) are kept.
CONFIG_SECRETS = ""


class SecretError(FepError):
    """A secret cannot be sealed or opened (wrong master key, damaged row); names the
    meter and secret, never the value."""


def is_meter_secret(name: str) -> bool:
    return name.strip().lower() in METER_SECRETS


def split_secrets(metadata: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(metadata without secrets, the secrets) of a meter's metadata; empty values are
    dropped from the secrets."""
    plain = {k: v for k, v in metadata.items() if not is_meter_secret(k)}
    secret = {k.strip().lower(): v for k, v in metadata.items() if is_meter_secret(k) and v}
    return plain, secret


def with_secrets(meter: Meter, secrets: Mapping[str, str] | None) -> Meter:
    """The meter as a session sees it: its secrets in its metadata (in memory only; the
    metadata's repr hides them)."""
    if not secrets:
        return meter
    return attrs.evolve(meter, metadata={**meter.metadata, **secrets})


def _parse_key(text: str, where: str) -> bytes:
    text = text.strip()
    raw: bytes | None = None
    if len(text) == 2 * MASTER_KEY_SIZE:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = None
    if raw is None:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or len(raw) != MASTER_KEY_SIZE:
        raise ConfigError(
            f"the master key in {where} is not {MASTER_KEY_SIZE} bytes in hex or base64",
            section="secrets", key="master_key",
        )
    return raw


def check_private(path: Path, section: str, key: str, what: str) -> None:
    """Refuse a file that its group or others may read or write (ConfigError naming it)."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as e:
        raise ConfigError(f"cannot read {what}: {e.strerror}", file=str(path),
                          section=section, key=key) from None
    if mode & 0o077:
        raise ConfigError(f"{what} is readable by others (mode {mode:o}); chmod 600 it",
                          file=str(path), section=section, key=key)


def create_private(path: Path, data: bytes) -> None:
    """Write a new file of mode 0600 (never over an existing one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


@attrs.frozen
class MasterKey:
    """The key that wraps every data key; ``source`` says where it came from."""

    key: bytes = attrs.field(repr=False)
    source: str = ""

    def __attrs_post_init__(self) -> None:
        if len(self.key) != MASTER_KEY_SIZE:
            raise ValueError(f"a master key is {MASTER_KEY_SIZE} bytes")

    @classmethod
    def generate(cls, source: str = "") -> MasterKey:
        return cls(os.urandom(MASTER_KEY_SIZE), source)

    @property
    def key_id(self) -> str:
        """What names this master key in the store and in listings (not secret)."""
        return hashlib.sha256(b"fep master key id\x00" + self.key).hexdigest()[:16]

    def text(self) -> str:
        """The key as a master key file holds it (hex)."""
        return self.key.hex()

    def fingerprint(self, value: bytes) -> str:
        mac_key = hmac.new(self.key, b"fep secret fingerprint", hashlib.sha256).digest()
        return hmac.new(mac_key, value, hashlib.sha256).hexdigest()[:16]


def master_key_spec(spec: str, data_dir: str | Path) -> str:
    """The configured ``[secrets] master_key``, or the default file under the data
    directory."""
    spec = spec.strip()
    return spec or f"file:{Path(data_dir) / DEFAULT_MASTER_KEY_FILE}"


def spec_file(spec: str) -> Path | None:
    """The file a ``file:`` spec names (None for env: and credential:)."""
    if spec.startswith("file:"):
        return Path(spec[len("file:"):])
    if spec.startswith(("env:", "credential:")):
        return None
    return Path(spec)


def load_master_key(spec: str, environ: Mapping[str, str] | None = None) -> MasterKey:
    """The master key a spec names: ``file:PATH`` (or a bare path), ``env:NAME`` or
    ``credential:NAME``. ConfigError when it is missing, malformed or readable by others."""
    env = os.environ if environ is None else environ
    if spec.startswith("env:"):
        name = spec[len("env:"):]
        text = env.get(name)
        if not text:
            raise ConfigError(f"the environment variable {name} holding the master key is "
                              "not set", section="secrets", key="master_key")
        return MasterKey(_parse_key(text, f"${name}"), spec)
    if spec.startswith("credential:"):
        name = spec[len("credential:"):]
        directory = env.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ConfigError(f"no systemd credentials (CREDENTIALS_DIRECTORY is not set) for "
                              f"the master key {name!r}", section="secrets", key="master_key")
        path = Path(directory) / name
        check_private(path, "secrets", "master_key", "the master key")
        return MasterKey(_parse_key(path.read_text(encoding="ascii", errors="replace"),
                                    str(path)), spec)
    key_file = spec_file(spec)
    assert key_file is not None
    if not key_file.exists():
        raise ConfigError("the master key file does not exist (make one with `fep keys init`)",
                          file=str(key_file), section="secrets", key="master_key")
    check_private(key_file, "secrets", "master_key", "the master key")
    return MasterKey(_parse_key(key_file.read_text(encoding="ascii", errors="replace"),
                                str(key_file)), spec)


def create_master_key(spec: str) -> MasterKey:
    """A new master key written to the file ``spec`` names (mode 0600; refused when the
    file exists)."""
    path = spec_file(spec)
    if path is None:
        raise ConfigError(f"cannot make a master key for {spec!r}: only a file: master key "
                          "is made by fep", section="secrets", key="master_key")
    if path.exists():
        raise ConfigError("the master key file exists already", file=str(path),
                          section="secrets", key="master_key")
    key = MasterKey.generate(spec)
    create_private(path, (key.text() + "\n").encode())
    return key


@attrs.frozen
class Sealed:
    """A secret as the store keeps it: nothing here reveals the value."""

    key_id: str
    fingerprint: str
    nonce: bytes
    ciphertext: bytes
    wrapped_key: bytes = attrs.field(repr=False)


@attrs.frozen
class SecretInfo:
    """What may be shown of a secret: never its value."""

    id: int
    meter: str
    name: str
    key_id: str
    fingerprint: str
    created: datetime


def _aad(meter: str, name: str) -> bytes:
    return b"fep secret\x00" + meter.encode() + b"\x00" + name.encode()


def seal(master: MasterKey, meter: str, name: str, value: bytes) -> Sealed:
    """The value sealed under a new data key, the data key wrapped by the master key."""
    data_key = AESGCM.generate_key(bit_length=256)
    aad = _aad(meter, name)
    nonce = os.urandom(NONCE_SIZE)
    ciphertext = AESGCM(data_key).encrypt(nonce, value, aad)
    return Sealed(master.key_id, master.fingerprint(value), nonce, ciphertext,
                  _wrap(master, data_key, aad))


def _wrap(master: MasterKey, data_key: bytes, aad: bytes) -> bytes:
    wrap_nonce = os.urandom(NONCE_SIZE)
    return wrap_nonce + AESGCM(master.key).encrypt(wrap_nonce, data_key, b"wrap\x00" + aad)


def _unwrap(master: MasterKey, sealed: Sealed, meter: str, name: str) -> bytes:
    if sealed.key_id != master.key_id:
        raise SecretError(
            f"secret {name} of meter {meter or '(config)'} is sealed under master key "
            f"{sealed.key_id}, not this node's {master.key_id}"
        )
    wrapped = sealed.wrapped_key
    try:
        return AESGCM(master.key).decrypt(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:],
                                          b"wrap\x00" + _aad(meter, name))
    except (InvalidTag, ValueError):
        raise SecretError(f"secret {name} of meter {meter or '(config)'}: its data key does "
                          "not open with the master key (damaged or moved)") from None


def open_sealed(master: MasterKey, meter: str, name: str, sealed: Sealed) -> bytes:
    """The clear value of a sealed secret; SecretError names what did not open."""
    data_key = _unwrap(master, sealed, meter, name)
    try:
        return AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, _aad(meter, name))
    except (InvalidTag, ValueError):
        raise SecretError(f"secret {name} of meter {meter or '(config)'} does not open "
                          "(damaged or moved)") from None


def rewrap(old: MasterKey, new: MasterKey, meter: str, name: str, sealed: Sealed) -> Sealed:
    """The same sealed value with its data key wrapped under ``new`` (the value's
    ciphertext is kept; its fingerprint is recomputed under the new master key)."""
    data_key = _unwrap(old, sealed, meter, name)
    aad = _aad(meter, name)
    try:
        value = AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, aad)
    except (InvalidTag, ValueError):
        raise SecretError(f"secret {name} of meter {meter or '(config)'} does not open "
                          "(damaged or moved)") from None
    return Sealed(new.key_id, new.fingerprint(value), sealed.nonce, sealed.ciphertext,
                  _wrap(new, data_key, aad))
