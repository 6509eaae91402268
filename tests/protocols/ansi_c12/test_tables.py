"""``fep read --table``: table numbers, decoding by number with the tables each needs, the
rows printed, and the client's table session against the simulated meter in memory."""

from __future__ import annotations

import json
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.protocols.ansi_c12.c1219 import GeneralConfig, SourceLink
from fep.protocols.ansi_c12.client import C1218Client, Finished, TableDump
from fep.protocols.ansi_c12.session import table_rows
from fep.protocols.ansi_c12.tables import (
    TABLE_NAMES,
    decode_table,
    parse_table,
    table_label,
    table_needs,
    table_row,
    table_size,
)
from fep.sim.ansi_c12 import MT0_DATA, SimulatedC12Meter
from tests.protocols.ansi_c12.test_client import NOW, FakeClock, Wire, settings_


def sim_tables(*numbers: int) -> dict[int, bytes]:
    meter = SimulatedC12Meter(clock=FakeClock(), password=None)
    tables: dict[int, bytes] = {}
    for number in numbers:
        data = meter.table(number)
        assert data is not None, number
        tables[number] = data
    return tables


class TableNumberTests(unittest.TestCase):
    def test_standard_and_manufacturer_forms(self) -> None:
        self.assertEqual(
            [parse_table(t) for t in ("23", "st23", "ST0", "MT0", "mt5", "2048", "4095")],
            [23, 23, 0, 2048, 2053, 2048, 4095],
        )

    def test_out_of_range_and_garbage_are_value_errors(self) -> None:
        for text in ("ST2048", "MT2048", "4096", "-1", "T23", "", "23a"):
            with self.assertRaises(ValueError, msg=text):
                parse_table(text)

    def test_labels(self) -> None:
        self.assertEqual((table_label(23), table_label(2048), table_label(2049)),
                         ("ST23", "MT0", "MT1"))  # fmt: skip

    def test_needs(self) -> None:
        self.assertEqual(
            (table_needs(23), table_needs(15), table_needs(64), table_needs(52)),
            ((21,), (11,), (61, 62), ()),
        )


class DecodeByNumberTests(unittest.TestCase):
    def test_every_named_table_of_the_simulator_decodes(self) -> None:
        tables = sim_tables(*TABLE_NAMES)
        for number in TABLE_NAMES:
            row = table_row("m1", number, tables)
            self.assertIn("fields", row, (number, row.get("decode_error")))
            json.dumps(row)  # plain JSON values all through

    def test_st23_row_has_the_registers_as_numbers(self) -> None:
        row = table_row("m1", 23, sim_tables(0, 21, 23))
        fields = row["fields"]
        assert isinstance(fields, dict)
        self.assertEqual(fields["total"]["summations"], [1234.5, 56.125, 310.25])
        self.assertEqual(fields["demand_resets"], 3)
        self.assertEqual(
            {k: row[k] for k in ("meter", "table", "label", "name", "size")},
            {"meter": "m1", "table": 23, "label": "ST23", "name": "CURRENT_REG_DATA_TBL",
             "size": 76},
        )  # fmt: skip

    def test_st16_row_has_the_links(self) -> None:
        fields = table_row("m1", 16, sim_tables(0, 11, 16))["fields"]
        assert isinstance(fields, list)
        self.assertEqual(len(fields), 5)
        self.assertEqual(fields[4], {"uom_entry": True, "demand_ctrl": False, "data_ctrl": True,
                                     "constants": False, "engineering_units": True,
                                     "constant_to_be_applied": False})  # fmt: skip
        self.assertEqual(SourceLink(**fields[4]).to_int(), 0x15)

    def test_st12_entries_carry_their_text(self) -> None:
        fields = table_row("m1", 12, sim_tables(0, 12))["fields"]
        assert isinstance(fields, list)
        self.assertEqual(fields[0]["text"], "active power, bulk, Q1+Q4, x10^3")

    def test_st0_sets_and_flags_are_lists(self) -> None:
        fields = table_row("m1", 0, sim_tables(0))["fields"]
        assert isinstance(fields, dict)
        self.assertEqual(fields["mfg_tables_used"], [0])
        self.assertEqual(fields["device_class"], b"FEP\x01".hex())

    def test_st3_flags_by_name(self) -> None:
        meter = SimulatedC12Meter(clock=FakeClock(), status=0x0140)
        tables = {0: meter.table(0) or b"", 3: meter.table(3) or b""}
        fields = table_row("m1", 3, tables)["fields"]
        assert isinstance(fields, dict)
        self.assertEqual(fields["std_status"], ["CLOCK_ERROR", "LOW_BATTERY"])
        self.assertEqual(fields["mode"], ["METERING"])

    def test_unknown_table_is_hex(self) -> None:
        tables = sim_tables(0)
        tables[2048] = MT0_DATA
        row = table_row("m1", 2048, tables)
        self.assertEqual((row["label"], row["name"], row["hex"]), ("MT0", None, MT0_DATA.hex()))
        self.assertNotIn("fields", row)

    def test_bytes_that_do_not_fit_are_hex_with_the_decode_error(self) -> None:
        tables = sim_tables(0, 11)
        tables[16] = b"\x01\x02"  # ST11 gives five sources
        row = table_row("m1", 16, tables)
        self.assertEqual(row["hex"], "0102")
        self.assertEqual(row["decode_error"], "ST16 is 2 bytes, ST11 gives 5 sources")

    def test_a_missing_dependency_is_a_decode_error(self) -> None:
        tables = sim_tables(0, 23)
        self.assertEqual(
            table_row("m1", 23, tables)["decode_error"], "ST23 is decoded with ST21"
        )

    def test_sizes_of_the_big_tables_follow_from_their_dependencies(self) -> None:
        tables = sim_tables(0, 61, 62, 64, 71, 74)
        self.assertEqual(table_size(64, tables), len(tables[64]))
        self.assertEqual(table_size(74, tables), len(tables[74]))
        self.assertEqual(table_size(23, tables), 0)

    @given(st.sampled_from(sorted(TABLE_NAMES)), st.binary(max_size=200))
    def test_arbitrary_table_bytes_give_a_row(self, number: int, data: bytes) -> None:
        tables = sim_tables(0, 11, 21, 61, 62, 71)
        if number == 0:
            tables = {}
        tables[number] = data
        row = table_row("m1", number, tables)
        self.assertTrue("fields" in row or "decode_error" in row, row)
        json.dumps(row)

    def test_decode_table_gives_records(self) -> None:
        config = decode_table(0, sim_tables(0))
        self.assertIsInstance(config, GeneralConfig)
        self.assertIsNone(decode_table(2048, {0: sim_tables(0)[0], 2048: b"x"}))


class TableSessionTests(unittest.TestCase):
    def run_tables(self, *tables: int) -> tuple[TableDump, Wire]:
        meter = SimulatedC12Meter(clock=FakeClock())
        client = C1218Client(settings_(password=b"secret", tables=tables), now=lambda: NOW)
        wire = Wire(client, meter)
        end = wire.run()
        assert isinstance(end, Finished)
        assert isinstance(end.data, TableDump)
        return end.data, wire

    def test_reads_st0_then_each_table_after_what_it_needs(self) -> None:
        dump, wire = self.run_tables(23, 2048, 16, 23)
        self.assertEqual(
            wire.meter.log,
            ["identify", "negotiate", "logon", "security", "read 0", "read 21", "read 23",
             "read 2048", "read 11", "read 16", "logoff", "terminate"],
        )  # fmt: skip
        self.assertEqual(dump.requested, (23, 2048, 16))
        self.assertEqual(dump.errors, ())
        self.assertEqual(dump.tables[2048], MT0_DATA)

    def test_refused_tables_are_noted_and_the_rest_read(self) -> None:
        dump, wire = self.run_tables(99, 22)
        self.assertEqual(
            dump.errors,
            ((99, "meter m1 refused read of table 99: iar (inappropriate action requested)"),),
        )
        self.assertIn(22, dump.tables)
        self.assertEqual(wire.meter.log[-2:], ["logoff", "terminate"])

    def test_a_table_whose_dependency_was_refused_is_not_asked_for(self) -> None:
        def refuse_21(request: bytes, answer: bytes) -> bytes:
            return b"\x0a" if request == b"\x30\x00\x15" else answer

        meter = SimulatedC12Meter(clock=FakeClock())
        client = C1218Client(settings_(password=b"secret", tables=(23,)), now=lambda: NOW)
        end = Wire(client, meter, answers=refuse_21).run()
        assert isinstance(end, Finished) and isinstance(end.data, TableDump)
        self.assertEqual(dict(end.data.errors)[23], "needs ST21, which was not read")
        self.assertNotIn("read 23", meter.log)

    def test_big_tables_come_in_partial_reads(self) -> None:
        meter = SimulatedC12Meter(clock=FakeClock())
        client = C1218Client(
            settings_(password=b"secret", tables=(64,), packet_size=64, max_packets=1),
            now=lambda: NOW,
        )
        wire = Wire(client, meter)
        end = wire.run()
        assert isinstance(end, Finished) and isinstance(end.data, TableDump)
        self.assertTrue([e for e in meter.log if e.startswith("read 64 at")])
        self.assertEqual(end.data.tables[64], meter.table(64))

    def test_rows_in_the_order_asked_with_errors(self) -> None:
        dump, _ = self.run_tables(99, 15)
        rows = table_rows("m1", dump)
        self.assertEqual([r["label"] for r in rows], ["ST99", "ST15"])
        self.assertIn("iar", str(rows[0]["error"]))
        fields = rows[1]["fields"]
        assert isinstance(fields, list)
        self.assertEqual(fields[0]["multiplier"], 1)
        self.assertEqual(Decimal(str(fields[0]["set1"]["ratio_f1"])), 1)
