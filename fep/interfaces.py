"""The plug points of fep: channels, meter protocols, stores, record sinks, notifiers."""

from __future__ import annotations

from collections.abc import Sequence
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
