"""A DL/T 698.45 terminal's own traffic on a connection it opened (GPRS, Ethernet): its LINK
login, heartbeats and logout answered with fep's time, and its REPORT-Notifications turned
into records with the REPORT-Response to send once they are kept. Sans-IO: bytes in,
actions out.

``TerminalLink.receive(bytes)`` gives ``Send`` (a LINK-Response: a terminal drops the line
when its login or heartbeat goes unanswered), ``LoggedIn`` (the first login: the terminal's
server address is its identity), ``Heartbeat``, ``LoggedOut``, ``ReportReceived`` (records,
and the acknowledgement to write only after they are spooled: nothing acknowledged is
lost), ``Noise`` (bad bytes, counted) and ``Unexpected`` (a frame that is none of these: a
read job's answer belongs to the read client, not here).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, tzinfo

import attrs

from fep.errors import FrameError
from fep.model import Record, utcnow
from fep.protocols.dlt698.apdu import (
    LinkRequest,
    LinkResponse,
    LinkType,
    ReportNotification,
    ReportResponse,
    decode_apdu,
    encode_apdu,
)
from fep.protocols.dlt698.frames import (
    MAX_FRAME,
    PREAMBLE,
    START,
    Frame,
    FrameDecoder,
    Function,
    ServerAddress,
    control,
)
from fep.protocols.dlt698.objects import NoMapping, readings, record_records


@attrs.frozen
class ReportReceived:
    """A REPORT-Notification's records (filed under ``meter``), the items not understood,
    and ``ack``: the frame with the REPORT-Response, to write once the records are kept."""

    meter: str
    records: tuple[Record, ...]
    skipped: tuple[tuple[str, str], ...]
    ack: bytes
    # The report's APDU as received (a repeat of it is known by its content).
    apdu: bytes = attrs.field(default=b"", repr=False)


@attrs.frozen
class Send:
    data: bytes


@attrs.frozen
class LoggedIn:
    address: str
    heartbeat: int


@attrs.frozen
class Heartbeat:
    address: str


@attrs.frozen
class LoggedOut:
    address: str


@attrs.frozen
class Noise:
    why: str


@attrs.frozen
class Unexpected:
    frame: Frame


Action = Send | LoggedIn | Heartbeat | LoggedOut | ReportReceived | Noise | Unexpected


def date_time_of(when: datetime) -> tuple[int, ...]:
    """The 8 date_time fields of a datetime (weekday 0 = Sunday)."""
    return (when.year, when.month, when.day, when.isoweekday() % 7, when.hour, when.minute,
            when.second, when.microsecond // 1000)  # fmt: skip


def link_response(request: LinkRequest, now: datetime, tz: tzinfo) -> LinkResponse:
    """fep's answer to a LINK request (its PIID: the request's, without the ACD bit):
    success, with the request's time and fep's own time (in the meter's zone) as received
    and sent time. Bit 7 (the server's clock is trusted) is set when the server's clock is
    within 5 minutes of fep's."""
    local = now.astimezone(tz)
    trusted = 0
    try:
        y, mo, d, _, h, mi, s, _ = request.time
        theirs = datetime(y, mo, d, h, mi, s, tzinfo=tz)
        if abs((theirs - local).total_seconds()) <= 300:
            trusted = 0x80
    except ValueError:
        pass
    stamp = date_time_of(local)
    return LinkResponse(request.piid_acd & 0xBF, trusted, request.time, stamp, stamp)


def link_answer(frame: Frame, request: LinkRequest, now: datetime, tz: tzinfo,
                preamble: int = 0) -> bytes:  # fmt: skip
    """The frame answering a LINK request that came in ``frame``."""
    answer = link_response(request, now, tz)
    reply = Frame(control(Function.LINK, client_started=False), frame.server, frame.client,
                  encode_apdu(answer))
    return reply.encode(preamble=preamble)


def report_received(frame: Frame, report: ReportNotification, *, meter: str, tz: tzinfo,
                    received: datetime, preamble: int = 0) -> ReportReceived:  # fmt: skip
    """A report's records and the acknowledgement of every OAD it carried."""
    records: list[Record] = []
    skipped: list[tuple[str, str]] = []
    for result in report.results:
        try:
            records += readings(result, meter=meter, tz=tz, received=received)
        except NoMapping as e:
            skipped.append((str(result.oad), str(e)))
    for record in report.records:
        try:
            got, bad = record_records(record, meter=meter, tz=tz, received=received)
        except NoMapping as e:
            skipped.append((str(record.oad), str(e)))
            continue
        records += got
        skipped += bad
    oads = tuple(r.oad for r in report.results) or tuple(r.oad for r in report.records)
    answer = ReportResponse(report.piid_acd & 0xBF, oads, report.kind)
    reply = Frame(control(client_started=False), frame.server, frame.client,
                  encode_apdu(answer))
    return ReportReceived(meter, tuple(records), tuple(skipped), reply.encode(preamble),
                          frame.data)


class LinkDecoder(FrameDecoder):
    """A FrameDecoder that tells FE wake-up bytes apart from other bytes it skips
    (``garbage``: the line noise, bad input to count)."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        super().__init__(max_frame)
        self.wakeup_bytes = 0

    @property
    def garbage(self) -> int:
        return self.skipped - self.wakeup_bytes

    def _skip_garbage(self) -> None:
        at = self._buffer.find(START)
        self.wakeup_bytes += self._buffer[: len(self._buffer) if at < 0 else at].count(PREAMBLE)
        super()._skip_garbage()


class TerminalLink:
    """The traffic a terminal starts on its connection. ``meters`` maps a terminal's
    server address to fep's meter id (default: the address itself); ``now`` is fep's
    clock (UTC)."""

    def __init__(self, *, tz: tzinfo, now: Callable[[], datetime] = utcnow,
                 meters: Callable[[str], str | None] | None = None,
                 max_frame: int = 8192) -> None:  # fmt: skip
        self.tz = tz
        self.now = now
        self.meters = meters
        self.decoder = LinkDecoder(min(max_frame, MAX_FRAME))
        self.address: ServerAddress | None = None
        self.logins = 0
        self.heartbeats = 0
        self.reports = 0
        self.noise = 0

    def _meter(self, address: str) -> str:
        named = self.meters(address) if self.meters is not None else None
        return named or address

    def receive(self, data: bytes) -> list[Action]:
        actions: list[Action] = []
        for item in self.decoder.decode_all(data):
            if isinstance(item, FrameError):
                self.noise += 1
                actions.append(Noise(item.message))
            else:
                actions += self._on_frame(item)
        return actions

    def _on_frame(self, frame: Frame) -> list[Action]:
        if not frame.from_server or frame.client_started or frame.split:
            return [Unexpected(frame)]
        try:
            apdu = decode_apdu(frame.data)
        except FrameError as e:
            self.noise += 1
            return [Noise(f"APDU not understood: {e.message}")]
        address = frame.server.address
        if isinstance(apdu, LinkRequest) and frame.function == Function.LINK:
            send = Send(link_answer(frame, apdu, self.now(), self.tz))
            if apdu.type is LinkType.LOGIN:
                self.logins += 1
                first = self.address is None
                self.address = frame.server
                return [send, LoggedIn(address, apdu.heartbeat)] if first else [send]
            if apdu.type is LinkType.HEARTBEAT:
                self.heartbeats += 1
                return [send, Heartbeat(address)]
            return [send, LoggedOut(address)]
        if isinstance(apdu, ReportNotification):
            self.reports += 1
            return [report_received(frame, apdu, meter=self._meter(address), tz=self.tz,
                                    received=self.now())]  # fmt: skip
        return [Unexpected(frame)]


__all__ = [
    "Action",
    "Heartbeat",
    "LinkDecoder",
    "LoggedIn",
    "LoggedOut",
    "Noise",
    "ReportReceived",
    "Send",
    "TerminalLink",
    "Unexpected",
    "date_time_of",
    "link_answer",
    "link_response",
    "report_received",
]
