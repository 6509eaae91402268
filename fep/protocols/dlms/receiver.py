"""The DLMS push receiver: pushed APDUs deciphered with the sender's keys, replayed
invocation counters refused, notifications turned into records (``DlmsPushDecoder``), on a
push connection of a GPRS session (``DlmsPushHandler``) or on the push listener
(``DlmsPushFactory``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from fep.errors import ConfigError, FrameError
from fep.interfaces import IPushHandler, IRecordSink, peer_identified
from fep.model import Meter, Record
from fep.protocols.dlms import apdu as A
from fep.protocols.dlms import wrapper
from fep.protocols.dlms.context import SecurityEvents
from fep.protocols.dlms.identity import key_fingerprint
from fep.protocols.dlms.settings import settings_for
from fep.ratelog import RateLimitedLog

log = Logger(namespace="fep.protocols.dlms")


@attrs.define
class PushStats:
    accepted: int = 0
    rejected_unknown: int = 0
    rejected_cipher: int = 0
    rejected_replay: int = 0
    rejected_frame: int = 0
    # Unciphered pushes from meters with keys (each a security event).
    rejected_plain: int = 0


class DlmsPushDecoder:
    """Turns pushed APDUs into records: finds the sender (by the system title of a
    general-ciphered APDU, through ``resolve``), deciphers with its keys, refuses replayed
    invocation counters, decodes the notification and submits the readings. Refusals are
    counted in ``stats`` and logged with the system title; nothing is raised.

    An unciphered push is refused from a meter with keys, whether ``resolve`` names it (a
    GPRS session's meter) or ``identify`` finds it by the logical device name the push
    carries (the push listener): counted as ``rejected_plain`` and a security event
    (``security``, through the sink)."""

    def __init__(
        self,
        sink: IRecordSink,
        resolve: Callable[[bytes | None, int], Meter | None],
        counters: Any = None,
        stats: PushStats | None = None,
        *,
        identify: Callable[[bytes], Meter | None] | None = None,
        security: SecurityEvents | None = None,
        where: str = "push",
    ) -> None:
        self.sink = sink
        self.resolve = resolve
        if counters is None:
            from fep.protocols.dlms.security import InvocationCounterGuard

            counters = InvocationCounterGuard()
        self.counters = counters
        self.stats = stats if stats is not None else PushStats()
        self.events = RateLimitedLog(log)  # strangers' junk: rate-limited logs
        self.identify = identify
        self.security = security if security is not None else SecurityEvents(sink)
        self.where = where

    def reject(self, why: str, system_title: bytes | None, detail: str) -> None:
        counter = {
            "unknown": "rejected_unknown",
            "cipher": "rejected_cipher",
            "replay": "rejected_replay",
            "plain": "rejected_plain",
        }.get(why, "rejected_frame")
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        self.events.warn(
            "DLMS push rejected ({why}) from system title {title}: {detail}",
            why=why,
            title=system_title.hex() if system_title else "?",
            detail=detail,
            kind=f"dlms push {why}",
        )

    def _claimed_sender(self, raw: bytes) -> Meter | None:
        """The meter an unciphered push names by its logical device name (0.0.42.0.0.255,
        often the manufacturer's three letters and the serial number)."""
        from fep.protocols.dlms.push import logical_device_name

        if self.identify is None:
            return None
        try:
            message = A.decode_apdu(raw)
            if not isinstance(message, A.DataNotification):
                return None
            name = logical_device_name(message)
        except (FrameError, ValueError):
            return None
        return self.identify(name) if name else None

    @staticmethod
    def _keyed(meter: Meter) -> bool:
        try:
            client, _ = settings_for(meter)
        except ConfigError:
            # Keys that do not parse are still keys: nothing unciphered is taken.
            return any(meter.metadata.get(k) for k in ("dlms_ek", "dlms_ak"))
        return client.keys is not None

    def notification(self, raw: bytes, wport: int = 0, source: str = "") -> bool:
        """Decode and submit one pushed APDU; False when it was refused (a ciphered push is
        submitted once its counter is accepted, which may be later)."""
        from fep.protocols.dlms import security
        from fep.protocols.dlms.errors import CipheringError
        from fep.protocols.dlms.push import decode_push

        title: bytes | None = None
        try:
            plain = raw
            if raw and raw[0] in (0xDB, 0xDC):
                title = security.general_system_title(raw)
                meter = self.resolve(title, wport)
                if meter is None:
                    self.reject("unknown", title, "no meter with this system title")
                    return False
                client, _ = settings_for(meter)
                if client.keys is None:
                    self.reject("cipher", title, f"meter {meter.id} has no keys")
                    return False
                deciphered = security.decipher_apdu(raw, keys=client.keys)
                # Per key: a meter starts its counters again with new keys, and an APDU of
                # the old keys does not decipher under the new ones.
                fingerprint = key_fingerprint(client.keys.block_cipher_key)
                last = self.counters.last_received(title, fingerprint)
                if last is not None and deciphered.invocation_counter <= last:
                    self.reject(
                        "replay",
                        title,
                        f"invocation counter {deciphered.invocation_counter} not above {last}",
                    )
                    return False
                plain = deciphered.plain_apdu
                counter = deciphered.invocation_counter
            else:
                meter = self.resolve(None, wport)
                counter = None
                fingerprint = None
                claimed = meter if meter is not None else self._claimed_sender(raw)
                if claimed is not None and self._keyed(claimed):
                    detail = f"unciphered push (tag {raw[0] if raw else 0:#04x})"
                    self.reject("plain", None, f"meter {claimed.id}: {detail}")
                    self.security.downgrade(claimed.id, self.where, detail)
                    return False
                if meter is None:
                    self.reject("unknown", None, "unciphered push from an unknown sender")
                    return False
            message = A.decode_apdu(plain)
            if not isinstance(message, A.DataNotification):
                self.reject("frame", title, f"not a Data-Notification: {type(message).__name__}")
                return False
            deviation = meter.metadata.get("dlms_deviation")
            content = decode_push(
                meter.id, message, default_deviation=int(deviation) if deviation else None
            )
        except CipheringError as e:
            self.reject("cipher", title, str(e))
            return False
        except (FrameError, ConfigError, ValueError) as e:
            self.reject("frame", title, str(e))
            return False
        readings = list(content.readings)
        if source:
            readings = [attrs.evolve(r, source=source) for r in readings]
        records: list[Record] = [*readings, *content.events]
        if counter is None or title is None:
            self._submit(meter, records)
            return True
        # The counter is taken (in the store when it is shared) before anything is stored.
        accepting = self.counters.accept_received(title, counter, fingerprint)
        if not isinstance(accepting, Deferred):
            return self._counted(accepting, meter, title, counter, records)
        accepting.addCallback(self._counted, meter, title, counter, records)
        accepting.addErrback(
            lambda f: log.failure(
                "push from {meter}: invocation counter not recorded; push dropped",
                f,
                meter=meter.id,
            )
        )
        return True

    def _counted(
        self,
        result: tuple[bool, int | None],
        meter: Meter,
        title: bytes,
        counter: int,
        records: list[Record],
    ) -> bool:
        accepted, last = result
        if not accepted:
            self.reject("replay", title, f"invocation counter {counter} not above {last}")
            return False
        self._submit(meter, records)
        return True

    def _submit(self, meter: Meter, records: list[Record]) -> None:
        self.stats.accepted += 1
        d = self.sink.submit(records)
        d.addErrback(lambda f: log.failure("push from {meter} not spooled", f, meter=meter.id))


@implementer(IPushHandler)
class DlmsPushHandler:
    """Pushes on one connection: wrapper frames, each APDU through a DlmsPushDecoder."""

    def __init__(self, decoder: DlmsPushDecoder, source: str = "") -> None:
        self.decoder = decoder
        self.source = source
        self.wrapper = wrapper.WrapperDecoder()
        self.frames = 0

    def data_received(self, data: bytes) -> None:
        while True:
            try:
                frames = self.wrapper.receive(data)
            except FrameError as e:
                self.decoder.reject("frame", None, str(e))
                data = b""
                continue
            for frame in frames:
                self.frames += 1
                self.decoder.notification(frame.apdu, frame.source_wport, self.source)
            return

    def pending(self) -> int:
        return self.wrapper.buffered

    def take_buffered(self) -> bytes:
        return self.wrapper.drain()


class PushReceiverProtocol(Protocol):
    """One inbound connection of a meter that pushes Data-Notifications over the wrapper."""

    def __init__(self, factory: DlmsPushFactory) -> None:
        self.factory = factory
        self.handler = DlmsPushHandler(factory.decoder)

    def dataReceived(self, data: bytes) -> None:
        accepted = self.factory.stats.accepted
        self.handler.data_received(data)
        if self.factory.stats.accepted > accepted:  # a valid push: the sender is known
            peer_identified(self.transport)


class DlmsPushFactory(Factory):
    """Accepts pushes, deciphers them with the sender's keys, routes the readings."""

    def __init__(
        self,
        sink: IRecordSink,
        resolve: Callable[[bytes | None, int], Meter | None],
        counters: Any = None,
        *,
        identify: Callable[[bytes], Meter | None] | None = None,
        security: SecurityEvents | None = None,
    ) -> None:
        self.decoder = DlmsPushDecoder(
            sink, resolve, counters, identify=identify, security=security, where="push listener"
        )
        self.sink = sink
        self.resolve = resolve
        self.counters = self.decoder.counters
        self.stats = self.decoder.stats

    def buildProtocol(self, addr: Any) -> Protocol:
        return PushReceiverProtocol(self)

    def reject(self, why: str, system_title: bytes | None, detail: str) -> None:
        self.decoder.reject(why, system_title, detail)

    def notification(self, raw: bytes, protocol: Any = None) -> None:
        self.decoder.notification(raw)
