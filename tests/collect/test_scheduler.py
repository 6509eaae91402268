"""The scheduler on a fake clock (MemoryReactorClock) with a real SQLite job store run
synchronously: task runs into jobs, priorities, per-resource limits, shared pools, the
global cap, permits per cell, retries with backoff, deadlines (missed, not dropped),
leases across nodes, wake-up before GPRS jobs, registration and shutdown."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial import unittest
from zope.interface import implementer

from fep.collect.limits import Permits, ResourcePolicy
from fep.collect.scheduler import Scheduler
from fep.collect.tasks import Job, JobStatus, Priority, Target, Task
from fep.interfaces import IWakeUp
from fep.model import Meter
from tests.collect.fakes import ManualRunner, directory_with, sync_store
from tests.fakes import SyncReactor, fired

# A quarter-hour boundary.
T0 = 900.0 * 1_888_889


def tcp(n: int) -> str:
    return f"tcp:host=10.0.0.{n}:port=4059"


def meters(count: int, route: Any = tcp, **metadata: str) -> list[Meter]:
    return [
        Meter(f"m{n}", "dlms", route(n), metadata=dict(metadata)) for n in range(1, count + 1)
    ]


class SchedulerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.reactor = SyncReactor()
        self.reactor.advance(T0 + 1)
        self.store, self.jobs = sync_store(self.reactor, self)
        self.runner = ManualRunner()
        self.schedulers: list[Scheduler] = []

    def tearDown(self) -> None:
        for scheduler in self.schedulers:
            for _, _, d in self.runner.attempts:
                if not d.called:
                    from fep.collect.tasks import Outcome

                    d.callback(Outcome(False, error="test over", retry=False))
            if scheduler.running:
                fired(scheduler.stopService())

    def now(self) -> float:
        return float(self.reactor.seconds())

    def scheduler(self, fleet: list[Meter], **kw: Any) -> Scheduler:
        directory = directory_with(self.store, fleet)
        kw.setdefault("node", "a")
        kw.setdefault("poll", 1.0)
        scheduler = Scheduler(self.reactor, self.jobs, directory, self.runner, **kw)
        scheduler.startService()
        self.schedulers.append(scheduler)
        return scheduler

    def task(self, name: str = "regs", **kw: Any) -> Task:
        kw.setdefault("kind", "registers")
        kw.setdefault("schedule", "every 15m")
        task = Task(name=name, **kw)
        task = Task(**{**_fields(task), "next_due": task.first_due(self.now())})
        fired(self.jobs.save_task(task, self.now()))
        return task

    def add_job(self, meter: Meter, priority: int = Priority.SCHEDULED, **kw: Any) -> None:
        policy = self.schedulers[-1].resources if self.schedulers else ResourcePolicy()
        job = Job(id=0, meter=meter.id, kind=kw.pop("kind", "registers"), route=meter.route,
                  resource=policy.key(meter.route), due=self.now(),
                  run_at=self.now(), priority=priority, **kw)
        fired(self.jobs.add_jobs([job], self.now()))

    def status(self, meter: str) -> list[tuple[str, int]]:
        return [(str(j.status), j.attempts) for j in fired(self.jobs.jobs(meter=meter))]

    # -- task runs ----------------------------------------------------------------------

    def test_a_due_run_becomes_one_job_per_target_meter(self) -> None:
        fleet = meters(3)
        fleet[2] = Meter("m3", "dlt645", tcp(3))
        self.task(target=Target.parse("protocol:dlms"))
        self.scheduler(fleet)
        self.reactor.advance(890)
        self.assertEqual(self.runner.started(), [])
        self.reactor.advance(10)  # T0 + 901: the run due at T0 + 900
        self.assertEqual(sorted(self.runner.running()), ["m1", "m2"])
        job = self.runner.attempts[0][0]
        self.assertEqual(job.due, T0 + 900)
        self.assertEqual(job.task, "regs")

    def test_the_next_run_follows_on_the_schedule(self) -> None:
        self.task()
        self.scheduler(meters(1))
        self.reactor.advance(900)
        self.runner.succeed("m1")
        self.reactor.advance(898)
        self.assertEqual(len(self.runner.attempts), 1)
        self.reactor.advance(1)
        self.assertEqual(len(self.runner.attempts), 2)
        self.assertEqual(self.runner.attempts[1][0].due, T0 + 1800)

    def test_only_one_node_expands_a_run(self) -> None:
        self.task()
        fleet = meters(2)
        self.scheduler(fleet, node="a", concurrency=1)
        self.scheduler(fleet, node="b", concurrency=1)
        self.reactor.advance(900)
        self.assertEqual(len(fired(self.jobs.jobs())), 2)
        self.assertEqual(sorted(self.runner.running()), ["m1", "m2"])
        nodes = {j.node for j in fired(self.jobs.jobs())}
        self.assertEqual(nodes, {"a", "b"})

    def test_a_disabled_task_makes_no_jobs(self) -> None:
        self.task()
        fired(self.jobs.set_task_enabled("regs", False, self.now()))
        self.scheduler(meters(1))
        self.reactor.advance(1000)
        self.assertEqual(fired(self.jobs.jobs()), [])

    def test_a_new_run_supersedes_the_waiting_one(self) -> None:
        # One line, two meters, the first never ends: the second's run waits, and the next
        # run replaces it (recorded as missed), not piles up behind it.
        self.task(deadline=3600)
        self.scheduler(meters(2, route=lambda n: f"tcp:host=10.0.0.1:port=1@{n}"))
        self.reactor.advance(900)
        self.assertEqual(self.runner.running(), ["m1"])
        self.reactor.advance(900)
        first, second = sorted(fired(self.jobs.jobs(meter="m2")), key=lambda j: j.due)
        self.assertEqual(first.status, JobStatus.MISSED)
        self.assertIn("superseded", first.error)
        self.assertEqual(second.status, JobStatus.PENDING)

    # -- priorities and limits ----------------------------------------------------------

    def test_priorities_on_demand_alarm_scheduled_backfill(self) -> None:
        fleet = meters(5)
        s = self.scheduler(fleet, concurrency=1)
        for meter, priority in zip(fleet, [Priority.SCHEDULED, Priority.BACKFILL,
                                           Priority.ALARM, Priority.ON_DEMAND,
                                           Priority.SCHEDULED], strict=True):
            self.add_job(meter, priority)
        s.kick()
        self.reactor.advance(0)
        order = []
        for _ in fleet:
            (meter,) = self.runner.running()
            order.append(meter)
            self.runner.succeed(meter)
            self.reactor.advance(0)
        self.assertEqual(order, ["m4", "m3", "m1", "m5", "m2"])

    def test_one_job_at_a_time_per_line(self) -> None:
        bus = meters(3, route=lambda n: f"tcp:host=10.0.0.9:port=4001@{n}")
        other = Meter("x", "dlms", tcp(7))
        s = self.scheduler([*bus, other])
        for meter in [*bus, other]:
            self.add_job(meter)
        s.kick()
        self.reactor.advance(0)
        self.assertEqual(sorted(self.runner.running()), ["m1", "x"])
        self.runner.succeed("m1")
        self.reactor.advance(0)
        self.assertEqual(sorted(self.runner.running()), ["m2", "x"])

    def test_a_shared_modem_pool_takes_its_number_of_lines(self) -> None:
        pool = meters(4, route=lambda n: f"dialup:+54114321000{n}")
        s = self.scheduler(pool, resources=ResourcePolicy(pools={"dialup": 2}))
        for meter in pool:
            self.add_job(meter)
        s.kick()
        self.reactor.advance(0)
        self.assertEqual(len(self.runner.running()), 2)
        self.runner.succeed(self.runner.running()[0])
        self.reactor.advance(0)
        self.assertEqual(len(self.runner.running()), 2)

    def test_the_global_cap(self) -> None:
        fleet = meters(5)
        s = self.scheduler(fleet, concurrency=2)
        for meter in fleet:
            self.add_job(meter)
        s.kick()
        self.reactor.advance(0)
        self.assertEqual(len(self.runner.running()), 2)
        for _ in range(3):
            self.runner.succeed(self.runner.running()[0])
            self.reactor.advance(0)
            self.assertEqual(len(self.runner.running()), 2)

    def test_permits_per_radio_cell(self) -> None:
        fleet = [Meter(f"g{n}", "dlms", f"gprs:imei=3569380356438{n:02d}",
                       metadata={"cell": "262-01-1234-5678" if n < 4 else "262-01-1-2"})
                 for n in range(1, 6)]
        s = self.scheduler(fleet, permits=Permits({"cell": 2}))
        for meter in fleet:
            self.add_job(meter)
        s.kick()
        self.reactor.advance(0)
        self.assertEqual(sorted(self.runner.running()), ["g1", "g2", "g4", "g5"])
        self.runner.succeed("g1")
        self.reactor.advance(0)
        self.assertEqual(sorted(self.runner.running()), ["g2", "g3", "g4", "g5"])

    # -- retries and deadlines ----------------------------------------------------------

    def test_retries_back_off(self) -> None:
        self.task(retries=2, retry_delay=10, backoff=2)
        self.scheduler(meters(1))
        self.reactor.advance(900)
        self.runner.fail("m1")
        self.assertEqual(self.status("m1"), [("pending", 1)])
        self.reactor.advance(9.5)
        self.assertEqual(self.runner.running(), [])
        self.reactor.advance(0.5)  # 10 s after the first failure
        self.runner.fail("m1")
        self.reactor.advance(19.5)
        self.assertEqual(self.runner.running(), [])
        self.reactor.advance(0.5)  # 20 s after the second
        self.runner.fail("m1", error="timeout again")
        (job,) = fired(self.jobs.jobs(meter="m1"))
        self.assertEqual((job.status, job.attempts, job.error, job.first_ok),
                         (JobStatus.FAILED, 3, "timeout again", False))

    def test_a_retry_that_succeeds_is_not_a_first_pass_success(self) -> None:
        self.task(retries=1, retry_delay=5)
        self.scheduler(meters(2))
        self.reactor.advance(900)
        self.runner.succeed("m1")
        self.runner.fail("m2")
        self.reactor.advance(5)
        self.runner.succeed("m2")
        (row,) = fired(self.jobs.stats("2000-01-01", "task"))
        self.assertEqual((row.jobs, row.first_ok, row.ok, row.failed, row.attempts),
                         (2, 1, 2, 0, 3))
        (run,) = fired(self.jobs.run_stats("regs"))
        self.assertEqual((run.jobs, run.first_ok, run.ok, run.open), (2, 1, 2, 0))

    def test_not_supported_is_not_retried(self) -> None:
        self.task(retries=3, retry_delay=1)
        self.scheduler(meters(1))
        self.reactor.advance(900)
        self.runner.fail("m1", error="not supported", retry=False)
        self.reactor.advance(100)
        self.assertEqual(self.status("m1"), [("failed", 1)])

    def test_a_job_that_cannot_start_before_its_deadline_is_missed(self) -> None:
        fleet = meters(2)
        s = self.scheduler(fleet, concurrency=1)
        self.add_job(fleet[0], Priority.ON_DEMAND)
        self.add_job(fleet[1], deadline=self.now() + 30)
        s.kick()
        self.reactor.advance(0)
        self.assertEqual(self.runner.running(), ["m1"])
        self.reactor.advance(31)
        self.assertEqual(self.status("m2"), [("missed", 0)])
        self.runner.succeed("m1")
        self.reactor.advance(1)
        self.assertEqual(self.runner.started(), ["m1"])
        (row,) = [r for r in fired(self.jobs.stats("2000-01-01", "meter")) if r.key == "m2"]
        self.assertEqual((row.jobs, row.missed), (1, 1))

    def test_no_retry_after_the_deadline(self) -> None:
        self.task(retries=3, retry_delay=60, deadline=90)
        self.scheduler(meters(1))
        self.reactor.advance(900)
        self.runner.fail("m1")
        self.reactor.advance(60)
        self.runner.fail("m1")  # the next would be 120 s later: past the deadline
        (job,) = fired(self.jobs.jobs(meter="m1"))
        self.assertEqual((job.status, job.attempts), (JobStatus.FAILED, 2))
        self.assertIn("deadline", job.error)

    # -- leases across nodes ------------------------------------------------------------

    def test_a_dead_nodes_jobs_are_taken_when_its_lease_expires(self) -> None:
        fleet = meters(1)
        directory = directory_with(self.store, fleet)
        self.add_job(fleet[0])
        (leased,) = fired(self.jobs.lease("dead", self.now(), self.now() + 60, 10, {}, {}))
        fired(self.jobs.start(leased.id, "dead", self.now(), self.now() + 60))
        s = Scheduler(self.reactor, self.jobs, directory, self.runner, node="alive", poll=1)
        s.startService()
        self.schedulers.append(s)
        self.reactor.advance(59)
        self.assertEqual(self.runner.started(), [])
        self.reactor.advance(2)
        self.assertEqual(self.runner.running(), ["m1"])
        self.runner.succeed("m1")
        (job,) = fired(self.jobs.jobs())
        self.assertEqual((job.status, job.node, job.attempts), (JobStatus.DONE, "alive", 2))
        # The dead node, had it come back, could not record an outcome any more.
        self.assertFalse(fired(self.jobs.finish(leased, "dead", "done", _ok(), self.now(),
                                                None)))

    def test_leases_are_renewed_while_a_job_runs(self) -> None:
        fleet = meters(1)
        s = self.scheduler(fleet, lease=30)
        self.add_job(fleet[0])
        s.kick()
        self.reactor.advance(0)
        self.reactor.pump([5] * 40)  # 200 s with the job still running
        other = fired(self.jobs.lease("b", self.now(), self.now() + 30, 10, {}, {}))
        self.assertEqual(other, [])

    def test_a_resource_in_use_on_another_node_is_not_leased(self) -> None:
        bus = meters(2, route=lambda n: f"tcp:host=10.0.0.9:port=4001@{n}")
        for meter in bus:
            self.add_job(meter)
        (held,) = fired(self.jobs.lease("b", self.now(), self.now() + 60, 1, {}, {}))
        self.assertEqual(held.meter, "m1")
        self.scheduler(bus, node="a")
        self.reactor.advance(1)
        self.assertEqual(self.runner.started(), [])

    def test_jobs_for_an_inbound_session_go_to_its_node(self) -> None:
        modem = Meter("g1", "dlms", "gprs:imei=356938035643809")
        fired(self.jobs.set_home("gprs:imei=356938035643809", "b", self.now()))
        self.scheduler([modem], node="a")
        self.add_job(modem)
        self.reactor.advance(5)
        self.assertEqual(self.runner.started(), [])
        fired(self.jobs.set_home("gprs:imei=356938035643809", "a", self.now()))
        self.reactor.advance(1)
        self.assertEqual(self.runner.running(), ["g1"])

    # -- wake-up, registration, shutdown ------------------------------------------------

    def test_a_gprs_meter_not_connected_is_woken_up_first(self) -> None:
        wakeup = FakeWakeUp()
        modem = Meter("g1", "dlms", "gprs:imei=356938035643809")
        s = self.scheduler([modem], wakeup=wakeup, wakeup_timeout=90)
        self.add_job(modem)
        s.kick()
        self.reactor.advance(0)
        self.assertEqual([(m.id, t) for m, t, _ in wakeup.asked], [("g1", 90)])
        self.assertEqual(self.runner.started(), [])  # waits for the modem to dial in
        wakeup.asked[0][2].callback(None)
        self.assertEqual(self.runner.running(), ["g1"])

    def test_a_connected_gprs_meter_is_not_woken(self) -> None:
        wakeup = FakeWakeUp(connected={"gprs:imei=356938035643809"})
        modem = Meter("g1", "dlms", "gprs:imei=356938035643809")
        s = self.scheduler([modem], wakeup=wakeup)
        self.add_job(modem)
        s.kick()
        self.reactor.advance(0)
        self.assertEqual(wakeup.asked, [])
        self.assertEqual(self.runner.running(), ["g1"])

    def test_a_registering_meter_gets_its_default_tasks(self) -> None:
        self.task("first-profile", kind="load-profile", options={"on_register": "yes"})
        self.task("regs")
        s = self.scheduler([])
        added = fired(Deferred.fromCoroutine(
            s.meter_registered(Meter("new", "dlms", tcp(5)))))
        self.assertEqual(added, 1)
        self.reactor.advance(0)
        ((job, meter, _),) = self.runner.attempts
        self.assertEqual((job.task, str(job.kind), job.priority, meter.id),
                         ("first-profile", "load-profile", Priority.ON_DEMAND, "new"))

    def test_run_now(self) -> None:
        self.task(target=Target.parse("meters:m2"))
        s = self.scheduler(meters(3))
        self.assertEqual(fired(Deferred.fromCoroutine(s.run_now("regs"))), 1)
        self.reactor.advance(0)
        self.assertEqual(self.runner.running(), ["m2"])

    def test_stopping_gives_back_jobs_not_started(self) -> None:
        fleet = meters(3)
        s = self.scheduler(fleet, concurrency=1)
        for meter in fleet:
            self.add_job(meter)
        s.kick()
        self.reactor.advance(0)
        self.assertEqual(len(s.queue), 0)  # leases only what it can run
        stopping = s.stopService()
        self.assertFalse(stopping.called)  # waits for the job under way
        self.runner.succeed("m1")
        fired(stopping)
        statuses = sorted(str(j.status) for j in fired(self.jobs.jobs()))
        self.assertEqual(statuses, ["done", "pending", "pending"])


def _fields(task: Task) -> dict[str, Any]:
    import attrs

    return attrs.asdict(task, recurse=False)


def _ok() -> Any:
    from fep.collect.tasks import Outcome

    return Outcome(True)


@implementer(IWakeUp)
class FakeWakeUp:
    def __init__(self, connected: set[str] | None = None) -> None:
        self.connected = connected or set()
        self.asked: list[tuple[Meter, float, Deferred[None]]] = []

    def is_connected(self, route: str) -> bool:
        return route in self.connected

    def wake_up(self, meter: Meter, timeout: float) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.asked.append((meter, timeout, d))
        return d
