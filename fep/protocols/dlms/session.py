"""The Twisted side of a DLMS/COSEM pull: ``DlmsConnection`` runs one connection's steps
(exchange.py: a link from link.py and the client) on the shared session driver
(fep/protocols/session.py), which connects, keeps the step timer, ends and names the errors;
``DlmsSession`` associates, reads, runs commands and releases over it; ``DlmsProtocol`` is
what the registry names for ``fep read``, scheduled reads and collection jobs.

The push receiver's adapter is here too: ``DlmsPushDecoder`` (receiver.py's decisions on
each pushed APDU carried out: the invocation counter taken, records submitted, refusals
logged), ``DlmsPushHandler`` (a GPRS session's push connection), ``DlmsPushFactory`` (the push
listener); and ``report_downgrade``, which logs and raises what context.py's
``SecurityEvents`` counts. Settings from a meter's record are settings.py's, what the
sessions of a process share is context.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.errors import ConfigError, FrameError, NotSupported, ProtocolError
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
from fep.protocols.dlms import axdr
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
    SetDone,
)
from fep.protocols.dlms.context import DlmsContext, SecurityEvents
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
from fep.protocols.dlms.errors import (
    PROTOCOL,
    CommandRefusedByMeter,
    ConfirmedServiceError,
    DataAccessError,
    DlmsError,
    ExceptionResponse,
)
from fep.protocols.dlms.exchange import (
    Answered,
    DlmsSteps,
    Downgrade,
    LinkNoise,
    Opened,
    PushArrived,
    Refused,
    Resent,
)
from fep.protocols.dlms.identity import DOWNGRADE_CODE, counter_key, key_fingerprint
from fep.protocols.dlms.link import HdlcLink, Link, LinkKind, LinkSettings, WrapperLink
from fep.protocols.dlms.pushframing import FramingProblem, PushItem, PushStream
from fep.protocols.dlms.receiver import (
    PushAccepted,
    PushCounterCheck,
    PushRefused,
    PushStats,
    decide_push,
)
from fep.protocols.dlms.settings import (
    DEFAULT_OBJECTS,
    hex_setting,
    metadata_time,
    obis_setting,
    parse_object,
    settings_for,
)
from fep.protocols.session import MeterSession, connect_within
from fep.ratelog import RateLimitedLog

log = Logger(namespace="fep.protocols.dlms")

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


class DlmsConnection(MeterSession):
    """One connection to one meter on the shared session driver: opens the link, then runs
    one exchange at a time (the steps are fep.protocols.dlms.exchange's).

    ``request(apdu)`` sends an APDU and fires with the client's final event for it
    (following ``Send`` continuations itself); a refused answer fails that request
    (DlmsError/FrameError naming the meter); a silent meter or a lost connection ends the
    session and fails what waits, with the driver's errors (SessionTimeout naming the step
    and its time limit, ChannelError naming the route).
    """

    gives_back = True  # after the end: not ours (a push), if the pipe is still lent

    def __init__(
        self,
        reactor: IReactorTime,
        client: DlmsClient,
        link: Link,
        *,
        timeout: float,
        retries: int = 2,
        on_push: Callable[[Pushed], None] | None = None,
        on_downgrade: Callable[[str], None] | None = None,
        accept_counter: Callable[[bytes, int], Any] | None = None,
    ) -> None:
        self.exchange = DlmsSteps(client, link, retries)
        s = client.settings
        super().__init__(
            reactor, timeout, meter=s.meter, route=s.route, protocol=PROTOCOL,
            steps=self.exchange,
        )
        self.client = client
        self.link = link
        self.on_push = on_push
        # Told of every unciphered APDU refused from a meter with keys (a security event).
        self.on_downgrade = on_downgrade
        # The daemon's keeper of received invocation counters (accept_received), for the
        # ciphered pushes that arrive during the session.
        self.accept_counter = accept_counter
        self.ready: Deferred[None] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self._waiting: Deferred[Event] | None = None
        self._dropped = False
        self.frame_errors = 0
        # Minutes local to UTC for push times the meter sends without a deviation.
        self.default_deviation: int | None = None
        # The push list layouts (layouts.LayoutTable) of pushes arriving during the session.
        self.layouts: Any = None
        self.done.addBoth(self._session_over)

    # -- what the driver hands over ---------------------------------------------------------

    def note(self, action: object) -> None:
        meter = self.client.settings.meter
        if isinstance(action, Opened):
            if not self.ready.called:
                self.ready.callback(None)
        elif isinstance(action, Answered):
            waiting, self._waiting = self._waiting, None
            if waiting is not None:
                waiting.callback(action.event)
        elif isinstance(action, Refused):
            if isinstance(action.error, FrameError):
                self.frame_errors += 1
            if not self._tell(Failure(action.error)):
                log.warn("{meter}: {error}", meter=meter, error=str(action.error))
        elif isinstance(action, PushArrived):
            if self.on_push is not None:
                self.on_push(action.pushed)
            else:
                self._hand_over_push(action.pushed)
        elif isinstance(action, Downgrade):
            if self.on_downgrade is not None:
                self.on_downgrade(action.detail)
            elif action.push:
                log.error("{meter}: {why} refused", meter=meter, why=action.detail,
                          security_event=DOWNGRADE_CODE)
        elif isinstance(action, LinkNoise):
            self.frame_errors += 1
            log.info("{meter}: link frame error: {error}", meter=meter, error=str(action.error))
        elif isinstance(action, Resent):
            log.debug("{meter}: no answer to {what}, repeating ({n})", meter=meter,
                      what=action.what, n=action.n)

    def _tell(self, failure: Failure) -> bool:
        """Fail the opening or the request under way; False when nothing waits."""
        if not self.ready.called:
            self.ready.errback(failure)
            return True
        waiting, self._waiting = self._waiting, None
        if waiting is None:
            return False
        waiting.errback(failure)
        return True

    def _session_over(self, result: object) -> None:
        """The driver ended the session: a failure goes to what waits for it."""
        if isinstance(result, Failure) and not self._tell(result) and not self._dropped:
            log.warn("{meter}: {error}", meter=self.client.settings.meter,
                     error=result.getErrorMessage())

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        super().connectionLost(reason)
        if not self.closed.called:
            self.closed.callback(None)

    def unconsumed(self) -> bytes:
        """The bytes the link holds undecoded (a push begun after the meter's last answer)."""
        return self.link.take_buffered()

    def not_given_back(self, data: bytes) -> None:
        self.frame_errors += 1
        log.info("{meter}: {count} bytes after the session's last answer dropped",
                 meter=self.client.settings.meter or "?", route=self.client.settings.route,
                 count=len(data))

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
                meter, event.notification, default_deviation=self.default_deviation,
                layouts=self.layouts,
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
        s = self.client.settings
        if self._waiting is not None:
            raise ProtocolError(f"{what} while another request is outstanding",
                                meter=s.meter, route=s.route, protocol=PROTOCOL)
        if self.finished:
            raise ProtocolError(f"{what} after the session ended", meter=s.meter,
                                route=s.route, protocol=PROTOCOL)
        actions = self.exchange.request(apdu, what)
        waiting: Deferred[Event] = Deferred()
        self._waiting = waiting
        self.run(actions)
        return waiting

    def close_link(self) -> Deferred[None]:
        """Disconnect the link (HDLC DISC) and the transport."""
        if self.transport is not None and not self.finished:
            self.run(self.exchange.close())
            self.finish(None)
        return self.closed

    def drop(self) -> None:
        """The work on this session failed: drop the line (nothing more is sent)."""
        self._dropped = True
        self.fail(ProtocolError("session abandoned"))


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
                    default_deviation=self.default_deviation,
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
    reactor: IReactorTime,
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
    link_impl: Link = HdlcLink(link) if link.kind == LinkKind.HDLC else WrapperLink(link)
    connection = DlmsConnection(
        reactor, client, link_impl, timeout=timeout, retries=link.retries, on_push=on_push,
        on_downgrade=on_downgrade, accept_counter=accept_counter,
    )
    await connect_within(reactor, endpoint, connection, settings.route, timeout)
    return DlmsSession(connection)


COUNTERS_PER_SESSION = 10_000


DEFAULT_PROFILE = "1.0.99.1.0.255"
DEFAULT_EVENT_LOGS = "0.0.99.98.0.255"
MAX_DEMAND = ObisCode(1, 0, 1, 6, 0, 255)
PUSH_SETUP = ObisCode(0, 0, 25, 9, 0, 255)
COMMANDS = (
    "demand-reset", "disconnect", "reconnect", "firmware-upgrade", "push-setup", "key-transfer"
)


def _reactor_now(reactor: IReactorTime) -> datetime:
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
        # The process's DLMS context, given by whoever builds the protocol (the daemon's
        # fep.protocols.registry.ProtocolRegistry, `fep read`); None: meters with keys are
        # refused (no invocation counters).
        self._context = context

    @property
    def context(self) -> DlmsContext | None:
        return self._context

    def read(
        self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float
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
        reply: Callable[[bytes], None] | None = None,
    ) -> DlmsPushHandler:
        """Pushes on ``meter``'s connection: a ciphered push is deciphered with the keys of
        the meter its system title names (``meter`` when the title is not in the meter
        list); an unciphered one is taken as ``meter``'s."""

        resolve = _TitleOrMeter(directory, meter)
        context = self.context
        security = (context.security if context is not None and context.security.sink is not None
                    else SecurityEvents(sink))
        return DlmsPushHandler(
            DlmsPushDecoder(sink, resolve, counters, security=security, where=source or "push",
                            layouts=context.layouts if context is not None else None),
            source,
            device=f"meter {meter.id}",
        )

    async def _open(self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float
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
            on_downgrade=lambda detail: report_downgrade(
                security, meter.id, "pull session", detail
            ),
            accept_counter=accept_counter,
        )
        if context is not None:
            session.connection.layouts = context.layouts
        deviation = meter.metadata.get("dlms_deviation")
        if deviation:
            try:
                session.default_deviation = int(deviation)
                session.connection.default_deviation = session.default_deviation
            except ValueError:
                session.connection.drop()
                raise ConfigError(
                    f"meter {meter.id}: dlms_deviation must be minutes", key="dlms_deviation"
                ) from None
        return session

    async def _associated(
        self,
        reactor: IReactorTime,
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
            session.connection.drop()
            raise
        return result

    async def _read(
        self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float
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
                    metadata_time(meter, "dlms_from"),
                    metadata_time(meter, "dlms_to"),
                )
            return records

        return await self._associated(reactor, endpoint, meter, timeout, work)

    def read_profile(
        self,
        reactor: IReactorTime,
        endpoint: Any,
        meter: Meter,
        since: datetime,
        until: datetime,
        timeout: float,
    ) -> Deferred[list[Record]]:
        """The load profile (``dlms_profile``, default 1.0.99.1.0.255) by range selective
        access on its capture times: an interval ends at its capture time, so asking for
        ``[since, until]`` covers every interval starting in ``[since, until)``."""
        profile = obis_setting(meter, "dlms_profile", DEFAULT_PROFILE)

        async def work(session: DlmsSession) -> list[Record]:
            return await session.read_profile(profile, since, until)

        return ensureDeferred(self._associated(reactor, endpoint, meter, timeout, work))

    def read_events(
        self, reactor: IReactorTime, endpoint: Any, meter: Meter, since: datetime | None,
        timeout: float,
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
        self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float
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
        self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float
    ) -> Deferred[None]:
        """Set the clock to the reactor's time at the moment the SET is built (after the
        association), in UTC with the meter's deviation when its record gives one."""

        async def work(session: DlmsSession) -> None:
            deviation = session.default_deviation or 0
            await session.set_clock(_reactor_now(reactor), deviation=deviation)

        return ensureDeferred(self._associated(reactor, endpoint, meter, timeout, work))

    def run_command(
        self,
        reactor: IReactorTime,
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

        async def named() -> Mapping[str, Any]:
            try:
                return await self._associated(reactor, endpoint, meter, timeout, work)
            except (DataAccessError, ExceptionResponse, ConfirmedServiceError) as e:
                raise CommandRefusedByMeter(command, e, meter=meter.id,
                                            route=meter.route) from e

        return ensureDeferred(named())


async def _transfer_keys(
    session: DlmsSession, meter: Meter, params: Mapping[str, Any]
) -> Mapping[str, Any]:
    """``key-transfer``: ``params["new_keys"]`` (meter secret name -> hex, given in memory
    by the collection engine, never stored in the command) wrapped with the meter's
    ``dlms_kek``. Fires with the names of the keys sent, never their values."""
    kek = hex_setting(meter, "dlms_kek", 16)
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
    setup = obis_setting(meter, "dlms_security_setup", str(SECURITY_SETUP))
    await session.transfer_keys(pairs, kek, setup)
    return {"keys": ",".join(sorted(new_keys))}


# -- Refused downgrades and pushes: the Twisted side of context.py's SecurityEvents and
# receiver.py's decisions.


def report_downgrade(security: SecurityEvents, meter: str, where: str, detail: str) -> None:
    """A refused downgrade: counted (``security``), logged, and raised as a MeterEvent to
    ``security.sink`` at most once per meter per interval."""
    event = security.count_downgrade(meter, where, detail)
    log.error(
        "DLMS security: unciphered APDU from meter {meter} refused ({where}): {detail}",
        meter=meter,
        where=where,
        detail=detail,
        security_event=DOWNGRADE_CODE,
    )
    if event is None or security.sink is None:
        return
    d = security.sink.submit([event])
    d.addErrback(lambda f: log.failure("security event of {meter} not spooled", f, meter=meter))


class DlmsPushDecoder:
    """Turns pushed APDUs into records by receiver.py's ``decide_push`` (sender, keys,
    replayed counters, an unciphered push from a meter with keys refused): takes the
    invocation counter of a ciphered push (asynchronously when the counters are the store's)
    before the records are submitted to ``sink``; refusals counted in ``stats`` and logged
    (rate-limited) with the system title, downgrades raised through ``security``. Nothing is
    raised."""

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
        sender: Callable[[str, str], Meter | None] | None = None,
        plain: Sequence[str] = (),
        layouts: Any = None,
    ) -> None:
        self.sink = sink
        self.sender = sender
        self.plain = tuple(plain)
        self.layouts = layouts
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

    def reject(
        self, why: str, system_title: bytes | None, detail: str, device: str = "?"
    ) -> None:
        self.stats.refused(why)
        self.events.warn(
            "DLMS push rejected ({why}) from system title {title}: {detail} (device {device})",
            why=why,
            title=system_title.hex() if system_title else "?",
            detail=detail,
            device=device,
            kind=f"dlms push {why}",
        )

    def _refused(self, refusal: PushRefused, device: str = "?") -> bool:
        self.reject(refusal.why, refusal.system_title, refusal.detail, device)
        if refusal.downgrade is not None:
            meter, detail = refusal.downgrade
            report_downgrade(self.security, meter, self.where, detail)
        return False

    def notification(
        self, raw: bytes, wport: int = 0, source: str = "", address: str | None = None,
        device: str = "?",
    ) -> bool:
        """Decode and submit one pushed APDU (``address``: the link address it came from,
        ``device`` names the sender in logs); False when it was refused (a ciphered push is
        submitted once its counter is accepted, which may be later)."""
        decision = decide_push(
            raw, wport, source, resolve=self.resolve, identify=self.identify,
            last_received=self.counters.last_received, address=address,
            sender=self.sender, plain=self.plain, layouts=self.layouts,
        )
        if isinstance(decision, PushRefused):
            return self._refused(decision, device)
        if isinstance(decision, PushAccepted):
            self._submit(decision.meter, decision.records)
            return True
        # The counter is taken (in the store when it is shared) before anything is stored.
        accepting = self.counters.accept_received(
            decision.system_title, decision.counter, decision.fingerprint
        )
        if not isinstance(accepting, Deferred):
            return self._counted(accepting, decision, device)
        accepting.addCallback(self._counted, decision, device)
        accepting.addErrback(
            lambda f: log.failure(
                "push from {meter}: invocation counter not recorded; push dropped",
                f,
                meter=decision.meter.id,
            )
        )
        return True

    def _counted(
        self, result: tuple[bool, int | None], check: PushCounterCheck, device: str = "?"
    ) -> bool:
        accepted, last = result
        if not accepted:
            return self._refused(check.refused(last), device)
        self._submit(check.meter, check.records)
        return True

    def _submit(self, meter: Meter, records: Sequence[Record]) -> None:
        self.stats.accepted += 1
        d = self.sink.submit(list(records))
        d.addErrback(lambda f: log.failure("push from {meter} not spooled", f, meter=meter.id))


class _TitleOrMeter:
    """The meter a push's system title names (in ``directory``), else ``meter``: a push
    handler's ``resolve`` (a small object rather than a closure: one per GPRS session)."""

    __slots__ = ("directory", "meter")

    def __init__(self, directory: Any, meter: Meter) -> None:
        self.directory = directory
        self.meter = meter

    def __call__(self, title: bytes | None, wport: int) -> Meter | None:
        if title is not None and self.directory is not None:
            found: Meter | None = self.directory.by_system_title(title)
            if found is not None:
                return found
        return self.meter


@implementer(IPushHandler)
class DlmsPushHandler:
    """Pushes on one connection, in the framing its first bytes show (pushframing.py:
    wrapper, HDLC or M-Bus frames), each APDU through a DlmsPushDecoder. Framing problems
    (bad frames, truncated HDLC or M-Bus segments) are refused as ``frame``, logged with
    ``device``."""

    # One per pushing connection (thousands of idle GPRS sessions): no instance dict.
    __slots__ = ("decoder", "device", "frames", "source", "stream")

    def __init__(self, decoder: DlmsPushDecoder, source: str = "", device: str = "?") -> None:
        self.decoder = decoder
        self.source = source
        self.device = device
        self.stream = PushStream()
        self.frames = 0

    def _items(self, items: Sequence[PushItem]) -> None:
        for item in items:
            if isinstance(item, FramingProblem):
                device = f"{self.device} {item.address}" if item.address else self.device
                self.decoder.reject("frame", None, item.detail, device)
                continue
            self.frames += 1
            self.decoder.notification(
                item.apdu, item.wport, self.source, item.address,
                f"{self.device} {item.address}",
            )

    def data_received(self, data: bytes) -> None:
        self._items(self.stream.receive(data))

    def connection_lost(self) -> None:
        """The connection ended: an HDLC segment sequence left open is counted."""
        self._items(self.stream.close())

    def pending(self) -> int:
        return self.stream.buffered

    def take_buffered(self) -> bytes:
        return self.stream.drain()


class PushReceiverProtocol(Protocol):
    """One inbound connection of a meter that pushes Data-Notifications (wrapper or HDLC
    frames)."""

    factory: DlmsPushFactory  # set by the factory when it makes the protocol

    def connectionMade(self) -> None:
        peer: Any = self.transport.getPeer() if self.transport is not None else None
        device = f"{peer.host}:{peer.port}" if hasattr(peer, "host") else "?"
        self.handler = DlmsPushHandler(self.factory.decoder, device=device)

    def dataReceived(self, data: bytes) -> None:
        accepted = self.factory.stats.accepted
        self.handler.data_received(data)
        if self.factory.stats.accepted > accepted:  # a valid push: the sender is known
            peer_identified(self.transport)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        handler = getattr(self, "handler", None)
        if handler is not None:
            handler.connection_lost()


class DlmsPushFactory(Factory[PushReceiverProtocol]):
    """Accepts pushes, deciphers them with the sender's keys, routes the readings."""

    protocol = PushReceiverProtocol

    def __init__(
        self,
        sink: IRecordSink,
        resolve: Callable[[bytes | None, int], Meter | None],
        counters: Any = None,
        *,
        identify: Callable[[bytes], Meter | None] | None = None,
        security: SecurityEvents | None = None,
        sender: Callable[[str, str], Meter | None] | None = None,
        plain: Sequence[str] = (),
        layouts: Any = None,
    ) -> None:
        self.decoder = DlmsPushDecoder(
            sink, resolve, counters, identify=identify, security=security,
            where="push listener", sender=sender, plain=plain, layouts=layouts,
        )
        self.sink = sink
        self.resolve = resolve
        self.counters = self.decoder.counters
        self.stats = self.decoder.stats

    def reject(self, why: str, system_title: bytes | None, detail: str) -> None:
        self.decoder.reject(why, system_title, detail)

    def notification(self, raw: bytes, protocol: Any = None) -> None:
        self.decoder.notification(raw)
