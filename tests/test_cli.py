"""Tests for the `fep` command line: exit codes and messages. Most run in-process through
``fep.cli.main`` (`tests.inprocess.fep_main`); a few run the installed entry point as a
real process (`run_fep`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from twisted.trial import unittest

from tests.inprocess import fep_main

ROOT = Path(__file__).resolve().parent.parent


def run_fep(
    *args: str, cwd: str | None = None, timeout: float = 60, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env_extra or {})}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "fep.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd or str(ROOT), env=env,
    )


class UsageTests(unittest.TestCase):
    def test_no_command_is_a_usage_error(self) -> None:
        result = run_fep()  # the installed entry point: python -m fep.cli
        self.assertEqual(result.returncode, 2)
        self.assertIn("usage: fep", result.stderr)

    def test_unknown_protocol_is_a_usage_error(self) -> None:
        result = fep_main("read", "tcp:host=127.0.0.1:port=1", "--protocol", "smoke-signals")
        self.assertEqual(result.returncode, 2)
        self.assertIn("unknown protocol 'smoke-signals'", result.stderr)

    def test_read_needs_a_route_with_its_protocol_or_a_meter_of_the_list(self) -> None:
        result = fep_main("read")
        self.assertEqual(result.returncode, 2)
        self.assertIn("--meter ID", result.stderr)
        result = fep_main("read", "tcp:host=127.0.0.1:port=1")
        self.assertEqual(result.returncode, 2)
        self.assertIn("--protocol is needed", result.stderr)

    def test_bad_route_is_a_usage_error_naming_the_route(self) -> None:
        result = fep_main("read", "carrier-pigeon", "--protocol", "iec62056-21")
        self.assertEqual(result.returncode, 2)
        self.assertIn("carrier-pigeon", result.stderr)

    def test_table_for_a_protocol_without_tables_is_a_usage_error(self) -> None:
        result = fep_main("read", "tcp:host=127.0.0.1:port=1", "--protocol", "dlt645",
                         "--table", "0")  # fmt: skip
        self.assertEqual(result.returncode, 2)
        self.assertIn("--table is for --protocol ansi-c12, not dlt645", result.stderr)

    def test_bad_config_names_file_section_and_key_with_exit_2(self) -> None:
        config = Path(self.mktemp()).resolve()
        config.write_text("[fep]\n[store]\nurl = sqlite:x.db\n[collect]\nperiod = often\n")
        result = fep_main("--config", str(config), "meters", "list")
        self.assertEqual(result.returncode, 2)
        self.assertIn(f"{config} [collect] period", result.stderr)

    def test_bad_obis_filter_is_a_usage_error(self) -> None:
        result = fep_main("readings", "m1", "--obis", "not-obis")
        self.assertEqual(result.returncode, 2)
        self.assertIn("not an OBIS code", result.stderr)


class StoreCommandTests(unittest.TestCase):
    def setUp(self) -> None:
        self.db = f"sqlite:{Path(self.mktemp()).resolve()}.sqlite"

    def test_db_upgrade_applies_then_reports_up_to_date(self) -> None:
        first = fep_main("--db", self.db, "db", "upgrade")
        from fep.store import migrations

        applied = "".join(f"applied {m.name}\n" for m in migrations.load("sqlite"))
        self.assertTrue(applied.startswith("applied 0001_initial\n"))
        self.assertEqual((first.returncode, first.stdout), (0, applied))
        again = fep_main("--db", self.db, "db", "upgrade")
        self.assertEqual((again.returncode, again.stdout), (0, "schema is up to date\n"))

    def test_meters_import_then_list_as_csv(self) -> None:
        workdir = Path(self.mktemp()).resolve()  # the master key is made in ./var
        workdir.mkdir()
        imported = fep_main("--db", self.db, "meters", "import",
                           str(ROOT / "etc" / "meters.example.csv"), cwd=str(workdir))
        self.assertEqual(imported.returncode, 0, imported.stderr)
        self.assertIn("5 meters imported", imported.stdout)
        self.assertIn("2 secrets in the secret store", imported.stdout)
        self.assertEqual((workdir / "var" / "master.key").stat().st_mode & 0o777, 0o600)
        listed = fep_main("--db", self.db, "meters", "list", "--format", "csv")
        self.assertEqual(listed.stdout.splitlines(), [
            "id,protocol,route,address,serial,credentials",
            "DLMS-0001,dlms,tcp:host=10.20.1.5:port=4059,1,KFM0001234,",
            "DLMS-0002,dlms,serial:/dev/ttyUSB1:9600:8N1,1/17,ISK0005678,",
            "LGZ-0001,iec62056-21,tcp:host=10.20.0.11:port=4059,10000001,10000001,",
            "LGZ-0002,iec62056-21,tcp:host=10.20.0.12:port=4059,10000002,10000002,",
            "LGZ-0003,iec62056-21,serial:/dev/ttyUSB0:baudrate=300,,10000003,",
        ])

    def test_meter_csv_without_route_column_names_the_file_and_exits_2(self) -> None:
        csv_file = Path(self.mktemp()).resolve()
        csv_file.write_text("id,protocol\nm1,iec62056-21\n")
        result = fep_main("--db", self.db, "meters", "import", str(csv_file))
        self.assertEqual(result.returncode, 2)
        self.assertIn(f"{csv_file}: missing column(s) route", result.stderr)

    def test_meter_csv_with_unknown_protocol_names_the_line(self) -> None:
        csv_file = Path(self.mktemp()).resolve()
        csv_file.write_text("id,protocol,route\nm1,morse,tcp:host=h:port=1\n")
        result = fep_main("--db", self.db, "meters", "import", str(csv_file))
        self.assertEqual(result.returncode, 2)
        self.assertIn("line 2", result.stderr)
        self.assertIn("morse", result.stderr)

    async def test_readings_prints_stored_values_with_units(self) -> None:
        from datetime import UTC, datetime
        from decimal import Decimal

        from twisted.internet import reactor

        from fep.model import ObisCode, Reading, Unit
        from fep.store import open_store

        store = open_store(self.db, reactor)
        await store.open()
        t = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
        await store.write([
            Reading("m1", ObisCode.parse("1.8.0"), Decimal("1234.5"), Unit.by_code(30), 3,
                    meter_time=t),
            Reading("m1", ObisCode.parse("32.7.0"), Decimal("230.1"), Unit.by_code(35), 0,
                    meter_time=t),
        ])
        await store.close()
        result = fep_main("--db", self.db, "readings", "m1", "--format", "json")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines(), [
            '{"meter": "m1", "obis": "1-0:1.8.0*255", "value": 1234.5, "unit": "kWh", '
            '"meter_time": "2026-11-23T10:00:00Z"}',
            '{"meter": "m1", "obis": "1-0:32.7.0*255", "value": 230.1, "unit": "V", '
            '"meter_time": "2026-11-23T10:00:00Z"}',
        ])
        only = fep_main("--db", self.db, "readings", "m1", "--obis", "32.7.0", "--format", "csv")
        self.assertEqual(only.stdout.splitlines(), [
            "meter,obis,value,unit,meter_time",
            "m1,1-0:32.7.0*255,230.1,V,2026-11-23T10:00:00Z",
        ])
