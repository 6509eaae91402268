"""Acceptance (issue 17, DL/T 645 active reporting): a simulated DTU with two DL/T 645 meters
on its RS-485 port dials in to the running daemon's GPRS listener and registers (its IMEI);
one meter opens its cover and reports its status word by itself. The daemon reads the status
word (04001501), reads the cover-open record the bit names (03300D01), stores the events,
raises an alarm and only then resets the reported bit (04001503): stored once even when the
report comes twice (and again after the reset), the status word cleared, and junk frames
(bad checksum, an unknown address, a master's frame, an undecodable status word) counted and
logged with the meter and the DTU while the session stays up and takes the next report."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial import unittest

from fep.model import Meter
from fep.protocols.dlt645.frames import Frame
from fep.protocols.dlt645.services import encode_di, read_data
from fep.sim.dlt645 import Dlt645DtuFactory, make_meters
from tests.daemon.harness import Daemon, add_meters, free_port, sqlite_rows, wait_for, write_config
from tests.operator.helpers import OPERATOR_TOKEN, http, write_tokens

IMEI = "356938035640645"
ROUTE = f"gprs:imei={IMEI}"
COVER = 0x03300D00
TERMINAL_COVER = 0x03300E00


class DtuReportTests(unittest.TestCase):
    timeout = 180

    async def test_report_stored_once_acknowledged_reset_alarm_and_junk(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        db = workdir / "fep.sqlite"

        def rows(sql: str) -> list[tuple[object, ...]]:
            return sqlite_rows(db, sql)

        first, second = make_meters(2, "000000000101")
        await add_meters(f"sqlite:{db}", [
            Meter("m1", "dlt645", ROUTE, address=first.address),
            Meter("m2", "dlt645", ROUTE, address=second.address,
                  metadata={"dlt645_password": "02123456"}),
        ])
        write_tokens(workdir / "tokens")
        http_port, gprs_port = free_port(), free_port()
        config = write_config(
            workdir, f"sqlite:{db}", push_port=0, period=3600, default_task=False,
            extra=(f"[http]\nport = {http_port}\ntokens_file = {workdir / 'tokens'}\n"
                   f"[gprs]\nlisten = tcp:{gprs_port}:interface=127.0.0.1\n"
                   "unknown = reject\nidle_timeout = 300\n[control]\nenabled = no\n"))
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        await daemon.ready(timeout=120)

        dtu = Dlt645DtuFactory(IMEI, [first, second], reactor, answer_delay=0.02)
        await TCP4ClientEndpoint(reactor, "127.0.0.1", gprs_port).connect(dtu)
        self.addCleanup(lambda: [p.transport.loseConnection() for p in dtu.protocols
                                 if p.transport is not None])
        await daemon.logged(f"imei={IMEI}", 30)
        await daemon.logged("attached to", 30)

        # The second meter's cover is opened: it reports its status word by itself.
        opened = second.now().replace(microsecond=0) - timedelta(minutes=1)
        second.raise_event(COVER, opened, opened + timedelta(seconds=30))
        report = dtu.report(second.address)
        dtu.send(report)  # sent twice (as if the DTU repeated it)

        async def alarm_raised() -> bool:
            return bool(rows("SELECT 1 FROM alarms WHERE meter = 'm2' AND code = '03300D00'"))

        await wait_for(alarm_raised, 30, "the reported event's alarm", every=0.1)

        async def reset() -> bool:
            return second.report_resets >= 1

        await wait_for(reset, 30, "the status word reset (04001503)", every=0.05)
        self.assertEqual(second.report_counts, {})
        # In order: status word read, the record its bit names read, then (stored) the reset.
        exchange = [e for e in second.log if "04001501" in e or "03300D" in e or "04001503" in e]
        self.assertEqual(exchange[:3], ["read 04001501", "read 03300D01", "write 04001503"])
        self.assertEqual(rows("SELECT kind, severity FROM alarms WHERE meter = 'm2'"),
                         [("cover-open", "critical")])
        await daemon.logged("status bits 10 reset (04001503)", 30)

        # The old report once more after the reset: the status word is clear, nothing new.
        dtu.send(report)
        await daemon.logged("status word read: nothing to report", 30)
        self.assertEqual(rows("SELECT count(*) FROM events WHERE meter = 'm2' AND code = "
                              "'03300D00'"), [(1,)])
        self.assertEqual(first.report_resets, 0)

        # Read now through the API over the DTU's session; the second meter's report sent in
        # the middle of it is not lost: handed over by the read (or taken by the handler if it
        # came before or after), its event stored and its bit reset.
        second.raise_event(COVER, opened + timedelta(seconds=40))
        reactor.callLater(0.05, dtu.report, second.address)
        r = await http(f"http://127.0.0.1:{http_port}/api/v1/meters/m1/read", method=b"POST",
                       token=OPERATOR_TOKEN)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual({x["meter"] for x in r.json()["readings"]}, {"m1"})

        async def mid_read_reset() -> bool:
            return second.report_resets >= 2

        await wait_for(mid_read_reset, 30, "the mid-read report's reset", every=0.05)
        self.assertEqual(rows("SELECT count(*) FROM events WHERE meter = 'm2' AND code = "
                              "'03300D00'"), [(2,)])

        # Junk on the session: each counted and logged with the meter and the DTU.
        good = second.report().encode()
        damaged = good[:-2] + bytes([good[-2] ^ 0x01]) + good[-1:]
        stranger = Frame("000000009999", 0x91, encode_di(0x04001501) + bytes(12)).encode()
        master = read_data(first.address, 0x00010000).encode()
        garbled = Frame(first.address, 0x91, encode_di(0x04001501) + b"\x01\x02").encode()
        for frame in (damaged, stranger, master, garbled):
            dtu.send(frame)
        for kind in ("checksum", "address", "unexpected", "report"):
            await daemon.logged(f"bad input dropped ({kind})", 30)
        log = daemon.log_text()
        bad = [line for line in log.splitlines() if "bad input dropped" in line]
        self.assertTrue(all(f"behind gprs:imei={IMEI}" in line for line in bad), bad)
        self.assertTrue(any("meter m1 (000000000101)" in line for line in bad), bad)
        self.assertIn("4 bad frames on this session", bad[-1])

        # The session is still up: the first meter's terminal cover report is taken.
        first.raise_event(TERMINAL_COVER, opened, opened + timedelta(seconds=5))
        dtu.report(first.address)

        async def second_alarm() -> bool:
            return bool(rows("SELECT 1 FROM alarms WHERE meter = 'm1' AND code = '03300E00'"))

        await wait_for(second_alarm, 30, "the first meter's alarm", every=0.1)
        await wait_for(lambda: _true(first.report_resets == 1), 30, "m1's reset", every=0.05)
        self.assertEqual(dtu.connections, 1)
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])

        async def dtu_gone() -> bool:
            return all(p.transport is None or not p.transport.connected for p in dtu.protocols)

        await wait_for(dtu_gone, 30, "the DTU's connection closed by the daemon", every=0.05)


async def _true(value: bool) -> bool:
    return value
