"""The simulated DL/T 698.45 meter as a command (``python -m fep.sim.dlt698``), read by the
``fep read`` command: the acceptance path of a read, with its options."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial import unittest

from fep.model import MeterEvent, Reading
from fep.protocols.dlt698.session import Dlt698Protocol
from tests.processes import fep_command, start_module

reactor: Any = global_reactor


def json_rows(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class SimulatorCommandTests(unittest.TestCase):
    @inlineCallbacks
    def port(self, *args: str) -> Any:
        line = yield start_module(self, "fep.sim.dlt698", "--port", "0", *args)
        self.assertTrue(line.startswith("serving 000000123456 on tcp:127.0.0.1:"), line)
        return int(line.rsplit(":", 1)[1])

    @inlineCallbacks
    def test_fep_read_of_energy_clock_and_a_day_frozen_row(self) -> Any:
        port = yield self.port()
        result = yield fep_command(
            "read", f"tcp:host=127.0.0.1:port={port}", "--protocol", "dlt698", "--address",
            "000000123456", "-o", "dlt698_items=00100200,40000200", "-o",
            "dlt698_frozen=50040200", "--format", "json")  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        rows = json_rows(result.stdout)
        self.assertEqual([r["obis"] for r in rows[:6]],
                         [f"1-0:1.8.{t}*255" for t in range(5)] + ["0-0:1.0.0*255"])
        self.assertEqual(rows[0]["unit"], "kWh")
        # The last day-frozen row: midnight on the meter's UTC+8 clock, 16:00 UTC.
        frozen = [r for r in rows if (r.get("meter_time") or "").endswith("16:00:00Z")]
        self.assertTrue(frozen, rows)

    @inlineCallbacks
    def test_options_login_password_blocks_and_split_frames(self) -> Any:
        port = yield self.port("--login", "--password", "123456", "--rows-per-block", "2",
                               "--frame-size", "48")
        meter = _meter(dlt698_password="123456", dlt698_items="20000200",
                       dlt698_events="30110200", dlt698_events_last="2",
                       dlt698_frozen="50040200", dlt698_frozen_last="3")
        records = yield Dlt698Protocol().read(
            reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", port), meter, 5.0)
        readings = [r for r in records if isinstance(r, Reading)]
        self.assertEqual([r.native_id for r in readings[:3]],
                         ["20000201", "20000202", "20000203"])
        self.assertEqual(len([r for r in readings if r.native_id == "50040200/00100201"]), 3)
        self.assertEqual(len([e for e in records if isinstance(e, MeterEvent)]), 4)

    @inlineCallbacks
    def test_fep_read_of_a_concentrator_and_the_meters_behind_it(self) -> Any:
        line = yield start_module(self, "fep.sim.dlt698", "--port", "0", "--address",
                                  "000000009999", "--behind", "000000000001", "--behind",
                                  "000000000002")  # fmt: skip
        port = int(line.rsplit(":", 1)[1])
        result = yield fep_command(
            "read", f"tcp:host=127.0.0.1:port={port}", "--protocol", "dlt698", "--address",
            "000000009999", "-o", "dlt698_items=00100200", "-o",
            "dlt698_proxy=000000000001,000000000002", "--format", "json")  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        rows = json_rows(result.stdout)
        totals = {r["meter"] for r in rows if r["obis"] == "1-0:1.8.0*255"}
        self.assertEqual(totals, {"000000009999", "000000000001", "000000000002"})

    @inlineCallbacks
    def test_no_connect_option(self) -> Any:
        port = yield self.port("--no-connect")
        records = yield Dlt698Protocol().read(
            reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", port),
            _meter(dlt698_connect="no", dlt698_items="200F0200"), 5.0)
        self.assertEqual([r.native_id for r in records], ["200F0200"])

    @inlineCallbacks
    def test_secured_option(self) -> Any:
        port = yield self.port("--secured")
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        # Plain GETs refused (DAR 20), plaintext + RN answered in plaintext with a MAC.
        records = yield Dlt698Protocol().read(reactor, endpoint,
                                              _meter(dlt698_items="200F0200"), 5.0)
        self.assertEqual(records, [])
        records = yield Dlt698Protocol().read(
            reactor, endpoint, _meter(dlt698_items="200F0200", dlt698_security="plaintext-rn"),
            5.0)
        self.assertEqual([r.native_id for r in records], ["200F0200"])


def _meter(**metadata: str) -> Any:
    from fep.model import Meter

    return Meter("sim", "dlt698", "tcp:127.0.0.1", address="000000123456", metadata=metadata)
