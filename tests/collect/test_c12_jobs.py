"""The collection engine against simulated ANSI C12.18 meters over TCP (the channel
layer's real endpoints, a SQLite store): commands requested through fep.collect.commands
run as jobs that change the simulated meter's state (demand reset, clock set, relay,
event logs), the meter's refusals end the command failed with an outcome naming meter,
command and result code, the clock task applies the clock policy, and a command the meter
cannot run is refused when it is asked."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.trial import unittest

from fep.collect import commands
from fep.collect.engine import approval_of, resource_policy
from fep.collect.tasks import CommandStatus, JobStatus, Task
from fep.model import Meter
from fep.protocols.registry import protocol_commands
from fep.sim.ansi_c12 import C12MeterServerFactory, SimulatedC12Meter
from tests.collect.harness import engine_for, jobs_ended, listen
from tests.daemon.harness import wait_for


def serve(testcase: Any, sim: SimulatedC12Meter) -> str:
    return f"tcp:host=127.0.0.1:port={listen(testcase, C12MeterServerFactory(sim, reactor))}"


class C12CommandTests(unittest.TestCase):
    timeout = 60

    async def engine(self, sim: SimulatedC12Meter, **metadata: str) -> Any:
        md = {"c12_password": "secret", **metadata}
        self.meter = Meter("c12-1", "ansi-c12.18", serve(self, sim), metadata=md)
        self.engine_, self.store = await engine_for(self, [self.meter])
        self.policy = resource_policy(self.engine_.settings)
        self.approval = approval_of(self.engine_.settings)
        return self.engine_

    async def request(self, action: str, who: str = "alice", **params: Any) -> Any:
        return await commands.request(
            self.engine_.jobs, self.meter, action, params, who, reactor.seconds(),
            approval=self.approval, policy=self.policy, attempts=1, retry_delay=0.2,
        )

    async def ended(self, command_id: int) -> Any:
        async def settled() -> bool:
            c = await self.engine_.jobs.command(command_id)
            return c.status in (CommandStatus.DONE, CommandStatus.FAILED)

        await wait_for(settled, 30, f"command {command_id} to end", every=0.05)
        return await self.engine_.jobs.command(command_id)

    async def run_command(self, action: str, **params: Any) -> Any:
        asked = await self.request(action, **params)
        if asked.status == CommandStatus.REQUESTED:  # needs a second person
            await commands.approve(self.engine_.jobs, asked.id, "bob", reactor.seconds(),
                                   self.meter, self.policy)
        self.engine_.scheduler.kick()
        return await self.ended(asked.id)

    def test_the_protocol_declares_its_commands(self) -> None:
        self.assertEqual(
            protocol_commands("ansi-c12.18"),
            {"demand-reset", "event-log-clear", "disconnect", "reconnect", "relay-state",
             "time-set", "time-sync"},
        )
        self.assertEqual(protocol_commands("ansi-c12.21"), protocol_commands("ansi-c12.18"))

    async def test_demand_reset_through_the_engine(self) -> None:
        sim = SimulatedC12Meter()
        await self.engine(sim)
        done = await self.run_command("demand-reset", **{"self-read": "yes"})
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertEqual((sim.demand_resets, sim.demand_kw, len(sim.self_reads)),
                         (4, Decimal(0), 1))
        self.assertIn("demand_resets=4", done.outcome)
        trail = [(a.who, a.action) for a in await self.engine_.jobs.audit(done.id)]
        self.assertEqual(trail[0], ("alice", "requested"))
        self.assertEqual(trail[-1], ("test", "done"))

    async def test_time_set_and_time_sync_through_the_engine(self) -> None:
        sim = SimulatedC12Meter(clock_offset=-40)
        await self.engine(sim)
        done = await self.run_command("time-set")  # 40 s: within the default bounds
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertLess(abs(sim.clock_offset), 1)
        sim.clock_offset = 60
        done = await self.run_command("time-sync", lower="10s", upper="5m")
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertIn("clock set", done.outcome)
        self.assertLess(abs(sim.clock_offset), 1)

    async def test_a_time_set_beyond_the_clock_bounds_is_held_for_approval(self) -> None:
        sim = SimulatedC12Meter(clock_offset=-900)
        await self.engine(sim)
        asked = await self.request("time-set")
        self.engine_.scheduler.kick()

        async def held() -> bool:
            c = await self.engine_.jobs.command(asked.id)
            return c.status == CommandStatus.REQUESTED

        await wait_for(held, 30, "the time-set to be held", every=0.05)
        self.assertEqual(sim.clock_offset, -900)
        await commands.approve(self.engine_.jobs, asked.id, "bob", reactor.seconds(),
                               self.meter, self.policy)
        self.engine_.scheduler.kick()
        done = await self.ended(asked.id)
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertLess(abs(sim.clock_offset), 1)

    async def test_relay_through_the_engine(self) -> None:
        sim = SimulatedC12Meter()
        await self.engine(sim, c12_relay_procedure="MP2")
        done = await self.run_command("disconnect")
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertFalse(sim.relay_closed)
        self.assertIn("relay=open", done.outcome)
        done = await self.run_command("reconnect")
        self.assertTrue(sim.relay_closed)
        done = await self.run_command("relay-state")
        self.assertIn("relay=closed", done.outcome)

    async def test_event_log_clear_through_the_engine(self) -> None:
        sim = SimulatedC12Meter()
        await self.engine(sim)
        done = await self.run_command("event-log-clear", log="event")
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertEqual(sim.cleared_logs, {76})

    async def test_a_refusal_fails_the_command_naming_meter_command_and_code(self) -> None:
        sim = SimulatedC12Meter(password=b"secret", read_password=b"reader")
        await self.engine(sim, c12_password="reader")
        done = await self.run_command("demand-reset")
        self.assertEqual(done.status, CommandStatus.FAILED)
        self.assertIn("meter c12-1 refused demand-reset (SP9 (remote reset)): result code 5 "
                      "(no authorization", done.outcome)
        self.assertEqual(sim.demand_resets, 3)

    async def test_a_meter_without_a_relay_is_refused_when_asked(self) -> None:
        sim = SimulatedC12Meter()
        await self.engine(sim, commands="demand-reset, time-set, time-sync")
        with self.assertRaises(commands.CommandNotSupported) as raised:
            await self.request("disconnect")
        self.assertIn("meter c12-1: command disconnect refused", str(raised.exception))
        self.assertEqual(await self.engine_.jobs.jobs(), [])

    async def test_relay_without_its_procedure_fails_at_once(self) -> None:
        sim = SimulatedC12Meter()
        await self.engine(sim)
        done = await self.run_command("disconnect")
        self.assertEqual(done.status, CommandStatus.FAILED)
        self.assertIn("c12_relay_procedure", done.outcome)
        self.assertTrue(sim.relay_closed)

    async def test_the_clock_task(self) -> None:
        sim = SimulatedC12Meter(clock_offset=60)
        engine = await self.engine(sim)
        now = reactor.seconds()
        task = Task(name="clock", kind="clock", schedule="every 1d",
                    options={"lower": "10s", "upper": "5m"})
        await engine.jobs.save_task(attrs.evolve(task, next_due=task.first_due(now) + 3600),
                                    now)
        await engine.scheduler.run_now("clock")
        (job,) = await jobs_ended(engine, 1)
        self.assertEqual(job.status, JobStatus.DONE, job.error)
        self.assertIn("clock set", job.result)
        self.assertLess(abs(sim.clock_offset), 1)
