"""Tests for fep.model: OBIS codes, the unit table, records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.model import (
    UNITS,
    IntervalBlock,
    Meter,
    ObisCode,
    Quality,
    Reading,
    Unit,
    unit_text,
)


class ObisCodeTests(unittest.TestCase):
    def test_full_form_parses_every_group(self) -> None:
        self.assertEqual(ObisCode.parse("1-0:1.8.0*255"), ObisCode(1, 0, 1, 8, 0, 255))

    def test_full_form_without_f_defaults_to_255(self) -> None:
        self.assertEqual(ObisCode.parse("0-0:96.1.0"), ObisCode(0, 0, 96, 1, 0, 255))

    def test_short_readout_form_takes_defaults(self) -> None:
        self.assertEqual(ObisCode.parse("1.8.0"), ObisCode(1, 0, 1, 8, 0, 255))
        self.assertEqual(ObisCode.parse("0.9.1", a=0), ObisCode(0, 0, 0, 9, 1, 255))

    def test_billing_period_suffix_sets_f(self) -> None:
        self.assertEqual(ObisCode.parse("1.8.1*01"), ObisCode(1, 0, 1, 8, 1, 1))
        self.assertEqual(ObisCode.parse("1.8.1&12"), ObisCode(1, 0, 1, 8, 1, 12))

    def test_letters_stand_for_96_to_99(self) -> None:
        self.assertEqual(ObisCode.parse("C.1.0"), ObisCode(1, 0, 96, 1, 0, 255))
        self.assertEqual(ObisCode.parse("F.F"), ObisCode(1, 0, 97, 97, 0, 255))

    def test_six_byte_form_round_trips(self) -> None:
        code = ObisCode.from_bytes(bytes.fromhex("0100010800FF"))
        self.assertEqual(str(code), "1-0:1.8.0*255")
        self.assertEqual(code.to_bytes(), bytes.fromhex("0100010800FF"))

    def test_invalid_codes_are_rejected(self) -> None:
        for text in ("", "1.8", "1-0:1.8.0*256", "x.y.z", "1-0:1.8.0.0.0"):
            if text == "1.8":
                continue  # two groups is the C.D form
            with self.assertRaises(ValueError, msg=text):
                ObisCode.parse(text)
        with self.assertRaises(ValueError):
            ObisCode.from_bytes(b"\x01\x00")
        with self.assertRaises(ValueError):
            ObisCode(1, 0, 1, 8, 0, 300)

    @given(st.tuples(*[st.integers(0, 255)] * 6))
    def test_text_form_round_trips(self, groups: tuple[int, ...]) -> None:
        code = ObisCode(*groups)
        self.assertEqual(ObisCode.parse(str(code)), code)
        self.assertEqual(ObisCode.from_bytes(code.to_bytes()), code)


class UnitTests(unittest.TestCase):
    def test_table_holds_the_dlms_codes_a_head_end_needs(self) -> None:
        self.assertEqual(UNITS[30].symbol, "Wh")
        self.assertEqual(UNITS[32].symbol, "varh")
        self.assertEqual(UNITS[27].symbol, "W")
        self.assertEqual(UNITS[35].symbol, "V")
        self.assertEqual(UNITS[33].symbol, "A")
        self.assertEqual(UNITS[44].symbol, "Hz")
        self.assertEqual(Unit.by_code(255).name, "count (no unit)")

    def test_unknown_code_is_an_error(self) -> None:
        with self.assertRaises(ValueError):
            Unit.by_code(200)

    def test_readout_symbols_map_to_unit_and_prefix_scaler(self) -> None:
        self.assertEqual(Unit.parse_symbol("kWh"), (UNITS[30], 3))
        self.assertEqual(Unit.parse_symbol("kvarh"), (UNITS[32], 3))
        self.assertEqual(Unit.parse_symbol("kVArh"), (UNITS[32], 3))
        self.assertEqual(Unit.parse_symbol("MWh"), (UNITS[30], 6))
        self.assertEqual(Unit.parse_symbol("V"), (UNITS[35], 0))
        self.assertEqual(Unit.parse_symbol("Hz"), (UNITS[44], 0))
        with self.assertRaises(ValueError):
            Unit.parse_symbol("furlongs")

    def test_case_tells_ampere_from_year_and_siemens_from_second(self) -> None:
        self.assertEqual(Unit.parse_symbol("A"), (UNITS[33], 0))
        self.assertEqual(Unit.parse_symbol("kA"), (UNITS[33], 3))
        self.assertEqual(Unit.parse_symbol("a"), (UNITS[1], 0))
        self.assertEqual(Unit.parse_symbol("S"), (UNITS[51], 0))
        self.assertEqual(Unit.parse_symbol("s"), (UNITS[7], 0))
        self.assertEqual(Unit.parse_symbol("KWH"), (UNITS[30], 3))

    def test_unit_text_puts_the_prefix_back(self) -> None:
        self.assertEqual(unit_text(UNITS[30], 3), "kWh")
        self.assertEqual(unit_text(UNITS[35], 0), "V")
        self.assertIsNone(unit_text(None))


class RecordTests(unittest.TestCase):
    def test_reading_times_are_kept_in_utc(self) -> None:
        local = datetime(2023, 11, 22, 10, 15, tzinfo=timezone(timedelta(hours=1)))
        reading = Reading("m1", ObisCode.parse("1.8.0"), Decimal("1.5"), meter_time=local)
        self.assertEqual(reading.meter_time, datetime(2023, 11, 22, 9, 15, tzinfo=UTC))
        self.assertEqual(reading.time, reading.meter_time)

    def test_naive_times_are_refused(self) -> None:
        with self.assertRaises(ValueError):
            Reading("m1", ObisCode.parse("1.8.0"), 1, meter_time=datetime(2023, 1, 1))

    def test_reading_without_meter_clock_is_filed_at_receipt(self) -> None:
        reading = Reading("m1", ObisCode.parse("1.8.0"), 1)
        self.assertEqual(reading.time, reading.received_time)

    def test_interval_block_lists_each_interval(self) -> None:
        start = datetime(2024, 1, 1, tzinfo=UTC)
        block = IntervalBlock(
            "m1",
            ObisCode.parse("1.29.0"),
            start,
            timedelta(minutes=15),
            (Decimal(1), Decimal(2)),
            (Quality.OK, Quality.POWER_DOWN),
        )
        self.assertEqual(
            block.intervals(),
            [
                (start, Decimal(1), Quality.OK),
                (start + timedelta(minutes=15), Decimal(2), Quality.POWER_DOWN),
            ],
        )

    def test_interval_block_checks_its_shape(self) -> None:
        start = datetime(2024, 1, 1, tzinfo=UTC)
        with self.assertRaises(ValueError):
            IntervalBlock("m1", ObisCode.parse("1.29.0"), start, timedelta(0), (1,))
        with self.assertRaises(ValueError):
            IntervalBlock(
                "m1", ObisCode.parse("1.29.0"), start, timedelta(minutes=15), (1, 2), (Quality.OK,)
            )

    def test_meter_metadata_is_read_only(self) -> None:
        meter = Meter("m1", "iec62056-21", "tcp:127.0.0.1:4059", metadata={"site": "north"})
        self.assertEqual(meter.metadata["site"], "north")
        with self.assertRaises(TypeError):
            meter.metadata["site"] = "south"  # type: ignore[index]


class DottedObisTests(unittest.TestCase):
    def test_six_dotted_groups(self) -> None:
        self.assertEqual(ObisCode.parse("1.0.1.8.0.255"), ObisCode(1, 0, 1, 8, 0, 255))
        self.assertEqual(ObisCode.parse("0.0.1.0.0.255").to_bytes().hex(), "0000010000ff")


class MeterSecretsTests(unittest.TestCase):
    def test_keys_and_passwords_stay_out_of_repr(self) -> None:
        meter = Meter(
            "m1",
            "dlms",
            "tcp:host=h:port=1",
            metadata={"dlms_ek": "000102", "dlms_password": "hunter2", "dlms_link": "hdlc"},
        )
        text = repr(meter)
        self.assertNotIn("000102", text)
        self.assertNotIn("hunter2", text)
        self.assertIn("hdlc", text)


class ObisCacheTests(unittest.TestCase):
    """ObisCode.parse and from_bytes keep what they parsed: a readout names the same codes
    line after line (issue 20); the kept codes are the codes parsed afresh."""

    def test_parse_is_kept_and_equal_to_a_fresh_parse(self) -> None:
        for text in ("1.8.0", "1-0:1.8.0*255", "C.1.0", "F.F", "0.9.1", "1.0.1.8.0.255"):
            kept = ObisCode.parse(text)
            self.assertIs(ObisCode.parse(text), kept)
            self.assertEqual(kept, ObisCode._parse(text, 1, 0, 255))
        self.assertEqual(ObisCode.parse("1.8.0", a=0, f=1), ObisCode(0, 0, 1, 8, 0, 1))
        self.assertNotEqual(ObisCode.parse("1.8.0", a=0), ObisCode.parse("1.8.0"))

    def test_errors_are_not_kept(self) -> None:
        for _ in range(2):
            with self.assertRaises(ValueError):
                ObisCode.parse("1.8.x")

    def test_long_text_is_parsed_each_time(self) -> None:
        text = " " * 40 + "1.8.0"
        self.assertEqual(ObisCode.parse(text), ObisCode(1, 0, 1, 8, 0))

    def test_from_bytes_is_kept(self) -> None:
        raw = bytes((1, 0, 1, 8, 0, 255))
        self.assertIs(ObisCode.from_bytes(raw), ObisCode.from_bytes(raw))
        self.assertEqual(ObisCode.from_bytes(bytearray(raw)), ObisCode(1, 0, 1, 8, 0))
        with self.assertRaises(ValueError):
            ObisCode.from_bytes(raw[:5])


class TrustedReadingTests(unittest.TestCase):
    """trusted_reading (for decoders) builds the same Reading as Reading(...) does."""

    def test_equals_reading_built_with_the_converters(self) -> None:
        from fep.model import trusted_reading

        obis, now = ObisCode.parse("1.8.0"), datetime.now(UTC)
        for meter_time, native in ((None, None), (datetime(2024, 1, 1, tzinfo=UTC), "0.0")):
            values = ("m1", obis, Decimal("1.5"), UNITS[30], 3, meter_time, now,
                      Quality.MISSING, "dlms", native)
            fast, usual = trusted_reading(*values), Reading(*values)
            self.assertIs(type(fast), Reading)
            self.assertEqual(fast, usual)
            self.assertEqual(hash(fast), hash(usual))
            self.assertEqual(repr(fast), repr(usual))
            self.assertEqual(fast.time, usual.time)

    def test_takes_every_field_and_stays_frozen(self) -> None:
        import attrs

        from fep.model import trusted_reading

        names = [f.name for f in attrs.fields(Reading)]
        self.assertEqual(trusted_reading.__code__.co_varnames[:len(names)], tuple(names))
        reading = trusted_reading("m1", ObisCode.parse("1.8.0"), 1, None, 0, None,
                                  datetime.now(UTC), Quality.OK, "", None)
        with self.assertRaises(attrs.exceptions.FrozenInstanceError):
            reading.value = 2  # type: ignore[misc]
