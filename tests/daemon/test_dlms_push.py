"""Acceptance (issue 3, end to end): simulated DLMS meters push ciphered Data-Notifications
to the running daemon over TCP; the readings land in SQLite and PostgreSQL with units; a wrong
key, an unknown system title and a replayed invocation counter are refused, counted, logged
with the system title, and store nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.trial import unittest

from fep.model import Meter
from fep.protocols.dlms import wrapper
from fep.protocols.dlms.security import SecurityKeys
from fep.protocols.dlms.server import DlmsServer, ServerSettings
from fep.sim.dlms_meter import SimulatedDlmsMeter
from tests.daemon import harness
from tests.daemon.harness import Daemon, wait_for, write_config
from tests.postgres import fresh_database

EK = bytes(range(16))
AK = bytes(range(0xD0, 0xE0))
GOOD = bytes.fromhex("4D4D4D0000BC614E")
STRANGER = bytes.fromhex("4D4D4D00000000FF")


class PushingMeter:
    """A simulated meter's push side: ciphered Data-Notifications sent on demand, so the
    test controls exactly what the daemon receives (including a replay)."""

    def __init__(self, title: bytes, keys: SecurityKeys, serial: str) -> None:
        self.meter = SimulatedDlmsMeter(serial=serial, system_title=title)
        self.server = DlmsServer(
            self.meter, ServerSettings(system_title=title, keys=keys), invocation_counter=100
        )
        self.protocol: Protocol | None = None
        self.sent: list[bytes] = []

    async def connect(self, port: int) -> None:
        from twisted.internet.protocol import Factory

        self.protocol = await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(Protocol)
        )

    def push(self) -> bytes:
        frame = wrapper.encode_wrapper(
            wrapper.WrapperFrame(1, 1, self.server.push(self.meter.push_body()))
        )
        self.send(frame)
        return frame

    def send(self, frame: bytes) -> None:
        assert self.protocol is not None and self.protocol.transport is not None
        self.protocol.transport.write(frame)
        self.sent.append(frame)

    def close(self) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.loseConnection()


def dlms_meter(meter_id: str, title: bytes) -> Meter:
    return Meter(
        meter_id,
        "dlms",
        "tcp:host=127.0.0.1:port=1",
        metadata={
            "dlms_server_system_title": title.hex(),
            "dlms_ek": EK.hex(),
            "dlms_ak": AK.hex(),
        },
    )


class DlmsPushScenario:
    """The same scenario against either store."""

    workdir: Path

    async def run_scenario(self, test: Any, url: str, count: Any) -> str:
        await harness.add_meters(url, [dlms_meter("dlms-1", GOOD)])
        daemon = Daemon(
            write_config(self.workdir, url, push_port=0, collect=False, dlms_push_port=0),
            self.workdir,
        )
        daemon.start()
        test.addCleanup(daemon.kill)
        port = await daemon.bound_port("DlmsPushFactory")

        good = PushingMeter(GOOD, SecurityKeys(EK, AK), "GOOD0001")
        wrong_key = PushingMeter(GOOD, SecurityKeys(EK, bytes(16)), "GOOD0001")
        stranger = PushingMeter(STRANGER, SecurityKeys(EK, AK), "STRANGER")

        async def connected() -> bool:
            try:
                await good.connect(port)
            except Exception:
                return False
            return True

        await wait_for(connected, 120, "the daemon's DLMS push listener")
        for m in (wrong_key, stranger):
            await m.connect(port)
        test.addCleanup(lambda: [m.close() for m in (good, wrong_key, stranger)])

        def rejected(why: str, title: bytes) -> str:
            return f"DLMS push rejected ({why}) from system title {title.hex()}"

        def stored(n: int) -> Any:
            async def check() -> bool:
                return count("SELECT count(*) FROM readings WHERE meter = 'dlms-1'") >= n
            return check

        first = good.push()
        await wait_for(stored(5), 30, "the first push in the store", every=0.05)
        good.push()
        wrong_key.push()
        stranger.push()
        await wait_for(stored(10), 30, "the pushed readings in the store", every=0.05)
        await daemon.logged(rejected("cipher", GOOD), 30)
        await daemon.logged(rejected("unknown", STRANGER), 30)
        good.send(first)  # a replay: its invocation counter is below the last accepted
        # Each push has been decided (stored or refused): nothing wrongly accepted can land.
        await daemon.logged(rejected("replay", GOOD), 30)
        test.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])
        # Two good pushes of five registers each; nothing from the others or the replay.
        test.assertEqual(count("SELECT count(*) FROM readings"), 10)
        test.assertEqual(count("SELECT count(*) FROM readings WHERE unit_code = 35"), 2)  # V
        log = daemon.log_text()
        for why, title in (("cipher", GOOD), ("unknown", STRANGER), ("replay", GOOD)):
            lines = [
                line
                for line in log.splitlines()
                if f"DLMS push rejected ({why}) from system title {title.hex()}" in line
            ]
            test.assertEqual(len(lines), 1, f"{why}: {log[-3000:]}")
        test.assertNotIn(AK.hex(), log)
        test.assertNotIn(EK.hex(), log)
        return log


class DlmsPushToSqliteTests(DlmsPushScenario, unittest.TestCase):
    timeout = 120

    async def test_pushes_land_with_units_and_bad_ones_are_refused(self) -> None:
        self.workdir = Path(self.mktemp()).resolve()
        self.workdir.mkdir(parents=True)
        db = self.workdir / "fep.sqlite"

        def count(sql: str) -> int:
            rows = harness.sqlite_rows(db, sql)
            return int(rows[0][0]) if rows else 0

        await self.run_scenario(self, f"sqlite:{db}", count)
        ((value, read_at),) = harness.sqlite_rows(
            db, "SELECT value, read_at FROM readings WHERE obis = '1-0:32.7.0*255' "
                "ORDER BY read_at LIMIT 1", strict=True)
        self.assertGreater(float(value), 200.0)  # volts, scaler -1 applied
        when = datetime.fromisoformat(str(read_at).replace("Z", "+00:00"))
        self.assertLess(abs((datetime.now(UTC) - when).total_seconds()), 120)


class DlmsPushToPostgresTests(DlmsPushScenario, unittest.TestCase):
    timeout = 120

    async def test_pushes_land_with_units_and_bad_ones_are_refused(self) -> None:
        self.workdir = Path(self.mktemp()).resolve()
        self.workdir.mkdir(parents=True)
        url = fresh_database(self)
        conn = psycopg2.connect(url)
        conn.autocommit = True
        self.addCleanup(conn.close)

        def count(sql: str) -> int:
            with conn.cursor() as cursor:
                try:
                    cursor.execute(sql)
                except psycopg2.Error:
                    return 0
                return int(cursor.fetchone()[0])

        await self.run_scenario(self, url, count)
