"""The plug points of fep: channels, meter protocols, stores, record sinks, notifiers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IReactorTime

    from fep.model import IntervalBlock, Meter, MeterEvent, PointRead, PointsRead, Reading, Record
    from fep.vault import MasterKey, SecretInfo


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
        reactor: IReactorTime,
        endpoint: object,
        meter: Meter,
        timeout: float,
    ) -> Deferred[list[Record]]:
        """Connect through ``endpoint`` (an IStreamClientEndpoint), read the meter, close.
        Fails with ProtocolError/ChannelError/FrameError naming the meter and route."""


class IProfileReader(Interface):
    """Optional capability of a meter protocol: read the load profile over a time range (DLMS
    range selective access, DL/T 645 load records since a time, ...)."""

    def read_profile(
        reactor: IReactorTime,
        endpoint: object,
        meter: Meter,
        since: datetime,
        until: datetime,
        timeout: float,
    ) -> Deferred[list[Record]]:
        """IntervalBlocks holding at least every interval whose start lies in
        ``[since, until)`` that the meter still has (it may send more)."""


class IHistoryReader(Interface):
    """Optional capability: the meter keeps a history buffer its read catches up from where
    the store ends (a pulse recorder's period records). The collection engine passes
    ``since``: the end of the last interval stored for the meter's ``history_channel``."""

    def history_channel(meter: Meter) -> str | None:
        """The OBIS code (text) of the interval series whose last stored end the next read
        starts from; None when the meter keeps no history (read without ``since``).
        ConfigError when the meter's settings are wrong."""

    def read(
        reactor: IReactorTime,
        endpoint: object,
        meter: Meter,
        timeout: float,
        since: datetime | None = None,
    ) -> Deferred[list[Record]]:
        """IMeterProtocol.read; with ``since`` every interval after it the meter still
        holds, once, and nothing before it."""


class IEventReader(Interface):
    """Optional capability: read the meter's event log."""

    def read_events(
        reactor: IReactorTime, endpoint: object, meter: Meter, since: datetime | None,
        timeout: float,
    ) -> Deferred[list[Record]]:
        """MeterEvents from the meter's logs (those at or after ``since`` when given)."""


class IClock(Interface):
    """Optional capability: read and set the meter's clock."""

    def read_clock(
        reactor: IReactorTime, endpoint: object, meter: Meter, timeout: float
    ) -> Deferred[datetime]:
        """The meter's clock as UTC, read in one session (NotSupported when the device has
        no clock to read)."""

    def set_clock(
        reactor: IReactorTime, endpoint: object, meter: Meter, timeout: float
    ) -> Deferred[Any]:
        """Set the meter's clock to the server's time at the moment it is sent (the
        reactor's clock), by a clock write or the protocol's broadcast time sync; fires
        when done (with what the protocol reports, if anything)."""


class ICommands(Interface):
    """Optional capability: commands a head end sends a meter (demand reset, remote
    disconnect/reconnect, firmware upgrade, push setup)."""

    commands = Attribute("The command names this protocol can run (a collection of str).")

    def run_command(
        reactor: IReactorTime,
        endpoint: object,
        meter: Meter,
        command: str,
        params: Mapping[str, Any],
        timeout: float,
        progress: Callable[[Mapping[str, Any]], None],
    ) -> Deferred[Mapping[str, Any]]:
        """Run one command in one session; fires with what it did (JSON-able values).
        ``progress`` is told what is done so far (e.g. the image blocks the meter has
        confirmed) so that a later attempt can resume. Fails with ProtocolError/
        ChannelError naming the meter and route."""


class IConcentratorPipe(Interface):
    """The transport of a meter session run through a data concentrator (a ``gw3761:``
    forwarding route, fep.channels.forwarding): besides carrying the meter's bytes, it asks
    the concentrator itself to act on a measuring point (Q/GDW 1376.1 AFN 05)."""

    def concentrator_control(point: int, trip: bool) -> Deferred[Mapping[str, Any]]:
        """Remote control of ``point`` by the concentrator: trip (AFN 05 F1) or allow
        closing (F2). Fires with what was sent once the concentrator confirms; fails with
        ChannelError naming the concentrator when it denies."""


class IWakeUp(Interface):
    """Wakes a GPRS meter whose modem is not connected (a wake-up SMS, a ring) and waits for
    it to dial in. The collection engine asks before a job for a ``gprs:`` route; the SMS
    channel provides it."""

    def is_connected(route: str) -> bool:
        """Whether the modem behind ``route`` has a session with this node now."""

    def wake_up(meter: Meter, timeout: float) -> Deferred[None]:
        """Ask the modem to connect; fires once it has, fails with ChannelError when it does
        not within ``timeout`` seconds."""


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
        reply: Callable[[bytes], None] | None = None,
    ) -> IPushHandler:
        """The decoder for pushes of ``meter`` (the connection's meter, the fallback when a
        push does not name its sender); ``directory`` finds other senders (a
        MeterDirectory), ``counters`` is the replay guard of ciphered pushes, ``source``
        names the connection in records and logs, ``close()`` drops the connection,
        ``reply(bytes)`` writes to the sender (a concentrator's login or report is confirmed
        on its own connection; None where the connection cannot answer)."""


class IPushChannel(Interface):
    """A byte pipe that also carries its meter's unsolicited pushes (a GPRS modem session
    lent to a pull job). A meter session that tells a push from an answer (protocol
    knowledge) hands the push's records here, to be stored like any other push."""

    def pushed(records: Sequence[Record]) -> Deferred[None]:
        """Store the records of a push that arrived during the session."""

    def unconsumed(data: bytes) -> None:
        """Bytes the meter session received but did not use when it ended (the start of a
        push after the meter's last answer): the channel's push decoder takes them, before
        whatever comes next."""


class IModemSessionObserver(Interface):
    """Told by the GPRS channel of its modems' sessions (the collection engine: where a
    modem is connected, jobs for a newly registered meter, modems woken up)."""

    def modem_attached(meters: Sequence[Meter]) -> None:
        """A modem's session attached to ``meters`` (their routes are connected now)."""

    def modem_gone(meters: Sequence[Meter]) -> None:
        """The attached session of ``meters``' modem ended (or gave way to a newer one)."""

    def meter_registered(meter: Meter) -> None:
        """An unknown modem's meter was registered (stored and added to the directory)."""


class ISerialLine(Interface):
    """Line control of a serial byte pipe, where the protocol needs it (IEC 62056-21 mode C
    switches baud after the identification message)."""

    def set_baudrate(baudrate: int) -> None:
        """Change the line speed once written bytes have left."""


class IIdentifiedTransport(Interface):
    """A transport that wants to hear when its protocol has recognised the peer (a limited
    listener's, fep.channels.listeners; the protocols that identify peers tell it)."""

    def peer_identified() -> None:
        """The protocol knows who is talking now: the pre-identification byte cap no longer
        applies (the idle timeout still does)."""


def peer_identified(transport: object) -> None:
    """Tell ``transport`` (if it is a limited listener's) that its peer is identified."""
    mark = getattr(transport, "peer_identified", None)
    if callable(mark):
        mark()


class INotifier(Interface):
    """Sends an alarm to people or systems (e-mail, SMS, NOTIFY, a bus)."""

    def notify(event: object) -> Deferred[None]:
        """Deliver one alarm."""


class IMeterDirectory(Interface):
    """The daemon's in-memory meter list (fep.directory.MeterDirectory): who the known
    meters are, looked up on the reactor thread by id, serial number, DLMS system title or
    the modem they sit behind; refreshed from the store, with their secrets in memory."""

    def replace(meters: Iterable[Meter]) -> None:
        """Take this meter list instead of the one held."""

    def add(meter: Meter) -> None:
        """Take one new or changed meter without reloading the list."""

    def refresh() -> Awaitable[list[Meter]]:
        """Reload the list from the store (with the secret store's values); returns it."""

    def refresh_d() -> Deferred[list[Meter]]:
        """``refresh`` as a Deferred."""

    def resolve(meter: Meter) -> Awaitable[Meter]:
        """The meter with its secrets as the secret store holds them now."""

    def __len__() -> int:
        """How many meters are known."""

    def all() -> list[Meter]:
        """Every known meter, in list order."""

    def get(meter_id: str) -> Meter | None:
        """The meter of this id, if known."""

    def identify(*names: str | None) -> Meter | None:
        """The meter a device names itself as: by meter id, then serial number."""

    def by_system_title(system_title: bytes) -> Meter | None:
        """The DLMS meter whose record gives this system title."""

    def by_modem(*names: str) -> list[Meter]:
        """The meters behind the modem that calls itself any of ``names``."""


class IMeterReader(Interface):
    """Reads a known meter now for an operator's door (the API, the console, `fep read
    --meter` through the daemon's control socket) through the collection engine: the same
    job runner, channels, line locks, modem pool, GPRS sessions and wake-up as the
    scheduler's jobs (fep.collect.readnow)."""

    def read_now(meter: Any, *, who: str, options: Mapping[str, object] | None = None
                 ) -> Deferred[list[Any]]:
        """Read ``meter`` (a fep.model.Meter of the meter list) now with the per-read
        ``options`` (meter metadata keys, already checked by the door); fires with its records
        once they went to the router, or fails with an error naming meter, route and
        protocol."""


class IScheduler(Interface):
    """The collection engine's tasks and jobs as the operator tier (API, console, metrics)
    sees them (fep.collect.operator.EngineScheduler)."""

    def tasks() -> Deferred[list[dict[str, Any]]]:
        """Every task: name, type, period, next run, last outcome."""

    def jobs(limit: int) -> Deferred[list[dict[str, Any]]]:
        """The newest jobs, newest first: task, meter, state, outcome, times."""

    def run(task: str) -> Deferred[dict[str, Any]]:
        """Start a task now; fires with what was queued. KeyError for an unknown task."""

    def job_outcomes() -> dict[str, int]:
        """Jobs finished so far by outcome (for metrics)."""

    def commands(limit: int) -> Deferred[list[dict[str, Any]]]:
        """The newest meter commands (disconnect, reconnect, ...), newest first, with their
        status, requester and approver."""

    def request_command(
        meter: str, action: str, params: dict[str, Any], who: str
    ) -> Deferred[dict[str, Any]]:
        """Ask for a meter command; it is queued at once unless the configured approval
        rules say someone else must approve it first. Fails with a FepError naming what is
        wrong (unknown command or meter)."""

    def approve_command(command_id: int, who: str) -> Deferred[dict[str, Any]]:
        """Approve a requested command (four eyes: not by its requester) and queue it."""

    def reject_command(command_id: int, who: str, reason: str) -> Deferred[dict[str, Any]]:
        """Refuse a requested command."""


class IPlans(Interface):
    """Control plans as the operator tier (API, console, status page) sees them
    (fep.collect.plans.EnginePlans). Plans are dicts (fep.collect.plans.plan_dict); a
    refused step fails with a FepError naming the plan and why; an unknown plan with
    KeyError."""

    def plans(limit: int, status: str | None = None) -> Deferred[list[dict[str, Any]]]:
        """The newest plans (of one status), newest first, with their outcome counts."""

    def plan(plan_id: int) -> Deferred[dict[str, Any]]:
        """One plan with each meter's outcome and its audit trail."""

    def create(spec: dict[str, Any], who: str) -> Deferred[dict[str, Any]]:
        """A draft plan from ``spec`` (action, target or meters, params, rate, ...)."""

    def step(plan_id: int, step: str, who: str, reason: str = "") -> Deferred[dict[str, Any]]:
        """submit, approve, reject, start, pause or cancel a plan as ``who``."""

    def active() -> Deferred[list[dict[str, Any]]]:
        """The plans the status page shows: running, paused or waiting first, then the
        newest."""


class IJobStore(Interface):
    """The collection engine's tables: tasks, jobs and their leases, commands and their
    audit trail, daily statistics, inbound session homes (fep.collect.jobstore).

    Times are POSIX seconds given by the caller (the engine's reactor clock), never the
    database's own clock, so every node and every test agrees on them. Every method returns
    a Deferred and runs in one transaction, except ``start`` and ``finish``: their changes
    are committed in batches, many to a transaction (``flush``).
    """

    dialect = Attribute("sqlite or postgresql")

    # -- tasks ----------------------------------------------------------------------------

    def save_task(task: Any, now: float) -> Deferred[None]:
        """Insert or replace a task (its ``next_due`` as given)."""

    def tasks() -> Deferred[list[Any]]:
        """Every task, by name."""

    def task(name: str) -> Deferred[Any]:
        """One task, or None."""

    def set_task_enabled(name: str, enabled: bool, now: float) -> Deferred[bool]:
        """Enable or disable a task; False when there is no such task."""

    def delete_task(name: str) -> Deferred[bool]:
        """Remove a task (its jobs stay, for the record)."""

    def claim_run(name: str, due: float, next_due: float | None, now: float) -> Deferred[bool]:
        """Move a task's ``next_due`` from ``due`` to ``next_due``; True for the one caller
        (of every node) that did, who then expands the run into jobs."""

    # -- jobs -----------------------------------------------------------------------------

    def add_jobs(jobs: Sequence[Any], now: float) -> Deferred[int]:
        """Insert jobs (a task run's job for a meter only once); older pending runs of the
        same task for the same meter are recorded as missed (superseded). Fires with how
        many were new."""

    def add_job(job: Any) -> Deferred[int]:
        """Insert one job (an on-demand read or command) and fire with its id."""

    def lease(
        node: str,
        now: float,
        until: float,
        limit: int,
        in_use: Mapping[str, int],
        capacities: Mapping[str, int],
    ) -> Deferred[list[Any]]:
        """Lease up to ``limit`` runnable jobs for ``node`` until ``until``: pending ones
        whose time has come and ones whose lease expired, by priority then time, at most
        ``capacities.get(resource, 1) - in_use.get(resource, 0)`` per resource, none whose
        resource another node is using or whose inbound session lives on another node."""

    def renew(node: str, ids: Sequence[int], until: float) -> Deferred[int]:
        """Extend the leases ``node`` still holds."""

    def start(job_id: int, node: str, now: float, until: float) -> Deferred[Any]:
        """Mark an attempt started (attempts + 1); the job, or None if the lease is lost.
        A store writing behind (the engine's) answers at once for a job it leased (not a
        command's), from the lease, and finds a lost lease when the batch commits."""

    def finish(
        job: Any, node: str, status: str, outcome: Any, now: float, run_at: float | None
    ) -> Deferred[bool]:
        """Record an attempt's outcome: a final status (done, failed, missed; counted in the
        statistics) or pending again with ``run_at`` for a retry. False if the lease was
        lost (another node took the job). A store writing behind answers True at once for
        a job it started (not for a command's or a read-now's job: their answer waits for
        the commit)."""

    def release(node: str, ids: Sequence[int]) -> Deferred[int]:
        """Give back leased jobs that were not started (shutdown)."""

    def expire(now: float) -> Deferred[list[Any]]:
        """Record pending jobs whose deadline passed as missed; fires with them."""

    def flush() -> Deferred[None]:
        """Commit the job starts and finishes queued so far (they are recorded in batches,
        one transaction per batch); fires once they are."""

    def settle() -> Deferred[None]:
        """Like ``flush`` but with one try, forgetting what could not be committed: what
        the engine calls as it stops (those jobs' leases expire and they run again)."""

    def jobs(
        meter: str | None = None,
        task: str | None = None,
        status: str | None = None,
        limit: int | None = 100,
    ) -> Deferred[list[Any]]:
        """Jobs, newest first."""

    def job(job_id: int) -> Deferred[Any]:
        """One job, or None."""

    def set_home(resource: str, node: str | None, now: float) -> Deferred[None]:
        """Say an inbound session for ``resource`` is connected to ``node`` (None: gone)."""

    def home(resource: str) -> Deferred[str | None]:
        """The node an inbound session for ``resource`` is connected to, or None."""

    # -- statistics -----------------------------------------------------------------------

    def stats(since_day: str, scope: str | None = None) -> Deferred[list[Any]]:
        """Daily statistics rows from ``since_day`` (YYYY-MM-DD) on."""

    def run_stats(task: str | None = None, limit: int = 20) -> Deferred[list[Any]]:
        """Per task run (task, due): how its jobs ended, newest first."""

    def open_jobs(task: str, since: float, until: float) -> Deferred[int]:
        """How many jobs of ``task`` due in ``[since, until)`` are still pending, leased or
        running (committed ones: ``flush`` first for this node's latest)."""

    # -- commands -------------------------------------------------------------------------

    def add_command(command: Any, job: Any) -> Deferred[Any]:
        """Store a new command (and its job when it needs no approval); audit 'requested'."""

    def command(command_id: int) -> Deferred[Any]:
        """One command, or None."""

    def commands(
        meter: str | None = None, status: str | None = None, limit: int = 100
    ) -> Deferred[list[Any]]:
        """Commands, newest first."""

    def transition(
        command_id: int,
        expected: Sequence[str],
        status: str,
        who: str,
        action: str,
        detail: str,
        now: float,
        job: Any = None,
        fields: Mapping[str, Any] | None = None,
        of_job: int | None = None,
    ) -> Deferred[Any]:
        """Move a command from one of ``expected`` statuses to ``status``, with an audit
        line, the job that will run it (inserted here) and other ``fields`` (approved_by,
        outcome, progress, finished_at). Fires with the command, or None when it was not in
        an expected status (or, with ``of_job``, when another job carries it now: a job's
        end settles only the command it still carries)."""

    def command_progress(command_id: int, progress: Mapping[str, Any]) -> Deferred[None]:
        """Keep what a command has done so far (for a resumed attempt)."""

    def audit(command_id: int) -> Deferred[list[Any]]:
        """A command's audit trail, oldest first."""
class ICollectionListener(Interface):
    """Told by the collection engine what its jobs collected, as they end (the analysis
    service listens: re-analysis after re-collection, the day's run after the day's
    collection; fep/service.py wires it). Called on the reactor thread: a listener returns
    at once, keeps what it starts to itself and never raises."""

    def collected(kind: str, days: Mapping[str, Sequence[date]]) -> None:
        """A job of ``kind`` (``load-profile``, ``events``) submitted intervals or events
        the store did not hold: per meter, the UTC days they fall on."""

    def job_ended(task: str | None, kind: str, due: float, status: str) -> None:
        """A job of the run of ``task`` due at ``due`` reached a final status (done,
        failed, missed) on this node."""


class IModemCallLog(Interface):
    """Where the modem pool keeps its call records (fep.channels.modem.calls.ModemCallLog on
    the SQLite or PostgreSQL store)."""

    def add_modem_calls(calls: Sequence[object]) -> Deferred[int]:
        """Append ModemCall records (one per dial attempt); fires with how many."""

    def modem_call_stats(by: str, since: datetime | None = None) -> Deferred[list[object]]:
        """CallStats per ``line`` or per ``site`` over the calls started since ``since``."""


class ISecretStore(Interface):
    """Secrets at rest (fep.store.secrets): meter keys and passwords, and the
    configuration's ``secret:NAME`` values, sealed under the master key. Values come out
    only in memory, for a session or a config value; listings show fingerprints."""

    master_key_id: str = Attribute("the id of the master key this store seals under")

    def put(meter: str, name: str, value: str) -> Deferred[SecretInfo]:
        """Seal and keep ``value`` as ``name`` of ``meter`` (replacing any); fires with its
        SecretInfo (id, meter, name, key id, fingerprint, created)."""

    def values(meter: str | None = None) -> Deferred[dict[str, dict[str, str]]]:
        """The clear values, by meter then name (of one meter, or of all)."""

    def infos(meter: str | None = None) -> Deferred[list[SecretInfo]]:
        """SecretInfo of every secret (of one meter), never a value."""

    def delete(meter: str, name: str) -> Deferred[bool]:
        """Forget one secret; fires with whether it existed."""

    def rotate_master(new: MasterKey) -> Deferred[int]:
        """Re-wrap every data key under a new MasterKey (one transaction); fires with the
        count. The store seals under the new key afterwards."""


class IConcentratorReader(Interface):
    """Optional capability of a concentrator's protocol: read the meters behind it by their
    measuring points, several points per request, over one session; their records filed
    under each meter's own id (``source``: the concentrator). The collection engine's
    concentrator jobs use it (fep.collect.runner)."""

    def curve_channels(concentrator: Meter) -> tuple[str, ...]:
        """The OBIS codes (text) of the interval series a read of ``ranges`` stores for
        each meter behind ``concentrator`` (what the engine's gap logic looks at)."""

    def daily_times(concentrator: Meter, since: datetime, until: datetime) -> list[datetime]:
        """The UTC times the daily frozen values of the days in ``[since, until)`` are filed
        at (the concentrator's days are in its own zone)."""

    def read_points(
        reactor: IReactorTime,
        endpoint: object,
        concentrator: Meter,
        reads: Sequence[PointRead],
        timeout: float,
    ) -> Deferred[PointsRead]:
        """Connect through ``endpoint`` once and read what ``reads`` ask. Fires with a
        PointsRead even when the session fails midway (its ``error`` set, the records read
        until then kept, the points not reached ``unanswered``); fails only for settings
        that cannot work (ConfigError naming the key)."""
