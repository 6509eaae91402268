"""The plug points of fep: channels, meter protocols, stores, record sinks, notifiers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from fep.model import IntervalBlock, Meter, MeterEvent, Reading, Record


class IRecordSink(Interface):
    """Takes records from meter sessions; the router is the one every session uses."""

    def submit(records: Sequence[Record]) -> Deferred[None]:
        """Accept records. The Deferred fires once they are durable (spooled): only then may
        the meter side be acknowledged or the job be counted as done."""


class IStore(Interface):
    """Where records end up, queryable: SQLite or PostgreSQL.

    Every method returns a Deferred and never blocks the reactor thread. Writes are
    idempotent: a reading is unique by (meter, obis, time), an interval by (meter, obis,
    start), an event by (meter, code, time); writing one again changes nothing.
    """

    url = Attribute("The store's URL with any password removed (for logs).")

    def open() -> Deferred[None]:
        """Connect and apply pending schema migrations."""

    def close() -> Deferred[None]:
        """Release connections and threads."""

    def upgrade() -> Deferred[list[str]]:
        """Apply pending migrations; fires with the names of those applied."""

    def write(records: Sequence[Record]) -> Deferred[int]:
        """Commit records in one transaction; fires with how many rows were new."""

    def add_meters(meters: Sequence[Meter]) -> Deferred[int]:
        """Insert or update meters by id; fires with how many were given."""

    def meters() -> Deferred[list[Meter]]:
        """Every meter, ordered by id."""

    def meter(meter_id: str) -> Deferred[Meter | None]:
        """One meter by id, or None."""

    def readings(
        meter_id: str,
        since: datetime | None = None,
        obis: str | None = None,
        limit: int | None = None,
    ) -> Deferred[list[Reading]]:
        """A meter's readings ordered by time then OBIS."""

    def intervals(
        meter_id: str, obis: str | None = None, since: datetime | None = None
    ) -> Deferred[list[IntervalBlock]]:
        """A meter's stored intervals, consecutive ones joined into blocks, by OBIS then
        start."""

    def events(meter_id: str, since: datetime | None = None) -> Deferred[list[MeterEvent]]:
        """A meter's events ordered by time."""

    def count(table: str) -> Deferred[int]:
        """How many rows a table holds (``readings``, ``intervals``, ``events``, ``meters``)."""


class IMeterProtocol(Interface):
    """A meter protocol's entry point for the collection side: given a connected byte pipe's
    endpoint and a meter, run one session and return its records."""

    name = Attribute("The protocol's name in routes, config and the command line.")

    def read(
        reactor: object,
        endpoint: object,
        meter: Meter,
        timeout: float,
    ) -> Deferred[list[Record]]:
        """Connect through ``endpoint`` (an IStreamClientEndpoint), read the meter, close.
        Fails with ProtocolError/ChannelError/FrameError naming the meter and route."""


class IPushHandler(Interface):
    """Decodes what meters push on one connection and hands the records to a sink. Fed with
    the connection's bytes; bad input is counted and logged, never raised."""

    frames = Attribute("How many complete pushes (messages) it has taken so far.")

    def data_received(data: bytes) -> None:
        """Bytes that arrived from the meter side."""

    def pending() -> int:
        """How many bytes of a push not yet complete it holds (0: between pushes)."""

    def take_buffered() -> bytes:
        """The bytes of a push not yet complete, handed over (and forgotten here) when a
        pull session takes the connection: that session's own decoder goes on with them."""


class IPushProtocol(Interface):
    """A meter protocol whose meters push: gives the push decoder of one connection."""

    def push_handler(
        meter: Meter,
        sink: IRecordSink,
        *,
        directory: object,
        counters: object,
        source: str,
        close: Callable[[], None],
    ) -> IPushHandler:
        """The decoder for pushes of ``meter`` (the connection's meter, the fallback when a
        push does not name its sender); ``directory`` finds other senders (a
        MeterDirectory), ``counters`` is the replay guard of ciphered pushes, ``source``
        names the connection in records and logs, ``close()`` drops the connection."""


class IPushChannel(Interface):
    """A byte pipe that also carries its meter's unsolicited pushes (a GPRS modem session
    lent to a pull job). A meter session that tells a push from an answer (protocol
    knowledge) hands the push's records here, to be stored like any other push."""

    def pushed(records: Sequence[Record]) -> Deferred[None]:
        """Store the records of a push that arrived during the session."""


class ISerialLine(Interface):
    """Line control of a serial byte pipe, where the protocol needs it (IEC 62056-21 mode C
    switches baud after the identification message)."""

    def set_baudrate(baudrate: int) -> None:
        """Change the line speed once written bytes have left."""


class INotifier(Interface):
    """Sends an alarm to people or systems (e-mail, SMS, NOTIFY, a bus)."""

    def notify(event: object) -> Deferred[None]:
        """Deliver one alarm."""


class IModemCallLog(Interface):
    """Where the modem pool keeps its call records (the SQLite and PostgreSQL stores)."""

    def add_modem_calls(calls: Sequence[object]) -> Deferred[int]:
        """Append ModemCall records (one per dial attempt); fires with how many."""

    def modem_call_stats(by: str, since: datetime | None = None) -> Deferred[list[object]]:
        """CallStats per ``line`` or per ``site`` over the calls started since ``since``."""
