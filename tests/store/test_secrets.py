"""Secrets at rest: the AES-GCM envelope (fep.vault) and the secret store's rows in SQLite
and PostgreSQL (fep.store.secrets): values come back only in memory, never in a row, and a
master key rotation re-wraps every data key."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import psycopg2
from twisted.internet import reactor
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from fep.errors import ConfigError
from fep.interfaces import ISecretStore
from fep.store.postgres import PostgresStore
from fep.store.secrets import SecretStore
from fep.store.sqlite import SqliteStore
from fep.vault import (
    MasterKey,
    SecretError,
    create_master_key,
    load_master_key,
    open_sealed,
    seal,
)
from tests.postgres import fresh_database

EK = "000102030405060708090A0B0C0D0E0F"
AK = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"


def key_forms(hex_text: str) -> list[bytes]:
    """Every form in which a key could leak into a file: hex in both cases, raw bytes."""
    return [hex_text.upper().encode(), hex_text.lower().encode(), bytes.fromhex(hex_text)]


class EnvelopeTests(unittest.TestCase):
    def test_a_sealed_value_opens_only_for_its_meter_and_name(self) -> None:
        master = MasterKey.generate()
        sealed = seal(master, "m1", "dlms_ek", EK.encode())
        self.assertEqual(open_sealed(master, "m1", "dlms_ek", sealed), EK.encode())
        self.assertRaises(SecretError, open_sealed, master, "m2", "dlms_ek", sealed)
        self.assertRaises(SecretError, open_sealed, master, "m1", "dlms_ak", sealed)
        self.assertRaises(SecretError, open_sealed, MasterKey.generate(), "m1", "dlms_ek",
                          sealed)
        self.assertNotIn(EK.encode(), repr(sealed).encode() + sealed.ciphertext)

    def test_fingerprints_name_values_without_revealing_them(self) -> None:
        master = MasterKey.generate()
        a = seal(master, "m1", "dlms_ek", b"123456")
        b = seal(master, "m2", "dlms_ek", b"123456")
        self.assertEqual(a.fingerprint, b.fingerprint)  # the same value under one master key
        self.assertNotEqual(a.nonce, b.nonce)
        # Keyed: a short password cannot be found by hashing guesses.
        self.assertNotEqual(a.fingerprint, seal(MasterKey.generate(), "m1", "dlms_ek",
                                                b"123456").fingerprint)

    def test_master_key_file_is_made_0600_and_read_back(self) -> None:
        path = Path(self.mktemp()) / "master.key"
        made = create_master_key(f"file:{path}")
        self.assertEqual(path.stat().st_mode & 0o777, 0o600)
        self.assertEqual(load_master_key(f"file:{path}").key_id, made.key_id)
        self.assertRaises(ConfigError, create_master_key, f"file:{path}")  # never overwritten

    def test_a_world_readable_master_key_file_is_refused(self) -> None:
        path = Path(self.mktemp()) / "master.key"
        create_master_key(f"file:{path}")
        path.chmod(0o644)
        with self.assertRaises(ConfigError) as caught:
            load_master_key(f"file:{path}")
        self.assertIn(str(path), str(caught.exception))
        self.assertIn("readable by others", str(caught.exception))

    def test_master_key_from_environment_and_systemd_credential(self) -> None:
        key = MasterKey.generate()
        self.assertEqual(load_master_key("env:FEP_KEY", {"FEP_KEY": key.text()}).key_id,
                         key.key_id)
        self.assertRaises(ConfigError, load_master_key, "env:FEP_KEY", {})
        creds = Path(self.mktemp())
        creds.mkdir()
        (creds / "fep-master").write_text(key.text())
        (creds / "fep-master").chmod(0o400)
        loaded = load_master_key("credential:fep-master", {"CREDENTIALS_DIRECTORY": str(creds)})
        self.assertEqual(loaded.key_id, key.key_id)

    def test_a_malformed_master_key_is_refused(self) -> None:
        self.assertRaises(ConfigError, load_master_key, "env:K", {"K": "too short"})


class SecretStoreBehaviours:
    """The same behaviours on SQLite and PostgreSQL."""

    store: Any

    def make_store(self) -> Any:
        raise NotImplementedError

    def dump(self) -> bytes:
        """Every byte of the database the way an attacker with a copy would see it."""
        raise NotImplementedError

    async def opened(self) -> Any:
        self.store = self.make_store()
        await self.store.open()
        self.addCleanup(self.store.close)  # type: ignore[attr-defined]
        return self.store

    async def test_values_come_back_and_never_sit_in_the_database(self) -> None:
        store = await self.opened()
        secrets = SecretStore(store, MasterKey.generate())
        verifyObject(ISecretStore, secrets)
        info = await secrets.put("m1", "dlms_ek", EK)
        await secrets.put("m1", "dlms_ak", AK)
        await secrets.put("", "sms_pin", "4711")
        self.assertEqual(info.meter, "m1")
        self.assertEqual(info.key_id, secrets.master_key_id)
        values = await secrets.values()
        self.assertEqual(values, {"m1": {"dlms_ak": AK, "dlms_ek": EK}, "": {"sms_pin": "4711"}})
        self.assertEqual(await secrets.values("m1"), {"m1": {"dlms_ak": AK, "dlms_ek": EK}})
        listed = await secrets.infos()
        self.assertEqual([(i.meter, i.name) for i in listed],
                         [("", "sms_pin"), ("m1", "dlms_ak"), ("m1", "dlms_ek")])
        dump = self.dump()
        for form in key_forms(EK) + key_forms(AK):
            self.assertNotIn(form, dump)

    async def test_a_new_value_replaces_the_old(self) -> None:
        store = await self.opened()
        secrets = SecretStore(store, MasterKey.generate())
        first = await secrets.put("m1", "dlms_ek", EK)
        second = await secrets.put("m1", "dlms_ek", AK)
        self.assertNotEqual(first.fingerprint, second.fingerprint)
        self.assertEqual(await secrets.values("m1"), {"m1": {"dlms_ek": AK}})
        self.assertTrue(await secrets.delete("m1", "dlms_ek"))
        self.assertFalse(await secrets.delete("m1", "dlms_ek"))
        self.assertEqual(await secrets.values(), {})

    async def test_master_key_rotation_rewraps_every_secret(self) -> None:
        store = await self.opened()
        old = MasterKey.generate()
        secrets = SecretStore(store, old)
        await secrets.put("m1", "dlms_ek", EK)
        await secrets.put("m2", "c12_password", "hex:0102")
        new = MasterKey.generate()
        self.assertEqual(await secrets.rotate_master(new), 2)
        self.assertEqual({i.key_id for i in await secrets.infos()}, {new.key_id})
        again = SecretStore(store, new)
        self.assertEqual(await again.values(), {"m1": {"dlms_ek": EK},
                                                "m2": {"c12_password": "hex:0102"}})
        stale = SecretStore(store, old)
        with self.assertRaises(SecretError) as caught:  # type: ignore[attr-defined]
            await stale.values()
        self.assertIn(new.key_id, str(caught.exception))


class SqliteSecretStoreTests(SecretStoreBehaviours, unittest.TestCase):
    def setUp(self) -> None:
        self.path = os.path.join(self.mktemp(), "fep.sqlite")

    def make_store(self) -> Any:
        return SqliteStore(self.path, reactor)

    def dump(self) -> bytes:
        data = b""
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                data += Path(self.path + suffix).read_bytes()
        # The SQL text dump too (what `sqlite3 .dump` shows).
        out = subprocess.run(["python3", "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]);"
                              "print('\\n'.join(c.iterdump()))", self.path],
                             capture_output=True, check=True)
        return data + out.stdout


class PostgresSecretStoreTests(SecretStoreBehaviours, unittest.TestCase):
    def setUp(self) -> None:
        self.url = fresh_database(self)

    def make_store(self) -> Any:
        return PostgresStore(self.url, reactor)

    def dump(self) -> bytes:
        return postgres_dump(self.url)


def postgres_dump(url: str) -> bytes:
    """Every row of every table, as text and as raw bytes."""
    conn = psycopg2.connect(url)
    try:
        cur = conn.cursor()
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        out = bytearray()
        for (table,) in cur.fetchall():
            cur.execute(f"SELECT * FROM {table}")
            for row in cur.fetchall():
                for value in row:
                    if isinstance(value, memoryview | bytes):
                        out += bytes(value)
                    else:
                        out += str(value).encode()
                    out += b"\x00"
        return bytes(out)
    finally:
        conn.close()
