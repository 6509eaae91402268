"""The collection engine against simulated DLMS meters over TCP (the channel layer's real
endpoints, a SQLite store): clock policy, load profile with gap re-collection, events,
register reads, commands with approval and a firmware upgrade that survives a dropped
connection, and capabilities a protocol lacks."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.trial import unittest

from fep.collect import commands
from fep.collect.engine import approval_of, resource_policy
from fep.collect.tasks import CommandStatus, JobStatus, Target, Task
from fep.model import EventKind, Meter, Quality
from fep.protocols.dlms.apdu import DataAccessResult
from fep.protocols.dlms.cosem import ControlState
from fep.protocols.dlms.server import ServerSettings
from fep.sim import dlms_meter
from fep.sim.dlms import DlmsMeterServerFactory
from fep.sim.faults import FaultyFactory
from tests.collect.harness import engine_for, jobs_ended, listen
from tests.daemon.harness import wait_for
from tests.fakes import ShiftedClock


class CountingMeter(dlms_meter.SimulatedDlmsMeter):
    """Counts the image blocks it receives, by block number."""

    def action(self, method: Any, parameters: Any) -> Any:
        if method.instance == dlms_meter.IMAGE_TRANSFER and method.method == 2:
            number = int(parameters[0].value)
            received = self.__dict__.setdefault("received", {})
            received[number] = received.get(number, 0) + 1
        return super().action(method, parameters)


def serve(testcase: Any, meter: dlms_meter.SimulatedDlmsMeter, **faults: Any) -> str:
    factory: Any = DlmsMeterServerFactory(meter, ServerSettings())
    if faults:
        factory = FaultyFactory(factory, **faults)
    return f"tcp:host=127.0.0.1:port={listen(testcase, factory)}"


async def save(engine: Any, task: Task) -> None:
    now = reactor.seconds()
    await engine.jobs.save_task(attrs.evolve(task, next_due=task.first_due(now) + 3600), now)


class ClockPolicyTests(unittest.TestCase):
    timeout = 60

    async def test_below_between_and_above_the_bounds(self) -> None:
        offsets = {"near": 5, "off": 60, "far": 600}
        sims = {name: dlms_meter.SimulatedDlmsMeter(clock_offset=timedelta(seconds=s))
                for name, s in offsets.items()}
        fleet = [Meter(name, "dlms", serve(self, sim)) for name, sim in sims.items()]
        engine, store = await engine_for(self, fleet)
        await save(engine, Task(name="clock", kind="clock", schedule="every 1d",
                                options={"lower": "10s", "upper": "5m"}))
        await engine.scheduler.run_now("clock")
        jobs = {j.meter: j for j in await jobs_ended(engine, 3)}
        self.assertEqual({j.status for j in jobs.values()}, {JobStatus.DONE})
        # Below the lower bound: left alone, nothing logged by the meter.
        self.assertEqual(sims["near"].clock_offset, timedelta(seconds=5))
        self.assertIn("within bounds", jobs["near"].result)
        # Between the bounds: set to the server's time.
        self.assertLess(abs(sims["off"].clock_offset.total_seconds()), 2)
        self.assertEqual([code for _, code in sims["off"].events], [4, 5])
        self.assertIn("clock set", jobs["off"].result)
        # Above the upper bound: an alarm, and the clock untouched.
        self.assertEqual(sims["far"].clock_offset, timedelta(seconds=600))
        self.assertEqual(sims["far"].events, [])
        self.assertIn("alarm", jobs["far"].result)
        alarms = {m: await store.events(m) for m in offsets}
        self.assertEqual(alarms["near"], [])
        self.assertEqual(alarms["off"], [])
        (alarm,) = alarms["far"]
        self.assertEqual(alarm.kind, EventKind.CLOCK_DEVIATION)
        self.assertIn("+600", alarm.text)

    async def test_bounds_per_group(self) -> None:
        sims = [dlms_meter.SimulatedDlmsMeter(clock_offset=timedelta(seconds=60))
                for _ in range(2)]
        fleet = [Meter(f"m{n}", "dlms", serve(self, sim), metadata={"group": g})
                 for n, (sim, g) in enumerate(zip(sims, ["strict", "lax"], strict=True))]
        engine, _ = await engine_for(self, fleet)
        await save(engine, Task(name="clock-strict", kind="clock", schedule="every 1d",
                                target=Target.parse("group:strict"),
                                options={"lower": "30s", "upper": "10m"}))
        await save(engine, Task(name="clock-lax", kind="clock", schedule="every 1d",
                                target=Target.parse("group:lax"),
                                options={"lower": "2m", "upper": "10m"}))
        await engine.scheduler.run_now("clock-strict")
        await engine.scheduler.run_now("clock-lax")
        await jobs_ended(engine, 2)
        self.assertLess(abs(sims[0].clock_offset.total_seconds()), 2)
        self.assertEqual(sims[1].clock_offset, timedelta(seconds=60))


class LoadProfileTests(unittest.TestCase):
    timeout = 60

    def rows(self, store: Any, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(store.path)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    async def test_intervals_since_the_last_and_gaps_read_again(self) -> None:
        # Five minutes into a quarter hour on every run: no new interval ends half-way.
        clock = ShiftedClock(reactor, phase=300.0, period=900.0)
        sim = dlms_meter.SimulatedDlmsMeter(now=clock.now)
        meter = Meter("m1", "dlms", serve(self, sim))
        engine, store = await engine_for(self, [meter], clock=clock)
        await save(engine, Task(name="lp", kind="load-profile", schedule="every 15m",
                                options={"horizon": "3h"}))
        await engine.scheduler.run_now("lp")
        (first,) = await jobs_ended(engine, 1)
        self.assertEqual(first.status, JobStatus.DONE, first.error)
        starts = self.rows(store, "SELECT obis, start_time FROM intervals ORDER BY 1, 2")
        by_obis: dict[str, list[str]] = {}
        for obis, start in starts:
            by_obis.setdefault(obis, []).append(start)
        self.assertEqual(set(by_obis), {"1-0:1.8.0*255", "1-0:2.8.0*255"})
        # Every quarter hour of the last three hours that has ended (12, or 13 when the
        # meter's history reaches into the quarter before).
        self.assertIn(len(by_obis["1-0:1.8.0*255"]), (12, 13))
        # Holes: two intervals of one channel, one of the other.
        holes = by_obis["1-0:1.8.0*255"][3:5] + by_obis["1-0:2.8.0*255"][7:8]
        conn = sqlite3.connect(store.path)
        conn.execute(f"DELETE FROM intervals WHERE start_time IN ({','.join('?' * 3)}) "
                     "AND ((obis = '1-0:1.8.0*255' AND start_time <> ?) OR "
                     "(obis = '1-0:2.8.0*255' AND start_time = ?))",
                     (*holes, holes[2], holes[2]))
        conn.commit()
        conn.close()
        self.assertEqual(len(self.rows(store, "SELECT 1 FROM intervals")), len(starts) - 3)
        await engine.scheduler.run_now("lp")
        second = next(j for j in await jobs_ended(engine, 2) if j.id != first.id)
        self.assertEqual(second.status, JobStatus.DONE, second.error)
        self.assertTrue(second.result.startswith("3 of 3 missing intervals read"),
                        second.result)
        self.assertEqual(self.rows(store, "SELECT obis, start_time FROM intervals ORDER BY 1, 2"),
                         starts)
        self.assertGreater(second.bytes_in, 0)
        self.assertGreater(second.bytes_out, 0)

    async def test_manual_recollection_keeps_interval_status(self) -> None:
        sim = dlms_meter.SimulatedDlmsMeter()
        meter = Meter("m1", "dlms", serve(self, sim))
        engine, store = await engine_for(self, [meter])
        day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        since, until = day - timedelta(days=1, hours=-2), day - timedelta(days=1, hours=-4)
        from fep.cli.collect import recollect_job

        job = recollect_job(meter, since, until, reactor.seconds(), resource_policy(
            engine.settings), interval=900)
        await engine.jobs.add_jobs([job], reactor.seconds())
        engine.scheduler.kick()
        (done,) = await jobs_ended(engine, 1)
        self.assertEqual(done.status, JobStatus.DONE, done.error)
        self.assertTrue(done.result.startswith("8 of 8"), done.result)
        (block,) = await store.intervals("m1", obis="1.8.0", since=since)
        self.assertEqual((block.start, len(block.values)), (since, 8))
        # The interval ending at 03:00 carries the simulated power-down flag.
        flagged = [s for s, _, q in block.intervals() if q != Quality.OK]
        self.assertEqual(flagged, [day - timedelta(days=1, hours=-2, minutes=-45)])


class EventAndRegisterTests(unittest.TestCase):
    timeout = 60

    async def test_event_logs(self) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        sim = dlms_meter.SimulatedDlmsMeter(events=[(now - timedelta(hours=2), 1),
                                                    (now - timedelta(hours=1), 2),
                                                    (now - timedelta(days=30), 1)])
        engine, store = await engine_for(self, [Meter("m1", "dlms", serve(self, sim))])
        await save(engine, Task(name="ev", kind="events", schedule="every 1h",
                                options={"horizon": "1d"}))
        await engine.scheduler.run_now("ev")
        (job,) = await jobs_ended(engine, 1)
        self.assertEqual((job.status, job.result), (JobStatus.DONE, "2 events"))
        events = await store.events("m1")
        self.assertEqual([e.time for e in events], [now - timedelta(hours=2),
                                                    now - timedelta(hours=1)])

    async def test_event_logs_of_a_fixed_period(self) -> None:
        """Options ``since`` and ``until`` read the events of a period of the past, as they
        do for a load profile: those at or after ``since`` and before ``until``."""
        day = datetime(2025, 3, 4, tzinfo=UTC)
        sim = dlms_meter.SimulatedDlmsMeter(events=[
            (day - timedelta(minutes=1), 1), (day + timedelta(hours=10), 1),
            (day + timedelta(hours=10, minutes=40), 2), (day + timedelta(days=1), 1)])
        engine, store = await engine_for(self, [Meter("m1", "dlms", serve(self, sim))])
        await save(engine, Task(name="ev", kind="events", schedule="every 1h", options={
            "since": day.isoformat(), "until": (day + timedelta(days=1)).isoformat()}))
        await engine.scheduler.run_now("ev")
        (job,) = await jobs_ended(engine, 1)
        self.assertEqual((job.status, job.result), (JobStatus.DONE, "2 events"))
        events = await store.events("m1", since=day - timedelta(days=1))
        self.assertEqual([(e.time, e.kind) for e in events],
                         [(day + timedelta(hours=10), EventKind.POWER_OUTAGE),
                          (day + timedelta(hours=10, minutes=40), EventKind.POWER_RESTORED)])

    async def test_a_custom_object_list(self) -> None:
        sim = dlms_meter.SimulatedDlmsMeter()
        engine, store = await engine_for(self, [Meter("m1", "dlms", serve(self, sim))])
        await save(engine, Task(name="obj", kind="objects", schedule="every 1h",
                                items=["3/1.0.32.7.0.255/2", "3/1.0.14.7.0.255/2"]))
        await engine.scheduler.run_now("obj")
        (job,) = await jobs_ended(engine, 1)
        self.assertEqual(job.status, JobStatus.DONE, job.error)
        obis = sorted(str(r.obis) for r in await store.readings("m1"))
        self.assertEqual(obis, ["1-0:14.7.0*255", "1-0:32.7.0*255"])

    async def test_a_capability_the_protocol_lacks_fails_at_once(self) -> None:
        meter = Meter("c12", "ansi-c12", "tcp:host=127.0.0.1:port=9")
        engine, _ = await engine_for(self, [meter])
        await save(engine, Task(name="lp", kind="load-profile", schedule="every 15m",
                                retries=3, retry_delay=0.1))
        await engine.scheduler.run_now("lp")
        (job,) = await jobs_ended(engine, 1)
        self.assertEqual((job.status, job.attempts), (JobStatus.FAILED, 1))
        self.assertIn("not supported", job.error)
        self.assertEqual(job.bytes_out, 0)


class CommandTests(unittest.TestCase):
    timeout = 60

    async def engine(self, sim: dlms_meter.SimulatedDlmsMeter, **faults: Any) -> Any:
        self.meter = Meter("m1", "dlms", serve(self, sim, **faults))
        self.firmware = Path(self.mktemp())  # firmware images, named by firmware-upgrade
        self.firmware.mkdir(parents=True)
        self.engine, self.store = await engine_for(
            self, [self.meter], collect={"firmware_dir": str(self.firmware)})
        self.policy = resource_policy(self.engine.settings)
        self.approval = approval_of(self.engine.settings)
        return self.engine

    async def request(self, action: str, who: str = "alice", **params: Any) -> Any:
        return await commands.request(
            self.engine.jobs, self.meter, action, params, who, reactor.seconds(),
            approval=self.approval, policy=self.policy, retry_delay=0.2,
            firmware_dir=self.engine.firmware_dir,
        )

    async def ended(self, command_id: int) -> Any:
        async def settled() -> bool:
            c = await self.engine.jobs.command(command_id)
            return c.status in (CommandStatus.DONE, CommandStatus.FAILED)

        await wait_for(settled, 30, f"command {command_id} to end", every=0.05)
        return await self.engine.jobs.command(command_id)

    async def test_disconnect_waits_for_a_second_person(self) -> None:
        sim = dlms_meter.SimulatedDlmsMeter()
        await self.engine(sim)
        asked = await self.request("disconnect", reason="unpaid")
        self.assertEqual((asked.status, asked.approval_required, asked.job),
                         (CommandStatus.REQUESTED, True, None))
        with self.assertRaises(commands.CommandError):
            await commands.approve(self.engine.jobs, asked.id, "alice", reactor.seconds(),
                                   self.meter, self.policy)
        self.assertEqual(await self.engine.jobs.jobs(), [])
        await commands.approve(self.engine.jobs, asked.id, "bob", reactor.seconds(),
                               self.meter, self.policy)
        self.engine.scheduler.kick()
        done = await self.ended(asked.id)
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertEqual(sim.control_state, ControlState.DISCONNECTED)
        trail = [(a.who, a.action) for a in await self.engine.jobs.audit(asked.id)]
        self.assertEqual(trail, [("alice", "requested"), ("bob", "approved"),
                                 ("test", "started"), ("test", "done")])

    async def test_a_refusal_names_meter_command_and_the_meters_code(self) -> None:
        class Refusing(dlms_meter.SimulatedDlmsMeter):
            def action(self, method: Any, parameters: Any) -> Any:
                if method.instance == dlms_meter.DISCONNECT:
                    return DataAccessResult.HARDWARE_FAULT, None
                return super().action(method, parameters)

        sim = Refusing()
        await self.engine(sim)
        asked = await self.request("disconnect")
        await commands.approve(self.engine.jobs, asked.id, "bob", reactor.seconds(),
                               self.meter, self.policy)
        self.engine.scheduler.kick()
        done = await self.ended(asked.id)
        self.assertEqual(done.status, CommandStatus.FAILED)
        self.assertIn(f"meter {self.meter.id}: disconnect refused by the meter", done.outcome)
        self.assertIn("hardware-fault (1)", done.outcome)
        self.assertEqual(sim.control_state, ControlState.CONNECTED)

    async def test_a_rejected_command_never_runs(self) -> None:
        sim = dlms_meter.SimulatedDlmsMeter()
        await self.engine(sim)
        asked = await self.request("reconnect")
        rejected = await commands.reject(self.engine.jobs, asked.id, "bob", "wrong meter",
                                         reactor.seconds())
        self.assertEqual(rejected.status, CommandStatus.REJECTED)
        with self.assertRaises(commands.CommandError):
            await commands.approve(self.engine.jobs, asked.id, "carol", reactor.seconds(),
                                   self.meter, self.policy)
        self.assertEqual(await self.engine.jobs.jobs(), [])

    async def test_commands_without_approval_run_at_once(self) -> None:
        sim = dlms_meter.SimulatedDlmsMeter(clock_offset=timedelta(seconds=-40))
        await self.engine(sim)
        reset = await self.request("demand-reset")
        clock = await self.request("time-set")  # 40 s: within the default 5 min bound
        self.engine.scheduler.kick()
        for command in (reset, clock):
            done = await self.ended(command.id)
            self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertEqual([r for r, _ in sim.resets], [dlms_meter.MAX_DEMAND])
        self.assertLess(abs(sim.clock_offset.total_seconds()), 2)

    async def test_push_setup_always_waits_for_approval(self) -> None:
        sim = dlms_meter.SimulatedDlmsMeter()
        await self.engine(sim)
        self.assertNotIn("push-setup", self.approval)  # not in the configured list
        push = await self.request("push-setup", destination="10.9.8.7:4059")
        self.assertEqual((push.status, push.approval_required, push.job),
                         (CommandStatus.REQUESTED, True, None))
        self.assertEqual(await self.engine.jobs.jobs(), [])
        await commands.approve(self.engine.jobs, push.id, "api:bob", reactor.seconds(),
                               self.meter, self.policy)
        self.engine.scheduler.kick()
        done = await self.ended(push.id)
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertEqual(sim.push_destination, "10.9.8.7:4059")

    async def test_a_time_set_beyond_the_clock_bounds_is_held_for_approval(self) -> None:
        sim = dlms_meter.SimulatedDlmsMeter(clock_offset=timedelta(seconds=-900))
        await self.engine(sim)
        clock = await self.request("time-set", who="console:alice")
        self.assertEqual(clock.status, CommandStatus.QUEUED)  # the deviation is not known yet
        self.engine.scheduler.kick()

        async def held() -> bool:
            c = await self.engine.jobs.command(clock.id)
            return c.status == CommandStatus.REQUESTED

        await wait_for(held, 30, "the time-set to be held", every=0.05)
        held_command = await self.engine.jobs.command(clock.id)
        self.assertTrue(held_command.approval_required)
        self.assertEqual(sim.clock_offset, timedelta(seconds=-900))  # untouched
        trail = await self.engine.jobs.audit(clock.id)
        self.assertEqual(trail[-1].action, "held")
        self.assertIn("upper bound", trail[-1].detail)
        # Four eyes by identity: alice through another door is still alice.
        with self.assertRaises(commands.CommandError):
            await commands.approve(self.engine.jobs, clock.id, "api:alice", reactor.seconds(),
                                   self.meter, self.policy)
        await commands.approve(self.engine.jobs, clock.id, "cli:bob", reactor.seconds(),
                               self.meter, self.policy)
        self.engine.scheduler.kick()
        done = await self.ended(clock.id)
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertLess(abs(sim.clock_offset.total_seconds()), 2)

    async def test_firmware_upgrade_resumes_after_a_dropped_connection(self) -> None:
        sim = CountingMeter()
        sim.image["block_size"] = 64
        image = bytes(range(256)) * 5  # 20 blocks

        def halfway() -> bool:
            return len(sim.image.get("blocks", {})) >= 10

        await self.engine(sim, cut=halfway)
        (self.firmware / "fw-3.0.bin").write_bytes(image)
        asked = await self.request("firmware-upgrade", image="fw-3.0.bin", identifier="FW-3.0")
        await commands.approve(self.engine.jobs, asked.id, "bob", reactor.seconds(),
                               self.meter, self.policy)
        self.engine.scheduler.kick()
        done = await self.ended(asked.id)
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertIn("resumed_from_block=10", done.outcome)
        self.assertEqual(dict(done.progress), {"blocks_confirmed": 20, "blocks": 20})
        self.assertEqual(b"".join(sim.image["blocks"][k] for k in range(20)), image)
        self.assertEqual(sim.image["status"], 6)  # activated
        # No block went twice: the second attempt began at the first one the meter lacked.
        self.assertEqual(sim.received, dict.fromkeys(range(20), 1))
        (job,) = await self.engine.jobs.jobs()
        self.assertEqual((job.status, job.attempts), (JobStatus.DONE, 2))
        trail = [(a.who, a.action) for a in await self.engine.jobs.audit(asked.id)]
        self.assertEqual(trail, [("alice", "requested"), ("bob", "approved"),
                                 ("test", "started"), ("test", "retried"), ("test", "done")])
