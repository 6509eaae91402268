"""The Twisted side of DLMS/COSEM: a client session over any byte pipe (wrapper over TCP,
HDLC over TCP or serial), ``DlmsProtocol`` for ``fep read`` and scheduled reads, and the
push receiver that turns ciphered Data-Notifications into records.

The protocol state lives in ``client.py`` (association, services), ``hdlc.py`` and
``wrapper.py`` (links); this module moves bytes, runs timers and turns values into records.
"""

from __future__ import annotations

import enum
import functools
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.errors import ConfigError, FrameError, NotSupported, ProtocolError, SessionTimeout
from fep.interfaces import (
    IClock,
    ICommands,
    IEventReader,
    IMeterProtocol,
    IProfileReader,
    IPushChannel,
    IPushHandler,
    IPushProtocol,
    IRecordSink,
    peer_identified,
)
from fep.model import Meter, MeterEvent, ObisCode, Reading, Record
from fep.protocols.dlms import apdu as A
from fep.protocols.dlms import axdr, hdlc, wrapper
from fep.protocols.dlms.axdr import CosemDateTime, Data
from fep.protocols.dlms.client import (
    ActionDone,
    Associated,
    Authentication,
    ClientSettings,
    DlmsClient,
    Event,
    GetDone,
    Pushed,
    Released,
    Send,
    SetDone,
)
from fep.protocols.dlms.cosem import (
    CosemClass,
    KeyId,
    ScalerUnit,
    clock_quality,
    decode_capture_objects,
    decode_object_list,
    event_log,
    key_transfer_data,
    profile_blocks,
    register_reading,
)
from fep.protocols.dlms.errors import PROTOCOL, DataAccessError, DlmsError, DowngradeError
from fep.protocols.dlms.identity import (
    DEFAULT_SYSTEM_TITLE,
    DOWNGRADE_CODE,
    counter_key,
    downgrade_event,
    key_fingerprint,
)
from fep.protocols.dlms.security import SecurityKeys
from fep.protocols.session import connect_within
from fep.ratelog import RateLimitedLog

log = Logger(namespace="fep.protocols.dlms")

# Public client SAP (16) reads without authentication; management (1) with LLS/HLS.
PUBLIC_CLIENT = 16
WRAPPER_PORT_SERVER = 1


_T = TypeVar("_T")

CLOCK = ObisCode(0, 0, 1, 0, 0, 255)
DISCONNECT_CONTROL = ObisCode(0, 0, 96, 3, 10, 255)
IMAGE_TRANSFER = ObisCode(0, 0, 44, 0, 0, 255)
SECURITY_SETUP = ObisCode(0, 0, 43, 0, 0, 255)
# The meter secrets a key transfer may change, by the key_id the meter knows them as.
TRANSFERABLE_KEYS = {
    "dlms_ek": KeyId.GLOBAL_UNICAST_ENCRYPTION,
    "dlms_ak": KeyId.AUTHENTICATION,
    "dlms_kek": KeyId.MASTER,
}


_PUSH_FIRST_BYTES = frozenset({0x0F, 0xC2, 0xDB, 0xDC})


class LinkKind(enum.Enum):
    WRAPPER = "wrapper"
    HDLC = "hdlc"


@attrs.frozen
class LinkSettings:
    kind: LinkKind = LinkKind.WRAPPER
    client_address: int = PUBLIC_CLIENT
    server_logical: int = 1
    server_physical: int | None = None
    # HDLC over a slow line: how many times a silent step is repeated before giving up.
    retries: int = 2


class _Link:
    """What the session needs of a link: bytes to open it, to carry an APDU, to close it,
    and received bytes turned into APDUs and bytes to send back."""

    def open(self) -> list[bytes]:
        return []

    def is_open(self) -> bool:
        return True

    def send(self, apdu: bytes) -> list[bytes]:
        raise NotImplementedError

    def receive(self, data: bytes) -> tuple[list[bytes], list[bytes]]:
        """(APDUs received, bytes to send now)."""
        raise NotImplementedError

    def close(self) -> list[bytes]:
        return []

    def timeout(self) -> list[bytes]:
        return []


class _WrapperLink(_Link):
    def __init__(self, settings: LinkSettings) -> None:
        self.client_wport = settings.client_address
        self.server_wport = settings.server_logical
        self.decoder = wrapper.WrapperDecoder()

    def send(self, apdu: bytes) -> list[bytes]:
        frame = wrapper.WrapperFrame(self.client_wport, self.server_wport, apdu)
        return [wrapper.encode_wrapper(frame)]

    def receive(self, data: bytes) -> tuple[list[bytes], list[bytes]]:
        """The APDUs ``data`` completes. Garbage is dropped and decoding goes on after it in
        this same call (each step drops bytes, so the work is bounded by ``data``); the first
        FrameError is raised only when no frame came, so an answer after junk is not left
        waiting in the buffer for bytes that may never come."""
        frames: list[wrapper.WrapperFrame] = []
        first_error: FrameError | None = None
        while True:
            try:
                got = self.decoder.receive(data)
            except FrameError as error:
                first_error = first_error or error
                data = b""
                continue
            data = b""
            if not got:
                break
            frames.extend(got)
        if first_error is not None and not frames:
            raise first_error
        # Answers come to our wPort; a meter's pushes go to its push destination, whatever
        # that is: they are taken too (the client tells them from answers).
        return [
            f.apdu
            for f in frames
            if f.destination_wport == self.client_wport
            or (f.apdu and f.apdu[0] in _PUSH_FIRST_BYTES)
        ], []


class _HdlcLink(_Link):
    def __init__(self, settings: LinkSettings) -> None:
        self.link = hdlc.HdlcClientLink(
            hdlc.HdlcAddress(settings.client_address),
            hdlc.HdlcAddress(settings.server_logical, settings.server_physical),
        )
        self.connected = False

    def open(self) -> list[bytes]:
        return [self.link.connect()]

    def is_open(self) -> bool:
        return self.connected

    def send(self, apdu: bytes) -> list[bytes]:
        return self.link.send(apdu)

    def receive(self, data: bytes) -> tuple[list[bytes], list[bytes]]:
        apdus: list[bytes] = []
        out: list[bytes] = []
        for event in self.link.receive_data(data):
            if isinstance(event, hdlc.ApduReceived):
                apdus.append(event.apdu)
            elif isinstance(event, hdlc.SendFrame):
                out.append(event.data)
            elif isinstance(event, hdlc.LinkConnected):
                self.connected = True
            elif isinstance(event, hdlc.LinkRefused):
                raise ProtocolError(f"HDLC link refused: {event.reason}", protocol=PROTOCOL)
            elif isinstance(event, hdlc.LinkDisconnected):
                self.connected = False
        return apdus, out

    def close(self) -> list[bytes]:
        return [self.link.disconnect()]

    def timeout(self) -> list[bytes]:
        return self.link.timeout()


class DlmsConnection(Protocol):
    """One connection to one meter: opens the link, then runs one exchange at a time.

    ``request(apdu)`` sends an APDU and fires with the client's final event for it
    (following ``Send`` continuations itself); failures are DlmsError/FrameError/
    SessionTimeout naming the meter.
    """

    def __init__(
        self,
        reactor: Any,
        client: DlmsClient,
        link: _Link,
        *,
        timeout: float,
        retries: int = 2,
        on_push: Callable[[Pushed], None] | None = None,
        on_downgrade: Callable[[str], None] | None = None,
        accept_counter: Callable[[bytes, int], Any] | None = None,
    ) -> None:
        self.reactor = reactor
        self.client = client
        self.link = link
        self.timeout = timeout
        self.retries = retries
        self.on_push = on_push
        # Told of every unciphered APDU refused from a meter with keys (a security event).
        self.on_downgrade = on_downgrade
        # The daemon's keeper of received invocation counters (accept_received), for the
        # ciphered pushes that arrive during the session.
        self.accept_counter = accept_counter
        self.ready: Deferred[None] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self._waiting: Deferred[Event] | None = None
        self._timer: IDelayedCall | None = None
        self._what = "link"
        self._tries = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.frame_errors = 0
        # Minutes local to UTC for push times the meter sends without a deviation.
        self.default_deviation: int | None = None

    # -- plumbing -------------------------------------------------------------------------

    def _meter_error(self, message: str, cls: type[ProtocolError] = ProtocolError) -> ProtocolError:
        s = self.client.settings
        return cls(message, meter=s.meter, route=s.route, protocol=PROTOCOL)

    def _write(self, chunks: Sequence[bytes]) -> None:
        for chunk in chunks:
            self.bytes_out += len(chunk)
            self.transport.write(chunk)  # type: ignore[union-attr]

    def _arm(self, what: str) -> None:
        self._disarm()
        self._what = what
        self._timer = self.reactor.callLater(self.timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        again = self.link.timeout()
        if again and self._tries < self.retries:
            self._tries += 1
            log.debug(
                "{meter}: no answer to {what}, repeating ({n})",
                meter=self.client.settings.meter,
                what=self._what,
                n=self._tries,
            )
            self._write(again)
            self._timer = self.reactor.callLater(self.timeout, self._timed_out)
            return
        self._fail(
            self._meter_error(
                f"no answer to {self._what} within {self.timeout:.1f} s", SessionTimeout
            )
        )

    def _fail(self, error: Exception) -> None:
        self._disarm()
        for d in (self.ready, self._waiting):
            if d is not None and not d.called:
                if d is self._waiting:
                    self._waiting = None
                d.errback(Failure(error))
                return
        log.warn("{meter}: {error}", meter=self.client.settings.meter, error=str(error))

    # -- Protocol -------------------------------------------------------------------------

    def connectionMade(self) -> None:
        opening = self.link.open()
        if opening:
            self._write(opening)
            self._arm("SNRM")
        else:
            self.ready.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)
        try:
            apdus, out = self.link.receive(data)
        except FrameError as e:
            self.frame_errors += 1
            log.info(
                "{meter}: link frame error: {error}", meter=self.client.settings.meter, error=str(e)
            )
            return
        except ProtocolError as e:
            self._fail(self._meter_error(str(e)))
            return
        self._write(out)
        if not self.ready.called and self.link.is_open():
            self._disarm()
            self.ready.callback(None)
        for raw in apdus:
            self._on_apdu(raw)

    def _on_apdu(self, raw: bytes) -> None:
        try:
            event = self.client.receive(raw)
        except (DlmsError, FrameError) as e:
            if isinstance(e, FrameError):
                self.frame_errors += 1
            if isinstance(e, DowngradeError) and self.on_downgrade is not None:
                self.on_downgrade(str(e))
            self._fail(e)
            return
        if isinstance(event, Pushed):
            if event.downgrade:
                if self.on_downgrade is not None:
                    self.on_downgrade(event.problem or "unciphered notification")
                else:
                    log.error("{meter}: {why} refused", meter=self.client.settings.meter,
                              why=event.problem, security_event=DOWNGRADE_CODE)
                return
            if self.on_push is not None:
                self.on_push(event)
            else:
                self._hand_over_push(event)
            return
        if isinstance(event, Send):
            self._tries = 0
            self._write(self.link.send(event.apdu))
            self._arm(self._what)
            return
        self._disarm()
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(event)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self._disarm()
        lost = self._meter_error(f"connection lost ({reason.getErrorMessage()})")
        if not self.ready.called:
            self.ready.errback(Failure(lost))
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.errback(Failure(lost))
        if not self.closed.called:
            self.closed.callback(None)

    def _hand_over_push(self, event: Pushed) -> None:
        """A push that arrived during this session: its records go to the channel when the
        channel carries pushes (a GPRS modem session), else it is logged and dropped."""
        meter = self.client.settings.meter or "?"
        channel: Any = IPushChannel(self.transport, None)
        if event.notification is None or not isinstance(event.notification, A.DataNotification):
            log.warn(
                "{meter}: push during the session not taken: {why}",
                meter=meter,
                route=self.client.settings.route,
                why=event.problem or type(event.notification).__name__,
            )
            return
        if channel is None:
            log.info(
                "{meter}: unsolicited Data-Notification during the session; this channel "
                "does not carry pushes, dropped",
                meter=meter,
                route=self.client.settings.route,
            )
            return
        from fep.protocols.dlms.push import decode_push

        try:
            content = decode_push(
                meter, event.notification, default_deviation=self.default_deviation
            )
        except FrameError as e:
            log.warn("{meter}: push during the session not decoded: {error}",
                     meter=meter, error=str(e))
            return
        records = [*content.readings, *content.events]
        title, counter = event.system_title, event.invocation_counter
        if self.accept_counter is None or title is None or counter is None:
            d = channel.pushed(records)
        else:
            # A ciphered push is a replay when the daemon has taken its counter before, on
            # any path or node, not only within this session.
            def taken(result: tuple[bool, int | None]) -> Deferred[None] | None:
                if result[0]:
                    pushed: Deferred[None] = channel.pushed(records)
                    return pushed
                log.warn("{meter}: push during the session refused: invocation counter "
                         "{counter} not above {last}", meter=meter, counter=counter,
                         last=result[1])
                return None

            d = maybeDeferred(self.accept_counter, title, counter).addCallback(taken)
        d.addErrback(lambda f: log.failure("push from {meter} not spooled", f, meter=meter))

    # -- API ------------------------------------------------------------------------------

    def request(self, apdu: bytes, what: str) -> Deferred[Event]:
        if self._waiting is not None:
            raise self._meter_error(f"{what} while another request is outstanding")
        self._waiting = Deferred()
        self._tries = 0
        self._write(self.link.send(apdu))
        self._arm(what)
        return self._waiting

    def close_link(self) -> Deferred[None]:
        """Disconnect the link (HDLC DISC) and the transport."""
        closing = self.link.close()
        if closing and self.transport is not None:
            self._write(closing)
        if self.transport is not None:
            self.transport.loseConnection()
        return self.closed


class DlmsSession:
    """Associate, read, release: the operations a head end runs against one meter."""

    def __init__(self, connection: DlmsConnection, default_deviation: int | None = None) -> None:
        self.connection = connection
        self.client = connection.client
        self.meter = self.client.settings.meter or "?"
        # Minutes local to UTC for times the meter sends without a deviation.
        self.default_deviation = default_deviation

    async def associate(self) -> Associated:
        await self.connection.ready
        event = await self.connection.request(self.client.associate(), "AARQ")
        assert isinstance(event, Associated)
        return event

    async def release(self) -> None:
        try:
            event = await self.connection.request(self.client.release(), "RLRQ")
            assert isinstance(event, Released)
        finally:
            await self.connection.close_link()

    def _error(self, result: int, descriptor: object) -> DataAccessError:
        s = self.client.settings
        return DataAccessError(
            result,
            A.result_name(result),
            meter=s.meter,
            route=s.route,
            cosem_object=str(descriptor),
        )

    async def get(
        self, descriptor: A.AttributeDescriptor, access: A.AccessSelection | None = None
    ) -> Data:
        event = await self.connection.request(
            self.client.get(descriptor, access), f"GET {descriptor}"
        )
        assert isinstance(event, GetDone)
        result = event.results[0]
        if result.data is None:
            raise self._error(result.error if result.error is not None else 250, descriptor)
        return result.data

    async def get_many(
        self, descriptors: Sequence[A.AttributeDescriptor]
    ) -> list[Data | DataAccessError]:
        """Several attributes: one GET-with-list when the meter negotiated it."""
        from fep.protocols.dlms.acse import Conformance

        if not descriptors:
            return []
        if len(descriptors) == 1 or not (self.client.conformance & Conformance.MULTIPLE_REFERENCES):
            out: list[Data | DataAccessError] = []
            for d in descriptors:
                try:
                    out.append(await self.get(d))
                except DataAccessError as e:
                    out.append(e)
            return out
        event = await self.connection.request(
            self.client.get_with_list([(d, None) for d in descriptors]),
            f"GET with list of {len(descriptors)}",
        )
        assert isinstance(event, GetDone)
        return [
            r.data if r.data is not None else self._error(r.error or 250, d)
            for r, d in zip(event.results, descriptors, strict=False)
        ]

    async def set(self, descriptor: A.AttributeDescriptor, value: Data) -> None:
        event = await self.connection.request(
            self.client.set(descriptor, value), f"SET {descriptor}"
        )
        assert isinstance(event, SetDone)
        if event.results[0] != 0:
            raise self._error(event.results[0], descriptor)

    async def action(
        self, method: A.MethodDescriptor, parameters: Data | None = None
    ) -> Data | None:
        event = await self.connection.request(
            self.client.action(method, parameters), f"ACTION {method}"
        )
        assert isinstance(event, ActionDone)
        if event.result != 0:
            raise self._error(event.result, method)
        return event.value

    # -- what a head end reads ----------------------------------------------------------------

    async def read_registers(self, objects: Sequence[A.AttributeDescriptor]) -> list[Reading]:
        """Values of registers (with their scaler_unit), data objects and the clock."""
        wanted: list[A.AttributeDescriptor] = []
        for d in objects:
            wanted.append(d)
            if (
                d.class_id in (CosemClass.REGISTER, CosemClass.EXTENDED_REGISTER)
                and d.attribute == 2
            ):
                wanted.append(A.AttributeDescriptor(d.class_id, d.instance, 3))
            elif d.class_id == CosemClass.DEMAND_REGISTER and d.attribute in (2, 3):
                wanted.append(A.AttributeDescriptor(d.class_id, d.instance, 4))
        values = await self.get_many(wanted)
        by = dict(zip(wanted, values, strict=False))
        readings = []
        for d in objects:
            value = by[d]
            if isinstance(value, DataAccessError):
                log.warn(
                    "{meter}: {object}: {result}",
                    meter=self.meter,
                    object=str(d),
                    result=value.result_name,
                )
                continue
            scaler_unit = None
            for k in (3, 4):
                su = by.get(A.AttributeDescriptor(d.class_id, d.instance, k))
                if isinstance(su, Data) and k == (4 if d.class_id == 5 else 3):
                    scaler_unit = ScalerUnit.from_data(su, f"{d.instance} scaler_unit")
            if d.class_id == CosemClass.CLOCK and d.attribute == 2:
                stamp = axdr.as_datetime(value, "clock time")
                when = stamp.to_datetime(self.default_deviation)
                readings.append(
                    Reading(
                        meter=self.meter,
                        obis=d.instance,
                        value=when.isoformat() if when else None,
                        meter_time=when,
                        quality=clock_quality(stamp),
                        source="dlms",
                        native_id=f"8/{d.instance}/2",
                    )
                )
                continue
            readings.append(
                register_reading(
                    self.meter,
                    d.instance,
                    value,
                    scaler_unit,
                    class_id=d.class_id,
                    attribute=d.attribute,
                )
            )
        return readings

    async def read_profile(
        self, profile: ObisCode, start: datetime | None, end: datetime | None
    ) -> list[Record]:
        """A profile generic's buffer (by range when ``start``/``end`` are given) as
        IntervalBlocks, or as MeterEvents when it is an event log (capture period 0)."""
        columns = decode_capture_objects(await self.get(A.AttributeDescriptor(7, profile, 3)))
        period_data = await self.get(A.AttributeDescriptor(7, profile, 4))
        period = axdr.as_int(period_data, "capture_period")
        access = None
        if start is not None or end is not None:
            lo = (
                CosemDateTime.from_datetime(start)
                if start
                else CosemDateTime.from_datetime(datetime(2000, 1, 1).astimezone())
            )
            hi = (
                CosemDateTime.from_datetime(end)
                if end
                else CosemDateTime.from_datetime(datetime(2099, 12, 31).astimezone())
            )
            access = A.range_selection(lo, hi)
        rows = await self.get(A.AttributeDescriptor(7, profile, 2), access)
        if period == 0:
            return list(
                event_log(
                    self.meter, rows, columns, profile, default_deviation=self.default_deviation
                )
            )
        registers = [c for c in columns if c.class_id in (3, 4, 5) and c.attribute in (2, 3)]
        units: dict[ObisCode, ScalerUnit] = {}
        if registers:
            descriptors = [
                A.AttributeDescriptor(c.class_id, c.logical_name, 4 if c.class_id == 5 else 3)
                for c in registers
            ]
            for c, su in zip(registers, await self.get_many(descriptors), strict=False):
                if isinstance(su, Data):
                    units[c.logical_name] = ScalerUnit.from_data(su)
        return list(
            profile_blocks(
                self.meter, rows, columns, period, units, default_deviation=self.default_deviation
            )
        )

    # -- commands -----------------------------------------------------------------------------

    async def set_clock(self, when: datetime, deviation: int | None = 0) -> None:
        """Set the meter's clock (class 8 attribute 2) to ``when``."""
        stamp = CosemDateTime.from_datetime(when, deviation=deviation)
        await self.set(
            A.AttributeDescriptor(8, ObisCode(0, 0, 1, 0, 0, 255), 2), axdr.date_time(stamp)
        )

    async def disconnect(self, instance: ObisCode = DISCONNECT_CONTROL) -> int:
        """Remote disconnect (class 70 method 1); fires with the control state after it."""
        return await self._disconnector(instance, 1)

    async def reconnect(self, instance: ObisCode = DISCONNECT_CONTROL) -> int:
        """Remote reconnect (class 70 method 2); fires with the control state after it."""
        return await self._disconnector(instance, 2)

    async def transfer_keys(
        self, keys: Sequence[tuple[KeyId, bytes]], kek: bytes,
        instance: ObisCode = SECURITY_SETUP,
    ) -> None:
        """Security setup (class 64) method 2, key_transfer: the new keys, each wrapped
        with the master key (KEK, RFC 3394). The meter uses them from its next
        association."""
        await self.action(
            A.MethodDescriptor(CosemClass.SECURITY_SETUP, instance, 2),
            key_transfer_data(keys, kek),
        )

    async def _disconnector(self, instance: ObisCode, method: int) -> int:
        await self.action(A.MethodDescriptor(70, instance, method), axdr.integer(0))
        return axdr.as_int(await self.get(A.AttributeDescriptor(70, instance, 3)))

    async def transfer_image(
        self,
        identifier: bytes,
        image: bytes,
        *,
        instance: ObisCode = IMAGE_TRANSFER,
        progress: Callable[[int, int], None] | None = None,
        resume: bool = True,
    ) -> int:
        """Image transfer (class 18): read the block size, initiate, send every block,
        verify, activate. ``progress(confirmed, total)`` is called after each block the meter
        confirmed. With ``resume``, a transfer of the same image (identifier and size) the
        meter already has under way continues from its first not transferred block
        (attribute 4) instead of starting over. Fires with the block it started from."""
        block_size = axdr.as_int(await self.get(A.AttributeDescriptor(18, instance, 2)))
        if block_size <= 0:
            raise DlmsError(
                "image_block_size is 0", meter=self.meter, cosem_object=f"18/{instance}/2"
            )
        blocks = [image[i : i + block_size] for i in range(0, len(image), block_size)]
        first = await self._image_resume_point(identifier, len(image), instance) if resume else 0
        if first is None:
            first = 0
            await self.action(
                A.MethodDescriptor(18, instance, 1),
                axdr.structure(
                    axdr.octet_string(identifier), axdr.double_long_unsigned(len(image))
                ),
            )
        else:
            log.info(
                "{meter}: image {identifier} already under way: resuming at block {first} "
                "of {total}",
                meter=self.meter,
                identifier=identifier.hex(),
                first=first,
                total=len(blocks),
            )
        for number in range(min(first, len(blocks)), len(blocks)):
            await self.action(
                A.MethodDescriptor(18, instance, 2),
                axdr.structure(
                    axdr.double_long_unsigned(number), axdr.octet_string(blocks[number])
                ),
            )
            if progress is not None:
                progress(number + 1, len(blocks))
        await self.action(A.MethodDescriptor(18, instance, 3), axdr.integer(0))
        await self.action(A.MethodDescriptor(18, instance, 4), axdr.integer(0))
        return first

    async def _image_resume_point(
        self, identifier: bytes, size: int, instance: ObisCode
    ) -> int | None:
        """The first block the meter still needs of this image, or None when no transfer of
        it is under way (status 1..4 with a matching image_to_activate_info)."""
        try:
            status = axdr.as_int(await self.get(A.AttributeDescriptor(18, instance, 6)))
            if status not in (1, 2, 3, 4):
                return None
            info = await self.get(A.AttributeDescriptor(18, instance, 7))
            matches = [
                entry
                for entry in (info.value if info.type == axdr.DataType.ARRAY else [])
                if entry.type == axdr.DataType.STRUCTURE
                and len(entry) >= 2
                and axdr.as_bytes(entry[1]) == identifier
                and axdr.as_int(entry[0]) == size
            ]
            if not matches:
                return None
            return axdr.as_int(await self.get(A.AttributeDescriptor(18, instance, 4)))
        except (DataAccessError, FrameError, TypeError, ValueError):
            return None

    async def object_list(self) -> list[Any]:
        return decode_object_list(
            await self.get(A.AttributeDescriptor(15, ObisCode(0, 0, 40, 0, 0, 255), 2))
        )


async def open_session(
    reactor: Any,
    endpoint: Any,
    settings: ClientSettings,
    link: LinkSettings,
    *,
    timeout: float,
    invocation_counter: int = 1,
    counter_limit: int = 0x100000000,
    on_push: Callable[[Pushed], None] | None = None,
    on_downgrade: Callable[[str], None] | None = None,
    accept_counter: Callable[[bytes, int], Any] | None = None,
) -> DlmsSession:
    """Connect through ``endpoint`` and open the link (not yet associated)."""
    client = DlmsClient(
        settings, invocation_counter=invocation_counter, counter_limit=counter_limit
    )
    link_impl: _Link = _HdlcLink(link) if link.kind == LinkKind.HDLC else _WrapperLink(link)
    connection = DlmsConnection(
        reactor, client, link_impl, timeout=timeout, retries=link.retries, on_push=on_push,
        on_downgrade=on_downgrade, accept_counter=accept_counter,
    )
    await connect_within(reactor, endpoint, connection, settings.route, timeout)
    return DlmsSession(connection)


# -- meter settings ---------------------------------------------------------------------------


def _hex(meter: Meter, key: str, size: int | None = None) -> bytes | None:
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
    ek, ak = _hex(meter, "dlms_ek", 16), _hex(meter, "dlms_ak", 16)
    keys = SecurityKeys(ek, ak) if ek and ak else None
    ciphered_text = md.get("dlms_ciphered", "yes" if keys else "no")
    if keys is not None and ciphered_text.lower() not in ("yes", "true", "1"):
        raise ConfigError(
            f"meter {meter.id}: dlms_ciphered = {ciphered_text} with keys: a meter with keys "
            "is always ciphered (an unciphered APDU from it is refused)", key="dlms_ciphered"
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
        system_title=_hex(meter, "dlms_system_title", 8) or system_title or DEFAULT_SYSTEM_TITLE,
        keys=keys,
        ciphered=ciphered_text.lower() in ("yes", "true", "1") and keys is not None,
        meter=meter.id,
        route=meter.route,
    )
    return client, LinkSettings(kind, client_address, logical, physical)


def _metadata_time(meter: Meter, key: str) -> datetime | None:
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


COUNTERS_PER_SESSION = 10_000


class SecurityEvents:
    """Refused downgrades: every one counted in ``downgrades`` and logged; a MeterEvent
    (fep.protocols.dlms.identity.downgrade_event) submitted to ``sink`` at most once per
    meter per ``interval`` seconds (an attacker's flood stays one alarm, not a table of
    rows)."""

    def __init__(
        self,
        sink: IRecordSink | None = None,
        *,
        clock: Callable[[], float] = time.time,
        interval: float = 60.0,
    ) -> None:
        self.sink = sink
        self.clock = clock
        self.interval = interval
        self.downgrades = 0
        self._last: dict[str, float] = {}

    def downgrade(self, meter: str, where: str, detail: str) -> None:
        self.downgrades += 1
        log.error(
            "DLMS security: unciphered APDU from meter {meter} refused ({where}): {detail}",
            meter=meter, where=where, detail=detail, security_event=DOWNGRADE_CODE,
        )
        now = self.clock()
        last = self._last.get(meter)
        if self.sink is None or (last is not None and now - last < self.interval):
            return
        if len(self._last) > 10_000:
            self._last.clear()
        self._last[meter] = now
        event = downgrade_event(meter, where, detail, datetime.fromtimestamp(now, UTC))
        d = self.sink.submit([event])
        d.addErrback(lambda f: log.failure("security event of {meter} not spooled", f,
                                           meter=meter))


class DlmsContext:
    """What the DLMS sessions of a process share: the invocation counters (an
    IInvocationCounters; None refuses meters with keys), the client system title used unless
    a meter's ``dlms_system_title`` says otherwise, and the security events of pulls."""

    def __init__(
        self,
        counters: Any,
        system_title: bytes = DEFAULT_SYSTEM_TITLE,
        security: SecurityEvents | None = None,
    ) -> None:
        if len(system_title) != 8:
            raise ValueError("a DLMS system title is 8 bytes")
        self.counters = counters
        self.system_title = system_title
        self.security = security if security is not None else SecurityEvents()


# The daemon's context for the doors that still build DlmsProtocol() through the registry
# (the console's and the API's reads, fep.operator.commands); the collection engine and the
# GPRS channel are given theirs (fep.service). Set by fep.service, None elsewhere.
_default_context: DlmsContext | None = None


def set_dlms_context(context: DlmsContext | None) -> None:
    global _default_context
    _default_context = context


def set_counter_store(store: Any) -> None:
    """A context with these counters and the default system title (tests)."""
    set_dlms_context(DlmsContext(store) if store is not None else None)


DEFAULT_PROFILE = "1.0.99.1.0.255"
DEFAULT_EVENT_LOGS = "0.0.99.98.0.255"
MAX_DEMAND = ObisCode(1, 0, 1, 6, 0, 255)
PUSH_SETUP = ObisCode(0, 0, 25, 9, 0, 255)
COMMANDS = (
    "demand-reset", "disconnect", "reconnect", "firmware-upgrade", "push-setup", "key-transfer"
)


def _reactor_now(reactor: Any) -> datetime:
    return datetime.fromtimestamp(reactor.seconds(), UTC)


@implementer(IMeterProtocol, IPushProtocol, IProfileReader, IEventReader, IClock, ICommands)
class DlmsProtocol:
    """``fep read`` and scheduled reads of DLMS meters: associate, read the objects (and a
    profile when asked), release. For the collection engine also: load profile by range,
    event logs, clock read and set, and commands (disconnect control, demand reset, image
    transfer with resume, push setup)."""

    name = "dlms"
    commands = COMMANDS

    def __init__(self, context: DlmsContext | None = None) -> None:
        self._context = context

    @property
    def context(self) -> DlmsContext | None:
        return self._context if self._context is not None else _default_context

    def read(
        self, reactor: Any, endpoint: Any, meter: Meter, timeout: float
    ) -> Deferred[list[Record]]:
        return ensureDeferred(self._read(reactor, endpoint, meter, timeout))

    def push_handler(
        self,
        meter: Meter,
        sink: IRecordSink,
        *,
        directory: Any,
        counters: Any,
        source: str,
        close: Callable[[], None],
    ) -> DlmsPushHandler:
        """Pushes on ``meter``'s connection: a ciphered push is deciphered with the keys of
        the meter its system title names (``meter`` when the title is not in the meter
        list); an unciphered one is taken as ``meter``'s."""

        def resolve(title: bytes | None, wport: int) -> Meter | None:
            if title is not None and directory is not None:
                found: Meter | None = directory.by_system_title(title)
                if found is not None:
                    return found
            return meter

        context = self.context
        security = (context.security if context is not None and context.security.sink is not None
                    else SecurityEvents(sink))
        return DlmsPushHandler(
            DlmsPushDecoder(sink, resolve, counters, security=security, where=source or "push"),
            source,
        )

    async def _open(self, reactor: Any, endpoint: Any, meter: Meter, timeout: float
                    ) -> DlmsSession:
        """A connected session (link open, not yet associated)."""
        context = self.context
        client, link = settings_for(meter, context.system_title if context else None)
        start, limit = 1, 0x100000000
        accept_counter: Callable[[bytes, int], Any] | None = None
        if client.ciphered or client.authentication == Authentication.HIGH_GMAC:
            if context is None or context.counters is None:
                raise ConfigError(
                    f"meter {meter.id} has DLMS keys, but no invocation counter store is "
                    "configured: its counters must come from the store the daemon uses "
                    "(fep read --config FEP.INI), or one could be sent twice",
                    key="dlms_ek",
                )
            assert client.keys is not None
            # Never send a counter twice: take a block that is recorded as used first. The
            # block is also above every counter sent to this meter under its earlier keys
            # (TITLE:METER, the name of its counters before they were kept per key, is the
            # meter's floor across keys): a meter that does not start its counters again at
            # a key change still takes ours after a key transfer.
            start = await context.counters.reserve(
                counter_key(client.system_title, client.keys.block_cipher_key),
                COUNTERS_PER_SESSION,
                meter_key=f"{client.system_title.hex()}:{meter.id}",
            )
            limit = start + COUNTERS_PER_SESSION
            # The meter's counters are kept per key too: a new key starts a new sequence.
            accept_counter = functools.partial(
                context.counters.accept_received,
                key_fingerprint=key_fingerprint(client.keys.block_cipher_key))
        security = context.security if context is not None else SecurityEvents()
        session = await open_session(
            reactor,
            endpoint,
            client,
            link,
            timeout=timeout,
            invocation_counter=start,
            counter_limit=limit,
            on_downgrade=lambda detail: security.downgrade(meter.id, "pull session", detail),
            accept_counter=accept_counter,
        )
        deviation = meter.metadata.get("dlms_deviation")
        if deviation:
            try:
                session.default_deviation = int(deviation)
                session.connection.default_deviation = session.default_deviation
            except ValueError:
                session.connection.transport.loseConnection()  # type: ignore[union-attr]
                raise ConfigError(
                    f"meter {meter.id}: dlms_deviation must be minutes", key="dlms_deviation"
                ) from None
        return session

    async def _associated(
        self,
        reactor: Any,
        endpoint: Any,
        meter: Meter,
        timeout: float,
        work: Callable[[DlmsSession], Coroutine[Any, Any, _T]],
    ) -> _T:
        """Open, associate, run ``work`` on the session, release."""
        session = await self._open(reactor, endpoint, meter, timeout)
        try:
            await session.associate()
            result = await work(session)
            await session.release()
        except BaseException:
            session.connection.transport.loseConnection()  # type: ignore[union-attr]
            raise
        return result

    async def _read(
        self, reactor: Any, endpoint: Any, meter: Meter, timeout: float
    ) -> list[Record]:
        objects = [
            parse_object(t)
            for t in (meter.metadata.get("dlms_objects") or ",".join(DEFAULT_OBJECTS)).split(",")
            if t.strip()
        ]

        async def work(session: DlmsSession) -> list[Record]:
            records: list[Record] = list(await session.read_registers(objects))
            profile = meter.metadata.get("dlms_profile")
            if profile:
                records += await session.read_profile(
                    ObisCode.parse(profile),
                    _metadata_time(meter, "dlms_from"),
                    _metadata_time(meter, "dlms_to"),
                )
            return records

        return await self._associated(reactor, endpoint, meter, timeout, work)

    def read_profile(
        self,
        reactor: Any,
        endpoint: Any,
        meter: Meter,
        since: datetime,
        until: datetime,
        timeout: float,
    ) -> Deferred[list[Record]]:
        """The load profile (``dlms_profile``, default 1.0.99.1.0.255) by range selective
        access on its capture times: an interval ends at its capture time, so asking for
        ``[since, until]`` covers every interval starting in ``[since, until)``."""
        profile = _obis_setting(meter, "dlms_profile", DEFAULT_PROFILE)

        async def work(session: DlmsSession) -> list[Record]:
            return await session.read_profile(profile, since, until)

        return ensureDeferred(self._associated(reactor, endpoint, meter, timeout, work))

    def read_events(
        self, reactor: Any, endpoint: Any, meter: Meter, since: datetime | None, timeout: float
    ) -> Deferred[list[Record]]:
        """The event logs (``dlms_event_logs``, comma list; default the standard event log
        0.0.99.98.0.255), from ``since`` by range when given."""
        logs = [
            ObisCode.parse(t)
            for t in meter.metadata.get("dlms_event_logs", DEFAULT_EVENT_LOGS).split(",")
            if t.strip()
        ]

        async def work(session: DlmsSession) -> list[Record]:
            records: list[Record] = []
            for log_name in logs:
                got = await session.read_profile(log_name, since, None)
                records += [r for r in got if since is None or not isinstance(r, MeterEvent)
                            or r.time >= since]
            return records

        return ensureDeferred(self._associated(reactor, endpoint, meter, timeout, work))

    def read_clock(
        self, reactor: Any, endpoint: Any, meter: Meter, timeout: float
    ) -> Deferred[datetime]:
        async def work(session: DlmsSession) -> datetime:
            data = await session.get(A.AttributeDescriptor(8, CLOCK, 2))
            when = axdr.as_datetime(data, "clock time").to_datetime(session.default_deviation)
            if when is None:
                raise ProtocolError(
                    f"meter {meter.id}: the clock's time is not specified",
                    meter=meter.id, route=meter.route, protocol=PROTOCOL,
                )
            return when

        return ensureDeferred(self._associated(reactor, endpoint, meter, timeout, work))

    def set_clock(
        self, reactor: Any, endpoint: Any, meter: Meter, timeout: float
    ) -> Deferred[None]:
        """Set the clock to the reactor's time at the moment the SET is built (after the
        association), in UTC with the meter's deviation when its record gives one."""

        async def work(session: DlmsSession) -> None:
            deviation = session.default_deviation or 0
            await session.set_clock(_reactor_now(reactor), deviation=deviation)

        return ensureDeferred(self._associated(reactor, endpoint, meter, timeout, work))

    def run_command(
        self,
        reactor: Any,
        endpoint: Any,
        meter: Meter,
        command: str,
        params: Mapping[str, Any],
        timeout: float,
        progress: Callable[[Mapping[str, Any]], None],
    ) -> Deferred[Mapping[str, Any]]:
        async def work(session: DlmsSession) -> Mapping[str, Any]:
            if command == "disconnect":
                return {"control_state": await session.disconnect()}
            if command == "reconnect":
                return {"control_state": await session.reconnect()}
            if command == "demand-reset":
                register = ObisCode.parse(str(params.get("register", MAX_DEMAND)))
                class_id = int(params.get("class", 4))
                await session.action(A.MethodDescriptor(class_id, register, 1), axdr.integer(0))
                return {"reset": str(register)}
            if command == "push-setup":
                destination = str(params.get("destination", ""))
                if not destination:
                    raise ConfigError("push-setup needs destination=HOST:PORT",
                                      key="destination")
                setup = ObisCode.parse(str(params.get("setup", PUSH_SETUP)))
                await session.set(
                    A.AttributeDescriptor(40, setup, 3),
                    axdr.structure(
                        axdr.enum_value(0),
                        axdr.octet_string(destination.encode()),
                        axdr.enum_value(0),
                    ),
                )
                return {"destination": destination}
            if command == "key-transfer":
                return await _transfer_keys(session, meter, params)
            if command == "firmware-upgrade":
                image = params["image_bytes"]
                identifier = str(params.get("identifier", "")).encode() or b"fep-image"

                def blocks(confirmed: int, total: int) -> None:
                    progress({"blocks_confirmed": confirmed, "blocks": total})

                first = await session.transfer_image(identifier, image, progress=blocks)
                return {"resumed_from_block": first, "bytes": len(image)}
            raise NotSupported(f"meter {meter.id}: DLMS cannot run {command}",
                               meter=meter.id, protocol=PROTOCOL)

        return ensureDeferred(self._associated(reactor, endpoint, meter, timeout, work))


async def _transfer_keys(
    session: DlmsSession, meter: Meter, params: Mapping[str, Any]
) -> Mapping[str, Any]:
    """``key-transfer``: ``params["new_keys"]`` (meter secret name -> hex, given in memory
    by the collection engine, never stored in the command) wrapped with the meter's
    ``dlms_kek``. Fires with the names of the keys sent, never their values."""
    kek = _hex(meter, "dlms_kek", 16)
    if kek is None:
        raise ConfigError(f"meter {meter.id}: key-transfer needs the meter's master key "
                          "(dlms_kek) in the secret store", key="dlms_kek")
    new_keys: Mapping[str, str] = params.get("new_keys") or {}
    pairs: list[tuple[KeyId, bytes]] = []
    for name, value in sorted(new_keys.items()):
        if name not in TRANSFERABLE_KEYS:
            raise ConfigError(f"meter {meter.id}: {name} is not a key a meter takes by key "
                              f"transfer ({', '.join(TRANSFERABLE_KEYS)})", key="keys")
        pairs.append((TRANSFERABLE_KEYS[name], bytes.fromhex(value)))
    if not pairs:
        raise ConfigError(f"meter {meter.id}: key-transfer names no key", key="keys")
    setup = _obis_setting(meter, "dlms_security_setup", str(SECURITY_SETUP))
    await session.transfer_keys(pairs, kek, setup)
    return {"keys": ",".join(sorted(new_keys))}


def _obis_setting(meter: Meter, key: str, default: str) -> ObisCode:
    text = meter.metadata.get(key) or default
    try:
        return ObisCode.parse(text)
    except ValueError:
        raise ConfigError(f"meter {meter.id}: {key} {text!r} is not an OBIS code",
                          key=key) from None


# -- push receiver ----------------------------------------------------------------------------


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
            lambda f: log.failure("push from {meter}: invocation counter not recorded; "
                                  "push dropped", f, meter=meter.id))
        return True

    def _counted(self, result: tuple[bool, int | None], meter: Meter, title: bytes,
                 counter: int, records: list[Record]) -> bool:
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
        self.decoder = DlmsPushDecoder(sink, resolve, counters, identify=identify,
                                       security=security, where="push listener")
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
