"""Issue 14 end to end, with the real daemon: a keyed meter's unciphered push to the DLMS push
listener is not stored, and its security event is (for the alarm engine); a replayed push is
still refused after the daemon is killed and restarted (the last accepted invocation counter
is in PostgreSQL before the push is taken)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg2
from twisted.internet import reactor
from twisted.trial import unittest

from fep.model import Meter
from fep.protocols.dlms import apdu as A
from fep.protocols.dlms import wrapper
from fep.protocols.dlms.identity import DOWNGRADE_CODE
from fep.protocols.dlms.security import SecurityKeys
from fep.sim.dlms_meter import SimulatedDlmsMeter
from fep.store import open_store
from tests.daemon.harness import Daemon, free_port, wait_for, write_config
from tests.daemon.test_dlms_push import AK, EK, GOOD, PushingMeter
from tests.postgres import fresh_database


def keyed_meter() -> Meter:
    return Meter("dlms-1", "dlms", "tcp:host=127.0.0.1:port=1", serial="GOOD0001", metadata={
        "dlms_server_system_title": GOOD.hex(), "dlms_ek": EK.hex(), "dlms_ak": AK.hex()})


async def add_meter(url: str) -> None:
    store = open_store(url, reactor)
    await store.open()
    await store.add_meters([keyed_meter()])
    await store.close()


async def connected(meter: PushingMeter, port: int) -> None:
    async def up() -> bool:
        try:
            await meter.connect(port)
        except Exception:
            return False
        return True

    await wait_for(up, 120, "the daemon's DLMS push listener")


class UncipheredPushTests(unittest.TestCase):
    timeout = 120

    async def test_a_keyed_meters_unciphered_push_is_refused_and_raised(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        db = workdir / "fep.sqlite"
        url = f"sqlite:{db}"
        await add_meter(url)
        port = free_port()
        daemon = Daemon(write_config(workdir, url, push_port=free_port(), collect=False,
                                     dlms_push_port=port), workdir)
        daemon.start()
        self.addCleanup(daemon.kill)

        def count(sql: str) -> int:
            conn = sqlite3.connect(db)
            try:
                return int(conn.execute(sql).fetchone()[0])
            except sqlite3.OperationalError:
                return 0
            finally:
                conn.close()

        meter = PushingMeter(GOOD, SecurityKeys(EK, AK), "GOOD0001")
        await connected(meter, port)
        self.addCleanup(meter.close)
        # What an attacker (or a meter stripped of its ciphering) sends: the same
        # notification, plain, naming the meter by its logical device name.
        body = SimulatedDlmsMeter(serial="GOOD0001", system_title=GOOD).push_body()
        plain = A.encode_apdu(A.DataNotification(body))
        meter.send(wrapper.encode_wrapper(wrapper.WrapperFrame(1, 1, plain)))
        meter.send(wrapper.encode_wrapper(wrapper.WrapperFrame(1, 1, plain)))

        async def raised() -> bool:
            return count(f"SELECT count(*) FROM events WHERE code = '{DOWNGRADE_CODE}'") >= 1

        await wait_for(raised, 30, "the security event in the store")
        meter.push()  # a good ciphered push still lands

        async def stored() -> bool:
            return count("SELECT count(*) FROM readings") >= 5

        # The stop flushes everything accepted: the count below is final without a wait.
        await wait_for(stored, 30, "the ciphered push's readings")
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])
        self.assertEqual(count("SELECT count(*) FROM readings"), 5)  # the ciphered push only
        conn = sqlite3.connect(db)
        try:
            rows = conn.execute("SELECT meter, kind, severity, text FROM events").fetchall()
        finally:
            conn.close()
        self.assertEqual(len(rows), 1, rows)  # two refused, one event (rate-limited)
        event_meter, kind, severity, text = rows[0]
        self.assertEqual((event_meter, kind, severity), ("dlms-1", "tamper", "major"))
        self.assertIn("unciphered", text)
        log = daemon.log_text()
        self.assertEqual(log.count("DLMS push rejected (plain)"), 2, log[-3000:])
        self.assertIn("DLMS security: unciphered APDU from meter dlms-1 refused", log)


class ReplayAfterRestartTests(unittest.TestCase):
    timeout = 180

    async def test_a_push_replayed_after_a_kill_and_restart_is_refused(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        url = fresh_database(self)
        await add_meter(url)
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

        port = free_port()
        config = write_config(workdir, url, push_port=free_port(), collect=False,
                              dlms_push_port=port)
        meter = PushingMeter(GOOD, SecurityKeys(EK, AK), "GOOD0001")
        first = Daemon(config, workdir)
        first.start()
        self.addCleanup(first.kill)
        await connected(meter, port)
        frame = meter.push()

        async def stored() -> bool:
            return count("SELECT count(*) FROM readings") >= 5

        await wait_for(stored, 30, "the push's readings", every=0.02)
        first.kill()  # no goodbye: nothing is written on the way out
        meter.close()

        second = Daemon(config, workdir)
        second.log = workdir / "twistd-2.log"
        second.start()
        self.addCleanup(second.kill)
        replayer = PushingMeter(GOOD, SecurityKeys(EK, AK), "GOOD0001")
        await connected(replayer, port)
        self.addCleanup(replayer.close)
        replayer.send(frame)  # the same bytes again: same invocation counter

        async def refused() -> bool:
            return "DLMS push rejected (replay)" in second.log_text()

        await wait_for(refused, 30, "the replayed push to be refused")
        self.assertEqual(await second.interrupt(), 0, second.log_text()[-3000:])
        self.assertEqual(count("SELECT count(*) FROM readings"), 5)
        self.assertIn(f"from system title {GOOD.hex()}", second.log_text())



class LostCounterFileTests(unittest.TestCase):
    timeout = 120

    async def test_the_daemon_refuses_to_start_without_its_counter_file(self) -> None:
        from fep.store.counters import FILE_NAME, invocation_counters

        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        url = f"sqlite:{workdir / 'fep.sqlite'}"
        store = open_store(url, reactor)
        await store.open()
        counters = invocation_counters(reactor, store, workdir)
        await counters.open()
        await counters.reserve("4645500000000001:0011223344556677", 10_000)  # a session's
        await counters.close()
        await store.close()
        (workdir / FILE_NAME).unlink()  # the data directory lost, the database kept
        daemon = Daemon(write_config(workdir, url, push_port=free_port(), collect=False),
                        workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        await daemon.wait_exit(60)
        log = daemon.log_text()
        self.assertIn(f"DLMS invocation counter file {workdir / FILE_NAME} is missing", log)
        self.assertNotIn("running", log.split("is missing")[-1])
        self.assertFalse((workdir / FILE_NAME).exists())  # nothing started again at 1


class PushesAfterKeyRotationTests(unittest.TestCase):
    """A meter given new keys counts its pushes from 1 again (the standard): the daemon takes
    them, since the last counter accepted from a meter is kept per system title and key; a
    replay under the new key and a push under the old one are still refused. The title-only
    row an earlier fep left counts for the first key seen, and not for the next."""

    timeout = 180

    async def test_a_meter_counting_again_under_new_keys_is_taken(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        url = fresh_database(self)
        await add_meter(url)
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

        port = free_port()
        config = write_config(workdir, url, push_port=free_port(), collect=False,
                              dlms_push_port=port)
        first = Daemon(config, workdir)
        first.start()
        self.addCleanup(first.kill)
        # The store is migrated once the listener answers; then the row of an earlier fep.
        old = PushingMeter(GOOD, SecurityKeys(EK, AK), "GOOD0001")  # counts from 100
        await connected(old, port)
        self.addCleanup(old.close)
        with conn.cursor() as cursor:
            cursor.execute("INSERT INTO dlms_counters (kind, key, value)"
                           " VALUES ('received', %s, 50)", (GOOD.hex(),))
        old.push()

        async def readings(n: int) -> bool:
            return count("SELECT count(*) FROM readings") >= n

        await wait_for(lambda: readings(5), 30, "the old key's push")
        self.assertEqual(await first.interrupt(), 0, first.log_text()[-3000:])
        old.close()

        # The key transfer: the meter list has the new keys, the meter counts from 1.
        new_ek, new_ak = bytes(range(0x40, 0x50)), bytes(range(0x60, 0x70))
        store = open_store(url, reactor)
        await store.open()
        rotated = keyed_meter()
        await store.add_meters([Meter(rotated.id, rotated.protocol, rotated.route,
                                      serial=rotated.serial, metadata={
            **rotated.metadata, "dlms_ek": new_ek.hex(), "dlms_ak": new_ak.hex()})])
        await store.close()
        second = Daemon(config, workdir)
        second.log = workdir / "twistd-2.log"
        second.start()
        self.addCleanup(second.kill)
        new = PushingMeter(GOOD, SecurityKeys(new_ek, new_ak), "GOOD0001")
        new.server.invocation_counter = 1
        await connected(new, port)
        self.addCleanup(new.close)
        frame = new.push()
        await wait_for(lambda: readings(10), 30, "the new key's first push (counter 1)")
        new.send(frame)  # replayed under the new key
        stale = PushingMeter(GOOD, SecurityKeys(EK, AK), "GOOD0001")
        stale.server.invocation_counter = 5000
        await connected(stale, port)
        self.addCleanup(stale.close)
        stale.push()  # the old key's, above every counter it reached

        async def refused() -> bool:
            log = second.log_text()
            return ("DLMS push rejected (replay)" in log
                    and "DLMS push rejected (cipher)" in log)

        await wait_for(refused, 30, "the replay and the old key's push to be refused")
        self.assertEqual(await second.interrupt(), 0, second.log_text()[-3000:])
        self.assertEqual(count("SELECT count(*) FROM readings"), 10)
        self.assertEqual(count("SELECT count(*) FROM dlms_counters WHERE kind = 'received'"
                               f" AND key LIKE '{GOOD.hex()}:%'"), 2)  # one per key
