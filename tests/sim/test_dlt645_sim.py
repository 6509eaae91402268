"""The simulated DL/T 645 meter and bus: addressing, values that grow, the services it answers
(read with follow-up, read/write address, broadcast time, clock writes with passwords, baud,
password, freeze, resets), line faults, and its command line read by ``fep read`` over TCP
and a socat pty pair."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from fep.errors import FrameError
from fep.protocols.dlt645 import services
from fep.protocols.dlt645.client import PROFILE_SINCE, parse_load_records
from fep.protocols.dlt645.dataid import DEFAULT_METER_TZ, decode
from fep.protocols.dlt645.frames import Frame, FrameDecoder
from fep.protocols.dlt645.services import ErrorStatus, ErrorStatus1997, Password
from fep.sim.dlt645 import (
    Dlt645BusFactory,
    SimEvent,
    SimulatedDlt645Meter,
    make_meters,
)
from tests.channels.test_serialport import socat_pty_pair
from tests.inprocess import fep_deferred as fep_command
from tests.processes import start_module

reactor: Any = global_reactor
START = 1_709_280_000.0  # 2024-03-01 08:00:00 UTC
ADDRESS = "000000123456"
WRITER = Password(4, "000000")
CLEARER = Password(2, "123456")


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ask(meter: SimulatedDlt645Meter, request: Frame) -> Frame:
    answer = meter.answer(request)
    assert answer is not None, "no answer"
    # Through the wire and back, as a master would see it.
    (frame,) = FrameDecoder().receive(answer.encode(preamble=4))
    return frame


def read(meter: SimulatedDlt645Meter, di: int) -> bytes:
    frame = services.check_response(ask(meter, services.read_data(ADDRESS, di)),
                                    services.read_data(ADDRESS, di))  # fmt: skip
    return services.decode_read(frame, di).data


def value(meter: SimulatedDlt645Meter, di: int) -> object:
    (reading,) = decode(di, read(meter, di), meter="sim")
    return reading.value


class ValueTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = FakeClock()
        self.meter = SimulatedDlt645Meter(clock=self.clock)

    def test_energy_grows_with_wall_time(self) -> None:
        before = value(self.meter, 0x00010000)
        self.clock.now += 1800
        after = value(self.meter, 0x00010000)
        self.assertEqual((before, after), (Decimal("1234.56"), Decimal("1235.31")))

    def test_tariffs_add_up_to_the_total_and_combined_is_forward_plus_reverse(self) -> None:
        self.clock.now += 12345
        readings = decode(0x0000FF00, read(self.meter, 0x0000FF00), meter="sim")
        values = [r.value for r in readings if isinstance(r.value, Decimal)]
        self.assertEqual(len(values), 5)
        self.assertEqual(sum(values[1:], Decimal(0)), values[0])
        forward, reverse = value(self.meter, 0x00010000), value(self.meter, 0x00020000)
        assert isinstance(forward, Decimal) and isinstance(reverse, Decimal)
        self.assertEqual(values[0], forward + reverse)

    def test_settlement_period_is_the_register_a_month_before(self) -> None:
        self.meter.started = START - 40 * 86400
        month_ago = self.meter.energy(1, 0, self.meter.now() - timedelta(days=30))
        self.assertEqual(value(self.meter, 0x00010001), month_ago)

    def test_clock_in_the_meter_s_zone_with_its_offset(self) -> None:
        self.meter.clock_offset = 90
        self.assertEqual(value(self.meter, 0x04000102), "16:01:30")
        self.assertEqual(value(self.meter, 0x0400010C), "2024-03-01T08:01:30+00:00")

    def test_missing_and_refused_items(self) -> None:
        self.meter.missing = {0x02010200}
        self.meter.refusals = {0x02010100: ErrorStatus.UNAUTHORIZED}
        request = services.read_data(ADDRESS, 0x02010200)
        with self.assertRaises(services.NoRequestedData):
            services.check_response(ask(self.meter, request), request)
        request = services.read_data(ADDRESS, 0x02010100)
        with self.assertRaises(services.Unauthorized):
            services.check_response(ask(self.meter, request), request)
        # A block stops at its first missing member (phases run in order).
        self.assertEqual(len(decode(0x0201FF00, read(self.meter, 0x0201FF00), meter="s")), 1)

    def test_event_records_newest_first_and_empty_when_never_filled(self) -> None:
        self.meter.events = [
            SimEvent(0x03110000, datetime(2024, 1, 1, tzinfo=UTC), None),
            SimEvent(0x03110000, datetime(2024, 2, 1, tzinfo=UTC),
                     datetime(2024, 2, 1, 1, tzinfo=UTC)),
        ]  # fmt: skip
        first = read(self.meter, 0x03110001)
        self.assertEqual(
            first[:6], bytes.fromhex("000008010224")
        )  # 2024-02-01 08:00 local, ss first
        self.assertEqual(read(self.meter, 0x03110002)[6:12], bytes(6))  # still going
        self.assertEqual(read(self.meter, 0x03110003)[:12], bytes(12))

    def test_load_profile_records_every_period(self) -> None:
        self.clock.now += 3600
        times = self.meter.profile_times()
        self.assertEqual(len(times), 4)
        self.assertEqual(times[0], datetime(2024, 3, 1, 8, 15, tzinfo=UTC))
        since = datetime(2024, 3, 1, 8, 30, tzinfo=UTC).astimezone(DEFAULT_METER_TZ)
        request = services.read_data(
            ADDRESS, PROFILE_SINCE, blocks=2, since=since.replace(tzinfo=None)
        )
        answer = ask(self.meter, request)
        self.assertFalse(answer.has_follow_up)  # two records of 87 bytes fit one frame
        records = parse_load_records(services.decode_read(answer).data)
        self.assertEqual([r.time.minute for r in records], [30, 45])

    def test_meter_without_profile_has_no_load_records(self) -> None:
        meter = SimulatedDlt645Meter(clock=self.clock, profile_period=None)
        request = services.read_data(ADDRESS, 0x06000002, blocks=1)
        with self.assertRaises(services.NoRequestedData):
            services.check_response(ask(meter, request), request)

    def test_1997_meter_answers_1997_reads_only(self) -> None:
        meter = SimulatedDlt645Meter(clock=self.clock, edition=1997)
        request = services.read_data_1997(ADDRESS, 0xB611)
        frame = services.check_response(ask(meter, request), request)
        self.assertEqual(decode(0xB611, services.decode_read(frame).data, meter="s",
                                edition=1997)[0].value, Decimal("220"))  # fmt: skip
        refused = ask(meter, services.read_data(ADDRESS, 0x00010000))
        self.assertTrue(refused.is_error)
        self.assertEqual(refused.data, bytes([ErrorStatus1997.ILLEGAL_DATA]))


class AddressingTests(unittest.TestCase):
    def test_own_address_wildcards_and_broadcast_reach_the_meter(self) -> None:
        meter = SimulatedDlt645Meter()
        for address, expected in (
            (ADDRESS, True),
            ("AAAAAAAAAAAA", True),
            ("AAAAAA123456", True),  # abbreviated addressing: AA bytes match any digits
            ("AAAAAA123457", False),
            ("000000123457", False),
            ("999999999999", True),
        ):
            self.assertEqual(meter.addressed(Frame(address, 0x11, b"")), expected, address)

    def test_answers_carry_the_meter_s_own_address(self) -> None:
        meter = SimulatedDlt645Meter()
        answer = ask(meter, services.read_data("AAAAAAAAAAAA", 0x02010100))
        self.assertEqual(answer.address, ADDRESS)

    def test_responses_on_the_line_are_not_requests(self) -> None:
        meter = SimulatedDlt645Meter()
        self.assertIsNone(meter.answer(Frame(ADDRESS, 0x91, b"\x00\x00\x01\x00")))

    def test_make_meters_gives_consecutive_addresses_and_different_registers(self) -> None:
        meters = make_meters(3, "000000000998", clock=FakeClock())
        self.assertEqual([m.address for m in meters],
                         ["000000000998", "000000000999", "000000001000"])  # fmt: skip
        self.assertEqual(len({m.energy(1) for m in meters}), 3)


class ServiceTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = FakeClock()
        self.meter = SimulatedDlt645Meter(clock=self.clock)

    def test_long_answer_goes_in_numbered_follow_ups_and_a_lost_one_is_sent_again(self) -> None:
        self.meter.max_data = 16
        first = ask(self.meter, services.read_data(ADDRESS, 0x0000FF00))
        self.assertTrue(first.has_follow_up)
        self.assertEqual(len(first.data), 16)
        one = ask(self.meter, services.read_follow_up(ADDRESS, 0x0000FF00, 1))
        again = ask(self.meter, services.read_follow_up(ADDRESS, 0x0000FF00, 1))
        self.assertEqual(one, again)
        self.assertEqual(services.decode_read(one).seq, 1)
        self.assertFalse(one.has_follow_up)
        data = services.decode_read(first).data + services.decode_read(one).data
        self.assertEqual(len(decode(0x0000FF00, data, meter="s")), 5)
        beyond = ask(self.meter, services.read_follow_up(ADDRESS, 0x0000FF00, 3))
        self.assertTrue(beyond.is_error)

    def test_read_and_write_address(self) -> None:
        frame = ask(self.meter, services.read_address())
        self.assertEqual(services.decode_read_address(frame), ADDRESS)
        ask(self.meter, services.write_address("000000654321"))
        self.assertEqual(self.meter.address, "000000654321")

    def test_broadcast_time_moves_the_clock_within_five_minutes_and_is_not_answered(
        self,
    ) -> None:
        target = datetime.fromtimestamp(START + 120, UTC).astimezone(DEFAULT_METER_TZ)
        self.assertIsNone(self.meter.answer(services.broadcast_time_sync(target)))
        self.assertEqual(self.meter.clock_offset, 120)
        far = datetime.fromtimestamp(START + 3600, UTC).astimezone(DEFAULT_METER_TZ)
        self.assertIsNone(self.meter.answer(services.broadcast_time_sync(far)))
        self.assertEqual(self.meter.clock_offset, 120)
        self.assertEqual(self.meter.log[-1], "broadcast time ignored: more than 5 min off")

    def test_clock_write_needs_the_password(self) -> None:
        new_time = bytes.fromhex("000017")  # 17:00:00 (ss mm hh)
        refused = ask(self.meter, services.write_data(ADDRESS, 0x04000102, new_time,
                                                      Password(4, "999999")))  # fmt: skip
        self.assertEqual(refused.data, bytes([ErrorStatus.UNAUTHORIZED]))
        done = ask(self.meter, services.write_data(ADDRESS, 0x04000102, new_time, WRITER))
        services.check_response(done, services.write_data(ADDRESS, 0x04000102, b"", WRITER))
        self.assertEqual(value(self.meter, 0x04000102), "17:00:00")
        self.assertEqual(self.meter.clock_offset, 3600)

    def test_change_baud_and_password(self) -> None:
        frame = ask(self.meter, services.change_baud(ADDRESS, 9600))
        self.assertEqual(services.decode_change_baud(frame), 9600)
        self.assertEqual(self.meter.baudrate, 9600)
        new = Password(2, "654321")
        frame = ask(self.meter, services.change_password(ADDRESS, CLEARER, new))
        self.assertEqual(services.decode_change_password(frame), new)
        self.assertEqual(self.meter.passwords[2], "654321")

    def test_resets_and_freeze(self) -> None:
        refused = ask(self.meter, services.meter_reset(ADDRESS, WRITER))  # level 4 < needed 2
        self.assertTrue(refused.is_error)
        ask(self.meter, services.event_reset(ADDRESS, CLEARER, di=0x03300D00))
        self.assertEqual({e.base for e in self.meter.events}, {0x03110000})
        ask(self.meter, services.max_demand_reset(ADDRESS, WRITER))
        self.assertEqual(self.meter.demand, 0)
        ask(self.meter, services.meter_reset(ADDRESS, CLEARER))
        self.assertEqual((value(self.meter, 0x00010000), self.meter.events), (Decimal("0.00"), []))
        frame = ask(self.meter, services.freeze(ADDRESS, day=1, hour=0, minute=0))
        self.assertFalse(frame.is_error)
        self.assertEqual(self.meter.log[-1], "freeze 00000199")


class BusTests(unittest.TestCase):
    def connect(self, factory: Dlt645BusFactory) -> tuple[Any, StringTransport]:
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        assert proto is not None
        proto.makeConnection(transport)
        return proto, transport

    def test_only_the_addressed_meter_answers_after_the_delay(self) -> None:
        clock = MemoryReactorClock()
        meters = make_meters(2, ADDRESS, clock=FakeClock())
        factory = Dlt645BusFactory(meters, clock, answer_delay=0.2)
        proto, transport = self.connect(factory)
        proto.dataReceived(services.read_data("000000123457", 0x00010000).encode(preamble=4))
        self.assertEqual(transport.value(), b"")
        clock.advance(0.2)
        (frame,) = FrameDecoder().receive(transport.value())
        self.assertEqual(frame.address, "000000123457")
        self.assertEqual((meters[0].log, meters[1].log), ([], ["read 00010000"]))

    def test_wildcard_on_a_shared_bus_collides(self) -> None:
        factory = Dlt645BusFactory(make_meters(2, ADDRESS, clock=FakeClock()), MemoryReactorClock())
        factory.answer_delay = 0
        proto, transport = self.connect(factory)
        proto.dataReceived(services.read_address().encode())
        factory.reactor.advance(0)
        self.assertEqual(factory.collisions, 1)
        decoder = FrameDecoder()
        with self.assertRaises(FrameError):
            decoder.receive(transport.value())
            decoder.receive(b"")

    def test_line_faults(self) -> None:
        clock = MemoryReactorClock()
        factory = Dlt645BusFactory([SimulatedDlt645Meter(clock=FakeClock())], clock)
        proto, transport = self.connect(factory)
        request = services.read_data(ADDRESS, 0x02010100).encode(preamble=4)
        factory.echo = True
        factory.noise = b"\x00\x55"
        proto.dataReceived(request)
        clock.advance(0)
        self.assertTrue(transport.value().startswith(request + b"\x00\x55\xfe"))
        transport.clear()
        factory.echo = False
        factory.noise = b""
        factory.damage_answers = 1
        proto.dataReceived(request)
        clock.advance(0)
        with self.assertRaises(FrameError):
            FrameDecoder().receive(transport.value())
        transport.clear()
        factory.drop_answers = 1
        proto.dataReceived(request)
        clock.advance(0)
        self.assertEqual(transport.value(), b"")
        factory.silent = True
        proto.dataReceived(request)
        clock.advance(0)
        self.assertEqual((transport.value(), factory.requests, factory.answers), (b"", 4, 2))

    def test_garbled_request_is_ignored(self) -> None:
        factory = Dlt645BusFactory([SimulatedDlt645Meter(clock=FakeClock())], MemoryReactorClock())
        proto, transport = self.connect(factory)
        raw = bytearray(services.read_data(ADDRESS, 0x02010100).encode())
        raw[-2] ^= 0xFF
        proto.dataReceived(bytes(raw))
        factory.reactor.advance(0)
        self.assertEqual((transport.value(), factory.bad_requests), (b"", 1))



def start_simulator(case: unittest.TestCase, *args: str) -> Deferred[str]:
    """Run ``python -m fep.sim.dlt645 ARGS``; fires with its first line."""
    return start_module(case, "fep.sim.dlt645", *args)


def fep_read(*args: str) -> Deferred[subprocess.CompletedProcess[str]]:
    return fep_command("read", "--protocol", "dlt645", *args)


def json_rows(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


class CommandLineTests(unittest.TestCase):
    """The acceptance path: the simulator process, read by the ``fep read`` command."""

    @inlineCallbacks
    def tcp_route(self, *args: str) -> Any:
        line = yield start_simulator(self, "--port", "0", *args)
        self.assertTrue(line.startswith("serving "), line)
        return "tcp:host=127.0.0.1:port=" + line.rsplit(":", 1)[1]

    @inlineCallbacks
    def test_fep_read_of_the_brief_s_items_from_a_three_meter_bus(self) -> Any:
        route = yield self.tcp_route("--address", "000000123456", "--count", "3")
        result = yield fep_read(
            route, "--address", "000000123457", "-o", "dlt645_items=00010000,02010100",
            "--format", "json",
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        rows = {row["obis"]: row for row in json_rows(result.stdout)}
        self.assertEqual(set(rows), {"1-0:1.8.0*255", "1-0:32.7.0*255"})
        self.assertEqual(rows["1-0:1.8.0*255"]["meter"], "000000123457")
        self.assertEqual(rows["1-0:1.8.0*255"]["unit"], "kWh")
        self.assertGreaterEqual(rows["1-0:1.8.0*255"]["value"], 2234.56)  # the second meter
        self.assertEqual(rows["1-0:32.7.0*255"]["value"], 220.1)

    @inlineCallbacks
    def test_fep_read_with_defaults_events_and_profile(self) -> Any:
        route = yield self.tcp_route("--max-data", "40")
        result = yield fep_read(
            route, "--address", "123456", "-o",
            "dlt645_items=0000FF00,03110001,06000002,04000101,04000102", "--format", "json",
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        rows = json_rows(result.stdout)
        obis = {row.get("obis") for row in rows}
        self.assertTrue({"1-0:15.8.0*255", "1-0:15.8.4*255", "0-0:1.0.0*255"} <= obis, obis)
        self.assertIn("power-outage", {row.get("kind") for row in rows})

    @inlineCallbacks
    def test_unknown_meter_times_out_with_exit_3_naming_route_and_di(self) -> Any:
        route = yield self.tcp_route()
        result = yield fep_read(route, "--address", "000000999999", "--timeout", "0.5")
        self.assertEqual(result.returncode, 3)
        self.assertIn("no valid answer to read of DI 0000FF00 within 0.5 s", result.stderr)
        self.assertIn(route, result.stderr)

    @inlineCallbacks
    def test_unknown_di_is_a_usage_error(self) -> Any:
        route = yield self.tcp_route()
        result = yield fep_read(route, "-o", "dlt645_items=12345678")
        self.assertEqual(result.returncode, 2)
        self.assertIn("DI 12345678", result.stderr)

    @inlineCallbacks
    def test_fep_read_over_a_pty_pair(self) -> Any:
        a, b = yield socat_pty_pair(self)
        line = yield start_simulator(self, "--pty", a, "--count", "2")
        self.assertIn(a, line)
        result = yield fep_read(
            f"serial:{b}:baudrate=2400:bytesize=8:parity=E", "--address", "000000123457",
            "-o", "dlt645_items=00010000", "--format", "json",
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        (row,) = json_rows(result.stdout)
        self.assertEqual((row["meter"], row["obis"]), ("000000123457", "1-0:1.8.0*255"))
