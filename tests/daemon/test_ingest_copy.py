"""The daemon on PostgreSQL killed (SIGKILL) while a COPY transaction of a record batch is
under way, then restarted: every reading the spool had accepted is stored exactly once."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import psycopg2
from twisted.internet import reactor
from twisted.trial import unittest

from fep.model import Meter, Reading
from fep.store.spool import Spool
from tests.daemon.harness import Daemon, add_meters, wait_for, write_config
from tests.daemon.test_daemon import pushing_meter, start_pushers
from tests.postgres import fresh_database

# Each row stored in reading_rows (the rows behind the readings view) costs the server this
# much longer (a trigger the test adds), so a batch's COPY transaction lasts long enough to be
# caught under way and killed.
ROW_DELAY = 0.003

ACTIVE_COPY_TRANSACTION = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND state = 'active' AND application_name = 'fep'"
    " AND (query LIKE 'COPY reading_rows %' OR query LIKE 'INSERT INTO reading_rows %')"
)


class DaemonKilledDuringCopyTests(unittest.TestCase):
    timeout = 180

    async def test_sigkill_during_a_copy_then_restart_stores_every_accepted_reading_once(
        self,
    ) -> None:
        url = fresh_database(self)
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        meters = [pushing_meter(n) for n in range(1, 21)]
        await add_meters(url, [Meter(f"p{n}", "iec62056-21", "tcp:host=127.0.0.1:port=1",
                                     serial=m.address) for n, m in enumerate(meters, 1)])
        conn = psycopg2.connect(url)
        self.addCleanup(conn.close)
        conn.autocommit = True
        cursor = conn.cursor()
        cursor.execute(
            "CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN PERFORM pg_sleep({ROW_DELAY}); RETURN NEW; END $$;"
            " CREATE TRIGGER slow_row BEFORE INSERT ON reading_rows"
            " FOR EACH ROW EXECUTE FUNCTION slow_row()"
        )

        def keys() -> list[tuple[str, str, datetime]]:
            cursor.execute("SELECT meter, obis, read_at FROM readings")
            return [(m, o, t) for m, o, t in cursor.fetchall()]

        config = write_config(workdir, url, push_port=0, collect=False)
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        push_port = await daemon.bound_port("PushedReadoutFactory")
        await daemon.ready()
        pushers = await start_pushers(push_port, len(meters), 0.02)

        async def copying() -> bool:  # some batches committed, one in its transaction now
            if sum(p.pushes for p in pushers) < 100 or not keys():
                return False
            cursor.execute(ACTIVE_COPY_TRANSACTION)
            return int(cursor.fetchone()[0]) > 0

        await wait_for(copying, 60, "a COPY transaction under way", every=0.01)
        daemon.kill()  # SIGKILL inside the batch's transaction; pushes still arriving
        for p in pushers:
            p.stop()

        # What had been accepted: committed rows plus what the spool holds on disk. The
        # killed transaction cannot commit (its COMMIT was never sent).
        committed = keys()
        spool = Spool(workdir / "spool", reactor)
        spooled = [(r.meter, str(r.obis), r.time)
                   for _, records in await spool.open() for r in records
                   if isinstance(r, Reading)]
        await spool.close()
        accepted = set(committed) | set(spooled)
        self.assertGreater(len(set(spooled) - set(committed)), 0,
                           "the batch being copied was not in the spool")
        self.assertEqual(len(committed), len(set(committed)))

        cursor.execute("DROP TRIGGER slow_row ON reading_rows")
        restarted = Daemon(config, workdir)
        restarted.start()
        self.addCleanup(restarted.kill)

        async def replayed() -> bool:
            return len(keys()) >= len(accepted)

        await wait_for(replayed, 60, f"{len(accepted)} readings after the restart")
        self.assertEqual(await restarted.interrupt(), 0)
        final = keys()
        self.assertEqual(len(final), len(accepted))
        self.assertEqual(set(final), accepted)
