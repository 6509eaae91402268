"""`fep keys` and `fep meters add` on a SQLite store: secrets moved out of the meter list
(also ones already there in clear), the master key rotated, configuration secrets by name,
API token lines; no value ever printed or left in the file."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import attrs
from twisted.trial import unittest

from fep.config import load_config
from fep.config_secrets import resolve_config_secrets
from fep.errors import ConfigError
from fep.operator.tokens import TokenFile
from fep.store.secrets import read_sync
from fep.vault import SecretError, load_master_key, open_sealed
from tests.inprocess import fep_main as run_fep
from tests.store.test_secrets import key_forms

EK = os.urandom(16).hex()
KEK = os.urandom(16).hex()


PIN = "90817263"


class KeysCliTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir()
        self.db = self.dir / "fep.sqlite"
        self.config = self.dir / "fep.ini"
        self.config.write_text(f"[fep]\ndata_dir = {self.dir}\n[store]\nurl = sqlite:{self.db}\n"
                               "[sms]\npin = secret:sms_pin\n")

    def fep(self, *args: str, ok: bool = True, stdin: str | None = None) -> str:
        done = run_fep("--config", str(self.config), *args)
        if ok:
            self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout + done.stderr

    def file_bytes(self) -> bytes:
        return b"".join(Path(f"{self.db}{s}").read_bytes() for s in ("", "-wal", "-shm")
                        if os.path.exists(f"{self.db}{s}"))

    def metadata(self, meter: str) -> dict[str, str]:
        conn = sqlite3.connect(self.db)
        try:
            (text,) = conn.execute("SELECT metadata FROM meters WHERE id = ?", (meter,)).fetchone()
        finally:
            conn.close()
        loaded: dict[str, str] = json.loads(text)
        return loaded

    def test_meters_add_keeps_keys_out_of_the_meter_list(self) -> None:
        out = self.fep("meters", "add", "m1", "--protocol", "dlms", "--route", "tcp:h:1",
                       "-o", f"dlms_ek={EK}", "-o", "dlms_link=hdlc")
        self.assertIn("1 secrets in the secret store", out)
        self.assertEqual(self.metadata("m1"), {"dlms_link": "hdlc"})
        self.assertEqual((self.dir / "master.key").stat().st_mode & 0o777, 0o600)
        bad = run_fep("--config", str(self.config), "meters", "add", "m2", "--protocol", "dlms",
                      "--route", "tcp:h:1", "-o", "dlms_ak=not-a-key-xyz")
        self.assertEqual(bad.returncode, 2)
        self.assertIn("dlms_ak must be 16 bytes in hex", bad.stderr)
        self.assertNotIn("not-a-key-xyz", bad.stderr)
        for form in key_forms(EK):
            self.assertNotIn(form, self.file_bytes() + out.encode())

    def test_clear_secrets_already_in_the_meter_list_are_moved(self) -> None:
        self.fep("meters", "add", "m1", "--protocol", "dlms", "--route", "tcp:h:1")
        conn = sqlite3.connect(self.db)  # as a meter list from before secrets at rest
        conn.execute("UPDATE meters SET metadata = ? WHERE id = 'm1'",
                     (json.dumps({"dlms_ek": EK, "dlms_link": "hdlc"}),))
        conn.commit()
        conn.close()
        out = self.fep("keys", "import", "--from-metadata")
        self.assertIn("1 secrets of 1 meters moved", out)
        self.assertEqual(self.metadata("m1"), {"dlms_link": "hdlc"})
        listed = self.fep("keys", "list")
        self.assertIn("dlms_ek", listed)
        for form in key_forms(EK):
            self.assertNotIn(form, self.file_bytes() + out.encode() + listed.encode())

    def test_master_key_rotation(self) -> None:
        self.fep("meters", "add", "m1", "--protocol", "dlms", "--route", "tcp:h:1",
                 "-o", f"dlms_kek={KEK}")
        old_id = json.loads(self.fep("keys", "list", "--format", "json").splitlines()[0])[
            "key_id"]
        new_key = self.dir / "master-2.key"
        out = self.fep("keys", "rotate", "--master-key", f"file:{new_key}")
        self.assertIn("1 secrets re-wrapped", out)
        self.assertEqual(new_key.stat().st_mode & 0o777, 0o600)
        # The old key no longer opens the meter's secret; the new one does.
        (row_m1,) = read_sync(f"sqlite:{self.db}", "m1", ["dlms_kek"])
        old = load_master_key(f"file:{self.dir / 'master.key'}")
        self.assertRaises(SecretError, open_sealed, old, "m1", "dlms_kek", row_m1.sealed)
        new = load_master_key(f"file:{new_key}")
        self.assertEqual(open_sealed(new, "m1", "dlms_kek", row_m1.sealed).decode(), KEK)
        self.config.write_text(self.config.read_text() +
                               f"[secrets]\nmaster_key = file:{new_key}\n")
        row = json.loads(self.fep("keys", "list", "--format", "json").splitlines()[0])
        self.assertNotEqual(row["key_id"], old_id)
        self.assertEqual(len(row["fingerprint"]), 16)

    def test_configuration_secrets_by_name(self) -> None:
        # Eight digits: a four-digit PIN turns up by chance in the store's own bytes (a time
        # with microseconds such as 12:00:00.347112 holds "4711"), which made this flaky.
        config = load_config(self.config)
        self.fep("keys", "init")
        self.fep("db", "upgrade")
        with self.assertRaises(ConfigError) as caught:
            resolve_config_secrets(config)
        self.assertIn("[sms] pin", str(caught.exception))
        self.assertIn("sms_pin", str(caught.exception))
        out = self.fep("keys", "import", "-", "sms_pin", PIN)
        self.assertNotIn(PIN, out)
        resolved = resolve_config_secrets(load_config(self.config))
        self.assertEqual(resolved.sms.pin, PIN)
        self.assertEqual(attrs.evolve(resolved, sms=config.sms).sms.pin, "secret:sms_pin")
        self.assertNotIn(PIN.encode(), self.file_bytes())

    def test_token_lines_hold_only_a_hash(self) -> None:
        out = self.fep("keys", "token", "ops", "operator")
        token = out.split("(give it to them; it is not kept): ")[1].split()[0]
        line = out.split("token file line: ")[1].strip()
        self.assertNotIn(token, line)
        user = TokenFile.parse(line).user(token.encode())
        assert user is not None
        self.assertEqual((user.name, user.role), ("ops", "operator"))
