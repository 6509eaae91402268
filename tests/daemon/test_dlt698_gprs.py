"""Acceptance (issue 19, terminals that log in): a simulated DL/T 698.45 terminal logs in
to the running daemon (`twistd -n fep`) over GPRS and is answered with fep's time; the
meters behind it (route ``dlt698:T1``) are read now through its PROXY, over that one
session, by `fep read --meter`, and by a registers task after the terminal's own read; a
REPORT-Notification it sends is acknowledged and stored
once, a repeat of it (its acknowledgement lost) acknowledged and not stored again; a
heartbeat after the reads is answered and bad bytes are counted while the session stays."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial import unittest

from fep.model import Meter
from fep.protocols.dlt698.apdu import ReportNotification, ResultNormal
from fep.protocols.dlt698.data import OAD
from fep.sim.dlt698 import Dlt698MeterFactory, Dlt698MeterProtocol, SimulatedDlt698Meter
from tests.daemon import harness
from tests.daemon.harness import Daemon, free_port, wait_for, write_config
from tests.inprocess import fep_main
from tests.processes import fep_command

TERMINAL = "000000009999"
BEHIND = ("000000000001", "000000000002")


class Dlt698TerminalOverGprsTests(unittest.TestCase):
    timeout = 240

    async def test_terminal_logs_in_meters_behind_read_through_proxy_report_stored_once(
            self) -> None:  # fmt: skip
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        short = Path(tempfile.mkdtemp(prefix="fep-"))
        self.addCleanup(shutil.rmtree, short, True)
        socket = short / "ctl" / "fep.sock"
        db = workdir / "fep.sqlite"
        await harness.add_meters(f"sqlite:{db}", [
            Meter("T1", "dlt698", f"gprs:dlt698={TERMINAL}", address=TERMINAL),
            *(Meter(f"M{n}", "dlt698", "dlt698:T1", address=address,
                    metadata={"concentrator": "T1", "dlt698_items": "00100200,20000200"})
              for n, address in enumerate(BEHIND, 1)),
        ])
        gprs_port = free_port()
        config = write_config(
            workdir, f"sqlite:{db}", push_port=0, period=3600, default_task=False,
            extra=(f"[gprs]\nlisten = tcp:{gprs_port}:interface=127.0.0.1\n"
                   "identify = ascii binary dlms iec62056-21 dlt698\n"
                   "unknown = quarantine\nidle_timeout = 300\n"
                   f"[control]\nsocket = {socket}\n"),
        )
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        await daemon.ready(timeout=120)

        # The terminal, with two meters behind it, dials in and logs in (FE wake-up bytes
        # before each frame, as terminals send).
        sim = SimulatedDlt698Meter(TERMINAL)
        for n, address in enumerate(BEHIND, 1):
            sim.children[address] = SimulatedDlt698Meter(address, start_kwh=100.0 * n)
        factory = Dlt698MeterFactory([sim], reactor, login=True, preamble=4)
        terminal: Dlt698MeterProtocol = await TCP4ClientEndpoint(
            reactor, "127.0.0.1", gprs_port).connect(factory)
        self.addCleanup(lambda: terminal.transport and terminal.transport.loseConnection())

        async def answered(count: int) -> bool:
            return sim.log.count("LinkResponse") >= count

        await wait_for(lambda: answered(1), 30, "the terminal's login answered")
        await daemon.logged("terminal 000000009999 logged in", timeout=30)

        # Read now, through the daemon's control socket: each meter behind the terminal is
        # read through its PROXY over the terminal's session.
        for n, address in enumerate(BEHIND, 1):
            done = await fep_command("--config", str(config), "read", "--meter", f"M{n}",
                                     timeout=120)
            self.assertEqual(done.returncode, 0, done.stderr)
            lines = [json.loads(line) for line in done.stdout.splitlines()]
            self.assertEqual({line["meter"] for line in lines}, {f"M{n}"})
            energy = [line for line in lines if line["obis"] == "1-0:1.8.0*255"]
            self.assertTrue(energy, lines)
            self.assertGreaterEqual(float(energy[0]["value"]), 100.0 * n)
            self.assertIn(f"proxy {address} 00100200,20000200", sim.log)
        self.assertEqual(factory.connections, 1)
        rows = harness.sqlite_rows(db, "SELECT meter, status, resource FROM jobs ORDER BY id",
                                   strict=True)
        # Jobs on the terminal's session: its resource, at the node that holds it.
        self.assertEqual(rows, [("M1", "done", f"gprs:dlt698={TERMINAL}"),
                                ("M2", "done", f"gprs:dlt698={TERMINAL}")])
        self.assertEqual(harness.sqlite_rows(db, "SELECT resource, node FROM session_homes"),
                         [(f"gprs:dlt698={TERMINAL}", "test")])
        stored = {m for (m,) in harness.sqlite_rows(db, "SELECT DISTINCT meter FROM readings")}
        self.assertEqual(stored, {"M1", "M2"})

        # A scheduled task of every meter's registers, run now: the terminal's own read
        # first, then its meters' through its PROXY, one after the other on its session.
        for argv in (("tasks", "add", "regs", "--kind", "registers", "--schedule",
                      "every 1d"), ("tasks", "run-now", "regs")):
            done = fep_main("--config", str(config), *argv)
            self.assertEqual(done.returncode, 0, done.stderr)

        def task_jobs() -> list[Any]:
            return harness.sqlite_rows(db, "SELECT meter, status, resource, started_at, "
                                       "finished_at FROM jobs WHERE task = 'regs'")

        async def task_done() -> bool:
            rows = task_jobs()
            return len(rows) == 3 and all(r[1] in ("done", "failed", "missed") for r in rows)

        await wait_for(task_done, 60, "the task's three jobs")
        by_meter = {r[0]: r for r in task_jobs()}
        self.assertEqual({m: r[1] for m, r in by_meter.items()},
                         {"T1": "done", "M1": "done", "M2": "done"})
        self.assertEqual({r[2] for r in by_meter.values()}, {f"gprs:dlt698={TERMINAL}"})
        for meter in ("M1", "M2"):
            self.assertGreaterEqual(by_meter[meter][3], by_meter["T1"][4])
        self.assertIn("get 00100200,00200200,20000200,20010200,20040200,200A0200,200F0200,"
                      "40000200", sim.log)  # the terminal's own registers
        self.assertEqual(factory.connections, 1)

        # The session is still the terminal's (one session, attached to T1).
        done = await fep_command("--config", str(config), "sessions", "--format", "json")
        (session,) = [json.loads(line) for line in done.stdout.splitlines()]
        self.assertEqual((session["modem"], session["meters"]),
                         (f"dlt698={TERMINAL}", ["T1"]))

        def t1_rows() -> list[Any]:
            return harness.sqlite_rows(db, "SELECT obis, read_at, value FROM readings WHERE "
                                       "meter = 'T1' ORDER BY obis, read_at", strict=True)

        before = t1_rows()
        # A report of the terminal's energy: acknowledged once stored.
        energy_oad = OAD(0x0010, 2)
        value = sim.attribute(energy_oad)
        report = ReportNotification(7, (ResultNormal(energy_oad, data=value),))
        terminal.send_report(report)

        async def acknowledged(count: int) -> bool:
            return sim.acknowledged.count(energy_oad) >= count

        await wait_for(lambda: acknowledged(1), 30, "the report acknowledged")

        first = t1_rows()
        self.assertEqual(len(first) - len(before), 5, first)  # the total and four tariffs
        # Sent again (as after a lost acknowledgement, with a new PIID): acknowledged,
        # not stored twice.
        terminal.send_report(ReportNotification(8, (ResultNormal(energy_oad, data=value),)))
        await wait_for(lambda: acknowledged(2), 30, "the repeat acknowledged")
        await daemon.logged("sent a report again", timeout=30)
        # A power-down event of the meter behind it (the frame names M1's address).
        event = sim.children[BEHIND[0]].report_outage(piid=9)
        sim.children[BEHIND[0]].reports.clear()
        terminal.send_report(event, address=BEHIND[0])
        # (Acknowledged in a frame to the address the report came from.)
        await daemon.logged("2 records of M1 kept and acknowledged", timeout=30)

        # Bad bytes, then a heartbeat: counted, the session stays and answers.
        terminal.transport.write(b"\x68\x20\x00\x81\x05garbage-that-is-no-frame\x16")
        terminal.heartbeat()
        await wait_for(lambda: answered(2), 30, "the heartbeat answered")
        await daemon.logged(f"terminal {TERMINAL}: bad input: ", timeout=30)
        self.assertEqual(factory.connections, 1)
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])
        self.assertEqual(t1_rows(), first)
        events = harness.sqlite_rows(db, "SELECT meter, kind FROM events ORDER BY kind",
                                     strict=True)
        self.assertEqual(events, [("M1", "power-outage"), ("M1", "power-restored")])
