"""The meter directory: the daemon's in-memory view of the meter list, for quick lookups
(by id, serial number or device address) on the reactor thread.

With a secret store, each meter's secrets (keys, passwords: fep.vault.METER_SECRETS) are
put into its metadata here, in memory only, when the list is refreshed, and again for a
job when it starts (``resolve``): the meter list in the store holds none of them."""

from __future__ import annotations

from collections.abc import Iterable

import attrs
from twisted.internet.defer import Deferred
from zope.interface import implementer

from fep.channels.routes import device_address, parse_route
from fep.errors import RouteError
from fep.interfaces import IMeterDirectory, ISecretStore, IStore
from fep.model import Meter
from fep.vault import is_meter_secret, with_secrets


@implementer(IMeterDirectory)
class MeterDirectory:
    """Who the known meters are; refreshed from the store."""

    def __init__(self, store: IStore, secrets: ISecretStore | None = None) -> None:
        self._store = store
        self.secrets = secrets
        self._by_id: dict[str, Meter] = {}
        self._by_serial: dict[str, Meter] = {}
        self._by_system_title: dict[bytes, Meter] = {}
        # "imei=356938035643809" -> the meters whose route is gprs:imei=356938035643809...
        self._by_modem: dict[str, list[Meter]] = {}

    def replace(self, meters: Iterable[Meter]) -> None:
        self._by_id = {m.id: m for m in meters}
        self._by_serial = {}
        self._by_system_title = {}
        self._by_modem = {}
        for m in self._by_id.values():
            self._index(m)

    def _index(self, m: Meter) -> None:
        if m.serial:
            self._by_serial[m.serial] = m
        title = m.metadata.get("dlms_server_system_title", "")
        try:
            if title:
                self._by_system_title[bytes.fromhex(title)] = m
        except ValueError:
            pass  # refused when the meter list was imported; never a crash here
        names = [f"{k[5:]}={v}" for k, v in m.metadata.items()
                 if k.startswith("gprs_") and v and not is_meter_secret(k)]
        if m.route.startswith("gprs:"):
            try:
                names += [f"{k}={v}" for k, v in parse_route(m.route).params().items()]
            except RouteError:
                pass
        for name in dict.fromkeys(names):
            self._by_modem.setdefault(name, []).append(m)

    def add(self, meter: Meter) -> None:
        """Take one new or changed meter (a meter registered by the channel that saw it)
        without reloading the list."""
        if meter.id in self._by_id:
            self.replace([*(m for m in self._by_id.values() if m.id != meter.id), meter])
        else:
            self._by_id[meter.id] = meter
            self._index(meter)

    def by_modem(self, *names: str) -> list[Meter]:
        """The meters behind the modem that calls itself any of ``names`` (``imei=...``,
        ``serial=...``: the ``gprs:KEY=VALUE`` of their routes, or their ``gprs_KEY``
        metadata), in list order, each once."""
        found: dict[str, Meter] = {}
        for name in names:
            for m in self._by_modem.get(name, ()):
                found.setdefault(m.id, m)
        return list(found.values())

    async def refresh(self) -> list[Meter]:
        meters: list[Meter] = await self._store.meters()
        if self.secrets is not None:
            values = await self.secrets.values()
            meters = [with_secrets(m, values.get(m.id)) for m in meters]
        self.replace(meters)
        return meters

    async def resolve(self, meter: Meter) -> Meter:
        """The meter with its secrets as the secret store holds them now (a job's meter at
        the start of its session); the directory keeps the fresh copy."""
        if self.secrets is None:
            return meter
        values = await self.secrets.values(meter.id)
        fresh = with_secrets(meter, values.get(meter.id))
        if meter.id in self._by_id:
            self.add(fresh)
        return fresh

    def refresh_d(self) -> Deferred[list[Meter]]:
        return Deferred.fromCoroutine(self.refresh())

    def __len__(self) -> int:
        return len(self._by_id)

    def all(self) -> list[Meter]:
        return list(self._by_id.values())

    def get(self, meter_id: str) -> Meter | None:
        return self._by_id.get(meter_id)

    def identify(self, *names: str | None) -> Meter | None:
        """The meter a device names itself as: by meter id, then serial number."""
        for name in names:
            if not name:
                continue
            meter = self._by_id.get(name) or self._by_serial.get(name)
            if meter is not None:
                return meter
        return None

    def by_metadata(self, key: str, value: str) -> Meter | None:
        """The one meter whose ``key`` metadata is ``value`` (None when none or several:
        a value two meters share names neither)."""
        found = [m for m in self._by_id.values() if m.metadata.get(key) == value]
        return found[0] if len(found) == 1 else None

    def by_system_title(self, system_title: bytes) -> Meter | None:
        """The DLMS meter whose record gives this system title (``dlms_server_system_title``)."""
        return self._by_system_title.get(system_title)


def addressed(meter: Meter) -> Meter:
    """The meter with its device address taken from its route (``...@ADDRESS``) when the
    meter list gives none."""
    if meter.address is None:
        address = device_address(meter.route)
        if address is not None:
            return attrs.evolve(meter, address=address)
    return meter
