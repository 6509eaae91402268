"""``fep read ROUTE --protocol dlt698 --address ADDR [--oad OAD ...] [--frozen OAD --from T
--to T]`` against the simulator process: JSON lines of the attributes asked, and of a
frozen record's rows in a time range; wrong combinations are usage errors (exit 2)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.inprocess import fep_deferred
from tests.processes import tcp_simulator

ADDRESS = "000000123456"


class ReadCommandTests(unittest.TestCase):
    timeout = 60

    @inlineCallbacks
    def test_oads_then_a_frozen_range(self) -> Any:
        route = yield tcp_simulator(self, "dlt698", "--port", "0", "--address", ADDRESS)
        result = yield fep_deferred("read", route, "--protocol", "dlt698", "--address",
                                    ADDRESS, "--oad", "00100200", "--oad", "20000200",
                                    "--meter", "m1")
        self.assertEqual(result.returncode, 0, result.stderr)
        rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        self.assertEqual({r["meter"] for r in rows}, {"m1"})
        self.assertEqual({r["obis"] for r in rows},
                         {f"1-0:1.8.{t}*255" for t in range(5)}
                         | {f"1-0:{c}.7.0*255" for c in (32, 52, 72)})  # fmt: skip

        # The day-frozen record's rows of the last three days, no attributes.
        now = datetime.now(UTC)
        since = (now - timedelta(days=3)).replace(microsecond=0)
        result = yield fep_deferred("read", route, "--protocol", "dlt698", "--address",
                                    ADDRESS, "--frozen", "50040200", "--from",
                                    since.isoformat(), "--to", now.isoformat(timespec="seconds"))
        self.assertEqual(result.returncode, 0, result.stderr)
        rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        self.assertTrue(rows, result.stderr)
        times = {r["meter_time"] for r in rows}
        self.assertIn(len(times), (2, 3, 4))
        for text in times:
            self.assertTrue(since <= datetime.fromisoformat(text.replace("Z", "+00:00")) <= now)
        self.assertNotIn("1-0:32.7.0*255", {r["obis"] for r in rows})

    @inlineCallbacks
    def test_a_range_without_a_frozen_record_is_a_usage_error(self) -> Any:
        for extra in (("--from", "2026-12-01T00:00"), ("--frozen", "50040200", "--to",
                                                        "2026-12-01T00:00")):
            result = yield fep_deferred("read", "tcp:127.0.0.1:1", "--protocol", "dlt698",
                                        "--address", ADDRESS, *extra)
            self.assertEqual(result.returncode, 2, result.stderr)
            self.assertIn("--from", result.stderr)


class RangeSettingsTests(unittest.TestCase):
    def test_a_frozen_range_and_no_attributes(self) -> None:
        from fep.errors import ConfigError
        from fep.model import Meter
        from fep.protocols.dlt698.session import settings_for

        meter = Meter("m1", "dlt698", "tcp:x:1", address=ADDRESS, metadata={
            "dlt698_items": "none", "dlt698_frozen": "50040200",
            "dlt698_from": "2026-12-01T00:00:00", "dlt698_to": "2026-12-04T00:00:00+00:00"})
        s = settings_for(meter)
        self.assertEqual(s.items, ())
        (read,) = s.records
        self.assertEqual((read.since, read.until), (datetime(2026, 12, 1, tzinfo=UTC),
                                                    datetime(2026, 12, 4, tzinfo=UTC)))
        for key, value in (("dlt698_to", ""), ("dlt698_from", "yesterday")):
            with self.assertRaises(ConfigError) as caught:
                settings_for(Meter("m1", "dlt698", "tcp:x:1", address=ADDRESS,
                                   metadata={**meter.metadata, key: value}))
            self.assertIn(caught.exception.key, ("dlt698_from", "dlt698_to"))


class DirectReadTests(unittest.TestCase):
    timeout = 60

    @inlineCallbacks
    def test_a_dlt645_meter_on_a_terminals_port_read_directly_through_it(self) -> Any:
        from twisted.internet.defer import ensureDeferred

        from fep.model import Meter
        from tests.daemon.harness import add_meters

        route = yield tcp_simulator(self, "dlt698", "--port", "0", "--address",
                                    "000000009999", "--rs485", "000000000645")
        db = f"sqlite:{self.mktemp()}.sqlite"
        yield ensureDeferred(add_meters(db, [
            Meter("T1", "dlt698", route, address="000000009999"),
            Meter("E1", "dlt645", "dlt698:T1:port=F2010201", address="000000000645",
                  metadata={"concentrator": "T1"})]))
        result = yield fep_deferred("--db", db, "read", "--meter", "E1", "--socket",
                                    f"{self.mktemp()}.sock")
        self.assertEqual(result.returncode, 0, result.stderr)
        rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        self.assertEqual({r["meter"] for r in rows}, {"E1"})
        self.assertIn("1-0:1.8.0*255", {r["obis"] for r in rows})

    @inlineCallbacks
    def test_a_meter_behind_a_terminal_read_directly_through_it(self) -> Any:
        from twisted.internet.defer import ensureDeferred

        from fep.model import Meter
        from tests.daemon.harness import add_meters

        route = yield tcp_simulator(self, "dlt698", "--port", "0", "--address",
                                    "000000009999", "--behind", "000000000001")
        db = f"sqlite:{self.mktemp()}.sqlite"
        yield ensureDeferred(add_meters(db, [
            Meter("T1", "dlt698", route, address="000000009999"),
            Meter("M1", "dlt698", "dlt698:T1", address="000000000001",
                  metadata={"concentrator": "T1"}),
            Meter("T2", "dlt698", "gprs:dlt698=000000008888", address="000000008888"),
            Meter("M2", "dlt698", "dlt698:T2", address="000000000002",
                  metadata={"concentrator": "T2"})]))
        result = yield fep_deferred("--db", db, "read", "--meter", "M1", "--socket",
                                    f"{self.mktemp()}.sock", "-o", "dlt698_items=00100200")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("directly", result.stderr)
        rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        self.assertEqual({r["meter"] for r in rows}, {"M1"})
        self.assertIn("1-0:1.8.0*255", {r["obis"] for r in rows})
        # A terminal that logs in over GPRS needs the daemon.
        result = yield fep_deferred("--db", db, "read", "--meter", "M2", "--socket",
                                    f"{self.mktemp()}.sock")
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("gprs:dlt698=000000008888 is reached through the daemon's gprs channel",
                      result.stderr)
