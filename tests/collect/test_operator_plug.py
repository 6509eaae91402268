"""The collection engine in the operator tier's plug points: every job's meter session is
reported to the operator's Activity (sessions under way, last outcome, errors by type), and
EngineScheduler is the ``scheduler`` the API and console use (tasks with their last run,
jobs, a run now, job outcomes, meter commands under the engine's four-eyes rules). Real
engine, simulated DLMS meters over TCP, SQLite."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet import reactor
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from fep.collect.commands import NoSuchCommand, SameOperator, WrongState
from fep.collect.operator import EngineScheduler
from fep.collect.tasks import Task
from fep.errors import FepError
from fep.model import Meter
from fep.operator.activity import Activity
from fep.operator.interfaces import IScheduler
from fep.sim import dlms_meter
from tests.collect.harness import engine_for, jobs_ended
from tests.collect.test_dlms_jobs import serve
from tests.daemon.harness import free_port, wait_for


class Recorder:
    """Keeps what an observer is told, in order."""

    def __init__(self) -> None:
        self.told: list[tuple[Any, ...]] = []

    def read_started(self, meter: Meter) -> None:
        self.told.append(("started", meter.id))

    def read_finished(self, meter: Meter, error: BaseException | None, records: int) -> None:
        self.told.append(("finished", meter.id, type(error).__name__ if error else None,
                          records))


class EngineInOperatorTierTests(unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        fleet = [
            Meter("ok", "dlms", serve(self, dlms_meter.SimulatedDlmsMeter())),
            # Nobody listens there.
            Meter("lost", "dlms", f"tcp:host=127.0.0.1:port={free_port()}"),
        ]
        self.engine, self.store = await engine_for(self, fleet)
        self.activity = Activity()
        self.recorder = Recorder()
        self.engine.observers.extend([self.activity, self.recorder])
        self.plug = EngineScheduler(self.engine, self.store)
        now = reactor.seconds()
        task = Task(name="regs", kind="registers", schedule="every 1d", retries=0)
        await self.engine.jobs.save_task(
            attrs.evolve(task, next_due=task.first_due(now) + 3600), now)

    async def test_each_jobs_session_is_reported_as_it_starts_and_ends(self) -> None:
        ran = await self.plug.run("regs")
        self.assertEqual(ran, {"task": "regs", "queued": 2})
        await jobs_ended(self.engine, 2)
        told = {m: [t for t in self.recorder.told if t[1] == m] for m in ("ok", "lost")}
        self.assertEqual(told["ok"][0], ("started", "ok"))
        self.assertEqual(told["ok"][1][:3], ("finished", "ok", None))
        self.assertGreater(told["ok"][1][3], 0)
        self.assertEqual(told["lost"], [("started", "lost"), ("finished", "lost",
                                                             "ChannelError", 0)])
        self.assertEqual(self.activity.sessions(), [])
        self.assertTrue(self.activity.last["ok"].ok)
        self.assertFalse(self.activity.last["lost"].ok)
        self.assertEqual(self.activity.reads[("dlms", "ok")], 1)
        self.assertEqual(self.activity.errors[("dlms", "ChannelError")], 1)

    async def test_tasks_jobs_run_and_outcomes_through_the_plug_point(self) -> None:
        verifyObject(IScheduler, self.plug)
        with self.assertRaises(KeyError):
            await self.plug.run("nope")
        await self.plug.run("regs")
        await jobs_ended(self.engine, 2)
        (task,) = await self.plug.tasks()
        self.assertEqual((task["name"], task["type"], task["period_s"], task["enabled"]),
                         ("regs", "registers", 86400.0, True))
        self.assertEqual((task["last_run"]["jobs"], task["last_run"]["ok"],
                          task["last_run"]["failed"]), (2, 1, 1))
        jobs = await self.plug.jobs(10)
        self.assertEqual(sorted((j["meter"], j["state"]) for j in jobs),
                         [("lost", "failed"), ("ok", "done")])
        self.assertIn("records", {j["meter"]: j for j in jobs}["ok"]["outcome"])
        self.assertEqual(len(await self.plug.jobs(1)), 1)
        self.assertEqual(self.plug.job_outcomes(), {"done": 1, "failed": 1})

    async def test_commands_follow_the_engines_approval_rules(self) -> None:
        asked = await self.plug.request_command("ok", "disconnect", {"reason": "debt"},
                                                "api:alice")
        self.assertEqual((asked["status"], asked["requested_by"], asked["params"]["reason"]),
                         ("requested", "api:alice", "debt"))
        with self.assertRaises(SameOperator) as same:  # the API answers 403
            await self.plug.approve_command(asked["id"], "api:alice")
        self.assertIn("someone else", str(same.exception))
        approved = await self.plug.approve_command(asked["id"], "api:bob")
        self.assertEqual((approved["status"], approved["approved_by"]), ("queued", "api:bob"))
        self.assertIsNotNone(approved["job"])
        # Approved already: a second approval or a rejection conflicts with its state (409).
        with self.assertRaises(WrongState) as twice:
            await self.plug.approve_command(asked["id"], "api:carol")
        self.assertIn("not awaiting approval", str(twice.exception))
        with self.assertRaises(WrongState):
            await self.plug.reject_command(asked["id"], "api:carol", "late")

        async def done() -> bool:
            return bool((await self.plug.commands(1))[0]["status"] == "done")

        await wait_for(done, 30, "the disconnect to be done", every=0.05)
        again = await self.plug.request_command("ok", "disconnect", {}, "api:alice")
        rejected = await self.plug.reject_command(again["id"], "api:bob", "not now")
        self.assertEqual((rejected["status"], rejected["reason"]), ("rejected", "not now"))
        listed = await self.plug.commands(5)
        self.assertEqual([c["id"] for c in listed], [again["id"], asked["id"]])
        self.assertEqual(listed[1]["status"], "done")
        for meter, action, why in (("ok", "explode", "unknown command"),
                                   ("nobody", "reconnect", "no meter")):
            with self.assertRaises(FepError) as refused:
                await self.plug.request_command(meter, action, {}, "api:alice")
            self.assertIn(why, str(refused.exception))
        # An id that names no command is not found (the API answers 404), whichever step.
        with self.assertRaises(NoSuchCommand):
            await self.plug.approve_command(999, "api:bob")
        with self.assertRaises(NoSuchCommand):
            await self.plug.reject_command(999, "api:bob", "x")
