"""The collection engine against a simulated DL/T 645-2007 bus over TCP: load records by
time range with gaps read again, the clock read from its DIs and set by broadcast, and
commands (relay control, demand reset, clock write) from request to the meter's state."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.trial import unittest

from fep.collect import commands, gaps
from fep.collect.engine import approval_of, resource_policy
from fep.collect.tasks import CommandStatus, JobStatus, Task
from fep.model import Meter
from fep.sim.dlt645 import Dlt645BusFactory, make_meters
from tests.collect.harness import engine_for, jobs_ended, listen
from tests.daemon.harness import wait_for


async def save(engine, task: Task) -> None:
    now = reactor.seconds()
    await engine.jobs.save_task(attrs.evolve(task, next_due=now + 3600), now)


class Dlt645JobTests(unittest.TestCase):
    timeout = 60

    def bus(self, **kw):
        sims = make_meters(2, started=time.time() - 86400, **kw)
        port = listen(self, Dlt645BusFactory(sims, reactor))
        route = f"tcp:host=127.0.0.1:port={port}"
        return sims, [Meter(f"d{n}", "dlt645", f"{route}@{s.address}")
                      for n, s in enumerate(sims, 1)]

    async def test_load_records_by_range(self) -> None:
        _, fleet = self.bus()
        engine, store = await engine_for(self, fleet)
        await save(engine, Task(name="lp", kind="load-profile", schedule="every 15m",
                                options={"horizon": "2h"}))
        await engine.scheduler.run_now("lp")
        jobs = await jobs_ended(engine, 2)
        self.assertEqual({j.status for j in jobs}, {JobStatus.DONE}, [j.error for j in jobs])
        now = datetime.fromtimestamp(max(j.started_at for j in jobs), UTC)
        period = timedelta(minutes=15)
        expected = gaps.grid(now - timedelta(hours=2), now, period)
        for meter in fleet:
            blocks = await store.intervals(meter.id, obis="1.8.0")
            self.assertEqual(gaps.missing(blocks, now - timedelta(hours=2), now, period), [])
            starts = {s for b in blocks for s, _, _ in b.intervals()}
            self.assertTrue(set(expected) <= starts)
        # Both meters on one line: one job at a time, never overlapping.
        a, b = sorted(jobs, key=lambda j: j.started_at)
        self.assertLessEqual(a.finished_at, b.started_at)

    async def test_clock_read_and_broadcast_set(self) -> None:
        sims, fleet = self.bus(clock_offset=90.0)
        engine, _ = await engine_for(self, fleet[:1])
        await save(engine, Task(name="clock", kind="clock", schedule="every 1d",
                                options={"lower": "10s", "upper": "5m"}))
        await engine.scheduler.run_now("clock")
        (job,) = await jobs_ended(engine, 1)
        self.assertEqual(job.status, JobStatus.DONE, job.error)
        deviation = float(job.result.split("deviation ")[1].split(" s")[0])
        self.assertTrue(85 < deviation < 95, job.result)
        self.assertIn("clock set", job.result)
        # A broadcast: every meter on the bus took the time.
        for sim in sims:
            self.assertLess(abs(sim.clock_offset), 2)


class Dlt645CommandTests(unittest.TestCase):
    """Commands through the engine (request, approval, job, the meter's answer) to simulated
    DL/T 645 meters: one alone on a TCP route, two on one line addressed by ``@ADDRESS``."""

    timeout = 60

    async def setup(self, **sim: Any) -> None:
        self.alone, *self.bus = make_meters(3, **sim)
        password = {"dlt645_password": "02123456", "dlt645_operator": "20240301"}
        alone = listen(self, Dlt645BusFactory([self.alone], reactor))
        line = listen(self, Dlt645BusFactory(self.bus, reactor))
        self.meters = {
            "alone": Meter("alone", "dlt645", f"tcp:host=127.0.0.1:port={alone}",
                           address=self.alone.address, metadata=password),
            **{f"bus{n}": Meter(f"bus{n}", "dlt645",
                                f"tcp:host=127.0.0.1:port={line}@{s.address}", metadata=password)
               for n, s in enumerate(self.bus, 1)},
            "wrong": Meter("wrong", "dlt645", f"tcp:host=127.0.0.1:port={alone}",
                           address=self.alone.address, metadata={"dlt645_password": "02000000"}),
            "old": Meter("old", "dlt645", f"tcp:host=127.0.0.1:port={alone}",
                         address=self.alone.address, metadata={"dlt645_edition": "1997"}),
        }
        self.engine, _ = await engine_for(self, list(self.meters.values()))
        self.policy = resource_policy(self.engine.settings)

    async def run_command(self, meter: str, action: str, **params: Any) -> Any:
        asked = await commands.request(
            self.engine.jobs, self.meters[meter], action, params, "alice", reactor.seconds(),
            approval=approval_of(self.engine.settings), policy=self.policy, retry_delay=0.2)
        if asked.status == CommandStatus.REQUESTED:
            await commands.approve(self.engine.jobs, asked.id, "bob", reactor.seconds(),
                                   self.meters[meter], self.policy)
        self.engine.scheduler.kick()

        async def settled() -> bool:
            c = await self.engine.jobs.command(asked.id)
            return c.status in (CommandStatus.DONE, CommandStatus.FAILED)

        await wait_for(settled, 30, f"command {asked.id} to end", every=0.05)
        return await self.engine.jobs.command(asked.id)

    async def test_disconnect_over_tcp_opens_the_meters_relay(self) -> None:
        await self.setup()
        done = await self.run_command("alone", "disconnect", reason="unpaid")
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertFalse(self.alone.relay_closed)
        self.assertIn("relay=open", done.outcome)
        self.assertEqual(self.alone.operators, [("relay control trip", "20240301")])

    async def test_commands_through_a_bus_address_reach_only_that_meter(self) -> None:
        await self.setup()
        first, second = self.bus
        done = await self.run_command("bus2", "disconnect")
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertEqual((first.relay_closed, second.relay_closed), (True, False))
        done = await self.run_command("bus2", "reconnect", mode="direct")
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertTrue(second.relay_closed)
        done = await self.run_command("bus1", "demand-reset")
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertEqual((first.demand_resets, first.demand, second.demand_resets), (1, 0, 0))

    async def test_time_set_writes_the_clock_within_a_second(self) -> None:
        await self.setup(clock_offset=-45.0)
        done = await self.run_command("bus1", "time-set")
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertLess(abs(self.bus[0].now().timestamp() - reactor.seconds()), 1.0)
        self.assertEqual(self.bus[1].clock_offset, -45.0)  # written, not broadcast

    async def test_a_refusal_fails_at_once_naming_meter_command_and_code(self) -> None:
        await self.setup()
        done = await self.run_command("wrong", "disconnect")
        self.assertEqual(done.status, CommandStatus.FAILED)
        self.assertIn("meter wrong: disconnect refused by the meter (relay control (trip)): "
                      "wrong password or unauthorised (error status 0x0004)", done.outcome)
        self.assertTrue(self.alone.relay_closed)
        (job,) = [j for j in await self.engine.jobs.jobs() if j.command == done.id]
        self.assertEqual((job.status, job.attempts), (JobStatus.FAILED, 1))  # never retried

    async def test_a_1997_meter_is_refused_relay_control_when_it_is_asked(self) -> None:
        await self.setup()
        with self.assertRaises(commands.CommandNotSupported) as caught:
            await commands.request(
                self.engine.jobs, self.meters["old"], "disconnect", {}, "alice",
                reactor.seconds(), approval=approval_of(self.engine.settings),
                policy=self.policy)
        self.assertIn("meter old: command disconnect refused: its protocol variant "
                      "DL/T 645-1997 does not have it (supported: demand-reset, time-set, "
                      "time-sync)", str(caught.exception))
        self.assertEqual(await self.engine.jobs.jobs(), [])
