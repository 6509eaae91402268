"""The DLMS push receiver's decisions, sans-IO: what one pushed APDU comes to
(``decide_push``): its records to accept (``PushAccepted``), a refusal with its reason
(``PushRefused``, a security event when a meter with keys pushed unciphered), or the records
of a ciphered push once its invocation counter is taken (``PushCounterCheck``); the
refusals counted in ``PushStats``.

The Twisted adapter is session.py's ``DlmsPushDecoder`` (it takes the counter, logs, submits
to the sink), on a push connection of a GPRS session (``DlmsPushHandler``) or on the push
listener (``DlmsPushFactory``)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

import attrs

from fep.errors import ConfigError, FrameError
from fep.model import Meter, Record
from fep.protocols.dlms import apdu as A
from fep.protocols.dlms.identity import key_fingerprint
from fep.protocols.dlms.layouts import LayoutTable
from fep.protocols.dlms.settings import hex_setting, settings_for

if TYPE_CHECKING:
    from fep.protocols.dlms.security import SecurityKeys

# The PushStats counter of each reason for a refusal; any other reason is a bad frame.
REFUSAL_COUNTERS = {
    "unknown": "rejected_unknown",
    "cipher": "rejected_cipher",
    "replay": "rejected_replay",
    "plain": "rejected_plain",
}


@attrs.define
class PushStats:
    accepted: int = 0
    rejected_unknown: int = 0
    rejected_cipher: int = 0
    rejected_replay: int = 0
    rejected_frame: int = 0
    # Unciphered pushes from meters with keys (each a security event).
    rejected_plain: int = 0

    def refused(self, why: str) -> None:
        """Count one refusal for ``why`` (a PushRefused's reason)."""
        counter = REFUSAL_COUNTERS.get(why, "rejected_frame")
        setattr(self, counter, getattr(self, counter) + 1)


@attrs.frozen
class PushRefused:
    """A push not taken: ``why`` is unknown, cipher, replay, plain or frame. ``downgrade``:
    the meter id and what came, when a meter with keys pushed unciphered (a security
    event)."""

    why: str
    system_title: bytes | None
    detail: str
    downgrade: tuple[str, str] | None = None


@attrs.frozen
class PushAccepted:
    """An unciphered push of a meter without keys: its records, to submit."""

    meter: Meter
    records: tuple[Record, ...]


@attrs.frozen
class PushCounterCheck:
    """A ciphered push whose records are submitted once its invocation counter is taken
    (``accept_received(system_title, counter, fingerprint)`` of the counters; in the store
    when it is shared, so before anything is stored); refused as ``refused(last)`` when the
    counter is not above the last one taken."""

    meter: Meter
    system_title: bytes
    counter: int
    fingerprint: str
    records: tuple[Record, ...]

    def refused(self, last: int | None) -> PushRefused:
        return PushRefused(
            "replay", self.system_title, f"invocation counter {self.counter} not above {last}"
        )


PushDecision = PushRefused | PushAccepted | PushCounterCheck


def claimed_sender(
    raw: bytes, identify: Callable[[bytes], Meter | None] | None,
    layouts: LayoutTable | None = None,
) -> Meter | None:
    """The meter an unciphered push names by its logical device name (0.0.42.0.0.255,
    often the manufacturer's three letters and the serial number)."""
    from fep.protocols.dlms.push import logical_device_name

    if identify is None:
        return None
    try:
        message = A.decode_apdu(raw)
        if not isinstance(message, A.DataNotification):
            return None
        name = logical_device_name(message, layouts)
    except (FrameError, ValueError):
        return None
    return identify(name) if name else None


def keyed(meter: Meter) -> bool:
    """Whether ``meter`` has DLMS keys (then nothing unciphered is taken from it)."""
    try:
        client, _ = settings_for(meter)
    except ConfigError:
        # Keys that do not parse are still keys: nothing unciphered is taken.
        return any(meter.metadata.get(k) for k in ("dlms_ek", "dlms_ak"))
    try:
        return client.keys is not None or encryption_only(meter)
    except ConfigError:
        return bool(meter.metadata.get("dlms_ek"))


# ``dlms_push_security = encryption-only``: the meter pushes APDUs that are encrypted but
# carry no authentication tag (security control 0x20/0x21, as the Austrian customer
# interfaces do, with the one customer key the grid operator gives: ``dlms_ek``).
ENCRYPTION_ONLY = "encryption-only"


PUSH_SECURITY = ("", "authenticated", ENCRYPTION_ONLY)


def encryption_only(meter: Meter) -> bool:
    """Whether ``meter`` pushes encryption-only APDUs (with its ``dlms_ek``). ConfigError
    for a value that is none of PUSH_SECURITY (its pushes are then refused, naming it)."""
    mode = str(meter.metadata.get("dlms_push_security", "")).strip().lower()
    if mode not in PUSH_SECURITY:
        raise ConfigError(
            f"meter {meter.id}: dlms_push_security = {mode} (authenticated or "
            f"{ENCRYPTION_ONLY})", key="dlms_push_security")
    return mode == ENCRYPTION_ONLY and bool(meter.metadata.get("dlms_ek"))


def push_keys(meter: Meter) -> tuple[SecurityKeys | None, bool]:
    """The keys a ciphered push of ``meter`` is deciphered with (None: it has none) and
    whether encryption-only APDUs (security suite 0 or 1, no tag) are taken from it. An
    encryption-only meter needs only ``dlms_ek``; without the setting, only authenticated
    APDUs of suite 0 are taken."""
    from fep.protocols.dlms.security import SecurityKeys

    client, _ = settings_for(meter)
    if not encryption_only(meter):
        return client.keys, False
    if client.keys is not None:
        return client.keys, True
    # No authentication key is needed: an encryption-only push has no tag to check.
    ek = hex_setting(meter, "dlms_ek", 16)
    assert ek is not None  # encryption_only() saw it set
    return SecurityKeys(ek, bytes(16)), True


# The ways an unciphered push may name a meter without keys (``[push] dlms_plain``): the
# link address it came from (``hdlc:16``, ``wport:1``; the meter list's dlms_push_address),
# the logical device name it carries, the serial number in its list.
PLAIN_WAYS = ("address", "ldn", "serial")


def plain_claims(
    message: A.DataNotification, address: str | None, layouts: LayoutTable | None
) -> list[tuple[str, str]]:
    """What an unciphered push says about its sender, as (way, value) pairs; FrameError
    when its body is in no layout known."""
    from fep.protocols.dlms.push import decode_push

    content = decode_push("?", message, layouts=layouts)
    claims = []
    if address:
        claims.append(("address", address))
    if content.logical_device_name:
        claims.append(("ldn", content.logical_device_name.decode("latin-1")))
    if content.serial:
        claims.append(("serial", content.serial))
    return claims


def layouts_for(meter: Meter, layouts: LayoutTable | None) -> LayoutTable | None:
    """The layouts ``meter``'s pushes are read with: ``layouts`` (None: the shipped ones),
    with the layout its ``dlms_push_layout`` names first. ConfigError when no layout has
    that name."""
    name = str(meter.metadata.get("dlms_push_layout", "")).strip()
    if not name:
        return layouts
    from fep.protocols.dlms.layouts import shipped_layouts

    table = (layouts if layouts is not None else shipped_layouts()).preferring(name)
    if table is None:
        raise ConfigError(f"meter {meter.id}: dlms_push_layout = {name}: no push layout of "
                          "that name", key="dlms_push_layout")
    return table


def decide_push(
    raw: bytes,
    wport: int = 0,
    source: str = "",
    *,
    resolve: Callable[[bytes | None, int], Meter | None],
    last_received: Callable[[bytes, str], int | None],
    identify: Callable[[bytes], Meter | None] | None = None,
    address: str | None = None,
    sender: Callable[[str, str], Meter | None] | None = None,
    plain: Collection[str] = (),
    layouts: LayoutTable | None = None,
) -> PushDecision:
    """What one pushed APDU comes to. The sender is found by the system title of a
    general-ciphered APDU (through ``resolve``), deciphered with its keys, refused when its
    invocation counter is not above ``last_received(title, key fingerprint)``; the
    notification decoded into records (their source ``source`` when given) with
    ``layouts``.

    An unciphered push is refused from a meter with keys, whether ``resolve`` names it (a
    GPRS session's meter), ``identify`` finds it by the logical device name the push
    carries, or ``sender(way, value)`` finds it by any of its claims (``plain_claims``:
    the link ``address`` it came from, its logical device name, the serial number in its
    list). Otherwise it is taken as ``resolve``'s meter, or (the push listener) as the meter
    the first of the ``plain`` ways finds; else refused as unknown. Bad input is a refusal;
    nothing is raised."""
    from fep.protocols.dlms import security
    from fep.protocols.dlms.errors import CipheringError
    from fep.protocols.dlms.push import decode_push

    title: bytes | None = None
    try:
        plain_apdu = raw
        if raw and raw[0] in (0xDB, 0xDC):
            title = security.general_system_title(raw)
            meter = resolve(title, wport)
            if meter is None:
                return PushRefused("unknown", title, "no meter with this system title")
            keys, unauthenticated = push_keys(meter)
            if keys is None:
                return PushRefused("cipher", title, f"meter {meter.id} has no keys")
            deciphered = security.decipher_apdu(
                raw, keys=keys, require_authentication=not unauthenticated,
                suites=(0, 1) if unauthenticated else (0,))
            # Per key: a meter starts its counters again with new keys, and an APDU of
            # the old keys does not decipher under the new ones.
            key_name = key_fingerprint(keys.block_cipher_key)
            last = last_received(title, key_name)
            if last is not None and deciphered.invocation_counter <= last:
                return PushRefused(
                    "replay",
                    title,
                    f"invocation counter {deciphered.invocation_counter} not above {last}",
                )
            plain_apdu = deciphered.plain_apdu
            counter: int | None = deciphered.invocation_counter
            fingerprint: str | None = key_name
        else:
            resolved = resolve(None, wport)
            counter = None
            fingerprint = None
            claims: list[tuple[str, str]] = []
            found: dict[str, Meter] = {}
            undecoded: Exception | None = None
            try:
                message0 = A.decode_apdu(raw)
                if isinstance(message0, A.DataNotification):
                    claims = plain_claims(message0, address, layouts)
            except (FrameError, ValueError) as e:
                undecoded = e
                claims = [("address", address)] if address else []
            if sender is not None:
                for way, value in claims:
                    candidate = sender(way, value)
                    if candidate is not None:
                        found.setdefault(way, candidate)
            named = [resolved, claimed_sender(raw, identify, layouts), *found.values()]
            for claimed in named:
                if claimed is not None and keyed(claimed):
                    detail = f"unciphered push (tag {raw[0] if raw else 0:#04x})"
                    return PushRefused(
                        "plain", None, f"meter {claimed.id}: {detail}",
                        downgrade=(claimed.id, detail),
                    )
            meter = resolved
            if meter is None:
                meter = next((found[w] for w in plain if w in found), None)
            if meter is None:
                said = ", ".join(f"{w} {v}" for w, v in claims) or "nothing"
                return PushRefused(
                    "unknown", None, f"unciphered push from an unknown sender ({said})")
            if undecoded is not None:
                raise undecoded
        message = A.decode_apdu(plain_apdu)
        if not isinstance(message, A.DataNotification):
            return PushRefused(
                "frame", title, f"not a Data-Notification: {type(message).__name__}"
            )
        deviation = meter.metadata.get("dlms_deviation")
        content = decode_push(
            meter.id, message, default_deviation=int(deviation) if deviation else None,
            layouts=layouts_for(meter, layouts),
        )
    except CipheringError as e:
        return PushRefused("cipher", title, str(e))
    except (FrameError, ConfigError, ValueError) as e:
        return PushRefused("frame", title, str(e))
    readings = list(content.readings)
    if source:
        readings = [attrs.evolve(r, source=source) for r in readings]
    records: tuple[Record, ...] = (*readings, *content.events)
    if counter is None or title is None or fingerprint is None:
        return PushAccepted(meter, records)
    return PushCounterCheck(meter, title, counter, fingerprint, records)
