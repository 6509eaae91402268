"""Device register maps: the two example maps load; mistakes are errors naming the file,
section and key."""

from __future__ import annotations

from pathlib import Path

from twisted.trial import unittest

from fep.errors import ConfigError
from fep.model import EventKind, Severity
from fep.protocols.modbus.devicemap import (
    PROJECT_DEVICES,
    Table,
    find_device_map,
    load_device_map,
    parse_device_map,
)

MINIMAL = """
[device]
model = test
[counter.1]
table = input
address = 0
"""


class ExampleMapTests(unittest.TestCase):
    def test_sim_pr2(self) -> None:
        m = load_device_map("sim-pr2")
        self.assertEqual((m.counters["1"].table, m.counters["1"].address, m.counters["1"].type),
                         (Table.INPUT, 0, "u32"))
        assert m.history is not None and m.events is not None and m.status is not None
        self.assertEqual(m.history.record_size, 9)
        self.assertEqual(m.history.offset("counter.2"), 6)
        self.assertEqual((m.restart_bit, m.power_fail_bit), (0, 1))
        self.assertEqual(m.event_codes[3].name, "door-open")
        self.assertEqual(m.event_codes[3].kind, EventKind.COVER_OPEN)
        self.assertEqual(m.event_codes[7].severity, Severity.CRITICAL)
        self.assertEqual(m.status.bits["low_battery"], 4)
        self.assertTrue(m.clock_writable)

    def test_generic_counter16(self) -> None:
        m = load_device_map("generic-counter16")
        self.assertEqual(m.counters["2"].type, "u16")
        self.assertEqual((m.clock_format, m.tz, m.word_order), ("ymdhms", "Europe/Berlin",
                                                                "little"))
        assert m.status is not None
        self.assertEqual(m.status.register.table, Table.DISCRETE)
        self.assertIsNone(m.history)
        self.assertEqual(m.period_seconds, 900)

    def test_every_example_map_in_etc_devices_loads(self) -> None:
        files = sorted(PROJECT_DEVICES.glob("*.ini"))
        self.assertGreaterEqual(len(files), 2)
        for path in files:
            self.assertEqual(load_device_map(str(path)).name, path.stem)

    def test_lookup_by_path_and_unknown_names(self) -> None:
        path = Path(self.mktemp() + ".ini")
        path.write_text(MINIMAL)
        self.assertEqual(find_device_map(str(path)), path)
        with self.assertRaises(ConfigError) as e:
            find_device_map("no-such-model")
        self.assertEqual(e.exception.key, "modbus_device_map")


class MapErrorTests(unittest.TestCase):
    def error(self, text: str) -> ConfigError:
        with self.assertRaises(ConfigError) as e:
            parse_device_map(text, file="etc/devices/x.ini")
        self.assertEqual(e.exception.file, "etc/devices/x.ini")
        return e.exception

    def test_minimal_map(self) -> None:
        m = parse_device_map(MINIMAL)
        self.assertEqual(m.counters["1"].type, "u32")

    def test_no_device_section(self) -> None:
        self.assertIn("[device]", str(self.error("[counter.1]\ntable=input\naddress=0\n")))

    def test_unknown_section_and_key(self) -> None:
        e = self.error(MINIMAL + "[colck]\n")
        self.assertEqual(e.section, "colck")
        e = self.error(MINIMAL.replace("address = 0", "adress = 0"))
        self.assertEqual((e.section, e.key), ("counter.1", "address"))
        e = self.error(MINIMAL + "widht = 16\n")
        self.assertEqual((e.section, e.key), ("counter.1", "widht"))

    def test_bad_values_name_their_key(self) -> None:
        e = self.error(MINIMAL.replace("table = input", "table = inputs"))
        self.assertEqual((e.section, e.key), ("counter.1", "table"))
        e = self.error(MINIMAL + "width = 24\n")
        self.assertEqual(e.key, "width")
        e = self.error(MINIMAL.replace("address = 0", "address = 70000"))
        self.assertEqual(e.key, "address")
        e = self.error(MINIMAL.replace("model = test", "model = test\ntz = Mars/Olympus"))
        self.assertEqual((e.section, e.key), ("device", "tz"))
        e = self.error(MINIMAL + "[value.supply]\ntable=input\naddress=4\nscale=abc\n")
        self.assertEqual((e.section, e.key), ("value.supply", "scale"))
        e = self.error(MINIMAL + "[value.temp]\ntable=input\naddress=4\n")
        self.assertEqual((e.section, e.key), ("value.temp", "obis"))
        e = self.error(MINIMAL + "[clock]\ntable=input\naddress=0\nwritable=yes\n")
        self.assertEqual((e.section, e.key), ("clock", "writable"))

    def test_history_needs_its_fields_and_a_period(self) -> None:
        history = ("[history]\nindex_table=input\nindex_address=8\ncapacity=10\n"
                   "select_address=16\nwindow_table=input\nwindow_address=100\n")
        e = self.error(MINIMAL + "[period]\nseconds=900\n" + history + "record = number:u32\n")
        self.assertEqual((e.section, e.key), ("history", "record"))
        e = self.error(MINIMAL + "[period]\nseconds=900\n" + history +
                       "record = number:u32, end:time32\n")
        self.assertIn("counter.1", str(e))
        e = self.error(MINIMAL + history + "record = number:u32, end:time32, counter.1:u32\n")
        self.assertEqual(e.section, "history")
        e = self.error(MINIMAL + "[period]\nseconds=900\n" + history +
                       "record = number:u32, end:time32, counter.1:u32\nrecords_per_window=50\n")
        self.assertEqual(e.key, "records_per_window")
        e = self.error(MINIMAL + "[period]\nseconds=700\n")
        self.assertEqual((e.section, e.key), ("period", "seconds"))

    def test_event_codes_are_checked(self) -> None:
        e = self.error(MINIMAL + "[event.codes]\n1 = door-opened\n")
        self.assertEqual((e.section, e.key), ("event.codes", "1"))
        e = self.error(MINIMAL + "[event.codes]\n1 = door-open, dire\n")
        self.assertIn("severity", str(e))
        m = parse_device_map(MINIMAL + "[event.codes]\n0x10 = door-open, critical\n")
        self.assertEqual(m.event_codes[16].severity, Severity.CRITICAL)
