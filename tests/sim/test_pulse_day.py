"""The issue's acceptance for pulse recorders, end to end: the simulated recorder served over
Modbus TCP, read by ``modbus-pulse`` sessions the way a collection job does (each read
catches up from the end of the last stored period), the records written to a SQLite store.

- A simulated day with known pulse rates on both inputs, a counter rollover, a recorder
  restart (power off 13:07, on 14:20) and a door-open event: the stored 15-minute energy,
  demand, hourly block demand and maximum demand equal the values worked out by hand here,
  to the pulse; the events are stored once with their severity.
- KYZ vs KY: the same pulse train into a KYZ and a KY input gives the same energy; the
  same counts configured the other way give twice (or half) of it.
- Six hours in which fep cannot reach the recorder, then catch-up: no gap and no double in
  the stored intervals.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial import unittest

from fep.errors import FepError
from fep.model import IntervalBlock, Meter, Quality, Record, Severity
from fep.protocols.modbus.session import PulseRecorderProtocol
from fep.pulse import Wiring
from fep.sim.pulse_recorder import Input, PulseRecorder, RateProfile, RecorderServerFactory, at
from fep.store import open_store

reactor: Any = global_reactor
DAY = datetime(2024, 3, 1, tzinfo=UTC)
P15 = timedelta(minutes=15)
ENERGY1, ENERGY2 = "1-1:1.29.0*255", "1-2:1.29.0*255"
DEMAND1, DEMAND2 = "1-1:1.5.0*255", "1-2:1.5.0*255"
BLOCK1 = "1-1:1.15.0*255"
MD1, MD2, BLOCK_MD1 = "1-1:1.6.0*255", "1-2:1.6.0*255", "1-1:1.16.0*255"

# Input 1 (KYZ, 1000 pulses/kWh: 1 Wh a pulse, two counts a pulse): pulses per hour.
RATE1 = {range(0, 8): 1200, range(8, 18): 3600, range(18, 24): 2400}
# Input 2 (KY, 1000 pulses/kWh): 600 pulses an hour all day.
RATE2 = 600
OFF, ON = DAY + timedelta(hours=13, minutes=7), DAY + timedelta(hours=14, minutes=20)
DOOR = DAY + timedelta(hours=10, minutes=3, seconds=17)


def rate1(hour: int) -> int:
    return next(r for hours, r in RATE1.items() if hour in hours)


class SimClock:
    def __init__(self, when: datetime) -> None:
        self.t = when.timestamp()

    def __call__(self) -> float:
        return self.t

    def set(self, when: datetime) -> None:
        self.t = when.timestamp()


class RecorderRun:
    """A recorder on loopback TCP, a store, and reads as a collection job makes them."""

    def __init__(self, case: unittest.TestCase, recorder: PulseRecorder, clock: SimClock,
                 metadata: dict[str, str]) -> None:
        self.case = case
        self.clock = clock
        self.factory = RecorderServerFactory(recorder, reactor, unit=1)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        case.addCleanup(self.port.stopListening)
        self.meter = Meter("rec-1", "modbus-pulse", "tcp:host=127.0.0.1", metadata={
            "modbus_device_map": "sim-pr2", "modbus_retries": "0", **metadata})
        self.store = open_store(f"sqlite:{Path(case.mktemp()).resolve()}.sqlite", reactor)
        self.protocol = PulseRecorderProtocol()
        self.failed = 0
        self.delivered: list[list[Record]] = []

    async def open(self) -> None:
        await self.store.open()
        self.case.addCleanup(self.store.close)

    async def stored_until(self) -> datetime:
        blocks = await self.store.intervals("rec-1", obis=ENERGY1)
        if not blocks:
            return DAY
        last = blocks[-1]
        return last.start + len(last.values) * last.period

    async def read_at(self, when: datetime) -> None:
        self.clock.set(when)
        since = await self.stored_until()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        try:
            records = await self.protocol.read(reactor, endpoint, self.meter, 0.3, since=since)
        except FepError:
            self.failed += 1
            return
        self.delivered.append(records)
        await self.store.write(records)

    async def intervals(self, obis: str) -> list[tuple[datetime, Any, Quality]]:
        return [i for b in await self.store.intervals("rec-1", obis=obis) for i in b.intervals()]


def hourly(until_hour: int, minute: int = 2) -> list[datetime]:
    return [DAY + timedelta(hours=h, minutes=minute) for h in range(1, until_hour + 1)]


class SimulatedDayTests(unittest.TestCase):
    timeout = 120

    async def test_a_day_with_rollover_restart_and_door_open_to_the_pulse(self) -> None:
        clock = SimClock(DAY)
        # 32-bit counter on input 1, 5800 counts short of rolling over at 23:00 the day
        # before: 4800 counts later (2400 pulses at the evening rate, KYZ) it is 1000 short
        # at midnight, and rolls over in the period 00:15-00:30 (600 counts a period).
        recorder = PulseRecorder(
            clock=clock, started=at("2024-02-29T23:00:00"),
            inputs=(Input(RateProfile(((0.0, Fraction(1200)), (8.0, Fraction(3600)),
                                       (18.0, Fraction(2400)))), Wiring.KYZ,
                          start=2**32 - 5800),
                    Input(RateProfile(((0.0, Fraction(RATE2)),)), Wiring.KY, start=77)),
            outages=[(OFF.timestamp(), ON.timestamp())],
            schedule=[(DOOR.timestamp(), "door-open")])
        run = RecorderRun(self, recorder, clock, {
            "pulse1_constant": "1000", "pulse1_wiring": "kyz",
            "pulse2_constant": "1000", "pulse2_wiring": "ky", "pulse_block": "60"})
        await run.open()
        for when in [*hourly(23), DAY + timedelta(days=1, minutes=2)]:
            await run.read_at(when)
        self.assertEqual(run.failed, 1)  # 14:02: the recorder was off and did not answer

        # By hand: period k starts at DAY + k*15 min. Pulses per period: rate / 4.
        lost = {k for k in range(96) if DAY + k * P15 < ON and DAY + (k + 1) * P15 > OFF}
        self.assertEqual(sorted(lost), [52, 53, 54, 55, 56, 57])  # 13:00 .. 14:30
        restart = 57  # 14:15-14:30: counting again from 14:20
        energy1: list[Any] = []
        energy2: list[Any] = []
        for k in range(96):
            hour = k // 4
            if k == restart:
                energy1.append(Decimal(rate1(hour) * 10 // 60))  # 10 minutes since 14:20
                energy2.append(Decimal(RATE2 * 10 // 60))
            elif k in lost:
                energy1.append(None)
                energy2.append(None)
            else:
                energy1.append(Decimal(rate1(hour) // 4))
                energy2.append(Decimal(RATE2 // 4))
        self.assertEqual(energy1[restart], 600)  # 600 pulses: 1200 KYZ counts
        status = [Quality.OK] * 96
        for k in lost - {restart}:
            status[k] = Quality.MISSING | Quality.POWER_DOWN
        status[restart] = Quality.COUNTER_RESET | Quality.POWER_DOWN
        status1 = list(status)
        status1[1] = Quality.OVERFLOW  # 00:15-00:30: the 32-bit counter rolled over

        stored1 = await run.intervals(ENERGY1)
        self.assertEqual([s for s, _, _ in stored1], [DAY + k * P15 for k in range(96)])
        self.assertEqual([v for _, v, _ in stored1], energy1)
        self.assertEqual([q for _, _, q in stored1], status1)
        stored2 = await run.intervals(ENERGY2)
        self.assertEqual([v for _, v, _ in stored2], energy2)
        self.assertEqual([q for _, _, q in stored2], status)
        # Demand: average power over the 15 minutes, W = Wh * 4.
        demand1 = [None if e is None else e * 4 for e in energy1]
        self.assertEqual([v for _, v, _ in await run.intervals(DEMAND1)], demand1)
        self.assertEqual([v for _, v, _ in await run.intervals(DEMAND2)],
                         [None if e is None else e * 4 for e in energy2])
        # Hourly block demand: the hour's energy in W; none where a period is missing.
        blocks = await run.intervals(BLOCK1)
        by_hand = []
        for h in range(24):
            part = energy1[4 * h: 4 * h + 4]
            by_hand.append(None if None in part else sum(part))
        self.assertEqual([v for _, v, _ in blocks], by_hand)
        self.assertEqual(blocks[14][2],
                         Quality.COUNTER_RESET | Quality.POWER_DOWN | Quality.MISSING)

        # Maximum demand of the billing period (March): each read files the largest demand
        # of the periods it read with the end of its window; the billing period's maximum
        # is the largest of those, first reached at 08:15 (input 1: 900 Wh in 15 minutes).
        async def maximum(obis: str) -> tuple[Any, datetime]:
            rows = await run.store.readings("rec-1", obis=obis)
            best = max(r.value for r in rows)
            return best, min(r.time for r in rows if r.value == best)

        self.assertEqual(await maximum(MD1), (Decimal(3600), DAY + timedelta(hours=8, minutes=15)))
        self.assertEqual(await maximum(MD2), (Decimal(600), DAY + P15))
        self.assertEqual(await maximum(BLOCK_MD1), (Decimal(3600), DAY + timedelta(hours=9)))

        events = await run.store.events("rec-1")
        self.assertEqual([(e.code, e.time, e.severity) for e in events], [
            ("door-open", DOOR.replace(microsecond=0), Severity.MAJOR),
            ("power-loss", OFF, Severity.MAJOR),
            ("power-restore", ON, Severity.INFO),
        ])
        self.assertEqual(await run.store.count("events"), 3)


class WiringTests(unittest.TestCase):
    timeout = 60

    async def test_same_pulse_train_into_kyz_and_ky_inputs(self) -> None:
        clock = SimClock(DAY + timedelta(hours=2))
        profile = RateProfile(((0.0, Fraction(1800)),))  # 450 pulses a period
        recorder = PulseRecorder(clock=clock, started=DAY.timestamp() - 900,
                                 inputs=(Input(profile, Wiring.KYZ), Input(profile, Wiring.KY)))
        run = RecorderRun(self, recorder, clock, {
            "pulse1_constant": "1000", "pulse1_wiring": "kyz",
            "pulse2_constant": "1000", "pulse2_wiring": "ky"})
        await run.open()
        await run.read_at(DAY + timedelta(hours=2))
        # The counts are a factor of two apart: 9 periods of 450 pulses since 23:45.
        self.assertEqual((recorder.inputs[0].counter, recorder.inputs[1].counter), (8100, 4050))
        e1 = [v for _, v, _ in await run.intervals(ENERGY1)]
        e2 = [v for _, v, _ in await run.intervals(ENERGY2)]
        self.assertEqual(e1, [Decimal(450)] * 8)
        self.assertEqual(e1, e2)

        # The same counts with the wiring set the other way: a factor of two apart.
        swapped = RecorderRun(self, recorder, clock, {
            "pulse1_constant": "1000", "pulse1_wiring": "ky",
            "pulse2_constant": "1000", "pulse2_wiring": "kyz"})
        await swapped.open()
        await swapped.read_at(DAY + timedelta(hours=2))
        self.assertEqual([v for _, v, _ in await swapped.intervals(ENERGY1)],
                         [Decimal(900)] * 8)
        self.assertEqual([v for _, v, _ in await swapped.intervals(ENERGY2)],
                         [Decimal(225)] * 8)


class OutageCatchUpTests(unittest.TestCase):
    timeout = 120

    async def test_six_hours_unreachable_then_catch_up_without_gap_or_double(self) -> None:
        clock = SimClock(DAY)
        recorder = PulseRecorder(clock=clock, started=at("2024-02-29T23:00:00"))
        run = RecorderRun(self, recorder, clock, {"pulse1_constant": "1000",
                                                  "pulse2_constant": "1000"})
        await run.open()
        for when in hourly(6):
            await run.read_at(when)
        self.assertEqual(await run.stored_until(), DAY + timedelta(hours=6))
        run.factory.silent = True  # the GPRS link is down: no answer for six hours
        for when in hourly(12)[6:]:
            await run.read_at(when)
        self.assertEqual(run.failed, 6)
        self.assertEqual(await run.stored_until(), DAY + timedelta(hours=6))
        run.factory.silent = False
        await run.read_at(DAY + timedelta(hours=12, minutes=5))

        catch_up = [r for r in run.delivered[-1]
                    if isinstance(r, IntervalBlock) and str(r.obis) == ENERGY1]
        [block] = catch_up
        # The catch-up gives exactly the 24 periods not stored yet: from 06:00 on.
        self.assertEqual((block.start, len(block.values)), (DAY + timedelta(hours=6), 24))
        for obis in (ENERGY1, ENERGY2):
            stored = await run.intervals(obis)
            self.assertEqual([s for s, _, _ in stored], [DAY + k * P15 for k in range(48)])
            self.assertTrue(all(q == Quality.OK and v is not None for _, v, q in stored))
        self.assertEqual(await run.store.count("intervals"), 4 * 48)  # energy, demand x 2
        # Every read delivered each interval once: nothing before its ``since``.
        starts = [s for records in run.delivered for r in records
                  if isinstance(r, IntervalBlock) and str(r.obis) == ENERGY1
                  for s, _, _ in r.intervals()]
        self.assertEqual(len(starts), len(set(starts)))
