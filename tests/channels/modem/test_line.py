"""The Twisted modem line: commands and their Deferreds, deadlines on the reactor clock,
unsolicited codes, online data, the escape's guard time, a closing port, control lines."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from fep.channels.modem.at import ModemError, ModemTimeout, ResultCode, modem_profile
from fep.channels.modem.line import (
    IModemControl,
    ModemLine,
    NoModemControl,
    SerialModemControl,
    control_of,
)
from fep.errors import ChannelError


class Collect:
    def __init__(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data


class ModemLineTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.urcs: list[Any] = []
        self.line = ModemLine(self.clock, "m7", modem_profile("generic"),
                              on_unsolicited=self.urcs.append)
        self.port = StringTransport()
        self.line.makeConnection(self.port)
        self.results: list[Any] = []

    def sent(self) -> bytes:
        value = self.port.value()
        self.port.clear()
        return value

    def keep(self, d: Any) -> Any:
        d.addBoth(self.results.append)
        return d

    def test_ready_fires_on_connection(self) -> None:
        self.assertEqual(self.successResultOf(self.line.ready), self.line)

    def test_command_fires_with_its_response(self) -> None:
        self.keep(self.line.command("AT+CSQ"))
        self.assertEqual(self.sent(), b"AT+CSQ\r")
        self.line.dataReceived(b"AT+CSQ\r\r\n+CSQ: 21,0\r\n\r\nOK\r\n")
        [response] = self.results
        self.assertEqual((response.code, response.lines), (ResultCode.OK, ("+CSQ: 21,0",)))

    def test_refused_command_is_a_modem_error_naming_line_command_and_meaning(self) -> None:
        self.keep(self.line.command("AT+CPIN?"))
        self.line.dataReceived(b"\r\n+CME ERROR: 10\r\n")
        [failure] = self.results
        error = failure.value
        self.assertIsInstance(error, ModemError)
        self.assertEqual((error.line, error.command, error.result.error), ("m7", "AT+CPIN?", 10))
        self.assertEqual(str(error), "modem m7: AT+CPIN? -> +CME ERROR 10: SIM not inserted")

    def test_expect_ok_false_gives_any_final_result(self) -> None:
        self.keep(self.line.command("ATDT123", 60, expect_ok=False))
        self.line.dataReceived(b"\r\nBUSY\r\n")
        self.assertIs(self.results[0].code, ResultCode.BUSY)

    def test_deadline_on_the_reactor_clock(self) -> None:
        self.keep(self.line.command("AT", 2.0))
        second = self.line.command("ATI", 2.0)
        self.clock.advance(1.9)
        self.assertEqual(self.results, [])
        self.clock.advance(0.2)
        error = self.results[0].value
        self.assertIsInstance(error, ModemTimeout)
        self.assertIn("modem m7: no answer to AT within 2 s", str(error))
        self.assertEqual(self.sent(), b"AT\rATI\r")
        self.line.dataReceived(b"\r\nOK\r\n")
        self.assertTrue(self.successResultOf(second).ok)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unsolicited_codes_go_to_the_callback(self) -> None:
        self.line.dataReceived(b'\r\n+CMTI: "SM",4\r\n\r\nRING\r\n')
        self.assertEqual([u.name for u in self.urcs], ["+CMTI", "RING"])

    def test_initialise_sends_the_profile_in_order_and_stops_at_a_refusal(self) -> None:
        d = self.keep(self.line.initialise())
        for text in modem_profile("generic").init[:2]:
            self.assertEqual(self.sent(), text.encode() + b"\r")
            self.line.dataReceived(b"\r\nOK\r\n")
        self.assertEqual(self.sent(), b"AT&C1&D2\r")
        self.line.dataReceived(b"\r\nERROR\r\n")
        self.assertIsInstance(self.results[0].value, ModemError)
        self.assertEqual(self.sent(), b"")
        del d

    def test_online_data_goes_to_the_receiver_and_noise_is_counted(self) -> None:
        self.line.dataReceived(b"\r\nNO CARRIER\r\n")
        self.assertEqual(self.line.noise, 0)  # an unsolicited NO CARRIER, not noise
        self.line.dataReceived(b"\r\nhello\r\n")
        self.assertEqual(self.line.noise, 5)
        self.keep(self.line.command("ATD1", 60, expect_ok=False))
        self.line.dataReceived(b"\r\nCONNECT 2400\r\nearly")
        self.assertEqual(self.line.noise, 10)  # nobody attached yet
        collect = Collect()
        self.line.data_receiver = collect
        self.line.dataReceived(b"\x02data")
        self.assertEqual(collect.data, b"\x02data")
        self.sent()
        self.line.write_data(b"ping")
        self.assertEqual(self.sent(), b"ping")

    def test_escape_keeps_the_guard_time_after_the_last_write(self) -> None:
        lost: list[str] = []
        self.line.on_carrier_lost = lost.append
        self.line.command("ATD1", 60, expect_ok=False)
        self.line.dataReceived(b"\r\nCONNECT\r\n")
        self.sent()
        self.line.write_data(b"x")
        self.assertEqual(self.sent(), b"x")
        self.clock.advance(0.4)
        d = self.keep(self.line.escape(1.0))
        self.assertEqual(self.sent(), b"")
        self.clock.advance(0.59)
        self.assertEqual(self.sent(), b"")
        self.clock.advance(0.02)
        self.assertEqual(self.sent(), b"+++")
        self.line.dataReceived(b"\r\nOK\r\n")
        self.assertTrue(self.results[0].ok)
        self.assertFalse(self.line.engine.online)
        self.assertEqual(lost, [])
        del d

    def test_carrier_loss_while_online(self) -> None:
        lost: list[str] = []
        self.line.on_carrier_lost = lost.append
        self.line.command("ATD1", 60, expect_ok=False)
        self.line.dataReceived(b"\r\nCONNECT\r\n")
        self.line.dataReceived(b"\r\nNO CARRIER\r\n")
        self.assertEqual(lost, ["NO CARRIER"])

    def test_closing_port_fails_waiting_commands(self) -> None:
        self.keep(self.line.command("AT"))
        self.line.connectionLost(Failure(ConnectionError("gone")))
        error = self.results[0].value
        self.assertIsInstance(error, ChannelError)
        self.assertIn("modem m7: port closed", str(error))
        self.assertIsNone(self.successResultOf(self.line.closed))
        self.assertIsInstance(self.failureResultOf(self.line.command("AT")).value, ChannelError)

    def test_bad_command_text_is_a_modem_error(self) -> None:
        self.assertIsInstance(self.failureResultOf(self.line.command("AT\rZ")).value,
                              ModemError)


class FakeSerial:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self._dtr = True

    @property
    def dtr(self) -> bool:
        return self._dtr

    @dtr.setter
    def dtr(self, on: bool) -> None:
        if self.fail:
            raise OSError(25, "Inappropriate ioctl for device")
        self._dtr = on

    @property
    def cd(self) -> bool:
        if self.fail:
            raise OSError(25, "Inappropriate ioctl for device")
        return True


class ControlTests(unittest.TestCase):
    def test_serial_control_lines(self) -> None:
        serial = FakeSerial()
        control = SerialModemControl(serial)
        self.assertTrue(verifyObject(IModemControl, control))
        control.set_dtr(False)
        self.assertFalse(serial.dtr)
        self.assertIs(control.carrier(), True)

    def test_a_pty_refusing_the_ioctl_turns_control_off(self) -> None:
        control = SerialModemControl(FakeSerial(fail=True))
        control.set_dtr(False)
        self.assertFalse(control.usable)
        self.assertIsNone(control.carrier())

    def test_transport_without_serial_has_no_control(self) -> None:
        self.assertIsInstance(control_of(StringTransport()), NoModemControl)
        self.assertIsNone(NoModemControl().carrier())
