"""The ``dlt698:TERMINAL`` route (fep.collect.dlt698_route): a meter behind a DL/T 698.45
terminal is read over the terminal's own route, through its PROXY, by every job kind the
protocol reads; a wrong setting fails its job naming the meter and the key."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.trial import unittest

from fep.collect.concentrators import check_owner, line_order
from fep.collect.dlt698_route import terminal_id, through_terminal
from fep.collect.tasks import JobStatus, Target, Task
from fep.errors import ConfigError
from fep.model import Meter
from fep.sim.dlt698 import Dlt698MeterFactory, SimulatedDlt698Meter
from tests.collect.harness import engine_for, jobs_ended, listen

TERMINAL = "000000009999"
T1 = Meter("T1", "dlt698", "gprs:dlt698=000000009999", address=TERMINAL,
           metadata={"dlt698_password": "123456", "tz": "Asia/Shanghai"})


def behind(n: int, **changes: object) -> Meter:
    meter = Meter(f"M{n}", "dlt698", "dlt698:T1", address=f"00000000000{n}",
                  metadata={"concentrator": "T1", "dlt698_password": "mine"})
    return attrs.evolve(meter, **changes) if changes else meter


class RouteTests(unittest.TestCase):
    def test_terminal_id(self) -> None:
        self.assertEqual(terminal_id("dlt698:T1"), "T1")
        self.assertEqual(terminal_id(" DLT698: T1 "), "T1")
        self.assertIsNone(terminal_id("gprs:dlt698=000000009999"))
        self.assertIsNone(terminal_id("dlt698:"))

    def test_the_job_connects_over_the_terminals_route_with_its_association(self) -> None:
        route, meter = through_terminal(behind(1), {"T1": T1}.get) or ("", behind(1))
        self.assertEqual(route, T1.route)
        self.assertEqual(meter.id, "M1")
        self.assertEqual(meter.route, "dlt698:T1")
        self.assertEqual(meter.metadata["dlt698_terminal"], TERMINAL)
        # The association is the terminal's (its password, its zone).
        self.assertEqual(meter.metadata["dlt698_password"], "123456")
        self.assertEqual(meter.metadata["tz"], "Asia/Shanghai")
        self.assertIsNone(through_terminal(T1, {"T1": T1}.get))

    def test_wrong_settings_name_the_meter_and_key(self) -> None:
        known = {"T1": T1, "M2": behind(2)}.get
        cases = [
            (behind(1, route="dlt698:T9"), "route", "not a meter of the meter list"),
            (behind(1, route="dlt698:M2"), "route", "no DL/T 698.45 terminal"),
            (behind(1, protocol="dlt645"), "protocol", "must be dlt698"),
            (behind(1, address=None), "address", "its own address"),
            (behind(1, route="dlt698:"), "route", "names no terminal"),
        ]
        for meter, key, text in cases:
            with self.assertRaises(ConfigError) as caught:
                through_terminal(meter, known)
            self.assertEqual(caught.exception.key, key, text)
            self.assertIn("meter M1", str(caught.exception))
            self.assertIn(text, str(caught.exception))

    def test_concentrator_checks_take_the_route_through_the_terminal(self) -> None:
        known = {"T1": T1}
        check_owner(behind(1), known)
        with self.assertRaises(ConfigError) as caught:
            check_owner(behind(1, metadata={"concentrator": "T1"}, route="dlt698:T2"),
                        {**known, "T2": attrs.evolve(T1, id="T2")})
        self.assertEqual(caught.exception.key, "concentrator")
        steps, bad = line_order([behind(1), behind(2)], [T1])
        self.assertEqual(([s.meter.id for s in steps], bad), (["M1", "M2"], []))


class ResourceTests(unittest.TestCase):
    def test_a_meter_behind_is_on_its_terminals_resource(self) -> None:
        from fep.collect.dlt698_route import line_through_terminal
        from fep.collect.limits import ResourcePolicy

        policy = ResourcePolicy(pools={"dialup": 2})
        dialled = attrs.evolve(T1, id="T2", route="dialup:5551001")
        key = line_through_terminal({"T1": T1, "T2": dialled, "M2": behind(2)}.get,
                                    policy.key)
        self.assertEqual(key("dlt698:T1"), "gprs:dlt698=000000009999")
        self.assertEqual(key("dlt698:T2"), "dialup:*")
        self.assertEqual(key("dlt698:T9"), "dlt698:T9")  # unknown: its own
        self.assertEqual(key("dlt698:M2"), "dlt698:M2")  # no terminal: its own
        self.assertEqual(key("tcp:host=h:port=1"), "tcp:h:1")


class EngineTests(unittest.TestCase):
    timeout = 60

    def terminal(self) -> tuple[SimulatedDlt698Meter, Meter]:
        sim = SimulatedDlt698Meter(TERMINAL, started=time.time() - 86400)
        for n in (1, 2):
            sim.children[f"00000000000{n}"] = SimulatedDlt698Meter(
                f"00000000000{n}", started=time.time() - 86400, start_kwh=100.0 * n)
        port = listen(self, Dlt698MeterFactory([sim], reactor))
        return sim, Meter("T1", "dlt698", f"tcp:host=127.0.0.1:port={port}", address=TERMINAL)

    async def test_registers_and_profile_of_meters_behind_read_through_proxy(self) -> None:
        sim, terminal = self.terminal()
        meters = [terminal, behind(1), behind(2), behind(3, address="000000000077")]
        engine, store = await engine_for(self, meters)
        now = reactor.seconds()
        await engine.jobs.save_task(Task(name="regs", kind="registers", schedule="every 1d",
                                         next_due=now + 3600), now)
        await engine.scheduler.run_now("regs")
        jobs = {j.meter: j for j in await jobs_ended(engine, 4)}
        for meter in ("T1", "M1", "M2"):
            self.assertEqual(jobs[meter].status, JobStatus.DONE, jobs[meter].error)
            self.assertGreater(jobs[meter].records, 0, meter)
            readings = await store.readings(meter)
            self.assertTrue(readings, meter)
            self.assertEqual({r.meter for r in readings}, {meter})
        # On the terminal's resource, read after it (the concentrator's meters follow it).
        self.assertEqual({jobs[m].resource for m in ("T1", "M1", "M2", "M3")},
                         {f"tcp:127.0.0.1:{terminal.route.rsplit('=', 1)[1]}"})
        for meter in ("M1", "M2", "M3"):
            self.assertGreaterEqual(jobs[meter].started_at, jobs["T1"].finished_at)
        # A meter the terminal does not have: the terminal says so (timeout, DAR 33), read
        # with nothing to keep.
        self.assertEqual(jobs["M3"].records, 0)
        self.assertTrue(any(line.startswith("proxy 000000000001") for line in sim.log))
        self.assertTrue(any(line.startswith("proxy 000000000002") for line in sim.log))

        await engine.jobs.save_task(Task(name="lp", kind="load-profile", schedule="every 1d",
                                         target=Target.parse("meters:M1"),
                                         options={"horizon": "2h"}, next_due=now + 3600),
                                    now)
        await engine.scheduler.run_now("lp")
        (job,) = await jobs_ended(engine, 1, task="lp")
        self.assertEqual(job.status, JobStatus.DONE, job.error)
        blocks = await store.intervals("M1", obis="1.8.0")
        self.assertTrue(blocks)
        self.assertEqual(blocks[0].period, timedelta(minutes=15))
        self.assertTrue(any(line.startswith("proxy record 000000000001 50020200")
                            for line in sim.log), sim.log)

    async def test_a_meter_behind_an_unknown_terminal_fails_without_retry(self) -> None:
        engine, _ = await engine_for(self, [behind(1, metadata={}, route="dlt698:T9")])
        now = reactor.seconds()
        await engine.jobs.save_task(Task(name="regs", kind="registers", schedule="every 1d",
                                         next_due=now + 3600), now)
        await engine.scheduler.run_now("regs")
        (job,) = await jobs_ended(engine, 1)
        self.assertEqual(job.status, JobStatus.FAILED)
        self.assertIn("terminal 'T9' is not a meter of the meter list", job.error or "")
        self.assertEqual(job.attempts, 1)


class DocumentedTests(unittest.TestCase):
    """docs/routes.md, "Meters behind a DL/T 698.45 terminal": its meter list and errors."""

    def section(self) -> str:
        from pathlib import Path

        text = (Path(__file__).resolve().parents[2] / "docs" / "routes.md").read_text()
        return text.split("## Meters behind a DL/T 698.45 terminal")[1]

    def test_the_meter_list_example(self) -> None:
        from pathlib import Path

        from fep.cli import read_meter_csv

        csv_text = self.section().split("```\n")[1]
        path = Path(self.mktemp())
        path.write_text(csv_text)
        meters = {m.id: m for m in read_meter_csv(path)}
        steps, bad = line_order([meters["M1"], meters["M2"]], meters.values())
        self.assertEqual((len(steps), bad), (2, []))
        route, seen = through_terminal(meters["M1"], meters.get) or ("", meters["M1"])
        self.assertEqual((route, seen.metadata["dlt698_terminal"]),
                         ("gprs:dlt698=000000009999", "000000009999"))

    def test_the_documented_errors(self) -> None:
        rows = [line for line in self.section().splitlines() if line.startswith("| `dlt698:")]
        self.assertEqual(len(rows), 4)
        known = {"T1": T1, "T2": attrs.evolve(T1, id="T2"), "M2": behind(2)}
        cases = [behind(1, route="dlt698:T9"), behind(1, route="dlt698:M2"),
                 behind(1, route="dlt698:")]
        for meter, row in zip(cases, rows, strict=False):
            with self.assertRaises(ConfigError) as caught:
                through_terminal(meter, known.get)
            self.assertIn(f"`{caught.exception.message}`", row)
        with self.assertRaises(ConfigError) as caught:
            check_owner(behind(1, route="dlt698:T2"), known)
        self.assertIn(f"`{caught.exception.message}`", rows[3])


class ReadNowTests(unittest.TestCase):
    async def test_a_meter_behind_a_terminal_on_another_node_is_refused_at_once(self) -> None:
        from fep.errors import ChannelError

        engine, _ = await engine_for(self, [T1, behind(1)])
        resource = engine.scheduler.resources.key("dlt698:T1")
        self.assertEqual(resource, T1.route)
        await engine.jobs.set_home(resource, "b", reactor.seconds())
        with self.assertRaises(ChannelError) as caught:
            await engine.reader.read_now(behind(1), who="api:alice")
        self.assertIn("meter M1 (route dlt698:T1", str(caught.exception))
        self.assertIn("connected to node b", str(caught.exception))


class ForwardedTests(unittest.TestCase):
    """``dlt698:T1:port=F2010201``: a DL/T 645 meter on the terminal's RS-485 port, read by
    the DL/T 645 protocol through PROXY transparent forwarding."""

    timeout = 60

    def setup(self, **terminal_md: str) -> tuple[SimulatedDlt698Meter, Any, Meter, Meter]:
        from fep.protocols.dlt645 import frames as f645
        from fep.protocols.dlt698.data import OAD
        from fep.sim.dlt645 import SimulatedDlt645Meter

        sim = SimulatedDlt698Meter(TERMINAL, started=time.time() - 86400)
        m645 = SimulatedDlt645Meter(address="000000000645")

        def rs485(data: bytes) -> bytes | None:
            answer = m645.answer(f645.decode_frame(data))
            return answer.encode() if answer is not None else None

        sim.ports[OAD(0xF201, 2, 1)] = rs485
        port = listen(self, Dlt698MeterFactory([sim], reactor))
        terminal = Meter("T1", "dlt698", f"tcp:host=127.0.0.1:port={port}", address=TERMINAL,
                         metadata=terminal_md)
        meter = Meter("E1", "dlt645", "dlt698:T1:port=F2010201:baud=2400",
                      address="000000000645", metadata={"concentrator": "T1"})
        return sim, m645, terminal, meter

    async def test_a_dlt645_meter_on_the_terminals_port_read_by_the_engine(self) -> None:
        sim, _, terminal, meter = self.setup()
        engine, store = await engine_for(self, [terminal, meter])
        now = reactor.seconds()
        await engine.jobs.save_task(Task(name="regs", kind="registers", schedule="every 1d",
                                         target=Target.parse("meters:E1"),
                                         next_due=now + 3600), now)
        await engine.scheduler.run_now("regs")
        (job,) = await jobs_ended(engine, 1)
        self.assertEqual(job.status, JobStatus.DONE, job.error)
        readings = await store.readings("E1")
        self.assertTrue(any(str(r.obis) == "1-0:1.8.0*255" for r in readings),
                        [str(r.obis) for r in readings])
        # CONNECT with the terminal, the DL/T 645 frames through its port, RELEASE.
        self.assertEqual(sim.log[0], "connect")
        self.assertTrue(any(line.startswith("proxy forward F2010201 ") for line in sim.log))
        self.assertEqual(sim.log[-1], "release")
        self.assertEqual(job.resource, f"tcp:127.0.0.1:{terminal.route.rsplit('=', 1)[1]}")

    async def test_a_silent_port_and_a_refused_association_fail_the_job(self) -> None:
        sim, _, terminal, meter = self.setup(dlt698_password="wrong")
        sim.password = "123456"
        silent = attrs.evolve(meter, id="E2", route="dlt698:T1:port=F2010202")
        engine, _ = await engine_for(self, [terminal, meter, silent])
        now = reactor.seconds()
        await engine.jobs.save_task(Task(name="regs", kind="registers", schedule="every 1d",
                                         target=Target.parse("meters:E1"), retries=0,
                                         next_due=now + 3600), now)
        await engine.scheduler.run_now("regs")
        (job,) = await jobs_ended(engine, 1)
        self.assertEqual(job.status, JobStatus.FAILED)
        self.assertIn("CONNECT refused", job.error)
        sim.password = None
        await engine.jobs.save_task(Task(name="silent", kind="registers", schedule="every 1d",
                                         target=Target.parse("meters:E2"), retries=0,
                                         options={"timeout": "2s"}, next_due=now + 3600), now)
        await engine.scheduler.run_now("silent")
        (job,) = await jobs_ended(engine, 1, task="silent")
        self.assertEqual(job.status, JobStatus.FAILED)
        self.assertTrue(any(line.startswith("proxy forward F2010202") for line in sim.log))

    def test_route_options(self) -> None:
        _, _, terminal, meter = self.setup()
        route, read = through_terminal(meter, {"T1": terminal}.get) or ("", meter)
        self.assertEqual(route, terminal.route)
        self.assertEqual(read.metadata["dlt698_forward_port"], "F2010201")
        self.assertEqual(terminal_id(meter.route), "T1")
        known = {"T1": terminal}.get
        for route_text, text in (
            ("dlt698:T1:port=F2010201:baud=1234", "baud 1234"),
            ("dlt698:T1:port=nothing", "route"),
            ("dlt698:T1:speed=9600", "options are port= and baud="),
            ("dlt698:T1:port", "is not KEY=VALUE"),
        ):
            with self.assertRaises(ConfigError) as caught:
                through_terminal(attrs.evolve(meter, route=route_text), known)
            self.assertEqual(caught.exception.key, "route")
            self.assertIn(text, str(caught.exception))
        with self.assertRaises(ConfigError) as caught:
            through_terminal(behind(1, route="dlt698:T1:port=F2010201"), known)
        self.assertIn("through its PROXY, not its port", str(caught.exception))
