"""Per-read options are a whitelist per protocol (fep.operator.readoptions): what to read and
from when, never how to reach or authenticate a meter, and device maps by name only; the API
and the console both go through commands.read_meter, which refuses before any connection."""

from __future__ import annotations

from pathlib import Path

from twisted.trial import unittest

from fep.model import Meter
from fep.operator import commands
from fep.operator.readoptions import READ_OPTIONS, ReadOptionRefused, checked
from fep.protocols.modbus.devicemap import PROJECT_DEVICES
from fep.protocols.registry import protocol_names
from tests.operator.helpers import make_context


class WhitelistTests(unittest.TestCase):
    def refused(self, protocol: str, options: dict[str, object]) -> ReadOptionRefused:
        with self.assertRaises(ReadOptionRefused) as caught:
            checked(protocol, options)
        return caught.exception

    def test_every_protocol_has_its_list(self) -> None:
        self.assertEqual(set(READ_OPTIONS), set(protocol_names()))

    def test_what_to_read_and_from_when_passes(self) -> None:
        self.assertEqual(
            checked("dlms", {"dlms_objects": "3/1.0.1.8.0.255/2, 8/0.0.1.0.0.255/2",
                             "dlms_profile": "1.0.99.1.0.255",
                             "dlms_from": "2026-03-01T00:00:00Z", "dlms_to": "2026-03-02"}),
            {"dlms_objects": "3/1.0.1.8.0.255/2,8/0.0.1.0.0.255/2",
             "dlms_profile": "1.0.99.1.0.255", "dlms_from": "2026-03-01T00:00:00Z",
             "dlms_to": "2026-03-02"})
        self.assertEqual(checked("dlt645", {"dlt645_items": "00010000,02010100",
                                            "dlt645_profile_blocks": 8}),
                         {"dlt645_items": "00010000,02010100", "dlt645_profile_blocks": "8"})
        self.assertEqual(checked("dlt698", {"dlt698_items": "00100200,40000200",
                                            "dlt698_frozen": "50040200",
                                            "dlt698_frozen_last": 3}),
                         {"dlt698_items": "00100200,40000200", "dlt698_frozen": "50040200",
                          "dlt698_frozen_last": "3"})
        self.assertEqual(checked("ansi-c12.21", {"c12_profile": "no"}), {"c12_profile": "no"})
        self.assertEqual(checked("ansi-c12", {"c12_snapshots": "no"}), {"c12_snapshots": "no"})
        self.assertEqual(checked("modbus", {"modbus_device_map": "sim-pr2",
                                            "pulse_since_index": "17"}),
                         {"modbus_device_map": "sim-pr2", "pulse_since_index": "17"})

    def test_settings_of_the_meter_list_are_no_read_options(self) -> None:
        for protocol, key in (("dlms", "dlms_ciphered"), ("dlms", "dlms_ek"),
                              ("dlms", "dlms_server"), ("dlms", "dlms_auth"),
                              ("ansi-c12", "c12_password"), ("dlt645", "dlt645_edition"),
                              ("iec62056-21", "iec_mode"), ("modbus", "modbus_unit"),
                              ("dlms", "modbus_device_map")):
            e = self.refused(protocol, {key: "x"})
            self.assertEqual(e.option, key)
            self.assertIn(key, str(e))
            self.assertIn(protocol, str(e))

    def test_a_device_map_is_named_never_a_path(self) -> None:
        for value in ("/etc/passwd", "../../etc/shadow", "sim-pr2.ini",
                      "etc/devices/sim-pr2.ini", "..", ".hidden", "C:\\maps\\x", "~root/x",
                      "sim-pr2/../../x", ""):
            e = self.refused("modbus", {"modbus_device_map": value})
            self.assertEqual(e.option, "modbus_device_map")
        e = self.refused("modbus-pulse", {"modbus_device_map": "/etc/passwd"})
        self.assertIn("path", str(e))
        e = self.refused("modbus", {"modbus_device_map": "no-such-map"})
        self.assertIn("no-such-map", str(e))

    def test_values_must_be_of_the_option_s_kind(self) -> None:
        for protocol, options in (
            ("dlms", {"dlms_from": "yesterday"}),
            ("dlms", {"dlms_objects": "3/1.0.1.8.0.255"}),
            ("dlms", {"dlms_profile": "/etc/passwd"}),
            ("dlt645", {"dlt645_items": "0001000"}),
            ("dlt645", {"dlt645_profile_blocks": "100000"}),
            ("modbus", {"pulse_history": "-1"}),
            ("ansi-c12", {"c12_events": "maybe"}),
            ("dlms", {"dlms_profile": "1.0.99.1.0.255\n"}),
            ("dlms", {"dlms_objects": "3/1.0.1.8.0.255/2," * 300}),
            ("dlms", {"dlms_profile": {"nested": 1}}),
            ("dlms", {"dlms_profile": True}),
        ):
            e = self.refused(protocol, options)
            self.assertEqual(e.option, next(iter(options)))


class ReadMeterTests(unittest.TestCase):
    async def test_a_refused_option_stops_the_read_before_any_connection(self) -> None:
        ctx = await make_context(self, [
            Meter("pr", "modbus", "tcp:host=127.0.0.1:port=1",
                  metadata={"modbus_device_map": "sim-pr2"})])
        # A valid map, but as a file path outside etc/devices.
        copied = Path(self.mktemp() + ".ini")
        copied.write_bytes((PROJECT_DEVICES / "sim-pr2.ini").read_bytes())
        for who in ("api:alice", "console:bob"):
            with self.assertRaises(commands.CommandRefused) as caught:
                await commands.read_meter(ctx, "pr", who=who, role="operator",
                                          options={"modbus_device_map": str(copied)})
            self.assertEqual(caught.exception.status, 400)
            self.assertIn("modbus_device_map", str(caught.exception))
            self.assertIn("pr", str(caught.exception))
        self.assertNotIn("pr", ctx.activity.last)

    async def test_the_console_s_read_goes_through_the_same_whitelist(self) -> None:
        from fep.operator.manhole import namespace_for

        ctx = await make_context(self, [
            Meter("d1", "dlms", "tcp:host=127.0.0.1:port=1")])
        space = namespace_for(ctx, "bob", "SHA256:abc")
        with self.assertRaises(commands.CommandRefused) as caught:
            await space["read"]("d1", dlms_ciphered="no")
        self.assertIn("dlms_ciphered", str(caught.exception))
        self.assertNotIn("d1", ctx.activity.last)
