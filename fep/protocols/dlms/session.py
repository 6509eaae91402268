"""The Twisted side of DLMS/COSEM: a client session over any byte pipe (wrapper over TCP,
HDLC over TCP or serial), ``DlmsProtocol`` for ``fep read`` and scheduled reads, and the
push receiver that turns ciphered Data-Notifications into records.

The protocol state lives in ``client.py`` (association, services), ``hdlc.py`` and
``wrapper.py`` (links); this module moves bytes, runs timers and turns values into records.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.channels.endpoints import connect_within
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
    ScalerUnit,
    clock_quality,
    decode_capture_objects,
    decode_object_list,
    event_log,
    profile_blocks,
    register_reading,
)
from fep.protocols.dlms.errors import PROTOCOL, DataAccessError, DlmsError
from fep.protocols.dlms.security import SecurityKeys

log = Logger(namespace="fep.protocols.dlms")

# Public client SAP (16) reads without authentication; management (1) with LLS/HLS.
PUBLIC_CLIENT = 16
WRAPPER_PORT_SERVER = 1


_T = TypeVar("_T")

CLOCK = ObisCode(0, 0, 1, 0, 0, 255)
DISCONNECT_CONTROL = ObisCode(0, 0, 96, 3, 10, 255)
IMAGE_TRANSFER = ObisCode(0, 0, 44, 0, 0, 255)


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
    ) -> None:
        self.reactor = reactor
        self.client = client
        self.link = link
        self.timeout = timeout
        self.retries = retries
        self.on_push = on_push
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
            self._fail(e)
            return
        if isinstance(event, Pushed):
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
        d = channel.pushed([*content.readings, *content.events])
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
) -> DlmsSession:
    """Connect through ``endpoint`` and open the link (not yet associated)."""
    client = DlmsClient(
        settings, invocation_counter=invocation_counter, counter_limit=counter_limit
    )
    link_impl: _Link = _HdlcLink(link) if link.kind == LinkKind.HDLC else _WrapperLink(link)
    connection = DlmsConnection(
        reactor, client, link_impl, timeout=timeout, retries=link.retries, on_push=on_push
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


def settings_for(meter: Meter) -> tuple[ClientSettings, LinkSettings]:
    """The association and link settings a meter's record (metadata ``dlms_*``) asks for."""
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
        system_title=_hex(meter, "dlms_system_title", 8) or b"FEP\x00\x00\x00\x00\x01",
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


# Where the invocation counters fep sends with are kept; the daemon points this at its data
# directory (set_counter_store), the command line uses FEP_DLMS_COUNTERS or var/.
_counter_store: Any = None
COUNTERS_PER_SESSION = 10_000


def set_counter_store(store: Any) -> None:
    global _counter_store
    _counter_store = store


async def _counter_file(reactor: Any) -> Any:
    global _counter_store
    if _counter_store is None:
        import os

        from fep.store.counters import InvocationCounterFile

        store = InvocationCounterFile(
            reactor, os.environ.get("FEP_DLMS_COUNTERS", "var/dlms-invocation-counters.json")
        )
        await store.open()
        _counter_store = store
    return _counter_store


DEFAULT_PROFILE = "1.0.99.1.0.255"
DEFAULT_EVENT_LOGS = "0.0.99.98.0.255"
MAX_DEMAND = ObisCode(1, 0, 1, 6, 0, 255)
PUSH_SETUP = ObisCode(0, 0, 25, 9, 0, 255)
COMMANDS = ("demand-reset", "disconnect", "reconnect", "firmware-upgrade", "push-setup")


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

        return DlmsPushHandler(DlmsPushDecoder(sink, resolve, counters), source)

    async def _open(self, reactor: Any, endpoint: Any, meter: Meter, timeout: float
                    ) -> DlmsSession:
        """A connected session (link open, not yet associated)."""
        client, link = settings_for(meter)
        start, limit = 1, 0x100000000
        if client.ciphered or client.authentication == Authentication.HIGH_GMAC:
            # Never send a counter twice: take a block that is on disk as used first.
            store = await _counter_file(reactor)
            start = await store.reserve(
                f"{client.system_title.hex()}:{meter.id}", COUNTERS_PER_SESSION
            )
            limit = start + COUNTERS_PER_SESSION
        session = await open_session(
            reactor,
            endpoint,
            client,
            link,
            timeout=timeout,
            invocation_counter=start,
            counter_limit=limit,
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


class DlmsPushDecoder:
    """Turns pushed APDUs into records: finds the sender (by the system title of a
    general-ciphered APDU, through ``resolve``), deciphers with its keys, refuses replayed
    invocation counters, decodes the notification and submits the readings. Refusals are
    counted in ``stats`` and logged with the system title; nothing is raised."""

    def __init__(
        self,
        sink: IRecordSink,
        resolve: Callable[[bytes | None, int], Meter | None],
        counters: Any = None,
        stats: PushStats | None = None,
    ) -> None:
        self.sink = sink
        self.resolve = resolve
        if counters is None:
            from fep.protocols.dlms.security import InvocationCounterGuard

            counters = InvocationCounterGuard()
        self.counters = counters
        self.stats = stats if stats is not None else PushStats()

    def reject(self, why: str, system_title: bytes | None, detail: str) -> None:
        counter = {
            "unknown": "rejected_unknown",
            "cipher": "rejected_cipher",
            "replay": "rejected_replay",
        }.get(why, "rejected_frame")
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        log.warn(
            "DLMS push rejected ({why}) from system title {title}: {detail}",
            why=why,
            title=system_title.hex() if system_title else "?",
            detail=detail,
        )

    def notification(self, raw: bytes, wport: int = 0, source: str = "") -> bool:
        """Decode and submit one pushed APDU; False when it was refused."""
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
                last = self.counters.last_received(title)
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
        if counter is not None and title is not None:
            self.counters.accept(title, counter)
        self.stats.accepted += 1
        readings = list(content.readings)
        if source:
            readings = [attrs.evolve(r, source=source) for r in readings]
        d = self.sink.submit([*readings, *content.events])
        d.addErrback(lambda f: log.failure("push from {meter} not spooled", f, meter=meter.id))
        return True


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
        self.handler.data_received(data)


class DlmsPushFactory(Factory):
    """Accepts pushes, deciphers them with the sender's keys, routes the readings."""

    def __init__(
        self,
        sink: IRecordSink,
        resolve: Callable[[bytes | None, int], Meter | None],
        counters: Any = None,
    ) -> None:
        self.decoder = DlmsPushDecoder(sink, resolve, counters)
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
