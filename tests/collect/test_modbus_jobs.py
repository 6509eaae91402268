"""The collection engine against the simulated Modbus pulse recorder (fep/sim/pulse_recorder.py)
over TCP: read jobs catch the recorder up from the end of the last stored period (the engine
passes ``since``, fep.interfaces.IHistoryReader), so six hours in which the recorder cannot be
reached are filled from its history at the next read, every period once. Counter presets and
resets are ``parameter-set NAME=VALUE`` commands of the device map's parameters; the
simulated recorder's counters take them.

The engine and the recorder share one clock: the real reactor moved to the simulated time
(timers run on the real clock), set forward between runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.trial import unittest

from fep.collect import commands
from fep.collect.engine import CollectionEngine, approval_of, resource_policy
from fep.collect.tasks import CommandStatus, Job, JobStatus, Task
from fep.interfaces import IHistoryReader
from fep.model import IntervalBlock, Meter, Quality, Record
from fep.protocols.modbus.session import PulseRecorderProtocol
from fep.sim.pulse_recorder import EVENT_CODES, PulseRecorder, RecorderServerFactory
from fep.store import open_store
from tests.collect.harness import engine_for, jobs_ended, listen
from tests.daemon.harness import wait_for
from tests.fakes import ShiftedClock
from tests.inprocess import fep_main as run_fep

DAY = datetime(2024, 3, 1, tzinfo=UTC)
P15 = timedelta(minutes=15)
ENERGY1, ENERGY2 = "1-1:1.29.0*255", "1-2:1.29.0*255"


class SimulatedTime(ShiftedClock):
    """The real reactor with ``seconds()`` at a simulated instant, moved by ``set``."""

    def set(self, when: datetime) -> None:
        self.shift = when.timestamp() - float(self._real.seconds())


class Deliveries:
    """What the engine's sink was handed, job by job (wraps the harness's StoreSink)."""

    def __init__(self, engine: CollectionEngine) -> None:
        self.batches: list[list[Record]] = []
        sink = engine.runner.sink
        submit = sink.submit

        def keep(records: Any) -> Any:
            self.batches.append(list(records))
            return submit(records)

        sink.submit = keep  # type: ignore[method-assign]

    def energy_starts(self, obis: str) -> list[datetime]:
        return [s for batch in self.batches for r in batch
                if isinstance(r, IntervalBlock) and str(r.obis) == obis
                for s, _, _ in r.intervals()]


class RecorderCatchUpTests(unittest.TestCase):
    timeout = 60

    def test_the_recorder_protocol_catches_up_through_the_engine(self) -> None:
        protocol = PulseRecorderProtocol()
        self.assertTrue(IHistoryReader.providedBy(protocol))
        meter = Meter("r", "modbus-pulse", "tcp:host=127.0.0.1:port=1", metadata={
            "modbus_device_map": "sim-pr2", "pulse2_constant": "1000"})
        self.assertEqual(protocol.history_channel(meter), ENERGY2)
        # No input with a constant: no intervals, nothing to catch up from.
        bare = attrs.evolve(meter, metadata={"modbus_device_map": "sim-pr2"})
        self.assertIsNone(protocol.history_channel(bare))

    async def test_six_hours_unreachable_are_caught_up_by_the_next_read_job(self) -> None:
        clock = SimulatedTime(reactor)
        clock.set(DAY + timedelta(minutes=2))
        recorder = PulseRecorder(clock=clock.seconds,
                                 started=(DAY - timedelta(hours=1)).timestamp())
        factory = RecorderServerFactory(recorder, reactor, unit=1)
        port = listen(self, factory)
        meter = Meter("rec-1", "modbus-pulse", f"tcp:host=127.0.0.1:port={port}", metadata={
            "modbus_device_map": "sim-pr2", "modbus_retries": "0",
            # The simulator's input 1: 1200 pulses an hour, KYZ; input 2: 600, KY.
            "pulse1_constant": "1000", "pulse1_wiring": "kyz", "pulse2_constant": "1000"})
        engine, store = await engine_for(self, [meter], clock=clock,
                                         collect={"timeout": "0.5"})
        delivered = Deliveries(engine)
        now = clock.seconds()
        await engine.jobs.save_task(
            Task(name="read", kind="registers", schedule="every 1h", retries=0,
                 next_due=now + 30 * 86400), now)
        runs: list[Job] = []

        async def read_at(when: datetime) -> Job:
            clock.set(when)
            await engine.scheduler.run_now("read")
            ended = await jobs_ended(engine, len(runs) + 1)
            [job] = [j for j in ended if j.id not in {r.id for r in runs}]
            runs.append(job)
            return job

        async def stored_until() -> datetime:
            blocks = await store.intervals("rec-1", obis=ENERGY1)
            return max(b.start + len(b.values) * b.period for b in blocks)

        for hour in range(1, 7):
            job = await read_at(DAY + timedelta(hours=hour, minutes=2))
            self.assertEqual(job.status, JobStatus.DONE, job.error)
        self.assertEqual(await stored_until(), DAY + timedelta(hours=6))

        factory.silent = True  # the link is down: no answer for six hours
        for hour in range(7, 13):
            job = await read_at(DAY + timedelta(hours=hour, minutes=2))
            self.assertEqual(job.status, JobStatus.FAILED)
        self.assertEqual(await stored_until(), DAY + timedelta(hours=6))

        factory.silent = False
        job = await read_at(DAY + timedelta(hours=12, minutes=5))
        self.assertEqual(job.status, JobStatus.DONE, job.error)

        # The catch-up job delivered exactly the 24 periods not stored yet: from 06:00 on.
        [block] = [r for r in delivered.batches[-1]
                   if isinstance(r, IntervalBlock) and str(r.obis) == ENERGY1]
        self.assertEqual((block.start, len(block.values)), (DAY + timedelta(hours=6), 24))
        outage = [DAY + timedelta(hours=6) + k * P15 for k in range(24)]
        for obis, energy in ((ENERGY1, Decimal(300)), (ENERGY2, Decimal(150))):
            stored = [i for b in await store.intervals("rec-1", obis=obis)
                      for i in b.intervals()]
            starts = [s for s, _, _ in stored]
            # Contiguous from the recorder's first period to 12:00, each period once.
            self.assertEqual(starts, [starts[0] + k * P15 for k in range(len(starts))])
            self.assertEqual(starts[-1], DAY + timedelta(hours=11, minutes=45))
            by_start = {s: (v, q) for s, v, q in stored}
            self.assertEqual([by_start[s] for s in outage], [(energy, Quality.OK)] * 24)
            # Every job handed each period over once: each read began where the store ended.
            handed = delivered.energy_starts(obis)
            self.assertEqual(sorted(handed), starts)

    async def test_a_load_profile_job_recollects_the_gaps_from_the_history(self) -> None:
        clock = SimulatedTime(reactor)
        clock.set(DAY + timedelta(hours=3, minutes=2))
        recorder = PulseRecorder(clock=clock.seconds,
                                 started=(DAY - timedelta(hours=1)).timestamp())
        port = listen(self, RecorderServerFactory(recorder, reactor, unit=1))
        meter = Meter("rec-1", "modbus-pulse", f"tcp:host=127.0.0.1:port={port}", metadata={
            "modbus_device_map": "sim-pr2", "modbus_retries": "0",
            "pulse1_constant": "1000", "pulse1_wiring": "kyz", "pulse2_constant": "1000"})
        engine, store = await engine_for(self, [meter], clock=clock)
        now = clock.seconds()
        await engine.jobs.save_task(
            Task(name="lp", kind="load-profile", schedule="every 1d", retries=0,
                 options={"horizon": "2h"}, next_due=now + 30 * 86400), now)
        await engine.scheduler.run_now("lp")
        [job] = await jobs_ended(engine, 1)
        self.assertEqual(job.status, JobStatus.DONE, job.error)
        # The whole quarter hours of the last two hours: 01:15 .. 02:45.
        self.assertEqual(job.result, "7 of 7 missing intervals read")
        wanted = [DAY + timedelta(hours=1, minutes=15) + k * P15 for k in range(7)]
        for obis, energy in ((ENERGY1, Decimal(300)), (ENERGY2, Decimal(150))):
            stored = {s: (v, q) for b in await store.intervals("rec-1", obis=obis)
                      for s, v, q in b.intervals()}
            self.assertEqual([stored[s] for s in wanted], [(energy, Quality.OK)] * 7)
        # Nothing missing any more: the next run reads nothing.
        await engine.scheduler.run_now("lp")
        ended = await jobs_ended(engine, 2)
        self.assertEqual(max(ended, key=lambda j: j.id).result, "no interval missing")


class ParameterSetTests(unittest.TestCase):
    """``parameter-set`` through the engine's commands: the device map's parameters written,
    the simulated recorder's counters preset and reset."""

    timeout = 60

    async def engine(self) -> PulseRecorder:
        frozen = DAY.timestamp()
        self.recorder = PulseRecorder(clock=lambda: frozen,
                                      started=(DAY - timedelta(hours=2)).timestamp())
        port = listen(self, RecorderServerFactory(self.recorder, reactor, unit=1))
        self.meter = Meter("rec-1", "modbus-pulse", f"tcp:host=127.0.0.1:port={port}",
                           metadata={"modbus_device_map": "sim-pr2"})
        self.engine, _ = await engine_for(self, [self.meter])
        return self.recorder

    async def command(self, **params: str) -> Any:
        engine = self.engine
        asked = await commands.request(
            engine.jobs, self.meter, "parameter-set", params, "alice", reactor.seconds(),
            approval=approval_of(engine.settings), policy=resource_policy(engine.settings),
            retry_delay=0.2)
        if asked.status == CommandStatus.REQUESTED:
            await commands.approve(engine.jobs, asked.id, "bob", reactor.seconds(),
                                   self.meter, resource_policy(engine.settings))
        engine.scheduler.kick()

        async def settled() -> bool:
            c = await engine.jobs.command(asked.id)
            return c.status in (CommandStatus.DONE, CommandStatus.FAILED)

        await wait_for(settled, 30, f"command {asked.id} to end", every=0.05)
        return await engine.jobs.command(asked.id)

    async def test_counter_preset_and_reset_change_the_recorders_counters(self) -> None:
        recorder = await self.engine()
        recorder.advance()  # two hours of pulses counted
        self.assertEqual([inp.counter for inp in recorder.inputs], [4800, 1200])
        before = len(recorder.events)
        done = await self.command(counter1="5000", counter2_reset="on")
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertEqual(done.outcome, "parameter-set done: counter1=5000, counter2_reset=1")
        self.assertEqual([inp.counter for inp in recorder.inputs], [5000, 0])
        # The recorder logged both in its event log.
        self.assertEqual([e.code for e in recorder.events[before:]],
                         [EVENT_CODES["counter-reset"]] * 2)

    async def test_a_parameter_not_in_the_device_map_is_refused_when_asked(self) -> None:
        recorder = await self.engine()
        recorder.advance()
        counters = [inp.counter for inp in recorder.inputs]
        with self.assertRaises(commands.CommandError) as caught:
            await self.command(counter1="0", counter3="0")
        self.assertEqual(str(caught.exception),
                         "meter rec-1: parameter-set counter3: device map sim-pr2 has no "
                         "parameter 'counter3' (its parameters: counter1, counter1_reset, "
                         "counter2, counter2_reset)")
        # Nothing recorded, nothing sent.
        self.assertEqual(await self.engine.jobs.commands(), [])
        self.assertEqual(await self.engine.jobs.jobs(limit=None), [])
        self.assertEqual([inp.counter for inp in recorder.inputs], counters)


class ParameterSetCommandLineTests(unittest.TestCase):
    async def test_fep_command_request_parameter_set(self) -> None:
        path = Path(self.mktemp()).resolve().with_suffix(".sqlite")
        store = open_store(f"sqlite:{path}", reactor)
        await store.open()
        await store.add_meters([Meter("rec-1", "modbus-pulse", "tcp:host=10.0.0.1:port=502",
                                      metadata={"modbus_device_map": "sim-pr2"})])
        await store.close()

        def fep(*args: str, code: int = 0) -> str:
            result = run_fep("--db", f"sqlite:{path}", "command", "request", "rec-1",
                             "parameter-set", *args)
            self.assertEqual(result.returncode, code, result.stderr)
            return result.stdout if code == 0 else result.stderr

        self.assertIn("command 1: parameter-set for rec-1", fep("-p", "counter1=5000"))
        self.assertIn("meter rec-1: parameter-set counter3: device map sim-pr2 has no "
                      "parameter 'counter3'", fep("-p", "counter3=0", code=2))
        self.assertIn("meter rec-1: parameter-set counter2_reset: 'maybe' is not on or off",
                      fep("-p", "counter2_reset=maybe", code=2))
