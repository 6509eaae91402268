"""The collection engine's doors to a meter behind a concentrator (route
``gw3761:DCU1:port=2``): a scheduled registers task, a read-now (the API's, the console's
and ``fep read --meter``'s path) and commands through request and approval (relay trip and
close, time-set) give what the same doors give for the simulated meter reached directly."""

from __future__ import annotations

import time
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.trial import unittest

from fep.collect import commands
from fep.collect.engine import approval_of
from fep.collect.tasks import CommandStatus, JobStatus, Target, Task
from fep.model import Meter, Reading
from fep.sim.concentrator import ConcentratorFactory, make_concentrator
from fep.sim.dlt645 import Dlt645BusFactory
from tests.channels.test_forwarding import RECEIVED
from tests.collect.harness import engine_for, jobs_ended, listen
from tests.daemon.harness import wait_for

START = 1_709_280_000.0
PASSWORD = {"dlt645_password": "02123456", "dlt645_operator": "20240301"}


def values(readings: list[Any]) -> list[Any]:
    """Readings as the meter gave them (without meter id and the moment received)."""
    return sorted((attrs.evolve(r, meter="-", received_time=RECEIVED) for r in readings
                   if isinstance(r, Reading)), key=lambda r: (str(r.obis), str(r.value)))


class ForwardedDoorsTests(unittest.TestCase):
    timeout = 60

    async def setup(self, clock: Any = None) -> None:
        self.sim = make_concentrator(3, clock=clock or (lambda: START))
        self.meter = self.sim.meters[1]
        self.sim.ports[self.meter.address] = 2
        dcu_port = listen(self, ConcentratorFactory(self.sim, reactor))
        direct_port = listen(self, Dlt645BusFactory([self.meter], reactor))
        self.fleet = {
            "DCU1": Meter("DCU1", "gw3761", f"tcp:host=127.0.0.1:port={dcu_port}",
                          address="4403:0004"),
            "M2": Meter("M2", "dlt645", "gw3761:DCU1:port=2", address=self.meter.address,
                        metadata={"concentrator": "DCU1", "point": "2", **PASSWORD}),
            "D2": Meter("D2", "dlt645", f"tcp:host=127.0.0.1:port={direct_port}",
                        address=self.meter.address, metadata=PASSWORD),
        }
        self.engine, self.store = await engine_for(self, list(self.fleet.values()))
        self.policy = self.engine.scheduler.resources

    async def test_a_registers_task_reads_it_as_directly(self) -> None:
        await self.setup()
        # Behind its concentrator: on the concentrator's line, one session at a time.
        self.assertEqual(self.policy.key("gw3761:DCU1:port=2"),
                         self.policy.key(self.fleet["DCU1"].route))
        now = reactor.seconds()
        await self.engine.jobs.save_task(
            Task(name="regs", kind="registers", schedule="every 1d", target=Target(),
                 next_due=now + 3600), now)
        await self.engine.scheduler.run_now("regs")
        jobs = {j.meter: j for j in await jobs_ended(self.engine, 3)}
        self.assertEqual({m: j.status for m, j in jobs.items()},
                         dict.fromkeys(("DCU1", "M2", "D2"), JobStatus.DONE),
                         [j.error for j in jobs.values()])
        first, then = sorted((jobs["DCU1"], jobs["M2"]), key=lambda j: j.started_at)
        self.assertLessEqual(first.finished_at, then.started_at)
        forwarded = await self.store.readings("M2")
        direct = await self.store.readings("D2")
        self.assertTrue(forwarded)
        self.assertEqual(values(forwarded), values(direct))
        self.assertGreater(self.sim.forwarded, 0)

    async def test_a_load_profile_task_reads_it_though_the_concentrator_cannot(self) -> None:
        await self.setup(clock=time.time)
        now = reactor.seconds()
        await self.engine.jobs.save_task(
            Task(name="lp", kind="load-profile", schedule="every 15m", target=Target(),
                 options={"horizon": "1h"}, next_due=now + 3600), now)
        await self.engine.scheduler.run_now("lp")
        jobs = {j.meter: j for j in await jobs_ended(self.engine, 3)}
        self.assertEqual(jobs["DCU1"].status, JobStatus.FAILED)  # gw3761: no load profile
        self.assertEqual((jobs["M2"].status, jobs["D2"].status),
                         (JobStatus.DONE, JobStatus.DONE), [j.error for j in jobs.values()])
        self.assertTrue(await self.store.intervals("M2", obis="1.8.0"))

    async def test_read_now_reads_it_as_directly(self) -> None:
        await self.setup()
        forwarded = await self.engine.reader.read_now(self.fleet["M2"], who="alice")
        direct = await self.engine.reader.read_now(self.fleet["D2"], who="alice")
        self.assertTrue(forwarded)
        self.assertEqual(values(forwarded), values(direct))

    async def run_command(self, meter: str, action: str, **params: Any) -> Any:
        asked = await commands.request(
            self.engine.jobs, self.fleet[meter], action, params, "alice", reactor.seconds(),
            approval=approval_of(self.engine.settings), policy=self.policy, retry_delay=0.2)
        if asked.status == CommandStatus.REQUESTED:
            await commands.approve(self.engine.jobs, asked.id, "bob", reactor.seconds(),
                                   self.fleet[meter], self.policy)
        self.engine.scheduler.kick()

        async def settled() -> bool:
            c = await self.engine.jobs.command(asked.id)
            return c.status in (CommandStatus.DONE, CommandStatus.FAILED)

        await wait_for(settled, 30, f"command {asked.id} to end", every=0.05)
        return await self.engine.jobs.command(asked.id)

    async def test_relay_commands_through_approval_as_directly(self) -> None:
        await self.setup()
        forwarded = await self.run_command("M2", "disconnect")
        self.assertEqual(forwarded.status, CommandStatus.DONE, forwarded.outcome)
        self.assertFalse(self.meter.relay_closed)
        self.assertEqual(self.meter.operators, [("relay control trip", "20240301")])
        closed = await self.run_command("D2", "reconnect", mode="direct")
        self.assertTrue(self.meter.relay_closed, closed.outcome)
        direct = await self.run_command("D2", "disconnect")
        self.assertEqual(forwarded.outcome.replace("M2", "D2"), direct.outcome)
        closed = await self.run_command("M2", "reconnect", mode="direct")
        self.assertEqual(closed.status, CommandStatus.DONE, closed.outcome)
        self.assertTrue(self.meter.relay_closed)

    async def test_time_set_writes_the_meters_clock(self) -> None:
        await self.setup(clock=time.time)
        self.meter.clock_offset = -45.0
        done = await self.run_command("M2", "time-set")
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertLess(abs(self.meter.now().timestamp() - reactor.seconds()), 1.5)
        self.assertEqual(self.sim.meters[0].clock_offset, 0.0)  # written, not broadcast

    async def test_the_clock_task_sets_it_by_a_forwarded_broadcast(self) -> None:
        await self.setup(clock=time.time)
        self.meter.clock_offset = 90.0
        now = reactor.seconds()
        await self.engine.jobs.save_task(
            Task(name="clock", kind="clock", schedule="every 1d", target=Target.parse(
                "meters:M2"), options={"lower": "10s", "upper": "5m"}, next_due=now + 3600),
            now)
        await self.engine.scheduler.run_now("clock")
        (job,) = await jobs_ended(self.engine, 1)
        self.assertEqual(job.status, JobStatus.DONE, job.error)
        self.assertIn("clock set", job.result)
        # A broadcast on the concentrator's port: every meter there took the time.
        self.assertLess(abs(self.meter.clock_offset), 2)

    async def test_a_silent_meter_fails_its_job_naming_the_concentrator(self) -> None:
        await self.setup()
        self.sim.silent.add(self.meter.address)
        with self.assertRaises(Exception) as caught:
            await self.engine.reader.read_now(self.fleet["M2"], who="alice")
        self.assertIn("forwarding through concentrator DCU1 (4403:0004) port 2 to meter "
                      f"{self.meter.address}: the meter did not answer", str(caught.exception))
