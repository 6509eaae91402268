"""What a meter's record asks of a DLMS session, sans-IO: the association and link settings
from its ``dlms_*`` metadata, the objects to read, times and OBIS codes it names."""

from __future__ import annotations

from datetime import UTC, datetime

from fep.errors import ConfigError
from fep.model import Meter, ObisCode
from fep.protocols.dlms import apdu as A
from fep.protocols.dlms.client import Authentication, ClientSettings
from fep.protocols.dlms.identity import DEFAULT_SYSTEM_TITLE
from fep.protocols.dlms.link import PUBLIC_CLIENT, LinkKind, LinkSettings
from fep.protocols.dlms.security import SecurityKeys


def hex_setting(meter: Meter, key: str, size: int | None = None) -> bytes | None:
    text = meter.metadata.get(key)
    if not text:
        return None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"meter {meter.id}: {key} is not hex", key=key) from None
    if size is not None and len(raw) != size:
        raise ConfigError(f"meter {meter.id}: {key} must be {size} bytes", key=key)
    return raw


def settings_for(
    meter: Meter, system_title: bytes | None = None
) -> tuple[ClientSettings, LinkSettings]:
    """The association and link settings a meter's record (metadata ``dlms_*``) asks for;
    ``system_title`` is fep's (the node's) unless the record gives ``dlms_system_title``.
    A meter with keys is always ciphered: ``dlms_ciphered = no`` with keys is refused."""
    md = meter.metadata
    try:
        auth = Authentication(md.get("dlms_auth", "none"))
    except ValueError:
        raise ConfigError(
            f"meter {meter.id}: dlms_auth must be none, low or high-gmac", key="dlms_auth"
        ) from None
    ek, ak = hex_setting(meter, "dlms_ek", 16), hex_setting(meter, "dlms_ak", 16)
    keys = SecurityKeys(ek, ak) if ek and ak else None
    ciphered_text = md.get("dlms_ciphered", "yes" if keys else "no")
    if keys is not None and ciphered_text.lower() not in ("yes", "true", "1"):
        raise ConfigError(
            f"meter {meter.id}: dlms_ciphered = {ciphered_text} with keys: a meter with keys "
            "is always ciphered (an unciphered APDU from it is refused)",
            key="dlms_ciphered",
        )
    try:
        kind = LinkKind(md.get("dlms_link", "wrapper"))
    except ValueError:
        raise ConfigError(
            f"meter {meter.id}: dlms_link must be wrapper or hdlc", key="dlms_link"
        ) from None
    server = md.get("dlms_server", meter.address or "1")
    logical_text, _, physical_text = server.partition("/")
    default_client = "1" if auth != Authentication.NONE else str(PUBLIC_CLIENT)
    try:
        client_address = int(md.get("dlms_client", default_client), 0)
        logical = int(logical_text, 0)
        physical = int(physical_text, 0) if physical_text else None
    except ValueError:
        raise ConfigError(
            f"meter {meter.id}: DLMS addresses must be numbers", key="dlms_server"
        ) from None
    password = md.get("dlms_password")
    client = ClientSettings(
        authentication=auth,
        password=password.encode() if password else None,
        system_title=hex_setting(meter, "dlms_system_title", 8)
        or system_title
        or DEFAULT_SYSTEM_TITLE,
        keys=keys,
        ciphered=ciphered_text.lower() in ("yes", "true", "1") and keys is not None,
        meter=meter.id,
        route=meter.route,
    )
    return client, LinkSettings(kind, client_address, logical, physical)


def metadata_time(meter: Meter, key: str) -> datetime | None:
    """An ISO-8601 time from the meter's metadata (UTC when no zone is given)."""
    text = meter.metadata.get(key)
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"meter {meter.id}: {key} is not an ISO-8601 time: {text!r}", key=key
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


DEFAULT_OBJECTS = (
    "8/0.0.1.0.0.255/2",
    "3/1.0.1.8.0.255/2",
    "3/1.0.2.8.0.255/2",
    "3/1.0.32.7.0.255/2",
    "3/1.0.31.7.0.255/2",
    "3/1.0.1.7.0.255/2",
)


def parse_object(text: str) -> A.AttributeDescriptor:
    """``CLASS/OBIS/ATTRIBUTE``, e.g. ``3/1-0:1.8.0.255/2`` or ``3/1.0.1.8.0.255/2``."""
    parts = text.strip().split("/")
    if len(parts) != 3:
        raise ConfigError(f"object {text!r} is not CLASS/OBIS/ATTRIBUTE", key="objects")
    try:
        obis_text = parts[1]
        if ":" in obis_text and obis_text.count(".") == 3:
            # 1-0:1.8.0.255 -> 1-0:1.8.0*255
            head, _, f = obis_text.rpartition(".")
            obis_text = f"{head}*{f}"
        return A.AttributeDescriptor(int(parts[0]), ObisCode.parse(obis_text), int(parts[2]))
    except ValueError as e:
        raise ConfigError(f"object {text!r}: {e}", key="objects") from None


def obis_setting(meter: Meter, key: str, default: str) -> ObisCode:
    text = meter.metadata.get(key) or default
    try:
        return ObisCode.parse(text)
    except ValueError:
        raise ConfigError(
            f"meter {meter.id}: {key} {text!r} is not an OBIS code", key=key
        ) from None
