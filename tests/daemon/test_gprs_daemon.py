"""Acceptance (issue 5, GPRS): the running daemon (`twistd -n fep`) takes simulated modems on
its GPRS listener, stores their pushes, reads its meters over their sessions on its schedule
(pull over the pushed socket), and `fep sessions` lists the live sessions from the command
line through the control socket."""

from __future__ import annotations

import json
import shutil
import tempfile
from functools import partial
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial import unittest

from fep.model import Meter
from fep.sim.dlms import EXAMPLE_AK, EXAMPLE_EK
from fep.sim.gprs_modem import ModemSpec, SimulatedGprsModem
from tests.daemon import harness
from tests.daemon.harness import Daemon, free_port, wait_for, write_config
from tests.inprocess import fep_main

DLMS_IMEI = "356938035643809"
IEC_SERIAL = "LGZ0042"
STRANGER_IMEI = "356938035643817"
TITLE = b"FEPGPRS1"


class GprsDaemonTests(unittest.TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.workdir = Path(self.mktemp()).resolve()
        self.workdir.mkdir(parents=True)
        self.db = self.workdir / "fep.sqlite"
        # A UNIX socket path must stay short (108 bytes): not under the test's deep temp.
        short = Path(tempfile.mkdtemp(prefix="fep-"))
        self.addCleanup(shutil.rmtree, short, True)
        self.socket = short / "ctl" / "fep.sock"

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        return harness.sqlite_rows(self.db, sql, strict=True)

    async def fep(self, *args: str) -> tuple[int, str, str]:
        """The `fep` command line in-process (`fep.cli.main`): it only asks the daemon's
        control socket, so the simulated modems on this reactor stand still for a moment."""
        done = fep_main(*args)
        return done.returncode, done.stdout, done.stderr

    async def test_modems_push_are_read_and_listed_by_fep_sessions(self) -> None:
        await harness.add_meters(f"sqlite:{self.db}", [
            Meter("dlms-1", "dlms", f"gprs:imei={DLMS_IMEI}", metadata={
                "dlms_server_system_title": TITLE.hex(),
                "dlms_ek": EXAMPLE_EK.hex(),
                "dlms_ak": EXAMPLE_AK.hex(),
            }),
            Meter("iec-1", "iec62056-21", f"gprs:serial={IEC_SERIAL}", serial=IEC_SERIAL),
        ])
        gprs_port = free_port()
        config = write_config(
            self.workdir,
            f"sqlite:{self.db}",
            push_port=0,
            period=1.0,
            extra=(
                f"[gprs]\nlisten = tcp:{gprs_port}:interface=127.0.0.1\n"
                "unknown = quarantine\nidle_timeout = 300\n"
                f"[control]\nsocket = {self.socket}\n"
            ),
        )
        daemon = Daemon(config, self.workdir)
        daemon.start()
        self.addCleanup(daemon.kill)

        async def answering() -> bool:
            code, _, _ = await self.fep("--config", str(config), "sessions")
            return code == 0

        await wait_for(answering, 60, "the daemon's control socket", every=0.5)

        modems = []
        for spec in (
            ModemSpec(DLMS_IMEI, registration="ascii", meter="dlms", system_title=TITLE),
            ModemSpec("356938035640001", serial=IEC_SERIAL, registration="none",
                      meter="iec62056-21", iec_address="42"),
            ModemSpec(STRANGER_IMEI, registration="binary", meter="dlms",
                      garbage=b"AT+CIPSTART\r\nCONNECT\r\n"),
        ):
            modem = SimulatedGprsModem(
                reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", gprs_port), spec
            )
            await modem.connect()
            modem.start(every=0.3, count=5)
            modems.append(modem)
        self.addCleanup(lambda: [m.close() for m in modems])

        async def listed() -> bool:
            code, out, _ = await self.fep("--config", str(config), "sessions",
                                          "--format", "json")
            self.sessions = [json.loads(line) for line in out.splitlines()]
            # Three sessions, each modem identified (a session lists before that).
            identified = {s["modem"] for s in self.sessions} == {
                f"imei={DLMS_IMEI}", f"serial={IEC_SERIAL}", f"imei={STRANGER_IMEI}"}
            return code == 0 and len(self.sessions) == 3 and identified

        await wait_for(listed, 30, "three sessions listed by fep sessions")
        by_modem = {s["modem"]: s for s in self.sessions}
        self.assertEqual(by_modem[f"imei={DLMS_IMEI}"]["meters"], ["dlms-1"])
        self.assertEqual(by_modem[f"serial={IEC_SERIAL}"]["meters"], ["iec-1"])
        self.assertEqual(by_modem[f"imei={STRANGER_IMEI}"]["state"], "quarantined")
        self.assertEqual(by_modem[f"imei={STRANGER_IMEI}"]["garbage"], 22)
        for s in self.sessions:
            self.assertTrue(s["peer"].startswith("127.0.0.1:"))
            self.assertGreater(s["bytes_in"], 0)
            self.assertEqual(s["listener"], f"tcp:{gprs_port}")

        # This node is the home of both modems' routes (their jobs run here, not on
        # another node sharing the store).
        homes = {(f"gprs:imei={DLMS_IMEI}", "test"), (f"gprs:serial={IEC_SERIAL}", "test")}

        async def at_home() -> bool:
            return set(self.rows("SELECT resource, node FROM session_homes")) == homes

        await wait_for(at_home, 10, "this node kept as the modems' home", every=0.2)

        # The daemon reads both known meters over their modems' sessions (its collection
        # engine's default task on a 1 s period) while they push: the pull answers come
        # back as bytes out and in.
        async def pulled_and_pushed() -> bool:
            code, out, _ = await self.fep("--config", str(config), "sessions",
                                          "--format", "json")
            rows = {s["modem"]: s for s in map(json.loads, out.splitlines())}
            known = [rows.get(f"imei={DLMS_IMEI}"), rows.get(f"serial={IEC_SERIAL}")]
            self.last_rows = known
            # Pulls went out on both; the DLMS modem's pushes kept being decoded between and
            # during them. An IEC 62056-21 push cannot be told from a pull's answer (documented
            # in docs/channels/gprs.md): one that meets a pull is stored by the job, so only
            # its first push is sure to count as a push frame.
            dlms, iec = known
            return (code == 0 and all(r and r["bytes_out"] > 0 for r in known)
                    and dlms is not None and dlms["frames"] >= 2
                    and iec is not None and iec["frames"] >= 1)

        try:
            await wait_for(pulled_and_pushed, 60, "pulls over the pushed sessions", every=0.5)
        except AssertionError:
            raise AssertionError(f"sessions: {self.last_rows}") from None

        code, table, _ = await self.fep("--config", str(config), "sessions")
        self.assertEqual(code, 0)
        header = table.splitlines()[0].split()
        self.assertEqual(header[:4], ["id", "modem", "meters", "state"])
        self.assertIn(f"imei={DLMS_IMEI}", table)
        self.assertIn("quarantined", table)

        # A pull that went out may still be under way (a loaded machine): wait for both
        # reads to be done before stopping, rather than stopping in the middle of one.
        read_both = {("dlms-1", f"gprs:imei={DLMS_IMEI}"), ("iec-1", f"gprs:serial={IEC_SERIAL}")}

        def read_over_now() -> set[tuple[str, str]]:
            return set(self.rows(
                "SELECT DISTINCT meter, route FROM jobs WHERE status = 'done' AND records > 0"))

        async def read_both_done() -> bool:
            return read_over_now() >= read_both

        await wait_for(read_both_done, 60, "a read of each meter over its modem's session",
                       every=0.5)
        self.assertEqual(await daemon.interrupt(), 0)
        found = {m for (m,) in self.rows("SELECT DISTINCT meter FROM readings")}
        self.assertEqual(found, {"dlms-1", "iec-1"})
        self.assertEqual(read_over_now(), read_both)

    async def test_fep_sessions_without_a_daemon_says_so(self) -> None:
        code, _, err = await self.fep("sessions", "--socket", str(self.socket))
        self.assertNotEqual(code, 0)
        self.assertIn("cannot reach the daemon's control socket", err)


class WakeUpDaemonTests(unittest.TestCase):
    """The daemon's collection engine wakes a GPRS meter whose modem is not connected: a
    wake-up text through its SMS channel (the GSM modem emulator on a socat pty), and once
    the modem dialled in, the job runs over its session."""

    timeout = 120

    async def test_a_job_for_a_sleeping_modem_sends_a_wake_up_text_then_reads(self) -> None:
        from fep.sim.gsm_modem import GsmModemEmulator, GsmNetwork, serve_pty
        from tests.channels.test_serialport import socat_pty_pair

        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        db = workdir / "fep.sqlite"
        number = "+491709998877"
        await harness.add_meters(f"sqlite:{db}", [
            Meter("dlms-1", "dlms", f"gprs:imei={DLMS_IMEI}", metadata={
                "dlms_server_system_title": TITLE.hex(), "dlms_ek": EXAMPLE_EK.hex(),
                "dlms_ak": EXAMPLE_AK.hex(), "sms_number": number})])

        a, b = await socat_pty_pair(self)
        network = GsmNetwork(reactor)
        gsm = GsmModemEmulator("+491700000001", capacity=10)
        network.attach(gsm)
        serial = serve_pty(reactor, a, gsm)
        self.addCleanup(serial.loseConnection)
        gprs_port = free_port()
        modem = SimulatedGprsModem(
            reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", gprs_port),
            ModemSpec(DLMS_IMEI, registration="ascii", meter="dlms", system_title=TITLE))
        self.addCleanup(modem.close)
        texts: list[str] = []

        def woken(message: object) -> None:
            # The meter's modem dials in when the wake-up text reaches it.
            texts.append(message.text)  # type: ignore[attr-defined]
            modem.connect()

        network.route(number, woken)
        config = write_config(
            workdir, f"sqlite:{db}", push_port=0, period=3600.0,
            extra=(f"[gprs]\nlisten = tcp:{gprs_port}:interface=127.0.0.1\n"
                   f"[sms]\nport = serial:{b}:115200:8N1\nwakeup_text = CALL HOME\n"
                   "[control]\nenabled = no\n"))
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)

        rows = partial(harness.sqlite_rows, db)

        async def read() -> bool:
            return bool(rows("SELECT 1 FROM jobs WHERE meter = 'dlms-1' AND status = 'done' "
                             "AND records > 0"))

        await wait_for(read, 90, "the default task's job over the woken modem", every=0.5)
        self.assertEqual(texts, ["CALL HOME"])
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])
        self.assertTrue(rows("SELECT 1 FROM readings WHERE meter = 'dlms-1'"))
