"""Secrets at rest, end to end: meters imported with keys and passwords by `fep meters
import` and `fep keys import`, read by the real daemon with the keys from the secret store,
the meter's keys rotated on the meter (`fep keys rotate --meter`, approved) and read again;
afterwards neither the store (the SQLite file with its WAL, or every row of PostgreSQL), nor
the daemon's logs, nor the command line's output hold any key in hex (either case) or raw.
A master key file others may read stops the daemon."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import psycopg2
from twisted.internet import reactor
from twisted.trial import unittest

from fep.config import load_config
from fep.errors import ConfigError
from fep.protocols.dlms.security import SecurityKeys
from fep.protocols.dlms.server import ServerSettings
from fep.service import FepService
from fep.sim.dlms import DlmsMeterServerFactory
from fep.sim.dlms_meter import SimulatedDlmsMeter
from fep.store.secrets import read_sync
from fep.vault import load_master_key, open_sealed
from tests.daemon.harness import Daemon, free_port, sqlite_rows, wait_for, write_config
from tests.inprocess import fep_main
from tests.postgres import fresh_database
from tests.store.test_secrets import key_forms, postgres_dump

EK, AK, KEK = os.urandom(16), os.urandom(16), os.urandom(16)
C12_PASSWORD = "c12-" + os.urandom(8).hex()
TITLE = bytes.fromhex("4D4D4D0000BC614E")


def secret_forms() -> list[bytes]:
    forms = [C12_PASSWORD.encode()]
    for key in (EK, AK, KEK):
        forms += key_forms(key.hex())
    return forms


async def approve_as(url: str, command_id: int, who: str) -> None:
    """Approve a command as another operator than its requester (the CLI's user)."""
    from fep.collect import commands
    from fep.collect.engine import resource_policy
    from fep.collect.jobstore import job_store
    from fep.config import default_config
    from fep.store import open_store

    store = open_store(url, reactor)
    await store.open()
    try:
        meter = await store.meter("dlms-1")
        await commands.approve(job_store(store), command_id, who, reactor.seconds(), meter,
                               resource_policy(default_config().collect))
    finally:
        await store.close()


class SecretsScenario:
    workdir: Path

    def serve_meter(self, test: Any) -> int:
        sim = SimulatedDlmsMeter(kek=KEK)
        factory = DlmsMeterServerFactory(sim, ServerSettings(
            system_title=TITLE, keys=SecurityKeys(EK, AK), allow_lowest=False))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        test.addCleanup(port.stopListening)
        return int(port.getHost().port)

    async def fep(self, test: Any, *args: str) -> str:
        # In-process: none of these commands talks to the meter this test's reactor serves.
        done = fep_main("--config", str(self.config), *args)
        test.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout + done.stderr

    async def run_scenario(self, test: Any, url: str, count: Any, dump: Any) -> None:
        self.workdir.mkdir(parents=True)
        port = self.serve_meter(test)
        self.config = write_config(
            self.workdir, url, push_port=0, period=1.0,
            extra=f"[secrets]\nmaster_key = file:{self.workdir}/master.key\n")
        meters = self.workdir / "meters.csv"
        meters.write_text(
            "id,protocol,route,dlms_auth,dlms_client,dlms_objects,dlms_ek,dlms_ak,c12_password\n"
            f"dlms-1,dlms,tcp:host=127.0.0.1:port={port},high-gmac,1,3/1.0.1.8.0.255/2,"
            f"{EK.hex().upper()},{AK.hex()},\n"
            f"c12-1,ansi-c12.18,tcp:host=127.0.0.1:port={free_port()},,,,,,{C12_PASSWORD}\n")
        output = await self.fep(test, "keys", "init")
        test.assertEqual((self.workdir / "master.key").stat().st_mode & 0o777, 0o600)
        output += await self.fep(test, "meters", "import", str(meters))
        test.assertIn("3 secrets in the secret store", output)
        output += await self.fep(test, "keys", "import", "dlms-1", "dlms_kek", KEK.hex())
        listed = await self.fep(test, "keys", "list", "--format", "csv")
        output += listed
        rows = [line.split(",") for line in listed.strip().splitlines()[1:]]
        test.assertEqual(sorted((r[1], r[2]) for r in rows), [
            ("c12-1", "c12_password"), ("dlms-1", "dlms_ak"), ("dlms-1", "dlms_ek"),
            ("dlms-1", "dlms_kek")])
        test.assertTrue(all(len(r[4]) == 16 for r in rows))  # fingerprints, never values
        output += await self.fep(test, "meters", "list")

        daemon = Daemon(self.config, self.workdir)
        daemon.start()
        test.addCleanup(daemon.kill)

        async def read() -> bool:
            try:
                return bool(count("SELECT count(*) FROM readings WHERE meter = 'dlms-1'"))
            except (sqlite3.Error, psycopg2.Error):
                return False

        await wait_for(read, 60, "a reading of the keyed meter")

        # The meter's keys rotated on the meter (approved by someone else), then read again.
        asked = await self.fep(test, "keys", "rotate", "--meter", "dlms-1")
        command = asked.split("command ")[1].split(":")[0]
        output += asked
        await approve_as(url, int(command), "bob")

        async def rotated() -> bool:
            status = count(f"SELECT status FROM commands WHERE id = {int(command)}")
            test.assertNotEqual(status, "failed", daemon.log_text()[-3000:])
            return bool(status == "done")

        await wait_for(rotated, 60, "the key transfer")
        before = count("SELECT count(*) FROM readings WHERE meter = 'dlms-1'")

        async def read_again() -> bool:
            return bool(count("SELECT count(*) FROM readings WHERE meter = 'dlms-1'") > before)

        await wait_for(read_again, 60, "a reading with the rotated keys")
        test.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])
        master = load_master_key(f"file:{self.workdir}/master.key")
        new_keys = {row.info.name: open_sealed(master, "dlms-1", row.info.name, row.sealed)
                    for row in read_sync(url, "dlms-1", ["dlms_ek", "dlms_ak"])}
        test.assertNotIn(EK.hex().encode(), new_keys["dlms_ek"].lower())
        self.rotated = [bytes.fromhex(v.decode()) for v in new_keys.values()]
        metadata = count("SELECT metadata FROM meters WHERE id = 'dlms-1'")
        test.assertIn("dlms_objects", str(metadata))
        test.assertNotIn("dlms_ek", str(metadata))

        places = {
            "store": dump(),
            "JSON log": (self.workdir / "fep.log.json").read_bytes(),
            "daemon log": daemon.log_text().encode(),
            "command line": output.encode(),
        }
        for where, data in places.items():
            for form in secret_forms() + [f for k in self.rotated for f in key_forms(k.hex())]:
                test.assertNotIn(form, data, f"a secret in the {where}")


class SecretsSqliteDaemonTests(SecretsScenario, unittest.TestCase):
    timeout = 180

    async def test_keys_never_in_clear_and_the_keyed_meter_is_read(self) -> None:
        self.workdir = Path(self.mktemp()).resolve()
        db = self.workdir / "fep.sqlite"

        def count(sql: str) -> Any:
            return sqlite_rows(db, sql, strict=True)[0][0]

        def dump() -> bytes:
            return b"".join(Path(f"{db}{s}").read_bytes() for s in ("", "-wal", "-shm")
                            if os.path.exists(f"{db}{s}"))

        await self.run_scenario(self, f"sqlite:{db}", count, dump)
        self.assertEqual(db.stat().st_mode & 0o777, 0o600)


class SecretsPostgresDaemonTests(SecretsScenario, unittest.TestCase):
    timeout = 180

    async def test_keys_never_in_clear_and_the_keyed_meter_is_read(self) -> None:
        self.workdir = Path(self.mktemp()).resolve()
        url = fresh_database(self)

        def count(sql: str) -> Any:
            conn = psycopg2.connect(url)
            try:
                cur = conn.cursor()
                cur.execute(sql)
                return cur.fetchone()[0]
            finally:
                conn.close()

        await self.run_scenario(self, url, count, lambda: postgres_dump(url))


class MasterKeyModeTests(unittest.TestCase):
    def test_a_master_key_file_others_may_read_stops_the_daemon(self) -> None:
        workdir = Path(self.mktemp())
        workdir.mkdir()
        key = workdir / "master.key"
        key.write_text(os.urandom(32).hex())
        key.chmod(0o644)
        config = write_config(workdir, f"sqlite:{workdir}/fep.sqlite", push_port=0,
                              extra=f"[secrets]\nmaster_key = file:{key}\n")
        with self.assertRaises(ConfigError) as caught:
            FepService(load_config(config), reactor)
        self.assertIn(str(key), str(caught.exception))
        self.assertIn("readable by others", str(caught.exception))
