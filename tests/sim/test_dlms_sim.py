"""The simulated DLMS meter's power supply: a power cut logs power down and power up in its
event log, leaves out the load profile entries it would have captured without power, flags
the first entry after it, and the meter answers nothing while it lasts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from fep.protocols.dlms import axdr
from fep.protocols.dlms.server import ServerSettings
from fep.protocols.dlms.wrapper import WrapperFrame, encode_wrapper
from fep.sim.dlms import DlmsMeterServerFactory
from fep.sim.dlms_meter import SimulatedDlmsMeter

DAY = datetime(2025, 3, 4, tzinfo=UTC)
ADDR = IPv4Address("TCP", "127.0.0.1", 4059)


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def cut(meter: SimulatedDlmsMeter, clock: Clock, down: datetime, up: datetime) -> None:
    clock.t = down
    meter.power_down()
    clock.t = up
    meter.power_up()


class PowerCutTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock(DAY + timedelta(hours=9))
        self.meter = SimulatedDlmsMeter(now=self.clock, daily_power_flag=False)

    def test_power_down_and_up_are_logged_as_standard_events(self) -> None:
        cut(self.meter, self.clock, DAY + timedelta(hours=10),
            DAY + timedelta(hours=10, minutes=40))
        self.assertEqual(self.meter.events, [(DAY + timedelta(hours=10), 1),
                                             (DAY + timedelta(hours=10, minutes=40), 2)])
        self.assertEqual(self.meter.power_cuts, [(DAY + timedelta(hours=10),
                                                  DAY + timedelta(hours=10, minutes=40))])

    def test_a_second_power_down_while_down_logs_nothing(self) -> None:
        self.meter.power_down()
        self.meter.power_down()
        self.meter.power_up()
        self.meter.power_up()
        self.assertEqual([code for _, code in self.meter.events], [1, 2])

    def test_no_entries_without_power_and_the_first_after_is_flagged(self) -> None:
        """Down 10:00, up 10:40: the entries of 10:00, 10:15 and 10:30 are not captured,
        the one of 10:45 (its period saw the supply come back) has status bit 0x80."""
        cut(self.meter, self.clock, DAY + timedelta(hours=10),
            DAY + timedelta(hours=10, minutes=40))
        self.clock.t = DAY + timedelta(hours=11)
        times = self.meter.profile_times(DAY + timedelta(hours=9, minutes=45), None)
        self.assertEqual(times, [DAY + timedelta(hours=9, minutes=45),
                                 DAY + timedelta(hours=10, minutes=45),
                                 DAY + timedelta(hours=11)])
        statuses = [self.meter.load_profile_row(t)[1].value for t in times]
        self.assertEqual(statuses, [0, 0x80, 0])

    def test_the_daily_flag_stays_by_default(self) -> None:
        meter = SimulatedDlmsMeter(now=self.clock)
        row = meter.load_profile_row(DAY + timedelta(hours=3))
        self.assertEqual(row[1], axdr.unsigned(0x80))
        self.assertEqual(self.meter.load_profile_row(DAY + timedelta(hours=3))[1],
                         axdr.unsigned(0))

    def test_a_meter_without_power_answers_nothing(self) -> None:
        factory = DlmsMeterServerFactory(self.meter, ServerSettings())
        live = factory.buildProtocol(ADDR)
        assert live is not None
        transport = StringTransport()
        live.makeConnection(transport)
        self.meter.power_down()
        self.assertIsNone(factory.buildProtocol(ADDR))
        live.dataReceived(bytes.fromhex("0001000100010005aabbccddee"))
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        self.meter.power_up()
        self.assertIsNotNone(factory.buildProtocol(ADDR))


class WrapperLineTests(unittest.TestCase):
    def test_a_request_behind_a_bad_frame_in_the_same_bytes_is_answered_at_once(self) -> None:
        # A request, a header of a wrong version, the request again, in one chunk: the
        # second is answered now, not when the client sends again.
        meter = SimulatedDlmsMeter(now=Clock(DAY))
        proto = DlmsMeterServerFactory(meter, ServerSettings()).buildProtocol(ADDR)
        assert proto is not None
        transport = StringTransport()
        proto.makeConnection(transport)
        get = encode_wrapper(WrapperFrame(0x10, 1, bytes.fromhex("c001c100080000010000ff0200")))
        proto.dataReceived(get)
        answer = transport.value()
        self.assertNotEqual(answer, b"")
        transport.clear()
        proto.dataReceived(get + bytes.fromhex("0002001000200005aabbccddee") + get)
        self.assertEqual(transport.value(), answer * 2)
