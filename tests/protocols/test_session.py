"""The one session driver (fep.protocols.session) on a memory reactor: connecting within a
deadline, the step timer, finish, fail, a lost connection, the baud switch once the written
bytes have drained, and every error naming meter, route and protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer

from fep.errors import ChannelError, FrameError, ProtocolError, SessionTimeout
from fep.interfaces import IPushChannel, ISerialLine
from fep.protocols.actions import (
    Fail,
    Finish,
    Line,
    Send,
    SetTimer,
    StopTimer,
    SwitchBaud,
)
from fep.protocols.session import DRAIN_POLL, MeterSession, connect_within, run_session

ROUTE = "tcp:host=10.0.0.9:port=4059"


class Script:
    """Steps that answer from lists: ``replies`` in turn for each ``receive``."""

    def __init__(self, start: Sequence[object], replies: Sequence[Any] = (),
                 on_timeout: Sequence[object] = ()) -> None:
        self.started = list(start)
        self.replies = list(replies)
        self.on_timeout = list(on_timeout)
        self.received: list[bytes] = []
        self.waiting_for: str | None = "the answer"

    def start(self) -> Sequence[object]:
        return self.started

    def receive(self, data: bytes) -> Sequence[object]:
        self.received.append(data)
        reply = self.replies.pop(0) if self.replies else []
        if isinstance(reply, Exception):
            raise reply
        return list(reply)

    def timeout(self) -> Sequence[object]:
        return self.on_timeout


class Session(MeterSession):
    """The driver with its hooks recorded."""

    def __init__(self, clock: MemoryReactorClock, steps: Script, timeout: float = 3.0) -> None:
        super().__init__(clock, timeout, meter="m1", route=ROUTE, protocol="test", steps=steps)
        self.notes: list[object] = []
        self.ends: list[bool] = []

    def note(self, action: object) -> None:
        self.notes.append(action)

    def result(self, value: Any) -> Any:
        return ("records", value)

    def ended(self, lost: bool) -> None:
        self.ends.append(lost)


class GivingSession(Session):
    """A protocol whose peer also sends by itself: it gives back what is not its own."""

    gives_back = True

    def __init__(self, clock: MemoryReactorClock, steps: Script, held: bytes = b"") -> None:
        super().__init__(clock, steps)
        self.held = held
        self.dropped: list[bytes] = []

    def unconsumed(self) -> bytes:
        held, self.held = self.held, b""
        return held

    def not_given_back(self, data: bytes) -> None:
        self.dropped.append(data)


@implementer(IPushChannel)
class PushTransport(StringTransport):
    """A pipe that carries pushes (a GPRS session lent to a read): takes bytes back."""

    def __init__(self) -> None:
        super().__init__()
        self.given: list[bytes] = []

    def pushed(self, records: Sequence[object]) -> Deferred[None]:
        return succeed(None)

    def unconsumed(self, data: bytes) -> None:
        self.given.append(data)


@implementer(ISerialLine)
class SerialTransport(StringTransport):
    """A serial line: records baud changes; ``dataBuffer`` stands for bytes a
    FileDescriptor still holds."""

    def __init__(self, baudrate: int = 300, broken: bool = False) -> None:
        super().__init__()
        self.baudrate = baudrate
        self.char_bits = 10
        self.changes: list[int] = []
        self.dataBuffer = b""
        self.offset = 0
        self.broken = broken

    def set_baudrate(self, baudrate: int) -> None:
        if self.broken:
            raise OSError("EIO")
        self.changes.append(baudrate)
        self.baudrate = baudrate


@implementer(IStreamClientEndpoint)
class Endpoint:
    """Connects at once to a given transport, or answers with a given Deferred."""

    def __init__(self, transport: StringTransport | None = None,
                 result: Deferred[Any] | None = None, connect_timeout: float | None = None
                 ) -> None:
        self.transport = transport
        self.result = result
        if connect_timeout is not None:
            self.connect_timeout = connect_timeout

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        if self.result is not None:
            return self.result
        proto: Any = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 0))
        proto.makeConnection(self.transport)
        return succeed(proto)


def started(steps: Script, transport: StringTransport | None = None, timeout: float = 3.0
            ) -> tuple[Session, StringTransport, MemoryReactorClock]:
    clock = MemoryReactorClock()
    session = Session(clock, steps, timeout)
    transport = transport if transport is not None else StringTransport()
    session.makeConnection(transport)
    return session, transport, clock


def error_of(d: Deferred[Any]) -> Exception:
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures, "the session did not fail"
    value = failures[0].value
    assert isinstance(value, Exception)
    return value


class ConnectTests(unittest.TestCase):
    def test_connected_session_fires_with_its_result(self) -> None:
        clock = MemoryReactorClock()
        transport = StringTransport()
        session = Session(clock, Script([Send(b"hi")], [[Finish(7)]]))
        d = run_session(clock, Endpoint(transport), session, ROUTE, 2.0)
        self.assertEqual(transport.value(), b"hi")
        session.dataReceived(b"ok")
        self.assertEqual(self.successResultOf(d), ("records", 7))
        self.assertEqual(clock.getDelayedCalls(), [])  # the connect deadline is gone

    def test_connect_timeout_is_a_channel_error_naming_the_route(self) -> None:
        clock = MemoryReactorClock()
        pending: Deferred[Any] = Deferred()
        d = connect_within(clock, Endpoint(result=pending), Session(clock, Script([])),
                           ROUTE, 2.0)
        clock.advance(1.9)
        self.assertNoResult(d)
        clock.advance(0.2)
        error = error_of(d)
        assert isinstance(error, ChannelError)
        self.assertEqual((error.message, error.route), ("no connection within 2.0 s", ROUTE))

    def test_the_endpoints_own_longer_connect_timeout_wins(self) -> None:
        clock = MemoryReactorClock()
        pending: Deferred[Any] = Deferred()
        endpoint = Endpoint(result=pending, connect_timeout=60.0)
        d = connect_within(clock, endpoint, Session(clock, Script([])), ROUTE, 2.0)
        clock.advance(59)
        self.assertNoResult(d)
        clock.advance(2)
        self.assertEqual(error_of(d).args[0], "no connection within 60.0 s")

    def test_refused_connection_is_a_channel_error_naming_the_route(self) -> None:
        clock = MemoryReactorClock()
        d = connect_within(clock, Endpoint(result=fail(ConnectionRefusedError())),
                           Session(clock, Script([])), ROUTE, 2.0)
        error = error_of(d)
        assert isinstance(error, ChannelError)
        self.assertEqual(error.route, ROUTE)
        self.assertIn("cannot connect", error.message)

    def test_a_channel_error_without_route_gets_the_route(self) -> None:
        clock = MemoryReactorClock()
        d = connect_within(clock, Endpoint(result=fail(ChannelError("no free line"))),
                           Session(clock, Script([])), ROUTE, 2.0)
        error = error_of(d)
        assert isinstance(error, ChannelError)
        self.assertEqual((error.message, error.route), ("no free line", ROUTE))


class StepTimerTests(unittest.TestCase):
    def test_step_timeout_asks_the_steps_and_names_the_limit(self) -> None:
        steps = Script([Send(b"?"), SetTimer()],
                       on_timeout=[Fail(SessionTimeout("no answer"))])
        session, transport, clock = started(steps, timeout=3.0)
        clock.advance(2.9)
        self.assertNoResult(session.done)
        clock.advance(0.2)
        error = error_of(session.done)
        assert isinstance(error, SessionTimeout)
        self.assertEqual(error.message, "no answer within 3.0 s")
        self.assertEqual((error.meter, error.route, error.protocol), ("m1", ROUTE, "test"))
        self.assertTrue(transport.disconnected)  # aborted, not flushed
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_each_set_timer_restarts_the_wait(self) -> None:
        steps = Script([SetTimer()], [[SetTimer()], [SetTimer(0.5)]],
                       on_timeout=[Fail(SessionTimeout("silence"))])
        session, _, clock = started(steps)
        clock.advance(2.0)
        session.dataReceived(b"a")
        clock.advance(2.0)
        session.dataReceived(b"b")  # a shorter wait for what comes next
        clock.advance(0.4)
        self.assertNoResult(session.done)
        clock.advance(0.2)
        self.assertIsInstance(error_of(session.done), SessionTimeout)

    def test_stop_timer_waits_for_nothing(self) -> None:
        session, _, clock = started(Script([SetTimer()], [[StopTimer()]]))
        session.dataReceived(b"a")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_timeout_that_resends_keeps_the_session_going(self) -> None:
        steps = Script([Send(b"?"), SetTimer()], on_timeout=[Send(b"?"), SetTimer()])
        session, transport, clock = started(steps)
        clock.advance(3.1)
        self.assertEqual(transport.value(), b"??")
        self.assertNoResult(session.done)


class EndTests(unittest.TestCase):
    def test_finish_hangs_up_and_fires_with_the_result(self) -> None:
        session, transport, clock = started(Script([Send(b"?"), SetTimer()], [[Finish(1)]]))
        session.dataReceived(b"!")
        self.assertEqual(self.successResultOf(session.done), ("records", 1))
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)  # flushed, not aborted
        self.assertEqual(session.ends, [False])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_nothing_after_the_end_is_carried_out(self) -> None:
        session, transport, _ = started(Script([Finish(1), Send(b"late")]))
        self.assertEqual(transport.value(), b"")
        session.dataReceived(b"more")  # ignored
        self.assertEqual(session.steps.received, [])  # type: ignore[union-attr]

    def test_fail_names_meter_route_and_protocol(self) -> None:
        session, transport, _ = started(Script([], [[Fail(ProtocolError("refused"))]]))
        session.dataReceived(b"x")
        error = error_of(session.done)
        assert isinstance(error, ProtocolError)
        self.assertEqual((error.message, error.meter, error.route, error.protocol),
                         ("refused", "m1", ROUTE, "test"))
        self.assertTrue(transport.disconnected)
        self.assertEqual(session.ends, [False])

    def test_an_error_already_naming_its_meter_keeps_it(self) -> None:
        error = ProtocolError("refused", meter="other", route="serial:/dev/x", protocol="p")
        session, _, _ = started(Script([Fail(error)]))
        got = error_of(session.done)
        assert isinstance(got, ProtocolError)
        self.assertEqual((got.meter, got.route, got.protocol), ("other", "serial:/dev/x", "p"))

    def test_a_frame_error_raised_by_the_steps_is_a_protocol_error(self) -> None:
        bad = FrameError("bad BCC", field="BCC")
        session, _, _ = started(Script([], [bad]))
        session.dataReceived(b"x")
        error = error_of(session.done)
        assert isinstance(error, ProtocolError)
        self.assertEqual((error.message, error.meter, error.route), ("bad BCC", "m1", ROUTE))
        self.assertIs(error.__cause__, bad)

    def test_a_bug_in_the_steps_fails_the_session_not_the_reactor(self) -> None:
        session, _, _ = started(Script([], [RuntimeError("oops")]))
        session.dataReceived(b"x")
        error = error_of(session.done)
        assert isinstance(error, ProtocolError)
        self.assertIn("internal error", error.message)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_lost_connection_is_a_channel_error_naming_what_was_awaited(self) -> None:
        session, _, clock = started(Script([Send(b"?"), SetTimer()]))
        session.connectionLost(Failure(ConnectionError("gone")))
        error = error_of(session.done)
        assert isinstance(error, ChannelError)
        self.assertEqual(error.route, ROUTE)
        self.assertEqual(error.message, "connection lost waiting for the answer: gone")
        self.assertEqual(session.ends, [True])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_channel_that_says_why_it_ended_is_heard(self) -> None:
        session, _, _ = started(Script([Send(b"?"), SetTimer()]))
        session.connectionLost(Failure(ChannelError("the meter did not answer", route="x")))
        error = error_of(session.done)
        assert isinstance(error, ChannelError)
        self.assertEqual((error.message, error.route),
                         ("the meter did not answer (waiting for the answer)", ROUTE))

    def test_lost_connection_after_the_end_changes_nothing(self) -> None:
        session, _, _ = started(Script([Finish(1)]))
        session.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(self.successResultOf(session.done), ("records", 1))

    def test_notes_go_to_the_adapter_in_order(self) -> None:
        session, _, _ = started(Script(["resent", Send(b"?"), "noise"]))
        self.assertEqual(session.notes, ["resent", "noise"])

    def test_notes_after_the_end_are_still_told(self) -> None:
        # A push decoded in the same read as the last answer: told, though nothing more is
        # sent or timed.
        session, transport, clock = started(
            Script([Send(b"?"), SetTimer()], [[Finish(1), "push", Send(b"late"), SetTimer()]]))
        session.dataReceived(b"!push")
        self.assertEqual(self.successResultOf(session.done), ("records", 1))
        self.assertEqual(session.notes, ["push"])
        self.assertEqual(transport.value(), b"?")
        self.assertEqual(clock.getDelayedCalls(), [])


class GiveBackTests(unittest.TestCase):
    def give(self, transport: StringTransport, held: bytes = b"",
             end: object = None) -> GivingSession:  # fmt: skip
        session = GivingSession(MemoryReactorClock(), Script([], [[end or Finish(1)]]), held)
        session.done.addErrback(lambda _: None)  # a Fail's error is not what is looked at
        session.makeConnection(transport)
        session.dataReceived(b"answer")
        return session

    def test_bytes_after_the_end_go_back_to_a_channel_that_carries_pushes(self) -> None:
        transport = PushTransport()
        session = self.give(transport)
        session.dataReceived(b"a report")
        self.assertEqual(transport.given, [b"a report"])
        self.assertEqual(session.steps.received, [b"answer"])  # type: ignore[union-attr]

    def test_what_the_steps_hold_at_the_end_goes_back_first(self) -> None:
        for end in (Finish(1), Fail(ProtocolError("refused"))):
            transport = PushTransport()
            session = self.give(transport, held=b"half a push", end=end)
            session.dataReceived(b"the rest")
            self.assertEqual(transport.given, [b"half a push", b"the rest"])
            self.assertEqual(session.ends, [False])

    def test_elsewhere_they_go_to_not_given_back(self) -> None:
        session = self.give(StringTransport(), held=b"half a push")
        session.dataReceived(b"the rest")
        session.give_back(b"")  # nothing is nothing to give
        self.assertEqual(session.dropped, [b"half a push", b"the rest"])

    def test_a_protocol_that_does_not_give_back_drops_them(self) -> None:
        transport = PushTransport()
        session, _, _ = started(Script([], [[Finish(1)]]), transport)
        session.dataReceived(b"answer")
        session.dataReceived(b"more")
        self.assertEqual(transport.given, [])
        self.assertEqual(session.steps.received, [b"answer"])  # type: ignore[union-attr]


class BaudSwitchTests(unittest.TestCase):
    def test_steps_learn_the_line(self) -> None:
        lines: list[Line] = []

        class Probe(Session):
            def make_steps(self, line: Line) -> Any:
                lines.append(line)
                return super().make_steps(line)

        session = Probe(MemoryReactorClock(), Script([]))
        session.makeConnection(SerialTransport(1200))
        session2 = Probe(MemoryReactorClock(), Script([]))
        session2.makeConnection(StringTransport())
        self.assertEqual(lines, [Line(True, 1200, 10.0), Line(False, None, None)])

    def test_switch_after_the_written_bytes_had_their_time_on_the_wire(self) -> None:
        transport = SerialTransport(300)
        _session, _, clock = started(Script([Send(b"\x06050\r\n"), SwitchBaud(9600)]),
                                    transport)
        # 6 characters of 10 bits at 300 Bd: 0.2 s.
        clock.advance(0.19)
        self.assertEqual(transport.changes, [])
        clock.advance(0.02)
        self.assertEqual(transport.changes, [9600])

    def test_switch_waits_until_the_write_buffer_has_drained(self) -> None:
        transport = SerialTransport(300)
        transport.dataBuffer = b"\x06050\r\n"
        _session, _, clock = started(Script([Send(b"\x06050\r\n"), SwitchBaud(9600)]),
                                    transport)
        clock.advance(1.0)
        self.assertEqual(transport.changes, [])  # still held by the transport
        transport.dataBuffer = b""
        clock.advance(DRAIN_POLL)
        clock.advance(0.19)
        self.assertEqual(transport.changes, [])  # now on the wire
        clock.advance(0.02)
        self.assertEqual(transport.changes, [9600])

    def test_what_follows_a_switch_waits_for_it(self) -> None:
        transport = SerialTransport(300)
        steps = Script([Send(b"A"), SwitchBaud(9600), Send(b"B"), SetTimer()],
                       [[Send(b"C")]])
        session, _, clock = started(steps, transport)
        self.assertEqual(transport.value(), b"A")
        self.assertEqual(clock.getDelayedCalls()[0].getTime(), 10 / 300)  # no step timer yet
        session.dataReceived(b"early")  # handled, its actions held too
        self.assertEqual(transport.value(), b"A")
        clock.advance(10 / 300)
        self.assertEqual(transport.changes, [9600])
        self.assertEqual(transport.value(), b"ABC")
        self.assertEqual([c.getTime() for c in clock.getDelayedCalls()], [10 / 300 + 3.0])

    def test_no_switch_on_a_line_that_is_no_serial_line(self) -> None:
        steps = Script([Send(b"A"), SwitchBaud(9600), Send(b"B")])
        _, transport, clock = started(steps)
        self.assertEqual(transport.value(), b"AB")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_no_switch_to_the_speed_the_line_has(self) -> None:
        transport = SerialTransport(9600)
        started(Script([SwitchBaud(9600), Send(b"B")]), transport)
        self.assertEqual((transport.value(), transport.changes), (b"B", []))

    def test_a_switch_the_port_refuses_is_a_channel_error(self) -> None:
        transport = SerialTransport(300, broken=True)
        session, _, clock = started(Script([Send(b"A"), SwitchBaud(9600)]), transport)
        clock.advance(1)
        error = error_of(session.done)
        assert isinstance(error, ChannelError)
        self.assertEqual((error.message, error.route), ("cannot set 9600 Bd: EIO", ROUTE))

    def test_a_lost_line_cancels_a_switch_under_way(self) -> None:
        transport = SerialTransport(300)
        session, _, clock = started(Script([Send(b"A"), SwitchBaud(9600)]), transport)
        session.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertIsInstance(error_of(session.done), ChannelError)


class SeamTests(unittest.TestCase):
    def test_protocol_sessions_leave_connect_timers_and_baud_to_the_driver(self) -> None:
        from importlib import import_module
        from inspect import getsource

        plumbing = ("callLater", "set_baudrate", "abortConnection", "IDelayedCall",
                    "addTimeout", "buildProtocol")
        for name in ("iec62056_21", "dlt645", "dlt698", "ansi_c12", "dlms"):
            source = getsource(import_module(f"fep.protocols.{name}.session"))
            self.assertEqual([p for p in plumbing if p in source], [], name)
        # Modbus keeps timers of its own for the RTU frame gap only.
        modbus = getsource(import_module("fep.protocols.modbus.session"))
        self.assertEqual([p for p in plumbing[1:] if p in modbus and p != "IDelayedCall"], [])
        self.assertEqual(modbus.count("callLater"), 2)  # the gap before a send, after bytes
