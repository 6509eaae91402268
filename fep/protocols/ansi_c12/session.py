"""The Twisted side of ANSI C12.18 and C12.21: ``C1218Protocol`` reads a meter over any
client endpoint (TCP to an optical-probe server or a modem bridge, a serial line) for
``fep read`` and scheduled jobs; ``C1221Protocol`` does the same for a C12.21 meter.

The session's state lives in ``client.py``; this module puts it in the session driver's
shape (``C12Steps``: how long the step timer waits for an ACK or an answer; the driver,
fep/protocols/session.py, moves the bytes and times a negotiated baud switch on serial
lines) and hands the records back. Settings come from the meter's metadata
(``fep read -o KEY=VALUE``):

``c12_password``   text, or ``hex:00112233...`` for a binary password (kept out of logs)
``c12_password_pad`` ``nul`` (default) or ``space``: how a short password is padded
``c12_user``, ``c12_user_id``   logon user name (10 bytes at most) and id
``c12_packet_size``, ``c12_max_packets``, ``c12_baud``   what to negotiate
``c12_retries``    resends of a packet not ACKed (default 3)
``c12_ack_timeout`` seconds to wait for an ACK before resending (default 2, at most the
                   read's timeout, which bounds the wait for each answer)
``c12_profile``, ``c12_events``  ``no`` leaves out the load profile (ST61-64) or the
                   history and event logs (ST71/74/76); read when ST0 lists them
``tz``             the meter's zone for local clocks (default: ST53's offset when the
                   meter has it, else UTC)
``c12_snapshots``  ``no`` leaves out the snapshots (ST24 previous season, ST25 previous
                   demand reset, ST26 self-reads); read when ST0 lists them
``c12_relay_procedure`` the manufacturer procedure that works the supply relay
                   (``MP2`` or ``2``: fep's simulator's; see docs/protocols/ansi-c12.md);
                   without it ``disconnect``/``reconnect``/``relay-state`` are refused
The meter's ``address`` (0..255), when given, is the C12.18 identity byte.

``C1221Protocol`` (``ansi-c12.21``, a meter on a telephone line: the dial-up channel hands
it an ordinary byte pipe) adds:
``c12_auth_key``   the DES key, 8 bytes in hex, for the authenticate service when the
                   meter's identify answer asks for it (kept out of logs)
``c12_auth_key_id`` the key's id (0..255, default 0)
``c12_timing_setup`` ``no`` sends no timing setup (C12.21's defaults stay)
``c12_traffic_timeout``, ``c12_intercharacter_timeout``, ``c12_response_timeout``
                   the timing to ask for, whole seconds (30, 1, 4); the ACK wait is the
                   response timeout the meter agrees to
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from fep.errors import ConfigError, NotSupported
from fep.interfaces import IClock, ICommands, IMeterProtocol
from fep.model import Meter, Record, utcnow
from fep.protocols import actions as actions_
from fep.protocols.ansi_c12.c1221 import DEFAULT_TIMING, DES_BLOCK, Timing
from fep.protocols.ansi_c12.client import (
    C12_COMMANDS,
    Action,
    C1218Client,
    C1221Client,
    ClientSettings,
    ClockJob,
    ClockResult,
    CommandJob,
    CommandResult,
    Failed,
    Finished,
    MeterData,
    Retransmitted,
    Send,
    SetTiming,
    SwitchBaud,
    TableDump,
    parse_password,
)
from fep.protocols.ansi_c12.tables import table_label, table_row
from fep.protocols.session import MeterSession, run_session

log = Logger(namespace="fep.protocols.ansi_c12")

NAME = "ansi-c12.18"
DEFAULT_ACK_TIMEOUT = 2.0
def settings_for(meter: Meter, tz: tzinfo = UTC) -> ClientSettings:
    """ClientSettings from a meter's metadata; ConfigError names the key that is wrong."""
    md = meter.metadata

    def number(key: str, default: int) -> int:
        text = md.get(key, "").strip()
        if not text:
            return default
        try:
            return int(text, 0)
        except ValueError:
            raise ConfigError(f"meter {meter.id}: {key} must be a number", key=key) from None

    password = None
    if md.get("c12_password"):
        try:
            password = parse_password(md["c12_password"])
        except ValueError as e:
            # The message says what is wrong, never the password itself.
            raise ConfigError(f"meter {meter.id}: {e}", key="c12_password") from None
    pad_name = md.get("c12_password_pad", "nul").strip().lower()
    if pad_name not in ("nul", "space"):
        raise ConfigError(
            f"meter {meter.id}: c12_password_pad is nul or space", key="c12_password_pad"
        )
    zone = tz
    if md.get("tz"):
        try:
            zone = ZoneInfo(md["tz"])
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"meter {meter.id}: unknown time zone {md['tz']!r}", key="tz"
            ) from None
    identity = 0
    if meter.address:
        try:
            identity = int(meter.address, 0)
        except ValueError:
            identity = -1
        if not 0 <= identity <= 255:
            raise ConfigError(
                f"meter {meter.id}: a C12.18 address is an identity byte 0..255, "
                f"not {meter.address!r}",
                key="address",
            )

    def flag(key: str) -> bool:
        text = md.get(key, "yes").strip().lower()
        if text not in ("yes", "no", "true", "false", "1", "0", "on", "off"):
            raise ConfigError(f"meter {meter.id}: {key} is yes or no", key=key)
        return text in ("yes", "true", "1", "on")

    user = md.get("c12_user", "fep").encode("latin-1")
    baud = number("c12_baud", 0) or None
    try:
        return ClientSettings(
            meter=meter.id,
            route=meter.route,
            identity=identity,
            user_id=number("c12_user_id", 0),
            user=user,
            password=password,
            password_pad=0x20 if pad_name == "space" else 0x00,
            packet_size=number("c12_packet_size", 256),
            max_packets=number("c12_max_packets", 4),
            baud=baud,
            retries=number("c12_retries", 3),
            tz=zone,
            profile=flag("c12_profile"),
            events=flag("c12_events"),
            snapshots=flag("c12_snapshots"),
            tz_given=bool(md.get("tz")),
        )
    except ValueError as e:
        raise ConfigError(f"meter {meter.id}: {e}") from None


def table_rows(meter: str, dump: TableDump, tz: tzinfo = UTC) -> list[dict[str, object]]:
    """One row per table asked for, in the order asked: decoded, hex, or the meter's
    refusal under ``error``."""
    errors = dict(dump.errors)
    rows: list[dict[str, object]] = []
    for table in dump.requested:
        if table in dump.tables:
            rows.append(table_row(meter, table, dump.tables, tz))
        else:
            rows.append(
                {
                    "meter": meter,
                    "table": table,
                    "label": table_label(table),
                    "error": errors.get(table, "not read"),
                }
            )
    return rows


class C12Steps:
    """A C1218Client (or C1221Client) in the session driver's shape: the step timer waits
    ``ack_timeout`` for an ACK, the read's timeout for an answer; a C12.21 timing setup
    answer sets the ACK wait."""

    def __init__(self, client: C1218Client, timeout: float, ack_timeout: float) -> None:
        self.client = client
        self.answer_timeout = timeout
        self.ack_timeout = min(ack_timeout, timeout)

    @property
    def waiting_for(self) -> str | None:
        return self.client.waiting_for

    def start(self) -> list[object]:
        return self._steps(self.client.start())

    def receive(self, data: bytes) -> list[object]:
        return self._steps(self.client.receive(data))

    def timeout(self) -> list[object]:
        return self._steps(self.client.timeout())

    def _steps(self, actions: list[Action]) -> list[object]:
        steps: list[object] = []
        for action in actions:
            if isinstance(action, Send):
                steps.append(actions_.Send(action.data))
            elif isinstance(action, SwitchBaud):
                steps.append(actions_.SwitchBaud(action.baudrate))
            elif isinstance(action, SetTiming):
                # C12.21: the meter's response timeout is how long to wait for an ACK.
                self.ack_timeout = min(float(action.timing.response or 1), self.answer_timeout)
                steps.append(action)
            elif isinstance(action, Finished):
                steps.append(actions_.Finish(action.data))
            elif isinstance(action, Failed):
                steps.append(actions_.Fail(action.error))
            else:
                steps.append(action)  # Retransmitted: logged by the session
        # Every step (a partial packet too) restarts the wait.
        steps.append(actions_.SetTimer(self.ack_timeout if self.client.link.awaiting_ack
                                       else None))
        return steps
class C1218Session(MeterSession):
    """One C1218Client over one connection; ``done`` fires with the records (or table rows
    for a ``--table`` session)."""

    def __init__(
        self,
        reactor: IReactorTime,
        meter: Meter,
        client: C1218Client,
        timeout: float,
        ack_timeout: float = DEFAULT_ACK_TIMEOUT,
        protocol_name: str = NAME,
    ) -> None:
        self.c12 = C12Steps(client, timeout, ack_timeout)
        super().__init__(reactor, timeout, meter=meter.id, route=meter.route,
                         protocol=protocol_name, steps=self.c12)
        self.meter = meter
        self.client = client
        self.retransmissions = 0

    @property
    def ack_timeout(self) -> float:
        return self.c12.ack_timeout

    def note(self, action: object) -> None:
        if isinstance(action, SetTiming):
            log.info(
                "{meter}: C12.21 timing: traffic {traffic} s, inter-character {inter} s, "
                "response {response} s, {retries} retries",
                meter=self.meter.id,
                route=self.meter.route,
                protocol=self.protocol_name,
                traffic=action.timing.traffic,
                inter=action.timing.inter_character,
                response=action.timing.response,
                retries=action.timing.retries,
            )
        elif isinstance(action, Retransmitted):
            self.retransmissions += 1
            log.info(
                "{meter}: C12.18 packet sent again ({why}, attempt {n})",
                meter=self.meter.id,
                route=self.meter.route,
                protocol=self.protocol_name,
                why=action.why,
                n=action.attempt,
            )

    def result(self, value: Any) -> Any:
        data: MeterData | TableDump | ClockResult | CommandResult = value
        for table, why in data.skipped:
            log.info(
                "{meter}: {table} not read: {why}",
                meter=self.meter.id,
                route=self.meter.route,
                protocol=self.protocol_name,
                table=table,
                why=why,
            )
        if isinstance(data, TableDump):
            return table_rows(self.meter.id, data, self.client.settings.tz)
        if isinstance(data, ClockResult | CommandResult):
            return data
        return data.to_records(self.meter.id, received_time=utcnow())


def relay_procedure(meter: Meter) -> int | None:
    """The manufacturer procedure number of ``c12_relay_procedure`` (``MP2`` or ``2``),
    or None; ConfigError naming the key otherwise."""
    text = meter.metadata.get("c12_relay_procedure", "").strip().upper()
    if not text:
        return None
    digits = text[2:] if text.startswith("MP") else text
    if not digits.isdigit() or int(digits) > 2047:
        raise ConfigError(
            f"meter {meter.id}: c12_relay_procedure is a manufacturer procedure MP0..MP2047",
            key="c12_relay_procedure",
        )
    return int(digits)


def command_job(meter: Meter, command: str, params: Mapping[str, Any]) -> CommandJob:
    """The CommandJob for ``command`` with the request's parameters (``self-read=yes``,
    ``season=N`` for demand-reset; ``log=event|history|all`` for event-log-clear)."""
    if command not in C12_COMMANDS:
        raise NotSupported(f"meter {meter.id}: ANSI C12 cannot run {command}",
                           meter=meter.id, protocol=meter.protocol)
    self_read = str(params.get("self-read", params.get("self_read", "no"))).strip().lower()
    if self_read not in ("yes", "no", "true", "false", "1", "0"):
        raise ConfigError(f"meter {meter.id}: self-read is yes or no", key="self-read")
    season_text = str(params.get("season", "") or "").strip()
    season = None
    if season_text:
        if not season_text.isdigit() or int(season_text) > 15:
            raise ConfigError(f"meter {meter.id}: season is 0..15", key="season")
        season = int(season_text)
    log_name = str(params.get("log", "all") or "all").strip().lower()
    if log_name not in ("all", "event", "history"):
        raise ConfigError(f"meter {meter.id}: log is event, history or all", key="log")
    return CommandJob(
        command,
        self_read=self_read in ("yes", "true", "1"),
        season=season,
        log=log_name,
        relay_procedure=relay_procedure(meter),
    )


@implementer(IMeterProtocol, IClock, ICommands)
class C1218Protocol:
    """ANSI C12.18 (PSEM) table reads: identification, status, clock and registers; the
    clock read (ST52) and set (SP 10) and commands by procedures (ST7/ST8)."""

    name = NAME
    commands = C12_COMMANDS

    def __init__(self, tz: tzinfo = UTC) -> None:
        self.tz = tz

    def settings(self, meter: Meter) -> ClientSettings:
        return settings_for(meter, self.tz)

    def client(self, settings: ClientSettings, now: Callable[[], datetime]) -> C1218Client:
        return C1218Client(settings, now=now)

    def ack_timeout(self, meter: Meter) -> float:
        return _seconds(meter, "c12_ack_timeout", DEFAULT_ACK_TIMEOUT)

    def read(
        self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float
    ) -> Deferred[list[Record]]:
        return self._run(reactor, endpoint, meter, timeout, ())

    def read_tables(
        self, reactor: IReactorTime, endpoint: Any, meter: Meter, tables: Sequence[int],
        timeout: float,
    ) -> Deferred[list[dict[str, object]]]:
        """``fep read --table``: one row per table (see ``table_rows``)."""
        if not tables:
            return fail(ConfigError("no tables to read", key="--table"))
        return self._run(reactor, endpoint, meter, timeout, tuple(tables))

    def read_clock(
        self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float
    ) -> Deferred[datetime]:
        """The meter's clock (ST52) in UTC."""
        d = self._run(reactor, endpoint, meter, timeout, (), ClockJob())
        return d.addCallback(lambda result: result.clock.time)

    def set_clock(
        self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float
    ) -> Deferred[Any]:
        """SP 10 with the reactor's time when the procedure is built (after ST0 and ST52
        are read); fires with what was done (JSON-able)."""
        d = self._run(reactor, endpoint, meter, timeout, (), ClockJob(set_clock=True))

        def done(result: ClockResult) -> dict[str, object]:
            assert result.set_to is not None
            return {"set_to": result.set_to.isoformat(),
                    "deviation_before": round(result.deviation, 3)}

        return d.addCallback(done)

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
        """One command of ``commands`` by procedures (see ``command_job``)."""
        try:
            job = command_job(meter, command, params)
        except (ConfigError, NotSupported) as e:
            return fail(e)
        d = self._run(reactor, endpoint, meter, timeout, (), job)
        return d.addCallback(lambda result: dict(result.done))

    def _run(
        self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float,
        tables: tuple[int, ...], job: ClockJob | CommandJob | None = None,
    ) -> Deferred[Any]:
        try:
            settings = attrs.evolve(self.settings(meter), tables=tables, job=job)
            ack_timeout = self.ack_timeout(meter)
        except ConfigError as e:
            return fail(e)

        def now() -> datetime:
            return datetime.fromtimestamp(reactor.seconds(), UTC)

        session = C1218Session(
            reactor, meter, self.client(settings, now), timeout, ack_timeout, self.name
        )
        result: Deferred[Any] = run_session(reactor, endpoint, session, meter.route, timeout)
        return result


NAME_C1221 = "ansi-c12.21"


def settings_for_c1221(meter: Meter, tz: tzinfo = UTC) -> ClientSettings:
    """The C12.18 settings plus C12.21's from the meter's metadata: ``c12_auth_key`` (8
    bytes in hex, the DES key; never echoed), ``c12_auth_key_id`` (0..255),
    ``c12_timing_setup`` (yes/no, default yes) and the timing to ask for:
    ``c12_traffic_timeout`` (30), ``c12_intercharacter_timeout`` (1),
    ``c12_response_timeout`` (4) seconds and ``c12_retries`` (3)."""
    base = settings_for(meter, tz)
    md = meter.metadata
    key = None
    if md.get("c12_auth_key", "").strip():
        text = md["c12_auth_key"].strip()
        text = text[4:] if text.lower().startswith("hex:") else text
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) != DES_BLOCK:
            raise ConfigError(
                f"meter {meter.id}: c12_auth_key is {DES_BLOCK} bytes in hex (a DES key)",
                key="c12_auth_key",
            )
    timing = None
    if _flag(meter, "c12_timing_setup"):
        try:
            timing = Timing(
                traffic=_whole(meter, "c12_traffic_timeout", DEFAULT_TIMING.traffic),
                inter_character=_whole(
                    meter, "c12_intercharacter_timeout", DEFAULT_TIMING.inter_character
                ),
                response=_whole(meter, "c12_response_timeout", DEFAULT_TIMING.response),
                retries=base.retries,
            )
        except ValueError as e:
            raise ConfigError(f"meter {meter.id}: {e}") from None
    try:
        return attrs.evolve(
            base,
            timing=timing,
            auth_key=key,
            auth_key_id=_whole(meter, "c12_auth_key_id", 0),
        )
    except ValueError as e:
        raise ConfigError(f"meter {meter.id}: {e}", key="c12_auth_key_id") from None


def _whole(meter: Meter, key: str, default: int) -> int:
    text = meter.metadata.get(key, "").strip()
    if not text:
        return default
    try:
        return int(text, 0)
    except ValueError:
        raise ConfigError(f"meter {meter.id}: {key} must be a whole number", key=key) from None


def _flag(meter: Meter, key: str) -> bool:
    text = meter.metadata.get(key, "yes").strip().lower()
    if text not in ("yes", "no", "true", "false", "1", "0", "on", "off"):
        raise ConfigError(f"meter {meter.id}: {key} is yes or no", key=key)
    return text in ("yes", "true", "1", "on")


@implementer(IMeterProtocol, IClock, ICommands)
class C1221Protocol(C1218Protocol):
    """ANSI C12.21: the C12.18 table reads over a dial-up (or any) byte pipe, with timing
    setup and key authentication. The ACK wait is ``c12_response_timeout`` (4 s) until
    the meter's timing setup answer sets it."""

    name = NAME_C1221

    def settings(self, meter: Meter) -> ClientSettings:
        return settings_for_c1221(meter, self.tz)

    def client(self, settings: ClientSettings, now: Callable[[], datetime]) -> C1218Client:
        return C1221Client(settings, now=now)

    def ack_timeout(self, meter: Meter) -> float:
        return _seconds(meter, "c12_response_timeout", float(DEFAULT_TIMING.response))


def _seconds(meter: Meter, key: str, default: float) -> float:
    """A positive number of seconds from the meter's metadata; ConfigError naming the key."""
    text = meter.metadata.get(key, "").strip()
    try:
        value = float(text) if text else default
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"meter {meter.id}: {key} must be a positive number", key=key)
    return value


__all__ = [
    "C1218Protocol",
    "C1218Session",
    "C1221Protocol",
    "settings_for",
    "settings_for_c1221",
    "table_rows",
]
