"""DL/T 698.45 commands through the control vocabulary (fep.protocols.dlt698.control):
remote control trip and close (ACTION 8000 methods 129 and 130), demand reset and event
clear (4300 methods 6 and 5), from request through four-eyes approval to the simulated
meter's state, and to a meter behind a terminal through its PROXY ActionRequestList; a
refusal fails at once naming meter, command and DAR; wrong parameters are refused when
asked."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from fep.collect import commands
from fep.collect.engine import approval_of, resource_policy
from fep.collect.tasks import CommandStatus, JobStatus
from fep.model import Meter
from fep.protocols.dlt698.apdu import ActionRequest, encode_apdu
from fep.protocols.dlt698.control import command_methods
from fep.protocols.dlt698.data import OAD
from fep.protocols.registry import protocol_commands
from fep.sim.dlt698 import Dlt698MeterFactory, SimulatedDlt698Meter
from tests.collect.harness import engine_for, listen
from tests.daemon.harness import wait_for

ADDRESS = "000000123456"


class MethodTests(unittest.TestCase):
    def test_trip_and_close_as_the_standard_lays_them_out(self) -> None:
        (trip,) = command_methods("disconnect", {"delay": "5", "limit": "60"})
        # ACTION-Request-Normal, PIID 1, OMD 8000 81 00, array of one structure: relay OAD
        # F2050201, alarm delay unsigned 5, power-limit time long-unsigned 60, auto-close
        # bool false.
        self.assertEqual(encode_apdu(ActionRequest(1, (trip,))).hex(),
                         "070101" "80008100" "0101" "0204" "51f2050201" "1105" "12003c"
                         "0300" "00")
        (close,) = command_methods("reconnect", {"mode": "direct"}, "F2050201,F2050202")
        self.assertEqual(encode_apdu(ActionRequest(2, (close,))).hex(),
                         "070102" "80008200" "0102" "0202" "51f2050201" "1601"
                         "0202" "51f2050202" "1601" "00")
        (reset,) = command_methods("demand-reset", {})
        self.assertEqual(encode_apdu(ActionRequest(3, (reset,))).hex(), "070103430006000000")

    def test_the_protocol_runs_the_vocabulary(self) -> None:
        self.assertEqual(protocol_commands("dlt698"), {
            "disconnect", "reconnect", "demand-reset", "event-log-clear", "parameter-set",
            "time-set", "time-sync"})

    def test_parameter_values(self) -> None:
        from fep.errors import ConfigError
        from fep.protocols.dlt698.control import parameter_values
        from fep.protocols.dlt698.data import OAD, Data, DataType, integer

        self.assertEqual(parameter_values({"41030200": "visible-string:A-1",
                                           "40010200": "octet-string:000000000001",
                                           "41160200": "long-unsigned:0x0102",
                                           "progress": {}}), (
            (OAD(0x4103, 2), Data(DataType.VISIBLE_STRING, "A-1")),
            (OAD(0x4001, 2), Data(DataType.OCTET_STRING, bytes.fromhex("000000000001"))),
            (OAD(0x4116, 2), integer(DataType.LONG_UNSIGNED, 0x0102))))
        for params, key in (({"41030200": "A-1"}, "41030200"),
                            ({"41160200": "unsigned:300"}, "41160200"),
                            ({"41160200": "float:1"}, "41160200"), ({}, "parameter-set")):
            with self.assertRaises(ConfigError) as caught:
                parameter_values(params)
            self.assertEqual(caught.exception.key, key)


class CommandJobTests(unittest.TestCase):
    timeout = 60

    async def setup(self, **sim: Any) -> None:
        self.sim = SimulatedDlt698Meter(ADDRESS, **sim)
        self.child = self.sim.children["000000000001"] = SimulatedDlt698Meter(
            "000000000001", **sim)
        port = listen(self, Dlt698MeterFactory([self.sim], reactor))
        self.meters = {
            "m1": Meter("m1", "dlt698", f"tcp:host=127.0.0.1:port={port}", address=ADDRESS),
            "T1": Meter("T1", "dlt698", f"tcp:host=127.0.0.1:port={port}", address=ADDRESS),
            "behind": Meter("behind", "dlt698", "dlt698:T1", address="000000000001",
                            metadata={"concentrator": "T1"}),
        }
        self.engine, _ = await engine_for(self, list(self.meters.values()))
        self.policy = resource_policy(self.engine.settings)

    async def ask(self, meter: str, action: str, **params: Any) -> Any:
        return await commands.request(
            self.engine.jobs, self.meters[meter], action, params, "alice", reactor.seconds(),
            approval=approval_of(self.engine.settings), policy=self.policy, retry_delay=0.2)

    async def settled(self, command_id: int) -> Any:
        self.engine.scheduler.kick()

        async def ended() -> bool:
            c = await self.engine.jobs.command(command_id)
            return c.status in (CommandStatus.DONE, CommandStatus.FAILED)

        await wait_for(ended, 30, f"command {command_id} to end", every=0.05)
        return await self.engine.jobs.command(command_id)

    async def approved(self, asked: Any, meter: str = "m1") -> Any:
        await commands.approve(self.engine.jobs, asked.id, "bob", reactor.seconds(),
                               self.meters[meter], self.policy)
        return await self.settled(asked.id)

    async def test_a_meter_behind_a_terminal_through_proxy(self) -> None:
        await self.setup()
        done = await self.approved(await self.ask("behind", "disconnect"), "behind")
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertIn("methods=80008100", done.outcome)
        # The meter behind trips; the terminal itself does not. The terminal read the
        # meter's relay after the trip (PROXY ActionThenGet): the outcome gives its state.
        self.assertEqual((self.child.relay, self.sim.relay), ("open", "closed"))
        self.assertIn("proxy action 000000000001 80008100", self.sim.log)
        self.assertIn("relay=open", done.outcome)
        done = await self.approved(await self.ask("behind", "reconnect", mode="direct"),
                                   "behind")
        self.assertEqual((done.status, self.child.relay), (CommandStatus.DONE, "closed"))
        self.assertIn("relay=closed", done.outcome)
        done = await self.settled((await self.ask("behind", "demand-reset")).id)
        self.assertEqual((done.status, self.child.demand_resets, self.sim.demand_resets),
                         (CommandStatus.DONE, 1, 0))
        # The meter behind refuses (its DAR through the terminal): failed at once.
        self.child.action_dar = 3
        done = await self.settled((await self.ask("behind", "demand-reset")).id)
        self.assertEqual(done.status, CommandStatus.FAILED)
        self.assertIn("meter behind: PROXY ACTION 43000600 of 000000000001 refused: DAR 3",
                      done.outcome)
        (job,) = [j for j in await self.engine.jobs.jobs() if j.command == done.id]
        self.assertEqual(job.attempts, 1)

    async def test_trip_waits_for_a_second_operator_then_opens_the_relay(self) -> None:
        await self.setup()
        asked = await self.ask("m1", "disconnect", limit="0")
        self.assertEqual(asked.status, CommandStatus.REQUESTED)
        self.engine.scheduler.kick()
        # Not sent before approval, and the requester cannot approve it.
        self.assertEqual(self.sim.relay, "closed")
        with self.assertRaises(commands.SameOperator):
            await commands.approve(self.engine.jobs, asked.id, "alice", reactor.seconds(),
                                   self.meters["m1"], self.policy)
        done = await self.approved(asked)
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertIn("methods=80008100", done.outcome)
        self.assertEqual(self.sim.relay, "open")
        # The relay's state read back after the ACTION (GET of F2050201).
        self.assertIn("relay=open", done.outcome)
        self.assertIn("get F2050201", self.sim.log)
        done = await self.approved(await self.ask("m1", "reconnect"))
        self.assertEqual((done.status, self.sim.relay), (CommandStatus.DONE, "close allowed"))
        # Close allowed: still open until the customer presses the button.
        self.assertIn("relay=open", done.outcome)
        done = await self.approved(await self.ask("m1", "reconnect", mode="direct"))
        self.assertEqual((done.status, self.sim.relay), (CommandStatus.DONE, "closed"))
        self.assertIn("relay=closed", done.outcome)

    async def test_demand_reset_and_event_clear_need_no_approval(self) -> None:
        await self.setup()
        asked = await self.ask("m1", "demand-reset")
        self.assertEqual(asked.status, CommandStatus.QUEUED)
        done = await self.settled(asked.id)
        self.assertEqual((done.status, self.sim.demand_resets), (CommandStatus.DONE, 1))
        done = await self.settled((await self.ask("m1", "event-log-clear")).id)
        self.assertEqual((done.status, self.sim.event_clears), (CommandStatus.DONE, 1))
        self.assertIn("action 43000600", self.sim.log)
        self.assertIn("connect", self.sim.log)
        self.assertIn("release", self.sim.log)

    async def test_a_refusal_fails_at_once_naming_meter_command_and_dar(self) -> None:
        await self.setup(action_dar=3)
        done = await self.settled((await self.ask("m1", "demand-reset")).id)
        self.assertEqual(done.status, CommandStatus.FAILED)
        self.assertIn("meter m1: ACTION 43000600 refused: DAR 3 (read/write refused)", done.outcome)
        (job,) = [j for j in await self.engine.jobs.jobs() if j.command == done.id]
        self.assertEqual((job.status, job.attempts), (JobStatus.FAILED, 1))  # never retried

    async def test_a_plan_trips_a_meter_and_one_behind_a_terminal_once_approved(self) -> None:
        from fep.collect.plans import PlanError, PlanRunner, PlanStatus, create
        from fep.collect.planstore import PlanStore

        await self.setup()
        plans = PlanStore(self.engine.jobs.store)
        now = reactor.seconds()
        plan = await create(plans, {"action": "disconnect", "target": "meters:m1,behind",
                                    "rate": 600}, "cli:alice", now,
                            list(self.meters.values()), self.policy)
        runner = PlanRunner(reactor, plans, node="test", released=self.engine.scheduler.kick,
                            poll=0.05, busy=0.05)
        runner.startService()
        self.addCleanup(runner.stopService)
        await plans.step(plan.id, "submit", "cli:alice", now)
        with self.assertRaises(PlanError):  # the creator cannot approve it
            await plans.step(plan.id, "approve", "api:alice", now)
        self.assertEqual((self.sim.relay, self.child.relay), ("closed", "closed"))
        await plans.step(plan.id, "approve", "api:bob", now)
        await plans.step(plan.id, "start", "api:bob", now)
        runner.kick()

        async def ended() -> bool:
            found = await plans.plan(plan.id)
            return found is not None and found.status == PlanStatus.DONE

        await wait_for(ended, 30, "the plan to end", every=0.05)
        self.assertEqual((self.sim.relay, self.child.relay), ("open", "open"))
        done = await plans.plan(plan.id)
        assert done is not None
        self.assertEqual(done.counts, {"done": 2})

    async def test_time_set_of_a_meter_behind_a_terminal_through_proxy_set(self) -> None:
        await self.setup()
        self.child.clock_offset = -40.0  # within the clock policy: no approval needed
        done = await self.settled((await self.ask("behind", "time-set")).id)
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        # PROXY SetRequestList of 40000200 through the terminal: the meter's clock is fep's.
        self.assertIn("proxy set 000000000001 40000200", self.sim.log)
        self.assertLess(abs(self.child.clock_offset), 5)
        self.assertEqual(self.sim.clock_offset, 0.0)

    async def ask_done(self, meter: str, action: str, **params: Any) -> Any:
        asked = await self.ask(meter, action, **params)
        if asked.status == CommandStatus.REQUESTED:
            return await self.approved(asked, meter)
        return await self.settled(asked.id)

    async def test_parameter_set_directly_and_through_the_terminal(self) -> None:
        await self.setup()
        done = await self.ask_done("m1", "parameter-set", **{"41030200": "visible-string:NEW-1"})
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertIn("set=41030200", done.outcome)
        self.assertIn("verified=yes", done.outcome)
        asset = OAD(0x4103, 2)
        self.assertEqual(self.sim.parameters[asset].value, "NEW-1")
        # Behind the terminal: PROXY SetThenGet, the meter's own attribute.
        done = await self.ask_done("behind", "parameter-set",
                                   **{"41030200": "visible-string:NEW-2"})
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertIn("verified=yes", done.outcome)
        self.assertEqual((self.child.parameters[asset].value, self.sim.parameters[asset].value),
                         ("NEW-2", "NEW-1"))
        self.assertIn("proxy set 000000000001 41030200", self.sim.log)
        # A value the meter refuses (its DAR): failed at once.
        done = await self.ask_done("m1", "parameter-set", **{"41030200": "unsigned:5"})
        self.assertEqual(done.status, CommandStatus.FAILED)
        self.assertIn("SET of 41030200 refused: DAR 7 (type mismatch)", done.outcome)

    async def test_wrong_parameters_are_refused_when_asked(
            self) -> None:  # fmt: skip
        await self.setup()
        for meter, action, params, text in (
            ("m1", "disconnect", {"limit": "forever"}, "limit is a whole number"),
            ("m1", "reconnect", {"mode": "maybe"}, "mode is allowed or direct"),
            ("behind", "disconnect", {"auto": "perhaps"}, "auto is yes or no"),
            ("m1", "parameter-set", {"41030200": "nothing"}, "is TYPE:VALUE"),
        ):
            with self.assertRaises(commands.CommandError) as caught:
                await self.ask(meter, action, **params)
            self.assertIn(f"meter {meter}: ", str(caught.exception))
            self.assertIn(text, str(caught.exception))
        self.assertEqual(await self.engine.jobs.commands(), [])
