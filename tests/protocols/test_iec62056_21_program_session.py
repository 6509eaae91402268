"""IEC 62056-21 programming mode through the Twisted session against the simulator over
loopback TCP: load profile and logbook by range, clock read and set (the simulated meter's
clock within 1 s), parameter-set, and the meter's refusals (wrong password: its break or its
error message; an unknown register) naming meter, command and the meter's text."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs
from twisted.internet import reactor as global_reactor
from twisted.internet.endpoints import clientFromString
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from fep.errors import ConfigError, NotSupported, ProtocolError, SessionTimeout
from fep.interfaces import IClock, ICommands, IEventReader, IProfileReader
from fep.model import EventKind, IntervalBlock, Meter, MeterEvent, Quality
from fep.protocols.iec62056_21.programming import MeterRefusal
from fep.protocols.iec62056_21.session import IecReadoutProtocol
from fep.protocols.registry import protocol_commands
from fep.sim.iec62056_21 import IecMeterServerFactory, SimulatedIecMeter

reactor: Any = global_reactor


class ProgrammingSessionTests(unittest.TestCase):
    timeout = 30

    def serve(self, sim: SimulatedIecMeter, **metadata: str) -> Meter:
        port = reactor.listenTCP(0, IecMeterServerFactory([sim], reactor),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        route = f"tcp:host=127.0.0.1:port={port.getHost().port}"
        self.sim = sim
        return Meter("m1", "iec62056-21", route,
                     metadata={"iec_password": "00000000", **metadata})

    def endpoint(self, meter: Meter) -> Any:
        return clientFromString(reactor, meter.route)

    def test_capabilities(self) -> None:
        protocol = IecReadoutProtocol()
        for interface in (IProfileReader, IEventReader, IClock, ICommands):
            verifyObject(interface, protocol)
        self.assertEqual(protocol_commands("iec62056-21"),
                         {"time-set", "time-sync", "parameter-set"})

    async def test_load_profile_by_range(self) -> None:
        meter = self.serve(SimulatedIecMeter())
        until = datetime.now(UTC).replace(second=0, microsecond=0)
        until -= timedelta(minutes=until.minute % 15)
        since = until - timedelta(hours=2)
        records = await IecReadoutProtocol().read_profile(
            reactor, self.endpoint(meter), meter, since, until, 5)
        blocks = [r for r in records if isinstance(r, IntervalBlock)]
        self.assertEqual(sorted(str(b.obis) for b in blocks),
                         ["1-0:1.5.0*255", "1-0:2.5.0*255"])
        starts = [s for s, _, _ in blocks[0].intervals()]
        # The captures since..until: the intervals from one before ``since`` on.
        self.assertEqual((starts[0], starts[-1]), (since - timedelta(minutes=15),
                                                   until - timedelta(minutes=15)))
        self.assertEqual(self.sim.commands_seen[0], "P1")
        self.assertTrue(self.sim.commands_seen[1].startswith("R5 P.01(0"))

    async def test_the_power_failure_marks_its_interval(self) -> None:
        now = time.time()
        sim = SimulatedIecMeter(logbook=[(now - 3600 - 60, 0x80)])
        meter = self.serve(sim)
        records = await IecReadoutProtocol().read_profile(
            reactor, self.endpoint(meter), meter, datetime.fromtimestamp(now - 7200, UTC),
            datetime.fromtimestamp(now, UTC), 5)
        (block,) = [r for r in records if isinstance(r, IntervalBlock)
                    and str(r.obis) == "1-0:1.5.0*255"]
        flagged = [s for s, _, q in block.intervals() if q & Quality.POWER_DOWN]
        self.assertEqual(len(flagged), 1)
        self.assertTrue(flagged[0].timestamp() < now - 3660 <= flagged[0].timestamp() + 900)

    async def test_logbook_since(self) -> None:
        now = time.time()
        sim = SimulatedIecMeter(logbook=[(now - 86400 * 3, 0x80), (now - 7200, 0x80),
                                         (now - 7000, 0x40)])
        meter = self.serve(sim)
        since = datetime.fromtimestamp(now - 86400, UTC)
        records = await IecReadoutProtocol().read_events(reactor, self.endpoint(meter), meter,
                                                         since, 5)
        events = [r for r in records if isinstance(r, MeterEvent)]
        self.assertEqual([e.kind for e in events],
                         [EventKind.POWER_OUTAGE, EventKind.POWER_RESTORED])
        self.assertLess(abs(events[0].time.timestamp() - (now - 7200)), 1.0)

    async def test_r1_and_plain_stamps_where_the_meter_wants_them(self) -> None:
        meter = self.serve(SimulatedIecMeter(), iec_read_command="R1",
                           iec_profile_stamp="plain")
        until = datetime.now(UTC)
        records = await IecReadoutProtocol().read_profile(
            reactor, self.endpoint(meter), meter, until - timedelta(hours=1), until, 5)
        self.assertTrue(records)
        self.assertRegex(self.sim.commands_seen[1], r"^R1 P\.01\(\d{10};\d{10}\)$")

    async def test_a_bad_command_setting_is_a_config_error(self) -> None:
        meter = self.serve(SimulatedIecMeter(), iec_read_command="X5")
        with self.assertRaises(ConfigError) as caught:
            await IecReadoutProtocol().read_clock(reactor, self.endpoint(meter), meter, 5)
        self.assertEqual(caught.exception.key, "iec_read_command")

    async def test_clock_read(self) -> None:
        meter = self.serve(SimulatedIecMeter(clock_offset=-125.0))
        clock = await IecReadoutProtocol().read_clock(reactor, self.endpoint(meter), meter, 5)
        self.assertLess(abs((clock - datetime.now(UTC)).total_seconds() + 125), 2.0)

    async def test_a_midnight_between_the_reads_keeps_the_right_day(self) -> None:
        midnight = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
        for before, expected in ((1.0, datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC)),
                                 (0.7, datetime(2026, 3, 1, 0, 0, 0, tzinfo=UTC))):
            calls = iter(range(100))

            def clock(before: float = before, calls: Any = calls) -> float:
                # The meter's clock moves 0.4 s at each look: date, time, date again.
                return midnight - before + 0.4 * next(calls)

            meter = self.serve(SimulatedIecMeter(clock=clock))
            found = await IecReadoutProtocol().read_clock(reactor, self.endpoint(meter),
                                                          meter, 5)
            self.assertEqual(found, expected)

    async def test_clock_set_puts_the_meter_within_a_second(self) -> None:
        sim = SimulatedIecMeter(clock_offset=3 * 86400 + 400.0)
        meter = self.serve(sim)
        done = await IecReadoutProtocol().set_clock(reactor, self.endpoint(meter), meter, 5)
        self.assertIn("clock", done)
        self.assertLess(abs(sim.meter_time().timestamp() - time.time()), 1.0)
        self.assertEqual(sim.clock_sets, 2)
        self.assertEqual([c.split("(")[0] for c in sim.commands_seen[1:3]],
                         ["W5 0.9.1", "W5 0.9.2"])
        # The clock set went into the meter's logbook.
        self.assertEqual(sim.logbook[-1][1], 0x20)

    async def test_clock_set_in_the_separated_format(self) -> None:
        sim = SimulatedIecMeter(clock_offset=600.0, clock_format="separated")
        meter = self.serve(sim, iec_clock_format="separated")
        await IecReadoutProtocol().set_clock(reactor, self.endpoint(meter), meter, 5)
        self.assertLess(abs(sim.meter_time().timestamp() - time.time()), 1.0)
        self.assertRegex(sim.commands_seen[1], r"^W5 0\.9\.1\(\d\d:\d\d:\d\d\)$")

    async def test_parameter_set_writes_the_documented_register(self) -> None:
        sim = SimulatedIecMeter()
        meter = self.serve(sim)
        done = await IecReadoutProtocol().run_command(
            reactor, self.endpoint(meter), meter, "parameter-set",
            {"profile-period": "30", "progress": {}}, 5, lambda _: None)
        self.assertEqual(dict(done), {"profile-period": "30"})
        self.assertEqual(sim.parameters["0.8.4"], "30")

    async def test_parameter_set_of_an_unknown_name_is_refused_before_dialling(self) -> None:
        sim = SimulatedIecMeter()
        meter = self.serve(sim)
        with self.assertRaises(ConfigError) as caught:
            await IecReadoutProtocol().run_command(
                reactor, self.endpoint(meter), meter, "parameter-set", {"colour": "red"}, 5,
                lambda _: None)
        self.assertIn("colour", caught.exception.message)
        self.assertIn("profile-period", caught.exception.message)
        self.assertEqual(sim.commands_seen, [])

    async def test_values_that_cannot_go_in_a_data_set_are_refused(self) -> None:
        sim = SimulatedIecMeter()
        meter = self.serve(sim)
        with self.assertRaises(ConfigError):
            await IecReadoutProtocol().run_command(
                reactor, self.endpoint(meter), meter, "parameter-set",
                {"profile-period": "15)(0.9.1(000000"}, 5, lambda _: None)
        bad = attrs.evolve(meter, metadata={"iec_password": "pässwort"})
        with self.assertRaises(ConfigError) as caught:
            await IecReadoutProtocol().read_clock(reactor, self.endpoint(bad), bad, 5)
        self.assertEqual(caught.exception.key, "iec_password")
        self.assertNotIn("pässwort", caught.exception.message)
        self.assertEqual(sim.commands_seen, [])

    async def test_a_meters_own_parameter_list(self) -> None:
        sim = SimulatedIecMeter(parameters={"C.7.0": "0"})
        meter = self.serve(sim, iec_parameters="outage-count=C.7.0")
        await IecReadoutProtocol().run_command(
            reactor, self.endpoint(meter), meter, "parameter-set", {"outage-count": "0"}, 5,
            lambda _: None)
        self.assertIn("W5 C.7.0(0)", sim.commands_seen)

    async def test_other_commands_are_not_supported(self) -> None:
        meter = self.serve(SimulatedIecMeter())
        with self.assertRaises(NotSupported):
            await IecReadoutProtocol().run_command(
                reactor, self.endpoint(meter), meter, "disconnect", {}, 5, lambda _: None)


class RefusalTests(unittest.TestCase):
    timeout = 30

    serve = ProgrammingSessionTests.serve
    endpoint = ProgrammingSessionTests.endpoint

    async def test_a_wrong_password_is_the_meters_break(self) -> None:
        sim = SimulatedIecMeter(password="secret")
        meter = self.serve(sim)
        with self.assertRaises(MeterRefusal) as caught:
            await IecReadoutProtocol().set_clock(reactor, self.endpoint(meter), meter, 5)
        e = caught.exception
        self.assertEqual((e.meter, e.command, e.protocol), ("m1", "P1 (password)",
                                                            "iec62056-21"))
        self.assertEqual(e.meter_text, "break (B0)")
        self.assertEqual(e.route, meter.route)
        self.assertIn("meter m1: P1 (password) refused by the meter: break", e.message)
        self.assertEqual((sim.refusals, sim.clock_sets), (1, 0))

    async def test_a_wrong_password_as_the_meters_error_message(self) -> None:
        sim = SimulatedIecMeter(password="secret", password_refusal="error")
        meter = self.serve(sim)
        with self.assertRaises(MeterRefusal) as caught:
            await IecReadoutProtocol().read_clock(reactor, self.endpoint(meter), meter, 5)
        self.assertEqual(caught.exception.meter_text, "ERROR")

    async def test_without_the_password_the_meter_denies_access(self) -> None:
        meter = self.serve(SimulatedIecMeter())
        meter = Meter(meter.id, meter.protocol, meter.route)
        with self.assertRaises(MeterRefusal) as caught:
            await IecReadoutProtocol().read_clock(reactor, self.endpoint(meter), meter, 5)
        self.assertEqual((caught.exception.command, caught.exception.meter_text),
                         ("R5 0.9.2()", "NO ACCESS"))

    async def test_an_unknown_register_is_the_meters_error(self) -> None:
        meter = self.serve(SimulatedIecMeter(), iec_profile="P.02")
        with self.assertRaises(MeterRefusal) as caught:
            await IecReadoutProtocol().read_profile(
                reactor, self.endpoint(meter), meter, datetime.now(UTC) - timedelta(hours=1),
                datetime.now(UTC), 5)
        self.assertTrue(caught.exception.command.startswith("R5 P.02("))
        self.assertEqual(caught.exception.meter_text, "ERROR")

    async def test_naks_and_damaged_answers_are_repeated(self) -> None:
        sim = SimulatedIecMeter(nak_commands=2, corrupt_answers=2)
        meter = self.serve(sim)
        clock = await IecReadoutProtocol().read_clock(reactor, self.endpoint(meter), meter, 5)
        self.assertLess(abs((clock - datetime.now(UTC)).total_seconds()), 2.0)

    async def test_too_many_naks_fail_naming_the_command(self) -> None:
        sim = SimulatedIecMeter(nak_commands=10)
        meter = self.serve(sim, iec_retries="1")
        with self.assertRaises(ProtocolError) as caught:
            await IecReadoutProtocol().read_clock(reactor, self.endpoint(meter), meter, 5)
        self.assertIn("P1 (password): not accepted after 1 repeats", caught.exception.message)

    async def test_silence_is_a_session_timeout_naming_the_step(self) -> None:
        meter = self.serve(SimulatedIecMeter(address="1001"))
        meter = attrs.evolve(meter, address="2002")  # nobody on the line answers this
        with self.assertRaises(SessionTimeout) as caught:
            await IecReadoutProtocol().read_clock(reactor, self.endpoint(meter), meter, 0.3)
        self.assertIn("no answer while awaiting identification", caught.exception.message)
        self.assertEqual(caught.exception.meter, "m1")

    async def test_p2_is_a_clear_not_supported(self) -> None:
        meter = self.serve(SimulatedIecMeter(), iec_password_mode="P2")
        with self.assertRaises(NotSupported) as caught:
            await IecReadoutProtocol().read_clock(reactor, self.endpoint(meter), meter, 5)
        self.assertIn("P2", caught.exception.message)


class SimulatorStateTests(unittest.TestCase):
    def test_profile_values_follow_the_registers(self) -> None:
        sim = SimulatedIecMeter(clock=lambda: 1_700_000_000.0)
        channels = sim.profile_channels()
        self.assertEqual([(c, u) for c, u, _ in channels], [("1.5.0", "kW"), ("2.5.0", "kW")])
        self.assertEqual(channels[0][2], Decimal("0.9"))

    def test_a_date_write_keeps_the_time_of_day(self) -> None:
        sim = SimulatedIecMeter(clock=lambda: 1_700_000_000.0)  # 2023-11-14 22:13:20
        self.assertIsNone(sim.write_register("0.9.2", "231201"))
        self.assertEqual(sim.meter_time(), datetime(2023, 12, 1, 22, 13, 20, tzinfo=UTC))

    def test_a_bad_date_is_the_meters_error(self) -> None:
        sim = SimulatedIecMeter(clock=lambda: 1_700_000_000.0)
        self.assertEqual(sim.write_register("0.9.2", "231341"), "ERROR")
        self.assertEqual(sim.clock_offset, 0.0)
