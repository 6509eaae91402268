"""Dial-up through the modem pool to simulated meters behind emulated Hayes modems on socat
pty pairs: reads over pool.call and the dialup endpoint, the retry policy by result code,
line faults, carrier loss mid-session, hang-up by escape, by DTR and their fallbacks."""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial import unittest

from fep.channels.modem.dialup import DialFailed, DialSettings, RetryPolicy, normalise_number
from fep.channels.modem.stats import CallOutcome
from fep.errors import ChannelError, ConfigError, RouteError, SessionTimeout
from fep.model import Meter, ObisCode, Reading
from fep.protocols.dlt645.session import Dlt645Protocol
from fep.protocols.iec62056_21.session import IecReadoutProtocol
from fep.protocols.session import connect_within
from fep.sim.dlt645 import Dlt645BusFactory, SimulatedDlt645Meter
from fep.sim.hayes import Outcome, Scripted
from fep.sim.iec62056_21 import IecMeterServerFactory, SimulatedIecMeter
from tests.channels.modem.emulated import FEP_GUARD, emulated_pool, new_exchange, reactor

IEC_NUMBER = "5551001"
DLT_NUMBER = "5552002"


def iec_meter(route: str = f"dialup:{IEC_NUMBER}") -> Meter:
    return Meter(id="iec-1", protocol="iec62056-21", route=route, address="10000001")


def exchange_with_meters(answer_delay: float = 0.0) -> Any:
    exchange = new_exchange()
    exchange.add(IEC_NUMBER, IecMeterServerFactory(
        [SimulatedIecMeter(address="10000001")], reactor, answer_delay=answer_delay))
    exchange.add(DLT_NUMBER, Dlt645BusFactory(
        [SimulatedDlt645Meter(address="000000123456")], reactor))
    return exchange


def read_iec(meter: Meter | None = None, timeout: float = 5.0) -> Any:
    meter = meter or iec_meter()
    return lambda endpoint: IecReadoutProtocol().read(reactor, endpoint, meter, timeout)


class DialupReadTests(unittest.TestCase):
    async def test_pool_call_reads_an_iec_meter_and_hangs_up_cleanly(self) -> None:
        exchange = exchange_with_meters()
        pool, [modem] = await emulated_pool(self, exchange, 1)
        records = await pool.call(IEC_NUMBER, read_iec())
        self.assertIn(ObisCode.parse("1.8.0"),
                      [r.obis for r in records if isinstance(r, Reading)])
        [call] = pool.calls
        self.assertEqual((call.line, call.number, call.outcome, call.result),
                         ("m1", IEC_NUMBER, CallOutcome.COMPLETED, "CONNECT 9600"))
        self.assertGreater(call.connected_seconds, 0)
        self.assertGreaterEqual(call.seconds, call.connected_seconds)
        self.assertEqual(modem.commands[-2:], [f"ATDT{IEC_NUMBER}", "ATH"])
        self.assertEqual((modem.escapes, modem.hangups, modem.online), (1, 1, False))
        self.assertEqual(pool.active, 0)

    async def test_dlt645_meter_over_the_dialup_endpoint(self) -> None:
        exchange = exchange_with_meters()
        pool, [modem] = await emulated_pool(self, exchange, 1)
        meter = Meter(id="dlt-1", protocol="dlt645", route=f"dialup:{DLT_NUMBER}",
                      address="000000123456")
        records = await Dlt645Protocol().read(reactor, pool.endpoint(DLT_NUMBER), meter, 5.0)
        self.assertTrue(records)
        self.assertTrue(all(r.meter == "dlt-1" for r in records))
        [record] = await _when(lambda: list(pool.calls))
        self.assertEqual(record.outcome, CallOutcome.COMPLETED)
        self.assertEqual(pool.active, 0)
        self.assertFalse(modem.online)

    async def test_dlms_over_hdlc_and_ansi_c12_18_meters_over_calls(self) -> None:
        from fep.protocols.ansi_c12.session import C1218Protocol
        from fep.protocols.dlms.security import SecurityKeys
        from fep.protocols.dlms.server import ServerSettings
        from fep.protocols.dlms.session import DlmsProtocol
        from fep.sim.ansi_c12 import C12MeterServerFactory, SimulatedC12Meter
        from fep.sim.dlms import EXAMPLE_AK, EXAMPLE_EK, DlmsMeterServerFactory
        from fep.sim.dlms_meter import SimulatedDlmsMeter

        exchange = new_exchange()
        exchange.add("3001", DlmsMeterServerFactory(
            SimulatedDlmsMeter(),
            ServerSettings(password=b"12345678", keys=SecurityKeys(EXAMPLE_EK, EXAMPLE_AK)),
            hdlc=True))
        exchange.add("3002", C12MeterServerFactory(SimulatedC12Meter(password=b"s3cret"),
                                                   reactor))
        pool, modems = await emulated_pool(self, exchange, 2)
        dlms = Meter("dlms-1", "dlms", "dialup:3001", metadata={
            "dlms_link": "hdlc", "dlms_auth": "low", "dlms_password": "12345678"})
        c12 = Meter("c12-1", "ansi-c12.18", "dialup:3002",
                    metadata={"c12_password": "s3cret"})
        got = await gatherResults([
            pool.call("3001", lambda ep: DlmsProtocol().read(reactor, ep, dlms, 5.0)),
            pool.call("3002", lambda ep: C1218Protocol().read(reactor, ep, c12, 5.0)),
        ])
        for meter, records in zip((dlms, c12), got, strict=True):
            readings = [r for r in records if isinstance(r, Reading)]
            self.assertTrue(readings, meter.id)
            self.assertTrue(all(r.meter == meter.id for r in readings))
        self.assertEqual([c.outcome for c in pool.calls], [CallOutcome.COMPLETED] * 2)
        self.assertEqual(sum(m.hangups for m in modems), 2)

    async def test_ansi_c12_21_meter_over_a_call(self) -> None:
        """C12.21 is C12.18 for telephone lines: identify with its ticket, timing setup,
        DES authentication, then the table reads, all over the dial-up call."""
        from fep.protocols.ansi_c12.c1218 import Standard
        from fep.protocols.ansi_c12.session import C1221Protocol
        from fep.sim.ansi_c12 import C12MeterServerFactory, SimulatedC12Meter

        key = bytes.fromhex("0123456789abcdef")
        simulated = SimulatedC12Meter(password=None, standard=Standard.C12_21, auth_key=key,
                                      auth_key_id=2)
        exchange = new_exchange()
        exchange.add("3003", C12MeterServerFactory(simulated, reactor))
        pool, [modem] = await emulated_pool(self, exchange, 1)
        meter = Meter("c1221-1", "ansi-c12.21", "dialup:3003", metadata={
            "c12_auth_key": key.hex(), "c12_auth_key_id": "2"})
        records = await pool.call(
            "3003", lambda ep: C1221Protocol().read(reactor, ep, meter, 5.0))
        self.assertTrue([r for r in records if isinstance(r, Reading)])
        self.assertIn("authenticate", " ".join(simulated.log))
        self.assertIn("timing setup", " ".join(simulated.log))
        self.assertEqual([c.outcome for c in pool.calls], [CallOutcome.COMPLETED])
        self.assertEqual(modem.hangups, 1)

    async def test_dial_prefix_and_pulse_dialling(self) -> None:
        exchange = exchange_with_meters()
        pool, [modem] = await emulated_pool(
            self, exchange, 1,
            dial=DialSettings(prefix="0,", tone=False, guard=FEP_GUARD, hangup_timeout=0.5))
        await pool.call("555-1001", read_iec())
        self.assertIn("ATDP0,5551001", modem.commands)
        self.assertEqual(exchange.calls[-1].number, IEC_NUMBER)

    async def test_remote_end_sees_fep_bytes_and_fep_sees_its_answers(self) -> None:
        echo_log: list[bytes] = []

        class Echo(Protocol):
            def dataReceived(self, data: bytes) -> None:
                echo_log.append(data)
                assert self.transport is not None
                self.transport.write(data.upper())

        exchange = new_exchange()
        exchange.add("777", Factory.forProtocol(Echo))
        pool, _ = await emulated_pool(self, exchange, 1)

        class Client(Protocol):
            def __init__(self) -> None:
                self.got = b""
                self.done: Deferred[bytes] = Deferred()
                self.lost: Failure | None = None

            def connectionMade(self) -> None:
                assert self.transport is not None
                self.transport.write(b"hello modem")

            def dataReceived(self, data: bytes) -> None:
                self.got += data
                if self.got == b"HELLO MODEM":
                    self.done.callback(self.got)

            def connectionLost(self, reason: Failure) -> None:
                self.lost = reason

        client = Client()
        await connect_within(reactor, pool.endpoint("777"), client, "dialup:777", 5.0)
        self.assertEqual(await client.done, b"HELLO MODEM")
        peer = client.transport.getPeer()  # type: ignore[union-attr]
        self.assertEqual((peer.number, peer.line), ("777", "m1"))
        client.transport.loseConnection()  # type: ignore[union-attr]
        await _when(lambda: client.lost)
        self.assertTrue(client.lost.check(ConnectionDone))  # type: ignore[union-attr]
        self.assertEqual(b"".join(echo_log), b"hello modem")


class RetryTests(unittest.TestCase):
    async def test_busy_is_retried_soon(self) -> None:
        exchange = exchange_with_meters()
        exchange.script(IEC_NUMBER, Outcome.BUSY, Outcome.BUSY)
        pool, _ = await emulated_pool(self, exchange, 1)
        records = await pool.call(IEC_NUMBER, read_iec())
        self.assertTrue(records)
        self.assertEqual([c.outcome for c in pool.calls],
                         [CallOutcome.BUSY, CallOutcome.BUSY, CallOutcome.COMPLETED])
        self.assertEqual(pool.sites[IEC_NUMBER].attempts, 3)
        self.assertEqual(pool.sites[IEC_NUMBER].connects, 1)

    async def test_busy_gives_up_after_its_retries_naming_number_and_line(self) -> None:
        exchange = exchange_with_meters()
        exchange.script(IEC_NUMBER, *[Outcome.BUSY] * 3)
        pool, _ = await emulated_pool(
            self, exchange, 1, policy=RetryPolicy(busy_delay=0.01, busy_retries=2))
        error = await _failure(pool.call(IEC_NUMBER, read_iec()), DialFailed)
        self.assertEqual((error.number, error.line, error.outcome, error.attempts),
                         (IEC_NUMBER, "m1", CallOutcome.BUSY, 3))
        self.assertIn(IEC_NUMBER, str(error))
        self.assertIn("m1", str(error))
        self.assertEqual(error.route, f"dialup:{IEC_NUMBER}")
        self.assertEqual(pool.active, 0)

    async def test_no_answer_and_no_carrier_back_off(self) -> None:
        exchange = exchange_with_meters()
        exchange.script(IEC_NUMBER, Outcome.NO_ANSWER, Outcome.NO_CARRIER)
        policy = RetryPolicy(busy_delay=0.0, backoff=0.2, backoff_factor=2.0, retries=2)
        pool, _ = await emulated_pool(self, exchange, 1, policy=policy)
        await pool.call(IEC_NUMBER, read_iec())
        calls = list(pool.calls)
        self.assertEqual([c.outcome for c in calls],
                         [CallOutcome.NO_ANSWER, CallOutcome.NO_CARRIER, CallOutcome.COMPLETED])
        # The pauses between attempts grow: 0.2 s after the first failure, 0.4 s after the
        # second (each measured from the end of one attempt to the start of the next).
        gaps = [
            (b.started - a.started).total_seconds() - a.seconds
            for a, b in itertools.pairwise(calls)
        ]
        self.assertGreaterEqual(gaps[0], 0.2 - 0.02)
        self.assertGreaterEqual(gaps[1], 0.4 - 0.02)

    async def test_no_dialtone_takes_the_line_out_with_an_alarm_and_another_line_calls(
        self,
    ) -> None:
        exchange = exchange_with_meters()
        alarms: list[Any] = []
        pool, [m1, _m2] = await emulated_pool(self, exchange, 2)
        pool.on_alarm = alarms.append
        m1.dialtone = False
        records = await pool.call(IEC_NUMBER, read_iec())
        self.assertTrue(records)
        self.assertEqual([(c.line, c.outcome) for c in pool.calls],
                         [("m1", CallOutcome.NO_DIALTONE), ("m2", CallOutcome.COMPLETED)])
        self.assertEqual(pool.in_service(), ["m2"])
        [alarm] = alarms
        self.assertEqual((alarm.line, alarm.number), ("m1", IEC_NUMBER))
        self.assertIn("NO DIALTONE", alarm.reason)
        self.assertEqual(pool.alarms, alarms)
        # The fault cleared, the line comes back.
        m1.dialtone = True
        await pool.put_back("m1")
        self.assertEqual(pool.in_service(), ["m1", "m2"])

    async def test_last_line_out_fails_waiting_jobs(self) -> None:
        exchange = exchange_with_meters()
        pool, [m1] = await emulated_pool(self, exchange, 1)
        m1.dialtone = False
        error = await _failure(pool.call(IEC_NUMBER, read_iec()), ChannelError)
        self.assertIn("no modem line in service", str(error))


class CarrierLossTests(unittest.TestCase):
    async def test_carrier_lost_mid_session_is_a_channel_error_naming_number_and_line(
        self,
    ) -> None:
        exchange = exchange_with_meters(answer_delay=0.5)
        exchange.script(IEC_NUMBER, Scripted(Outcome.CONNECT, drop_after=0.1))
        pool, _ = await emulated_pool(self, exchange, 1)
        error = await _failure(
            IecReadoutProtocol().read(reactor, pool.endpoint(IEC_NUMBER), iec_meter(), 5.0),
            ChannelError,
        )
        self.assertIn(f"carrier lost on modem m1 calling {IEC_NUMBER}", str(error))
        self.assertEqual(error.route, f"dialup:{IEC_NUMBER}")
        [record] = await _when(lambda: list(pool.calls))
        self.assertEqual(record.outcome, CallOutcome.CARRIER_LOST)
        self.assertEqual(pool.active, 0)
        # The line is in command mode again: the next call works.
        self.assertTrue(await pool.call(IEC_NUMBER, read_iec()))

    async def test_pool_call_retries_a_session_that_lost_its_carrier(self) -> None:
        exchange = exchange_with_meters(answer_delay=0.3)
        exchange.script(IEC_NUMBER, Scripted(Outcome.CONNECT, drop_after=0.1))
        pool, _ = await emulated_pool(self, exchange, 1)
        records = await pool.call(IEC_NUMBER, read_iec())
        self.assertTrue(records)
        self.assertEqual([c.outcome for c in pool.calls],
                         [CallOutcome.CARRIER_LOST, CallOutcome.COMPLETED])

    async def test_session_failure_on_a_good_line_is_not_retried(self) -> None:
        exchange = new_exchange()
        exchange.add("888", Factory.forProtocol(Protocol))  # answers nothing
        pool, _ = await emulated_pool(self, exchange, 1)
        meter = iec_meter("dialup:888")
        await _failure(pool.call("888", read_iec(meter, timeout=0.3)), SessionTimeout)
        [record] = list(pool.calls)
        self.assertEqual(record.outcome, CallOutcome.SESSION_FAILED)


class HangUpTests(unittest.TestCase):
    async def test_dtr_hang_up(self) -> None:
        exchange = exchange_with_meters()
        pool, [modem] = await emulated_pool(
            self, exchange, 1, dial=DialSettings(hangup="dtr", guard=FEP_GUARD, hangup_timeout=0.5))
        await pool.call(IEC_NUMBER, read_iec())
        self.assertEqual((modem.escapes, modem.hangups, modem.online), (0, 1, False))
        self.assertEqual([c.outcome for c in pool.calls], [CallOutcome.COMPLETED])

    async def test_escape_without_answer_falls_back_to_dtr(self) -> None:
        exchange = exchange_with_meters()
        pool, [modem] = await emulated_pool(self, exchange, 1)
        modem.s[2] = 200  # this modem has its escape character switched off
        await pool.call(IEC_NUMBER, read_iec())
        self.assertEqual((modem.escapes, modem.hangups, modem.online), (0, 1, False))
        self.assertEqual(pool.in_service(), ["m1"])
        self.assertTrue(await pool.call(IEC_NUMBER, read_iec()))

    async def test_a_line_that_cannot_hang_up_leaves_the_pool(self) -> None:
        exchange = exchange_with_meters()
        pool, [modem] = await emulated_pool(self, exchange, 1, dtr=False)
        modem.s[2] = 200
        await pool.call(IEC_NUMBER, read_iec())
        self.assertEqual(pool.in_service(), [])
        [alarm] = pool.alarms
        self.assertIn("still online", alarm.reason)


class CancelTests(unittest.TestCase):
    async def test_connect_deadline_during_the_dial_aborts_it_and_frees_the_line(self) -> None:
        exchange = exchange_with_meters()
        exchange.ring_time = 1.0
        pool, [modem] = await emulated_pool(self, exchange, 1)
        endpoint = pool.endpoint(IEC_NUMBER)
        # Without its own bound (every retry the policy allows), the meter's deadline rules.
        endpoint.connect_timeout = None
        error = await _failure(
            IecReadoutProtocol().read(reactor, endpoint, iec_meter(), 0.3),
            ChannelError,
        )
        self.assertIn("no connection within", str(error))
        [record] = await _when(lambda: list(pool.calls))
        self.assertEqual(record.outcome, CallOutcome.CANCELLED)
        self.assertEqual(pool.active, 0)
        self.assertFalse(modem.online)


class SettingsTests(unittest.TestCase):
    def test_retry_delays_by_outcome(self) -> None:
        policy = RetryPolicy(busy_delay=10, busy_retries=2, backoff=60, backoff_factor=2,
                             backoff_max=200, retries=3)
        self.assertEqual(policy.delay(CallOutcome.BUSY, 1, 0), 10)
        self.assertEqual(policy.delay(CallOutcome.BUSY, 2, 0), 10)
        self.assertIsNone(policy.delay(CallOutcome.BUSY, 3, 0))
        self.assertEqual([policy.delay(CallOutcome.NO_ANSWER, 0, n) for n in (1, 2, 3, 4)],
                         [60, 120, 200, None])
        self.assertEqual(policy.delay(CallOutcome.CARRIER_LOST, 5, 1), 60)
        self.assertEqual(policy.delay(CallOutcome.NO_DIALTONE, 9, 9), 0)
        self.assertIsNone(policy.delay(CallOutcome.SESSION_FAILED, 0, 0))

    def test_bad_settings_are_config_errors(self) -> None:
        self.assertRaises(ConfigError, RetryPolicy, backoff_factor=0.5)
        self.assertRaises(ConfigError, RetryPolicy, retries=-1)
        self.assertRaises(ConfigError, DialSettings, prefix="9;")
        self.assertRaises(ConfigError, DialSettings, hangup="drop")
        self.assertRaises(ConfigError, DialSettings, guard=0)

    def test_numbers(self) -> None:
        self.assertEqual(normalise_number("+54 (11) 4321-0000"), "+541143210000")
        self.assertEqual(DialSettings(prefix="0,").command("555 1001"), "ATDT0,5551001")
        for bad in ("", "55x1", "1+2", "555;ATZ"):
            self.assertRaises(RouteError, normalise_number, bad)


async def _failure(d: Deferred[Any], kind: type) -> Any:
    try:
        await d
    except kind as e:
        return e
    raise AssertionError(f"no {kind.__name__}")


async def _when(probe: Any, timeout: float = 5.0) -> Any:
    """Wait (on the reactor) until ``probe()`` is truthy."""
    from twisted.internet.task import deferLater

    waited = 0.0
    while not probe():
        if waited > timeout:
            raise AssertionError("condition not met in time")
        await deferLater(reactor, 0.01, lambda: None)
        waited += 0.01
    return probe()
