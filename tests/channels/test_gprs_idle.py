"""Idle GPRS sessions are cheap: one reactor call for every session's idle timeout (bytes
push a deadline back without reactor work, nothing runs while sessions are idle), and an
identified session keeps no identification state."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.trial import unittest

from fep.channels.gprs import GprsSettings, ModemSession
from tests.channels.test_gprs import ChannelTestCase, ModemTransport, PushingDlmsMeter, dlms_meter

# Sessions per test here (the bench measures 15,000: fep/bench_gprs.py).
SESSIONS = 200


def imei(n: int) -> str:
    return f"35693803{n:07d}"


class IdleDeadlineTests(ChannelTestCase):
    settings = GprsSettings(identify_timeout=30.0, idle_timeout=120.0)
    meters = tuple(dlms_meter(f"m{n}", f"gprs:imei={imei(n)}") for n in range(SESSIONS))

    def attach(self, n: int) -> tuple[ModemSession, ModemTransport]:
        session = self.factory.buildProtocol(IPv4Address("TCP", "10.1.2.3", 2000 + n))
        assert isinstance(session, ModemSession)
        transport = ModemTransport(2000 + n)
        session.makeConnection(transport)
        session.dataReceived(f"ID:{imei(n)}\r\n".encode())
        self.assertEqual(session.state, "attached")
        return session, transport

    def test_idle_sessions_share_one_reactor_call_and_keep_no_identifier(self) -> None:
        sessions = [self.attach(n) for n in range(SESSIONS)]
        (call,) = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime(), 120.0)
        self.assertEqual(len(self.channel.idle), SESSIONS)
        for session, _ in sessions:
            self.assertIsNone(session.machine._identifier)
            self.assertIsNone(session._timers)

    def test_nothing_runs_while_idle_and_all_are_reaped_at_the_timeout(self) -> None:
        sessions = [self.attach(n) for n in range(SESSIONS)]
        call = self.clock.getDelayedCalls()[0]
        self.clock.advance(119.9)
        # Not one call ran: the one reactor call still waits for the first deadline.
        self.assertEqual(self.clock.getDelayedCalls(), [call])
        self.assertFalse(any(t.disconnecting for _, t in sessions))
        self.clock.advance(0.1)
        self.assertTrue(all(t.aborted for _, t in sessions))
        self.assertEqual(self.channel.stats.idle_closed, SESSIONS)
        for session, transport in sessions:
            self.lose(session, transport)
        self.assertEqual((len(self.channel.idle), self.clock.getDelayedCalls()), (0, []))

    def test_bytes_push_the_deadline_back_without_reactor_calls(self) -> None:
        (quiet, quiet_t), (busy, busy_t) = self.attach(0), self.attach(1)
        meter = PushingDlmsMeter()
        (call,) = self.clock.getDelayedCalls()
        for _ in range(10):
            self.clock.advance(10)
            busy.dataReceived(meter.push()[:5])
            self.assertEqual(self.clock.getDelayedCalls(), [call])
        self.clock.advance(20)  # t = 120: the quiet one's deadline; the busy one heard at 100
        self.assertTrue(quiet_t.aborted)
        self.assertFalse(busy_t.disconnecting)
        self.lose(quiet, quiet_t)
        (call,) = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime(), 220.0)
        self.clock.advance(99.9)
        self.assertFalse(busy_t.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(busy_t.aborted)
        self.assertEqual(self.channel.stats.idle_closed, 2)

    def test_entries_of_sessions_gone_are_swept(self) -> None:
        self.attach(0)
        for n in range(1, SESSIONS):
            session, transport = self.attach(n)
            session.drop("test")
            self.lose(session, transport)
        self.assertEqual(len(self.channel.idle), 1)
        self.assertLessEqual(len(self.channel.idle._heap), 2 + 64)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)


class SharedDefaultsTests(unittest.TestCase):
    def test_machines_share_no_mutable_default(self) -> None:
        from fep.channels.gprs_session import _NO_ACTIONS, _NONE_REPLACED

        self.assertEqual((_NO_ACTIONS, _NONE_REPLACED), ([], frozenset()))
