"""IEC 62056-21 readout data: data lines, data sets, readings, published readouts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.model import ObisCode, Quality, Reading, Unit
from fep.protocols.iec62056_21.frames import DataBlock, FrameDecoder
from fep.protocols.iec62056_21.readout import (
    DataSet,
    DataValue,
    encode_readout,
    parse_readout,
    parse_timestamp,
    parse_unit,
    to_readings,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "iec62056_21"


def fixture_bytes(name: str) -> bytes:
    """A published readout as sent on the wire; the file's first line names its source."""
    raw = (FIXTURES / name).read_bytes()
    header, _, body = raw.partition(b"\n")
    assert header.startswith(b"# "), f"{name}: first line must name the source"
    return body


def fixture_readout(name: str) -> DataBlock:
    block = FrameDecoder().receive(fixture_bytes(name))[1]
    assert isinstance(block, DataBlock)
    return block


RECEIVED = datetime(2024, 1, 1, tzinfo=UTC)


def readings_by_obis(text: bytes, tz: tzinfo = UTC) -> dict[str, Reading]:
    readout = parse_readout(text)
    return {str(r.obis): r for r in to_readings(readout, "m1", received_time=RECEIVED, tz=tz)}


class DataLineTests(unittest.TestCase):
    def test_energy_register_maps_to_obis_decimal_and_unit(self) -> None:
        r = readings_by_obis(b"1.8.0(001234.5*kWh)\r\n!\r\n")["1-0:1.8.0*255"]
        self.assertEqual((r.value, r.unit, r.scaler), (Decimal("1234.5"), Unit.by_code(30), 3))

    def test_demand_with_timestamp_gets_that_meter_time(self) -> None:
        r = readings_by_obis(b"1.6.0(0.123*kW)(2311221015)\r\n!\r\n")["1-0:1.6.0*255"]
        self.assertEqual(r.value, Decimal("0.123"))
        self.assertEqual(r.meter_time, datetime(2023, 11, 22, 10, 15, tzinfo=UTC))

    def test_dsmr_order_timestamp_first_value_second(self) -> None:
        r = readings_by_obis(b"1-0:1.6.0(230318200000W)(04.470*kW)\r\n!\r\n")["1-0:1.6.0*255"]
        self.assertEqual(r.value, Decimal("4.470"))
        self.assertEqual(r.meter_time, datetime(2023, 3, 18, 20, 0, tzinfo=UTC))

    def test_several_data_sets_on_one_line(self) -> None:
        readout = parse_readout(b"1.8.1(1*kWh)1.8.2(2*kWh)\r\n!\r\n")
        self.assertEqual([ds.address for ds in readout.datasets], ["1.8.1", "1.8.2"])

    def test_text_value_keeps_leading_zeros(self) -> None:
        r = readings_by_obis(b"C.1.0(00012314)\r\n!\r\n")["1-0:96.1.0*255"]
        self.assertEqual(r.value, "00012314")

    def test_empty_value_is_missing(self) -> None:
        r = readings_by_obis(b"C.1.1(        )\r\n!\r\n")["1-0:96.1.1*255"]
        self.assertEqual((r.value, r.quality), (None, Quality.MISSING))

    def test_ampere_is_not_taken_for_year(self) -> None:
        self.assertEqual(parse_unit("A"), (Unit.by_code(33), 0))
        self.assertEqual(parse_unit("kA"), (Unit.by_code(33), 3))

    def test_meter_clock_applies_to_readings_without_their_own_time(self) -> None:
        text = b"0.9.1(13:23:08)\r\n0.9.2(17-11-03)\r\n1.8.0(000101.96*kWh)\r\n!\r\n"
        r = readings_by_obis(text)["1-0:1.8.0*255"]
        self.assertEqual(r.meter_time, datetime(2017, 11, 3, 13, 23, 8, tzinfo=UTC))

    def test_meter_local_time_is_converted_with_the_given_zone(self) -> None:
        text = b"0.9.1(130000)\r\n0.9.2(240615)\r\n1.8.0(1*kWh)\r\n!\r\n"
        r = readings_by_obis(text, tz=timezone(timedelta(hours=2)))["1-0:1.8.0*255"]
        self.assertEqual(r.meter_time, datetime(2024, 6, 15, 11, 0, tzinfo=UTC))

    def test_timestamp_parser_rejects_impossible_dates(self) -> None:
        self.assertIsNone(parse_timestamp("2313221015"))

    def test_non_obis_address_gives_no_reading_but_stays_a_data_set(self) -> None:
        readout = parse_readout(b"ERR-X(1)\r\n!\r\n")
        self.assertEqual(len(readout.datasets), 1)
        self.assertEqual(to_readings(readout, "m1"), [])


class ParseErrorTests(unittest.TestCase):
    def test_error_names_line_and_byte(self) -> None:
        with self.assertRaises(FrameError) as cm:
            parse_readout(b"1.8.0(1*kWh)\r\n1.8.1(2*kWh)\r\n2.8.0#(3*kWh)\r\n!\r\n")
        self.assertEqual(cm.exception.field, "data line 3")
        self.assertEqual(cm.exception.offset, 33)
        self.assertIn("data line 3, byte 33", cm.exception.message)

    def test_unclosed_value_is_an_error(self) -> None:
        with self.assertRaises(FrameError) as cm:
            parse_readout(b"1.8.0(1*kWh\r\n!\r\n")
        self.assertIn("closing ')'", cm.exception.message)

    def test_address_without_value_is_an_error(self) -> None:
        with self.assertRaises(FrameError):
            parse_readout(b"1.8.0\r\n!\r\n")

    def test_missing_end_line_is_an_error(self) -> None:
        with self.assertRaises(FrameError) as cm:
            parse_readout(b"1.8.0(1*kWh)\r\n")
        self.assertIn("no end line", cm.exception.message)


class PublishedReadoutTests(unittest.TestCase):
    def test_e350_total_import_and_phase_current(self) -> None:
        readout = parse_readout(fixture_readout("landis_gyr_e350_m26.txt").data)
        readings = {str(r.obis): r for r in to_readings(readout, "e350")}
        self.assertEqual(readings["1-0:1.8.0*255"].value, Decimal("61561.289"))
        self.assertEqual(readings["1-0:1.8.0*255"].unit_text, "kWh")
        self.assertEqual(readings["1-0:31.7.0*255"].value, Decimal("0.35"))
        self.assertEqual(readings["1-0:31.7.0*255"].unit_text, "A")
        self.assertEqual(readings["1-0:97.97.0*255"].value, "00")
        self.assertEqual(readings["1-0:0.2.0*255"].value, "M26")

    def test_e350_has_22_data_sets(self) -> None:
        readout = parse_readout(fixture_readout("landis_gyr_e350_m26.txt").data)
        self.assertEqual(len(readout.datasets), 22)

    def test_e350_serial_from_device_address(self) -> None:
        readout = parse_readout(fixture_readout("landis_gyr_e350_m26.txt").data)
        self.assertEqual(readout.serial(), "120858")

    def test_mt174_full_obis_and_meter_clock(self) -> None:
        readout = parse_readout(fixture_readout("iskra_mt174.txt").data)
        readings = {str(r.obis): r for r in to_readings(readout, "mt174")}
        export = readings["1-0:2.8.0*255"]
        self.assertEqual(export.value, Decimal("98697.318"))
        # 0.9.2(0220127) 0.9.1(105644): the Iskra date carries a leading century digit.
        self.assertEqual(export.meter_time, datetime(2022, 1, 27, 10, 56, 44, tzinfo=UTC))


# Hypothesis strategies, reused by the client and session tests.
obis_addresses = st.builds(
    lambda c, d, e: f"{c}.{d}.{e}",
    st.integers(0, 99),
    st.integers(0, 99),
    st.integers(0, 255),
)
numbers = st.decimals(
    min_value=Decimal(0), max_value=Decimal("999999.999"), places=3, allow_nan=False
)
units = st.sampled_from(["kWh", "kvarh", "V", "A", "kW", "Hz", "MWh"])
data_sets = st.builds(
    lambda a, v, u: DataSet(a, (DataValue(f"{v:010.3f}", u),)), obis_addresses, numbers, units
)


class RoundTripTests(unittest.TestCase):
    @given(st.lists(data_sets, max_size=30))
    def test_encode_then_parse_gives_the_same_data_sets(self, sets: list[DataSet]) -> None:
        parsed = parse_readout(encode_readout(sets))
        self.assertEqual(
            [(d.address, d.values) for d in parsed.datasets],
            [(d.address, d.values) for d in sets],
        )

    @given(data_sets)
    def test_values_survive_as_decimal_with_unit_scaler(self, ds: DataSet) -> None:
        (reading,) = to_readings(parse_readout(encode_readout([ds])), "m")
        self.assertEqual(reading.value, Decimal(ds.values[0].value))
        self.assertEqual(reading.obis, ObisCode.parse(ds.address))

    @given(st.binary(max_size=200))
    def test_arbitrary_bytes_parse_or_raise_frame_error(self, data: bytes) -> None:
        try:
            readout = parse_readout(data)
        except FrameError:
            return
        to_readings(readout, "m")


# -- the data-line scanner against the byte-by-byte one it replaced ----------------------------

from fep.protocols.iec62056_21 import readout as _readout  # noqa: E402
from tests.scale import examples  # noqa: E402


def _reference_parse_line(line: bytes, line_no: int, base: int) -> list[DataSet]:
    """readout._parse_line as it was: every address and value byte checked in Python."""
    sets: list[DataSet] = []
    i = 0
    n = len(line)
    while i < n:
        start = i
        while i < n and line[i] != 0x28:
            if line[i] not in _readout._ADDRESS_CHARS:
                raise _readout._line_error(
                    f"unexpected byte 0x{line[i]:02X} in address", line_no, base + i
                )
            i += 1
        address = line[start:i].decode("ascii").strip()
        if i >= n:
            raise _readout._line_error(f"expected '(' after address {address!r}", line_no, base + i)
        values = []
        while i < n and line[i] == 0x28:
            close = line.find(b")", i + 1)
            if close < 0:
                raise _readout._line_error("value without closing ')'", line_no, base + i)
            raw = line[i + 1 : close]
            bad = next((k for k, b in enumerate(raw) if b < 0x20 or b > 0x7E or b == 0x28), None)
            if bad is not None:
                raise _readout._line_error(
                    f"unexpected byte 0x{raw[bad]:02X} in value", line_no, base + i + 1 + bad
                )
            value, star, unit = raw.decode("ascii").partition("*")
            values.append(_readout.DataValue(value, unit if star else None))
            i = close + 1
        sets.append(DataSet(address, tuple(values), line_no))
    return sets


def _line_outcome(parse: Any, line: bytes) -> object:
    try:
        return parse(line, 3, 100)
    except FrameError as e:
        return str(e), e.offset, e.field


class LineScannerTests(unittest.TestCase):
    @settings(max_examples=examples(1500))
    @given(
        st.lists(
            st.one_of(
                st.sampled_from([b"1.8.0", b"0.9.1", b"C.1.0", b"1-0:1.8.1*01", b" ", b"(", b")",
                                 b"(12345.6*kWh)", b"*", b"()", b"\x00", b"\x7f", b"\xff", b"|"]),
                st.binary(max_size=4),
            ),
            max_size=12,
        ).map(b"".join)
    )
    def test_same_data_sets_and_errors(self, line: bytes) -> None:
        self.assertEqual(
            _line_outcome(_readout._parse_line, line), _line_outcome(_reference_parse_line, line)
        )
