"""The Hayes modem emulator: command mode, result-code modes, S-registers, dialling outcomes,
the +++ escape and its guard time, ATH/ATO, carrier drop on demand and DTR drop."""

from __future__ import annotations

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from fep.sim.hayes import (
    EmulatedModemControl,
    Exchange,
    HayesModem,
    Outcome,
    Scripted,
)


class Meter(Protocol):
    """A remote end that records what it gets and answers 'pong' to 'ping'."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.got = b""

    def connectionMade(self) -> None:
        self.log.append("up")

    def dataReceived(self, data: bytes) -> None:
        self.got += data
        self.log.append(data.decode())
        if data == b"ping":
            assert self.transport is not None
            self.transport.write(b"pong")

    def connectionLost(self, reason: object = None) -> None:
        self.log.append("down")


class EmulatorTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.exchange = Exchange(self.clock, ring_time=1.0)
        self.meter_log: list[str] = []
        self.exchange.add("5551001", Factory.forProtocol(lambda: Meter(self.meter_log)))
        self.modem = HayesModem(self.exchange, "m1", guard=0.5)
        self.dte = StringTransport()
        self.modem.makeConnection(self.dte)

    def send(self, data: bytes) -> bytes:
        self.dte.clear()
        self.modem.dataReceived(data)
        return self.out()

    def out(self) -> bytes:
        value = self.dte.value()
        self.dte.clear()
        return value

    def connect(self) -> None:
        self.send(b"ATE0\r")
        self.assertEqual(self.send(b"ATDT5551001\r"), b"")
        self.clock.advance(1.0)
        self.assertEqual(self.out(), b"\r\nCONNECT 9600\r\n")
        self.assertEqual(self.meter_log, ["up"])

    def test_echo_and_ok(self) -> None:
        self.assertEqual(self.send(b"AT\r"), b"AT\r\r\nOK\r\n")
        self.assertEqual(self.send(b"at e0\r"), b"at e0\r\r\nOK\r\n")
        self.assertEqual(self.send(b"AT\r"), b"\r\nOK\r\n")

    def test_line_without_at_is_ignored(self) -> None:
        self.send(b"ATE0\r")
        self.assertEqual(self.send(b"hello\r"), b"")

    def test_numeric_result_codes(self) -> None:
        self.assertEqual(self.send(b"ATE0V0\r"), b"ATE0V0\r0\r")
        self.assertEqual(self.send(b"ATX9Y\r"), b"4\r")
        self.exchange.script("5551001", Outcome.BUSY)
        self.send(b"ATD5551001\r")
        self.clock.advance(1.0)
        self.assertEqual(self.out(), b"7\r")

    def test_quiet_mode_sends_no_result_codes(self) -> None:
        self.assertEqual(self.send(b"ATE0Q1\r"), b"ATE0Q1\r")
        self.assertEqual(self.send(b"AT\r"), b"")

    def test_s_registers_and_reset(self) -> None:
        self.send(b"ATE0\r")
        self.assertEqual(self.send(b"ATS7?\r"), b"\r\n050\r\n\r\nOK\r\n")
        self.send(b"ATS12=25\r")
        self.assertEqual(self.modem.guard, 0.5)
        self.send(b"ATS12=100\r")
        self.assertEqual(self.modem.guard, 2.0)
        self.send(b"ATZ\r")
        self.assertEqual(self.modem.guard, 0.5)
        self.assertTrue(self.modem.echo)

    def test_identification(self) -> None:
        self.send(b"ATE0\r")
        self.assertEqual(self.send(b"ATI\r"), b"\r\nFEP Hayes emulator\r\n\r\nOK\r\n")
        self.assertEqual(self.send(b"AT+GMI\r"), b"\r\nFEP\r\n\r\nOK\r\n")

    def test_unknown_extended_commands_are_accepted_unless_strict(self) -> None:
        self.send(b"ATE0\r")
        self.assertEqual(self.send(b"AT+CBST=7,0,1\r"), b"\r\nOK\r\n")
        self.modem.strict = True
        self.assertEqual(self.send(b"AT+CBST=7,0,1\r"), b"\r\nERROR\r\n")

    def test_scripted_outcomes_then_connect(self) -> None:
        self.send(b"ATE0\r")
        self.exchange.script("5551001", Outcome.BUSY, Outcome.NO_ANSWER, Outcome.NO_CARRIER,
                             Outcome.NO_DIALTONE)
        for expected in (b"BUSY", b"NO ANSWER", b"NO CARRIER", b"NO DIALTONE"):
            self.send(b"ATDT5551001\r")
            self.clock.advance(3.0)
            self.assertEqual(self.out(), b"\r\n" + expected + b"\r\n")
        self.send(b"ATDP 0,555-1001\r")
        self.clock.advance(1.0)
        self.assertEqual(self.out(), b"\r\nCONNECT 9600\r\n")
        self.assertEqual([c.outcome for c in self.exchange.calls],
                         [Outcome.BUSY, Outcome.NO_ANSWER, Outcome.NO_CARRIER,
                          Outcome.NO_DIALTONE, Outcome.CONNECT])
        self.assertEqual(self.exchange.calls[-1].dialled, "05551001")

    def test_unknown_number_gets_no_carrier_unless_scripted(self) -> None:
        self.send(b"ATE0\r")
        self.send(b"ATD999\r")
        self.clock.advance(1.0)
        self.assertEqual(self.out(), b"\r\nNO CARRIER\r\n")
        self.exchange.script("999", Outcome.BUSY)
        self.send(b"ATD999\r")
        self.clock.advance(1.0)
        self.assertEqual(self.out(), b"\r\nBUSY\r\n")

    def test_line_fault_gives_no_dialtone(self) -> None:
        self.send(b"ATE0\r")
        self.modem.dialtone = False
        self.send(b"ATD5551001\r")
        self.clock.advance(1.0)
        self.assertEqual(self.out(), b"\r\nNO DIALTONE\r\n")

    def test_a_character_aborts_the_dial(self) -> None:
        self.send(b"ATE0\r")
        self.send(b"ATD5551001\r")
        self.assertEqual(self.send(b"\r"), b"\r\nNO CARRIER\r\n")
        self.clock.advance(2.0)
        self.assertEqual(self.out(), b"")
        self.assertEqual(self.meter_log, [])

    def test_online_data_both_ways(self) -> None:
        self.connect()
        self.assertEqual(self.send(b"ping"), b"pong")
        self.assertEqual(self.send(b"AT\r"), b"")
        self.assertIn("AT\r", self.meter_log)

    def test_escape_needs_the_guard_time_around_it(self) -> None:
        self.connect()
        self.clock.advance(0.6)
        self.send(b"+++")
        self.clock.advance(0.4)
        self.assertEqual(self.out(), b"")
        self.clock.advance(0.2)
        self.assertEqual(self.out(), b"\r\nOK\r\n")
        self.assertEqual(self.modem.escapes, 1)
        self.assertTrue(self.modem.online)
        self.assertEqual(self.send(b"ATO\r"), b"\r\nCONNECT 9600\r\n")
        self.assertEqual(self.send(b"ping"), b"pong")

    def test_plus_signs_inside_data_are_data(self) -> None:
        self.connect()
        self.clock.advance(0.1)
        self.send(b"+++")  # no guard time before
        self.clock.advance(1.0)
        self.assertEqual(self.out(), b"")
        self.clock.advance(1.0)
        self.send(b"+++")
        self.clock.advance(0.1)
        self.send(b"x")  # data within the guard time after
        self.clock.advance(1.0)
        self.assertEqual(self.out(), b"")
        self.assertEqual(b"".join(m.encode() for m in self.meter_log[1:]), b"++++++x")

    def test_hang_up_after_escape(self) -> None:
        self.connect()
        self.clock.advance(1.0)
        self.send(b"+++")
        self.clock.advance(1.0)
        self.assertEqual(self.send(b"ATH\r"), b"\r\nOK\r\n")
        self.assertFalse(self.modem.online)
        self.assertEqual(self.meter_log, ["up", "down"])
        self.assertEqual(self.send(b"ATO\r"), b"\r\nERROR\r\n")

    def test_carrier_dropped_on_demand(self) -> None:
        self.connect()
        self.modem.drop_carrier()
        self.assertEqual(self.out(), b"\r\nNO CARRIER\r\n")
        self.assertEqual(self.meter_log, ["up", "down"])
        self.assertEqual(self.send(b"AT\r"), b"\r\nOK\r\n")

    def test_scripted_carrier_loss_after_connect(self) -> None:
        self.exchange.script("5551001", Scripted(Outcome.CONNECT, drop_after=2.0))
        self.connect()
        self.clock.advance(1.9)
        self.assertEqual(self.out(), b"")
        self.clock.advance(0.2)
        self.assertEqual(self.out(), b"\r\nNO CARRIER\r\n")

    def test_dtr_drop_hangs_up_with_d2_only(self) -> None:
        control = EmulatedModemControl(self.modem)
        self.connect()
        self.assertIs(control.carrier(), True)
        self.send(b"ping")
        self.clock.advance(1.0)
        self.send(b"+++")
        self.clock.advance(1.0)
        self.send(b"AT&D0O\r")
        self.out()
        control.set_dtr(False)
        control.set_dtr(True)
        self.assertTrue(self.modem.online)
        self.clock.advance(1.0)
        self.send(b"+++")
        self.clock.advance(1.0)
        self.send(b"AT&D2O\r")
        self.out()
        control.set_dtr(False)
        self.assertEqual(self.out(), b"\r\nNO CARRIER\r\n")
        self.assertIs(control.carrier(), False)

    def test_port_closing_ends_the_call(self) -> None:
        self.connect()
        self.modem.connectionLost()
        self.assertEqual(self.meter_log, ["up", "down"])
