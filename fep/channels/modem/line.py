"""One AT modem on one serial port: the Twisted adapter that drives the sans-IO AT engine.

``ModemLine`` is the protocol on the port's transport. ``command()`` queues an AT command and
fires with its Response (a ModemError for a final result other than OK unless
``expect_ok=False``, a ModemTimeout when its deadline passes); unsolicited result codes go to
``on_unsolicited``; once a command ended in CONNECT the line is online and bytes go to the
``data_receiver`` until ``escape()`` (guard time, ``+++``) or the carrier is lost
(``on_carrier_lost``). Modem control lines (DTR, DCD) are reached through IModemControl,
because ptys answer those ioctls with ENOTTY: serial ports get ``SerialModemControl``, tests
and the emulator their own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from fep.channels.modem.at import (
    AtEngine,
    CarrierLost,
    Command,
    Data,
    Deadline,
    FinalResult,
    ModemError,
    ModemProfile,
    ModemTimeout,
    Noise,
    Output,
    Response,
    ResultCode,
    TimedOut,
    Transmit,
    Unsolicited,
    modem_profile,
)
from fep.errors import ChannelError

log = Logger()


class IModemControl(Interface):
    """The modem control lines of a serial port."""

    def set_dtr(on: bool) -> None:
        """Raise or drop DTR (a modem set with &D2 hangs up when DTR drops)."""

    def carrier() -> bool | None:
        """DCD: True while the modem has a carrier, None when the port cannot tell."""


@implementer(IModemControl)
class NoModemControl:
    """A port without usable control lines (ptys, three-wire cables)."""

    def set_dtr(self, on: bool) -> None:
        pass

    def carrier(self) -> bool | None:
        return None


@implementer(IModemControl)
class SerialModemControl:
    """DTR and DCD of a real serial port through its pyserial object; the first ioctl that
    fails (ENOTTY on a pty) turns the lines off for good."""

    def __init__(self, serial: Any) -> None:
        self._serial = serial
        self.usable = True

    def set_dtr(self, on: bool) -> None:
        if not self.usable:
            return
        try:
            self._serial.dtr = on
        except (OSError, ValueError, AttributeError):
            self.usable = False

    def carrier(self) -> bool | None:
        if not self.usable:
            return None
        try:
            return bool(self._serial.cd)
        except (OSError, ValueError, AttributeError):
            self.usable = False
            return None


def control_of(transport: Any) -> IModemControl:
    """The control lines of a transport: a serial port's, or none."""
    serial = getattr(transport, "_serial", None)
    return SerialModemControl(serial) if serial is not None else NoModemControl()


class ModemLine(Protocol):
    """Drives one modem; ``name`` names the line in errors and logs (e.g. ``modem1``)."""

    def __init__(
        self,
        reactor: IReactorTime,
        name: str,
        profile: ModemProfile | None = None,
        *,
        control: IModemControl | None = None,
        on_unsolicited: Callable[[Unsolicited], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.name = name
        self.profile = profile if profile is not None else modem_profile("generic")
        self.engine: AtEngine = self.profile.engine()
        self.control = control
        self.on_unsolicited = on_unsolicited
        self.on_carrier_lost: Callable[[str], None] | None = None
        self.data_receiver: Any = None
        self.route: str | None = None
        self.ready: Deferred[ModemLine] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self.noise = 0
        self.last_write = 0.0
        self._waiting: deque[tuple[Command, Deferred[Response], bool]] = deque()
        self._escaping: Deferred[Response] | None = None
        self._timer: IDelayedCall | None = None
        self._open = False

    # -- Protocol

    def connectionMade(self) -> None:
        self._open = True
        if self.control is None:
            self.control = control_of(self.transport)
        self.last_write = self.reactor.seconds()
        self.ready.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self._apply(self.engine.receive(data))

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self._open = False
        self._disarm()
        was_online = self.engine.online
        self.engine.reset()
        error = ChannelError(
            f"modem {self.name}: port closed ({reason.getErrorMessage()})", route=self.route
        )
        waiting, self._waiting = self._waiting, deque()
        for _, d, _ in waiting:
            if not d.called:
                d.errback(Failure(error))
        if self._escaping is not None:
            escaping, self._escaping = self._escaping, None
            escaping.errback(Failure(error))
        if was_online and self.on_carrier_lost is not None:
            self.on_carrier_lost("modem port closed")
        if not self.closed.called:
            self.closed.callback(None)

    # -- commands

    @property
    def is_open(self) -> bool:
        return self._open

    def command(
        self,
        text: str,
        timeout: float | None = None,
        body: bytes | None = None,
        *,
        expect_ok: bool = True,
        final_optional: float | None = None,
    ) -> Deferred[Response]:
        """Queue an AT command; fires with its Response. ``final_optional``: see
        ``Command``."""
        if not self._open:
            return _failed(ChannelError(f"modem {self.name}: port not open", route=self.route))
        try:
            command = Command(
                text, timeout or self.profile.command_timeout, body, final_optional
            )
        except ValueError as e:
            return _failed(ModemError(str(e), line=self.name, route=self.route))
        d: Deferred[Response] = Deferred()
        self._waiting.append((command, d, expect_ok))
        self._apply(self.engine.submit(command))
        return d

    def initialise(self) -> Deferred[None]:
        """Send the profile's init commands in order; fails on the first one refused."""

        async def run() -> None:
            for command in self.profile.init_commands():
                await self.command(command.text, command.timeout)

        return Deferred.fromCoroutine(run())

    # -- online

    def write_data(self, data: bytes) -> None:
        """Bytes for the remote end (online only)."""
        if self._open and self.engine.online and self.transport is not None:
            self.transport.write(data)
            self.last_write = self.reactor.seconds()

    def escape(self, guard: float, timeout: float | None = None) -> Deferred[Response]:
        """Back to command mode: keep ``guard`` seconds of silence, send ``+++`` (the modem
        answers OK after its own guard time). Fires with the escape's Response (OK, or
        NO CARRIER when the call went at the same time)."""
        if not self.engine.online:
            return succeed(Response(Command("+++"), _no_carrier("not online")))
        d: Deferred[Response] = Deferred()

        def send() -> None:
            if not self.engine.online or not self._open:
                d.callback(Response(Command("+++"), _no_carrier("carrier went before +++")))
                return
            idle = self.reactor.seconds() - self.last_write
            if idle < guard:
                self.reactor.callLater(guard - idle, send)
                return
            self._escaping = d
            self._apply(self.engine.escape(timeout or guard * 2 + self.profile.command_timeout))

        send()
        return d

    # -- engine outputs

    def _apply(self, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, Transmit):
                if self.transport is not None and self._open:
                    self.transport.write(output.data)
                    self.last_write = self.reactor.seconds()
            elif isinstance(output, Deadline):
                self._disarm()
                if output.seconds is not None:
                    self._timer = self.reactor.callLater(output.seconds, self._expire)
            elif isinstance(output, Response):
                self._answered(output)
            elif isinstance(output, TimedOut):
                self._timed_out(output)
            elif isinstance(output, Unsolicited):
                log.debug("modem {line}: {urc}", line=self.name, urc=output.line,
                          route=self.route)
                if self.on_unsolicited is not None:
                    self.on_unsolicited(output)
            elif isinstance(output, Data):
                if self.data_receiver is not None:
                    self.data_receiver.dataReceived(output.data)
                else:
                    self._noise(output.data, "data with no call attached")
            elif isinstance(output, CarrierLost):
                log.info("modem {line}: carrier lost ({why})", line=self.name, why=output.line,
                         route=self.route)
                if self.on_carrier_lost is not None:
                    self.on_carrier_lost(output.line)
            elif isinstance(output, Noise):
                self._noise(output.data, output.reason)

    def _noise(self, data: bytes, reason: str) -> None:
        self.noise += len(data)
        log.debug("modem {line}: {count} bytes of noise ({reason}): {data!r}", line=self.name,
                  count=len(data), reason=reason, data=data[:64], route=self.route)

    def _answered(self, response: Response) -> None:
        if response.command.text == "+++" and self._escaping is not None:
            escaping, self._escaping = self._escaping, None
            escaping.callback(response)
            return
        if not self._waiting:
            return
        command, d, expect_ok = self._waiting.popleft()
        if d.called:
            return  # the caller cancelled it
        if expect_ok and not response.ok:
            d.errback(Failure(ModemError(
                f"modem {self.name}: {command.text} -> {response.result.describe()}",
                line=self.name, command=command.text, result=response.result,
                route=self.route,
            )))
        else:
            d.callback(response)

    def _timed_out(self, timed_out: TimedOut) -> None:
        error = ModemTimeout(
            f"modem {self.name}: no answer to {timed_out.command.text} within "
            f"{timed_out.command.timeout:g} s",
            line=self.name, command=timed_out.command.text, route=self.route,
        )
        error.body_sent = timed_out.body_sent
        if timed_out.command.text == "+++" and self._escaping is not None:
            escaping, self._escaping = self._escaping, None
            escaping.errback(Failure(error))
            return
        if self._waiting:
            _, d, _ = self._waiting.popleft()
            if not d.called:
                d.errback(Failure(error))

    def _expire(self) -> None:
        self._timer = None
        self._apply(self.engine.expire())

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def abort_dial(self) -> None:
        """Any character aborts a dial in progress (V.250 6.3.1): the modem then answers
        the ATD with NO CARRIER."""
        if self._open and self.transport is not None and not self.engine.online:
            self.transport.write(b"\r")


def _no_carrier(reason: str) -> FinalResult:
    return FinalResult(ResultCode.NO_CARRIER, reason)


def _failed(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(Failure(error))
    return d
