"""A meter key rotation (the ``key-transfer`` command, always approved first): new keys made
here, kept in the secret store before the meter is told (as ``NAME.new``, so a crash after
the meter took them loses nothing), sent by the protocol (DLMS security setup key_transfer,
wrapped with the meter's KEK), then kept as the meter's keys. A later attempt that finds
``NAME.new`` sends those keys again, under themselves when the keys in use no longer open
the meter (an earlier attempt reached it and lost only its answer).

Neither the command's parameters, its progress nor its outcome ever hold a key: the new keys
travel in memory from here to the protocol session only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from fep.errors import ConfigError, FepError
from fep.interfaces import ICommands, ISecretStore
from fep.model import Meter
from fep.vault import with_secrets

log = Logger()

DEFAULT_KEYS = ("dlms_ek", "dlms_ak")
ROTATABLE = ("dlms_ek", "dlms_ak", "dlms_kek")
PENDING = ".new"
KEY_BYTES = 16


class NewKeys(dict[str, str]):
    """New keys by meter secret name, in hex: a dict whose repr shows only the names (it
    travels in a command's parameters, which errors and logs may show)."""

    def __repr__(self) -> str:
        return "NewKeys(" + ", ".join(f"{k}=***" for k in self) + ")"

    __str__ = __repr__


def key_names(params: Mapping[str, Any]) -> list[str]:
    """The meter secrets a key-transfer command rotates (``keys=ek,ak``: the default)."""
    text = str(params.get("keys") or ",".join(DEFAULT_KEYS))
    names = []
    for word in text.replace(";", ",").split(","):
        word = word.strip().lower()
        if not word:
            continue
        name = word if word.startswith("dlms_") else f"dlms_{word}"
        if name not in ROTATABLE:
            raise ConfigError(f"key-transfer rotates {', '.join(ROTATABLE)}, not {word!r}",
                              key="keys")
        names.append(name)
    return list(dict.fromkeys(names))


async def transfer_keys(
    secrets: ISecretStore | None,
    commands: ICommands,
    reactor: IReactorTime,
    endpoint: Any,
    meter: Meter,
    params: Mapping[str, Any],
    timeout: float,
    progress: Callable[[Mapping[str, Any]], None],
) -> Mapping[str, Any]:
    """Rotate the named keys of ``meter``; fires with the new keys' fingerprints."""
    if secrets is None:
        raise ConfigError(f"meter {meter.id}: key-transfer needs the secret store "
                          "([secrets] master_key)", section="secrets", key="master_key")
    names = key_names(params)
    held = (await secrets.values(meter.id)).get(meter.id, {})
    new = NewKeys()
    reused = False
    for name in names:
        pending = held.get(name + PENDING)
        reused = reused or pending is not None
        if pending is None:
            # Kept before the meter hears of it: a meter that took a key we then lost
            # would be locked out.
            pending = os.urandom(KEY_BYTES).hex().upper()
            await secrets.put(meter.id, name + PENDING, pending)
        new[name] = pending
    log.info("meter {meter}: sending new keys {keys}", meter=meter.id, keys=",".join(names))
    try:
        await commands.run_command(reactor, endpoint, meter, "key-transfer",
                                   {**params, "new_keys": new}, timeout, progress)
    except FepError as e:
        if not reused:
            raise
        # An earlier attempt may have reached the meter and lost only its answer: then the
        # meter speaks with the new keys. Send them again under themselves.
        log.info("meter {meter}: key transfer with the keys in use failed ({error}); trying "
                 "the new keys an earlier attempt sent", meter=meter.id, error=str(e))
        await commands.run_command(reactor, endpoint, with_secrets(meter, new), "key-transfer",
                                   {**params, "new_keys": new}, timeout, progress)
    fingerprints: dict[str, str] = {}
    for name, value in new.items():
        info = await secrets.put(meter.id, name, value)
        fingerprints[name] = info.fingerprint
        await secrets.delete(meter.id, name + PENDING)
    log.info("meter {meter}: keys {keys} rotated ({fingerprints})", meter=meter.id,
             keys=",".join(names), fingerprints=fingerprints)
    return fingerprints
